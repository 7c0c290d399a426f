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

from textgen_jax.config import base_config
from textgen_jax.convert import tables
from textgen_jax.convert.tables import CONV1D, LINEAR, ROW, Tensor

SAFETENSORS_FILE = "model.safetensors"
PICKLE_FILE = "pytorch_model.bin"

# model_type -> (our arch, the transformers class we import from and export to).
SUPPORTED = {
    "gpt2": ("gpt2", "GPT2LMHeadModel"),
    "openai-gpt": ("gpt", "OpenAIGPTLMHeadModel"),
    "bert": ("bert", "BertForPreTraining"),
    "xlm": ("xlm", "XLMWithLMHeadModel"),
    "bart": ("bart", "BartForConditionalGeneration"),
}
_MODEL_TYPE = {arch: model_type for model_type, (arch, _) in SUPPORTED.items()}
# The base-model prefix of each transformers model, absent from headless checkpoints.
_BASE_PREFIX = {"gpt2": "transformer.", "gpt": "transformer.", "bert": "bert.",
                "xlm": "transformer.", "bart": "model."}
# Heads of ours that a checkpoint of another head class lacks (initialised, and reported).
_OPTIONAL_HEADS = {"bert": ("pooler/", "nsp/", "mlm/", "classifier/", "qa_outputs/"),
                   "xlm": ("output_bias",)}
# transformers' classes of our per-token heads (config.model.head, models/heads.py).
_HEAD_CLASSES = {
    "bert": {"token_classification": "BertForTokenClassification",
             "question_answering": "BertForQuestionAnswering"},
    "xlm": {"token_classification": "XLMForTokenClassification",
            "question_answering": "XLMForQuestionAnsweringSimple"},
}
# transformers activation names -> ours (openai-gpt's 'gelu' is the tanh approximation).
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


@dataclasses.dataclass
class Imported:
    config: ml_collections.ConfigDict  # our config, model section from theirs
    params: dict[str, Any]  # numpy arrays in our tree (no head they lack: see `missing`)
    missing: list[str]  # our parameters they do not have ('/'-joined paths)
    dropped: list[str]  # their tensors we have no place for


# ---- configs -------------------------------------------------------------------------------

def _activation(name: str, model_type: str) -> str:
    if model_type == "openai-gpt" and name == "gelu":
        return "gelu_tanh"  # transformers' OpenAIGPT maps 'gelu' to gelu_new
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation {name!r} of the {model_type} checkpoint is not supported; "
                         f"supported: {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[name]


def _require(hf: Mapping[str, Any], key: str, expected: Any, why: str) -> None:
    if hf.get(key, expected) != expected:
        raise ValueError(f"config.json has {key}={hf[key]!r}; only {expected!r} is supported "
                         f"({why}).")


def model_config_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
    """Our config.model leaves from a transformers config.json dict."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED:
        raise ValueError(f"model_type={model_type!r} is not supported; supported model types: "
                         f"{', '.join(sorted(SUPPORTED))}.")
    arch = SUPPORTED[model_type][0]
    if model_type == "gpt2":
        d = hf["n_embd"]
        _require(hf, "scale_attn_by_inverse_layer_idx", False, "standard GPT-2 attention")
        _require(hf, "reorder_and_upcast_attn", False, "standard GPT-2 attention")
        model = dict(num_layers=hf["n_layer"], d_model=d, num_heads=hf["n_head"],
                     d_ff=hf.get("n_inner") or 4 * d, max_len=hf["n_positions"],
                     dropout=hf.get("resid_pdrop", 0.1), attention_dropout=hf.get("attn_pdrop", 0.1),
                     layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                     init_std=hf.get("initializer_range", 0.02),
                     activation=_activation(hf.get("activation_function", "gelu_new"), model_type))
    elif model_type == "openai-gpt":
        d = hf["n_embd"]
        model = dict(num_layers=hf["n_layer"], d_model=d, num_heads=hf["n_head"], d_ff=4 * d,
                     max_len=hf["n_positions"], dropout=hf.get("resid_pdrop", 0.1),
                     attention_dropout=hf.get("attn_pdrop", 0.1),
                     layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                     init_std=hf.get("initializer_range", 0.02),
                     activation=_activation(hf.get("afn", "gelu"), model_type))
    elif model_type == "bert":
        _require(hf, "position_embedding_type", "absolute", "BERT's learned positions")
        _require(hf, "type_vocab_size", 2, "segments A and B")
        model = dict(num_layers=hf["num_hidden_layers"], d_model=hf["hidden_size"],
                     num_heads=hf["num_attention_heads"], d_ff=hf["intermediate_size"],
                     max_len=hf["max_position_embeddings"],
                     dropout=hf.get("hidden_dropout_prob", 0.1),
                     attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                     layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                     init_std=hf.get("initializer_range", 0.02),
                     activation=_activation(hf.get("hidden_act", "gelu"), model_type),
                     num_labels=_num_labels(hf) if _is_classifier(hf) else 0)
    elif model_type == "xlm":
        d = hf["emb_dim"]
        _require(hf, "asm", False, "a full softmax output layer")
        num_languages = hf.get("n_langs", 1)
        if num_languages > 1 and not hf.get("use_lang_emb", True):
            raise ValueError(f"config.json has n_langs={num_languages} with use_lang_emb=False; "
                             "only XLMs with language embeddings (or one language) are supported.")
        model = dict(num_layers=hf["n_layers"], d_model=d, num_heads=hf["n_heads"], d_ff=4 * d,
                     max_len=hf["max_position_embeddings"], dropout=hf.get("dropout", 0.1),
                     attention_dropout=hf.get("attention_dropout", 0.1),
                     layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                     init_std=hf.get("embed_init_std", d ** -0.5),
                     activation="gelu" if hf.get("gelu_activation", True) else "relu",
                     num_languages=num_languages,
                     sinusoidal_positions=bool(hf.get("sinusoidal_embeddings", False)),
                     causal=bool(hf.get("causal", False)))
        if model["activation"] == "relu":
            raise ValueError("config.json has gelu_activation=False (ReLU); only GELU XLMs are "
                             "supported.")
    else:  # bart
        for ours, theirs in (("encoder_ffn_dim", "decoder_ffn_dim"),
                             ("encoder_attention_heads", "decoder_attention_heads")):
            if hf[ours] != hf[theirs]:
                raise ValueError(f"config.json has {ours}={hf[ours]} and {theirs}={hf[theirs]}; "
                                 "only equal encoder and decoder widths are supported.")
        _require(hf, "add_final_layer_norm", False, "BART's post-LN stacks (not mBART)")
        _require(hf, "normalize_before", False, "BART's post-LN stacks (not mBART)")
        model = dict(num_layers=hf["encoder_layers"], num_decoder_layers=hf["decoder_layers"],
                     d_model=hf["d_model"], num_heads=hf["encoder_attention_heads"],
                     d_ff=hf["encoder_ffn_dim"], max_len=hf["max_position_embeddings"],
                     dropout=hf.get("dropout", 0.1),
                     attention_dropout=hf.get("attention_dropout", 0.0),
                     layer_norm_eps=1e-5, init_std=hf.get("init_std", 0.02),
                     activation=_activation(hf.get("activation_function", "gelu"), model_type),
                     scale_embedding=bool(hf.get("scale_embedding", False)))
    head = _head(hf, arch)
    if head:
        model.update(head=head,
                     num_labels=_num_labels(hf) if head == "token_classification" else 0)
    return dict(arch=arch, vocab_size=hf["vocab_size"], **model)


def _head(hf: Mapping[str, Any], arch: str) -> str:
    """The config.model.head of a checkpoint of one of `arch`'s head classes, else ''."""
    heads = {name: head for head, name in _HEAD_CLASSES.get(arch, {}).items()}
    return next((heads[a] for a in hf.get("architectures") or () if a in heads), "")


def _is_classifier(hf: Mapping[str, Any]) -> bool:
    return any(a.endswith("ForSequenceClassification") for a in hf.get("architectures") or ())


def _num_labels(hf: Mapping[str, Any]) -> int:
    if "id2label" in hf:
        return len(hf["id2label"])
    return hf.get("num_labels", 2)


def config_from_hf(hf: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Our full config for a transformers config.json dict: base defaults, their model."""
    config = base_config()
    model = model_config_from_hf(hf)
    config.model.update(model)
    config.objective = ""
    if model["arch"] == "xlm" and "lang2id" in hf and model["num_languages"] > 1:
        languages = tuple(sorted(hf["lang2id"], key=hf["lang2id"].get))
        config.data.languages = config.tokenizer.languages = languages
    if model["arch"] in ("bert", "xlm", "bart"):
        config.sample.prompts = ()
    return config


def hf_config_from(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A transformers config.json dict for our config (the inverse of `config_from_hf`)."""
    m = config.model
    model_type = _MODEL_TYPE[m.arch]
    common = {"model_type": model_type, "architectures": [SUPPORTED[model_type][1]],
              "vocab_size": m.vocab_size}
    if m.arch in ("gpt2", "gpt"):
        hf = dict(n_layer=m.num_layers, n_embd=m.d_model, n_head=m.num_heads,
                  n_positions=m.max_len, resid_pdrop=m.dropout, embd_pdrop=m.dropout,
                  attn_pdrop=m.attention_dropout, layer_norm_epsilon=m.layer_norm_eps,
                  initializer_range=m.init_std)
        if m.arch == "gpt2":
            hf.update(n_inner=m.d_ff, activation_function="gelu_new")
        else:
            _check_export(m.d_ff == 4 * m.d_model, f"config.model.d_ff={m.d_ff}",
                          "openai-gpt's ffn is 4 * d_model")
            hf.update(afn="gelu")
        _check_export(m.activation == "gelu_tanh", f"config.model.activation={m.activation!r}",
                      "GPT and GPT-2 use the tanh GELU")
    elif m.arch == "bert":
        hf = dict(num_hidden_layers=m.num_layers, hidden_size=m.d_model,
                  num_attention_heads=m.num_heads, intermediate_size=m.d_ff,
                  max_position_embeddings=m.max_len, hidden_dropout_prob=m.dropout,
                  attention_probs_dropout_prob=m.attention_dropout,
                  layer_norm_eps=m.layer_norm_eps, initializer_range=m.init_std,
                  hidden_act=m.activation.replace("gelu_tanh", "gelu_new"), type_vocab_size=2)
        if m.num_labels:
            common["architectures"] = ["BertForSequenceClassification"]
            hf.update(num_labels=m.num_labels)  # an imported id2label of that size is kept
    elif m.arch == "xlm":
        _check_export(m.d_ff == 4 * m.d_model, f"config.model.d_ff={m.d_ff}",
                      "transformers' XLM has an ffn of 4 * emb_dim")
        hf = dict(n_layers=m.num_layers, emb_dim=m.d_model, n_heads=m.num_heads,
                  max_position_embeddings=m.max_len, dropout=m.dropout,
                  attention_dropout=m.attention_dropout, layer_norm_eps=m.layer_norm_eps,
                  embed_init_std=m.init_std, gelu_activation=True,
                  sinusoidal_embeddings=bool(m.sinusoidal_positions), causal=bool(m.causal),
                  n_langs=m.num_languages, use_lang_emb=True, asm=False)
        languages = tuple(config.data.languages)
        if len(languages) == m.num_languages:
            hf.update(lang2id={lang: i for i, lang in enumerate(languages)},
                      id2lang={i: lang for i, lang in enumerate(languages)})
    else:  # bart
        hf = dict(encoder_layers=m.num_layers, decoder_layers=m.num_decoder_layers or m.num_layers,
                  d_model=m.d_model, encoder_attention_heads=m.num_heads,
                  decoder_attention_heads=m.num_heads, encoder_ffn_dim=m.d_ff,
                  decoder_ffn_dim=m.d_ff, max_position_embeddings=m.max_len,
                  dropout=m.dropout, attention_dropout=m.attention_dropout,
                  activation_dropout=0.0, init_std=m.init_std,
                  activation_function=m.activation.replace("gelu_tanh", "gelu_new"),
                  scale_embedding=bool(m.scale_embedding), is_encoder_decoder=True)
    if m.get("head"):
        common["architectures"] = [_HEAD_CLASSES[m.arch][m.head]]
        if m.head == "token_classification":
            hf.update(num_labels=m.num_labels)
    return {**common, **hf}


def _check_export(ok: bool, value: str, why: str) -> None:
    if not ok:
        raise ValueError(f"{value} cannot be exported to transformers: {why}.")


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


def params_from_state_dict(model_config: Mapping[str, Any], state: Mapping[str, np.ndarray],
                           shapes: Mapping[str, Any]) -> tuple[dict, list[str], list[str]]:
    """(params, missing, dropped): their `state` in our tree, shaped as `shapes` (our init's
    ShapeDtypeStructs). `missing` are our leaves they lack; `dropped` their unused tensors."""
    arch = model_config["arch"]
    prefix = _BASE_PREFIX[arch]
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
    required = [path for path in missing if not path.startswith(_OPTIONAL_HEADS.get(arch, ()))]
    if required:
        their_tensor = next(t.theirs for t in table if _path(t.ours) == required[0])
        raise ValueError(f"the checkpoint has no tensor {their_tensor} (nor {len(required) - 1} "
                         f"other {arch} tensors); its tensors are {sample}, ...: its config.json "
                         f"(model_type {_MODEL_TYPE[arch]!r}) does not describe these weights.")
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
    from textgen_jax.models.layers import unstack_layers

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
    if m.arch == "xlm" and m.sinusoidal_positions:
        from textgen_jax.models.xlm import sinusoidal_position_table
        state["transformer.position_embeddings.weight"] = sinusoidal_position_table(
            m.max_len, m.d_model)
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
    from textgen_jax import models  # models import jax/flax; keep this module light

    hf = read_hf_config(src_dir)
    config = config_from_hf(hf)
    state = read_state_dict(src_dir, allow_pickle)
    model = models.build_model(config.model, config.model.vocab_size)
    shapes = models.param_shapes(model)
    params, missing, dropped = params_from_state_dict(config.model, state, shapes)
    return Imported(config, params, missing, dropped)


def from_transformers(hf_model: Any) -> Imported:
    """Our config and numpy params for an in-memory `transformers` model (torch needed)."""
    from textgen_jax import models

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
