"""open_source dispatch, TFDS datasets (mocked) and its errors."""

from __future__ import annotations

import pytest
import tensorflow_datasets as tfds

from textgen_jax.config import base_config
from textgen_jax.data.sources import example_text, open_source, texts


def _data_config(data_dir: str, **overrides):
    data = base_config().data
    data.data_dir = data_dir
    data.update(overrides)
    return data


def test_embedded_corpus_through_open_source(stdlib_data_dir):
    source = open_source(_data_config(stdlib_data_dir), "validation")
    all_texts = list(texts(source, "text"))
    assert len(all_texts) == len(source) > 0
    assert all(isinstance(t, str) and t for t in all_texts)


def test_local_files_through_open_source(tmp_path):
    (tmp_path / "a.txt").write_text("Alpha text.", encoding="utf-8")
    (tmp_path / "b.txt").write_text("Beta text.", encoding="utf-8")
    data = _data_config(str(tmp_path / "data"), files=str(tmp_path / "*.txt"))
    found = [t for split in ("train", "validation") for t in texts(open_source(data, split), "text")]
    assert sorted(found) == ["Alpha text.", "Beta text."]


def test_tfds_dataset_with_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=7, policy=tfds.testing.MockPolicy.USE_CODE):
        source = open_source(_data_config(str(tmp_path), dataset="lm1b"), "train")
        assert len(source) == 7
        assert all(isinstance(example_text(source[i], "text"), str) for i in range(7))


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"'lm1bb' is not a TFDS dataset.*'lm1b'.*config.data.files"):
        open_source(_data_config(str(tmp_path), dataset="lm1bb"), "train")


def test_missing_split_lists_available(stdlib_data_dir):
    with pytest.raises(ValueError, match=r"no split 'test'.*\['train', 'validation'\]"):
        open_source(_data_config(stdlib_data_dir), "test")


def test_missing_text_key_lists_features(stdlib_data_dir):
    data = _data_config(stdlib_data_dir, dataset="stdlib_docstrings/pairs", text_key="body")
    with pytest.raises(ValueError, match=r"'body' is not a feature.*\['code', 'docstring', 'text'\]"):
        open_source(data, "train")
