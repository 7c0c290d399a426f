"""GPT (Radford et al. 2018): a post-LN decoder with learned positions and tied embeddings."""

from __future__ import annotations

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
