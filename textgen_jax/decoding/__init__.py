"""Decoding: sampling from a trained model, and filling in masked tokens."""

from textgen_jax.decoding.fill_mask import fill_mask
from textgen_jax.decoding.sampling import sample

__all__ = ["fill_mask", "sample"]
