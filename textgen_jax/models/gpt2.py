"""GPT-2 (Radford et al. 2019): a pre-LN decoder with a final LayerNorm and tied embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

from textgen_jax.models import hf as hf_lib
from textgen_jax.models.decoder import DecoderLM, DecoderSpec


class GPT2(DecoderLM):
    """Pre-LN blocks, a final LayerNorm and depth-scaled residual projections. Our parameter
    names map onto Hugging Face's GPT2LMHeadModel through convert/tables.py."""

    pre_norm: bool = True
    scale_residual_init: bool = True


class GPT2Spec(DecoderSpec):
    name = "gpt2"
    module = GPT2
    hf_model_type, hf_class = "gpt2", "GPT2LMHeadModel"

    @staticmethod
    def model_config_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
        hf_lib.require(hf, "scale_attn_by_inverse_layer_idx", False, "standard GPT-2 attention")
        hf_lib.require(hf, "reorder_and_upcast_attn", False, "standard GPT-2 attention")
        return DecoderSpec._model_config_from_hf(
            hf, hf.get("n_inner") or 4 * hf["n_embd"],
            hf_lib.activation_from_hf(hf.get("activation_function", "gelu_new"), "gpt2"))

    def hf_config(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
        return {**super().hf_config(config), "n_inner": config.model.d_ff,
                "activation_function": "gelu_new"}
