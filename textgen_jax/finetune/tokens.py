"""Fine-tuning objectives of the encoders' per-token tasks (BERT, XLM), over the rows of
`finetune/pipelines.py`: token classification (NER, BERT §4.3) and extractive QA (SQuAD,
BERT §4.2), with how their evaluation scores the predictions.

token_classification: the sums run over the tagged tokens (each word's first piece, labels !=
  IGNORE_LABEL; 'tokens' counts them), so the loop's division gives the mean cross entropy and
  tag accuracy per word. Scored by CoNLL's entity F1 over the IOB tags of Task.label_names, read
  at the same positions (a word cut off by seq_len is neither predicted nor scored).
extractive_qa: the sums run over rows (a context's windows); a row's loss is (CE(start) +
  CE(end)) / 2 over its positions (BERT §4.2), its 'accuracy' the fraction of its start and end
  predicted exactly. Scored by SQuAD's exact match and F1 of each question's best span across
  its windows (`answers.best_answer`, with config.task.max_answer_length, n_best and, for a
  task with unanswerable questions, null_score_diff_threshold) against its answers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from textgen_jax.config import ConfigError
from textgen_jax.data.masking import IGNORE_LABEL
from textgen_jax.data.sources import example_text
from textgen_jax.data.tokenizer import Tokenizer
from textgen_jax.finetune.answers import Window, best_answer
from textgen_jax.finetune.forward import model_outputs
from textgen_jax.finetune.metrics import compute_metrics
from textgen_jax.finetune.pipelines import (FINETUNE_PIECES, KIND_ARCHS, finetune_dataset,
                                            references, task_source)
from textgen_jax.finetune.tasks import Task
from textgen_jax.models import ArchitectureSpec, spec_for
from textgen_jax.models.heads import TOKEN_HEADS
from textgen_jax.objectives import Objective
from textgen_jax.objectives.clm import cross_entropy_sums


def token_classification_loss_fn(model, params, batch: dict[str, jax.Array], rng,
                                 deterministic: bool, *, spec: ArchitectureSpec) -> dict[str, jax.Array]:
    """Sums over the tagged tokens of a batch: labels [B, L] hold a tag or IGNORE_LABEL."""
    outputs = model_outputs(spec, model, params, batch, rng, deterministic)
    labels = batch["labels"]
    tagged = labels != IGNORE_LABEL
    return cross_entropy_sums(outputs["token_logits"], jnp.where(tagged, labels, 0),
                              tagged.astype(jnp.float32))


def span_logits(spec: ArchitectureSpec, model, params, batch: dict[str, jax.Array], rng=None,
                deterministic: bool = True) -> jax.Array:
    """float32 [B, 2, L]: each row's start logits, then its end logits."""
    outputs = model_outputs(spec, model, params, batch, rng, deterministic)
    return jnp.stack([outputs["start_logits"], outputs["end_logits"]], axis=1)


def extractive_qa_loss_fn(model, params, batch: dict[str, jax.Array], rng,
                          deterministic: bool, *, spec: ArchitectureSpec) -> dict[str, jax.Array]:
    """Sums over the examples of a batch: start_positions, end_positions [B]."""
    logits = span_logits(spec, model, params, batch, rng, deterministic)
    targets = jnp.stack([batch["start_positions"], batch["end_positions"]], axis=1)
    # Start and end weigh 1/2 each: an example's loss is their mean CE (BERT §4.2), and
    # 'tokens' (the weights' sum) counts examples.
    return cross_entropy_sums(logits, targets, jnp.full(targets.shape, 0.5, jnp.float32))


def token_classification_predict_fn(model, params, batch: dict[str, jax.Array], *,
                                    spec: ArchitectureSpec) -> dict[str, jax.Array]:
    """{'predictions': the best tag of every token [B, L], 'labels': [B, L]}."""
    outputs = model_outputs(spec, model, params, batch, None, True)
    return {"predictions": jnp.argmax(outputs["token_logits"], axis=-1),
            "labels": batch["labels"]}


def extractive_qa_predict_fn(model, params, batch: dict[str, jax.Array], *,
                             spec: ArchitectureSpec) -> dict[str, jax.Array]:
    """{'start_logits', 'end_logits' [B, L], and the rows' 'context_offsets' [B, L, 2],
    'max_context' [B, L] and 'example_index' [B]}: what `extractive_qa_score` decodes answer
    texts from."""
    logits = span_logits(spec, model, params, batch)
    return {"start_logits": logits[:, 0], "end_logits": logits[:, 1],
            "context_offsets": batch["context_offsets"], "max_context": batch["max_context"],
            "example_index": batch["example_index"]}


def entity_f1_score(config: ml_collections.ConfigDict, tokenizer: Tokenizer, split: str,
                    outputs: dict[str, np.ndarray], *, task: Task) -> dict[str, float]:
    """The task's metrics (entity F1) of predicted against true tags, per row, at the tagged
    positions only; outputs['predictions'] and ['labels'] [N, L] of
    `token_classification_predict_fn`."""
    del config, tokenizer, split  # the rows hold the labels
    names = np.asarray(task.label_names)
    tagged = outputs["labels"] != IGNORE_LABEL
    predicted = [names[row[mask]].tolist() for row, mask in zip(outputs["predictions"], tagged)]
    true = [names[row[mask]].tolist() for row, mask in zip(outputs["labels"], tagged)]
    return compute_metrics(task.metrics, predicted, true)


def extractive_qa_score(config: ml_collections.ConfigDict, tokenizer: Tokenizer, split: str,
                        outputs: dict[str, np.ndarray], *, task: Task) -> dict[str, float]:
    """The task's metrics (exact match, F1) of each question's best answer across its windows
    against its answers, read back from `split` by example_index; outputs of
    `extractive_qa_predict_fn`, concatenated over the evaluation batches (a window seen twice,
    when the batches wrap around the split, changes nothing)."""
    del tokenizer
    source = task_source(config, split)
    windows: dict[int, list[Window]] = {}
    for row in zip(outputs["start_logits"], outputs["end_logits"], outputs["context_offsets"],
                   outputs["max_context"], outputs["example_index"]):
        windows.setdefault(int(row[-1]), []).append(Window(*row[:-1]))
    threshold = config.task.null_score_diff_threshold if task.has_unanswerable else None
    predictions, answers = [], []
    for index, rows in windows.items():
        example = source[index]
        predictions.append(best_answer(
            rows, example_text(example, task.inputs[1]),
            max_answer_length=config.task.max_answer_length, n_best=config.task.n_best,
            null_score_diff_threshold=threshold))
        answers.append(references(config, example))
    return compute_metrics(task.metrics, predictions, answers)


def token_task_objective(config: ml_collections.ConfigDict, task: Task) -> Objective:
    """The objective of a token_classification or extractive_qa task on config.model.arch;
    raises ConfigError when the model cannot run it (another architecture, or a
    config.model.head that is not the task's)."""
    arch, head = config.model.arch, TOKEN_HEADS[task.kind]
    if arch not in KIND_ARCHS[task.kind]:
        raise ConfigError(f"config.task.name={task.name!r} ({task.kind}) needs an encoder, one of "
                          f"{KIND_ARCHS[task.kind]}, not config.model.arch={arch!r}.")
    if config.model.head != head:
        raise ConfigError(f"config.task.name={task.name!r} ({task.kind}) reads the per-token head "
                          f"{head!r}, not config.model.head={config.model.head!r}: set "
                          f"--config.model.head={head} (configs/finetune/ presets do).")
    if task.kind == "token_classification":
        if len(task.label_names) != task.num_labels:
            raise ValueError(f"Task {task.name!r} names {len(task.label_names)} tags for its "
                             f"{task.num_labels} labels; entity F1 reads a name for each.")
        loss_fn, predict_fn = token_classification_loss_fn, token_classification_predict_fn
        score_fn = entity_f1_score
    else:
        loss_fn, predict_fn = extractive_qa_loss_fn, extractive_qa_predict_fn
        score_fn = extractive_qa_score
    spec = spec_for(config.model)
    return Objective(f"finetune:{task.name}", functools.partial(loss_fn, spec=spec),
                     finetune_dataset, pieces=FINETUNE_PIECES.get(spec.name, ()),
                     predict_fn=functools.partial(predict_fn, spec=spec), metrics=task.metrics,
                     score_fn=functools.partial(score_fn, task=task))
