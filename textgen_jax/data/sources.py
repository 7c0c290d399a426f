"""Random-access sources for `config.data`: the embedded corpus, local files or any TFDS dataset.

A source has `len(source)` and `source[i] -> dict of features`; TFDS text features come back as
bytes (str from `tfds.testing.mock_data`), which `example_text` turns into str.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ml_collections
import tensorflow_datasets as tfds

from textgen_jax.data.corpus import prepared_stdlib_docstrings
from textgen_jax.data.text_files import prepared_text_files

EMBEDDED_DATASET = "stdlib_docstrings"
DATA_DIR_ENV = "TEXTGEN_JAX_DATA_DIR"


def resolve_data_dir(data_dir: str = "") -> str:
    """`data_dir`, else $TEXTGEN_JAX_DATA_DIR, else ~/.cache/textgen_jax/tfds."""
    return os.path.expanduser(
        data_dir or os.environ.get(DATA_DIR_ENV) or "~/.cache/textgen_jax/tfds")


def _tfds_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """The prepared builder of `name` (preparing in array_record format if needed)."""
    if name.split("/")[0] == EMBEDDED_DATASET:
        config_name = name.split("/")[1] if "/" in name else "documents"
        return prepared_stdlib_docstrings(config_name, data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"config.data.dataset={name!r} is not a TFDS dataset; check the spelling (e.g. "
            f"'lm1b', 'c4/en', or '{EMBEDDED_DATASET}/documents' for the embedded corpus) or "
            "set config.data.files to a glob of local .txt/.jsonl files.") from None
    builder.download_and_prepare(file_format="array_record")
    return builder


def _check_split(builder: tfds.core.DatasetBuilder, split: str, name: str) -> None:
    """Raises naming the available splits when the base split of `split` does not exist."""
    available = sorted(builder.info.splits.keys())
    if not available:  # mock_data knows the splits only when asked for one
        return
    for part in re.split(r"\+", split):
        base = part.split("[")[0].strip()
        if base not in available:
            raise ValueError(f"Dataset {name!r} has no split {base!r}; available splits: "
                             f"{available}. Set config.data.train_split / eval_split.")


def open_source(data_config: ml_collections.ConfigDict, split: str, *,
                check_text_key: bool = True) -> Sequence[Mapping[str, Any]]:
    """The random-access source of `split` for `data_config` (config.data).

    Raises ValueError when its examples lack data_config.text_key, unless `check_text_key` is
    False (for callers that read other features and check those).

    `data_config.files` set: the `TextFiles` dataset of those files. Otherwise
    `data_config.dataset` names the embedded corpus ('stdlib_docstrings/documents' or '/pairs')
    or any TFDS dataset, prepared into the data dir on first use.
    """
    data_dir = resolve_data_dir(data_config.data_dir)
    if data_config.files:
        builder = prepared_text_files(data_config.files, data_config.text_key,
                                      os.path.join(data_dir, "text_files"))
        name = f"files {data_config.files!r}"
    else:
        name = data_config.dataset
        builder = _tfds_builder(name, data_dir)
    _check_split(builder, split, name)
    features = list(builder.info.features.keys())
    if check_text_key and data_config.text_key not in features:
        raise ValueError(f"config.data.text_key={data_config.text_key!r} is not a feature of "
                         f"{name!r}; its features are {features}.")
    return builder.as_data_source(split)


def example_text(example: Mapping[str, Any], text_key: str) -> str:
    """The text of one example as str (TFDS returns text features as bytes)."""
    try:
        value = example[text_key]
    except KeyError:
        raise KeyError(f"The example has no feature {text_key!r}; its features are "
                       f"{sorted(example)}. Set config.data.text_key.") from None
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def texts(source: Sequence[Mapping[str, Any]], text_key: str) -> Iterator[str]:
    """The texts of all examples of `source`, in order."""
    for index in range(len(source)):
        yield example_text(source[index], text_key)
