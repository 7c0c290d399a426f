"""Shared blocks: the attention mask (the matmuls are tested in tests/ops)."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from textgen_jax.models.layers import attention_mask


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
