"""Seq2seq fine-tuning: summarization and translation (BART §3.4, XLM §5) and GPT/GPT-2
conditional generation, over the seq2seq rows of `finetune/pipelines.py`.

Training is token cross-entropy on the target tokens (target_mask) with label smoothing
config.task.label_smoothing (fairseq's BART summarization recipe: 0.1). BART and XLM read the
source with the encoder and predict `targets` from `decoder_inputs`; GPT and GPT-2 read
`[bos] source [sep] target [eos]` and are scored only on the target's tokens, so they learn
p(target | source). Sums are per target token, as the other objectives'.

Evaluation decodes each row with beam search (config.task: num_beams, max_target_length,
min_target_length, length_penalty, no_repeat_ngram_size) through decoding.generate_ids —
BART and XLM from the source, GPT and GPT-2 from the prompt `[bos] source [sep]` — and scores
the detokenized outputs against the task's reference texts with ROUGE or BLEU.
"""

from __future__ import annotations

import functools

import jax
import ml_collections
import numpy as np

from textgen_jax.config import ConfigError
from textgen_jax.decoding.generate import GenerationOptions, generate_ids
from textgen_jax.finetune.forward import model_outputs
from textgen_jax.finetune.metrics import compute_metrics
from textgen_jax.finetune.pipelines import (FINETUNE_PIECES, finetune_dataset, references,
                                            task_source)
from textgen_jax.finetune.tasks import Task
from textgen_jax.models import ENCODER_DECODER, ArchitectureSpec, spec_for
from textgen_jax.objectives import Objective
from textgen_jax.objectives.clm import cross_entropy_sums

NO_TOKEN = -1  # pads the generated ids of an example that stopped early


def seq2seq_logits(spec: ArchitectureSpec, model, params, batch: dict[str, jax.Array],
                   rng=None, deterministic: bool = True) -> jax.Array:
    """float32 logits [B, L, vocab] of each row's next tokens: at decoder position t (an
    encoder-decoder: BART, XLM) or input position t (a decoder: GPT, GPT-2), the prediction of batch['targets'][:, t]."""
    return model_outputs(spec, model, params, batch, rng, deterministic)["logits"]


def seq2seq_loss_fn(model, params, batch: dict[str, jax.Array], rng, deterministic: bool, *,
                    spec: ArchitectureSpec, label_smoothing: float) -> dict[str, jax.Array]:
    """Sums over the target tokens of a batch: 'loss' (label-smoothed cross-entropy),
    'correct', 'tokens' and, with label smoothing, 'nll' (the plain cross-entropy)."""
    logits = seq2seq_logits(spec, model, params, batch, rng, deterministic)
    return cross_entropy_sums(logits, batch["targets"],
                              batch["target_mask"].astype(np.float32), label_smoothing)


def _process_rows(array) -> np.ndarray:
    """This process's rows [b, ...] of a global batch array [B, ...] (all of them on one
    process): what it decodes, and what the loop gathers from every process."""
    if not isinstance(array, jax.Array) or array.is_fully_addressable:
        return np.asarray(array)
    shards = {shard.index[0].start or 0: shard.data for shard in array.addressable_shards}
    return np.concatenate([np.asarray(shards[start]) for start in sorted(shards)])


def _prompts_and_eos(spec: ArchitectureSpec, rows: dict[str, np.ndarray]
                     ) -> tuple[list[list[int]], int]:
    """What each row [b, L] decodes from — an encoder-decoder (BART/XLM): the source
    `[bos] source [eos]`; a decoder (GPT/GPT-2):
    `[bos] source [sep]`, the first prompt_lengths tokens — and the eos id that ends a
    generation, read from the rows (the decoder's start token; the last token of a GPT row)."""
    if spec.kind == ENCODER_DECODER:
        lengths = rows["segment_ids"].sum(axis=1)
        eos_ids = rows["decoder_inputs"][:, 0]
    else:
        lengths = rows["prompt_lengths"]
        eos_ids = rows["inputs"][np.arange(len(lengths)), rows["segment_ids"].sum(axis=1) - 1]
    if (eos_ids != eos_ids[0]).any():
        raise ValueError(f"seq2seq rows disagree on the eos id ({sorted(set(eos_ids.tolist()))}); "
                         "they are not rows of finetune/pipelines.py.")
    prompts = [row[:length].tolist() for row, length in zip(rows["inputs"], lengths)]
    return prompts, int(eos_ids[0])


def seq2seq_predict_fn(model, params, batch: dict[str, jax.Array], *,
                       spec: ArchitectureSpec, options: GenerationOptions) -> dict[str, np.ndarray]:
    """Beam-search decoding of this process's rows of `batch`: {'predictions': int32
    [b, options.max_new_tokens] the generated ids, cut before eos and padded with NO_TOKEN,
    'example_index': [b]}. Runs decoding's compiled loops (jit_predict=False): each prompt
    width compiles once per run, so repeated evaluations of the same batches compile nothing.
    """
    rows = {key: _process_rows(batch[key]) for key in
            ("inputs", "segment_ids", "decoder_inputs", "prompt_lengths", "langs",
             "decoder_langs", "example_index") if key in batch}
    prompts, eos_id = _prompts_and_eos(spec, rows)
    languages = {}
    if spec.uses_languages:  # a task's rows share the source's and the target's language
        languages = {"language_id": int(rows["langs"][0, 0])}
        if "decoder_langs" in rows:
            languages["target_language_id"] = int(rows["decoder_langs"][0, 0])
    generated = generate_ids(model, params, prompts, options, eos_id=eos_id, pad_id=eos_id,
                             **languages)
    predictions = np.full((len(prompts), options.max_new_tokens), NO_TOKEN, np.int32)
    for row, ids in enumerate(generated):
        predictions[row, :len(ids)] = ids
    return {"predictions": predictions, "example_index": rows["example_index"]}


def detokenize(tokenizer, ids: np.ndarray) -> str:
    """The text of generated ids [n], without NO_TOKEN padding and bos/eos/pad (BART's decoder
    generates the bos its targets start with)."""
    special = {tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id}
    return tokenizer.decode([int(i) for i in ids if i != NO_TOKEN and int(i) not in special])


def seq2seq_score_fn(config: ml_collections.ConfigDict, tokenizer, split: str,
                     outputs: dict[str, np.ndarray], *, metrics: tuple[str, ...]
                     ) -> dict[str, float]:
    """`metrics` (ROUGE, BLEU) of the decoded predictions against the reference text of each
    example (`references` of `task_source(config, split)[example_index]`)."""
    source = task_source(config, split)
    predictions = [detokenize(tokenizer, ids) for ids in outputs["predictions"]]
    targets = [references(config, source[int(index)]) for index in outputs["example_index"]]
    return compute_metrics(metrics, predictions, targets)


def generation_options(config: ml_collections.ConfigDict) -> GenerationOptions:
    """The beam search of config.task; ConfigError naming the bad value."""
    task = config.task
    options = GenerationOptions(
        max_new_tokens=task.max_target_length, min_new_tokens=task.min_target_length,
        num_beams=task.num_beams, length_penalty=task.length_penalty,
        no_repeat_ngram_size=task.no_repeat_ngram_size,
        early_stopping=True)  # a row is done at num_beams finished hypotheses, as fairseq
    try:
        options.validate()
    except ValueError as error:
        raise ConfigError(f"config.task (evaluation's beam search): {error} The options are "
                          "config.task.max_target_length, min_target_length, num_beams, "
                          "length_penalty, no_repeat_ngram_size.") from None
    return options


def seq2seq_objective(config: ml_collections.ConfigDict, task: Task) -> Objective:
    """The Objective of seq2seq task `task` on config.model.arch (see the module docstring)."""
    spec = spec_for(config.model)
    if not 0.0 <= config.task.label_smoothing < 1.0:
        raise ConfigError(f"config.task.label_smoothing={config.task.label_smoothing} must lie "
                          "in [0, 1) (0 = off; BART's summarization recipe uses 0.1).")
    loss_fn = functools.partial(seq2seq_loss_fn, spec=spec,
                                label_smoothing=float(config.task.label_smoothing))
    predict_fn = functools.partial(seq2seq_predict_fn, spec=spec,
                                   options=generation_options(config))
    score_fn = functools.partial(seq2seq_score_fn, metrics=task.metrics)
    return Objective(f"finetune:{task.name}", loss_fn, finetune_dataset,
                     pieces=FINETUNE_PIECES.get(spec.name, ()),
                     predict_fn=predict_fn, metrics=task.metrics, jit_predict=False,
                     score_fn=score_fn)
