"""Shared data fixtures: the embedded corpus is prepared once per test session."""

from __future__ import annotations

import pytest

from textgen_jax.config import base_config
from textgen_jax.data.corpus import prepared_stdlib_docstrings
from textgen_jax.data.tokenizer import Tokenizer, load_or_train_tokenizer


@pytest.fixture(scope="session")
def stdlib_data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A data dir holding both configs of the prepared stdlib corpus."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for config_name in ("documents", "pairs"):
        prepared_stdlib_docstrings(config_name, data_dir)
    return data_dir


@pytest.fixture(scope="session")
def stdlib_tokenizer(stdlib_data_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """A small BPE tokenizer trained on the stdlib corpus (a fraction of it, for speed)."""
    config = base_config()
    config.data.data_dir = stdlib_data_dir
    config.tokenizer.vocab_size = 1000
    config.tokenizer.max_train_chars = 300_000
    return load_or_train_tokenizer(tmp_path_factory.mktemp("workdir"), config)
