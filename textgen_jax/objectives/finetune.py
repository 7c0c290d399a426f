"""Fine-tuning losses for the sequence-level tasks: classification, regression, similarity and
multiple choice, on every architecture, over the rows of `finetune/pipelines.py`.

The sums are over examples ('tokens' counts examples), so the loop's division gives the mean
loss and accuracy per example. GPT and GPT-2 add the auxiliary LM loss of GPT §3.3
(L3 = L2 + lambda * L1, lambda = config.task.lm_weight) over the tokens of their rows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from textgen_jax.objectives.clm import causal_lm_loss, cross_entropy_sums

SEQUENCE_KINDS = ("classification", "regression", "similarity", "multiple_choice")


def _flatten_rows(batch: dict[str, jax.Array]) -> tuple[dict[str, jax.Array], int]:
    """Rows with a choice or order axis ([B, C, L] and [B, C]) as [B * C, ...]; returns them
    and C (1 when there is no such axis)."""
    choices = batch["inputs"].shape[1] if batch["inputs"].ndim == 3 else 1
    if choices == 1 and batch["inputs"].ndim == 2:
        return batch, 1
    rows = {key: value.reshape(-1, *value.shape[2:]) if value.ndim >= 2 and
            value.shape[:2] == batch["inputs"].shape[:2] else value
            for key, value in batch.items()}
    return rows, choices


def model_outputs(arch: str, model, params, rows: dict[str, jax.Array], rng,
                  deterministic: bool) -> dict[str, jax.Array]:
    """The model's outputs on fine-tuning rows, called with each architecture's inputs."""
    apply = functools.partial(model.apply, {"params": params}, deterministic=deterministic,
                              rngs=None if deterministic else {"dropout": rng})
    if arch == "bert":
        return apply(rows["inputs"], rows["token_types"], rows["positions"],
                     rows["attention_ids"])
    if arch == "xlm":
        return apply(rows["inputs"], rows["langs"], rows["positions"], rows["attention_ids"])
    if arch in ("gpt", "gpt2"):
        return apply(rows["inputs"], rows["attention_ids"], rows["positions"],
                     extract_positions=rows["extract_positions"])
    if arch == "bart":
        return apply(rows["inputs"], rows["decoder_inputs"], input_ids_mask=rows["input_mask"],
                     decoder_mask=rows["decoder_mask"],
                     extract_positions=rows["extract_positions"])
    raise ValueError(f"config.model.arch={arch!r} has no fine-tuning inputs.")


def sequence_logits(arch: str, kind: str, model, params, batch: dict[str, jax.Array],
                    rng=None, deterministic: bool = True) -> tuple[jax.Array, dict]:
    """(logits [B, num_labels] — [B, num_choices] for multiple choice —, the model's outputs).

    GPT's similarity rows come in both orders [B, 2, L]: their states are added before the
    linear classifier (GPT §3.3), i.e. their logits are added (the classifier is linear; its
    bias then counts twice, which training absorbs).
    """
    rows, choices = _flatten_rows(batch)
    outputs = model_outputs(arch, model, params, rows, rng, deterministic)
    logits = outputs["classification_logits"]
    if choices > 1:
        logits = logits.reshape(-1, choices, logits.shape[-1])
        logits = logits[..., 0] if kind == "multiple_choice" else logits.sum(1)
    return logits, {**outputs, "rows": rows}


def sequence_task_loss_fn(model, params, batch: dict[str, jax.Array], rng, deterministic: bool,
                          *, arch: str, kind: str, regression: bool,
                          lm_weight: float) -> dict[str, jax.Array]:
    """Sums over the examples of a fine-tuning batch (see the module docstring)."""
    logits, outputs = sequence_logits(arch, kind, model, params, batch, rng, deterministic)
    labels = batch["labels"]
    examples = jnp.ones(labels.shape[:1], jnp.float32)
    if regression:
        errors = (logits[:, 0] - labels.astype(jnp.float32)) ** 2
        sums = {"loss": errors.sum(), "tokens": examples.sum()}
    else:
        sums = cross_entropy_sums(logits, labels.astype(jnp.int32), examples)
    if lm_weight and arch in ("gpt", "gpt2"):
        rows = outputs["rows"]
        lm = causal_lm_loss(outputs["logits"], rows["inputs"], rows["attention_ids"])
        # lambda times the mean LM loss, per example: the loop divides by 'tokens'.
        sums["loss"] = sums["loss"] + lm_weight * lm["loss"] / jnp.maximum(
            lm["tokens"], 1.0) * sums["tokens"]
        sums.update(lm_loss=lm["loss"], lm_examples=lm["tokens"])
    return sums


def sequence_task_predict_fn(model, params, batch: dict[str, jax.Array], *, arch: str,
                             kind: str, regression: bool) -> dict[str, jax.Array]:
    """{'predictions': the class (or score) of each example [B], 'labels': [B]}: what the
    task's metrics (accuracy, F1, Matthews, Pearson, ...) read."""
    logits, _ = sequence_logits(arch, kind, model, params, batch)
    predictions = logits[:, 0] if regression else jnp.argmax(logits, axis=-1)
    return {"predictions": predictions, "labels": batch["labels"]}
