"""Objectives: a pure loss function paired with the data pipeline that feeds it.

A loss function maps (model, params, batch, rng, deterministic) to a dict of sums with at least
'loss' and 'tokens'; the loop divides. The loop reaches data and loss only through the
`Objective` that `finetune.objectives.objective_for(config)` picks, so it never branches on the
architecture. This package holds the interface and the pretraining objectives (clm, mlm_nsp,
xlm_clm, xlm_mlm, tlm, denoising: `pretraining_objective`); the fine-tuning objectives live in
finetune/, which imports this package and never the reverse.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import ml_collections

from textgen_jax import data
from textgen_jax.data import multilingual
from textgen_jax.config import ConfigError
from textgen_jax.data.tokenizer import lang_symbol
from textgen_jax.objectives.clm import causal_lm_loss, clm_loss_fn
from textgen_jax.objectives.denoising import denoising_loss_fn
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
    # of predict_fn over the evaluation batches. Tasks scored on text (QA spans, decoded
    # summaries) read their contexts and references through outputs['example_index'].
    score_fn: Callable | None = None

    def score(self, config: ml_collections.ConfigDict, tokenizer: data.Tokenizer, split: str,
              outputs: dict) -> dict[str, float]:
        """The task metrics of predict_fn's `outputs` over `split` (a fine-tuning objective)."""
        if self.score_fn is None:
            raise ValueError(f"Objective {self.name!r} has no task metrics to score: only a "
                             "fine-tuning objective (config.task.name) has.")
        return self.score_fn(config, tokenizer, split, outputs)

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


def pretraining_objective(config: ml_collections.ConfigDict) -> Objective:
    """config.objective, or the architecture's own objective when it is ''. (A fine-tuning
    task's objective comes from finetune.objectives.objective_for, which reads config.task.)"""
    name = config.objective or DEFAULT_OBJECTIVE.get(config.model.arch, "")
    if name not in OBJECTIVES:
        raise ConfigError(f"config.objective={name!r} (architecture {config.model.arch!r}) is "
                          f"not one of {sorted(OBJECTIVES)}.")
    return OBJECTIVES[name]


__all__ = ["Objective", "causal_lm_loss", "clm_loss_fn", "denoising_loss_fn", "masked_lm_loss",
           "mlm_nsp_loss_fn", "pretraining_objective", "xlm_clm_loss_fn", "xlm_mlm_loss_fn"]
