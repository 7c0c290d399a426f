"""GPT-2 (Radford et al. 2019): a pre-LN decoder with a final LayerNorm and tied embeddings."""

from __future__ import annotations

from textgen_jax.models.decoder import DecoderLM


class GPT2(DecoderLM):
    """Names map directly onto Hugging Face's GPT2LMHeadModel (wte, wpe, h.i, ln_f)."""

    pre_norm: bool = True
    scale_residual_init: bool = True
