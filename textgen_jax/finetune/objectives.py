"""The fine-tuning objective of config.task.name, and `objective_for`: the one place that picks
between it and a pretraining objective (objectives/).

Imports flow one way: finetune/ builds on objectives/ (the `Objective` interface, the
cross-entropy sums) and objectives/ knows nothing of tasks, so the choice lives here, the
lowest module that knows both.
"""

from __future__ import annotations

import ml_collections

from textgen_jax.config import ConfigError
from textgen_jax.finetune.classification import sequence_task_objective
from textgen_jax.finetune.seq2seq import seq2seq_objective
from textgen_jax.finetune.tasks import Task, get_task
from textgen_jax.finetune.tokens import token_task_objective
from textgen_jax.models.heads import TOKEN_HEADS
from textgen_jax.objectives import Objective, pretraining_objective


def check_head(config: ml_collections.ConfigDict, task: Task) -> None:
    """Raises unless config.model.num_labels is the head size the task's labels need: its
    classes (tags), 1 for a score or for multiple choice (a score per choice). QA and seq2seq
    have heads of their own and read no num_labels. A per-token head (config.model.head) is
    only for token classification and QA (tokens.py checks which)."""
    if config.model.head and task.kind not in TOKEN_HEADS:
        raise ConfigError(f"config.model.head={config.model.head!r} is a per-token head, but "
                          f"config.task.name={task.name!r} is {task.kind}: set "
                          "--config.model.head=''.")
    if task.kind in ("extractive_qa", "seq2seq"):
        return
    if task.kind == "multiple_choice":
        needed, labels = 1, f"the index of one of {task.num_labels} choices (a score each)"
    elif task.is_regression:
        needed, labels = 1, "one float score"
    else:
        needed, labels = task.num_labels, f"{task.num_labels} classes"
    if config.model.num_labels != needed:
        raise ConfigError(f"config.task.name={task.name!r} has labels for {labels}, which do "
                          f"not fit config.model.num_labels={config.model.num_labels}: set "
                          f"--config.model.num_labels={needed}.")


def finetune_objective(config: ml_collections.ConfigDict) -> Objective:
    """The objective of the fine-tuning task config.task.name on config.model.arch."""
    task = get_task(config.task.name)
    check_head(config, task)
    if task.kind in TOKEN_HEADS:
        return token_task_objective(config, task)
    if task.kind == "seq2seq":
        return seq2seq_objective(config, task)
    return sequence_task_objective(config, task)


def objective_for(config: ml_collections.ConfigDict) -> Objective:
    """The fine-tuning objective when config.task.name names a task, else the pretraining
    objective config.objective (or the architecture's own)."""
    if config.task.name:
        return finetune_objective(config)
    return pretraining_objective(config)
