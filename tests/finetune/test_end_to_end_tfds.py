"""Every TFDS classification, token and QA task, fine-tuned end to end through the training loop
on `tfds.testing.mock_data` (which patches this process only, so the loop runs in-process):
a tiny model trains 2 steps, evaluates the task's metrics and keeps its best checkpoint. The
architectures are spread over the tasks. (The seq2seq tasks: test_seq2seq_end_to_end.py.)

Random mock examples serve GLUE; XNLI, SQuAD and CoNLL-2003 read hand-written ones, whose
languages, answers and tags fit together. For SQuAD and CoNLL-2003 the score path is also
checked apart from training: predictions at the gold spans and tags score 1.0, and wrong ones
score what the official SQuAD formula and seqeval give.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
import tensorflow_datasets.question_answering.squad  # noqa: F401  (registers the builders)
import tensorflow_datasets.text.conll2003  # noqa: F401
import tensorflow_datasets.text.glue  # noqa: F401
import tensorflow_datasets.text.xnli  # noqa: F401

from textgen_jax import cli
from textgen_jax.data.masking import IGNORE_LABEL
from textgen_jax.finetune.objectives import objective_for
from textgen_jax.finetune.pipelines import finetune_dataset
from textgen_jax.finetune.presets import finetune_config
from textgen_jax.training.loop import train_and_evaluate

from conftest import assert_finetune_run
from finetune_rows import xnli_examples

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MOCK = dict(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE)
TINY_MODEL = dict(num_layers=1, d_model=32, num_heads=2, d_ff=64, max_len=64)
TINY_RUN = dict(num_steps=2, log_every=1, eval_every=2, checkpoint_every=2, eval_batches=1,
                async_checkpointing=False)


@pytest.fixture(autouse=True, scope="module")
def _fast_compiles():
    """Compiling is most of each run's time, and these tiny steps run twice: XLA's least
    optimising mode (the same programs, about 1/3 less CPU per run)."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


def _tiny(config, data_dir: str):
    """A fine-tuning config cut to a 1-layer model, 4 rows of 32 tokens, 2 steps."""
    config.model.update(**TINY_MODEL)
    config.data.update(data_dir=data_dir, seq_len=32, global_batch_size=4)
    config.optim.warmup_steps = 1
    config.train.update(**TINY_RUN)
    return config


def _finetune(task_name: str, arch: str, workdir: Path, tokenizer, data_dir: str,
              examples=None) -> None:
    config = _tiny(finetune_config(task_name, arch), data_dir)
    workdir.mkdir()
    tokenizer.save(workdir / "tokenizer.model")
    with tfds.testing.mock_data(**MOCK, as_data_source_fn=examples):
        result = train_and_evaluate(config, str(workdir))
    assert result["step"] == 2 and math.isfinite(result["train"]["loss"])
    assert_finetune_run(workdir, task_name, [0, 2])


# ---- hand-written examples ----------------------------------------------------------------

PARIS = "Paris is the capital of France and its largest city by far."


def _squad_examples(_builder, split, **_):
    del split
    return [{"id": str(i).encode(), "title": b"Paris", "question": question.encode(),
             "context": PARIS.encode(),
             "answers": {"text": np.array([answer.encode()]),
                         "answer_start": np.array([PARIS.index(answer)], np.int32)}}
            for i, (question, answer) in enumerate([
                ("What is the capital of France?", "Paris"),
                ("Which city is largest?", "its largest city"),
                ("Paris is the capital of what?", "France"),
                ("How large is it?", "largest city by far")])]


CONLL_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
CONLL_SENTENCES = [
    ("EU rejects German call to boycott British lamb .",
     "B-ORG O B-MISC O O O B-MISC O O"),
    ("Peter Blackburn visited New York City .", "B-PER I-PER O B-LOC I-LOC I-LOC O"),
    ("The European Commission said on Thursday", "O B-ORG I-ORG O O O"),
    ("Germany 's representative to the EU", "B-LOC O O O O B-ORG"),
]


def _conll_examples(_builder, split, **_):
    del split
    return [{"tokens": np.array(words.encode().split()),
             "ner": np.array([CONLL_TAGS.index(tag) for tag in tags.split()]),
             "pos": np.zeros(len(tags.split()), np.int64),
             "chunks": np.zeros(len(tags.split()), np.int64)}
            for words, tags in CONLL_SENTENCES]


# ---- training runs -----------------------------------------------------------------------

@pytest.mark.parametrize("task_name,arch", [
    ("glue/sst2", "bert"), ("glue/cola", "gpt"), ("glue/mnli", "bart"), ("glue/qnli", "xlm"),
    ("glue/qqp", "gpt2"), ("glue/stsb", "bert"), ("glue/rte", "gpt"), ("glue/mrpc", "bart"),
])
def test_glue_task_fine_tunes_on_mock_data(task_name, arch, stdlib_tokenizer, tmp_path):
    _finetune(task_name, arch, tmp_path / "workdir", stdlib_tokenizer, str(tmp_path / "tfds"))


def test_xnli_fine_tunes_on_mock_data(stdlib_tokenizer, tmp_path):
    _finetune("xnli", "xlm", tmp_path / "workdir", stdlib_tokenizer, str(tmp_path / "tfds"),
              xnli_examples)


def test_conll2003_fine_tunes_on_mock_data(stdlib_tokenizer, tmp_path):
    _finetune("conll2003", "xlm", tmp_path / "workdir", stdlib_tokenizer,
              str(tmp_path / "tfds"), _conll_examples)


def test_squad_trains_through_the_cli_on_data_a_user_prepared(stdlib_tokenizer, tmp_path,
                                                              monkeypatch):
    # `textgen-jax train --config configs/finetune/squad.py:bert`, in this process (where the
    # mock data are), with the tiny sizes as --config overrides.
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    stdlib_tokenizer.save(workdir / "tokenizer.model")
    overrides = [f"--config.model.{k}={v}" for k, v in TINY_MODEL.items()]
    overrides += [f"--config.train.{k}={v}" for k, v in TINY_RUN.items()]
    argv = ["textgen-jax", "train", f"--workdir={workdir}",
            f"--config={CONFIGS / 'finetune' / 'squad.py'}:bert",
            f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.seq_len=32",
            "--config.data.global_batch_size=4", "--config.optim.warmup_steps=1", *overrides]
    monkeypatch.setattr("sys.argv", argv)  # where config_flags reads the --config.* overrides
    with tfds.testing.mock_data(**MOCK, as_data_source_fn=_squad_examples):
        cli._main(cli._parse_flags(argv))
    assert_finetune_run(workdir, "squad", [0, 2])


# ---- the score path, apart from training -------------------------------------------------

def _eval_batches(task_name: str, arch: str, tokenizer, data_dir: str, examples):
    """(config, the task's objective, the rows of its whole eval split as one batch)."""
    config = finetune_config(task_name, arch)
    # Rows long enough for every whole answer and sentence (the tokenizer's pieces are short).
    config.data.update(data_dir=data_dir, seq_len=64, global_batch_size=4)
    with tfds.testing.mock_data(**MOCK, as_data_source_fn=examples):
        batches = list(finetune_dataset(config, tokenizer, config.data.eval_split,
                                        shuffle=False, repeat=False))
    rows = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    return config, objective_for(config), rows


def test_squad_scores_the_gold_spans_one_and_wrong_ones_as_the_official_formula(
        stdlib_tokenizer, tmp_path):
    config, objective, rows = _eval_batches("squad", "bert", stdlib_tokenizer,
                                            str(tmp_path / "tfds"), _squad_examples)
    examples = _squad_examples(None, "validation")
    assert len(rows["example_index"]) == len(examples)
    starts, ends = rows["start_positions"].copy(), rows["end_positions"].copy()
    assert (starts > 0).all()  # every answer lies in its row

    def score(starts, ends):
        # Logits that point at one span per row (every row's [cls] and question score high
        # too: decoding must look only at the context).
        start_logits = np.zeros(rows["inputs"].shape, np.float32)
        end_logits = np.zeros_like(start_logits)
        start_logits[:, :3] = end_logits[:, :3] = 9.0
        start_logits[np.arange(len(starts)), starts] = 5.0
        end_logits[np.arange(len(ends)), ends] = 5.0
        outputs = {"start_logits": start_logits, "end_logits": end_logits,
                   "context_offsets": rows["context_offsets"], "max_context": rows["max_context"],
                   "example_index": rows["example_index"]}
        with tfds.testing.mock_data(**MOCK, as_data_source_fn=_squad_examples):
            return objective.score(config, stdlib_tokenizer, config.data.eval_split, outputs)

    assert score(starts, ends) == {"exact_match": 1.0, "squad_f1": 1.0}
    # Example 1's end one word on: "its largest city by" for "its largest city" (EM 0; 3
    # common tokens, precision 3/4, recall 1: F1 6/7); example 3's span a word short: "largest
    # city by" for "largest city by far" (EM 0; precision 1, recall 3/4: F1 6/7).
    offsets = rows["context_offsets"]
    ends[1] = next(t for t in range(ends[1] + 1, len(offsets[1]))
                   if offsets[1][t][0] > offsets[1][ends[1]][0])
    ends[3] = max(t for t in range(ends[3]) if offsets[3][t][0] < offsets[3][ends[3]][0])
    # Float64 means of 4 scores, each a few operations on word counts: within 1e-12.
    assert score(starts, ends) == pytest.approx({"exact_match": 2 / 4,
                                                 "squad_f1": (1 + 6 / 7 + 1 + 6 / 7) / 4},
                                                rel=1e-12)


def test_conll2003_scores_the_gold_tags_one_and_wrong_ones_as_seqeval(stdlib_tokenizer,
                                                                      tmp_path):
    from seqeval.metrics import f1_score

    config, objective, rows = _eval_batches("conll2003", "bert", stdlib_tokenizer,
                                            str(tmp_path / "tfds"), _conll_examples)
    labels = rows["labels"]
    tagged = labels != IGNORE_LABEL
    gold = [tags.split() for _, tags in CONLL_SENTENCES]
    assert tagged.sum(1).tolist() == [len(tags) for tags in gold]  # every word in its row
    # Predictions off the words' first pieces are not read: fill them with entities.
    predictions = np.where(tagged, labels, CONLL_TAGS.index("B-PER"))
    assert objective.score(config, stdlib_tokenizer, "dev",
                           {"predictions": predictions, "labels": labels}) == {"entity_f1": 1.0}
    rng = np.random.default_rng(0)
    wrong = np.where(tagged & (rng.random(labels.shape) < 0.3),
                     rng.integers(0, len(CONLL_TAGS), labels.shape), predictions)
    predicted_words = [[CONLL_TAGS[t] for t in row[mask]] for row, mask in zip(wrong, tagged)]
    assert predicted_words != gold
    # Both are float64 ratios of the same entity counts: within 1e-12.
    assert objective.score(config, stdlib_tokenizer, "dev",
                           {"predictions": wrong, "labels": labels}) == pytest.approx(
        {"entity_f1": f1_score(gold, predicted_words)}, rel=1e-12)
