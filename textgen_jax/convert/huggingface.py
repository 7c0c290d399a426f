"""Import and export of Hugging Face `transformers` checkpoint directories.

A directory holds config.json and model.safetensors (read and written with numpy: no torch), or
a pickled pytorch_model.bin, read only when the caller allows pickles (torch needed). Our params
come from the tables of `convert.tables`; every one of our parameters must be found there, and
every tensor of theirs that is neither mapped, tied nor a buffer is reported as dropped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from textgen_jax import models
from textgen_jax.config import base_config
from textgen_jax.convert import tables
from textgen_jax.convert.tables import CONV1D, LINEAR, ROW, Tensor
from textgen_jax.models import hf as hf_lib
from textgen_jax.models.layers import unstack_layers

SAFETENSORS_FILE = "model.safetensors"
PICKLE_FILE = "pytorch_model.bin"

# config.json's model_type -> the spec of our architecture (models/spec.py).
_SPECS = {spec.hf_model_type: spec for spec in models.SPECS.values()}
# model_type -> (our arch, the transformers class we import from and export to).
SUPPORTED = {model_type: (spec.name, spec.hf_class) for model_type, spec in _SPECS.items()}


@dataclasses.dataclass
class Imported:
    config: ml_collections.ConfigDict  # our config, model section from theirs
    params: dict[str, Any]  # numpy arrays in our tree (no head they lack: see `missing`)
    missing: list[str]  # our parameters they do not have ('/'-joined paths)
    dropped: list[str]  # their tensors we have no place for


# ---- configs -------------------------------------------------------------------------------

def model_config_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
    """Our config.model leaves from a transformers config.json dict."""
    model_type = hf.get("model_type")
    if model_type not in _SPECS:
        raise ValueError(f"model_type={model_type!r} is not supported; supported model types: "
                         f"{', '.join(sorted(_SPECS))}.")
    spec = _SPECS[model_type]
    model = spec.model_config_from_hf(hf)
    heads = {name: head for head, name in spec.hf_head_classes.items()}
    head = next((heads[a] for a in hf.get("architectures") or () if a in heads), "")
    if head:
        model.update(head=head,
                     num_labels=hf_lib.num_labels(hf) if head == "token_classification" else 0)
    return dict(arch=spec.name, vocab_size=hf["vocab_size"], **model)


def config_from_hf(hf: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Our full config for a transformers config.json dict: base defaults, their model."""
    config = base_config()
    model = model_config_from_hf(hf)
    config.model.update(model)
    config.objective = ""
    spec = models.spec_for(config.model)
    spec.update_config_from_hf(config, hf)
    if spec.kind != models.DECODER:  # the default prompts are continuations
        config.sample.prompts = ()
    return config


def hf_config_from(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A transformers config.json dict for our config (the inverse of `config_from_hf`)."""
    m = config.model
    spec = models.spec_for(m)
    common = {"model_type": spec.hf_model_type, "architectures": [spec.hf_class],
              "vocab_size": m.vocab_size}
    hf = spec.hf_config(config)
    if m.get("head"):
        hf.update(architectures=[spec.hf_head_classes[m.head]])
        if m.head == "token_classification":
            hf.update(num_labels=m.num_labels)
    return {**common, **hf}


# ---- tensors -------------------------------------------------------------------------------

def _path(keys: tuple[str, ...]) -> str:
    return "/".join(keys)


def _to_ours(tensor: Tensor, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Their array -> ours of `shape`."""
    if tensor.part is not None:
        index, count = tensor.part
        value = np.split(value, count, axis=-1)[index]
    if tensor.layout == LINEAR:
        value = value.T
    expected = math.prod(shape)
    if value.size != expected:
        raise ValueError(f"tensor {tensor.theirs} has shape {tuple(value.shape)} ({value.size} "
                         f"values); {_path(tensor.ours)} needs {shape}: the checkpoint's "
                         "config.json does not describe its weights.")
    return np.ascontiguousarray(value.reshape(shape), dtype=np.float32)


def _to_theirs(tensor: Tensor, value: np.ndarray) -> np.ndarray:
    """Our array -> theirs (one part of it for fused tensors)."""
    if tensor.layout in (LINEAR, CONV1D):
        value = value.reshape(math.prod(value.shape[:tensor.in_dims]), -1)
        return value.T if tensor.layout == LINEAR else value
    if tensor.layout == ROW:
        return value.reshape(1, -1)
    return value.reshape(-1) if value.ndim > 1 and tensor.ours[-1] == "bias" else value


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def params_from_state_dict(model_config: ml_collections.ConfigDict,
                           state: Mapping[str, np.ndarray],
                           shapes: Mapping[str, Any]) -> tuple[dict, list[str], list[str]]:
    """(params, missing, dropped): their `state` in our tree, shaped as `shapes` (our init's
    ShapeDtypeStructs). `missing` are our leaves they lack; `dropped` their unused tensors."""
    arch = model_config.arch
    spec = models.spec_for(model_config)
    prefix = spec.hf_base_prefix
    sample = ", ".join(sorted(state)[:3])
    if not any(key.startswith(prefix) for key in state):  # a headless base model
        state = {prefix + key: value for key, value in state.items()}
    table = list(tables.TABLES[arch](model_config))
    params: dict[str, Any] = {}
    missing = []
    tied = tables.TIED[arch]
    for tensor in table:
        shape = tuple(_get(shapes, tensor.ours).shape)
        key = next((k for k in (tensor.theirs, *tied.get(tensor.theirs, ())) if k in state), None)
        if key is None:
            missing.append(_path(tensor.ours))
            continue
        _set(params, tensor.ours, _to_ours(tensor, np.asarray(state[key]), shape))
    required = [path for path in missing if not path.startswith(spec.hf_optional_heads)]
    if required:
        their_tensor = next(t.theirs for t in table if _path(t.ours) == required[0])
        raise ValueError(f"the checkpoint has no tensor {their_tensor} (nor {len(required) - 1} "
                         f"other {arch} tensors); its tensors are {sample}, ...: its config.json "
                         f"(model_type {spec.hf_model_type!r}) does not describe these weights.")
    mapped = {tensor.theirs for tensor in table}
    mapped |= {alias for aliases in tied.values() for alias in aliases}
    dropped = sorted(key for key in state
                     if key not in mapped and not key.endswith(tables.BUFFERS))
    ours = {_path(tuple(k.key for k in path))
            for path, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]}
    unmapped = ours - {_path(t.ours) for t in table}
    if unmapped:  # a table bug, not a user error
        raise AssertionError(f"no transformers tensor mapped for {sorted(unmapped)}")
    return params, missing, dropped


def state_dict_from_params(config: ml_collections.ConfigDict,
                           params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Their state dict (float32 numpy, tied tensors included) for our params (per layer or
    stacked by config.model.scan_layers: the tables name the per-layer view)."""
    m = config.model
    params = unstack_layers(params)
    table = list(tables.TABLES[m.arch](m))
    state: dict[str, np.ndarray] = {}
    fused: dict[str, list] = {}
    for tensor in table:
        value = _to_theirs(tensor, np.asarray(_get(params, tensor.ours), np.float32))
        if tensor.part is None:
            state[tensor.theirs] = value
        else:
            fused.setdefault(tensor.theirs, [None] * tensor.part[1])[tensor.part[0]] = value
    for key, parts in fused.items():
        state[key] = np.concatenate(parts, axis=-1)
    for key, aliases in tables.TIED[m.arch].items():
        for alias in aliases:
            state[alias] = state[key]
    state.update(models.spec_for(m).hf_extra_tensors())
    return {key: np.ascontiguousarray(value) for key, value in state.items()}


# ---- directories ---------------------------------------------------------------------------

def read_state_dict(src_dir: str | os.PathLike, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint directory as float32 numpy arrays."""
    src = Path(src_dir)
    if (src / SAFETENSORS_FILE).exists():
        from safetensors.numpy import load_file
        return {k: v.astype(np.float32) for k, v in load_file(src / SAFETENSORS_FILE).items()}
    if (src / PICKLE_FILE).exists():
        if not allow_pickle:
            raise ValueError(f"{src / PICKLE_FILE} is a pickle, which can run arbitrary code when "
                             "read; pass --allow-pickle if you trust it, or convert it to "
                             f"{SAFETENSORS_FILE}.")
        import torch  # only for pickled checkpoints
        state = torch.load(src / PICKLE_FILE, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    sharded = sorted(p.name for p in src.glob("*.safetensors"))
    hint = (f"; sharded checkpoints ({', '.join(sharded)}) are not supported yet" if sharded
            else "")
    raise FileNotFoundError(f"{src} has neither {SAFETENSORS_FILE} nor {PICKLE_FILE}{hint}.")


def read_hf_config(src_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(src_dir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {src_dir} is not a transformers checkpoint "
                                "directory (config.json + model.safetensors).")
    return json.loads(path.read_text(encoding="utf-8"))


def import_hf(src_dir: str | os.PathLike, allow_pickle: bool = False) -> Imported:
    """Our config and numpy params for a transformers checkpoint directory."""
    hf = read_hf_config(src_dir)
    config = config_from_hf(hf)
    state = read_state_dict(src_dir, allow_pickle)
    model = models.build_model(config.model, config.model.vocab_size)
    shapes = models.param_shapes(model)
    params, missing, dropped = params_from_state_dict(config.model, state, shapes)
    return Imported(config, params, missing, dropped)


def from_transformers(hf_model: Any) -> Imported:
    """Our config and numpy params for an in-memory `transformers` model (torch needed)."""
    config = config_from_hf(hf_model.config.to_dict())
    state = {k: v.detach().float().cpu().numpy() for k, v in hf_model.state_dict().items()}
    model = models.build_model(config.model, config.model.vocab_size)
    params, missing, dropped = params_from_state_dict(config.model, state,
                                                      models.param_shapes(model))
    return Imported(config, params, missing, dropped)


def export_hf(config: ml_collections.ConfigDict, params: Mapping[str, Any],
              out_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
    """Writes config.json and model.safetensors that `from_pretrained` loads; `extra` are
    config.json keys to keep (those of an imported checkpoint)."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Their keys we do not model (token ids, task settings) pass through; ours win.
    hf = {**(extra or {}), **hf_config_from(config)}
    save_file(state_dict_from_params(config, params), out / SAFETENSORS_FILE,
              metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n",
                                     encoding="utf-8")
