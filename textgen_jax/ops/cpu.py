"""XLA:CPU numerics: matmuls with hand-written gradients, and the kernel layouts of decoding's
few-row products chosen by what this CPU measures (ops.calibration; see git log -S FEW_ROWS).

Forward and backward matmuls take operands in the compute dtype and accumulate in float32:
with bfloat16 this is XLA:CPU's fast path (AMX) for the backward pass too, where JAX's own
gradient of a float32-accumulated dot would multiply float32 operands.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from textgen_jax.ops import calibration
from textgen_jax.ops.xla import dot, kernel_axes, precision

Array = jax.Array

# Products of at most this many rows of x (a decoding step's matrix-vector products, batch x
# beams rows) are the regime whose kernel layouts are measured. Three layouts compute
# x [rows, in] times a weight matrix into [rows, out]:
#   "kernel"      the kernel as stored, [in, out];
#   "transposed"  a transposed copy [out, in], contracted on its second axis;
#   "out_rows"    the transposed copy into an [out, rows] result, then transposed (on one
#                 AMD EPYC: BART's output layer on 4 rows in 5.3 ms instead of 9.7 ms).
FEW_ROWS = 32
ROW_BUCKETS = (1, 8, FEW_ROWS)
# A layout must beat another by this fraction to be chosen over it: timing noise is smaller.
LAYOUT_MARGIN = 0.03
# Decoding reads transposed copies of the dense kernels only for a model whose weights take
# at most this many bytes: a base-size model's, not a 1.5B one's (the copies would not fit
# beside it in a notebook's memory).
TRANSPOSED_KERNEL_BYTES = 2 << 30


def _bucket(rows: int) -> int:
    return next(bucket for bucket in ROW_BUCKETS if rows <= bucket)


def choose_layouts(measurement: dict) -> dict[int, dict[str, object]]:
    """Per row bucket: `transposed_copies` (whether decoding should read [out, in] copies of
    the dense kernels: a transposed layout beats the stored one by LAYOUT_MARGIN) and
    `out_rows` (whether a product with an [out, in] kernel, the output layer's embedding
    among them, should produce [out, rows]: it beats [rows, out] by LAYOUT_MARGIN), from
    `measurement`'s seconds {"<rows>": {"kernel", "transposed", "out_rows"}}."""
    choices = {}
    for bucket in ROW_BUCKETS:
        seconds = measurement[str(bucket)]
        out_rows = seconds["out_rows"] * (1 + LAYOUT_MARGIN) < seconds["transposed"]
        best_transposed = seconds["out_rows"] if out_rows else seconds["transposed"]
        choices[bucket] = {"out_rows": out_rows, "transposed_copies":
                           best_transposed * (1 + LAYOUT_MARGIN) < seconds["kernel"]}
    return choices


@functools.cache
def layouts() -> dict[int, dict[str, object]]:
    """This CPU's layout choices (choose_layouts of its cached measurement)."""
    return choose_layouts(calibration.measured("decode_matvec_layouts", _time_layouts))


def prefers_transposed_kernels(rows: int, param_bytes: int) -> bool:
    """Whether decoding steps of `rows` rows (batch x beams) of a model of `param_bytes`
    should read transposed kernel copies (layers.transposed_kernels): as measured here."""
    if rows > FEW_ROWS or param_bytes > TRANSPOSED_KERNEL_BYTES:
        return False
    return bool(layouts()[_bucket(rows)]["transposed_copies"])


def _time_layouts(layers: int = 32, width: int = 1024) -> dict:
    """Seconds of a chain of `layers` products of [rows, width] by width x width float32
    matrices (128 MiB: more than a CPU's caches, as a model's weights are) in each layout,
    for each row bucket."""
    weights = jax.random.normal(jax.random.key(0), (layers, width, width)) / width ** 0.5

    def chain(layout: str, h: Array, weights: Array) -> Array:
        def product(h, w):
            if layout == "kernel":
                return dot(h, w, (1,), (0,)), None
            if layout == "transposed":
                return dot(h, w, (1,), (1,)), None
            return jax.lax.optimization_barrier(dot(w, h, (1,), (1,))).T, None
        return jax.lax.scan(product, h, weights)[0]

    result = {}
    for rows in ROW_BUCKETS:
        h = jax.random.normal(jax.random.key(rows), (rows, width))
        runs = {layout: functools.partial(
                    lambda f, h: jax.block_until_ready(f(h, weights)),
                    jax.jit(functools.partial(chain, layout)), h)
                for layout in ("kernel", "transposed", "out_rows")}
        result[str(rows)] = calibration.seconds(runs)
    return result


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _matmul(x: Array, kernel: Array, contract: int, kernel_transposed: bool,
            out_dtype: jnp.dtype) -> Array:
    return _matmul_fwd(x, kernel, contract, kernel_transposed, out_dtype)[0]


def _matmul_fwd(x, kernel, contract, kernel_transposed, out_dtype):
    kernel_dtype = jnp.zeros((), kernel.dtype)
    kernel = kernel.astype(x.dtype)
    contracted, free = kernel_axes(kernel, contract, kernel_transposed)
    x_contracted = range(x.ndim - contract, x.ndim)
    rows = math.prod(x.shape[:x.ndim - contract])
    if kernel_transposed and rows <= FEW_ROWS and layouts()[_bucket(rows)]["out_rows"]:
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
