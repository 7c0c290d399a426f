"""Causal language modelling: predict token t+1 from tokens <= t within one packed document."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def causal_lm_loss(logits: jax.Array, inputs: jax.Array,
                   segment_ids: jax.Array) -> dict[str, jax.Array]:
    """Summed next-token cross-entropy over the batch.

    logits [batch, length, vocab] float32, inputs and segment_ids [batch, length] (segment 0 is
    padding). The target of position t is inputs[t + 1] when both lie in the same document.
    Returns sums (loss, correct predictions) and the number of target tokens, so that
    gradient accumulation and multi-device means weight every token equally.
    """
    # The last position gets a dummy target and weight 0 rather than slicing the logits, which
    # would copy them (and pad their gradient) once more.
    targets = jnp.pad(inputs[:, 1:], ((0, 0), (0, 1)))
    next_segments = jnp.pad(segment_ids[:, 1:], ((0, 0), (0, 1)))
    weights = ((next_segments == segment_ids) & (next_segments > 0)).astype(jnp.float32)
    return cross_entropy_sums(logits, targets, weights)


def cross_entropy_sums(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                       label_smoothing: float = 0.0) -> dict[str, jax.Array]:
    """Weighted sums of token cross-entropy and of correct argmax predictions.

    logits [..., vocab] float32, targets [...] int (any value where the weight is 0), weights
    [...] float32. Returns {'loss', 'correct', 'tokens' (the sum of the weights)}.
    label_smoothing > 0 makes 'loss' the cross-entropy with optax.smooth_labels' targets
    ((1 - label_smoothing) one-hot + label_smoothing / vocab; Szegedy et al. 2016 §7) and adds
    'nll', the plain cross-entropy.
    """
    # Cross-entropy as in optax.softmax_cross_entropy_with_integer_labels, with the target logit
    # picked by a one-hot mask: its gradient is then elementwise instead of a scatter.
    vocab_ids = jnp.arange(logits.shape[-1])
    is_target = vocab_ids == targets[..., None]
    target_logits = jnp.where(is_target, logits, 0.0).sum(-1)
    log_normalizer = jax.nn.logsumexp(logits, axis=-1)
    losses = log_normalizer - target_logits
    # argmax == target, without XLA:CPU's slow variadic argmax reduction: the first class that
    # holds the maximum logit is the target.
    max_logits = logits.max(-1, keepdims=True)
    predictions = jnp.where(logits == max_logits, vocab_ids, logits.shape[-1]).min(-1)
    correct = (predictions == targets).astype(jnp.float32)
    sums = {"loss": (losses * weights).sum(), "correct": (correct * weights).sum(),
            "tokens": weights.sum()}
    if label_smoothing:
        # -sum(smoothed * log_softmax) = (1 - a) * nll + a * (logsumexp - mean logit).
        smoothed = ((1.0 - label_smoothing) * losses
                    + label_smoothing * (log_normalizer - logits.mean(-1)))
        sums.update(loss=(smoothed * weights).sum(), nll=sums["loss"])
    return sums


def clm_loss_fn(model, params, batch: dict[str, jax.Array], rng: jax.Array | None,
                deterministic: bool) -> dict[str, jax.Array]:
    """The loop's view of the objective: sums over `batch` for a decoder-only model."""
    rngs = None if deterministic else {"dropout": rng}
    logits = model.apply({"params": params}, batch, deterministic=deterministic,
                         rngs=rngs)["logits"]
    return causal_lm_loss(logits, batch["inputs"], batch["segment_ids"])
