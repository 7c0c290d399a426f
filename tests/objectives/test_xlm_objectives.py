"""XLM's objectives on the embedded corpus: TLM rows, language sampling, MLM streams."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tolerances
from conftest import assert_iterator_resumes

from textgen_jax.config import ConfigError, base_config
from textgen_jax.data.masking import special_ids
from textgen_jax.data.multilingual import (language_sampling_probabilities, tlm_dataset,
                                           xlm_clm_dataset, xlm_mlm_dataset)
from textgen_jax.models import build_model
from textgen_jax.objectives import pretraining_objective

SEQ_LEN = 64


def _config(data_dir: str, objective: str = "xlm_mlm"):
    config = base_config()
    config.objective = objective
    config.model.arch = "xlm"
    config.model.num_languages = 2
    config.model.causal = objective == "xlm_clm"
    config.data.data_dir = data_dir
    config.data.dataset = "stdlib_docstrings/pairs"
    config.data.languages = ("en", "code")
    config.data.language_features = ("docstring", "code")
    config.data.seq_len = SEQ_LEN
    config.data.global_batch_size = 8
    return config


def _rows(dataset, num_batches: int) -> dict[str, np.ndarray]:
    batches = list(itertools.islice(iter(dataset), num_batches))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


@pytest.fixture(scope="module")
def tlm_rows(stdlib_data_dir, stdlib_tokenizer):
    return _rows(tlm_dataset(_config(stdlib_data_dir, "tlm"), stdlib_tokenizer, "train"), 40)


def _second_sentence_starts(row_positions: np.ndarray, attention: np.ndarray) -> list[int]:
    return [i for i in range(1, int(attention.sum())) if row_positions[i] == 0]


def test_tlm_rows_reset_positions_and_tag_languages_per_sentence(tlm_rows, stdlib_tokenizer):
    eos = stdlib_tokenizer.eos_id
    assert tlm_rows["inputs"].shape[1] == SEQ_LEN  # no row over seq_len
    first_languages = set()
    for row in range(len(tlm_rows["inputs"])):
        length = int(tlm_rows["segment_ids"][row].sum())
        assert tlm_rows["segment_ids"][row, :length].all()
        assert not tlm_rows["segment_ids"][row, length:].any()
        starts = _second_sentence_starts(tlm_rows["positions"][row], tlm_rows["segment_ids"][row])
        assert len(starts) == 1, "positions restart exactly once, where the second sentence starts"
        b = starts[0]
        np.testing.assert_array_equal(tlm_rows["positions"][row, :b], np.arange(b))
        np.testing.assert_array_equal(tlm_rows["positions"][row, b:length], np.arange(length - b))
        langs = tlm_rows["langs"][row]
        assert len(set(langs[:b])) == 1 and len(set(langs[b:length])) == 1
        assert langs[0] != langs[b], "the two sentences are in different languages"
        first_languages.add(int(langs[0]))
        # </s>-wrapped sentences: separators are never masked (labels -1, input kept).
        original = np.where(tlm_rows["mlm_labels"][row] >= 0, tlm_rows["mlm_labels"][row],
                            tlm_rows["inputs"][row])
        for i in (0, b - 1, b, length - 1):
            assert original[i] == eos and tlm_rows["inputs"][row, i] == eos
    assert first_languages == {0, 1}, "both orders of the pair occur"


def test_tlm_masks_15_percent_of_both_sentences(tlm_rows, stdlib_tokenizer):
    """Each row predicts round(15%) of its maskable tokens (at least one), chosen uniformly
    over both sentences: within half a token of 15%, row by row (where a row has 4 or more),
    and each sentence draws its share of them (a hypergeometric count: sentence A holds k_A of
    a row's k chosen among n maskable, mean k * n_A / n) within 4 standard deviations."""
    specials = np.asarray(special_ids(stdlib_tokenizer))
    chosen, expected, variance = np.zeros(2), np.zeros(2), np.zeros(2)
    for row in range(len(tlm_rows["inputs"])):
        b = _second_sentence_starts(tlm_rows["positions"][row], tlm_rows["segment_ids"][row])[0]
        length = int(tlm_rows["segment_ids"][row].sum())
        labels = tlm_rows["mlm_labels"][row]
        original = np.where(labels >= 0, labels, tlm_rows["inputs"][row])
        maskable = ~np.isin(original, specials)
        k, n = (labels >= 0).sum(), maskable.sum()
        assert n < 4 or abs(k - 0.15 * n) <= 0.5, (row, k, n)
        for half, part in enumerate((slice(0, b), slice(b, length))):
            n_half = maskable[part].sum()
            chosen[half] += (labels[part] >= 0).sum()
            expected[half] += k * n_half / n
            variance[half] += n_half * (k / n) * (1 - k / n) * (n - n_half) / max(n - 1, 1)
    np.testing.assert_array_less(np.abs(chosen - expected), 4 * np.sqrt(variance))


def test_tlm_attention_is_bidirectional_over_both_sentences(tlm_rows, stdlib_data_dir,
                                                            stdlib_tokenizer):
    config = _config(stdlib_data_dir, "tlm")
    config.model.num_layers, config.model.d_model, config.model.d_ff = 1, 32, 64
    model = build_model(config.model, stdlib_tokenizer.vocab_size)
    batch = {k: jnp.asarray(v[:1]) for k, v in tlm_rows.items()}
    params = model.init(jax.random.key(0), batch)["params"]

    def logits(inputs):
        return model.apply({"params": params}, {**batch, "inputs": inputs})["logits"]

    b = _second_sentence_starts(tlm_rows["positions"][0], tlm_rows["segment_ids"][0])[0]
    changed = batch["inputs"].at[0, b + 1].set((batch["inputs"][0, b + 1] + 7) % 1000)
    # A token of B changes the outputs over A, and a token of A those over B. Were it masked
    # out, the outputs would be bitwise equal (one program at one shape; a masked score's
    # softmax weight is exactly 0); np.allclose (rtol 1e-5) also counts rounding as equal.
    assert not np.allclose(logits(batch["inputs"])[0, 1], logits(changed)[0, 1])
    changed_a = batch["inputs"].at[0, 1].set((batch["inputs"][0, 1] + 7) % 1000)
    assert not np.allclose(logits(batch["inputs"])[0, b + 1], logits(changed_a)[0, b + 1])


def test_language_sampling_probabilities():
    # Float64, a handful of operations on each value: within 16 roundoffs (3.6e-15).
    rtol = 16 * tolerances.F64
    counts = [900.0, 90.0, 10.0]
    np.testing.assert_allclose(language_sampling_probabilities(counts, 1.0), [0.9, 0.09, 0.01],
                               rtol=rtol)
    np.testing.assert_allclose(language_sampling_probabilities(counts, 0.0), [1 / 3] * 3,
                               rtol=rtol)
    # alpha = 0.5 by hand: sqrt of the shares, renormalised.
    roots = [0.9 ** 0.5, 0.09 ** 0.5, 0.01 ** 0.5]
    expected = [r / sum(roots) for r in roots]
    q = language_sampling_probabilities(counts, 0.5)
    np.testing.assert_allclose(q, expected, rtol=rtol)
    assert q[2] > 0.01 and q[0] < 0.9, "low-resource languages are sampled more than their share"
    with pytest.raises(ValueError, match="positive"):
        language_sampling_probabilities([3.0, 0.0], 0.5)


def test_xlm_mlm_masks_15_percent_never_specials_and_is_deterministic(stdlib_data_dir,
                                                                      stdlib_tokenizer):
    config = _config(stdlib_data_dir)
    rows = _rows(xlm_mlm_dataset(config, stdlib_tokenizer, "train"), 10)
    labels, inputs = rows["mlm_labels"], rows["inputs"]
    original = np.where(labels >= 0, labels, inputs)
    specials = np.asarray(special_ids(stdlib_tokenizer))
    maskable = ~np.isin(original, specials)
    assert not (labels[~maskable] >= 0).any(), "special tokens are never predicted"
    # Each row predicts round(15%) of its maskable tokens (>= 4 in these full rows): within
    # half a token, row by row.
    assert maskable.sum(-1).min() >= 4
    assert np.abs((labels >= 0).sum(-1) - 0.15 * maskable.sum(-1)).max() <= 0.5
    # 80% of the chosen become <mask>, one independent draw each: 4 standard deviations.
    chosen = (labels >= 0).sum()
    assert (inputs == stdlib_tokenizer.mask_id).sum() >= chosen * (
        0.8 - tolerances.binomial(0.8, chosen))
    # Both languages are sampled; a stream row is one language, attended to as a whole.
    assert set(np.unique(rows["langs"][rows["segment_ids"] == 1])) == {0, 1}
    for row in range(len(inputs)):
        assert len(set(rows["langs"][row][rows["segment_ids"][row] == 1])) == 1
    np.testing.assert_array_equal(rows["positions"][0], np.arange(SEQ_LEN))
    again = _rows(xlm_mlm_dataset(config, stdlib_tokenizer, "train"), 10)
    for key in rows:
        np.testing.assert_array_equal(rows[key], again[key])
    config.seed = 1
    other = _rows(xlm_mlm_dataset(config, stdlib_tokenizer, "train"), 10)
    assert not np.array_equal(rows["inputs"], other["inputs"])


def test_xlm_clm_tags_languages_and_needs_a_causal_model(stdlib_data_dir, stdlib_tokenizer):
    config = _config(stdlib_data_dir, "xlm_clm")
    rows = _rows(xlm_clm_dataset(config, stdlib_tokenizer, "train"), 4)
    real = rows["segment_ids"] > 0
    assert set(np.unique(rows["langs"][real])) == {0, 1}
    assert pretraining_objective(config).name == "xlm_clm"
    config.model.causal = False
    with pytest.raises(ConfigError, match="causal=True"):
        xlm_clm_dataset(config, stdlib_tokenizer, "train")
    mlm_config = _config(stdlib_data_dir)
    mlm_config.model.causal = True
    with pytest.raises(ConfigError, match="causal=False"):
        xlm_mlm_dataset(mlm_config, stdlib_tokenizer, "train")
    mlm_config.model.causal, mlm_config.model.num_languages = False, 3
    with pytest.raises(ConfigError, match="num_languages=3"):
        xlm_mlm_dataset(mlm_config, stdlib_tokenizer, "train")


@pytest.mark.parametrize("objective, dataset", [
    ("xlm_mlm", xlm_mlm_dataset), ("xlm_clm", xlm_clm_dataset), ("tlm", tlm_dataset)])
def test_iterator_resumes_exactly(stdlib_data_dir, stdlib_tokenizer, objective, dataset):
    """A restored iterator state continues with the same batches: the language mixture, the
    packing of each language's stream and the masks all resume where they were."""
    config = _config(stdlib_data_dir, objective)
    expected = assert_iterator_resumes(lambda: iter(dataset(config, stdlib_tokenizer, "train")),
                                       compare=3)
    # The state matters: a fresh iterator starts elsewhere.
    fresh = next(iter(dataset(config, stdlib_tokenizer, "train")))
    assert not np.array_equal(fresh["inputs"], expected[0]["inputs"])
