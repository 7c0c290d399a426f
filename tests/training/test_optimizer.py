"""AdamW with warmup/decay, weight decay on kernels only, clipping, gradient accumulation."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tolerances
from textgen_jax import models
from textgen_jax.config import base_config
from textgen_jax.objectives import causal_lm_loss, clm_loss_fn
from textgen_jax.training import optimizer, partitioning, steps

VOCAB = 101
# A schedule value, or a parameter decayed once, is a handful of float32 operations away from
# the float64 value it is checked against, each rounding by at most u: within 16 u (9.5e-7).
FEW_OPS = 16 * tolerances.F32


def _optim(**overrides):
    optim = base_config().optim
    optim.update(overrides)
    return optim


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_schedule_warms_up_linearly_then_decays_to_the_end_ratio(decay):
    lr, end_ratio, warmup, num_steps = 1e-3, 0.1, 10, 110
    schedule = optimizer.learning_rate_schedule(
        _optim(lr=lr, end_lr_ratio=end_ratio, warmup_steps=warmup, decay=decay), num_steps)
    values = np.array([float(schedule(step)) for step in range(num_steps + 20)])
    np.testing.assert_allclose(values[:warmup + 1], lr * np.arange(warmup + 1) / warmup,
                               rtol=FEW_OPS, atol=0)  # step 0's 0 is exact
    end = lr * end_ratio
    np.testing.assert_allclose(values[num_steps:], end, rtol=FEW_OPS)  # and stays there
    # Non-increasing up to rounding: two neighbours may swap by their roundings (2 * FEW_OPS of
    # lr, 2e-9), where a rise of the decay's own step (lr / 100 here) would be a bug.
    assert np.all(np.diff(values[warmup:]) <= 2 * FEW_OPS * lr)
    # A quarter of the way through the decay: the cosine and the straight line differ.
    quarter = 0.25
    expected = {"cosine": end + (lr - end) * (1 + math.cos(math.pi * quarter)) / 2,
                "linear": lr - (lr - end) * quarter}[decay]
    assert values[warmup + 25] == pytest.approx(expected, rel=FEW_OPS)  # they differ by 12%


def test_constant_schedule_and_no_warmup():
    constant = optimizer.learning_rate_schedule(_optim(lr=2e-3, warmup_steps=5,
                                                       decay="constant"), 100)
    assert float(constant(5)) == pytest.approx(2e-3, rel=FEW_OPS)
    assert float(constant(99)) == pytest.approx(2e-3, rel=FEW_OPS)
    no_warmup = optimizer.learning_rate_schedule(_optim(lr=2e-3, warmup_steps=0), 100)
    assert float(no_warmup(0)) == pytest.approx(2e-3, rel=FEW_OPS)
    assert float(no_warmup(100)) == pytest.approx(2e-3 * 0.1, rel=FEW_OPS)


def _tiny_model_config():
    config = base_config()
    config.model.update(dict(num_layers=2, d_model=32, num_heads=4, d_ff=64, max_len=16))
    config.optim.warmup_steps = 0  # else the first step's learning rate is 0
    config.optim.lr = 3e-4
    return config


def test_weight_decay_shrinks_kernels_only():
    config = _tiny_model_config()
    lr, weight_decay = 0.1, 0.5
    tx = optimizer.make_optimizer(_optim(lr=lr, warmup_steps=0, decay="constant",
                                         weight_decay=weight_decay), 10)
    model = models.build_model(config.model, VOCAB)
    shapes = nn.meta.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), model.example_batch(8))["params"]))
    params = jax.tree.map(lambda s: jnp.full(s.shape, 2.0, jnp.float32), shapes)

    @jax.jit
    def step_with_zero_gradient(params):
        # With a zero gradient Adam's step is zero: any change is weight decay.
        updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
        return optax.apply_updates(params, updates)

    new_params = step_with_zero_gradient(params)

    decayed, kept = set(), set()
    for path, leaf in jax.tree_util.tree_flatten_with_path(new_params)[0]:
        name = jax.tree_util.keystr(path)
        if np.all(np.asarray(leaf) == 2.0):
            kept.add(name)
        else:
            np.testing.assert_allclose(leaf, 2.0 * (1 - lr * weight_decay), rtol=FEW_OPS)
            decayed.add(name)
    assert decayed and all(name.endswith("['kernel']") for name in decayed)
    assert all(not name.endswith("['kernel']") for name in kept)
    for table in ("token_embed", "position_embed"):  # embeddings are not decayed
        assert f"['{table}']['embedding']" in kept


def _adam_first_moment(opt_state):
    states = [s for s in jax.tree.leaves(
        opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)]
    assert len(states) == 1
    return states[0].mu


@pytest.mark.parametrize("grad_norm", [10.0, 0.5])
def test_clipping_bounds_the_global_gradient_norm(grad_norm):
    clip_norm, b1 = 1.0, 0.9
    tx = optimizer.make_optimizer(_optim(clip_norm=clip_norm, b1=b1, warmup_steps=0), 10)
    params = {"a": {"kernel": jnp.zeros((3, 4))}, "b": {"bias": jnp.zeros((5,))}}
    rng = np.random.default_rng(0)
    direction = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    grads = jax.tree.map(lambda g: g * grad_norm / optax.tree.norm(direction), direction)
    _, opt_state = tx.update(grads, tx.init(params), params)
    # After one step Adam's first moment is (1 - b1) * the gradient it was given.
    seen = jax.tree.map(lambda m: m / (1 - b1), _adam_first_moment(opt_state))
    expected_norm = min(grad_norm, clip_norm)
    # In float32: the clipping's global norm and this test's (17 squares each, at most 17 u
    # apart from exact), and a few scalings of every element: < 48 u (2.9e-6). All of it is
    # relative, elements included (scalings are products): no absolute term.
    clipped = 48 * tolerances.F32
    assert float(optax.tree.norm(seen)) == pytest.approx(expected_norm, rel=clipped)
    jax.tree.map(lambda s, g: np.testing.assert_allclose(s, g * expected_norm / grad_norm,
                                                         rtol=clipped, atol=0), seen, grads)


def _uneven_batch(rows: int = 8, length: int = 16) -> dict[str, np.ndarray]:
    """Two documents per row and 2 * row padding tokens, so micro-batches hold different
    numbers of target tokens (averaging per-micro-batch means would weight tokens unevenly)."""
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, VOCAB, size=(rows, length)).astype(np.int32)
    segments = np.zeros((rows, length), np.int32)
    positions = np.zeros((rows, length), np.int32)
    for row in range(rows):
        real = length - 2 * row
        first = max(real // 3, 1)
        segments[row, :first], segments[row, first:real] = 1, 2
        positions[row, :first] = np.arange(first)
        positions[row, first:real] = np.arange(real - first)
    return {"inputs": inputs, "segment_ids": segments, "positions": positions}


@pytest.fixture(scope="module")
def accumulation_runs():
    """One train step from the same state and batch with grad_accum_steps 1 and 4."""
    config = _tiny_model_config()
    mesh = partitioning.make_mesh(config.mesh, jax.devices()[:1])
    model = models.build_model(config.model, VOCAB)
    tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
    state, shardings = steps.create_state(model, tx, 16, mesh, seed=0)
    initial_params = jax.device_get(state.params)
    batch = _uneven_batch()
    runs = {}
    with steps.activate(mesh):
        for accum in (1, 4):
            train_step = steps.jit_train_step(
                steps.make_train_step(model, clm_loss_fn, tx, accum_steps=accum), shardings, mesh)
            start = jax.tree.map(jnp.copy, state)  # the step donates its input state
            new_state, metrics = train_step(start, partitioning.global_batch(batch, mesh),
                                            jax.random.key(1))
            runs[accum] = jax.device_get((new_state.params, _adam_first_moment(new_state.opt_state),
                                          metrics))
    return model, initial_params, batch, runs


def test_gradient_accumulation_gives_the_same_step(accumulation_runs):
    _, initial_params, _, runs = accumulation_runs
    (params_1, moment_1, metrics_1), (params_4, moment_4, metrics_4) = runs[1], runs[4]
    moved = max(float(np.abs(a - b).max()) for a, b in
                zip(jax.tree.leaves(params_1), jax.tree.leaves(initial_params)))
    assert moved > 1e-4  # the step did change the parameters
    # Adam's first moment is linear in the (clipped) gradient: summing 4 micro-batches in
    # another order may only change it by float32 rounding, while a weighting error shows.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-9, rtol=1e-4),
                 moment_4, moment_1)
    # Adam's first step moves each parameter by lr * g / (|g| + eps) (+ weight decay, the same
    # for both): the parameters may differ by what their gradients' difference explains
    # (large only where |g| ~ eps, where a rounding-level change of g moves the ratio), plus
    # float32 rounding of the update and the parameter; nothing else.
    config = _tiny_model_config()
    optim = config.optim
    lr = float(optimizer.learning_rate_schedule(optim, config.train.num_steps)(0))
    float32_eps = float(np.finfo(np.float32).eps)

    def adam_ratio(moment):
        gradient = np.asarray(moment, np.float64) / (1 - optim.b1)
        return gradient / (np.abs(gradient) + optim.eps)

    for p4, p1, m4, m1 in zip(*map(jax.tree.leaves, (params_4, params_1, moment_4, moment_1))):
        explained = lr * np.abs(adam_ratio(m4) - adam_ratio(m1))
        rounding = 8 * float32_eps * (lr + np.abs(p1))
        excess = np.abs(np.asarray(p4, np.float64) - p1) - explained - rounding
        assert excess.max() <= 0, (excess.max(), np.unravel_index(excess.argmax(), p1.shape))
    assert metrics_4["tokens"] == metrics_1["tokens"]
    for name in ("loss", "accuracy", "grad_norm"):
        assert metrics_4[name] == pytest.approx(metrics_1[name], rel=1e-5), name


def test_train_step_reports_the_mean_loss_and_its_unclipped_gradient_norm(accumulation_runs):
    model, initial_params, batch, runs = accumulation_runs

    def mean_loss(params):
        logits = model.apply({"params": params}, {key: batch[key] for key in (
            "inputs", "segment_ids", "positions")})["logits"]
        sums = causal_lm_loss(logits, batch["inputs"], batch["segment_ids"])
        return sums["loss"] / sums["tokens"], (sums["tokens"], jnp.abs(logits).max())

    (loss, (tokens, logit_scale)), grads = jax.jit(jax.value_and_grad(mean_loss, has_aux=True))(
        initial_params)
    grad_norm = float(optax.tree.norm(grads))
    assert grad_norm > 1.0  # above config.optim.clip_norm: the metric is taken before clipping
    # The train step computes the same values in another program (and over micro-batches).
    # The loss: a mean of <= 128 per-token losses summed in another order, each token's
    # log-softmax moved by at most twice the logits' error (2 layers of width <= 64, relative
    # to their scale): about 4e-6 here. The gradient norm: the gradients' error through
    # 2 layers whose longest reduction is the batch's 128 tokens, plus a sum of squares over
    # every parameter in another order: about 4e-5.
    loss_tolerance = (tolerances.reordered_sum(128) + 2 * tolerances.network(2, 64)
                      * float(logit_scale) / float(loss))
    num_params = sum(leaf.size for leaf in jax.tree.leaves(initial_params))
    norm_tolerance = tolerances.network(2, 128) + tolerances.reordered_sum(num_params)
    for accum, (_, _, metrics) in runs.items():
        assert metrics["tokens"] == tokens, accum
        assert metrics["loss"] == pytest.approx(float(loss), rel=loss_tolerance), accum
        assert metrics["grad_norm"] == pytest.approx(grad_norm, rel=norm_tolerance), accum
