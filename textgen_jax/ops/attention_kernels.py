"""The attention kernels `config.model.attention` chooses between.

'einsum': two einsums of the backend's ops around a float32 softmax, heads leading, so every
matmul of it and of its gradient is one XLA:CPU runs in the compute dtype with float32
accumulation; it applies attention dropout. 'dot_product_attention':
`jax.nn.dot_product_attention`, cuDNN's flash attention on GPUs where its dtypes and head
sizes allow, XLA's otherwise; it has no dropout. 'auto' picks per backend.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

ATTENTION_CHOICES = ("auto", "einsum", "dot_product_attention")
# 'auto' on each backend: cuDNN flash attention on GPUs; elsewhere the einsums (measured on
# XLA:CPU; on TPU jax.nn.dot_product_attention is the same XLA computation).
AUTO_ATTENTION = {"gpu": "dot_product_attention", "cuda": "dot_product_attention"}


def resolve_attention(choice: str, backend: str, dropout: bool) -> str:
    """The kernel ('einsum' | 'dot_product_attention') of `choice` on `backend` for a call
    with (`dropout`) or without active attention dropout."""
    if choice not in ATTENTION_CHOICES:
        raise ValueError(f"config.model.attention={choice!r}: use one of {ATTENTION_CHOICES}.")
    if choice == "auto":
        return "einsum" if dropout else AUTO_ATTENTION.get(backend, "einsum")
    if choice == "dot_product_attention" and dropout:
        raise ValueError(
            "config.model.attention='dot_product_attention' has no attention dropout, but "
            "config.model.attention_dropout > 0 applies in training: set attention_dropout=0, "
            "or attention='auto' or 'einsum'.")
    return choice


def einsum_attention(ops: ModuleType, query: Array, key: Array, value: Array, mask: Array,
                     dropout: Callable[[Array], Array] | None) -> Array:
    """softmax(query key^T) value with the backend's einsums: query [batch, heads, q_len, kv]
    (already scaled), key and value [batch, heads, k_len, kv], mask [batch, 1, q_len, k_len]
    (True = attend) -> [batch, heads, q_len, kv] in query's dtype; `dropout` (None: none) on
    the probabilities."""
    scores = ops.einsum("bhqd,bhkd->bhqk", query, key, out_dtype=jnp.float32)
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(query.dtype)
    if dropout is not None:
        probs = dropout(probs)
    return ops.einsum("bhqk,bhkd->bhqd", probs, value)


def dot_product_attention(query: Array, key: Array, value: Array, mask: Array,
                          backend: str) -> Array:
    """`einsum_attention` (without dropout) by `jax.nn.dot_product_attention`, same shapes:
    cuDNN on GPUs for bfloat16/float16 and head sizes it takes (multiples of 8 up to 128)."""
    head_dim = query.shape[-1]
    cudnn = (backend in ("gpu", "cuda") and query.dtype in (jnp.bfloat16, jnp.float16)
             and head_dim % 8 == 0 and head_dim <= 128)
    out = jax.nn.dot_product_attention(
        jnp.swapaxes(query, 1, 2), jnp.swapaxes(key, 1, 2), jnp.swapaxes(value, 1, 2),
        mask=mask, scale=1.0, implementation="cudnn" if cudnn else None)
    return jnp.swapaxes(out, 1, 2)
