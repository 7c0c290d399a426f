"""Packed causal-LM batches: coverage, segment/position layout, sharding, resume."""

from __future__ import annotations

from absl import flags
import numpy as np
import orbax.checkpoint as ocp
import pytest

from textgen_jax.config import base_config
from textgen_jax.data.pipeline import (bart_denoising_dataset, bert_pretraining_dataset,
                                       iterator_restore_args, iterator_save_args, lm_dataset)
from textgen_jax.data.sources import open_source, texts

SEQ_LEN = 64


@pytest.fixture
def config(stdlib_data_dir):
    config = base_config()
    config.data.data_dir = stdlib_data_dir
    config.data.seq_len = SEQ_LEN
    config.data.global_batch_size = 4
    return config


def _expected_documents(config, tokenizer, split: str) -> list[tuple[int, ...]]:
    source = open_source(config.data, split)
    return [(tokenizer.bos_id, *tokenizer.encode(t), tokenizer.eos_id)
            for t in texts(source, config.data.text_key)]


def _documents_in(batches, bos_id: int) -> list[tuple[int, ...]]:
    """The token stream of the real (segment > 0) tokens, cut before each bos."""
    stream = np.concatenate([b["inputs"][b["segment_ids"] > 0] for b in batches]).tolist()
    starts = [i for i, token in enumerate(stream) if token == bos_id] + [len(stream)]
    assert starts[0] == 0
    return [tuple(stream[a:b]) for a, b in zip(starts, starts[1:])]


def _check_row_layout(batch: dict[str, np.ndarray], local_batch: int) -> None:
    for key in ("inputs", "segment_ids", "positions"):
        assert batch[key].shape == (local_batch, SEQ_LEN) and batch[key].dtype == np.int32
    for segments, positions in zip(batch["segment_ids"], batch["positions"]):
        length = int(np.sum(segments > 0))
        assert np.all(segments[length:] == 0) and np.all(positions[length:] == 0)
        segments, positions = segments[:length], positions[:length]
        # Segments count up from 1 without gaps; positions restart at each new segment.
        steps = np.diff(segments, prepend=0)
        assert segments[0] == 1 and set(steps.tolist()) <= {0, 1}
        assert np.all(positions[steps == 1] == 0)
        continuing = np.flatnonzero(steps == 0)
        np.testing.assert_array_equal(positions[continuing], positions[continuing - 1] + 1)


def test_one_epoch_holds_every_document_once_in_order(config, stdlib_tokenizer):
    config.data.global_batch_size = 1  # no dropped remainder, so the epoch is complete
    batches = list(lm_dataset(config, stdlib_tokenizer, "validation", shuffle=False, repeat=False))
    for batch in batches:
        _check_row_layout(batch, 1)
    expected = _expected_documents(config, stdlib_tokenizer, "validation")
    assert _documents_in(batches, stdlib_tokenizer.bos_id) == expected
    assert any(b["segment_ids"].max() > 1 for b in batches)  # documents really share rows


def test_shuffled_epoch_is_a_deterministic_permutation(config, stdlib_tokenizer):
    config.data.global_batch_size = 1

    def epoch(seed: int) -> list[tuple[int, ...]]:
        config.data.shuffle_buffer_seed = seed
        dataset = lm_dataset(config, stdlib_tokenizer, "validation", repeat=False)
        return _documents_in(list(dataset), stdlib_tokenizer.bos_id)

    expected = _expected_documents(config, stdlib_tokenizer, "validation")
    first = epoch(0)
    assert sorted(first) == sorted(expected) and first != expected
    assert epoch(0) == first and epoch(1) != first


def test_training_batches_are_full_and_repeat_across_epochs(config, stdlib_tokenizer):
    iterator = iter(lm_dataset(config, stdlib_tokenizer, "validation"))
    tokens = sum(len(d) for d in _expected_documents(config, stdlib_tokenizer, "validation"))
    num_batches = 2 * tokens // (4 * SEQ_LEN) + 2  # more than one epoch
    for _ in range(num_batches):
        batch = next(iterator)
        _check_row_layout(batch, 4)


def test_process_shards_are_disjoint_and_cover_the_split(config, stdlib_tokenizer):
    config.data.global_batch_size = 2
    shards = [
        _documents_in(list(lm_dataset(config, stdlib_tokenizer, "validation", process_index=i,
                                      process_count=2, shuffle=False, repeat=False)),
                      stdlib_tokenizer.bos_id)
        for i in range(2)]
    assert shards[0] and shards[1]
    assert sorted(shards[0] + shards[1]) == sorted(
        _expected_documents(config, stdlib_tokenizer, "validation"))


def test_indivisible_global_batch_names_the_values(config, stdlib_tokenizer):
    config.data.global_batch_size = 5
    with pytest.raises(ValueError, match="global_batch_size=5 is not divisible.*count 2"):
        lm_dataset(config, stdlib_tokenizer, "train", process_count=2)


def test_resume_from_orbax_checkpoint_is_exact(config, stdlib_tokenizer, tmp_path):
    config.data.seq_len = 512  # rows hold whole documents and pieces of split ones
    dataset = lm_dataset(config, stdlib_tokenizer, "train")
    iterator = iter(dataset)
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=True)
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as manager:
        for _ in range(7):
            next(iterator)
        manager.save(7, args=ocp.args.Composite(data=iterator_save_args(iterator)))
        uninterrupted = [next(iterator) for _ in range(10)]
        manager.wait_until_finished()

    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as manager:
        restored = iter(dataset)
        manager.restore(manager.latest_step(),
                        args=ocp.args.Composite(data=iterator_restore_args(restored)))
        resumed = [next(restored) for _ in range(10)]
    for a, b in zip(uninterrupted, resumed):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("dataset", [lm_dataset, bert_pretraining_dataset,
                                     bart_denoising_dataset], ids=["clm", "mlm_nsp", "denoising"])
def test_worker_processes_give_the_same_batches(config, stdlib_tokenizer, dataset):
    """Packed, masked and noised rows alike: the host's per-token work spreads over worker
    processes without changing the stream."""
    # grain's worker processes read absl flags, which the CLI parses and pytest does not.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()

    def first_batches(worker_count: int) -> list[dict[str, np.ndarray]]:
        config.data.worker_count = worker_count
        iterator = iter(dataset(config, stdlib_tokenizer, "validation"))
        batches = [next(iterator) for _ in range(6)]
        iterator.close()
        return batches

    for a, b in zip(first_batches(0), first_batches(2)):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
