"""The train state and the jitted train and eval steps, shared by the loop and the benchmarks."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from textgen_jax.training import partitioning

LossFn = Callable[..., dict[str, jax.Array]]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


@contextlib.contextmanager
def activate(mesh: Mesh):
    """The mesh and the logical axis rules that tracing and sharding constraints read."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(partitioning.LOGICAL_AXIS_RULES):
        yield


def abstract_state(model: nn.Module, tx: optax.GradientTransformation, seq_len: int):
    """(init function, abstract boxed TrainState) for a model; no memory is allocated."""
    def init(rng: jax.Array) -> TrainState:
        params = model.init(rng, model.example_batch(seq_len))["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=tx.init(params))
    return init, jax.eval_shape(init, jax.random.key(0))


def state_shardings(model: nn.Module, tx: optax.GradientTransformation, seq_len: int,
                    mesh: Mesh) -> tuple[Callable, Any, Any]:
    """(init, abstract unboxed state with shardings, shardings) under the logical rules."""
    init, boxed = abstract_state(model, tx, seq_len)
    shardings = partitioning.logical_shardings(boxed, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            nn.meta.unbox(boxed), shardings)
    return init, abstract, shardings


def create_state(model: nn.Module, tx: optax.GradientTransformation, seq_len: int,
                 mesh: Mesh, seed: int) -> tuple[TrainState, Any]:
    """A freshly initialised, sharded TrainState and its shardings."""
    init, _, shardings = state_shardings(model, tx, seq_len, mesh)
    with activate(mesh):
        state = jax.jit(init, out_shardings=shardings)(jax.random.key(seed))
    return nn.meta.unbox(state), shardings


def state_with_fresh_optimizer(step: int, params: Any, tx: optax.GradientTransformation,
                               shardings: Any) -> TrainState:
    """A TrainState at `step` holding `params` (already sharded) and a new optimizer state for
    them: the start from imported or pretrained parameters."""
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    return TrainState(step=jax.device_put(np.int32(step), shardings.step), params=params,
                      opt_state=opt_state)


def _split_micro_batches(batch: dict[str, jax.Array], accum_steps: int) -> dict[str, jax.Array]:
    # Micro-batch i takes rows i, i + accum_steps, ...: each device keeps its own rows.
    def split(x):
        x = x.reshape(x.shape[0] // accum_steps, accum_steps, *x.shape[1:]).swapaxes(0, 1)
        return nn.with_logical_constraint(x, (None, "batch", "length")[:x.ndim])
    return jax.tree.map(split, batch)


def means_from_sums(sums: dict[str, Any]) -> dict[str, Any]:
    """Per-token means of an objective's sums ('correct' becomes 'accuracy'); keeps 'tokens'.

    A sum 'x_...' with an 'x_examples' count beside it is a mean over those examples instead
    ('x_correct' becomes 'x_accuracy'), e.g. BERT's next-sentence prediction.
    """
    def mean(value, count):
        return value / (jnp.maximum(count, 1.0) if isinstance(count, jax.Array)
                        else max(count, 1.0))

    means = {}
    for name, value in sums.items():
        prefix = name.split("_")[0]
        if name == "tokens" or name == f"{prefix}_examples":
            means[name] = value
        elif f"{prefix}_examples" in sums:
            means[name.replace("_correct", "_accuracy")] = mean(value, sums[f"{prefix}_examples"])
        else:
            means["accuracy" if name == "correct" else name] = mean(value, sums["tokens"])
    return means


FINITE = "finite"  # the train step's metric: its loss and gradient norm are finite


class Divergence:
    """The loop's divergence guard: the first step whose loss or gradient norm was NaN or inf,
    tracked on the device (no host sync per step) and checked where the loop syncs anyway
    (logging, evaluation, checkpoints), so that no non-finite state is ever evaluated or
    saved."""

    def __init__(self):
        self._first = np.int32(-1)  # numpy: the same host value on every process
        self._update = jax.jit(
            lambda first, finite, step: jnp.where((first < 0) & ~finite, step, first))

    def record(self, step_metrics: dict[str, jax.Array], step: int) -> None:
        self._first = self._update(self._first, step_metrics[FINITE], np.int32(step))

    def first_bad_step(self) -> int | None:
        first = int(jax.device_get(self._first))
        return None if first < 0 else first

    @staticmethod
    @jax.jit
    def _all_finite(tree: Any) -> jax.Array:
        return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))

    def params_finite(self, params: Any) -> bool:
        """Whether every parameter is finite (an update can overflow although the step's loss
        and gradients were finite)."""
        return bool(jax.device_get(self._all_finite(params)))


def make_train_step(model: nn.Module, loss_fn: LossFn, tx: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None, accum_steps: int = 1):
    """train_step(state, batch, rng) -> (state, metrics); batch arrays are [batch, length].

    The gradient is that of the mean loss over every target token of the global batch, also
    with gradient accumulation (sums are accumulated, then divided once).
    """
    def summed_loss(params, batch, rng):
        sums = loss_fn(model, params, batch, rng, deterministic=False)
        return sums["loss"], sums

    grad_fn = jax.grad(summed_loss, has_aux=True)

    def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        if accum_steps == 1:
            grads, sums = grad_fn(state.params, batch, rng)
        else:
            def accumulate(carry, inputs):
                index, micro_batch = inputs
                grads, sums = grad_fn(state.params, micro_batch, jax.random.fold_in(rng, index))
                return jax.tree.map(jnp.add, carry, (grads, sums)), None

            zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, state.params,
                                                                 jax.tree.map(lambda x: x[:1], batch), rng))
            micro = _split_micro_batches(batch, accum_steps)
            (grads, sums), _ = jax.lax.scan(accumulate, zeros,
                                            (jnp.arange(accum_steps), micro))
        tokens = jnp.maximum(sums["tokens"], 1.0)
        grads = jax.tree.map(lambda g: g / tokens, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = means_from_sums(sums)
        metrics["grad_norm"] = optax.tree.norm(grads)
        # Read by the loop's divergence guard (Divergence), never logged.
        metrics[FINITE] = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
        if schedule is not None:
            metrics["lr"] = schedule(state.step)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_eval_step(model: nn.Module, loss_fn: LossFn):
    """eval_step(params, batch) -> summed metrics (deterministic: no dropout)."""
    def eval_step(params, batch):
        return loss_fn(model, params, batch, None, deterministic=True)
    return eval_step


def jit_train_step(train_step, shardings: Any, mesh: Mesh):
    replicated = NamedSharding(mesh, PartitionSpec())
    batch = partitioning.batch_sharding(mesh)
    return jax.jit(train_step, in_shardings=(shardings, batch, replicated),
                   out_shardings=(shardings, replicated), donate_argnums=(0,))


def jit_eval_step(eval_step, param_shardings: Any, mesh: Mesh):
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(eval_step, in_shardings=(param_shardings, partitioning.batch_sharding(mesh)),
                   out_shardings=replicated)
