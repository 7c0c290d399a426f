"""The Colab entry point: `model, params, tokenizer, config = textgen_jax.load(workdir)`."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import ml_collections

from textgen_jax import config as config_lib
from textgen_jax import data as data_lib
from textgen_jax import decoding, models
from textgen_jax.data.tokenizer import TOKENIZER_FILENAME
from textgen_jax.training import checkpoint, partitioning


class Loaded(NamedTuple):
    model: nn.Module
    params: Any
    tokenizer: Any
    config: ml_collections.ConfigDict


def load(workdir: str, step: int | None = None) -> Loaded:
    """Restores the params of a workdir's latest (or given) checkpoint onto this process's
    devices, whatever topology wrote it, with its model, tokenizer and resolved config."""
    saved = checkpoint.read_config(workdir)
    if saved is None:
        raise FileNotFoundError(f"{os.path.join(workdir, checkpoint.CONFIG_FILE)} not found: "
                                f"{workdir!r} is not a textgen_jax workdir.")
    config = config_lib.from_dict(saved)
    tokenizer = data_lib.Tokenizer.load(os.path.join(workdir, TOKENIZER_FILENAME))
    model = models.build_model(config.model, config.model.vocab_size)
    # Replicated over the local devices (a data-only mesh), whatever mesh wrote the checkpoint.
    mesh_config = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    mesh = partitioning.make_mesh(mesh_config)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), *model.example_inputs(8))["params"])
    shardings = partitioning.logical_shardings(boxed, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            nn.meta.unbox(boxed), shardings)
    params, _ = checkpoint.restore_params(workdir, abstract, step)
    return Loaded(model, params, tokenizer, config)


def generate(workdir_or_loaded: str | Loaded, prompts: list[str], max_new_tokens: int = 32,
             temperature: float = 0.8, top_k: int = 40, seed: int = 0) -> list[str]:
    """Samples continuations of `prompts` from a workdir (or a `load` result)."""
    loaded = (load(workdir_or_loaded) if isinstance(workdir_or_loaded, str)
              else workdir_or_loaded)
    if not getattr(loaded.model, "can_generate", True):
        raise ValueError(f"config.model.arch={loaded.config.model.arch!r} cannot generate text "
                         "(an encoder, or an encoder-decoder that decoding does not support "
                         "yet); train a gpt or gpt2 model to generate.")
    return decoding.sample(loaded.model, loaded.params, loaded.tokenizer, prompts,
                           max_new_tokens=max_new_tokens, temperature=temperature,
                           top_k=top_k, seed=seed)
