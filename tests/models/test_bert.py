"""BERT: exact against Hugging Face's BertForPreTraining, bidirectional, padding-safe."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tolerances
from textgen_jax.models.bert import Bert
from textgen_jax.models.layers import TransformerConfig
from textgen_jax.training import partitioning


# A padded batch and the tokens alone run the same function at other shapes, so their sums run
# in other orders: float32, 2 layers whose longest reduction is the MLP's 64, relative to the
# scale of each output (about 6 for the MLM logits: 9e-5). A leak moves them by > 1e-2.
OUTPUTS = tolerances.network(layers=2, width=64)


def _init_shapes(model: Bert) -> dict:
    return nn.meta.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), model.example_batch(8))["params"]))


@pytest.fixture(scope="module")
def tiny():
    """(jitted apply, params) of a tiny BERT with weights (std 0.3) that make attention sharp."""
    model = Bert(TransformerConfig(vocab_size=101, num_layers=2, d_model=32, num_heads=4,
                                   d_ff=64, max_len=32, activation="gelu"))
    rng = np.random.default_rng(0)

    def draw(path, shape):
        noise = rng.normal(size=shape.shape).astype(np.float32)
        return jnp.asarray(1.0 + 0.1 * noise if path[-1].key == "scale" else 0.3 * noise)
    params = jax.tree_util.tree_map_with_path(draw, _init_shapes(model))
    apply = jax.jit(lambda inputs, token_types, attention_ids: model.apply(
        {"params": params}, {"inputs": inputs, "token_types": token_types,
                             "segment_ids": attention_ids}))
    return apply


def test_changing_a_later_token_changes_earlier_outputs(tiny):
    inputs = np.random.default_rng(1).integers(0, 101, size=(2, 16)).astype(np.int32)
    token_types, attention = np.zeros_like(inputs), np.ones_like(inputs)
    changed = inputs.copy()
    changed[:, 12] = (inputs[:, 12] + 1) % 101
    before = tiny(inputs, token_types, attention)
    after = tiny(changed, token_types, attention)
    # Bidirectional: the first tokens (and [CLS]'s NSP logits) see the change at position 12.
    assert np.abs(after["logits"][:, :12] - before["logits"][:, :12]).min(-1).max() > 1e-3
    assert np.abs(np.asarray(after["nsp_logits"]) - np.asarray(before["nsp_logits"])).max() > 1e-4


def test_token_types_change_the_outputs(tiny):
    inputs = np.random.default_rng(2).integers(0, 101, size=(1, 12)).astype(np.int32)
    attention = np.ones_like(inputs)
    segment_b = np.zeros_like(inputs)
    segment_b[:, 6:] = 1
    a = tiny(inputs, np.zeros_like(inputs), attention)["logits"]
    b = tiny(inputs, segment_b, attention)["logits"]
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-2


def test_padding_never_changes_the_outputs_of_real_tokens(tiny):
    rng = np.random.default_rng(3)
    real_tokens = rng.integers(0, 101, size=(1, 10)).astype(np.int32)
    real_types = np.array([[0] * 5 + [1] * 5], np.int32)
    alone = tiny(real_tokens, real_types, np.ones_like(real_tokens))
    # The same 10 tokens followed by 6 pads of different contents in two rows.
    padded = np.concatenate([np.repeat(real_tokens, 2, 0),
                             rng.integers(0, 101, size=(2, 6)).astype(np.int32)], axis=1)
    types = np.concatenate([np.repeat(real_types, 2, 0), rng.integers(0, 2, size=(2, 6))], 1)
    attention = np.array([[1] * 10 + [0] * 6] * 2, np.int32)
    out = tiny(padded, types.astype(np.int32), attention)
    assert np.all(np.isfinite(np.asarray(out["logits"])))
    for row in range(2):
        for name, real in (("logits", np.s_[row, :10]), ("nsp_logits", np.s_[row])):
            np.testing.assert_allclose(out[name][real], alone[name][0],
                                       atol=OUTPUTS * np.abs(alone[name]).max(), rtol=0)
    # Without the padding mask the pads are seen: the check has teeth.
    leaky = tiny(padded, types.astype(np.int32), np.ones_like(attention))
    assert np.abs(np.asarray(leaky["logits"][0, :10]) - alone["logits"][0]).max() > 1e-2


def test_mlm_decoder_is_tied_to_the_word_embeddings(tiny):
    model = Bert(TransformerConfig(vocab_size=101, num_layers=1, d_model=32, num_heads=4,
                                   d_ff=64, max_len=32, activation="gelu"))
    shapes = _init_shapes(model)
    vocab_leaves = sorted(jax.tree_util.keystr(path) for path, leaf
                          in jax.tree_util.tree_flatten_with_path(shapes)[0]
                          if 101 in leaf.shape)
    # One vocabulary matrix (the input table) and the MLM output bias: no separate decoder.
    assert vocab_leaves == ["['mlm']['output_bias']", "['token_embed']['embedding']"]


def test_every_parameter_carries_logical_axis_names():
    model = Bert(TransformerConfig(vocab_size=101, num_layers=1, d_model=32, num_heads=4,
                                   d_ff=64, max_len=32))
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), model.example_batch(8)))
    specs = nn.get_partition_spec(boxed["params"])
    flat_specs = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]
    leaves = jax.tree.leaves(nn.meta.unbox(boxed["params"]))
    assert len(flat_specs) == len(leaves)
    for (path, spec), leaf in zip(flat_specs, leaves):
        assert isinstance(spec, jax.sharding.PartitionSpec), path
        assert len(spec) == leaf.ndim, (path, spec)
        # Unnamed: the token-type table's 2 rows, the NSP classes, the pooler's and MLM
        # transform's output (the input axis is already 'embed', which a spec may hold once).
        names = [name for name in spec if name is not None]
        assert len(names) >= leaf.ndim - 1 and len(set(names)) == len(names), (path, spec)
    # The rules turn every spec into a valid sharding on a mesh with every axis present.
    mesh = jax.make_mesh((1, 1, 1), partitioning.MESH_AXES, devices=jax.devices()[:1])
    partitioning.logical_shardings(boxed["params"], mesh)


def test_cli_pretraining_lowers_the_eval_loss(tmp_path, tiny_run):
    from conftest import read_metrics

    workdir = tmp_path / "bert"
    result = tiny_run(workdir, "--config.train.num_steps=30", "--config.train.eval_every=30",
                      "--config.optim.lr=2e-3", config="configs/bert.py:tiny")
    evals = read_metrics(workdir, "eval")
    assert sorted(evals) == [0, 30]
    assert evals[30]["loss"] < evals[0]["loss"] - 0.3, (evals[0]["loss"], evals[30]["loss"])
    assert 0 <= evals[30]["nsp_accuracy"] <= 1 and evals[30]["nsp_examples"] > 0
    assert "sample |" not in result.stderr + result.stdout  # an encoder samples nothing
