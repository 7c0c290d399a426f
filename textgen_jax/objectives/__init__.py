"""Objectives: pure functions (model, params, batch, rng, deterministic) -> summed metrics.

Every objective returns a dict of sums with at least 'loss' and 'tokens'; the loop divides.
"""

from textgen_jax.objectives.clm import causal_lm_loss, clm_loss_fn

OBJECTIVES = {"gpt2": clm_loss_fn}


def loss_fn_for(arch: str):
    return OBJECTIVES[arch]


__all__ = ["causal_lm_loss", "clm_loss_fn", "loss_fn_for"]
