"""GPT-2: exact against Hugging Face's GPT2LMHeadModel, causal, packing-safe, GPT-2 init."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tolerances
from textgen_jax.config import base_config
from textgen_jax.models.gpt2 import GPT2
from textgen_jax.models.layers import TransformerConfig
from textgen_jax.objectives import clm_loss_fn
from textgen_jax.training import optimizer, steps

LOGICAL_AXES = {"batch", "length", "embed", "heads", "kv", "mlp", "vocab", "layers"}
# A packed or padded batch and the document alone run the same function at other shapes, so
# their sums run in other orders: float32, 2 layers whose longest reduction is the MLP's 64,
# relative to the logits' scale (about 8 here: 1.2e-4). A leak moves them by > 1e-2.
LOGITS = tolerances.network(layers=2, width=64)


def _tiny_config(**overrides) -> TransformerConfig:
    values = dict(vocab_size=101, num_layers=2, d_model=32, num_heads=4, d_ff=64, max_len=32)
    values.update(overrides)
    return TransformerConfig(**values)


def _random_params(model: GPT2, std: float, seed: int = 0) -> dict:
    """Parameters of the model's own tree and shapes, drawn in numpy (no init to compile).

    LayerNorm scales are 1 + noise, every other leaf (biases included) normal(0, std).
    """
    shapes = nn.meta.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), model.example_batch(8))["params"]))
    rng = np.random.default_rng(seed)

    def draw(path, shape):
        noise = rng.normal(size=shape.shape).astype(np.float32)
        return jnp.asarray(1.0 + 0.1 * noise if path[-1].key == "scale" else std * noise)
    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def tiny():
    """(params, jitted apply) of a tiny GPT-2 whose weights (std 0.3) make attention sharp and
    input-dependent, so a leak between tokens that must not see each other moves the logits
    far beyond the tolerances below."""
    model = GPT2(_tiny_config())
    apply = jax.jit(lambda params, inputs, segments, positions: model.apply(
        {"params": params},
        {"inputs": inputs, "segment_ids": segments, "positions": positions})["logits"])
    return _random_params(model, std=0.3), apply


def _random_tokens(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 101, size=shape).astype(np.int32)


def test_changing_a_future_token_never_changes_earlier_logits(tiny):
    params, apply = tiny
    inputs = _random_tokens(np.random.default_rng(1), 2, 16)
    segments = np.ones_like(inputs)
    positions = np.broadcast_to(np.arange(16, dtype=np.int32), inputs.shape)
    changed = inputs.copy()
    changed[:, 9] = (inputs[:, 9] + 1) % 101
    before = np.asarray(apply(params, inputs, segments, positions))
    after = np.asarray(apply(params, changed, segments, positions))
    # Bitwise: one program at one shape, and a masked score is replaced by a constant whose
    # softmax weight is exactly 0, so the earlier rows see the very same numbers.
    np.testing.assert_array_equal(after[:, :9], before[:, :9])
    assert np.abs(after[:, 9:] - before[:, 9:]).max() > 1e-2  # the change itself is seen


def test_packed_documents_never_attend_to_each_other(tiny):
    params, apply = tiny
    rng = np.random.default_rng(2)
    first, second = _random_tokens(rng, 1, 6), _random_tokens(rng, 1, 10)
    packed = np.concatenate([first, second], axis=1)
    segments = np.array([[1] * 6 + [2] * 10], np.int32)
    positions = np.array([list(range(6)) + list(range(10))], np.int32)

    logits = np.asarray(apply(params, packed, segments, positions))
    alone = [np.asarray(apply(params, doc, np.ones_like(doc),
                              np.arange(doc.shape[1], dtype=np.int32)[None]))
             for doc in (first, second)]
    atol = LOGITS * np.abs(logits).max()
    np.testing.assert_allclose(logits[:, :6], alone[0], atol=atol, rtol=0)
    np.testing.assert_allclose(logits[:, 6:], alone[1], atol=atol, rtol=0)

    # Without the segment ids the second document does see the first: the check has teeth.
    leaky = np.asarray(apply(params, packed, np.ones_like(segments), positions))
    assert np.abs(leaky[:, 6:] - alone[1]).max() > 1e-2


def test_padding_never_changes_the_logits_of_real_tokens(tiny):
    params, apply = tiny
    rng = np.random.default_rng(3)
    document = _random_tokens(rng, 1, 9)
    expected = np.asarray(apply(params, document, np.ones_like(document),
                                np.arange(9, dtype=np.int32)[None]))
    # Padding before, inside and after the real tokens; two rows with different pad contents.
    layout = np.array([0] * 4 + [1] * 5 + [0] * 3 + [1] * 4 + [0] * 4)
    real = layout == 1
    rows = []
    for pad_seed in (4, 5):
        row = _random_tokens(np.random.default_rng(pad_seed), layout.size)
        row[real] = document[0]
        rows.append(row)
    inputs = np.stack(rows)
    # The document is one segment (1) that padding interrupts; its positions keep counting.
    segments = np.broadcast_to(layout, inputs.shape).astype(np.int32)
    positions = np.zeros(layout.size, np.int32)
    positions[real] = np.arange(9)
    positions = np.broadcast_to(positions, inputs.shape)

    logits = np.asarray(apply(params, inputs, segments, positions))
    assert np.all(np.isfinite(logits))  # fully masked padding rows must not produce NaN
    for row in logits:
        np.testing.assert_allclose(row[real], expected[0], atol=LOGITS * np.abs(expected).max(),
                                   rtol=0)


def test_init_scales_residual_projections_by_depth():
    # 3 layers: 1/sqrt(2 * 3) differs from 1/3, 1/sqrt(3) and 1/sqrt(2) by >= 18%; with 2
    # layers, 1/sqrt(2 * num_layers) and 1/num_layers coincide. The sample std of n independent
    # draws strays from the true one by 1/sqrt(2n) of it (1 sigma), the sample mean by
    # 1/sqrt(n) of the std: 4 sigmas each, at most 2.2% and 3% for the >= 16k entries here.
    num_layers = 3
    model = GPT2(TransformerConfig(vocab_size=512, num_layers=num_layers, d_model=128,
                                   num_heads=4, d_ff=512, max_len=128))
    params = nn.meta.unbox(jax.jit(lambda: model.init(
        jax.random.key(0), model.example_batch(8))["params"])())
    residual_std = 0.02 / np.sqrt(2 * num_layers)  # GPT-2 paper §2.3
    checked = set()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = tuple(entry.key for entry in path)
        leaf = np.asarray(leaf)
        assert leaf.dtype == np.float32, names
        if names[-1] == "bias":
            assert np.all(leaf == 0), names
        elif names[-1] == "scale":
            assert np.all(leaf == 1), names
        else:
            residual = names[-2:] in (("out", "kernel"), ("fc_out", "kernel"))
            expected = residual_std if residual else 0.02
            assert abs(leaf.std() / expected - 1) < 4 / np.sqrt(2 * leaf.size), (
                names, leaf.std(), expected)
            assert abs(leaf.mean()) < 4 / np.sqrt(leaf.size) * expected, names
            checked.add(names[-2] if residual else names[-1])
    assert checked == {"out", "fc_out", "kernel", "embedding"}


def test_every_parameter_carries_logical_axis_names():
    model = GPT2(_tiny_config())
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                              model.example_batch(8))["params"])
    specs = nn.get_partition_spec(boxed)
    shapes = nn.meta.unbox(boxed)
    flat_specs = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]
    assert len(flat_specs) == len(jax.tree.leaves(shapes))
    for (path, spec), shape in zip(flat_specs, jax.tree.leaves(shapes)):
        assert isinstance(spec, jax.sharding.PartitionSpec), path
        assert len(spec) == len(shape.shape), (path, spec, shape.shape)
        assert all(isinstance(name, str) and name in LOGICAL_AXES for name in spec), (path, spec)


def test_output_layer_is_the_token_embedding(tiny):
    params, _ = tiny
    vocab = 101
    # The only vocab-sized matrix is the input embedding: no separate output projection.
    vocab_leaves = [jax.tree_util.keystr(path) for path, leaf
                    in jax.tree_util.tree_flatten_with_path(params)[0] if vocab in leaf.shape]
    assert vocab_leaves == ["['token_embed']['embedding']"]

    # Token 7 is absent from the input, so its row is reached only through the output layer.
    model = GPT2(_tiny_config())
    inputs = jnp.array([[1, 2, 3, 4, 5]], jnp.int32)
    grads = jax.jit(jax.grad(
        lambda p: model.apply({"params": p}, {"inputs": inputs})["logits"][..., 7].sum()))(params)
    table_grad = np.asarray(grads["token_embed"]["embedding"])
    assert np.abs(table_grad[7]).max() > 0
    assert np.all(table_grad[[0, 6, 8, 100]] == 0)  # neither input nor output rows


def _batch(rng: np.random.Generator, rows: int, length: int) -> dict[str, np.ndarray]:
    inputs = _random_tokens(rng, rows, length)
    segments = np.ones((rows, length), np.int32)
    segments[:, length // 2:] = 2
    segments[-1, -3:] = 0
    positions = np.concatenate([np.arange(length // 2), np.arange(length - length // 2)])
    positions = np.broadcast_to(positions, (rows, length)).astype(np.int32)
    return {"inputs": inputs, "segment_ids": segments, "positions": positions}


def test_bfloat16_compute_keeps_float32_params_and_matches_float32_loss():
    batch = {k: jnp.asarray(v) for k, v in _batch(np.random.default_rng(6), 4, 16).items()}
    f32 = GPT2(_tiny_config())
    bf16 = GPT2(_tiny_config(dtype=jnp.bfloat16))
    initialised = jax.eval_shape(lambda: bf16.init(jax.random.key(0), batch))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(initialised))
    params = _random_params(bf16, std=0.02)

    def loss_and_grads(model):
        def mean_loss(p):
            sums = clm_loss_fn(model, p, batch, None, deterministic=True)
            return sums["loss"] / sums["tokens"]
        return jax.jit(jax.value_and_grad(mean_loss))(params)

    loss32, grads32 = loss_and_grads(f32)
    loss16, grads16 = loss_and_grads(bf16)
    assert loss16.dtype == jnp.float32
    # Activations rounded to bfloat16 (accumulated in float32) move the logits by at most
    # rounded_activations(2 layers) of their scale, and the mean loss (log-sum-exp minus the
    # label's logit) by twice that: here about 1% of the loss, far above a float32 claim.
    relative = tolerances.rounded_activations(layers=2)
    logit_scale = float(jnp.abs(f32.apply({"params": params}, batch)["logits"]).max())
    assert abs(float(loss16) - float(loss32)) <= 2 * relative * logit_scale
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads16))
    # The backward pass rounds as many points again: twice the forward bound, on the whole
    # gradient's norm (a cosine would miss a gradient scaled by a wrong factor).
    flat32 = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads32)])
    flat16 = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads16)])
    assert np.linalg.norm(flat16 - flat32) <= 2 * relative * np.linalg.norm(flat32)


def test_bfloat16_train_steps_lower_the_loss_and_keep_float32_state():
    config = base_config()
    config.optim.lr, config.optim.warmup_steps = 3e-3, 0
    model = GPT2(_tiny_config(dtype=jnp.bfloat16))
    tx = optimizer.make_optimizer(config.optim, num_steps=10)
    params = _random_params(model, std=0.02)
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                             opt_state=tx.init(params))
    train_step = jax.jit(steps.make_train_step(model, clm_loss_fn, tx))
    batch = {k: jnp.asarray(v) for k, v in _batch(np.random.default_rng(7), 4, 16).items()}
    losses = []
    for _ in range(4):
        state, metrics = train_step(state, batch, jax.random.key(0))
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.05, losses
    floats = [leaf for leaf in jax.tree.leaves((state.params, state.opt_state))
              if jnp.issubdtype(leaf.dtype, jnp.floating)]
    assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)
