"""GPT (Radford et al. 2018): a post-LN decoder with learned positions and tied embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

from textgen_jax.models import hf as hf_lib
from textgen_jax.models.decoder import DecoderLM, DecoderSpec


class GPT(DecoderLM):
    """Unlike GPT-2 there is no final LayerNorm: each block already ends in one (post-LN), and
    every weight is initialised N(0, 0.02) (paper §4.1), with no depth scaling. Our parameter
    names map onto Hugging Face's OpenAIGPTLMHeadModel through convert/tables.py."""

    pre_norm: bool = False
    scale_residual_init: bool = False


class GPTSpec(DecoderSpec):
    name = "gpt"
    module = GPT
    hf_model_type, hf_class = "openai-gpt", "OpenAIGPTLMHeadModel"

    @staticmethod
    def model_config_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
        return DecoderSpec._model_config_from_hf(
            hf, 4 * hf["n_embd"], hf_lib.activation_from_hf(hf.get("afn", "gelu"), "openai-gpt"))

    def hf_config(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
        m = config.model
        hf_lib.check_export(m.d_ff == 4 * m.d_model, f"config.model.d_ff={m.d_ff}",
                            "openai-gpt's ffn is 4 * d_model")
        return {**super().hf_config(config), "afn": "gelu"}
