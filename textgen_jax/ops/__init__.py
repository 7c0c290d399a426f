"""Backend numerics in one place, chosen once per backend: the model blocks call these.

On XLA:CPU (ops/cpu.py) matmuls carry hand-written gradients and a few-rows kernel layout
measured faster there; on GPU and TPU (ops/xla.py) they are plain `lax.dot_general`s so XLA
sees and fuses every dot. Both give compute-dtype operands float32 accumulation. The choice
is made on first use, not at import, so `jax.distributed.initialize()` can run first.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Callable

import jax
import jax.numpy as jnp

from textgen_jax.ops import attention_kernels as _attention
from textgen_jax.ops import cpu, xla
from textgen_jax.ops.attention_kernels import ATTENTION_CHOICES

Array = jax.Array

__all__ = ["ATTENTION_CHOICES", "add_bias", "attention", "backend_ops", "einsum", "matmul",
           "prefers_transposed_kernels"]


@functools.cache
def _ops_for(backend: str) -> ModuleType:
    return cpu if backend == "cpu" else xla


def backend_ops() -> ModuleType:
    """The numerics module of the default backend: ops.cpu on XLA:CPU, ops.xla elsewhere."""
    return _ops_for(jax.default_backend())


def matmul(x: Array, kernel: Array, contract: int = 1, kernel_transposed: bool = False,
           out_dtype: jnp.dtype | None = None) -> Array:
    """x [..., in...] times kernel [in..., out...] (or [out..., in...] if `kernel_transposed`)
    over the `contract` in-axes, operands in x's dtype, accumulated in float32 -> [..., out...]
    in `out_dtype` (default x's dtype); the kernel's gradient in the kernel's dtype."""
    return backend_ops().matmul(x, kernel, contract, kernel_transposed, out_dtype)


def einsum(spec: str, a: Array, b: Array, out_dtype: jnp.dtype | None = None) -> Array:
    """jnp.einsum(spec, a, b) of two compute-dtype activations, accumulated in float32, cast to
    `out_dtype` (default a's dtype)."""
    return backend_ops().einsum(spec, a, b, out_dtype)


def add_bias(y: Array, bias: Array) -> Array:
    """y [..., *bias.shape] + bias in y's dtype; bias's gradient in its own dtype."""
    return backend_ops().add_bias(y, bias)


def prefers_transposed_kernels(rows: int, param_bytes: int) -> bool:
    """Whether decoding steps of `rows` rows (batch x beams) of a model whose parameters take
    `param_bytes` should read transposed kernel copies (models.layers.transposed_kernels)."""
    return backend_ops().prefers_transposed_kernels(rows, param_bytes)


def attention(query: Array, key: Array, value: Array, mask: Array, *, choice: str,
              dropout: Callable[[Array], Array] | None = None) -> Array:
    """softmax(query key^T) value: query [batch, heads, q_len, kv] (already scaled), key and
    value [batch, heads, k_len, kv], mask [batch, 1, q_len, k_len] (True = attend) ->
    [batch, heads, q_len, kv] in query's dtype. `choice` is config.model.attention;
    `dropout`, the active attention dropout (None: none), acts on the probabilities."""
    backend = jax.default_backend()
    if _attention.resolve_attention(choice, backend, dropout is not None) == "einsum":
        return _attention.einsum_attention(backend_ops(), query, key, value, mask, dropout)
    return _attention.dot_product_attention(query, key, value, mask, backend)
