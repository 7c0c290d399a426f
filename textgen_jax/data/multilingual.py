"""XLM's multilingual pipelines (Lample & Conneau 2019): language-tagged streams and TLM pairs.

Languages are the names in config.data.languages; a language's id (the index of its language
embedding) is its position there, and config.data.language_features names the feature holding
its text: in config.data.dataset for the monolingual streams of CLM and MLM (§3.1, §3.2), in
config.data.parallel_dataset for the translation pairs of TLM (§3.3). On the embedded corpus
the languages are English docstrings and Python code, and `stdlib_docstrings/pairs` holds a
function's code next to its docstring.

Every batch is a dict of int32 [local_batch, seq_len] arrays with 'langs' (the language id of
each token, 0 on padding) besides the token ids and positions; see each dataset function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import ml_collections
import numpy as np

from textgen_jax.config import ConfigError
from textgen_jax.data.masking import IGNORE_LABEL, mask_tokens, special_ids
from textgen_jax.data.pipeline import (epochs, in_workers, local_batch_size, packed_lm_rows,
                                       process_shard, shuffle_seed)
from textgen_jax.data.sources import example_text, open_source
from textgen_jax.data.tokenizer import Tokenizer


def language_sampling_probabilities(counts: Sequence[float], alpha: float) -> np.ndarray:
    """q_i = p_i^alpha / sum_j p_j^alpha with p_i = counts_i / sum_j counts_j (XLM §3.4).

    alpha < 1 samples low-resource languages more often than their share of the data: alpha=1
    keeps the shares, alpha=0 is uniform. counts [num_languages] > 0 -> float64 [num_languages].
    """
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 1 or not len(counts) or (counts <= 0).any():
        raise ValueError(f"counts={counts.tolist()} must be a non-empty list of positive numbers.")
    weights = (counts / counts.sum()) ** alpha
    return weights / weights.sum()


def check_languages(config: ml_collections.ConfigDict, objective: str, causal: bool) -> None:
    """Raises ConfigError unless the languages, their features and the model agree."""
    d, m = config.data, config.model
    if not d.languages or len(d.language_features) != len(d.languages):
        raise ConfigError(
            f"config.data.languages={tuple(d.languages)} and config.data.language_features="
            f"{tuple(d.language_features)} must be non-empty and of equal length (one feature "
            "per language), e.g. ('en', 'code') and ('docstring', 'code').")
    if m.num_languages != len(d.languages):
        raise ConfigError(
            f"config.model.num_languages={m.num_languages} differs from the "
            f"{len(d.languages)} languages of config.data.languages={tuple(d.languages)}; "
            f"set num_languages={len(d.languages)}.")
    if bool(m.causal) != causal:
        why = ("CLM predicts each token from the ones before it" if causal
               else "MLM and TLM predict a masked token from both sides")
        raise ConfigError(f"The objective {objective!r} needs config.model.causal="
                          f"{causal} (got {m.causal}): {why}.")


def _with_feature(config: ml_collections.ConfigDict, dataset: str,
                  feature: str) -> ml_collections.ConfigDict:
    """A copy of config reading `feature` of `dataset` as its text."""
    copy = config.copy_and_resolve_references()
    copy.data.dataset = dataset
    copy.data.text_key = feature
    return copy


class _TagStream:
    """A packed row -> the row with 'langs' (its language id on real tokens, 0 on padding)."""

    def __init__(self, language_id: int):
        self._language_id = language_id

    def __call__(self, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        langs = np.where(row["segment_ids"] > 0, self._language_id, 0).astype(np.int32)
        return {**row, "langs": langs}


class _MaskStream(grain.transforms.RandomMap):
    """A tagged packed row -> an MLM row over the whole stream (XLM §3.2).

    As in the paper the row is a stream of consecutive text, not a sentence pair: its tokens
    attend to each other across document boundaries and positions run 0, 1, ... over the row.
    15% of the non-special tokens are predicted, corrupted 80/10/10 as in BERT.
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer

    def random_map(self, row: dict[str, np.ndarray],
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
        tok = self._tokenizer
        real = row["segment_ids"] > 0
        inputs, mlm_labels = mask_tokens(row["inputs"], rng, tok.mask_id, tok.vocab_size,
                                         special_ids(tok))
        return {
            "inputs": inputs,
            "langs": row["langs"],
            "positions": np.where(real, np.arange(len(real)), 0).astype(np.int32),
            "segment_ids": real.astype(np.int32),
            "mlm_labels": np.where(real, mlm_labels, IGNORE_LABEL).astype(np.int32),
        }


def _language_streams(config, tokenizer, split, *, process_index, process_count, shuffle,
                      repeat) -> grain.IterDataset:
    """Packed rows of every language, tagged, mixed with the probabilities of §3.4."""
    streams, counts = [], []
    for language_id, feature in enumerate(config.data.language_features):
        language_config = _with_feature(config, config.data.dataset, feature)
        counts.append(len(open_source(language_config.data, split)))
        rows = packed_lm_rows(language_config, tokenizer, split, process_index=process_index,
                              process_count=process_count, shuffle=shuffle, repeat=repeat)
        streams.append(rows.map(_TagStream(language_id)))
    if len(streams) == 1:
        return streams[0]
    # p_i is a language's share of the split's examples.
    weights = language_sampling_probabilities(counts, config.data.language_alpha)
    return grain.IterDataset.mix(streams, [float(w) for w in weights])


def xlm_clm_dataset(config: ml_collections.ConfigDict, tokenizer: Tokenizer, split: str, *,
                    process_index: int = 0, process_count: int = 1, shuffle: bool = True,
                    repeat: bool = True) -> grain.IterDataset:
    """Causal-LM batches (XLM §3.1): `lm_dataset` rows per language, mixed, with 'langs'.

    Returns dicts of int32 [local_batch, seq_len]: 'inputs', 'segment_ids', 'positions' as in
    `lm_dataset`, and 'langs'. Needs config.model.causal=True.
    """
    check_languages(config, "xlm_clm", causal=True)
    rows = _language_streams(config, tokenizer, split, process_index=process_index,
                             process_count=process_count, shuffle=shuffle, repeat=repeat)
    return rows.batch(local_batch_size(config.data, process_count), drop_remainder=True)


def xlm_mlm_dataset(config: ml_collections.ConfigDict, tokenizer: Tokenizer, split: str, *,
                    process_index: int = 0, process_count: int = 1, shuffle: bool = True,
                    repeat: bool = True) -> grain.IterDataset:
    """Masked-LM batches over streams of seq_len tokens (XLM §3.2; no next-sentence task).

    Returns dicts of int32 [local_batch, seq_len]: 'inputs' (masked ids), 'langs', 'positions',
    'segment_ids' (1 real, 0 padding), 'mlm_labels' (original id where predicted, -1
    elsewhere). The masks are drawn per row from a generator seeded by the config's seeds and
    the row's place in the stream.
    """
    check_languages(config, "xlm_mlm", causal=False)
    rows = _language_streams(config, tokenizer, split, process_index=process_index,
                             process_count=process_count, shuffle=shuffle, repeat=repeat)
    rows = rows.random_map(_MaskStream(tokenizer), seed=shuffle_seed(config))
    return rows.batch(local_batch_size(config.data, process_count), drop_remainder=True)


class _TranslationPair:
    """(index, parallel example) -> one TLM row (XLM §3.3).

    The two sentences, each wrapped in </s> as in the reference, are concatenated in a random
    order, [</s> A </s> </s> B </s>]; positions restart at 0 where B starts, each token carries
    its sentence's language, and 15% of the tokens of both sentences are masked (80/10/10), so
    a masked word can be predicted from its translation. The longer sentence loses tokens at
    its end until the pair fits in seq_len.
    """

    def __init__(self, tokenizer: Tokenizer, features: Sequence[str], seq_len: int, seed: int):
        self._tokenizer = tokenizer
        self._features = tuple(features)
        self._seq_len = seq_len
        self._seed = seed

    def __call__(self, index: int, example: dict[str, Any]) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self._seed, index])
        tok = self._tokenizer
        sentences = [tok.encode(example_text(example, f)) for f in self._features]
        order = [0, 1] if rng.random() < 0.5 else [1, 0]
        first, second = (sentences[i] for i in order)
        while len(first) + len(second) > self._seq_len - 4:
            (first if len(first) >= len(second) else second).pop()

        ids, langs, positions = [], [], []
        for language_id, sentence in zip(order, (first, second)):
            piece = [tok.eos_id, *sentence, tok.eos_id]
            ids += piece
            langs += [language_id] * len(piece)
            positions += range(len(piece))
        length, padding = len(ids), self._seq_len - len(ids)
        row = np.asarray(ids + [tok.pad_id] * padding, np.int32)
        inputs, mlm_labels = mask_tokens(row, rng, tok.mask_id, tok.vocab_size, special_ids(tok))
        return {
            "inputs": inputs,
            "langs": np.asarray(langs + [0] * padding, np.int32),
            "positions": np.asarray(positions + [0] * padding, np.int32),
            "segment_ids": (np.arange(self._seq_len) < length).astype(np.int32),
            "mlm_labels": mlm_labels,
        }


def tlm_dataset(config: ml_collections.ConfigDict, tokenizer: Tokenizer, split: str, *,
                process_index: int = 0, process_count: int = 1, shuffle: bool = True,
                repeat: bool = True) -> grain.IterDataset:
    """Translation-LM batches: one parallel pair per row (see _TranslationPair).

    Reads the two config.data.language_features of config.data.parallel_dataset ('' = the
    dataset); processes read disjoint shards of examples as in `lm_dataset`. Returns dicts of
    int32 [local_batch, seq_len] with the keys of `xlm_mlm_dataset`.
    """
    check_languages(config, "tlm", causal=False)
    if len(config.data.languages) != 2:
        raise ConfigError(f"config.objective='tlm' pairs two languages; config.data.languages="
                          f"{tuple(config.data.languages)} has {len(config.data.languages)}.")
    batch_size = local_batch_size(config.data, process_count)
    features = tuple(config.data.language_features)
    parallel = _with_feature(config, config.data.parallel_dataset or config.data.dataset,
                             features[0])
    source = open_source(parallel.data, split, check_text_key=False)
    missing = [f for f in features if f not in source[0]]
    if missing:
        raise ConfigError(
            f"config.objective='tlm' needs parallel data: examples holding both "
            f"config.data.language_features={features}, but {missing} are not features of "
            f"{parallel.data.dataset!r} (it has {sorted(source[0])}). Set "
            "config.data.parallel_dataset to a translation dataset (e.g. wmt14_translate/de-en "
            "with language_features=('de', 'en')), or train with xlm_mlm on monolingual text.")
    examples = epochs(process_shard(source, process_index, process_count), config, shuffle,
                      repeat)
    rows = examples.map_with_index(_TranslationPair(tokenizer, features, config.data.seq_len,
                                                    shuffle_seed(config)))
    return in_workers(rows.to_iter_dataset(), config).batch(batch_size, drop_remainder=True)
