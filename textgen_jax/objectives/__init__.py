"""Objectives: a pure loss function paired with the data pipeline that feeds it.

A loss function maps (model, params, batch, rng, deterministic) to a dict of sums with at least
'loss' and 'tokens'; the loop divides. The loop reaches data and loss only through the
`Objective` that `objective_for(config)` picks, so it never branches on the architecture.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import ml_collections

from textgen_jax import data
from textgen_jax.data import multilingual
from textgen_jax.config import ConfigError
from textgen_jax.data.tokenizer import lang_symbol
from textgen_jax.objectives.clm import causal_lm_loss, clm_loss_fn
from textgen_jax.objectives.denoising import denoising_loss_fn
from textgen_jax.objectives.finetune import (sequence_task_loss_fn,
                                             sequence_task_predict_fn)
from textgen_jax.objectives.mlm import masked_lm_loss, mlm_nsp_loss_fn
from textgen_jax.objectives.xlm import xlm_clm_loss_fn, xlm_mlm_loss_fn


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    loss_fn: Callable  # (model, params, batch, rng, deterministic) -> dict of sums
    dataset: Callable  # (config, tokenizer, split, *, process_index, process_count, shuffle, repeat)
    pieces: tuple[str, ...] = ()  # the special pieces its pipeline writes into the inputs
    multilingual: bool = False  # needs a '<lang:xx>' piece for each config.data.languages
    # Fine-tuning: (model, params, batch) -> {'predictions', 'labels', ...} arrays with a
    # leading batch axis, and the names of the metrics (finetune/metrics.py) evaluation
    # computes from them. The loop jits predict_fn unless jit_predict is False (a predict_fn
    # that runs its own compiled decoding, as seq2seq's beam search).
    predict_fn: Callable | None = None
    metrics: tuple[str, ...] = ()
    jit_predict: bool = True
    # (config, tokenizer, split, outputs) -> {metric: value}: scores the concatenated outputs
    # of predict_fn over the evaluation batches. None: compute_metrics(metrics,
    # outputs['predictions'], outputs['labels']). Tasks scored on text (QA spans, decoded
    # summaries) read their contexts and references through outputs['example_index'].
    score_fn: Callable | None = None

    def score(self, config: ml_collections.ConfigDict, tokenizer: data.Tokenizer, split: str,
              outputs: dict) -> dict[str, float]:
        if self.score_fn is not None:
            return self.score_fn(config, tokenizer, split, outputs)
        from textgen_jax.finetune.metrics import compute_metrics
        return compute_metrics(self.metrics, outputs["predictions"], outputs["labels"])

    def check_vocabulary(self, config: ml_collections.ConfigDict, tokenizer: data.Tokenizer,
                         where: str) -> None:
        """Raises ConfigError unless `tokenizer` (read from `where`) has the pieces needed."""
        missing = [piece for piece in self.pieces if not tokenizer.has_piece(piece)]
        if missing:
            raise ConfigError(
                f"config.objective={self.name!r} needs the pieces {missing} in the vocabulary, "
                f"but the tokenizer {where} has none. Let textgen-jax train one (leave "
                "config.tokenizer.model_file='' and use a new workdir), or give a sentencepiece "
                f"model trained with user_defined_symbols={','.join(self.pieces)}.")
        if self.multilingual:
            languages = tuple(config.data.languages)
            absent = [lang for lang in languages if not tokenizer.has_piece(lang_symbol(lang))]
            if absent:
                raise ConfigError(
                    f"config.data.languages={languages}: {absent} missing from the vocabulary "
                    f"of the tokenizer {where} (no {lang_symbol(absent[0])!r} piece), which was "
                    "trained for other languages. Train a shared vocabulary over all of them: "
                    "list them in config.tokenizer.languages and use a new workdir.")


_MLM_PIECES = ("<mask>",)
OBJECTIVES = {"clm": Objective("clm", clm_loss_fn, data.lm_dataset)}
DEFAULT_OBJECTIVE = {"gpt2": "clm"}
DEFAULT_OBJECTIVE["gpt"] = "clm"
OBJECTIVES["mlm_nsp"] = Objective("mlm_nsp", mlm_nsp_loss_fn, data.bert_pretraining_dataset,
                                  pieces=("<mask>", "<cls>", "<sep>"))
DEFAULT_OBJECTIVE["bert"] = "mlm_nsp"
OBJECTIVES["denoising"] = Objective("denoising", denoising_loss_fn,
                                   data.bart_denoising_dataset, pieces=_MLM_PIECES)
DEFAULT_OBJECTIVE["bart"] = "denoising"
OBJECTIVES["xlm_clm"] = Objective("xlm_clm", xlm_clm_loss_fn, multilingual.xlm_clm_dataset,
                                  multilingual=True)
OBJECTIVES["xlm_mlm"] = Objective("xlm_mlm", xlm_mlm_loss_fn, multilingual.xlm_mlm_dataset,
                                  pieces=_MLM_PIECES, multilingual=True)
OBJECTIVES["tlm"] = Objective("tlm", xlm_mlm_loss_fn, multilingual.tlm_dataset,
                              pieces=_MLM_PIECES, multilingual=True)
DEFAULT_OBJECTIVE["xlm"] = "xlm_mlm"


# The special pieces each architecture's fine-tuning rows use (finetune/pipelines.py).
FINETUNE_PIECES = {"bert": ("<cls>", "<sep>"), "gpt": ("<sep>",), "gpt2": ("<sep>",)}


def check_head(config: ml_collections.ConfigDict, task) -> None:
    """Raises unless config.model.num_labels is the head size the task's labels need: its
    classes (tags), 1 for a score or for multiple choice (a score per choice). QA and seq2seq
    have heads of their own and read no num_labels. A per-token head (config.model.head) is
    only for token classification and QA (finetune_tokens.py checks which)."""
    if config.model.head and task.kind not in ("token_classification", "extractive_qa"):
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
    from textgen_jax.finetune.pipelines import finetune_dataset
    from textgen_jax.finetune.tasks import get_task

    task = get_task(config.task.name)
    arch = config.model.arch
    check_head(config, task)
    if task.kind in ("token_classification", "extractive_qa"):
        from textgen_jax.objectives.finetune_tokens import token_task_objective
        return token_task_objective(config, task)
    if task.kind == "seq2seq":
        from textgen_jax.objectives.finetune_seq2seq import seq2seq_objective
        return seq2seq_objective(config, task)
    loss_fn = functools.partial(sequence_task_loss_fn, arch=arch, kind=task.kind,
                                regression=task.is_regression, lm_weight=config.task.lm_weight)
    predict_fn = functools.partial(sequence_task_predict_fn, arch=arch, kind=task.kind,
                                   regression=task.is_regression)
    return Objective(f"finetune:{task.name}", loss_fn, finetune_dataset,
                     pieces=FINETUNE_PIECES.get(arch, ()), predict_fn=predict_fn,
                     metrics=task.metrics)


def objective_for(config: ml_collections.ConfigDict) -> Objective:
    """config.objective, or the architecture's own objective when it is ''; the fine-tuning
    objective when config.task.name names a task."""
    if config.task.name:
        return finetune_objective(config)
    name = config.objective or DEFAULT_OBJECTIVE.get(config.model.arch, "")
    if name not in OBJECTIVES:
        raise ConfigError(f"config.objective={name!r} (architecture {config.model.arch!r}) is "
                          f"not one of {sorted(OBJECTIVES)}.")
    return OBJECTIVES[name]


__all__ = ["Objective", "causal_lm_loss", "clm_loss_fn", "denoising_loss_fn", "masked_lm_loss",
           "mlm_nsp_loss_fn", "objective_for", "xlm_clm_loss_fn", "xlm_mlm_loss_fn"]
