"""The architecture registry: `spec_for(config.model)` answers every question code outside
models/ has about an architecture (models/spec.py); `build_model` builds its Flax module."""

from __future__ import annotations

import flax.linen as nn
import jax
import ml_collections

from textgen_jax.config import ConfigError
from textgen_jax.models.bart import BartSpec
from textgen_jax.models.bert import BertSpec
from textgen_jax.models.gpt import GPTSpec
from textgen_jax.models.gpt2 import GPT2Spec
from textgen_jax.models.spec import (DECODER, ENCODER, ENCODER_DECODER, MODEL_KEYS,
                                     ArchitectureSpec)
from textgen_jax.models.xlm_seq2seq import XlmSpec

SPECS: dict[str, type[ArchitectureSpec]] = {
    spec.name: spec for spec in (GPT2Spec, GPTSpec, BertSpec, XlmSpec, BartSpec)}

__all__ = ["DECODER", "ENCODER", "ENCODER_DECODER", "MODEL_KEYS",
           "ArchitectureSpec", "build_model", "param_shapes", "spec_for"]


def spec_for(model_config: ml_collections.ConfigDict) -> ArchitectureSpec:
    """The spec of config.model's architecture; ConfigError naming the choices otherwise."""
    if model_config.arch not in SPECS:
        raise ConfigError(f"config.model.arch={model_config.arch!r} is not one of "
                          f"{sorted(SPECS)}.")
    return SPECS[model_config.arch](model_config)


def build_model(model_config: ml_collections.ConfigDict, vocab_size: int) -> nn.Module:
    """The Flax module named by config.model.arch, sized by the config and the vocabulary."""
    return spec_for(model_config).build(vocab_size)


def param_shapes(model: nn.Module) -> dict:
    """The model's parameter tree as unboxed ShapeDtypeStructs (nothing is computed)."""
    return nn.meta.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), model.example_batch(8))["params"]))
