"""BART: exact against Hugging Face's BartForConditionalGeneration, causal decoder,
bidirectional encoder, padding-safe."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tolerances
from textgen_jax.models.bart import Bart
from textgen_jax.models.layers import TransformerConfig
from textgen_jax.training import partitioning

VOCAB = 101
# A padded source and the source alone run the same function at other shapes, so their sums
# run in other orders: float32, 4 layers (2 per stack) whose longest reduction is the MLP's 64,
# relative to the logits' scale (about 4 here: 1.2e-4). A leak moves them by > 1e-2.
LOGITS = tolerances.network(layers=4, width=64)


def _init_shapes(model: Bart) -> dict:
    return nn.meta.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), model.example_batch(8))["params"]))


@pytest.fixture(scope="module")
def tiny():
    """Jitted apply of a tiny BART with weights (std 0.3) that make attention sharp."""
    model = Bart(TransformerConfig(vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4,
                                   d_ff=64, max_len=32, activation="gelu"))
    rng = np.random.default_rng(0)

    def draw(path, shape):
        noise = rng.normal(size=shape.shape).astype(np.float32)
        return jnp.asarray(1.0 + 0.1 * noise if path[-1].key == "scale" else 0.3 * noise)
    params = jax.tree_util.tree_map_with_path(draw, _init_shapes(model))
    apply = jax.jit(lambda inputs, decoder_inputs, source_mask: model.apply(
        {"params": params}, {"inputs": inputs, "decoder_inputs": decoder_inputs,
                             "segment_ids": source_mask})["logits"])
    return lambda inputs, decoder_inputs, source_mask: np.asarray(
        apply(inputs, decoder_inputs, source_mask))


def test_decoder_is_causal(tiny):
    rng = np.random.default_rng(1)
    inputs = rng.integers(0, VOCAB, size=(2, 16)).astype(np.int32)
    decoder_inputs = rng.integers(0, VOCAB, size=(2, 12)).astype(np.int32)
    changed = decoder_inputs.copy()
    changed[:, 8] = (decoder_inputs[:, 8] + 1) % VOCAB
    source_mask = np.ones_like(inputs)
    before = tiny(inputs, decoder_inputs, source_mask)
    after = tiny(inputs, changed, source_mask)
    # Bitwise: one program at one shape, and a masked score is replaced by a constant whose
    # softmax weight is exactly 0, so the earlier positions see the very same numbers.
    np.testing.assert_array_equal(after[:, :8], before[:, :8])
    assert np.abs(after[:, 8] - before[:, 8]).max(-1).min() > 1e-2  # the check has teeth


def test_encoder_is_bidirectional(tiny):
    rng = np.random.default_rng(2)
    inputs = rng.integers(0, VOCAB, size=(2, 16)).astype(np.int32)
    decoder_inputs = rng.integers(0, VOCAB, size=(2, 12)).astype(np.int32)
    changed = inputs.copy()
    changed[:, -1] = (inputs[:, -1] + 1) % VOCAB
    source_mask = np.ones_like(inputs)
    before = tiny(inputs, decoder_inputs, source_mask)
    after = tiny(changed, decoder_inputs, source_mask)
    # The first target position sees the last source token.
    assert np.abs(after[:, 0] - before[:, 0]).max(-1).min() > 1e-2


def test_source_padding_never_changes_the_logits(tiny):
    rng = np.random.default_rng(3)
    source = rng.integers(0, VOCAB, size=(1, 10)).astype(np.int32)
    decoder_inputs = rng.integers(0, VOCAB, size=(2, 12)).astype(np.int32)
    alone = tiny(source, decoder_inputs[:1], np.ones_like(source))
    # The same 10 tokens followed by 6 pads of different contents in two rows.
    padded = np.concatenate([np.repeat(source, 2, 0),
                             rng.integers(0, VOCAB, size=(2, 6)).astype(np.int32)], axis=1)
    source_mask = np.array([[1] * 10 + [0] * 6] * 2, np.int32)
    decoder_inputs[1] = decoder_inputs[0]
    out = tiny(padded, decoder_inputs, source_mask)
    assert np.all(np.isfinite(out))
    for row in range(2):
        np.testing.assert_allclose(out[row], alone[0], atol=LOGITS * np.abs(alone).max(),
                                   rtol=0)
    # Without the padding mask the pads are seen: the check has teeth.
    leaky = tiny(padded, decoder_inputs, np.ones_like(source_mask))
    assert np.abs(leaky[0] - alone[0]).max() > 1e-2


def test_output_layer_is_tied_to_the_token_embeddings():
    model = Bart(TransformerConfig(vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=4,
                                   d_ff=64, max_len=32))
    shapes = _init_shapes(model)
    vocab_leaves = sorted(jax.tree_util.keystr(path) for path, leaf
                          in jax.tree_util.tree_flatten_with_path(shapes)[0]
                          if VOCAB in leaf.shape)
    # One vocabulary matrix shared by both stacks and the output layer, plus the logits bias.
    assert vocab_leaves == ["['final_logits_bias']", "['token_embed']['embedding']"]


def test_every_parameter_carries_logical_axis_names():
    model = Bart(TransformerConfig(vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4,
                                   d_ff=64, max_len=32), num_decoder_layers=1)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), model.example_batch(8)))
    specs = nn.get_partition_spec(boxed["params"])
    flat_specs = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]
    leaves = jax.tree.leaves(nn.meta.unbox(boxed["params"]))
    assert len(flat_specs) == len(leaves)
    for (path, spec), leaf in zip(flat_specs, leaves):
        assert isinstance(spec, jax.sharding.PartitionSpec), path
        assert len(spec) == leaf.ndim, (path, spec)
        names = [name for name in spec if name is not None]
        assert len(names) == leaf.ndim and len(set(names)) == len(names), (path, spec)
    mesh = jax.make_mesh((1, 1, 1), partitioning.MESH_AXES, devices=jax.devices()[:1])
    partitioning.logical_shardings(boxed["params"], mesh)
