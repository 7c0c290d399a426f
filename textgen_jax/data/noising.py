"""BART's document noising (Lewis et al. 2019, §2.2), as pure numpy on one document's token ids.

Every function takes a `np.random.Generator`, draws only from it (same seed, same output), and
never changes, removes or moves a token whose id is in `special_ids` (bos/eos/pad/sep/cls;
`special_ids(tokenizer)` gives them). A document is either

  ids        1-D int array [length], e.g. [bos] + tokens + [eos] (+ [pad] ...), or
  sentences  a sequence of 1-D int arrays, the document's sentences in order, without bos/eos.

`add_noise` composes the transforms in fairseq's `DenoisingDataset` order: sentence permutation,
then token masking / text infilling / token deletion, then document rotation. Its default,
`NoiseConfig()`, is the paper's best setting (§5.1): text infilling over 30% of the tokens with
Poisson(3) spans, plus sentence permutation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Sequence
from typing import Protocol

import numpy as np


class _SpecialIds(Protocol):
    pad_id: int
    bos_id: int
    eos_id: int
    mask_id: int
    sep_id: int
    cls_id: int


def special_ids(tokenizer: _SpecialIds) -> frozenset[int]:
    """The ids noising never touches: pad, bos, eos, sep and cls of `tokenizer`.

    '<mask>' is not among them: rotation and permutation move masks with the text they stand
    for (`add_noise` protects them from the masking-type transforms itself).
    """
    return frozenset({tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id,
                      tokenizer.sep_id, tokenizer.cls_id})


def _check_rate(rate: float, name: str) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name}={rate} is not a probability; use a value in [0, 1].")


def _is_special(ids: np.ndarray, special: Collection[int]) -> np.ndarray:
    return np.isin(ids, np.fromiter(special, dtype=np.int64, count=len(special)))


def token_masking(ids: np.ndarray, rate: float, mask_id: int, rng: np.random.Generator, *,
                  special_ids: Collection[int]) -> np.ndarray:
    """Each non-special token of `ids` [length] replaced by `mask_id` with probability `rate`.

    Returns [length], the dtype of `ids`.
    """
    _check_rate(rate, "rate")
    ids = np.asarray(ids)
    chosen = ~_is_special(ids, special_ids) & (rng.random(ids.shape) < rate)
    return np.where(chosen, np.asarray(mask_id, ids.dtype), ids)


def token_deletion(ids: np.ndarray, rate: float, rng: np.random.Generator, *,
                   special_ids: Collection[int]) -> np.ndarray:
    """`ids` [length] with each non-special token deleted with probability `rate`.

    Returns [length - number deleted], the dtype of `ids`.
    """
    _check_rate(rate, "rate")
    ids = np.asarray(ids)
    deleted = ~_is_special(ids, special_ids) & (rng.random(ids.shape) < rate)
    return ids[~deleted]


def _span_lengths(budget: int, poisson_lambda: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson(lambda) lengths drawn until they sum to >= budget, the last cut to hit it exactly.

    As fairseq's add_whole_word_mask: lengths are drawn `budget` at a time, and the span that
    crosses the budget is shortened (it stays >= 1), so the lengths sum to `budget`.
    """
    draws, total = [], 0
    while total < budget:
        draws.append(rng.poisson(poisson_lambda, size=budget))
        total += int(draws[-1].sum())
    lengths = np.concatenate(draws).astype(np.int64)
    cumulative = np.cumsum(lengths)
    last = int(np.searchsorted(cumulative, budget))  # first span reaching the budget
    lengths = lengths[:last + 1]
    lengths[last] -= cumulative[last] - budget
    return lengths


def sample_infilling_spans(ids: np.ndarray, rate: float, rng: np.random.Generator, *,
                           special_ids: Collection[int],
                           poisson_lambda: float = 3.0) -> np.ndarray:
    """The spans that `text_infilling` replaces: int64 [num_spans, 2] rows (start, length).

    `start` indexes `ids` [length]; a span covers ids[start:start + length], all non-special;
    a length-0 span means "insert a mask before ids[start]" (start == length: at the end).
    Rows are sorted by start (a length-0 span before a span starting at the same index); spans
    never overlap.

    Algorithm (fairseq's add_whole_word_mask with Poisson spans, §2.2, made non-overlapping):
      1. budget = ceil(rate * n), n = number of non-special tokens;
      2. span lengths ~ Poisson(poisson_lambda) are drawn until they reach the budget, the last
         cut so that they sum to it exactly (`_span_lengths`); 0-length spans are kept;
      3. the spans, in random order, and the n - budget uncovered tokens are arranged in a
         uniformly random interleaving of the non-special tokens (stars and bars), which places
         non-overlapping spans uniformly; a 0-length span lands in a uniform gap. fairseq
         instead starts spans at random tokens and lets them overlap, covering less than the
         budget, and inserts its 0-length spans as a separate insertion-noise step;
      4. a span running across special tokens (between two runs of non-special tokens) is cut
         there into one span per run, so no span covers a special token.
    """
    _check_rate(rate, "rate")
    if poisson_lambda <= 0:
        raise ValueError(f"poisson_lambda={poisson_lambda} must be > 0 (BART uses 3.0).")
    ids = np.asarray(ids)
    eligible = np.flatnonzero(~_is_special(ids, special_ids))  # ids index of each eligible token
    budget = math.ceil(rate * eligible.size)
    if budget == 0:
        return np.zeros((0, 2), dtype=np.int64)

    lengths = _span_lengths(budget, poisson_lambda, rng)
    rng.shuffle(lengths)  # so the shortened span is not always the last one
    num_spans = lengths.size
    slots = np.sort(rng.choice(eligible.size - budget + num_spans, size=num_spans,
                               replace=False))
    # A span's start among the eligible tokens: the uncovered tokens before its slot plus the
    # lengths of the spans before it.
    starts = slots - np.arange(num_spans) + np.cumsum(lengths) - lengths

    positive = lengths > 0
    span_starts, span_lengths = starts[positive], lengths[positive]
    covered = (np.repeat(span_starts, span_lengths) + np.arange(budget)
               - np.repeat(np.cumsum(span_lengths) - span_lengths, span_lengths))
    owner = np.repeat(np.arange(span_starts.size), span_lengths)
    covered_ids_index = eligible[covered]
    piece_begins = np.ones(budget, dtype=bool)
    piece_begins[1:] = ((owner[1:] != owner[:-1])
                        | (covered_ids_index[1:] != covered_ids_index[:-1] + 1))
    piece_starts = covered_ids_index[piece_begins]
    piece_lengths = np.diff(np.append(np.flatnonzero(piece_begins), budget))

    insertions = starts[~positive]
    insertion_starts = np.where(insertions < eligible.size,
                                eligible[np.minimum(insertions, eligible.size - 1)],
                                eligible[-1] + 1)
    all_starts = np.concatenate([piece_starts, insertion_starts])
    all_lengths = np.concatenate([piece_lengths, np.zeros_like(insertion_starts)])
    order = np.lexsort((all_lengths, all_starts))
    return np.stack([all_starts[order], all_lengths[order]], axis=1).astype(np.int64)


def apply_infilling(ids: np.ndarray, spans: np.ndarray, mask_id: int) -> np.ndarray:
    """`ids` [length] with each span of `spans` [num_spans, 2] replaced by one `mask_id`.

    `spans` as returned by `sample_infilling_spans`. Returns [length - covered + num_spans].
    """
    ids = np.asarray(ids)
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    starts, lengths = spans[:, 0], spans[:, 1]
    positive = lengths > 0
    noised = ids.copy()
    noised[starts[positive]] = mask_id
    # Drop every covered token after a span's first (which became the mask).
    boundaries = np.zeros(ids.size + 1, dtype=np.int64)
    np.add.at(boundaries, starts[positive] + 1, 1)
    np.add.at(boundaries, starts[positive] + lengths[positive], -1)
    keep = np.cumsum(boundaries)[:-1] == 0
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    return np.insert(noised[keep], kept_before[starts[~positive]],
                     np.asarray(mask_id, ids.dtype))


def text_infilling(ids: np.ndarray, rate: float, mask_id: int, rng: np.random.Generator, *,
                   special_ids: Collection[int], poisson_lambda: float = 3.0) -> np.ndarray:
    """BART's text infilling (§2.2): Poisson spans over ~`rate` of the non-special tokens of
    `ids` [length] each become a single `mask_id`; a 0-length span inserts one.

    See `sample_infilling_spans` for the algorithm. Returns [length - covered + num_spans].
    """
    spans = sample_infilling_spans(ids, rate, rng, special_ids=special_ids,
                                   poisson_lambda=poisson_lambda)
    return apply_infilling(ids, spans, mask_id)


def sentence_permutation(sentences: Sequence[np.ndarray],
                         rng: np.random.Generator) -> list[np.ndarray]:
    """The document's sentences (a sequence of 1-D arrays) in a uniformly random order."""
    return [sentences[i] for i in rng.permutation(len(sentences))]


def document_rotation(ids: np.ndarray, rng: np.random.Generator, *,
                      special_ids: Collection[int]) -> np.ndarray:
    """`ids` [length] rotated so that a uniformly chosen non-special token comes first (§2.2).

    The non-special tokens are rotated among their own positions, so every special token
    (bos/eos/pad/sep ...) keeps its index. Returns [length].
    """
    ids = np.asarray(ids)
    positions = np.flatnonzero(~_is_special(ids, special_ids))
    rotated = ids.copy()
    if positions.size:
        rotated[positions] = np.roll(ids[positions], -int(rng.integers(positions.size)))
    return rotated


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    """Which transforms `add_noise` applies; the default is BART's best (§5.1).

    Rates are per non-special token; `add_noise` reads these attribute names, so an
    ml_collections.ConfigDict with the same fields works too.
    """
    permute_sentences: bool = True
    mask_rate: float = 0.0
    infill_rate: float = 0.3
    poisson_lambda: float = 3.0
    delete_rate: float = 0.0
    rotate_document: bool = False


def add_noise(sentences: Sequence[np.ndarray], rng: np.random.Generator,
              tokenizer: _SpecialIds, config: NoiseConfig = NoiseConfig()) -> np.ndarray:
    """BART's noised encoder input for one document: int32 [noised_length].

    `sentences` are the document's sentences (1-D token ids without bos/eos). The result is
    [bos] + noised text + [eos], built in fairseq's order, each step drawing from `rng` only if
    enabled: permute the sentences, join them, then token masking, text infilling, token
    deletion, then document rotation. Masks made by an earlier step are not masked, covered or
    deleted again; rotation moves them with the text.
    """
    structural = special_ids(tokenizer)
    not_noised_again = structural | {tokenizer.mask_id}
    if config.permute_sentences:
        sentences = sentence_permutation(sentences, rng)
    body = [np.asarray(sentence, dtype=np.int32) for sentence in sentences]
    ids = np.concatenate([[tokenizer.bos_id], *body, [tokenizer.eos_id]]).astype(np.int32)
    if config.mask_rate:
        ids = token_masking(ids, config.mask_rate, tokenizer.mask_id, rng,
                            special_ids=not_noised_again)
    if config.infill_rate:
        ids = text_infilling(ids, config.infill_rate, tokenizer.mask_id, rng,
                             special_ids=not_noised_again, poisson_lambda=config.poisson_lambda)
    if config.delete_rate:
        ids = token_deletion(ids, config.delete_rate, rng, special_ids=not_noised_again)
    if config.rotate_document:
        ids = document_rotation(ids, rng, special_ids=structural)
    return ids
