"""Causal language modelling: predict token t+1 from tokens <= t within one packed document."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def causal_lm_loss(logits: jax.Array, inputs: jax.Array,
                   segment_ids: jax.Array) -> dict[str, jax.Array]:
    """Summed next-token cross-entropy over the batch.

    logits [batch, length, vocab] float32, inputs and segment_ids [batch, length] (segment 0 is
    padding). The target of position t is inputs[t + 1] when both lie in the same document.
    Returns sums (loss, correct predictions) and the number of target tokens, so that
    gradient accumulation and multi-device means weight every token equally.
    """
    targets = inputs[:, 1:]
    weights = ((segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] > 0))
    weights = weights.astype(jnp.float32)
    logits = logits[:, :-1]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = (logits.argmax(-1) == targets).astype(jnp.float32)
    return {"loss": (losses * weights).sum(), "correct": (correct * weights).sum(),
            "tokens": weights.sum()}


def clm_loss_fn(model, params, batch: dict[str, jax.Array], rng: jax.Array | None,
                deterministic: bool) -> dict[str, jax.Array]:
    """The loop's view of the objective: sums over `batch` for a decoder-only model."""
    rngs = None if deterministic else {"dropout": rng}
    logits = model.apply({"params": params}, batch["inputs"], batch["segment_ids"],
                         batch["positions"], deterministic=deterministic, rngs=rngs)
    return causal_lm_loss(logits, batch["inputs"], batch["segment_ids"])
