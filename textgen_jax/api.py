"""The Colab entry point: `model, params, tokenizer, config = textgen_jax.load(workdir)`."""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import ml_collections

from textgen_jax import config as config_lib
from textgen_jax import data as data_lib
from textgen_jax import decoding, models
from textgen_jax.finetune.objectives import objective_for
from textgen_jax.finetune.pipelines import task_languages
from textgen_jax.finetune.tasks import get_task
from textgen_jax.training import checkpoint, loop, partitioning, steps


class Loaded(NamedTuple):
    model: nn.Module
    params: Any
    tokenizer: Any
    config: ml_collections.ConfigDict


def load(workdir: str, step: int | None = None, best: bool = False) -> Loaded:
    """Restores the params of a workdir's latest (or given) checkpoint onto this process's
    devices, whatever topology wrote it, with its model, tokenizer and resolved config.
    `best`: a fine-tuning run's best params by its task's metric (workdir/best)."""
    saved = checkpoint.read_config(workdir)
    if saved is None:
        raise FileNotFoundError(f"{os.path.join(workdir, checkpoint.CONFIG_FILE)} not found: "
                                f"{workdir!r} is not a textgen_jax workdir.")
    config = config_lib.from_dict(saved)
    tokenizer = data_lib.load_tokenizer(workdir)
    model = models.build_model(config.model, config.model.vocab_size)
    # Replicated over the local devices (a data-only mesh), whatever mesh wrote the checkpoint.
    mesh = partitioning.data_parallel_mesh()
    boxed = jax.eval_shape(
        lambda: model.init(jax.random.key(0), model.example_batch(8))["params"])
    shardings = partitioning.logical_shardings(boxed, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            nn.meta.unbox(boxed), shardings)
    params, _ = checkpoint.restore_params(workdir, abstract, step, best=best,
                                          commit_file=config.train.checkpoint_commit_file)
    return Loaded(model, params, tokenizer, config)


def _loaded(model_or_workdir: str | os.PathLike | Loaded) -> Loaded:
    if isinstance(model_or_workdir, (str, os.PathLike)):
        return load(os.fspath(model_or_workdir))
    return model_or_workdir


def generate(model_or_workdir: str | os.PathLike | Loaded, prompts: str | Sequence[str],
             max_new_tokens: int = 32, temperature: float = 0.8, top_k: int = 40,
             seed: int = 0, *, top_p: float = 1.0, min_new_tokens: int = 0,
             repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
             num_beams: int = 1, length_penalty: float = 1.0,
             early_stopping: bool | str = False, language: str = "",
             stream: Callable[[str], None] | None = None) -> list[str]:
    """Generates from a workdir (or a `load` result) with the KV cache: for GPT, GPT-2 and
    causal XLM each prompt + its continuation, for BART and XLM's translation model the output
    for each source text.

    temperature 0 is greedy; top_k 0 and top_p 1 turn those filters off; num_beams > 1 is
    beam search (the sampling options then do not apply). `language` picks an XLM model's
    language (a translation model's source language, by default its task's; it writes the
    task's target language); `stream(text)` receives a single prompt's new text as it is
    decoded. Raises
    ValueError for bad options, an empty or too long prompt, or an encoder-only model.
    """
    loaded = _loaded(model_or_workdir)
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise ValueError("no prompts given; pass at least one prompt.")
    options = decoding.GenerationOptions(
        max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, temperature=temperature,
        top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size, num_beams=num_beams,
        length_penalty=length_penalty, early_stopping=early_stopping, seed=seed)
    spec = models.spec_for(loaded.config.model)
    if not spec.can_generate:
        raise ValueError(f"config.model.arch={loaded.config.model.arch!r} (causal="
                         f"{loaded.config.model.get('causal', False)}) is an encoder with no "
                         "next-token head, so it cannot generate; use fill-mask with it, or a "
                         "gpt, gpt2, causal xlm or bart checkpoint to generate.")
    language_id = target_language_id = 0
    if spec.uses_languages and spec.kind == models.ENCODER_DECODER:
        # XLM's translation model writes into its task's output language.
        _, language_id, target_language_id = task_languages(
            loaded.config, get_task(loaded.config.task.name), language)
    elif spec.uses_languages:
        language_id = decoding.language_id(loaded.config, language)
    return decoding.generate_text(spec, loaded.model, loaded.params, loaded.tokenizer,
                                  list(prompts), options, language_id=language_id,
                                  target_language_id=target_language_id, stream=stream)


def fill_mask(model_or_workdir: str | os.PathLike | Loaded, text: str, top_k: int = 5,
              language: str = "") -> list[list[tuple[str, float]]]:
    """For each '<mask>' of `text`, the top_k (token text, probability) fillers, from a BERT
    or non-causal XLM workdir (or `load` result)."""
    return decoding.fill_mask(_loaded(model_or_workdir), text, top_k, language)


def evaluate(model_or_workdir: str | os.PathLike | Loaded) -> dict[str, float]:
    """Loss, perplexity and accuracy (and a fine-tuning task's metrics) of a workdir's latest
    checkpoint (or a `load` result) over config.train.eval_batches batches of its eval split,
    on this process's devices, whatever mesh trained it."""
    loaded = _loaded(model_or_workdir)
    # The eval batches are sharded by config.mesh: it must describe the mesh they run on.
    config = loaded.config.copy_and_resolve_references()
    config.mesh.update(partitioning.DATA_PARALLEL_MESH)
    mesh = partitioning.data_parallel_mesh()
    eval_step = jax.jit(steps.make_eval_step(loaded.model,
                                             objective_for(config).loss_fn))
    with steps.activate(mesh):
        return loop.evaluate(eval_step, loaded.params, config, loaded.tokenizer, mesh)
