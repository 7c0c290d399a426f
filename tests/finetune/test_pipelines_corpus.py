"""The embedded-corpus tasks on the real corpus: answers, balance, determinism, resumption."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest
from absl import flags

from textgen_jax.data.sources import open_source
from textgen_jax.finetune.pipelines import finetune_dataset, finetune_rows
from textgen_jax.finetune.tasks import get_task, signature_of

from finetune_rows import check_text_row, flat_rows, is_truncation_of


def _source(config, task_name: str, split: str = "validation"):
    data = config.data.copy_and_resolve_references()
    data.dataset = get_task(task_name).dataset
    return open_source(data, split, check_text_key=False)


def _rows(config, split="validation", count=None, **kwargs):
    rows = finetune_rows(config, _TOKENIZER[0], split, shuffle=False, repeat=False, **kwargs)
    return [rows[i] for i in range(len(rows) if count is None else count)]


_TOKENIZER = []


@pytest.fixture(autouse=True)
def _tokenizer(stdlib_tokenizer):
    _TOKENIZER[:] = [stdlib_tokenizer]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("arch", ["bert", "gpt", "bart"])
def test_docstring_choice_holds_the_right_answer_exactly_once(task_config, stdlib_tokenizer,
                                                              arch):
    tok, seq_len = stdlib_tokenizer, 96
    config = task_config("docstring_choice", arch, seq_len=seq_len)
    source = _source(config, "docstring_choice")
    rows = _rows(config, count=120)
    for index, row in enumerate(rows):
        assert row["inputs"].shape == (4, seq_len)
        signature = tok.encode(signature_of(_text(source[index]["code"])))
        answer = tok.encode(_text(source[index]["docstring"]))
        choices = []
        for choice in flat_rows({k: v for k, v in row.items() if k != "labels"}, seq_len):
            context, docstring = check_text_row(choice, tok, arch, 2, seq_len)
            assert is_truncation_of(context, signature)
            choices.append(tuple(docstring))
        label = int(row["labels"])
        assert is_truncation_of(list(choices[label]), answer)
        # The distractors are other docstrings: none is the right one (texts differ, and
        # here no two docstrings share the first tokens that fit).
        assert sum(is_truncation_of(list(c), answer) for c in choices) == 1, index
    positions = collections.Counter(int(r["labels"]) for r in rows)
    assert set(positions) == {0, 1, 2, 3} and min(positions.values()) >= 15  # ~30 each


def test_docstring_similarity_is_balanced_and_pairs_same_module(task_config, stdlib_tokenizer):
    tok, seq_len = stdlib_tokenizer, 256
    config = task_config("docstring_similarity", "bert", seq_len=seq_len)
    source = _source(config, "docstring_similarity", "train")
    module_texts = collections.defaultdict(set)
    for i in range(len(source)):
        module_texts[_text(source[i]["module"])].add(_text(source[i]["text"]))
    rows = _rows(config, split="train", count=400)
    labels = np.array([int(r["labels"]) for r in rows])
    assert 0.4 <= labels.mean() <= 0.6
    for index, row in enumerate(rows[:60]):
        a, b = check_text_row(row, tok, "bert", 2, seq_len)
        module = _text(source[index]["module"])
        assert is_truncation_of(a, tok.encode(_text(source[index]["text"])))
        same_module = any(is_truncation_of(b, tok.encode(t)) for t in module_texts[module])
        if labels[index]:
            assert same_module
        elif len(b) == len(tok.encode(_text(source[index]["text"]))):  # not truncated
            other = {m for m, texts in module_texts.items()
                     for t in texts if tok.encode(t) == b}
            assert other - {module}, index  # from another module


def test_docstring_similarity_gpt_reads_both_orders(task_config, stdlib_tokenizer):
    tok = stdlib_tokenizer
    rows = _rows(task_config("docstring_similarity", "gpt", seq_len=64), split="train",
                 count=10)
    for row in rows:
        first, second = (check_text_row(order, tok, "gpt", 2, 64)
                         for order in flat_rows(row, 64))
        assert second == first[::-1]


def test_docstring_kind_labels_and_process_shards(task_config, stdlib_tokenizer):
    tok = stdlib_tokenizer
    config = task_config("docstring_kind", "xlm", seq_len=48)
    source = _source(config, "docstring_kind")
    whole = _rows(config)
    assert len(whole) == len(source)
    for index, row in enumerate(whole):
        text, _ = check_text_row(row, tok, "xlm", 1, 48)
        assert is_truncation_of(text, tok.encode(_text(source[index]["text"])))
        assert int(row["labels"]) == int(source[index]["label"])
    # Two processes read disjoint halves that together are the split.
    for process in range(2):
        shard = _rows(config, process_index=process, process_count=2)
        assert len(shard) == len(whole[process::2])
        for mine, expected in zip(shard, whole[process::2]):
            np.testing.assert_array_equal(mine["inputs"], expected["inputs"])


def _take(iterator, count):
    return [{k: v.copy() for k, v in b.items()} for b in itertools.islice(iterator, count)]


def test_batches_are_deterministic_from_the_seed_and_resume(task_config, stdlib_tokenizer):
    config = task_config("docstring_choice", "bert", seq_len=48, batch=4)
    first = _take(iter(finetune_dataset(config, stdlib_tokenizer, "validation")), 3)
    again = iter(finetune_dataset(config, stdlib_tokenizer, "validation"))
    for a, b in zip(first, _take(again, 3)):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    state = again.get_state()
    expected = _take(again, 2)
    resumed = iter(finetune_dataset(config, stdlib_tokenizer, "validation"))
    resumed.set_state(state)
    for a, b in zip(expected, _take(resumed, 2)):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    config.seed = 1
    other = _take(iter(finetune_dataset(config, stdlib_tokenizer, "validation")), 3)
    assert any((a["inputs"] != b["inputs"]).any() for a, b in zip(first, other))


@pytest.mark.parametrize("arch", ["gpt2", "bart", "xlm"])
def test_code_to_docstring_targets_are_the_docstring(task_config, stdlib_tokenizer, arch):
    tok, seq_len = stdlib_tokenizer, 64
    config = task_config("code_to_docstring", arch, seq_len=seq_len)
    config.data.languages = ("en", "code")  # XLM's tiny preset: code is language 1
    config.model.encoder_decoder = arch == "xlm"  # XLM's translation model (§5)
    source = _source(config, "code_to_docstring")
    for index, row in enumerate(_rows(config, count=20)):
        code = tok.encode(_text(source[index]["code"]))
        docstring = tok.encode(_text(source[index]["docstring"]))
        predicted = row["targets"][row["target_mask"] == 1].tolist()
        assert predicted[-1] == tok.eos_id
        if arch == "gpt2":
            prompt = int(row["prompt_lengths"])
            assert row["inputs"][prompt - 1] == tok.sep_id
            assert is_truncation_of(row["inputs"][1:prompt - 1].tolist(), code)
            assert is_truncation_of(predicted[:-1], docstring)
        else:
            assert predicted[0] == tok.bos_id and is_truncation_of(predicted[1:-1], docstring)
            length = int(row["segment_ids"].sum())
            assert is_truncation_of(row["inputs"][1:length - 1].tolist(), code)
            np.testing.assert_array_equal(row["decoder_inputs"][1:], row["targets"][:-1])
        if arch == "xlm":
            np.testing.assert_array_equal(row["langs"], row["segment_ids"])
            np.testing.assert_array_equal(row["decoder_langs"], 0 * row["target_mask"])


def test_bad_task_inputs_are_clear_errors(task_config, stdlib_tokenizer):
    with pytest.raises(ValueError, match=r"no split 'test'; available splits: \['train', "
                                         r"'validation'\]"):
        finetune_dataset(task_config("docstring_kind", "bert"), stdlib_tokenizer, "test")
    with pytest.raises(ValueError, match=r"Unknown fine-tuning task.*'docstring_kind'"):
        finetune_dataset(task_config("docstring_kinds", "bert"), stdlib_tokenizer, "train")
    with pytest.raises(ValueError, match=r"'code_to_docstring' \(seq2seq\) needs one of"):
        finetune_dataset(task_config("code_to_docstring", "bert"), stdlib_tokenizer, "train")
    with pytest.raises(ValueError, match=r"has 3 examples, fewer than .* the 4 choices"):
        finetune_dataset(task_config("docstring_choice", "bert"), stdlib_tokenizer,
                         "validation[:3]")
    config = task_config("code_to_docstring", "xlm")
    config.data.languages = ("en",)
    with pytest.raises(ValueError, match=r"'code' is not in config.data.languages=\('en',\)"):
        finetune_dataset(config, stdlib_tokenizer, "train")


def test_worker_processes_give_the_same_batches(task_config, stdlib_tokenizer):
    # grain's workers are spawned: the row transform and its source must pickle. They read
    # absl flags, which the CLI parses and pytest does not.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    config = task_config("docstring_similarity", "gpt", seq_len=32)
    in_process = _take(iter(finetune_dataset(config, stdlib_tokenizer, "validation")), 3)
    config.data.worker_count = 1
    iterator = iter(finetune_dataset(config, stdlib_tokenizer, "validation"))
    for a, b in zip(in_process, _take(iterator, 3)):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    iterator.close()
