"""XLA:CPU numerics: matmuls with hand-written gradients and a few-rows kernel layout, each
measured faster on XLA:CPU than what XLA makes of the plain ops (see git log -S FEW_ROWS).

Forward and backward matmuls take operands in the compute dtype and accumulate in float32:
with bfloat16 this is XLA:CPU's fast path (AMX) for the backward pass too, where JAX's own
gradient of a float32-accumulated dot would multiply float32 operands.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from textgen_jax.ops.xla import dot, kernel_axes, precision

Array = jax.Array

# At most this many rows of x is a decoding step's matrix-vector product, for which XLA:CPU
# reads a transposed kernel [out, in] faster into an [out, rows] result than into [rows, out]:
# GPT-2's and BART's output layer on 4 rows, 5.3 ms instead of 9.7 ms.
FEW_ROWS = 32
# Decoding reads transposed copies of the dense kernels of a model whose weights take at most
# this many bytes: a base-size model's, not a 1.5B one's (the copies would not fit beside it
# in a notebook's memory). Whole generate calls are 5-11% faster with them (bench/README.md).
TRANSPOSED_KERNEL_BYTES = 2 << 30


def prefers_transposed_kernels(rows: int, param_bytes: int) -> bool:
    """Whether decoding steps of `rows` rows (batch x beams) of a model of `param_bytes`
    should read transposed kernel copies (layers.transposed_kernels)."""
    return rows <= FEW_ROWS and param_bytes <= TRANSPOSED_KERNEL_BYTES


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _matmul(x: Array, kernel: Array, contract: int, kernel_transposed: bool,
            out_dtype: jnp.dtype) -> Array:
    return _matmul_fwd(x, kernel, contract, kernel_transposed, out_dtype)[0]


def _matmul_fwd(x, kernel, contract, kernel_transposed, out_dtype):
    kernel_dtype = jnp.zeros((), kernel.dtype)
    kernel = kernel.astype(x.dtype)
    contracted, free = kernel_axes(kernel, contract, kernel_transposed)
    x_contracted = range(x.ndim - contract, x.ndim)
    if kernel_transposed and math.prod(x.shape[:x.ndim - contract]) <= FEW_ROWS:
        # The barrier keeps XLA from folding the transpose back into the dot's layout.
        y = jax.lax.optimization_barrier(dot(kernel, x, contracted, x_contracted))
        y = jnp.moveaxis(y, tuple(range(len(free))), tuple(range(x.ndim - contract, y.ndim)))
    else:
        y = dot(x, kernel, x_contracted, contracted)
    return y.astype(out_dtype), (x, kernel, kernel_dtype)


def _matmul_bwd(contract, kernel_transposed, out_dtype, residuals, g):
    x, kernel, kernel_dtype = residuals
    g = g.astype(x.dtype)
    batch = range(x.ndim - contract)
    _, free = kernel_axes(kernel, contract, kernel_transposed)
    grad_x = dot(g, kernel, range(len(batch), g.ndim), free)
    # The kernel's gradient is produced directly in the kernel's layout: a transpose after the
    # matmul would leave XLA:CPU a bfloat16 dot it cannot run ("DotThunk: BF16 x BF16 = F32").
    grad_kernel = dot(g, x, batch, batch) if kernel_transposed else dot(x, g, batch, batch)
    return grad_x.astype(x.dtype), grad_kernel.astype(kernel_dtype.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(x: Array, kernel: Array, contract: int = 1, kernel_transposed: bool = False,
           out_dtype: jnp.dtype | None = None) -> Array:
    """x [..., in...] times kernel [in..., out...] (or [out..., in...] if `kernel_transposed`)
    over the `contract` in-axes, in x's dtype -> [..., out...] in `out_dtype` (default x's);
    the kernel's gradient comes back in the kernel's own dtype (float32)."""
    return _matmul(x, kernel, contract, kernel_transposed, jnp.dtype(out_dtype or x.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _einsum(spec: str, a: Array, b: Array, out_dtype: jnp.dtype) -> Array:
    return jnp.einsum(spec, a, b, precision=precision(a.dtype),
                      preferred_element_type=jnp.float32).astype(out_dtype)


def _einsum_fwd(spec, a, b, out_dtype):
    return _einsum(spec, a, b, out_dtype), (a, b)


def _einsum_bwd(spec, out_dtype, residuals, g):
    a, b = residuals
    inputs, out = spec.split("->")
    a_spec, b_spec = inputs.split(",")
    g = g.astype(a.dtype)
    grad_a = jnp.einsum(f"{out},{b_spec}->{a_spec}", g, b, precision=precision(a.dtype),
                        preferred_element_type=jnp.float32)
    grad_b = jnp.einsum(f"{out},{a_spec}->{b_spec}", g, a, precision=precision(a.dtype),
                        preferred_element_type=jnp.float32)
    return grad_a.astype(a.dtype), grad_b.astype(b.dtype)


_einsum.defvjp(_einsum_fwd, _einsum_bwd)


def einsum(spec: str, a: Array, b: Array, out_dtype: jnp.dtype | None = None) -> Array:
    """jnp.einsum(spec, a, b) of two compute-dtype activations, accumulated in float32, cast to
    `out_dtype` (default a's dtype); the backward matmuls also take compute-dtype operands."""
    return _einsum(spec, a, b, jnp.dtype(out_dtype or a.dtype))


@jax.custom_vjp
def add_bias(y: Array, bias: Array) -> Array:
    """y [..., *bias.shape] + bias, in y's dtype; bias's gradient comes back in its own dtype.

    The gradient sums over the leading axes as a matmul with a vector of ones: XLA:CPU runs a
    large reduction on one core, a matmul on all of them.
    """
    return y + bias.astype(y.dtype)


def _add_bias_fwd(y, bias):
    return add_bias(y, bias), bias


def _add_bias_bwd(bias, g):
    batch = range(g.ndim - bias.ndim)
    ones = jnp.ones(g.shape[:len(batch)], g.dtype)
    return g, dot(ones, g, batch, batch).astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)
