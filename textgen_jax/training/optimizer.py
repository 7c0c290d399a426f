"""AdamW with warmup and decay, no weight decay on norms, biases and embeddings, clipping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import optax


def learning_rate_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup to optim.lr, then cosine/linear decay to lr * end_lr_ratio at num_steps."""
    warmup = min(optim.warmup_steps, num_steps)
    end_lr = optim.lr * optim.end_lr_ratio
    decay_steps = max(num_steps - warmup, 1)
    if optim.decay == "cosine":
        decay = optax.cosine_decay_schedule(optim.lr, decay_steps, alpha=optim.end_lr_ratio)
    elif optim.decay == "linear":
        decay = optax.linear_schedule(optim.lr, end_lr, decay_steps)
    else:
        decay = optax.constant_schedule(optim.lr)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, optim.lr, warmup), decay], [warmup])


def weight_decay_mask(params: Any) -> Any:
    """True for matmul kernels only: norms, biases and embedding tables are not decayed."""
    def is_kernel(path, _):
        names = [entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey)]
        return names[-1] == "kernel"
    return jax.tree_util.tree_map_with_path(is_kernel, params)


def frozen_mask(params: Any, freeze: Sequence[str]) -> Any:
    """True for the leaves under a path prefix of `freeze` ('block_0', 'mlm/transform').
    Raises ValueError for a prefix that matches nothing."""
    def name(path) -> str:  # dict keys only, not the attributes of logical-axis boxes
        return "/".join(e.key for e in path if isinstance(e, jax.tree_util.DictKey))

    names = [name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for prefix in freeze:
        if not any(n == prefix or n.startswith(prefix + "/") for n in names):
            top = sorted({n.split("/")[0] for n in names})
            raise ValueError(f"config.train.freeze names {prefix!r}, which is no parameter path "
                             f"prefix of this model; its top-level names are {top}.")
    return jax.tree_util.tree_map_with_path(
        lambda path, _: any(name(path) == p or name(path).startswith(p + "/") for p in freeze),
        params)


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int,
                   freeze: Sequence[str] = ()) -> optax.GradientTransformation:
    """AdamW (see the module docstring); the parameters under `freeze` are never updated: their
    gradients are zeroed before clipping and their updates (weight decay included) after."""
    schedule = learning_rate_schedule(optim, num_steps)
    adamw = [
        optax.clip_by_global_norm(optim.clip_norm) if optim.clip_norm > 0 else optax.identity(),
        optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                    weight_decay=optim.weight_decay, mask=weight_decay_mask),
    ]
    if not freeze:
        return optax.chain(*adamw)
    frozen = optax.masked(optax.set_to_zero(), lambda p: frozen_mask(p, tuple(freeze)))
    return optax.chain(frozen, *adamw, frozen)
