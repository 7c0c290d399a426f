"""grain pipelines: documents -> token ids -> packed causal-LM rows -> per-process batches.

Each batch is a numpy dict of int32 arrays, all [local_batch, seq_len]:
  inputs       token ids; each document is [bos] + ids + [eos], concatenated and cut into rows
               (a document longer than a row continues in the next row);
  segment_ids  1, 2, 3, ... for the document pieces within a row, 0 for padding;
  positions    the position within the piece, restarting at 0 where the segment changes.
Attention must stay within a segment; causal-LM targets are `inputs` shifted within a segment.

The iterator is checkpointable (`get_state`/`set_state`); `iterator_save_args` and
`iterator_restore_args` put its state in an Orbax CheckpointManager checkpoint, one file per
process.
"""

from __future__ import annotations

from typing import Any

import grain
import ml_collections
import numpy as np

from textgen_jax.data.sources import example_text, open_source
from textgen_jax.data.tokenizer import Tokenizer


class _TokenizeDocument:
    """example -> {'inputs': int32 [bos] + ids + [eos]}; a class, not a closure, so it pickles."""

    def __init__(self, tokenizer: Tokenizer, text_key: str):
        self._tokenizer = tokenizer
        self._text_key = text_key

    def __call__(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
        ids = self._tokenizer.encode(example_text(example, self._text_key))
        return {"inputs": np.asarray(
            [self._tokenizer.bos_id, *ids, self._tokenizer.eos_id], dtype=np.int32)}


def _rename_packed(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"inputs": row["inputs"], "segment_ids": row["inputs_segment_ids"],
            "positions": row["inputs_positions"]}


def local_batch_size(data_config: ml_collections.ConfigDict, process_count: int) -> int:
    """The rows each process loads per step: global_batch_size / process_count."""
    global_batch = data_config.global_batch_size
    if global_batch % process_count:
        raise ValueError(
            f"config.data.global_batch_size={global_batch} is not divisible by the "
            f"process count {process_count}; use a multiple of {process_count}.")
    return global_batch // process_count


def shuffle_seed(config: ml_collections.ConfigDict) -> int:
    """The document-order seed, from both config.seed and config.data.shuffle_buffer_seed."""
    return int(np.random.SeedSequence(
        [config.seed, config.data.shuffle_buffer_seed]).generate_state(1)[0])


def lm_dataset(
    config: ml_collections.ConfigDict,
    tokenizer: Tokenizer,
    split: str,
    *,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    repeat: bool = True,
) -> grain.IterDataset:
    """Packed causal-LM batches of `split` for one process; see the module docstring.

    Process `process_index` reads documents process_index, process_index + process_count, ...
    so the processes' shards are disjoint and together cover the split. Training uses
    `shuffle=True, repeat=True` (a new document order each epoch, deterministic given the
    config's seeds); evaluation uses `shuffle=False, repeat=False`, a fixed, finite sequence of
    batches whose last batch is dropped if incomplete (a final partial row is zero-padded).

    Note the number of eval batches can differ between processes, so a multi-process eval
    loop should take a fixed number of batches (e.g. with `repeat=True`).

    Returns:
      An IterDataset of dicts {'inputs', 'segment_ids', 'positions'}: int32
      [global_batch_size // process_count, config.data.seq_len].
    """
    batch_size = local_batch_size(config.data, process_count)
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is outside [0, {process_count}).")
    source = open_source(config.data, split)
    if len(source) < process_count:
        raise ValueError(f"Split {split!r} has {len(source)} documents, fewer than the "
                         f"{process_count} processes that share it; use a larger split.")

    documents = grain.MapDataset.source(source)[process_index::process_count]
    if shuffle:
        documents = documents.shuffle(seed=shuffle_seed(config))
    if repeat:
        documents = documents.repeat()  # reseeds the shuffle each epoch
    token_ids = documents.map(_TokenizeDocument(tokenizer, config.data.text_key))
    rows = token_ids.to_iter_dataset()
    if config.data.worker_count > 0:
        # Workers tokenize interleaved slices and grain merges them back in order, so the
        # stream (and the packing after it) is the same for any worker count.
        rows = rows.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=config.data.worker_count))
    rows = grain.experimental.ConcatThenSplitIterDataset(
        rows, length_struct={"inputs": config.data.seq_len})
    return rows.map(_rename_packed).batch(batch_size, drop_remainder=True)


def iterator_save_args(iterator: grain.DatasetIterator) -> grain.checkpoint.CheckpointSave:
    """Orbax save args for a data iterator (each process writes its own state file)."""
    return grain.checkpoint.CheckpointSave(iterator)


def iterator_restore_args(iterator: grain.DatasetIterator) -> grain.checkpoint.CheckpointRestore:
    """Orbax restore args that set the state of `iterator`, a fresh iterator of the same dataset."""
    return grain.checkpoint.CheckpointRestore(iterator)
