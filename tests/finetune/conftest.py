"""Fine-tuning fixtures: the session corpus with its `kinds` config, and task configs."""

from __future__ import annotations

import pytest

from textgen_jax.config import base_config
from textgen_jax.data.corpus import prepared_stdlib_docstrings


@pytest.fixture(scope="session")
def finetune_data_dir(stdlib_data_dir: str) -> str:
    """The session data dir, with stdlib_docstrings/kinds prepared too."""
    prepared_stdlib_docstrings("kinds", stdlib_data_dir)
    return stdlib_data_dir


@pytest.fixture
def task_config(finetune_data_dir: str):
    """task_config(task, arch, seq_len=32, batch=4) -> a config for that fine-tuning task."""
    def make(task: str, arch: str, seq_len: int = 32, batch: int = 4):
        config = base_config()
        config.task.name = task
        config.model.arch = arch
        config.data.update(data_dir=finetune_data_dir, seq_len=seq_len, global_batch_size=batch)
        return config
    return make
