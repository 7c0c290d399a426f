"""The shared body of configs/finetune/<task>.py: an architecture's preset with a task on top."""

from __future__ import annotations

import ml_collections

from textgen_jax.finetune.pipelines import ARCHS, KIND_ARCHS
from textgen_jax.finetune.tasks import get_task
from textgen_jax.models.heads import TOKEN_HEADS
from textgen_jax.presets import architecture_config


def finetune_config(task_name: str, arch_preset: str) -> ml_collections.ConfigDict:
    """Task `task_name` on `arch_preset`: an architecture ('bert' = its tiny preset) or
    architecture-preset ('bert-base'), the model of configs/<arch>.py (textgen_jax.presets)
    that init_from loads.

    The data are the task's (dataset, train and eval splits); the optimisation is the papers'
    fine-tuning recipe (BERT §4.1/§A.3, GPT §4.1: a small learning rate, linear decay to 0
    after a short warmup, a few epochs), scaled down to a few hundred steps for `tiny`. The
    sequence classifier (config.model.num_labels) gets the task's number of labels; a seq2seq
    task trains with label smoothing 0.1 and is evaluated by beam search (config.task); token
    classification and extractive QA get the per-token head of their kind (config.model.head;
    num_labels the tags of token classification).
    """
    arch, _, preset = arch_preset.partition("-")
    preset = preset or "tiny"
    task = get_task(task_name)
    allowed = KIND_ARCHS.get(task.kind, ARCHS)
    if arch not in allowed:
        raise ValueError(f"task {task_name!r} ({task.kind}) runs on {', '.join(allowed)}, "
                         f"not {arch!r}.")
    config = architecture_config(arch, preset)
    config.task.name = task.name
    config.data.update(dataset=task.dataset, files="", train_split=task.train_split,
                       eval_split=task.eval_split)
    if task.kind in ("classification", "regression", "similarity"):
        config.model.num_labels = task.num_labels
    elif task.kind == "multiple_choice":
        config.model.num_labels = 1  # a score per choice, softmax over the choices
    elif task.kind in TOKEN_HEADS:
        config.model.head = TOKEN_HEADS[task.kind]
        config.model.num_labels = task.num_labels  # tags; 0 for QA's start/end head
    elif task.kind == "seq2seq":
        config.task.label_smoothing = 0.1  # fairseq's BART summarization and translation recipes
        # XLM §5: the encoder-decoder whose two stacks init_from fills from a pretrained XLM.
        config.model.encoder_decoder = arch == "xlm"
    config.sample.prompts = ()  # a task model is scored on its task, not sampled
    config.optim.update(decay="linear", end_lr_ratio=0.0, weight_decay=0.01)
    if preset == "tiny":
        config.optim.update(lr=1e-4, warmup_steps=30)
        config.train.update(num_steps=300, eval_every=100, checkpoint_every=100)
    else:  # BERT §4.1: batch 32, lr among 5e-5..2e-5, 3 epochs (SST-2: ~6k steps)
        config.data.update(seq_len=128, global_batch_size=32)
        config.optim.update(lr=3e-5, warmup_steps=600)
        config.train.update(num_steps=10_000, eval_every=1000, checkpoint_every=1000)
    return config
