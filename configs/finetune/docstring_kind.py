"""Docstring kind classification on the embedded corpus (no download): is a stdlib docstring
a function's, a class's or a module's? Three classes, ~80% functions; scored by accuracy and
macro F1. Every architecture runs it; the preset is the architecture (its tiny model).

  textgen-jax train --config configs/bert.py:tiny --workdir runs/bert_tiny   # pretrain first
  textgen-jax train --config configs/finetune/docstring_kind.py:bert \
    --config.init_from=runs/bert_tiny --workdir runs/bert_tiny_kind

Presets: bert, gpt, gpt2, xlm, bart (tiny), or arch-size such as bert-base; BERT reads the
pooled [CLS], GPT/GPT-2 the extract (eos) token, XLM the first token, BART the final eos
(textgen_jax/finetune/pipelines.py). 300 steps of 16 x 128 tokens.
"""

import ml_collections

from textgen_jax.finetune.presets import finetune_config


def get_config(arch: str = "bert") -> ml_collections.ConfigDict:
    return finetune_config("docstring_kind", arch)
