"""Helpers the architecture specs share to read and write Hugging Face config.json dicts
(`ArchitectureSpec.model_config_from_hf` and `hf_config`; convert/huggingface.py calls them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# transformers activation names -> ours (openai-gpt's 'gelu' is the tanh approximation).
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def activation_from_hf(name: str, model_type: str) -> str:
    """Our config.model.activation for their activation `name`; ValueError when unsupported."""
    if model_type == "openai-gpt" and name == "gelu":
        return "gelu_tanh"  # transformers' OpenAIGPT maps 'gelu' to gelu_new
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} of the {model_type} checkpoint is not supported; "
                         f"supported: {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def activation_to_hf(activation: str) -> str:
    """Their activation name for our config.model.activation."""
    return activation.replace("gelu_tanh", "gelu_new")


def require(hf: Mapping[str, Any], key: str, expected: Any, why: str) -> None:
    """ValueError unless config.json's `key` (when present) is `expected`."""
    if hf.get(key, expected) != expected:
        raise ValueError(f"config.json has {key}={hf[key]!r}; only {expected!r} is supported "
                         f"({why}).")


def is_classifier(hf: Mapping[str, Any]) -> bool:
    """Whether config.json names a *ForSequenceClassification class."""
    return any(a.endswith("ForSequenceClassification") for a in hf.get("architectures") or ())


def num_labels(hf: Mapping[str, Any]) -> int:
    """The number of labels of a classifier's config.json."""
    if "id2label" in hf:
        return len(hf["id2label"])
    return hf.get("num_labels", 2)


def check_export(ok: bool, value: str, why: str) -> None:
    """ValueError naming `value` when our config cannot be written as theirs."""
    if not ok:
        raise ValueError(f"{value} cannot be exported to transformers: {why}.")
