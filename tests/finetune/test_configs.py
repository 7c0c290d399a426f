"""configs/finetune/*.py: every preset resolves, validates and feeds its task's pipeline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from textgen_jax.config import validate
from textgen_jax.finetune.pipelines import finetune_dataset
from textgen_jax.finetune.tasks import get_task
from textgen_jax.finetune.objectives import objective_for

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "finetune"


def _get_config(name: str, arch: str):
    spec = importlib.util.spec_from_file_location(f"finetune_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arch)


@pytest.mark.parametrize("name,arch", [
    ("docstring_kind", "bert"), ("docstring_kind", "gpt"), ("docstring_kind", "gpt2"),
    ("docstring_kind", "xlm"), ("docstring_kind", "bart"), ("sst2", "bert-base"),
    ("sst2", "gpt"), ("squad", "bert-base"), ("squad", "xlm"), ("squad", "v2,bert"),
    ("squad", "v2,xlm-en_2048"), ("cnn_dailymail", "bart-base"),
    ("cnn_dailymail", "gpt2"), ("conll2003", "bert-base"), ("conll2003", "xlm"),
])
def test_presets_resolve_to_their_task(name, arch):
    config = _get_config(name, arch)
    validate(config)
    task = get_task(config.task.name)
    assert config.model.arch == arch.split(",")[-1].split("-")[0]
    assert config.data.dataset == task.dataset
    assert config.data.train_split in task.splits and config.data.eval_split in task.splits
    if task.kind in ("classification", "token_classification"):
        assert config.model.num_labels == task.num_labels
    objective_for(config)  # the model the preset builds fits the task (its head, its labels)


@pytest.mark.parametrize("arch", ["bert", "gpt", "gpt2", "xlm", "bart"])
def test_docstring_kind_preset_feeds_the_pipeline(finetune_data_dir, stdlib_tokenizer, arch):
    config = _get_config("docstring_kind", arch)
    config.data.update(data_dir=finetune_data_dir, global_batch_size=4)
    batch = next(iter(finetune_dataset(config, stdlib_tokenizer, config.data.eval_split,
                                       shuffle=False, repeat=False)))
    assert batch["inputs"].shape == (4, config.data.seq_len)
    assert ((batch["labels"] >= 0) & (batch["labels"] < config.model.num_labels)).all()


def test_a_task_on_the_wrong_architecture_is_an_error():
    with pytest.raises(ValueError, match="task 'squad' .* runs on bert, xlm, not 'gpt2'"):
        _get_config("squad", "gpt2")
