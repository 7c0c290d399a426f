"""GPT-2 (Radford et al. 2019): a pre-LN decoder with a final LayerNorm and tied embeddings."""

from __future__ import annotations

from textgen_jax.models.decoder import DecoderLM, DecoderSpec


class GPT2(DecoderLM):
    """Pre-LN blocks, a final LayerNorm and depth-scaled residual projections. Our parameter
    names map onto Hugging Face's GPT2LMHeadModel through convert/tables.py."""

    pre_norm: bool = True
    scale_residual_init: bool = True


class GPT2Spec(DecoderSpec):
    name = "gpt2"
    module = GPT2
