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
import numpy as np

from textgen_jax.ops import attention_kernels as _attention
from textgen_jax.ops import calibration, cpu, xla
from textgen_jax.ops.attention_kernels import ATTENTION_CHOICES

Array = jax.Array

__all__ = ["ATTENTION_CHOICES", "DTYPE_CHOICES", "add_bias", "attention", "backend_ops",
           "compute_dtype", "einsum", "matmul", "prefers_transposed_kernels"]

# config.model.dtype: "auto" is bfloat16 on GPUs and TPUs, and on a CPU the faster of the two.
DTYPE_CHOICES = ("auto", "float32", "bfloat16")
# bfloat16 is chosen on a CPU only when it is at least this much faster than float32: its
# rounding costs accuracy, so a tie goes to float32.
BFLOAT16_MIN_SPEEDUP = 1.1


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


def compute_dtype(name: str) -> str:
    """config.model.dtype resolved: "float32" or "bfloat16" as named; "auto" -> bfloat16 on
    GPUs and TPUs, on a CPU the dtype a measured training block runs faster in (choose_dtype)."""
    if name not in DTYPE_CHOICES:
        raise ValueError(f"config.model.dtype={name!r}: use one of {', '.join(DTYPE_CHOICES)}.")
    return _auto_dtype()[0] if name == "auto" else name


def auto_dtype_reason() -> str:
    """One line on what "auto" chose here and why, for the training log."""
    return _auto_dtype()[1]


def choose_dtype(measurement: dict) -> str:
    """bfloat16 when the measured block ran at least BFLOAT16_MIN_SPEEDUP faster in it than
    in float32; else float32."""
    speedup = measurement["float32_s"] / measurement["bfloat16_s"]
    return "bfloat16" if speedup >= BFLOAT16_MIN_SPEEDUP else "float32"


@functools.cache
def _auto_dtype() -> tuple[str, str]:
    if jax.default_backend() != "cpu":
        return "bfloat16", f"config.model.dtype=auto: bfloat16 on {jax.default_backend()}"
    measurement = calibration.measured("train_block_dtype", _time_train_block)
    choice = choose_dtype(measurement)
    if jax.process_count() > 1:  # every process must compile the same program: process 0's
        from jax.experimental import multihost_utils
        bf16 = multihost_utils.broadcast_one_to_all(np.int32(choice == "bfloat16"))
        choice = "bfloat16" if int(bf16) else "float32"
    speedup = measurement["float32_s"] / measurement["bfloat16_s"]
    return choice, (f"config.model.dtype=auto: {choice} (a training block on this CPU runs "
                    f"{speedup:.2f}x as fast in bfloat16 as in float32; bfloat16 from "
                    f"{BFLOAT16_MIN_SPEEDUP}x; {'cached in' if measurement['cached'] else 'measured, saved to'} "
                    f"{calibration.cache_path()})")


def _time_train_block() -> dict:
    """Seconds of a GPT-2-like MLP block's forward and backward pass (layer norm, two dense
    layers with GELU, 1024 tokens of width 256, ffn 1024: ~3 GFLOP) in each compute dtype."""
    def loss(params, x, dtype):
        h = x.astype(dtype)
        h = (h - h.mean(-1, keepdims=True)) * jax.lax.rsqrt(h.var(-1, keepdims=True) + 1e-5)
        h = jax.nn.gelu(add_bias(matmul(h, params["w1"]), params["b1"]))
        h = add_bias(matmul(h, params["w2"]), params["b2"])
        return jnp.mean(jnp.square(h.astype(jnp.float32)))

    keys = jax.random.split(jax.random.key(0), 3)
    params = {"w1": jax.random.normal(keys[0], (256, 1024)) * 0.02, "b1": jnp.zeros(1024),
              "w2": jax.random.normal(keys[1], (1024, 256)) * 0.02, "b2": jnp.zeros(256)}
    x = jax.random.normal(keys[2], (1024, 256))
    steps = {dtype: jax.jit(jax.grad(functools.partial(loss, dtype=jnp.dtype(dtype))))
             for dtype in ("float32", "bfloat16")}
    best = calibration.seconds({
        f"{dtype}_s": functools.partial(lambda step: jax.block_until_ready(step(params, x)), step)
        for dtype, step in steps.items()})
    return best
