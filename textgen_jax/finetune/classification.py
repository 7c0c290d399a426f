"""Fine-tuning losses for the sequence-level tasks: classification, regression, similarity and
multiple choice, on every architecture, over the rows of `finetune/pipelines.py`.

The sums are over examples ('tokens' counts examples), so the loop's division gives the mean
loss and accuracy per example. GPT and GPT-2 add the auxiliary LM loss of GPT §3.3
(L3 = L2 + lambda * L1, lambda = config.task.lm_weight) over the tokens of their rows (any
decoder's: `spec.kind == DECODER`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from textgen_jax.data.tokenizer import Tokenizer
from textgen_jax.finetune.forward import model_outputs
from textgen_jax.finetune.metrics import compute_metrics
from textgen_jax.finetune.pipelines import FINETUNE_PIECES, finetune_dataset
from textgen_jax.finetune.tasks import Task
from textgen_jax.models import DECODER, ArchitectureSpec, spec_for
from textgen_jax.objectives import Objective
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


def sequence_logits(spec: ArchitectureSpec, kind: str, model, params, batch: dict[str, jax.Array],
                    rng=None, deterministic: bool = True) -> tuple[jax.Array, dict]:
    """(logits [B, num_labels] — [B, num_choices] for multiple choice —, the model's outputs).

    GPT's similarity rows come in both orders [B, 2, L]: their states are added before the
    linear classifier (GPT §3.3), i.e. their logits are added (the classifier is linear; its
    bias then counts twice, which training absorbs).
    """
    rows, choices = _flatten_rows(batch)
    outputs = model_outputs(spec, model, params, rows, rng, deterministic)
    logits = outputs["classification_logits"]
    if choices > 1:
        logits = logits.reshape(-1, choices, logits.shape[-1])
        logits = logits[..., 0] if kind == "multiple_choice" else logits.sum(1)
    return logits, {**outputs, "rows": rows}


def sequence_task_loss_fn(model, params, batch: dict[str, jax.Array], rng, deterministic: bool,
                          *, spec: ArchitectureSpec, kind: str, regression: bool,
                          lm_weight: float) -> dict[str, jax.Array]:
    """Sums over the examples of a fine-tuning batch (see the module docstring)."""
    logits, outputs = sequence_logits(spec, kind, model, params, batch, rng, deterministic)
    labels = batch["labels"]
    examples = jnp.ones(labels.shape[:1], jnp.float32)
    if regression:
        errors = (logits[:, 0] - labels.astype(jnp.float32)) ** 2
        sums = {"loss": errors.sum(), "tokens": examples.sum()}
    else:
        sums = cross_entropy_sums(logits, labels.astype(jnp.int32), examples)
    if lm_weight and spec.kind == DECODER:
        rows = outputs["rows"]
        lm = causal_lm_loss(outputs["logits"], rows["inputs"], rows["segment_ids"])
        # lambda times the mean LM loss, per example: the loop divides by 'tokens'.
        sums["loss"] = sums["loss"] + lm_weight * lm["loss"] / jnp.maximum(
            lm["tokens"], 1.0) * sums["tokens"]
        sums.update(lm_loss=lm["loss"], lm_examples=lm["tokens"])
    return sums


def sequence_task_predict_fn(model, params, batch: dict[str, jax.Array], *,
                             spec: ArchitectureSpec, kind: str, regression: bool) -> dict[str, jax.Array]:
    """{'predictions': the class (or score) of each example [B], 'labels': [B]}: what the
    task's metrics (accuracy, F1, Matthews, Pearson, ...) read."""
    logits, _ = sequence_logits(spec, kind, model, params, batch)
    predictions = logits[:, 0] if regression else jnp.argmax(logits, axis=-1)
    return {"predictions": predictions, "labels": batch["labels"]}


def labels_score(config: ml_collections.ConfigDict, tokenizer: Tokenizer, split: str,
                 outputs: dict[str, np.ndarray], *, metrics: tuple[str, ...]
                 ) -> dict[str, float]:
    """`metrics` of outputs['predictions'] against outputs['labels'] [N] (the rows hold both)."""
    del config, tokenizer, split
    return compute_metrics(metrics, outputs["predictions"], outputs["labels"])


def sequence_task_objective(config: ml_collections.ConfigDict, task: Task) -> Objective:
    """The Objective of sequence-level task `task` (SEQUENCE_KINDS) on config.model.arch."""
    spec = spec_for(config.model)
    loss_fn = functools.partial(sequence_task_loss_fn, spec=spec, kind=task.kind,
                                regression=task.is_regression, lm_weight=config.task.lm_weight)
    predict_fn = functools.partial(sequence_task_predict_fn, spec=spec, kind=task.kind,
                                   regression=task.is_regression)
    return Objective(f"finetune:{task.name}", loss_fn, finetune_dataset,
                     pieces=FINETUNE_PIECES.get(spec.name, ()), predict_fn=predict_fn,
                     metrics=task.metrics,
                     score_fn=functools.partial(labels_score, metrics=task.metrics))
