"""Configs an objective cannot train with fail at start, through the real CLI, with a message
naming the value and the fix, and before anything is written to the workdir's checkpoints."""

from __future__ import annotations

import io

import sentencepiece as spm

from textgen_jax.data.corpus import prepared_stdlib_docstrings


def _fails_clearly(run, workdir, *expected: str) -> str:
    assert run.returncode == 1, run.stderr[-3000:]
    message = run.stderr.strip().splitlines()[-1]
    for text in expected:
        assert text in message, message
    assert not (workdir / "checkpoints").exists()
    return message


def _plain_sentencepiece_model(stdlib_data_dir: str, path) -> None:
    """A sentencepiece BPE model as trained outside the stack: no '<mask>', '<sep>' or tags."""
    source = prepared_stdlib_docstrings("documents", stdlib_data_dir).as_data_source("train")
    lines = [line for i in range(200) for line in source[i]["text"].decode().splitlines()
             if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model,
                                   model_type="bpe", vocab_size=500, pad_id=0, unk_id=1,
                                   bos_id=2, eos_id=3, minloglevel=2)
    path.write_bytes(model.getvalue())


def test_masked_lm_with_a_vocabulary_lacking_the_mask_token(tmp_path, stdlib_data_dir, tiny_run):
    plain = tmp_path / "plain.model"
    _plain_sentencepiece_model(stdlib_data_dir, plain)
    for config, pieces in (("configs/bert.py:tiny", "'<mask>', '<cls>', '<sep>'"),
                           ("configs/bart.py:tiny", "'<mask>'"),
                           ("configs/xlm.py:tiny", "'<mask>'")):
        workdir = tmp_path / config.split("/")[1].split(".")[0]
        workdir.mkdir()
        (workdir / "tokenizer.model").write_bytes(plain.read_bytes())
        run = tiny_run(workdir, f"--config.tokenizer.model_file={plain}", config=config,
                       check=False)
        _fails_clearly(run, workdir, f"needs the pieces [{pieces}]", str(workdir),
                       "user_defined_symbols")
    # The same vocabulary trains a causal LM: it needs no special pieces.
    workdir = tmp_path / "gpt2"
    workdir.mkdir()
    (workdir / "tokenizer.model").write_bytes(plain.read_bytes())
    tiny_run(workdir, f"--config.tokenizer.model_file={plain}", "--config.train.num_steps=2")
    assert (workdir / "checkpoints" / "2").is_dir()


def test_a_language_missing_from_the_vocabulary(tmp_path, tiny_run):
    xlm = "configs/xlm.py:tiny"
    # Not reserved by the config: caught before any tokenizer is read.
    workdir = tmp_path / "unreserved"
    run = tiny_run(workdir, "--config.data.languages=('en', 'fr')", config=xlm, check=False)
    _fails_clearly(run, workdir, "config.data.languages=('en', 'fr')", "['fr']",
                   "config.tokenizer.languages=('en', 'code')")
    # Reserved by the config, but the workdir's vocabulary was trained for ('en', 'code').
    workdir = tmp_path / "stale"
    run = tiny_run(workdir, "--config.data.languages=('en', 'fr')",
                   "--config.tokenizer.languages=('en', 'fr')", config=xlm, check=False)
    _fails_clearly(run, workdir, "['fr'] missing from the vocabulary", "'<lang:fr>'",
                   "new workdir")


def test_tlm_without_parallel_data(tmp_path, tiny_run):
    workdir = tmp_path / "tlm"
    run = tiny_run(workdir, "--config.objective=tlm",
                   "--config.data.dataset=stdlib_docstrings/documents",
                   config="configs/xlm.py:tiny", check=False)
    _fails_clearly(run, workdir, "needs parallel data", "['docstring', 'code']",
                   "'stdlib_docstrings/documents'", "config.data.parallel_dataset")


def test_task_labels_that_do_not_fit_the_head(tmp_path, tiny_run):
    # docstring_kind has 3 classes; docstring_choice scores each of its 4 choices with 1 logit.
    for task, num_labels, expected in (("docstring_kind", 2, ("3 classes", "num_labels=3")),
                                       ("docstring_choice", 4, ("one of 4 choices",
                                                                "num_labels=1"))):
        workdir = tmp_path / task
        run = tiny_run(workdir, f"--config.task.name={task}",
                       f"--config.model.num_labels={num_labels}",
                       config="configs/finetune/docstring_kind.py:bert", check=False)
        _fails_clearly(run, workdir, f"config.model.num_labels={num_labels}", *expected)
