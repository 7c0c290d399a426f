"""Decoding: sampling from a trained model."""

from textgen_jax.decoding.sampling import sample

__all__ = ["sample"]
