"""Backend numerics: both matmul implementations (XLA:CPU's and the plain one GPUs and TPUs
run) and both attention kernels against float64/float32 references, and the attention
choice's errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax import ops
from textgen_jax.config import ConfigError, base_config, validate
from textgen_jax.ops import attention_kernels as attention
from textgen_jax.ops import cpu, xla

# (x shape, kernel shape, einsum) for contracting the last one or two axes of x.
CASES = {
    1: ((2, 3, 16), (16, 24), "bti,io->bto"),
    2: ((2, 3, 4, 8), (4, 8, 24), "bthd,hdo->bto"),
}
# Norm-wise relative error of a dot of n <= 32 terms: float32 rounding, sqrt(n) * 2^-23 <
# 1e-6; bfloat16 operands rounded once each, sqrt(2) * 2^-9 < 1e-2.
TOLERANCES = [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)]


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize("impl", [cpu, xla], ids=["cpu", "xla"])
@pytest.mark.parametrize("dtype, tolerance", TOLERANCES)
@pytest.mark.parametrize("contract", [1, 2])
@pytest.mark.parametrize("kernel_transposed", [False, True])
def test_matmul_matches_the_float32_product_and_its_gradients(impl, contract, dtype, tolerance,
                                                              kernel_transposed):
    x_shape, kernel_shape, equation = CASES[contract]
    rng = np.random.default_rng(contract)
    x = rng.normal(size=x_shape).astype(np.float32)
    kernel = rng.normal(size=kernel_shape).astype(np.float32)
    cotangent = rng.normal(size=x_shape[:2] + kernel_shape[-1:]).astype(np.float32)
    # [in..., out] -> [out, in...]: the layout of decoding's transposed copies.
    stored = np.moveaxis(kernel, -1, 0) if kernel_transposed else kernel

    def reference(x, kernel):
        return jnp.einsum(equation, x, kernel, precision=jax.lax.Precision.HIGHEST)

    def ours(x, stored):
        return impl.matmul(x.astype(dtype), stored, contract, kernel_transposed)

    out = jax.jit(ours)(x, stored)
    assert out.dtype == dtype and out.shape == cotangent.shape
    assert _relative_error(out, reference(x, kernel)) < tolerance

    def loss(fn):
        return lambda x, kernel: jnp.sum(fn(x, kernel).astype(jnp.float32) * cotangent)

    grad_x, grad_kernel = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, stored)
    ref_x, ref_kernel = jax.grad(loss(reference), argnums=(0, 1))(x, kernel)
    if kernel_transposed:
        ref_kernel = np.moveaxis(np.asarray(ref_kernel), -1, 0)
    assert grad_kernel.dtype == jnp.float32 and grad_kernel.shape == stored.shape
    assert grad_x.shape == x.shape
    assert _relative_error(grad_x, ref_x) < tolerance
    assert _relative_error(grad_kernel, ref_kernel) < tolerance


@pytest.mark.parametrize("impl", [cpu, xla], ids=["cpu", "xla"])
def test_matmul_gradient_in_compute_dtype_is_that_of_its_input(impl):
    # Under bfloat16 compute, x arrives as bfloat16 and its cotangent must stay bfloat16 so
    # the backward pass through the previous layers stays in the compute dtype.
    x = jnp.ones((2, 16), jnp.bfloat16)
    kernel = jnp.ones((16, 8), jnp.float32)
    grad_x = jax.grad(lambda x: impl.matmul(x, kernel).astype(jnp.float32).sum())(x)
    assert grad_x.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(grad_x, np.float32), 8.0)


def _attention_inputs():
    rng = np.random.default_rng(0)
    batch, heads, q_len, k_len, head_dim = 2, 3, 5, 7, 8
    query, key, value = (rng.normal(size=(batch, heads, length, head_dim)).astype(np.float32)
                         for length in (q_len, k_len, k_len))
    mask = rng.random((batch, 1, q_len, k_len)) < 0.6
    mask[:, :, :, 0] = True
    mask[1, :, 2] = False  # a padding query: no key to attend to
    return query, key, value, mask


def _reference_attention(query, key, value, mask):
    """float64: softmax over the allowed keys; a query with none (padding) averages every
    value, as a softmax of equal masked scores does."""
    scores = np.einsum("bhqd,bhkd->bhqk", query.astype(np.float64), key.astype(np.float64))
    scores = np.where(mask.any(-1, keepdims=True), np.where(mask, scores, -np.inf), 0.0)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", probs, value.astype(np.float64)), scores


@pytest.mark.parametrize("kernel", ["einsum_cpu", "einsum_xla", "dot_product_attention"])
def test_attention_kernels_match_the_float64_softmax(kernel):
    query, key, value, mask = _attention_inputs()
    expected, scores = _reference_attention(query, key, value, mask)
    if kernel == "dot_product_attention":
        out = attention.dot_product_attention(query, key, value, mask, jax.default_backend())
    else:
        impl = cpu if kernel == "einsum_cpu" else xla
        out = attention.einsum_attention(impl, query, key, value, mask, None)
    # float32 rounding of the head_dim-term scores and of the k_len-term weighted sum: each
    # output is off by at most (head_dim + k_len + softmax's few) * eps relative to
    # max|value| * (1 + max|score|) (a score error moves the weights by its own size).
    head_dim, k_len = query.shape[-1], key.shape[2]
    eps = np.finfo(np.float32).eps
    bound = (head_dim + k_len + 4) * eps * np.abs(value).max() * (
        1 + np.abs(scores[np.isfinite(scores)]).max())
    assert out.shape == expected.shape and out.dtype == jnp.float32
    assert np.abs(np.asarray(out, np.float64) - expected).max() < bound


def test_attention_choice_errors_name_the_key_and_the_values():
    with pytest.raises(ValueError, match="config.model.attention='flash'.*auto"):
        attention.resolve_attention("flash", "cpu", dropout=False)
    with pytest.raises(ValueError, match="attention_dropout"):
        attention.resolve_attention("dot_product_attention", "gpu", dropout=True)
    # auto: the einsums wherever dropout applies or on CPU, cuDNN's kernel on GPUs.
    assert attention.resolve_attention("auto", "gpu", dropout=True) == "einsum"
    assert attention.resolve_attention("auto", "gpu", dropout=False) == "dot_product_attention"
    assert attention.resolve_attention("auto", "cpu", dropout=False) == "einsum"
    config = base_config()
    config.model.attention = "flash"
    with pytest.raises(ConfigError, match="config.model.attention='flash'.*einsum"):
        validate(config)


def test_backend_ops_are_chosen_by_the_default_backend():
    assert ops.backend_ops() is (cpu if jax.default_backend() == "cpu" else xla)
