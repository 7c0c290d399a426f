"""The models' forward pass on fine-tuning rows (finetune/pipelines.py), shared by the
sequence, per-token and seq2seq objectives: one call of the model contract (models/spec.py)."""

from __future__ import annotations

import jax

from textgen_jax.models import ArchitectureSpec


def model_outputs(spec: ArchitectureSpec, model, params, rows: dict[str, jax.Array], rng=None,
                  deterministic: bool = True) -> dict[str, jax.Array]:
    """The model's outputs on fine-tuning rows [B, L]: 'logits' [B, L, vocab] (for an
    encoder-decoder, [B, target, vocab] of the decoder), and its head's outputs where it has
    one ('classification_logits' [B, num_labels], 'token_logits' [B, L, num_labels],
    'start_logits' and 'end_logits' [B, L]). The model keys of the contract that this
    architecture does not read are left out (spec.select); the model ignores the rest (labels,
    targets, ...)."""
    return model.apply({"params": params}, spec.select(rows), deterministic=deterministic,
                       rngs=None if deterministic else {"dropout": rng})
