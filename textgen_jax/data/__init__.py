"""Data: the embedded corpus, local text files, tokenizers and grain pipelines."""

from textgen_jax.data.corpus import StdlibDocstrings, prepared_stdlib_docstrings
from textgen_jax.data.noising import NoiseConfig, add_noise
from textgen_jax.data.pipeline import (
    bart_denoising_dataset,
    bert_pretraining_dataset,
    local_batch_size,
    iterator_restore_args,
    iterator_save_args,
    lm_dataset,
)
from textgen_jax.data.sources import example_text, open_source, resolve_data_dir, texts
from textgen_jax.data.text_files import TextFiles, TextFilesError, prepared_text_files
from textgen_jax.data.tokenizer import (
    Tokenizer,
    load_or_train_tokenizer,
    load_tokenizer,
    train_tokenizer,
)

__all__ = [
    "NoiseConfig",
    "add_noise",
    "bart_denoising_dataset",
    "StdlibDocstrings",
    "TextFiles",
    "TextFilesError",
    "Tokenizer",
    "bert_pretraining_dataset",
    "example_text",
    "iterator_restore_args",
    "iterator_save_args",
    "lm_dataset",
    "load_or_train_tokenizer",
    "load_tokenizer",
    "local_batch_size",
    "open_source",
    "prepared_stdlib_docstrings",
    "prepared_text_files",
    "resolve_data_dir",
    "texts",
    "train_tokenizer",
]
