"""grain pipelines for fine-tuning: a task's examples -> each architecture's input rows -> batches.

`finetune_dataset(config, tokenizer, split)` reads the task config.task.name (finetune/tasks.py)
and formats rows for config.model.arch. Every array is numpy, int32 unless noted; L is
config.data.seq_len, B the local batch. Texts are truncated so that no row exceeds L (a pair
loses tokens from the end of its longer text first, as BERT's truncate_seq_pair).

Rows use the model contract's keys (models/spec.py) and keep only those the architecture
reads (`spec.select`): every text row is built with inputs, positions, segment_ids (1 real, 0
padding), token_types (0 for A and its specials, 1 for B), langs (config.task.language's index
in config.data.languages, 0 with none, on real tokens) and extract_positions [B] (the last real
token), and an encoder-decoder's with decoder_inputs = eos + inputs[:-1] and
decoder_segment_ids (the same tokens, fed to the decoder, BART §3.1).

Text rows (classification, regression, similarity, and each choice of multiple_choice), framed
by `spec.pair_layout`:
  bert   inputs `[cls] A [sep] B [sep]`, token_types, positions, segment_ids.
  xlm    inputs `[bos] A [eos] B [eos]`, langs, positions, segment_ids.
  gpt, gpt2  inputs `start A delim B extract` (GPT §3.3) with the existing reserved ids:
         start = bos, delim = '<sep>', extract = eos; positions, segment_ids, and
         extract_positions [B] (the index of the extract token, whose state the head reads).
  bart   inputs `[bos] A [eos] [eos] B [eos]` (fairseq's pair format), segment_ids,
         decoder_inputs, decoder_segment_ids, extract_positions [B] (the final eos, whose
         decoder state the head reads, as Hugging Face's BartForSequenceClassification).
  labels [B]: int32 classes, float32 for a score (Task.is_regression).
  similarity on a decoder (gpt/gpt2): every key gains an order axis, [B, 2, L], rows (A, B)
         and (B, A) whose states the head adds (GPT §3.3).
  multiple_choice: every key gains a choice axis, [B, num_choices, L], one row per
         `context, choice` pair; labels [B] the right choice.

token_classification (bert, xlm): the text row of the words' pieces, and labels [B, L]: each
  word's tag on its first piece, IGNORE_LABEL (-1) on its other pieces, specials and padding.

extractive_qa (bert, xlm): a row per window of the context (SQuAD's doc stride, BERT's
  run_squad.py: windows of what the row leaves after the question, each starting
  config.task.doc_stride tokens after the last; the question cut to
  config.task.max_query_length): the text row of (question, window), plus start_positions,
  end_positions [B] (the answer's first and last token; 0, the [cls] position, when the window
  does not hold the whole answer or there is none), context_offsets [B, L, 2] (the character
  span in the context of the word each context token belongs to, -1 elsewhere) and
  max_context [B, L] (1 on the context tokens this window sees with the most context on both
  sides, where an answer may start), which `answers.best_answer` turns back into text across
  an example's windows.

seq2seq:
  an encoder-decoder (bart; xlm with config.model.encoder_decoder, XLM §5): inputs
         `[bos] source [eos]`, segment_ids, decoder_inputs = eos + targets[:-1],
         decoder_segment_ids, targets `[bos] target [eos]`, target_mask (1 on the target's
         tokens, as decoder_segment_ids; as data/pipeline.py's denoising rows); xlm also langs
         and decoder_langs (the source's and the target's language index).
  a decoder (gpt, gpt2)  inputs `[bos] source [sep] target [eos]`, positions, segment_ids,
         targets (the next token of each position), target_mask (1 where that next token is
         in the target) and prompt_lengths [B] (the length of `[bos] source [sep]`, what
         generation reads).

Every kind also has example_index [B]: the example's index in the split (a QA example's
windows share it), for evaluation to read what the rows do not hold (`task_source`, `references`: a QA context and its answers, a
seq2seq reference).

Rows are a pure function of (config seeds, the example's index): embedded-corpus tasks draw
their pairs and distractors from a generator seeded by both, so batches are deterministic and
the iterator (a grain MapDataset up to batching) is checkpointable like the pretraining ones.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np
from absl import logging

from textgen_jax.data.masking import IGNORE_LABEL
from textgen_jax.data.pipeline import epochs, local_batch_size, process_shard, shuffle_seed
from textgen_jax.data.sources import open_source
from textgen_jax.data.tokenizer import Tokenizer
from textgen_jax.config import ConfigError
from textgen_jax.finetune.tasks import Task, get_task, signature_of
from textgen_jax.models import DECODER, ENCODER, ENCODER_DECODER, ArchitectureSpec, spec_for

ARCHS = ("bert", "xlm", "gpt", "gpt2", "bart")
KIND_ARCHS = {"extractive_qa": ("bert", "xlm"), "token_classification": ("bert", "xlm"),
              "seq2seq": ("bart", "xlm", "gpt", "gpt2")}
# The special pieces each architecture's rows write (their vocabulary must hold them).
FINETUNE_PIECES = {"bert": ("<cls>", "<sep>"), "gpt": ("<sep>",), "gpt2": ("<sep>",)}


def _text(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _feature(example: Mapping[str, Any], name: str, task: Task) -> Any:
    try:
        return example[name]
    except KeyError:
        raise KeyError(f"Task {task.name!r} reads the feature {name!r}, but the examples of "
                       f"{task.dataset!r} have {sorted(example)}.") from None


def word_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the whitespace-separated words of `text`."""
    return [match.span() for match in re.finditer(r"\S+", text)]


def _truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Drops tokens from the end of the longer of a, b until both fit in `budget`."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b


def doc_windows(num_tokens: int, room: int, doc_stride: int) -> list[tuple[int, int]]:
    """(first token, length) of each window over a context of `num_tokens` tokens, each at
    most `room` long, each starting `doc_stride` tokens after the last (BERT's run_squad.py
    doc_spans); one empty window for an empty context."""
    if room < 1:
        raise ValueError(f"a QA row of this question leaves {room} tokens for the context; "
                         "raise config.data.seq_len or lower config.task.max_query_length.")
    windows, first = [], 0
    while first < num_tokens:
        length = min(num_tokens - first, room)
        windows.append((first, length))
        if first + length == num_tokens:
            break
        first += min(length, doc_stride)
    return windows or [(0, 0)]


def is_max_context(windows: Sequence[tuple[int, int]], window: int, token: int) -> bool:
    """Whether `window` is the one of `windows` that sees context token `token` with the most
    context on both sides (min of left and right, + 0.01 * length: run_squad.py's
    _check_is_max_context); an answer may only start there."""
    best, best_score = None, None
    for index, (first, length) in enumerate(windows):
        last = first + length - 1
        if first <= token <= last:
            score = min(token - first, last - token) + 0.01 * length
            if best_score is None or score > best_score:
                best, best_score = index, score
    return best == window


@dataclasses.dataclass(frozen=True)
class QaWindowing:
    """config.task's doc_stride and max_query_length (BERT's run_squad.py flags)."""

    doc_stride: int
    max_query_length: int


@dataclasses.dataclass(frozen=True)
class _QaTokens:
    question_ids: list[int]
    context_ids: list[int]
    offsets: list[tuple[int, int]]  # each context token's word's character span
    windows: list[tuple[int, int]]  # (first token, length) of each window


class _RowFormatter:
    """Token ids -> one architecture's row (see the module docstring); picklable."""

    def __init__(self, tokenizer: Tokenizer, spec: ArchitectureSpec, seq_len: int, lang_id: int,
                 target_lang_id: int):
        self.tokenizer, self.spec, self.seq_len = tokenizer, spec, seq_len
        self.lang_id, self.target_lang_id = lang_id, target_lang_id

    def _pad(self, ids: Sequence[int]) -> np.ndarray:
        return np.asarray(list(ids) + [self.tokenizer.pad_id] * (self.seq_len - len(ids)),
                          np.int32)

    def _mask(self, length: int) -> np.ndarray:
        return (np.arange(self.seq_len) < length).astype(np.int32)

    def _positions(self, length: int) -> np.ndarray:
        return np.where(np.arange(self.seq_len) < length, np.arange(self.seq_len), 0
                        ).astype(np.int32)

    def pair_layout(self, has_b: bool) -> tuple[list[int], list[int], list[int]]:
        """(tokens before A, between A and B, after B) of this architecture."""
        return self.spec.pair_layout(self.tokenizer, has_b)

    def text_row(self, a: list[int], b: list[int] | None) -> tuple[dict[str, np.ndarray], int]:
        """The row of text A (and B), truncated to seq_len (every key [seq_len] but
        extract_positions, a scalar); and where B starts in it."""
        before, between, after = self.pair_layout(b is not None)
        a, b = _truncate_pair(a, b or [], self.seq_len - len(before) - len(between) - len(after))
        ids = before + a + between + b + after
        b_start = len(before) + len(a) + len(between)
        length = len(ids)
        inputs, real = self._pad(ids), self._mask(length)
        row = {"inputs": inputs, "positions": self._positions(length), "segment_ids": real,
               "token_types": (real - self._mask(b_start)).astype(np.int32),
               "langs": real * np.int32(self.lang_id),
               "extract_positions": np.int32(length - 1)}
        if self.spec.kind == ENCODER_DECODER:
            row["decoder_inputs"] = np.concatenate([[self.tokenizer.eos_id], inputs[:-1]]
                                                   ).astype(np.int32)
            row["decoder_segment_ids"] = real
        return self.spec.select(row), b_start

    def seq2seq_row(self, source: list[int], target: list[int]) -> dict[str, np.ndarray]:
        """A decoder's `[bos] source [sep] target [eos]` row, or an encoder-decoder's source and
        target rows (see the module docstring); every key [seq_len] but prompt_lengths."""
        tok, seq_len = self.tokenizer, self.seq_len
        if self.spec.kind == DECODER:
            # The source keeps at least half the row; the target gets the rest.
            source = source[:max(seq_len // 2 - 2, seq_len - 3 - len(target))]
            target = target[:seq_len - 3 - len(source)]
            ids = [tok.bos_id, *source, tok.sep_id, *target, tok.eos_id]
            prompt_length = len(source) + 2
            inputs, real = self._pad(ids), self._mask(len(ids))
            next_positions = np.arange(seq_len) + 1
            return self.spec.select({
                "inputs": inputs, "positions": self._positions(len(ids)), "segment_ids": real,
                "langs": real * np.int32(self.lang_id),
                "targets": np.append(inputs[1:], tok.pad_id).astype(np.int32),
                "target_mask": ((next_positions >= prompt_length)
                                & (next_positions < len(ids))).astype(np.int32),
                "prompt_lengths": np.int32(prompt_length)})
        source_ids = [tok.bos_id, *source[:seq_len - 2], tok.eos_id]
        target_ids = [tok.bos_id, *target[:seq_len - 2], tok.eos_id]
        targets = self._pad(target_ids)
        source_real, target_real = self._mask(len(source_ids)), self._mask(len(target_ids))
        return self.spec.select({
            "inputs": self._pad(source_ids), "segment_ids": source_real,
            "langs": source_real * np.int32(self.lang_id),
            "decoder_inputs": np.concatenate([[tok.eos_id], targets[:-1]]).astype(np.int32),
            "decoder_segment_ids": target_real,
            "decoder_langs": target_real * np.int32(self.target_lang_id),
            "targets": targets, "target_mask": target_real})


def _stack(rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


def _module_index(source) -> dict[str, np.ndarray]:
    """module -> indices of its examples in `source` (the stdlib_docstrings/kinds config)."""
    modules: dict[str, list[int]] = {}
    for i in range(len(source)):
        modules.setdefault(_text(source[i]["module"]), []).append(i)
    return {module: np.asarray(indices) for module, indices in modules.items()}


class _TaskRows:
    """Example index (in the whole split) -> one row of the task; see the module docstring.

    Holds the whole split's source: the embedded-corpus tasks draw partners and distractors
    from it with a generator seeded by (seed, index), so an example's row never depends on the
    epoch or the process count.
    """

    def __init__(self, task: Task, source, formatter: _RowFormatter, seed: int, language: str,
                 qa: QaWindowing | None = None, dataset: str = ""):
        self.task, self.source, self.formatter = task, source, formatter
        self.seed, self.language, self.qa = seed, language, qa
        self.dataset = dataset or task.dataset  # the split's (Task.dataset_for)
        # docstring_similarity: module -> indices of its docstrings, read once up front (every
        # reader thread needs it from its first row).
        self.modules = _module_index(source) if task.name == "docstring_similarity" else {}
        if task.name == "docstring_similarity" and len(self.modules) < 2:
            raise ValueError(f"docstring_similarity needs docstrings of 2 modules or more; the "
                             f"split has {len(self.modules)}. Use a larger split.")

    def _encode(self, text: str) -> list[int]:
        return self.formatter.tokenizer.encode(text)

    def _label(self, example: Mapping[str, Any], index: int) -> np.ndarray:
        value = np.asarray(_feature(example, self.task.target, self.task))
        if self.task.is_regression:
            return value.astype(np.float32)
        label = int(value)
        if not 0 <= label < self.task.num_labels:
            raise ValueError(
                f"Example {index} of task {self.task.name!r} has label {label}, outside "
                f"[0, num_labels={self.task.num_labels}) (unlabelled test splits hold -1); "
                "fine-tune and evaluate on a labelled split.")
        return np.int32(label)

    def _texts(self, example: Mapping[str, Any]) -> list[str]:
        if self.dataset == "xnli":  # premise: {lang: text}; hypothesis: parallel lists
            premise = _feature(example, "premise", self.task)
            hypothesis = _feature(example, "hypothesis", self.task)
            languages = [_text(x) for x in hypothesis["language"]]
            if self.language not in languages or self.language not in premise:
                raise ValueError(f"XNLI has no {self.language!r} text (config.task.language); "
                                 f"its languages are {sorted(premise)}.")
            return [_text(premise[self.language]),
                    _text(hypothesis["translation"][languages.index(self.language)])]
        return [_text(_feature(example, name, self.task)) for name in self.task.inputs]

    def _similarity_pair(self, index: int, rng: np.random.Generator) -> tuple[list[str], int]:
        """docstring_similarity: this docstring and, with probability 1/2, another of its
        module (label 1), else one of another module (label 0)."""
        example = self.source[index]
        module = _text(example["module"])
        same = self.modules[module]
        if len(same) > 1 and rng.random() < 0.5:
            partner = int(rng.choice(same[same != index]))
        else:
            while _text(self.source[partner := int(rng.integers(len(self.source)))]["module"]
                        ) == module:
                pass
        label = int(_text(self.source[partner]["module"]) == module)
        return [_text(example["text"]), _text(self.source[partner]["text"])], label

    def _choices(self, index: int, rng: np.random.Generator) -> tuple[str, list[str], int]:
        """docstring_choice: the signature, the right docstring among num_labels - 1 others
        with different text drawn from the split, and the right one's position."""
        example = self.source[index]
        answer = _text(example[self.task.target])
        choices = [answer]
        while len(choices) < self.task.num_labels:
            candidate = _text(self.source[int(rng.integers(len(self.source)))][self.task.target])
            if candidate not in choices:
                choices.append(candidate)
        order = rng.permutation(len(choices))
        return (signature_of(_text(example[self.task.inputs[0]])),
                [choices[i] for i in order], int(np.argmax(order == 0)))

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        return {**self._row(index), "example_index": np.int32(index)}

    def _row(self, index: int) -> dict[str, np.ndarray]:
        task, fmt = self.task, self.formatter
        rng = np.random.default_rng([self.seed, index])
        if task.kind == "multiple_choice":
            context, choices, label = self._choices(index, rng)
            context_ids = self._encode(context)
            row = _stack([fmt.text_row(context_ids, self._encode(c))[0] for c in choices])
            return {**row, "labels": np.int32(label)}
        if task.name == "docstring_similarity":
            texts, label = self._similarity_pair(index, rng)
            labels = np.int32(label)
        else:
            example = self.source[index]
            if task.kind == "seq2seq":
                return fmt.seq2seq_row(self._encode(self._texts(example)[0]),
                                       self._encode(_text(_feature(example, task.target, task))))
            if task.kind == "token_classification":
                return self._tagged_row(example, index)
            texts, labels = self._texts(example), self._label(example, index)
        ids = [self._encode(t) for t in texts]
        b = ids[1] if len(ids) > 1 else None
        if task.both_orders and fmt.spec.kind == DECODER:
            # Truncated once, so both orders hold the same tokens of A and B.
            before, between, after = fmt.pair_layout(True)
            a, b = _truncate_pair(ids[0], b, fmt.seq_len - len(before + between + after))
            row = _stack([fmt.text_row(a, b)[0], fmt.text_row(b, a)[0]])
        else:
            row = fmt.text_row(ids[0], b)[0]
        return {**row, "labels": labels}

    def _tagged_row(self, example: Mapping[str, Any], index: int) -> dict[str, np.ndarray]:
        """The words' pieces as one text; each word's tag on its first piece (BERT §4.3)."""
        words = [_text(w) for w in _feature(example, self.task.inputs[0], self.task)]
        tags = np.asarray(_feature(example, self.task.target, self.task)).astype(np.int64)
        if len(tags) != len(words):
            raise ValueError(f"Example {index} of task {self.task.name!r} has {len(words)} "
                             f"words but {len(tags)} {self.task.target!r} tags; they must pair.")
        bad = tags[(tags < 0) | (tags >= self.task.num_labels)]
        if bad.size:
            raise ValueError(f"Example {index} of task {self.task.name!r} has label {bad[0]}, "
                             f"outside [0, num_labels={self.task.num_labels}).")
        ids, first_piece_tags = [], []
        for word, tag in zip(words, tags):
            pieces = self._encode(word)
            ids += pieces
            first_piece_tags += [int(tag)] + [IGNORE_LABEL] * (len(pieces) - 1)
        row, _ = self.formatter.text_row(ids, None)
        kept = int(row["segment_ids"].sum()) - 2  # [cls]/[bos] ... [sep]/[eos]
        labels = np.full(self.formatter.seq_len, IGNORE_LABEL, np.int32)
        labels[1:1 + kept] = first_piece_tags[:kept]
        return {**row, "labels": labels}

    def context_pieces(self, context: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The context's word pieces, and each one's word's character span."""
        context_ids, offsets = [], []
        for start, end in word_spans(context):
            pieces = self._encode(context[start:end])
            context_ids += pieces
            offsets += [(start, end)] * len(pieces)
        return context_ids, offsets

    def qa_tokens(self, example: Mapping[str, Any], pieces=None) -> _QaTokens:
        """The question's ids (cut to config.task.max_query_length, and to half the row), the
        context's word pieces (`pieces`, or `context_pieces` of it), and the windows over them
        (BERT's run_squad.py)."""
        question, context = self._texts(example)
        context_ids, offsets = pieces or self.context_pieces(context)
        fmt = self.formatter
        question_ids = self._encode(question)[:min(self.qa.max_query_length,
                                                   (fmt.seq_len - 3) // 2)]
        framing = sum(len(part) for part in fmt.pair_layout(True))
        windows = doc_windows(len(context_ids), fmt.seq_len - framing - len(question_ids),
                              self.qa.doc_stride)
        return _QaTokens(question_ids, context_ids, offsets, windows)

    def _qa_row(self, example: Mapping[str, Any], window: int) -> dict[str, np.ndarray]:
        """The row of one window of the context: context_offsets and max_context on its
        context tokens, and the answer's first and last token if the window holds it whole
        (else the [cls] position 0, as the reference)."""
        tokens = self.qa_tokens(example)
        first, length = tokens.windows[window]
        row, context_start = self.formatter.text_row(
            tokens.question_ids, tokens.context_ids[first:first + length])
        seq_len = self.formatter.seq_len
        offsets = np.full((seq_len, 2), -1, np.int32)
        max_context = np.zeros(seq_len, np.int32)
        if length:
            offsets[context_start:context_start + length] = tokens.offsets[first:first + length]
            max_context[context_start:context_start + length] = [
                is_max_context(tokens.windows, window, first + t) for t in range(length)]
        start_position = end_position = 0
        answer = self._answer_tokens(example, tokens.offsets)
        if answer is not None and first <= answer[0] and answer[1] < first + length:
            start_position = context_start + answer[0] - first
            end_position = context_start + answer[1] - first
        return {**row, "start_positions": np.int32(start_position),
                "end_positions": np.int32(end_position), "context_offsets": offsets,
                "max_context": max_context}

    def _answer_tokens(self, example: Mapping[str, Any], offsets: Sequence[tuple[int, int]]
                       ) -> tuple[int, int] | None:
        """The first and last context token of the first answer (None: no answer, as SQuAD
        v2.0's impossible questions, or one not in the context)."""
        context = self._texts(example)[1]
        answers = _feature(example, self.task.target, self.task)
        answer_texts = [_text(t) for t in np.atleast_1d(answers["text"])]
        answer_starts = np.atleast_1d(answers["answer_start"])
        if not answer_texts or not answer_texts[0]:
            return None
        answer_start = int(answer_starts[0]) if len(answer_starts) else -1
        if context[answer_start:answer_start + len(answer_texts[0])] != answer_texts[0]:
            answer_start = context.find(answer_texts[0])  # a wrong offset: find the text
        if answer_start < 0:
            return None
        answer_end = answer_start + len(answer_texts[0])
        inside = [t for t, (start, end) in enumerate(offsets)
                  if start < answer_end and end > answer_start]
        return (inside[0], inside[-1]) if inside else None


class _WindowRows:
    """extractive_qa: window index (into `table`, [windows, 2] of example index and window
    number) -> that window's row; a class, not a closure, so it pickles."""

    def __init__(self, rows: _TaskRows, table: np.ndarray):
        self.rows, self.table = rows, table

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        example_index, window = (int(i) for i in self.table[index])
        return {**self.rows._qa_row(self.rows.source[example_index], window),
                "example_index": np.int32(example_index)}


def qa_window_table(rows: _TaskRows) -> np.ndarray:
    """[windows, 2]: (example index, window number) of every window of every example of
    rows.source, in order; a context shared by several questions is tokenized once."""
    pieces: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}
    table = []
    for index in range(len(rows.source)):
        example = rows.source[index]
        context = rows._texts(example)[1]
        if context not in pieces:
            pieces[context] = rows.context_pieces(context)
        count = len(rows.qa_tokens(example, pieces[context]).windows)
        table += [(index, window) for window in range(count)]
    logging.info("%s: %d questions read in %d windows (config.task.doc_stride=%d)",
                 rows.task.name, len(rows.source), len(table), rows.qa.doc_stride)
    return np.asarray(table, np.int32).reshape(-1, 2)


def _language_index(config: ml_collections.ConfigDict, language: str) -> int:
    """XLM's language id of `language`: its position in config.data.languages (0 if none)."""
    languages = tuple(config.data.languages)
    if not languages:
        return 0
    if language not in languages:
        raise ValueError(f"Language {language!r} is not in config.data.languages={languages}; "
                         "add it (the language embeddings are indexed by that list).")
    return languages.index(language)


def task_languages(config: ml_collections.ConfigDict, task: Task, language: str = ""
                   ) -> tuple[str, int, int]:
    """(the language `task` is read in, XLM's id of it, XLM's id of a translation's output
    language; ids 0 on other architectures). The language is `language`, else
    config.task.language, else the task's first ('en' for a task without languages)."""
    language = language or config.task.language or (
        task.languages[0] if task.languages else "en")
    if task.languages and task.kind != "seq2seq" and language not in task.languages:
        raise ValueError(f"config.task.language={language!r} is not an XNLI language (task "
                         f"{task.name!r}); use one of {task.languages}.")
    if not spec_for(config.model).uses_languages:
        return language, 0, 0
    target = (_language_index(config, task.languages[1])
              if task.kind == "seq2seq" and len(task.languages) == 2 else 0)
    return language, _language_index(config, language), target


def task_source(config: ml_collections.ConfigDict, split: str) -> Sequence[Mapping[str, Any]]:
    """The random-access examples of `split` of task config.task.name, indexed as the rows'
    example_index (config.data's data_dir; the dataset is the task's)."""
    task = get_task(config.task.name)
    task.check_split(split)
    data_config = copy.deepcopy(config.data)
    data_config.unlock()
    data_config.update(dataset=task.dataset_for(split), files="")
    return open_source(data_config, split, check_text_key=False)


def references(config: ml_collections.ConfigDict, example: Mapping[str, Any]) -> Any:
    """What `metrics.compute_metrics` compares a prediction of `example` with: the label of
    a classification-like task, the answer texts of a QA one (a list), the target text of a
    seq2seq one. (multiple_choice, docstring_similarity and token_classification build their
    labels in the rows: read `labels` there.)"""
    task = get_task(config.task.name)
    value = _feature(example, task.target, task)
    if task.kind == "extractive_qa":  # SQuAD v2.0: '' is the answer of an unanswerable one
        return [_text(answer) for answer in np.atleast_1d(value["text"])] or [""]
    if task.kind == "seq2seq":
        return _text(value)
    if task.kind in ("multiple_choice", "token_classification") or (
            task.name == "docstring_similarity"):
        raise ValueError(f"Task {task.name!r}'s labels are the rows' 'labels'.")
    return float(value) if task.is_regression else int(value)


def finetune_rows(
    config: ml_collections.ConfigDict,
    tokenizer: Tokenizer,
    split: str,
    *,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    repeat: bool = True,
) -> grain.MapDataset:
    """The unbatched rows of `split` of task config.task.name for config.model.arch, for one
    process (examples process_index, process_index + process_count, ... of the split); see
    the module docstring. Training: shuffle and repeat; evaluation: neither (each example
    once, in order)."""
    task = get_task(config.task.name)
    arch = config.model.arch
    if arch not in ARCHS:
        raise ValueError(f"config.model.arch={arch!r} has no fine-tuning rows; use one of "
                         f"{ARCHS}.")
    if arch not in KIND_ARCHS.get(task.kind, ARCHS):
        raise ValueError(f"Task {task.name!r} ({task.kind}) needs one of "
                         f"{KIND_ARCHS[task.kind]}, not config.model.arch={arch!r}.")
    language, lang_id, target_lang_id = task_languages(config, task)
    spec = spec_for(config.model)
    if task.kind == "seq2seq" and spec.kind == ENCODER:
        raise ConfigError(f"Task {task.name!r} (seq2seq) needs a model that generates; "
                          f"config.model.arch={arch!r} is an encoder here: set "
                          "config.model.encoder_decoder=True (XLM's translation model, §5).")

    source = task_source(config, split)
    if len(source) < max(process_count, task.num_labels if task.kind == "multiple_choice" else 1):
        raise ValueError(f"Split {split!r} of task {task.name!r} has {len(source)} examples, "
                         f"fewer than the {process_count} processes that share it or the "
                         f"{task.num_labels} choices drawn from it; use a larger split.")
    formatter = _RowFormatter(tokenizer, spec, config.data.seq_len, lang_id, target_lang_id)
    rows = _TaskRows(task, source, formatter, shuffle_seed(config), language,
                     QaWindowing(config.task.doc_stride, config.task.max_query_length),
                     task.dataset_for(split))
    mapper, count = rows, len(source)
    if task.kind == "extractive_qa":  # a row per window of each context (doc stride)
        mapper = _WindowRows(rows, qa_window_table(rows))
        count = len(mapper.table)
    indices = process_shard(grain.MapDataset.range(count), process_index, process_count)
    indices = epochs(indices, config, shuffle, repeat)
    return indices.map(mapper)


def finetune_dataset(
    config: ml_collections.ConfigDict,
    tokenizer: Tokenizer,
    split: str,
    *,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    repeat: bool = True,
) -> grain.IterDataset:
    """Batches of `finetune_rows`: every key gains a leading [global_batch_size //
    process_count] axis; the last incomplete batch is dropped. The iterator is checkpointable
    (`get_state`/`set_state`, or data/pipeline.py's iterator_save_args)."""
    rows = finetune_rows(config, tokenizer, split, process_index=process_index,
                         process_count=process_count, shuffle=shuffle, repeat=repeat)
    batch_size = local_batch_size(config.data, process_count)
    dataset = rows.to_iter_dataset()
    if config.data.worker_count > 0:
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=config.data.worker_count))
    return dataset.batch(batch_size, drop_remainder=True)
