"""BERT masking on real tokenized text: 15% chosen, 80/10/10, specials untouched, seeded."""

from __future__ import annotations

import numpy as np
import pytest

import tolerances
from textgen_jax.config import base_config
from textgen_jax.data.masking import IGNORE_LABEL, mask_tokens, special_ids
from textgen_jax.data.sources import open_source, texts

LENGTH = 64


@pytest.fixture(scope="module")
def rows(stdlib_data_dir, stdlib_tokenizer) -> np.ndarray:
    """[3000, LENGTH] `[CLS] text [SEP]` rows cut from training documents at random lengths
    (so rows hold from 4 to LENGTH - 2 tokens), padded with pad_id."""
    config = base_config()
    config.data.data_dir = stdlib_data_dir
    tok = stdlib_tokenizer
    lengths = np.random.default_rng(0)
    result = []
    for text in texts(open_source(config.data, "train"), "text"):
        ids = tok.encode(text)
        while len(ids) >= 4 and len(result) < 3000:
            take = int(lengths.integers(4, LENGTH - 1))
            row = [tok.cls_id, *ids[:take], tok.sep_id]
            result.append(row + [tok.pad_id] * (LENGTH - len(row)))
            ids = ids[take:]
    assert len(result) == 3000
    return np.asarray(result, np.int32)


def _mask(rows, tokenizer, seed):
    return mask_tokens(rows, np.random.default_rng(seed), tokenizer.mask_id,
                       tokenizer.vocab_size, special_ids(tokenizer))


def test_rates_follow_the_paper(rows, stdlib_tokenizer):
    tok = stdlib_tokenizer
    inputs, labels = _mask(rows, tok, seed=0)
    assert inputs.shape == labels.shape == rows.shape
    maskable = ~np.isin(rows, special_ids(tok))
    chosen = labels != IGNORE_LABEL
    assert chosen.sum() > 15_000  # enough samples for the tolerances below
    # Each row predicts round(15%) of its maskable tokens (>= 4 here, above which "at least
    # one" never applies): within half a token, row by row. Counting [CLS] and [SEP] as
    # maskable would add 0.3 of a token to every row.
    assert np.abs(chosen.sum(-1) - 0.15 * maskable.sum(-1)).max() <= 0.5
    np.testing.assert_array_equal(labels[chosen], rows[chosen])
    np.testing.assert_array_equal(inputs[~chosen], rows[~chosen])  # only chosen tokens change
    masked = chosen & (inputs == tok.mask_id)
    kept = chosen & (inputs == rows)
    replaced = chosen & ~masked & ~kept
    # One independent draw per chosen token: 4 binomial standard deviations (0.013 and 0.010
    # here); a random replacement that draws the original token counts as kept (0.1 / vocab).
    n = chosen.sum()
    assert abs(masked.sum() / n - 0.8) <= tolerances.binomial(0.8, n)
    assert abs(replaced.sum() / n - 0.1) <= tolerances.binomial(0.1, n) + 0.1 / tok.vocab_size
    assert abs(kept.sum() / n - 0.1) <= tolerances.binomial(0.1, n) + 0.1 / tok.vocab_size
    # Random replacements are ordinary tokens, spread over the vocabulary: ~1500 uniform draws
    # over ~1000 tokens hit ~780 distinct ones (standard deviation ~10).
    assert not np.isin(inputs[replaced], special_ids(tok)).any()
    assert len(np.unique(inputs[replaced])) > 0.5 * tok.vocab_size


def test_special_and_pad_tokens_are_never_chosen(rows, stdlib_tokenizer):
    tok = stdlib_tokenizer
    inputs, labels = _mask(rows, tok, seed=1)
    special = np.isin(rows, (tok.pad_id, tok.cls_id, tok.sep_id))
    assert np.all(labels[special] == IGNORE_LABEL)
    np.testing.assert_array_equal(inputs[special], rows[special])
    # Every row with a maskable token predicts at least one.
    assert np.all((labels != IGNORE_LABEL).any(-1))


def test_masking_is_determined_by_the_seed(rows, stdlib_tokenizer):
    first = _mask(rows[:100], stdlib_tokenizer, seed=7)
    again = _mask(rows[:100], stdlib_tokenizer, seed=7)
    other = _mask(rows[:100], stdlib_tokenizer, seed=8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])
