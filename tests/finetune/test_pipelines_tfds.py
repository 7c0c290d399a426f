"""Each TFDS task's batches, end to end on `tfds.testing.mock_data`.

mock_data needs MockPolicy.USE_CODE (or AUTO, which falls back to it): USE_FILES wants the
datasets' real metadata files, which the TFDS wheel does not ship. Under USE_CODE the builders
prepare nothing and `as_data_source` (what `tfds.data_source` and our sources read) returns
random examples of the builder's features, with any split name; text comes back as str.
Where random text cannot exercise a property (a SQuAD answer inside its context, XNLI's
parallel languages, out-of-range labels) `as_data_source_fn` serves hand-written examples.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds
import tensorflow_datasets.question_answering.squad  # noqa: F401  (registers the builders)
import tensorflow_datasets.text.conll2003  # noqa: F401
import tensorflow_datasets.summarization.cnn_dailymail  # noqa: F401
import tensorflow_datasets.summarization.xsum  # noqa: F401
import tensorflow_datasets.text.glue  # noqa: F401
import tensorflow_datasets.text.xnli  # noqa: F401
import tensorflow_datasets.translate.wmt14  # noqa: F401

import tolerances
from textgen_jax.finetune.answers import Window, best_answer, best_answer_span
from textgen_jax.finetune.metrics import compute_metrics
from textgen_jax.finetune.pipelines import finetune_dataset, references, task_source
from textgen_jax.finetune.tasks import get_task

from finetune_rows import check_text_row, flat_rows, is_truncation_of, xnli_examples

SEQ_LEN = 16  # short enough that mock pairs are truncated
NUM_EXAMPLES = 8
MOCK = dict(num_examples=NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_CODE)


def _batches(config, tokenizer, split=None, **kwargs):
    task = get_task(config.task.name)
    return list(finetune_dataset(config, tokenizer, split or task.eval_split, shuffle=False,
                                 repeat=False, **kwargs))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("task_name,arch", [
    ("glue/sst2", "bert"), ("glue/cola", "gpt"), ("glue/mnli", "bart"), ("glue/qnli", "xlm"),
    ("glue/rte", "gpt2"), ("glue/qqp", "gpt"), ("glue/mrpc", "bert"), ("glue/stsb", "gpt"),
    ("glue/stsb", "bert"),
])
def test_glue_batches(task_config, stdlib_tokenizer, task_name, arch):
    tok, task = stdlib_tokenizer, get_task(task_name)
    config = task_config(task_name, arch, seq_len=SEQ_LEN)
    with tfds.testing.mock_data(**MOCK):
        batches = _batches(config, tok)
        source = tfds.data_source(task.dataset, split=task.eval_split)
        examples = [source[i] for i in range(len(source))]
    assert len(batches) == NUM_EXAMPLES // 4
    lengths = []
    for b, batch in enumerate(batches):
        labels = batch["labels"]
        assert labels.shape == (4,)
        if task.is_regression:
            assert labels.dtype == np.float32
        else:
            assert labels.dtype == np.int32 and ((0 <= labels) & (labels < task.num_labels)).all()
        rows = flat_rows({k: v for k, v in batch.items() if k != "labels"}, SEQ_LEN)
        both_orders = task.both_orders and arch in ("gpt", "gpt2")
        assert batch["inputs"].shape == ((4, 2, SEQ_LEN) if both_orders else (4, SEQ_LEN))
        for r, row in enumerate(rows):
            index = 4 * b + (r // 2 if both_orders else r)
            example = examples[index]
            a, bb = check_text_row(row, tok, arch, len(task.inputs), SEQ_LEN)
            lengths.append(int((row["inputs"] != tok.pad_id).sum()))
            first, second = (a, bb) if not (both_orders and r % 2) else (bb, a)
            assert is_truncation_of(first, tok.encode(_text(example[task.inputs[0]])))
            if len(task.inputs) == 2:
                assert is_truncation_of(second, tok.encode(_text(example[task.inputs[1]])))
            # A regression label is stored as float32 in the batch: within one roundoff.
            np.testing.assert_allclose(labels[r // 2 if both_orders else r], example["label"],
                                       rtol=tolerances.F32)
            assert batch["example_index"][r // 2 if both_orders else r] == index
            assert references(config, example) == example["label"]  # float() of it: exact
    if len(task.inputs) == 2:
        assert max(lengths) == SEQ_LEN  # mock pairs overflow: truncation was exercised


def test_similarity_reads_both_orders_for_gpt(task_config, stdlib_tokenizer):
    tok = stdlib_tokenizer
    with tfds.testing.mock_data(**MOCK):
        batch = _batches(task_config("glue/qqp", "gpt", seq_len=SEQ_LEN), tok)[0]
    for pair in batch["inputs"]:
        a, b = check_text_row({"inputs": pair[0], "segment_ids": pair[0] != tok.pad_id,
                               "positions": np.arange(SEQ_LEN),
                               "extract_positions": (pair[0] != tok.pad_id).sum() - 1},
                              tok, "gpt", 2, SEQ_LEN)
        swapped = [tok.bos_id, *b, tok.sep_id, *a, tok.eos_id]
        assert pair[1][:len(swapped)].tolist() == swapped


@pytest.mark.parametrize("task_name,arch", [
    ("cnn_dailymail", "bart"), ("xsum", "gpt2"), ("wmt14_translate/de-en", "xlm"),
    ("wmt14_translate/de-en", "bart"),
])
def test_seq2seq_batches(task_config, stdlib_tokenizer, task_name, arch):
    tok, task = stdlib_tokenizer, get_task(task_name)
    config = task_config(task_name, arch, seq_len=SEQ_LEN)
    config.data.languages = ("en", "de")  # XLM: language ids are positions in this list
    config.model.encoder_decoder = arch == "xlm"  # XLM's translation model (§5)
    with tfds.testing.mock_data(**MOCK):
        batches = _batches(config, tok)
        source = tfds.data_source(task.dataset, split=task.eval_split)
        examples = [source[i] for i in range(len(source))]
    rows = [row for batch in batches for row in flat_rows(batch, SEQ_LEN)]
    assert len(rows) == NUM_EXAMPLES
    for index, (row, example) in enumerate(zip(rows, examples)):
        assert int(row["example_index"]) == index
        assert references(config, example) == _text(example[task.target])
        source_ids = tok.encode(_text(example[task.inputs[0]]))
        target_ids = tok.encode(_text(example[task.target]))
        assert all(v.shape == (SEQ_LEN,) for k, v in row.items()
                   if k not in ("prompt_lengths", "example_index"))
        if arch in ("gpt", "gpt2"):
            inputs, prompt = row["inputs"].tolist(), int(row["prompt_lengths"])
            length = int(row["segment_ids"].sum())
            assert inputs[0] == tok.bos_id and inputs[prompt - 1] == tok.sep_id
            assert is_truncation_of(inputs[1:prompt - 1], source_ids)
            assert prompt - 2 >= min(len(source_ids), SEQ_LEN // 2 - 2)  # source keeps half
            predicted = row["targets"][row["target_mask"] == 1].tolist()
            assert predicted == inputs[prompt:length] and predicted[-1] == tok.eos_id
            assert is_truncation_of(predicted[:-1], target_ids)
            continue
        length, target_length = int(row["segment_ids"].sum()), int(row["target_mask"].sum())
        inputs, targets = row["inputs"].tolist(), row["targets"].tolist()
        assert inputs[0] == tok.bos_id and inputs[length - 1] == tok.eos_id
        assert targets[0] == tok.bos_id and targets[target_length - 1] == tok.eos_id
        assert is_truncation_of(inputs[1:length - 1], source_ids)
        assert is_truncation_of(targets[1:target_length - 1], target_ids)
        assert row["decoder_inputs"].tolist() == [tok.eos_id, *targets[:-1]]
        if arch == "xlm":  # de is language 1, en language 0 of config.data.languages
            np.testing.assert_array_equal(row["langs"], row["segment_ids"])
            np.testing.assert_array_equal(row["decoder_langs"], 0 * row["target_mask"])


def _squad_examples(_builder, split, **_):
    del split
    context = "Paris is the capital of France and its largest city by far."
    return [
        {"id": b"1", "title": b"Paris", "question": b"What is the capital of France?",
         "context": context.encode(),
         "answers": {"text": np.array([b"Paris", b"Paris"]),
                     "answer_start": np.array([0, 0], np.int32)}},
        {"id": b"2", "title": b"Paris", "question": b"Which city is largest?",
         "context": context.encode(),
         # A wrong offset: the pipeline finds the text in the context instead.
         "answers": {"text": np.array([b"its largest city"]),
                     "answer_start": np.array([3], np.int32)}},
        {"id": b"3", "title": b"Paris", "question": b"What is it?",
         "context": (context + " It is old." * 20 + " The end.").encode(),
         # Past the end of the first window: a later window of the context holds it.
         "answers": {"text": np.array([b"The end."]),
                     "answer_start": np.array([len(context) + 201], np.int32)}},
        {"id": b"4", "title": b"x", "question": b"Who?", "context": context.encode(),
         "answers": {"text": np.array([b"Lyon"]), "answer_start": np.array([0], np.int32)}},
        # A question longer than the row: it is cut to half the row, the context keeps the rest.
        {"id": b"5", "title": b"x", "question": b"Which city, " * 30 + b"?",
         "context": context.encode(),
         "answers": {"text": np.array([b"Paris"]), "answer_start": np.array([0], np.int32)}},
    ]


def test_squad_positions_map_back_to_the_answer(task_config, stdlib_tokenizer):
    tok = stdlib_tokenizer
    seq_len = 48
    config = task_config("squad", "bert", seq_len=seq_len, batch=1)
    config.task.doc_stride = 16
    with tfds.testing.mock_data(**MOCK, as_data_source_fn=_squad_examples):
        batches = _batches(config, tok)
        examples = task_source(config, "validation")  # what evaluation reads back
    batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    windows = {}
    for row in flat_rows(batch, seq_len):
        windows.setdefault(int(row["example_index"]), []).append(row)
    assert sorted(windows) == list(range(len(examples))) == list(range(5))
    # The long context (2) takes several windows; the short ones one each (4's long question
    # leaves its context less room).
    assert [len(windows[i]) for i in (0, 1, 3)] == [1, 1, 1] and len(windows[2]) > 2
    predictions, answers = [], []
    for i, rows in windows.items():
        context = examples[i]["context"].decode()
        answer = examples[i]["answers"]["text"][0].decode()
        found = []
        for w, row in enumerate(rows):
            check_text_row(row, tok, "bert", 2, seq_len)
            offsets = row["context_offsets"]
            start, end = row["start_positions"], row["end_positions"]
            in_context = offsets[:, 0] >= 0
            assert (row["token_types"][in_context] == 1).all()  # offsets only on context tokens
            assert (row["max_context"] <= in_context).all()
            if start > 0:
                assert start <= end and in_context[start] and in_context[end]
                assert context[offsets[start, 0]:offsets[end, 1]] == answer
                found.append(w)
        if i == 3:  # not in the context
            assert found == []
            continue
        # The whole answer lies in one window: the first, or for the long context a later one.
        assert found == ([len(rows) - 1] if i == 2 else [0])
        # Logits peaked at the gold span of the window that holds it (every other window's
        # [cls] high) decode to the answer text across the windows.
        logits = []
        for w, row in enumerate(rows):
            start_logits, end_logits = np.zeros(seq_len), np.zeros(seq_len)
            start_logits[0] = end_logits[0] = 3.0
            if w in found:
                start_logits[row["start_positions"]] = end_logits[row["end_positions"]] = 5.0
            logits.append(Window(start_logits, end_logits, row["context_offsets"],
                                 row["max_context"]))
        predictions.append(best_answer(logits, context))
        assert predictions[-1] == answer
        answers.append(references(config, examples[i]))
    assert answers[0] == ["Paris", "Paris"]
    assert compute_metrics(["exact_match", "squad_f1"], predictions, answers) == {
        "exact_match": 1.0, "squad_f1": 1.0}


def test_squad_v2_rows_and_unanswerable_references(task_config, stdlib_tokenizer):
    """SQuAD v2.0 through TFDS (mock data of its own features): every window's target is in
    the row, and a question without answers has '' as its reference, as the v2.0 script."""
    config = task_config("squad_v2", "bert", seq_len=SEQ_LEN * 2)
    config.task.doc_stride = 8
    with tfds.testing.mock_data(**MOCK):
        batches = _batches(config, stdlib_tokenizer)
        examples = task_source(config, "validation")
        impossible = dict(examples[0], answers={"text": np.array([], object),
                                                "answer_start": np.array([], np.int32)})
    rows = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    assert set(rows["example_index"].tolist()) <= set(range(len(examples)))
    start, end = rows["start_positions"], rows["end_positions"]
    assert ((0 <= start) & (start <= end) & (end < SEQ_LEN * 2)).all()
    assert references(config, impossible) == [""]


def test_squad_on_random_mock_data(task_config, stdlib_tokenizer):
    tok = stdlib_tokenizer
    with tfds.testing.mock_data(**MOCK):
        batches = _batches(task_config("squad", "xlm", seq_len=SEQ_LEN), tok)
    for batch in batches:
        assert batch["context_offsets"].shape == (4, SEQ_LEN, 2)
        start, end = batch["start_positions"], batch["end_positions"]
        assert ((0 <= start) & (start <= end) & (end < SEQ_LEN)).all()
        for row in flat_rows(batch, SEQ_LEN):
            check_text_row(row, tok, "xlm", 2, SEQ_LEN)


def test_best_answer_span_respects_the_constraints():
    context = "one two three four five"
    # Tokens 0-1 are the question; 2..6 are the five words.
    offsets = np.array([[-1, -1], [-1, -1], [0, 3], [4, 7], [8, 13], [14, 18], [19, 23]])
    start, end = np.full(7, -50.0), np.full(7, -50.0)
    start[0] = end[0] = 100.0  # the question: never part of an answer
    start[4], end[3] = 10.0, 9.0  # together 19, but the end is before the start
    start[2], end[6] = 6.0, 6.0
    end[4] = 4.0
    # Valid: (4, 6) 16 "three four five", (2, 3) 15 "one two", (4, 4) 14 "three", ...
    assert best_answer_span(start, end, offsets, context) == "three four five"
    assert best_answer_span(start, end, offsets, context, max_answer_length=2) == "one two"
    # The 2 best starts (0, 4) and ends (0, 3) make no valid span.
    assert best_answer_span(start, end, offsets, context, n_best=2) == ""
    assert best_answer_span(np.zeros(2), np.zeros(2), offsets[:2], "question") == ""


@pytest.mark.parametrize("language", ["en", "de"])
def test_xnli_reads_the_configured_language(task_config, stdlib_tokenizer, language):
    tok = stdlib_tokenizer
    config = task_config("xnli", "xlm", seq_len=48)  # room for both texts whole
    config.data.languages = ("en", "de")
    config.task.language = language
    with tfds.testing.mock_data(**MOCK, as_data_source_fn=xnli_examples):
        batch = _batches(config, tok)[0]
    example = xnli_examples(None, "test")[0]
    premise = example["premise"][language].decode()
    hypothesis = {"en": "Someone eats.", "de": "Jemand isst."}[language]
    a, b = check_text_row(flat_rows(batch, 48)[0], tok, "xlm", 2, 48,
                          lang_id=("en", "de").index(language))
    assert a == tok.encode(premise) and b == tok.encode(hypothesis)
    assert batch["labels"].tolist() == [0, 1, 2, 1]


def test_xnli_unknown_language_is_an_error(task_config, stdlib_tokenizer):
    config = task_config("xnli", "bert")
    config.task.language = "xx"
    with pytest.raises(ValueError, match="'xx' is not an XNLI language"):
        _batches(config, stdlib_tokenizer)


@pytest.mark.parametrize("label", [2, -1])
def test_labels_outside_the_head_are_an_error(task_config, stdlib_tokenizer, label):
    def examples(_builder, split, **_):
        return [{"idx": np.int32(i), "sentence": b"fine", "label": np.int64(label if i else 1)}
                for i in range(4)]
    with tfds.testing.mock_data(**MOCK, as_data_source_fn=examples):
        with pytest.raises(ValueError, match=rf"label {label}, outside \[0, num_labels=2\)"):
            _batches(task_config("glue/sst2", "bert"), stdlib_tokenizer)


def test_missing_split_is_an_error(task_config, stdlib_tokenizer):
    with tfds.testing.mock_data(**MOCK):
        with pytest.raises(ValueError, match=r"no split 'validation'.*validation_matched"):
            _batches(task_config("glue/mnli", "bert"), stdlib_tokenizer, split="validation")


def test_qa_needs_an_encoder(task_config, stdlib_tokenizer):
    with pytest.raises(ValueError, match=r"needs one of \('bert', 'xlm'\).*'gpt2'"):
        _batches(task_config("squad", "gpt2"), stdlib_tokenizer)


def _conll_examples(_builder, split, **_):
    del split
    words = [b"EU", b"rejects", b"German", b"call", b"to", b"boycott", b"British", b"lamb", b"."]
    tags = [3, 0, 7, 0, 0, 0, 7, 0, 0]  # B-ORG O B-MISC O O O B-MISC O O
    return [{"tokens": np.array(words), "ner": np.array(tags), "pos": np.zeros(9, np.int64),
             "chunks": np.zeros(9, np.int64)}] * 4


@pytest.mark.parametrize("arch", ["bert", "xlm"])
def test_conll_tags_sit_on_each_words_first_piece(task_config, stdlib_tokenizer, arch):
    tok, seq_len = stdlib_tokenizer, 12  # cuts the sentence
    example = _conll_examples(None, "dev")[0]
    with tfds.testing.mock_data(**MOCK, as_data_source_fn=_conll_examples):
        batch = _batches(task_config("conll2003", arch, seq_len=seq_len), tok)[0]
    assert batch["labels"].shape == (4, seq_len)
    row = flat_rows(batch, seq_len)[0]
    pieces, _ = check_text_row(row, tok, arch, 1, seq_len)
    expected_labels, expected_pieces = [], []
    for word, tag in zip(example["tokens"], example["ner"]):
        ids = tok.encode(word.decode())
        expected_pieces += ids
        expected_labels += [tag] + [-1] * (len(ids) - 1)
    assert is_truncation_of(pieces, expected_pieces) and len(pieces) == seq_len - 2
    labels = row["labels"].tolist()
    assert labels[0] == labels[len(pieces) + 1] == -1  # [cls]/[bos] and the closing token
    assert labels[1:len(pieces) + 1] == expected_labels[:len(pieces)]


def test_conll_words_and_tags_must_pair(task_config, stdlib_tokenizer):
    # Random mock data draws the tags' length independently of the words'.
    with tfds.testing.mock_data(**MOCK):
        with pytest.raises(ValueError, match=r"has \d+ words but \d+ 'ner' tags"):
            _batches(task_config("conll2003", "bert"), stdlib_tokenizer)
