"""Plain numerics for GPU and TPU: every dot is a `lax.dot_general` XLA sees and fuses.

Matmuls take operands in the compute dtype and accumulate in float32
(`preferred_element_type`); float32 operands multiply at full precision (GPUs would otherwise
round them to TF32, ~1e-3 off the reference implementations). Gradients are JAX's own.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


def precision(dtype: jnp.dtype) -> jax.lax.Precision:
    """HIGHEST for float32 operands: a float32 model stays float32 (exact against PyTorch,
    which keeps TF32 off by default) on GPUs and TPUs; DEFAULT for the compute dtypes."""
    return jax.lax.Precision.HIGHEST if dtype == jnp.float32 else jax.lax.Precision.DEFAULT


def dot(a: Array, b: Array, a_axes: Sequence[int], b_axes: Sequence[int]) -> Array:
    """Contracts `a_axes` of a with `b_axes` of b (same dtype), accumulated in float32:
    result [a's free axes..., b's free axes...]."""
    return jax.lax.dot_general(
        a, b, ((tuple(a_axes), tuple(b_axes)), ((), ())), precision=precision(a.dtype),
        preferred_element_type=jnp.float32)


def kernel_axes(kernel: Array, contract: int, kernel_transposed: bool) -> tuple[range, range]:
    """(contracted, free) axes of a kernel [in..., out...] or, transposed, [out..., in...]."""
    if kernel_transposed:
        return range(kernel.ndim - contract, kernel.ndim), range(kernel.ndim - contract)
    return range(contract), range(contract, kernel.ndim)


def matmul(x: Array, kernel: Array, contract: int = 1, kernel_transposed: bool = False,
           out_dtype: jnp.dtype | None = None) -> Array:
    """x [..., in...] times kernel [in..., out...] (or [out..., in...] if `kernel_transposed`)
    over the `contract` in-axes, in x's dtype -> [..., out...] in `out_dtype` (default x's)."""
    contracted, _ = kernel_axes(kernel, contract, kernel_transposed)
    y = dot(x, kernel.astype(x.dtype), range(x.ndim - contract, x.ndim), contracted)
    return y.astype(out_dtype or x.dtype)


def einsum(spec: str, a: Array, b: Array, out_dtype: jnp.dtype | None = None) -> Array:
    """jnp.einsum(spec, a, b) of two compute-dtype activations, accumulated in float32, cast to
    `out_dtype` (default a's dtype)."""
    return jnp.einsum(spec, a, b, precision=precision(a.dtype),
                      preferred_element_type=jnp.float32).astype(out_dtype or a.dtype)


def add_bias(y: Array, bias: Array) -> Array:
    """y [..., *bias.shape] + bias, in y's dtype."""
    return y + bias.astype(y.dtype)


def prefers_transposed_kernels(rows: int, param_bytes: int) -> bool:
    """Whether decoding steps of `rows` rows should read transposed kernel copies: never here
    (XLA picks the dot layouts itself)."""
    del rows, param_bytes
    return False
