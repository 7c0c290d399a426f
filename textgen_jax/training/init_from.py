"""Starting a run from another workdir's params (config.init_from): fine-tuning.

The pretrained params fill every leaf of the new model with the same path and shape; a leaf the
checkpoint lacks (a new task head) keeps the new model's initialisation; a pretrained leaf the
new model has no place for (a pretraining head) is dropped. Both lists are reported, as
transformers' `from_pretrained` does.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from textgen_jax import models
from textgen_jax.config import ConfigError, from_dict
from textgen_jax.models.layers import stack_layers, unstack_layers
from textgen_jax.training import checkpoint, steps


def pretrained_params(init_from: str) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """(config, host numpy params) of the latest checkpoint of workdir `init_from`."""
    saved = checkpoint.read_config(init_from)
    if saved is None:
        raise FileNotFoundError(f"config.init_from={init_from!r} has no {checkpoint.CONFIG_FILE}: "
                                "name a workdir that was trained or imported (import-hf).")
    config = from_dict(saved)
    model = models.build_model(config.model, config.model.vocab_size)
    shapes = models.param_shapes(model)
    cpu = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=cpu),
                            shapes)
    params, _ = checkpoint.restore_params(init_from, abstract)
    return config, jax.tree.map(np.asarray, params)


def merge_pretrained(config: ml_collections.ConfigDict, initialised: dict[str, Any],
                     init_from: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """(params, newly_initialised, dropped): `initialised` (host arrays of the new model) with
    every leaf of the same path and shape taken from `init_from`'s latest checkpoint."""
    pretrained_config, pretrained = pretrained_params(init_from)
    # Scanned and unrolled layer stacks (config.model.scan_layers) initialise each other.
    pretrained = models.spec_for(config.model).params_from(
        models.spec_for(pretrained_config.model), unstack_layers(pretrained), init_from)
    if config.model.scan_layers:
        pretrained = stack_layers(pretrained)
    ours = traverse_util.flatten_dict(initialised, sep="/")
    loaded = traverse_util.flatten_dict(pretrained, sep="/")
    mismatched = [f"{path}: checkpoint {loaded[path].shape}, model {ours[path].shape}"
                  for path in ours if path in loaded and loaded[path].shape != ours[path].shape]
    if mismatched:
        raise ConfigError(
            f"config.init_from={init_from!r} has parameters of other shapes ("
            + "; ".join(mismatched[:4]) + (" ..." if len(mismatched) > 4 else "")
            + "): keep config.model's sizes (and the tokenizer) those of the checkpoint, e.g. "
            f"--config configs/workdir.py:{init_from}.")
    merged = {path: loaded.get(path, value) for path, value in ours.items()}
    new = sorted(path for path in ours if path not in loaded)
    dropped = sorted(path for path in loaded if path not in ours)
    return traverse_util.unflatten_dict(merged, sep="/"), new, dropped


def check_tokenizer(workdir: str, init_from: str) -> None:
    """The fine-tuning workdir must use the pretrained model's vocabulary."""
    from textgen_jax.data.hf_tokenizer import HF_TOKENIZER_FILENAME
    from textgen_jax.data.tokenizer import TOKENIZER_FILENAME

    for name in (TOKENIZER_FILENAME, HF_TOKENIZER_FILENAME):
        source = checkpoint.workdir_path(init_from) / name
        target = checkpoint.workdir_path(workdir) / name
        if not source.exists():
            continue
        wanted = source.read_bytes()
        if target.exists():
            if target.read_bytes() != wanted:
                raise ConfigError(f"{target} differs from {source}: a fine-tuned model must "
                                  "read the ids it was pretrained on; use a new --workdir.")
        elif jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(name + ".tmp")
            temporary.write_bytes(wanted)
            temporary.replace(target)


def start_from_pretrained(state: Any, config: ml_collections.ConfigDict, tx: Any,
                          shardings: Any, log) -> Any:
    """A step-0 state with `state`'s fresh params (sharded) replaced where config.init_from
    has them, and an optimizer state for them; logs what was newly initialised and dropped."""
    from jax.experimental import multihost_utils

    initialised = multihost_utils.process_allgather(state.params, tiled=True)
    params, new, dropped = merge_pretrained(config, initialised, config.init_from)
    log(f"initialised from {config.init_from}: {len(new)} new parameter(s), "
        f"{len(dropped)} dropped")
    for path in new:
        log(f"  newly initialised: {path}")
    for path in dropped:
        log(f"  dropped (not in this model): {path}")
    params = jax.tree.map(
        lambda value, sharding: jax.make_array_from_callback(value.shape, sharding,
                                                             lambda index: value[index]),
        params, shardings.params)
    return steps.state_with_fresh_optimizer(0, params, tx, shardings)
