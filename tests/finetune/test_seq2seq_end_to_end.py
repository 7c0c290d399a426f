"""Seq2seq fine-tunes through the training loop, end to end: the TFDS tasks on
`tfds.testing.mock_data` (which patches this process only, so the loop runs in-process) and
code_to_docstring on the embedded corpus. Each trains a few steps of a tiny model, evaluates
by beam search and keeps the best checkpoint by the task's first metric."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import tensorflow_datasets as tfds
import tensorflow_datasets.summarization.cnn_dailymail  # noqa: F401  (registers the builders)
import tensorflow_datasets.summarization.xsum  # noqa: F401
import tensorflow_datasets.translate.wmt14  # noqa: F401

from textgen_jax.training.loop import train_and_evaluate

from conftest import assert_finetune_run

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "finetune"
MOCK = dict(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE)


def _tiny_finetune(config_name: str, arch: str, data_dir: str):
    spec = importlib.util.spec_from_file_location(f"finetune_{config_name}",
                                                  CONFIGS / f"{config_name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arch)
    config.model.update(num_layers=1, d_model=64, num_heads=4, d_ff=128, max_len=64,
                        dtype="float32")
    config.data.update(data_dir=data_dir, seq_len=32, global_batch_size=4)
    config.optim.warmup_steps = 1
    config.train.update(num_steps=2, log_every=1, eval_every=2, checkpoint_every=2,
                        eval_batches=1, async_checkpointing=False)
    config.task.update(num_beams=2, max_target_length=6, min_target_length=0)
    return config


def _check_run(config, workdir: Path, tokenizer) -> None:
    workdir.mkdir()
    tokenizer.save(workdir / "tokenizer.model")
    result = train_and_evaluate(config, str(workdir))
    assert result["step"] == 2 and math.isfinite(result["train"]["loss"])
    assert_finetune_run(workdir, config.task.name, [0, 2])


@pytest.mark.parametrize("config_name", ["cnn_dailymail", "xsum", "wmt14_translate"])
def test_tfds_seq2seq_task_on_mock_data(config_name, stdlib_data_dir, stdlib_tokenizer,
                                        tmp_path):
    config = _tiny_finetune(config_name, "bart", str(tmp_path / "tfds"))
    with tfds.testing.mock_data(**MOCK):
        _check_run(config, tmp_path / "workdir", stdlib_tokenizer)


@pytest.mark.parametrize("arch", ["bart", "gpt2"])
def test_code_to_docstring_on_the_embedded_corpus(arch, stdlib_data_dir, stdlib_tokenizer,
                                                  tmp_path):
    config = _tiny_finetune("code_to_docstring", arch, stdlib_data_dir)
    _check_run(config, tmp_path / "workdir", stdlib_tokenizer)
