"""BERT pretraining rows: [CLS] A [SEP] B [SEP] layout, 50/50 next sentences, masking, resume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tolerances
from conftest import assert_iterator_resumes

from textgen_jax.config import base_config
from textgen_jax.data.masking import IGNORE_LABEL, special_ids
from textgen_jax.data.pipeline import bert_pretraining_dataset, split_sentences

SEQ_LEN = 48
BATCH = 16


@pytest.fixture
def config(stdlib_data_dir):
    config = base_config()
    config.data.data_dir = stdlib_data_dir
    config.data.seq_len = SEQ_LEN
    config.data.global_batch_size = BATCH
    return config


@pytest.fixture(scope="module")
def many_batches(stdlib_data_dir, stdlib_tokenizer):
    """4000 training rows (about 9 epochs of the 437 documents)."""
    config = base_config()
    config.data.data_dir = stdlib_data_dir
    config.data.seq_len = SEQ_LEN
    config.data.global_batch_size = BATCH
    dataset = bert_pretraining_dataset(config, stdlib_tokenizer, "train")
    return list(itertools.islice(iter(dataset), 4000 // BATCH))


def test_half_of_the_pairs_are_true_next_segments(many_batches):
    labels = np.concatenate([b["nsp_labels"] for b in many_batches])
    assert labels.shape == (4000,) and set(labels.tolist()) == {0, 1}
    # One independent coin per pair: 4 binomial standard deviations (0.032).
    assert abs(labels.mean() - 0.5) <= tolerances.binomial(0.5, labels.size)


def test_rows_are_cls_a_sep_b_sep(many_batches, stdlib_tokenizer):
    tok = stdlib_tokenizer
    for batch in many_batches:
        for key in ("inputs", "token_types", "positions", "segment_ids", "mlm_labels"):
            assert batch[key].shape == (BATCH, SEQ_LEN) and batch[key].dtype == np.int32, key
        for row, types, positions, attention, labels in zip(
                batch["inputs"], batch["token_types"], batch["positions"],
                batch["segment_ids"], batch["mlm_labels"]):
            length = int(attention.sum())
            assert length <= SEQ_LEN and np.all(attention[:length] == 1)
            assert np.all(row[length:] == tok.pad_id) and np.all(types[length:] == 0)
            np.testing.assert_array_equal(positions[:length], np.arange(length))
            assert np.all(positions[length:] == 0)
            original = np.where(labels >= 0, labels, row)[:length]
            seps = np.flatnonzero(original == tok.sep_id)
            assert original[0] == tok.cls_id and len(seps) == 2 and seps[1] == length - 1
            assert not np.isin(original[1:seps[0]], special_ids(tok)).any()  # A
            assert not np.isin(original[seps[0] + 1:seps[1]], special_ids(tok)).any()  # B
            # Segment A is [CLS] A [SEP] (type 0), segment B is B [SEP] (type 1).
            assert np.all(types[:seps[0] + 1] == 0) and np.all(types[seps[0] + 1:length] == 1)
            assert np.all(labels[:length][np.isin(original, special_ids(tok))] == IGNORE_LABEL)


def test_about_15_percent_of_the_tokens_are_predicted(many_batches, stdlib_tokenizer):
    rows = np.concatenate([b["inputs"] for b in many_batches])
    labels = np.concatenate([b["mlm_labels"] for b in many_batches])
    original = np.where(labels >= 0, labels, rows)
    maskable = ~np.isin(original, special_ids(stdlib_tokenizer))
    chosen = labels != IGNORE_LABEL
    # Each row predicts round(15%) of its maskable tokens, at least one: within half a token,
    # row by row, where a row has 4 or more (below, round(15%) is 0 and the row predicts 1).
    counts, sizes = chosen.sum(-1), maskable.sum(-1)
    assert np.abs(counts - 0.15 * sizes)[sizes >= 4].max() <= 0.5
    assert (counts[(sizes > 0) & (sizes < 4)] == 1).all()
    # One independent draw per chosen token: 4 binomial standard deviations (0.01 here).
    assert abs(np.mean(rows[chosen] == stdlib_tokenizer.mask_id) - 0.8) <= tolerances.binomial(
        0.8, chosen.sum())
    # Rows are mostly full: A and B are filled to seq_len from the documents.
    assert np.mean([b["segment_ids"].sum(-1).mean() for b in many_batches]) > 0.8 * SEQ_LEN


def test_same_seed_same_rows_and_resume_from_state(config, stdlib_tokenizer):
    assert_iterator_resumes(lambda: iter(bert_pretraining_dataset(config, stdlib_tokenizer,
                                                                  "train")))
    first_batch = next(iter(bert_pretraining_dataset(config, stdlib_tokenizer, "train")))
    config.seed = 1  # another seed, other rows
    other = next(iter(bert_pretraining_dataset(config, stdlib_tokenizer, "train")))
    assert not np.array_equal(other["inputs"], first_batch["inputs"])


def test_eval_reads_each_process_shard_once_and_repeatably(config, stdlib_tokenizer):
    config.data.global_batch_size = 2

    def shard(index):
        return list(bert_pretraining_dataset(config, stdlib_tokenizer, "validation",
                                             process_index=index, process_count=2,
                                             shuffle=False, repeat=False))
    shards = [shard(0), shard(1)]
    # 20 validation documents: one row per document, 10 per process, a local batch of 1.
    assert [len(s) for s in shards] == [10, 10]
    assert all(b["inputs"].shape == (1, SEQ_LEN) for s in shards for b in s)
    for got, want in zip(shard(0), shards[0]):
        np.testing.assert_array_equal(got["inputs"], want["inputs"])


def test_split_sentences():
    text = "First sentence. Second one.  Third\nline two\n\nend"
    assert split_sentences(text) == ["First sentence.", "Second one.", "Third", "line two",
                                     "end"]
