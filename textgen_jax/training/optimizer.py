"""AdamW with warmup and decay, no weight decay on norms, biases and embeddings, clipping."""

from __future__ import annotations

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


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(optim, num_steps)
    return optax.chain(
        optax.clip_by_global_norm(optim.clip_norm) if optim.clip_norm > 0 else optax.identity(),
        optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                    weight_decay=optim.weight_decay, mask=weight_decay_mask),
    )
