"""BART noising on real tokenized stdlib docstrings: rates, Poisson spans, structure, seeds."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

import tolerances
from textgen_jax.data.corpus import prepared_stdlib_docstrings
from textgen_jax.data.noising import (
    NoiseConfig,
    add_noise,
    apply_infilling,
    document_rotation,
    sample_infilling_spans,
    sentence_permutation,
    special_ids,
    text_infilling,
    token_deletion,
    token_masking,
)
from textgen_jax.data.sources import texts

NUM_DOCUMENTS = 150


@pytest.fixture(scope="module")
def documents(stdlib_data_dir, stdlib_tokenizer) -> list[list[np.ndarray]]:
    """Training-split docstrings as lists of sentences (one per non-blank line), >= 2 sentences."""
    builder = prepared_stdlib_docstrings("documents", stdlib_data_dir)
    result = []
    for text in texts(builder.as_data_source("train"), "text"):
        lines = [line for line in text.splitlines(keepends=True) if line.strip()]
        sentences = [np.asarray(stdlib_tokenizer.encode(line), np.int32) for line in lines]
        if len(sentences) >= 2:
            result.append(sentences)
        if len(result) == NUM_DOCUMENTS:
            break
    assert len(result) == NUM_DOCUMENTS
    return result


@pytest.fixture(scope="module")
def flat_documents(documents, stdlib_tokenizer) -> list[np.ndarray]:
    """[bos] first half [sep] second half [eos] [pad] * 3: specials inside and around the text."""
    tok = stdlib_tokenizer
    result = []
    for sentences in documents:
        half = len(sentences) // 2
        ids = np.concatenate([[tok.bos_id], *sentences[:half], [tok.sep_id], *sentences[half:],
                              [tok.eos_id], [tok.pad_id] * 3]).astype(np.int32)
        assert tok.mask_id not in ids  # so every mask in an output was made by the noising
        result.append(ids)
    return result


def _ordinary(ids: np.ndarray, specials) -> np.ndarray:
    return ~np.isin(ids, list(specials))


def _check_specials_kept_in_order(original, noised, specials) -> None:
    """The special tokens of `noised` are those of `original`, in order, and its leading
    bos and trailing eos/pads are where they were."""
    specials = list(specials)
    kept = noised[np.isin(noised, specials)]
    assert kept.tolist() == original[np.isin(original, specials)].tolist()
    assert noised[0] == original[0]
    assert noised[-4:].tolist() == original[-4:].tolist()


def _replace_spans(ids: list[int], spans: np.ndarray, mask_id: int) -> list[int]:
    """The definition of infilling, written independently: copy, one mask per span, skip it."""
    out, position = [], 0
    for start, length in spans.tolist():
        assert start >= position, "spans overlap or are unsorted"
        out += ids[position:start] + [mask_id]
        position = start + length
    return out + ids[position:]


# ---- token masking and deletion ----------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.15, 0.5])
def test_token_masking_masks_ordinary_tokens_at_the_rate(flat_documents, stdlib_tokenizer, rate):
    specials = special_ids(stdlib_tokenizer)
    mask_id = stdlib_tokenizer.mask_id
    masked = ordinary = 0
    for seed, ids in enumerate(flat_documents):
        noised = token_masking(ids, rate, mask_id, np.random.default_rng(seed),
                               special_ids=specials)
        assert noised.shape == ids.shape and noised.dtype == ids.dtype
        changed = noised != ids
        assert (noised[changed] == mask_id).all()  # only ever replaced by <mask>
        assert not changed[~_ordinary(ids, specials)].any()  # specials never masked
        masked += int(changed.sum())
        ordinary += int(_ordinary(ids, specials).sum())
    assert ordinary > 20_000
    # One independent draw per ordinary token: 4 binomial standard deviations (< 0.005 here).
    assert abs(masked / ordinary - rate) <= tolerances.binomial(rate, ordinary)


@pytest.mark.parametrize("rate", [0.1, 0.4])
def test_token_deletion_deletes_ordinary_tokens_at_the_rate(flat_documents, stdlib_tokenizer,
                                                             rate):
    specials = special_ids(stdlib_tokenizer)
    deleted = ordinary = 0
    for seed, ids in enumerate(flat_documents):
        noised = token_deletion(ids, rate, np.random.default_rng(seed), special_ids=specials)
        # The output is the input with some ordinary tokens removed: align greedily.
        j = 0
        for token in ids.tolist():
            if j < noised.size and noised[j] == token:
                j += 1
            else:
                assert token not in specials
        assert j == noised.size
        _check_specials_kept_in_order(ids, noised, specials)
        deleted += ids.size - noised.size
        ordinary += int(_ordinary(ids, specials).sum())
    # One independent draw per ordinary token: 4 binomial standard deviations (< 0.005 here).
    assert abs(deleted / ordinary - rate) <= tolerances.binomial(rate, ordinary)


# ---- text infilling ----------------------------------------------------------------------------

def test_infilling_spans_are_poisson_3_disjoint_ordinary_and_cover_the_rate(flat_documents,
                                                                            stdlib_tokenizer):
    specials = special_ids(stdlib_tokenizer)
    rate = 0.3
    lengths = []
    for seed, ids in enumerate(flat_documents):
        spans = sample_infilling_spans(ids, rate, np.random.default_rng(seed),
                                       special_ids=specials)
        ordinary = _ordinary(ids, specials)
        covered = np.zeros(ids.size, dtype=np.int64)
        for start, length in spans.tolist():
            assert 0 <= start <= ids.size and start + length <= ids.size
            covered[start:start + length] += 1
        assert covered.max(initial=0) <= 1  # no two spans overlap
        assert not covered[~ordinary].any()  # no span covers bos/sep/eos/pad
        assert (np.diff(spans[:, 0]) >= 0).all()
        # Each document's coverage is the rate up to rounding to whole tokens.
        assert 0 <= covered.sum() - rate * ordinary.sum() < 1
        lengths += spans[:, 1].tolist()
    lengths = np.asarray(lengths)
    assert lengths.size > 3000
    # The lengths follow Poisson(3), 0-length spans included (§2.2): within 4 standard
    # deviations of the n draws (Poisson: variance 3), but for what each document changes:
    # its last span cut to the budget (by 4 on average: a size-biased Poisson(3) draw) and at
    # most one split at its [sep], which moves a length's share by <= 3 spans and the mean by
    # <= 3 / n (one span more): 0.021 of a share and 0.05 of the mean here.
    n, documents = lengths.size, len(flat_documents)
    assert abs(lengths.mean() - 3.0) <= 4 * math.sqrt(3.0 / n) + (4 + 3) * documents / n
    for k in range(7):
        poisson_pmf = math.exp(-3.0) * 3.0 ** k / math.factorial(k)
        assert abs((lengths == k).mean() - poisson_pmf) <= (
            tolerances.binomial(poisson_pmf, n) + 3 * documents / n), k


@pytest.mark.parametrize("poisson_lambda", [3.0, 0.5])
def test_infilling_replaces_each_sampled_span_by_exactly_one_mask(flat_documents,
                                                                 stdlib_tokenizer,
                                                                 poisson_lambda):
    specials = special_ids(stdlib_tokenizer)
    mask_id = stdlib_tokenizer.mask_id
    zero_length_spans = 0
    for seed, ids in enumerate(flat_documents):
        spans = sample_infilling_spans(ids, 0.3, np.random.default_rng(seed),
                                       special_ids=specials, poisson_lambda=poisson_lambda)
        noised = text_infilling(ids, 0.3, mask_id, np.random.default_rng(seed),
                                special_ids=specials, poisson_lambda=poisson_lambda)
        assert noised.tolist() == _replace_spans(ids.tolist(), spans, mask_id)
        assert (noised == mask_id).sum() == len(spans)
        zero_length_spans += int((spans[:, 1] == 0).sum())
    assert zero_length_spans > 100  # the insertions were exercised


def test_zero_length_span_inserts_a_mask_and_removes_nothing():
    bos, eos, mask = 2, 3, 4
    ids = np.array([bos, 10, 11, 12, 13, eos])
    spans = np.array([[1, 0], [2, 2], [5, 0]])  # insert before 10, cover 11 12, insert before eos
    assert apply_infilling(ids, spans, mask).tolist() == [bos, mask, 10, mask, 13, mask, eos]


# ---- sentence permutation and document rotation ------------------------------------------------

def test_sentence_permutation_shuffles_whole_sentences(documents):
    reordered = 0
    for seed, sentences in enumerate(documents):
        permuted = sentence_permutation(sentences, np.random.default_rng(seed))
        as_tuples = [tuple(s.tolist()) for s in sentences]
        permuted_tuples = [tuple(s.tolist()) for s in permuted]
        assert sorted(permuted_tuples) == sorted(as_tuples)  # the same sentences, each intact
        assert Counter(np.concatenate(permuted).tolist()) == Counter(
            np.concatenate(sentences).tolist())
        reordered += permuted_tuples != as_tuples
    assert reordered > 0.5 * len(documents)


def test_sentence_permutation_is_uniform():
    sentences = [np.array([i]) for i in range(4)]
    rng = np.random.default_rng(0)
    counts = Counter(tuple(int(s[0]) for s in sentence_permutation(sentences, rng))
                     for _ in range(4800))
    assert len(counts) == 24  # every order occurs ...
    # ... about equally often: 5 binomial standard deviations (69 draws), for 24 counts at once.
    assert all(abs(c - 200) <= 4800 * tolerances.binomial(1 / 24, 4800, sigmas=5)
               for c in counts.values())


def test_document_rotation_rotates_ordinary_tokens_and_keeps_specials(flat_documents,
                                                                      stdlib_tokenizer):
    specials = special_ids(stdlib_tokenizer)
    for seed, ids in enumerate(flat_documents):
        rotated = document_rotation(ids, np.random.default_rng(seed), special_ids=specials)
        ordinary = _ordinary(ids, specials)
        assert (rotated[~ordinary] == ids[~ordinary]).all()  # specials keep their indices
        body, rotated_body = ids[ordinary], rotated[ordinary]
        assert any((np.roll(body, -k) == rotated_body).all()
                   for k in np.flatnonzero(body == rotated_body[0]))


def test_document_rotation_starts_at_a_uniform_token():
    bos, eos, pad = 2, 3, 0
    ids = np.array([bos, *range(10, 30), eos, pad])
    rng = np.random.default_rng(0)
    first = Counter(int(document_rotation(ids, rng, special_ids={bos, eos, pad})[1])
                    for _ in range(4000))
    assert sorted(first) == list(range(10, 30))
    # 5 binomial standard deviations (69 draws), for 20 counts at once.
    assert all(abs(c - 200) <= 4000 * tolerances.binomial(1 / 20, 4000, sigmas=5)
               for c in first.values())


# ---- composition, defaults, seeds --------------------------------------------------------------

def test_default_config_is_bart_best_infilling_30_percent_poisson_3_plus_permutation():
    config = NoiseConfig()
    assert config.permute_sentences and not config.rotate_document
    assert (config.infill_rate, config.poisson_lambda) == (0.3, 3.0)
    assert config.mask_rate == 0.0 and config.delete_rate == 0.0


@pytest.mark.parametrize("config", [
    NoiseConfig(),
    NoiseConfig(mask_rate=0.1, infill_rate=0.2, delete_rate=0.1, rotate_document=True),
])
def test_add_noise_applies_permutation_then_masking_infilling_deletion_then_rotation(
        documents, stdlib_tokenizer, config):
    tok = stdlib_tokenizer
    structural = special_ids(tok)
    protected = structural | {tok.mask_id}
    for seed, sentences in enumerate(documents[:40]):
        rng = np.random.default_rng(seed)
        expected = sentence_permutation(sentences, rng)
        expected = np.concatenate([[tok.bos_id], *expected, [tok.eos_id]]).astype(np.int32)
        if config.mask_rate:
            expected = token_masking(expected, config.mask_rate, tok.mask_id, rng,
                                     special_ids=protected)
        expected = text_infilling(expected, config.infill_rate, tok.mask_id, rng,
                                  special_ids=protected)
        if config.delete_rate:
            expected = token_deletion(expected, config.delete_rate, rng, special_ids=protected)
        if config.rotate_document:
            expected = document_rotation(expected, rng, special_ids=structural)
        noised = add_noise(sentences, np.random.default_rng(seed), tok, config)
        assert noised.dtype == np.int32
        assert noised.tolist() == expected.tolist()
        assert noised[0] == tok.bos_id and noised[-1] == tok.eos_id


def test_add_noise_is_deterministic_in_the_seed(documents, stdlib_tokenizer):
    config = NoiseConfig(mask_rate=0.1, delete_rate=0.1, rotate_document=True)
    for seed, sentences in enumerate(documents[:40]):
        first = add_noise(sentences, np.random.default_rng(seed), stdlib_tokenizer, config)
        again = add_noise(sentences, np.random.default_rng(seed), stdlib_tokenizer, config)
        other = add_noise(sentences, np.random.default_rng(seed + 1000), stdlib_tokenizer, config)
        assert first.tolist() == again.tolist()
        assert first.tolist() != other.tolist()


def test_rates_outside_0_1_are_rejected_with_the_value():
    ids, rng = np.array([2, 10, 11, 3]), np.random.default_rng(0)
    with pytest.raises(ValueError, match="rate=1.5"):
        token_masking(ids, 1.5, 4, rng, special_ids={2, 3})
    with pytest.raises(ValueError, match="rate=-0.1"):
        text_infilling(ids, -0.1, 4, rng, special_ids={2, 3})
