"""Shared blocks: the custom-gradient matmul and the attention mask."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax.models.layers import attention_mask, matmul

# (x shape, kernel shape, einsum) for contracting the last one or two axes of x.
CASES = {
    1: ((2, 3, 16), (16, 24), "bti,io->bto"),
    2: ((2, 3, 4, 8), (4, 8, 24), "bthd,hdo->bto"),
}


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-6), (jnp.bfloat16, 1e-2)])
@pytest.mark.parametrize("contract", [1, 2])
def test_matmul_matches_the_float32_product_and_its_gradients(contract, dtype, tolerance):
    x_shape, kernel_shape, equation = CASES[contract]
    rng = np.random.default_rng(contract)
    x = rng.normal(size=x_shape).astype(np.float32)
    kernel = rng.normal(size=kernel_shape).astype(np.float32)
    cotangent = rng.normal(size=x_shape[:2] + kernel_shape[-1:]).astype(np.float32)

    def reference(x, kernel):
        return jnp.einsum(equation, x, kernel, precision=jax.lax.Precision.HIGHEST)

    def ours(x, kernel):
        return matmul(x.astype(dtype), kernel, contract)

    out = jax.jit(ours)(x, kernel)
    assert out.dtype == dtype and out.shape == cotangent.shape
    assert _relative_error(out, reference(x, kernel)) < tolerance

    def loss(fn):
        return lambda x, kernel: jnp.sum(fn(x, kernel).astype(jnp.float32) * cotangent)

    grad_x, grad_kernel = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, kernel)
    ref_x, ref_kernel = jax.grad(loss(reference), argnums=(0, 1))(x, kernel)
    assert grad_kernel.dtype == jnp.float32 and grad_kernel.shape == kernel.shape
    assert grad_x.shape == x.shape
    assert _relative_error(grad_x, ref_x) < tolerance
    assert _relative_error(grad_kernel, ref_kernel) < tolerance


def test_matmul_gradient_in_compute_dtype_is_that_of_its_input():
    # Under bfloat16 compute, x arrives as bfloat16 and its cotangent must stay bfloat16 so
    # the backward pass through the previous layers stays in the compute dtype.
    x = jnp.ones((2, 16), jnp.bfloat16)
    kernel = jnp.ones((16, 8), jnp.float32)
    grad_x = jax.grad(lambda x: matmul(x, kernel).astype(jnp.float32).sum())(x)
    assert grad_x.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(grad_x, np.float32), 8.0)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_mask_keeps_documents_apart_and_ignores_padding(causal):
    segments = np.array([[1, 1, 1, 2, 2, 0, 0], [0, 0, 1, 1, 0, 2, 2]], np.int32)
    mask = np.asarray(attention_mask(jnp.asarray(segments), jnp.asarray(segments), causal))
    batch, length = segments.shape
    assert mask.shape == (batch, 1, length, length) and mask.dtype == bool
    for b, q, k in itertools.product(range(batch), range(length), range(length)):
        allowed = (segments[b, q] == segments[b, k] and segments[b, k] > 0
                   and (q >= k or not causal))
        assert mask[b, 0, q, k] == allowed, (b, q, k)
