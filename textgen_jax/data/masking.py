"""BERT's masked-LM corruption (Devlin et al. 2019, §3.1 and appendix A.1), in pure numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORE_LABEL = -1  # the label of positions that are not predicted


def special_ids(tokenizer) -> tuple[int, ...]:
    """The ids masking must neither choose nor sample: pad, unk, bos, eos, <mask>, <sep>, <cls>."""
    return (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id,
            tokenizer.mask_id, tokenizer.sep_id, tokenizer.cls_id)


def mask_tokens(
    ids: np.ndarray,
    rng: np.random.Generator,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    rate: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Chooses `rate` of each row's maskable tokens to predict and corrupts them.

    ids [..., length] int. A token is maskable unless it is in `special_ids` (which must hold
    the pad, [CLS] and [SEP] ids). Each row predicts round(rate * maskable) tokens, at least
    one if any is maskable, chosen uniformly as in the reference's create_pretraining_data.py.
    Of the chosen tokens, `mask_fraction` become `mask_id`, `random_fraction` a random
    non-special token and the rest stay unchanged (§3.1: 80/10/10), so the model cannot
    rely on [MASK] marking the positions it is scored on.

    Returns (inputs, labels), both int32 [..., length]: labels hold the original id at chosen
    positions and IGNORE_LABEL (-1) elsewhere.
    """
    ids = np.asarray(ids)
    special = np.asarray(sorted(set(special_ids)), dtype=ids.dtype)
    maskable = ~np.isin(ids, special)
    counts = maskable.sum(-1, keepdims=True)
    num_chosen = np.where(counts > 0, np.maximum(1, np.round(counts * rate)), 0)
    # A uniformly random subset of num_chosen maskable positions per row: those whose random
    # key ranks among the row's num_chosen smallest (non-maskable positions rank last).
    keys = np.where(maskable, rng.random(ids.shape), np.inf)
    ranks = np.argsort(np.argsort(keys, axis=-1), axis=-1)
    chosen = maskable & (ranks < num_chosen)

    action = rng.random(ids.shape)
    to_mask = chosen & (action < mask_fraction)
    to_random = chosen & (action >= mask_fraction) & (action < mask_fraction + random_fraction)
    ordinary = np.setdiff1d(np.arange(vocab_size), special)
    random_tokens = rng.choice(ordinary, size=ids.shape)

    inputs = np.where(to_mask, mask_id, np.where(to_random, random_tokens, ids))
    labels = np.where(chosen, ids, IGNORE_LABEL)
    return inputs.astype(np.int32), labels.astype(np.int32)
