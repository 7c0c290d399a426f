"""grain pipelines of the pretraining objectives: documents -> token ids -> rows -> per-process
batches, and the pieces the other pipelines share (process sharding, epochs, batch sizes,
iterator checkpointing).

Every dataset takes (config, tokenizer, split, *, process_index, process_count, shuffle, repeat)
and yields numpy dicts whose arrays have a leading [local_batch] axis; L is config.data.seq_len.
  lm_dataset               causal LM (GPT, GPT-2): documents [bos] + ids + [eos] packed into rows
                           (a long document continues in the next row): 'inputs',
                           'segment_ids' (1, 2, ... per piece, 0 padding), 'positions'
                           (restarting per piece), all [B, L]. Attention stays within a
                           segment; targets are `inputs` shifted within a segment.
  bert_pretraining_dataset masked LM + next-sentence pairs (BERT): 'inputs', 'token_types',
                           'positions', 'segment_ids', 'mlm_labels' [B, L], 'nsp_labels' [B].
  bart_denoising_dataset   BART's noised documents: 'inputs', 'segment_ids', 'decoder_inputs',
                           'targets', 'target_mask' [B, L].
XLM's language-tagged streams and TLM pairs build on `packed_lm_rows` in data/multilingual.py;
fine-tuning rows are finetune/pipelines.py's. Rows are a function of the config's seeds and the
position in the stream: the iterator is checkpointable (`get_state`/`set_state`), and
`iterator_save_args` / `iterator_restore_args` put its state in an Orbax CheckpointManager
checkpoint, one file per process.
"""
from __future__ import annotations

import re
from typing import Any

import grain
import ml_collections
import numpy as np

from textgen_jax.data.masking import mask_tokens, special_ids
from textgen_jax.data.noising import NoiseConfig, add_noise
from textgen_jax.data.sources import example_text, open_source
from textgen_jax.data.tokenizer import Tokenizer


class _TokenizeDocument:
    """example -> {'inputs': int32 [bos] + ids + [eos]}; a class, not a closure, so it pickles."""

    def __init__(self, tokenizer: Tokenizer, text_key: str):
        self._tokenizer = tokenizer
        self._text_key = text_key

    def __call__(self, example: dict[str, Any]) -> dict[str, np.ndarray]:
        ids = self._tokenizer.encode(example_text(example, self._text_key))
        tok = self._tokenizer
        return {"inputs": np.asarray(
            [*tok.present(tok.bos_id), *ids, *tok.present(tok.eos_id)], dtype=np.int32)}


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


def process_shard(source: Any, process_index: int, process_count: int) -> grain.MapDataset:
    """This process's examples of `source`: process_index, process_index + process_count, ...
    so the processes' shards are disjoint and together cover it."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is outside [0, {process_count}).")
    return grain.MapDataset.source(source)[process_index::process_count]


def epochs(dataset: grain.MapDataset, config: ml_collections.ConfigDict, shuffle: bool,
           repeat: bool) -> grain.MapDataset:
    """`dataset` in a new order each epoch (deterministic from the config's seeds) when
    `shuffle`, repeated forever when `repeat`."""
    if shuffle:
        dataset = dataset.shuffle(seed=shuffle_seed(config))
    if repeat:
        dataset = dataset.repeat()  # reseeds the shuffle each epoch
    return dataset


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

    The rows are those of `packed_lm_rows`, batched: [global_batch_size // process_count,
    config.data.seq_len] arrays.
    """
    batch_size = local_batch_size(config.data, process_count)
    rows = packed_lm_rows(config, tokenizer, split, process_index=process_index,
                          process_count=process_count, shuffle=shuffle, repeat=repeat)
    return rows.batch(batch_size, drop_remainder=True)


def in_workers(rows: grain.IterDataset, config: ml_collections.ConfigDict) -> grain.IterDataset:
    """`rows` computed by config.data.worker_count grain worker processes (0: in this one).

    Workers compute interleaved slices of the stream and grain merges them back in order, so
    the rows (and the packing or batching after them) are the same for any worker count, and
    the iterator's state still resumes the stream. Tokenizing, masking and noising are the
    host's work per token: workers spread them over the host's cores (bench/data_throughput.py).
    """
    if config.data.worker_count > 0:
        rows = rows.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=config.data.worker_count))
    return rows


def packed_lm_rows(
    config: ml_collections.ConfigDict,
    tokenizer: Tokenizer,
    split: str,
    *,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    repeat: bool = True,
) -> grain.IterDataset:
    """Packed causal-LM rows (unbatched) of `split` for one process; see the module docstring.

    Process `process_index` reads documents process_index, process_index + process_count, ...
    so the processes' shards are disjoint and together cover the split. Training uses
    `shuffle=True, repeat=True` (a new document order each epoch, deterministic given the
    config's seeds); evaluation uses `shuffle=False, repeat=False`, a fixed, finite sequence of
    batches whose last batch is dropped if incomplete (a final partial row is zero-padded).

    Note the number of eval batches can differ between processes, so a multi-process eval
    loop should take a fixed number of batches (e.g. with `repeat=True`).

    Returns:
      An IterDataset of dicts {'inputs', 'segment_ids', 'positions'}: int32
      [config.data.seq_len].
    """
    source = open_source(config.data, split)
    if len(source) < process_count:
        raise ValueError(f"Split {split!r} has {len(source)} documents, fewer than the "
                         f"{process_count} processes that share it; use a larger split.")

    documents = epochs(process_shard(source, process_index, process_count), config, shuffle,
                       repeat)
    token_ids = documents.map(_TokenizeDocument(tokenizer, config.data.text_key))
    rows = in_workers(token_ids.to_iter_dataset(), config)
    rows = grain.experimental.ConcatThenSplitIterDataset(
        rows, length_struct={"inputs": config.data.seq_len})
    return rows.map(_rename_packed)


def split_sentences(text: str) -> list[str]:
    """A document's sentences, simply: pieces between newlines and after '. ' (BERT's segments
    are spans of whole sentences, §A.2)."""
    return [s.strip() for s in re.split(r"\n+|(?<=\.) +", text) if s.strip()]


class _SentencePairs:
    """(index, document number) -> one BERT pretraining row (§3.1, appendix A.1/A.2).

    Segment A is a run of sentences from a random place in the document; with probability 1/2
    segment B is the text that follows it (NSP label 0), otherwise a run of sentences from
    another document (label 1). The pair is truncated to fit `[CLS] A [SEP] B [SEP]` in
    seq_len by dropping tokens from the longer segment, at its front or back at random, as the
    reference's truncate_seq_pair does; then 15% of the tokens are masked (80/10/10).
    Everything random comes from a generator seeded by (seed, index); with `repeat` the index
    runs on over epochs, so each epoch draws new pairs and masks.
    """

    def __init__(self, source, tokenizer: Tokenizer, text_key: str, seq_len: int, seed: int):
        self._source = source
        self._tokenizer = tokenizer
        self._text_key = text_key
        self._seq_len = seq_len
        self._seed = seed

    def _run_of_sentences(self, document: int, rng: np.random.Generator,
                          max_tokens: int) -> list[list[int]]:
        """Tokenized sentences from a random start until max_tokens are reached (at least one)."""
        sentences = split_sentences(example_text(self._source[document], self._text_key)) or [""]
        start = int(rng.integers(len(sentences)))
        run, count = [], 0
        for sentence in sentences[start:]:
            ids = self._tokenizer.encode(sentence)
            run.append(ids)
            count += len(ids)
            if count >= max_tokens:
                break
        return run

    def __call__(self, index: int, document: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self._seed, index])
        tok = self._tokenizer
        max_tokens = self._seq_len - 3  # [CLS], [SEP], [SEP]
        run = self._run_of_sentences(document, rng, max_tokens)
        is_random_next = bool(rng.random() < 0.5)
        if len(run) == 1:  # one sentence: A and a true B are its two halves
            ids = run[0]
            cut = int(rng.integers(1, len(ids))) if len(ids) > 1 else len(ids)
            run = [ids[:cut], ids[cut:]]
        a_end = int(rng.integers(1, len(run))) if len(run) > 1 else 1
        segment_a = [t for sentence in run[:a_end] for t in sentence]
        if is_random_next:
            other = int(rng.integers(len(self._source) - 1))
            other += other >= document  # any document but this one
            segment_b = [t for sentence in self._run_of_sentences(
                other, rng, max_tokens - len(segment_a)) for t in sentence]
        else:
            segment_b = [t for sentence in run[a_end:] for t in sentence]
        while len(segment_a) + len(segment_b) > max_tokens:
            longer = segment_a if len(segment_a) > len(segment_b) else segment_b
            del longer[0 if rng.random() < 0.5 else -1]

        ids = [tok.cls_id, *segment_a, tok.sep_id, *segment_b, tok.sep_id]
        length = len(ids)
        padding = self._seq_len - length
        row = np.asarray(ids + [tok.pad_id] * padding, np.int32)
        token_types = np.asarray([0] * (len(segment_a) + 2) + [1] * (len(segment_b) + 1)
                                 + [0] * padding, np.int32)
        inputs, mlm_labels = mask_tokens(row, rng, tok.mask_id, tok.vocab_size, special_ids(tok))
        return {
            "inputs": inputs,
            "token_types": token_types,
            "positions": np.where(np.arange(self._seq_len) < length,
                                  np.arange(self._seq_len), 0).astype(np.int32),
            "segment_ids": (np.arange(self._seq_len) < length).astype(np.int32),
            "mlm_labels": mlm_labels,
            "nsp_labels": np.int32(is_random_next),
        }


def bert_pretraining_dataset(
    config: ml_collections.ConfigDict,
    tokenizer: Tokenizer,
    split: str,
    *,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    repeat: bool = True,
) -> grain.IterDataset:
    """BERT masked-LM + next-sentence batches of `split` for one process (see _SentencePairs).

    One row per document per epoch; processes read disjoint shards of documents as in
    `lm_dataset` (a random segment B comes from the process's own shard). The dataset is a
    grain MapDataset up to batching, so the iterator is checkpointable and the rows are
    determined by the config's seeds and the position in the stream.

    Returns:
      An IterDataset of dicts, int32: 'inputs' (masked ids), 'token_types' (0 = [CLS] A [SEP],
      1 = B [SEP]), 'positions', 'segment_ids' (1 real, 0 padding), 'mlm_labels' (original
      id where a token is predicted, -1 elsewhere), all [local_batch, seq_len]; 'nsp_labels'
      [local_batch] (0 = B follows A, 1 = B is random).
    """
    batch_size = local_batch_size(config.data, process_count)
    source = process_shard(open_source(config.data, split), process_index, process_count)
    if len(source) < 2:
        raise ValueError(f"Split {split!r} leaves {len(source)} documents to process "
                         f"{process_index} of {process_count}; next-sentence prediction needs "
                         "at least 2 per process. Use a larger split.")
    documents = epochs(grain.MapDataset.range(len(source)), config, shuffle, repeat)
    rows = documents.map_with_index(_SentencePairs(
        source, tokenizer, config.data.text_key, config.data.seq_len, shuffle_seed(config)))
    return in_workers(rows.to_iter_dataset(), config).batch(batch_size, drop_remainder=True)


class _DenoisingPair:
    """(index, document number) -> one BART denoising row (Lewis et al. 2019, §2.2).

    The document's sentences are tokenized and cut to fit `[bos] + text + [eos]` in seq_len
    (whole sentences, then the last one cut). The target is that original sequence; the source
    is `add_noise` of the sentences (cut to seq_len, ending in eos, in the rare case that
    0-length infilling spans make it longer). The decoder reads the target shifted right after
    the decoder start token, eos, as the reference (fairseq, HF decoder_start_token_id = eos).
    Everything random comes from a generator seeded by (seed, index), as in _SentencePairs.
    """

    def __init__(self, source, tokenizer: Tokenizer, text_key: str, seq_len: int, seed: int,
                 noise: NoiseConfig):
        self._source = source
        self._tokenizer = tokenizer
        self._text_key = text_key
        self._seq_len = seq_len
        self._seed = seed
        self._noise = noise

    def _sentences(self, document: int) -> list[np.ndarray]:
        """Token ids of the document's sentences, at most seq_len - 2 tokens in all."""
        budget = self._seq_len - 2  # bos, eos
        sentences = []
        for sentence in split_sentences(example_text(self._source[document], self._text_key)):
            ids = self._tokenizer.encode(sentence)[:budget]
            if ids:
                sentences.append(np.asarray(ids, np.int32))
            budget -= len(ids)
            if budget == 0:
                break
        return sentences

    def _pad(self, ids: np.ndarray) -> np.ndarray:
        return np.pad(ids, (0, self._seq_len - ids.size),
                      constant_values=self._tokenizer.pad_id).astype(np.int32)

    def __call__(self, index: int, document: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self._seed, index])
        tok = self._tokenizer
        sentences = self._sentences(document)
        noised = add_noise(sentences, rng, tok, self._noise)
        if noised.size > self._seq_len:
            noised = np.append(noised[:self._seq_len - 1], tok.eos_id)
        target = np.concatenate([[tok.bos_id], *sentences, [tok.eos_id]]).astype(np.int32)
        targets = self._pad(target)
        positions = np.arange(self._seq_len)
        return {
            "inputs": self._pad(noised),
            "segment_ids": (positions < noised.size).astype(np.int32),
            "decoder_inputs": np.concatenate([[tok.eos_id], targets[:-1]]).astype(np.int32),
            "targets": targets,
            "target_mask": (positions < target.size).astype(np.int32),
        }


def bart_denoising_dataset(
    config: ml_collections.ConfigDict,
    tokenizer: Tokenizer,
    split: str,
    *,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    repeat: bool = True,
) -> grain.IterDataset:
    """BART denoising batches of `split` for one process (see _DenoisingPair); the noise is
    config.noise (a `NoiseConfig`'s fields).

    One row per document per epoch; processes read disjoint shards of documents as in
    `lm_dataset`. A grain MapDataset up to batching, so the iterator is checkpointable and the
    rows are determined by the config's seeds and the position in the stream.

    Returns:
      An IterDataset of dicts, int32 [local_batch, seq_len]: 'inputs' (the noised document),
      'segment_ids' (1 real, 0 padding), 'decoder_inputs' (eos + targets[:-1]), 'targets'
      ([bos] + document + [eos], padded) and 'target_mask' (1 real target token, 0 padding).
    """
    batch_size = local_batch_size(config.data, process_count)
    source = process_shard(open_source(config.data, split), process_index, process_count)
    if len(source) == 0:
        raise ValueError(f"Split {split!r} has no documents for process {process_index} of "
                         f"{process_count}; use a larger split.")
    documents = epochs(grain.MapDataset.range(len(source)), config, shuffle, repeat)
    rows = documents.map_with_index(_DenoisingPair(
        source, tokenizer, config.data.text_key, config.data.seq_len, shuffle_seed(config),
        NoiseConfig(**config.noise.to_dict())))
    return in_workers(rows.to_iter_dataset(), config).batch(batch_size, drop_remainder=True)


def iterator_save_args(iterator: grain.DatasetIterator) -> grain.checkpoint.CheckpointSave:
    """Orbax save args for a data iterator (each process writes its own state file)."""
    return grain.checkpoint.CheckpointSave(iterator)


def iterator_restore_args(iterator: grain.DatasetIterator) -> grain.checkpoint.CheckpointRestore:
    """Orbax restore args that set the state of `iterator`, a fresh iterator of the same dataset."""
    return grain.checkpoint.CheckpointRestore(iterator)
