"""Masked-LM losses: BERT pretraining (Devlin et al. 2019, §3.1), masked-LM plus next-sentence
prediction, and the bare masked-LM loss it shares with XLM."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from textgen_jax.objectives.clm import cross_entropy_sums


def masked_lm_loss(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    """Cross-entropy sums over the predicted tokens only.

    logits [batch, length, vocab] float32; labels [batch, length] (the original id where a
    token is predicted, -1 elsewhere). Returns {'loss', 'correct', 'tokens'} sums.
    """
    weights = (labels >= 0).astype(jnp.float32)
    return cross_entropy_sums(logits, jnp.maximum(labels, 0), weights)


def mlm_nsp_loss(mlm_logits: jax.Array, nsp_logits: jax.Array, mlm_labels: jax.Array,
                 nsp_labels: jax.Array) -> dict[str, jax.Array]:
    """Sums whose per-token mean is the paper's loss: mean MLM + mean NSP cross-entropy.

    mlm_logits [batch, length, vocab] and nsp_logits [batch, 2] float32; mlm_labels
    [batch, length] (the original id where a token is predicted, -1 elsewhere); nsp_labels
    [batch] (0 = B follows A, 1 = random B). 'loss' = MLM sum + NSP mean * predicted tokens, so
    the loop's division by 'tokens' gives the sum of the two means; 'nsp_loss' and
    'nsp_correct' are sums over the 'nsp_examples' examples.
    """
    sums = masked_lm_loss(mlm_logits, mlm_labels)
    nsp = cross_entropy_sums(nsp_logits, nsp_labels, jnp.ones(nsp_labels.shape, jnp.float32))
    examples = nsp["tokens"]
    sums["loss"] = sums["loss"] + nsp["loss"] / jnp.maximum(examples, 1.0) * sums["tokens"]
    sums.update(nsp_loss=nsp["loss"], nsp_correct=nsp["correct"], nsp_examples=examples)
    return sums


def mlm_nsp_loss_fn(model, params, batch: dict[str, jax.Array], rng: jax.Array | None,
                    deterministic: bool) -> dict[str, jax.Array]:
    """The loop's view of the objective: sums over a `bert_pretraining_dataset` batch."""
    rngs = None if deterministic else {"dropout": rng}
    out = model.apply({"params": params}, batch, deterministic=deterministic, rngs=rngs)
    return mlm_nsp_loss(out["logits"], out["nsp_logits"], batch["mlm_labels"],
                        batch["nsp_labels"])
