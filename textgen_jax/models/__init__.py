"""Model registry: `build_model(config.model, vocab_size)` for every architecture."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from textgen_jax.models.bart import Bart
from textgen_jax.models.bert import Bert
from textgen_jax.models.gpt import GPT
from textgen_jax.models.gpt2 import GPT2
from textgen_jax.models.layers import TransformerConfig
from textgen_jax.models.xlm import Xlm
from textgen_jax.models.xlm_seq2seq import XlmEncoderDecoder

ARCHITECTURES = {"gpt2": GPT2, "gpt": GPT, "bert": Bert, "xlm": Xlm, "bart": Bart}
# Leaves of config.model that one architecture takes as extra constructor arguments.
ARCHITECTURE_OPTIONS = {"gpt2": ("num_labels",), "gpt": ("num_labels",),
                        "bert": ("num_labels", "head"),
                        "xlm": ("num_languages", "sinusoidal_positions", "causal", "num_labels",
                                "head"),
                        "bart": ("num_decoder_layers", "scale_embedding", "num_labels")}
# XLM's translation model (XLM §5), config.model.arch='xlm' with config.model.encoder_decoder:
# a pretrained XLM workdir initialises it (training/init_from.py).
XLM_ENCODER_DECODER_OPTIONS = ("num_languages", "sinusoidal_positions", "num_decoder_layers")


def transformer_config(model_config: ml_collections.ConfigDict,
                       vocab_size: int) -> TransformerConfig:
    return TransformerConfig(
        vocab_size=vocab_size,
        num_layers=model_config.num_layers,
        d_model=model_config.d_model,
        num_heads=model_config.num_heads,
        d_ff=model_config.d_ff,
        max_len=model_config.max_len,
        dropout=model_config.dropout,
        attention_dropout=model_config.attention_dropout,
        layer_norm_eps=model_config.layer_norm_eps,
        init_std=model_config.init_std,
        dtype=jnp.dtype(model_config.dtype),
        activation=model_config.activation,
        remat=model_config.remat,
        scan_layers=model_config.scan_layers,
        attention=model_config.get("attention", "auto"),  # configs saved before the key
    )


def build_model(model_config: ml_collections.ConfigDict, vocab_size: int):
    """The Flax module named by config.model.arch, sized by the config and the vocabulary."""
    if model_config.arch not in ARCHITECTURES:
        raise ValueError(f"config.model.arch={model_config.arch!r} is not one of "
                         f"{sorted(ARCHITECTURES)}.")
    cls, option_names = (ARCHITECTURES[model_config.arch],
                         ARCHITECTURE_OPTIONS.get(model_config.arch, ()))
    if is_encoder_decoder_xlm(model_config):
        if model_config.num_labels or model_config.causal:
            raise ValueError(
                f"config.model.encoder_decoder=True (XLM's translation model, for seq2seq "
                f"tasks) takes no num_labels={model_config.num_labels} or causal="
                f"{model_config.causal}: set them to 0 and False, or encoder_decoder=False.")
        cls, option_names = XlmEncoderDecoder, XLM_ENCODER_DECODER_OPTIONS
    options = {name: model_config[name] for name in option_names}
    return cls(transformer_config(model_config, vocab_size), **options)


def is_encoder_decoder_xlm(model_config: ml_collections.ConfigDict) -> bool:
    """Whether config.model is XLM's translation model rather than the plain XLM."""
    return model_config.arch == "xlm" and model_config.encoder_decoder


def attention_layer_count(model_config: ml_collections.ConfigDict) -> int:
    """Attention layers over T keys per token, for the FLOP count of MFU: one per layer, and
    for BART's (and XLM's translation model's) decoder two (self-attention and
    cross-attention over the encoder's output)."""
    if model_config.arch == "bart" or is_encoder_decoder_xlm(model_config):
        return model_config.num_layers + 2 * (model_config.num_decoder_layers
                                              or model_config.num_layers)
    return model_config.num_layers


def param_shapes(model: nn.Module) -> dict:
    """The model's parameter tree as unboxed ShapeDtypeStructs (nothing is computed)."""
    return nn.meta.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), *model.example_inputs(8))["params"]))
