"""Decoding: KV-cache generation (greedy, sampling, beam search) and fill-mask."""

from textgen_jax.decoding.fill_mask import fill_mask, language_id
from textgen_jax.decoding.generate import GenerationOptions, generate_ids
from textgen_jax.decoding.sampling import generate_text, sample

__all__ = ["GenerationOptions", "fill_mask", "generate_ids", "generate_text", "language_id",
           "sample"]
