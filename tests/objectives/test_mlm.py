"""The BERT objective: the paper's loss (mean MLM + mean NSP), per-example NSP metrics."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import tolerances
from textgen_jax.config import base_config
from textgen_jax.data.pipeline import bert_pretraining_dataset
from textgen_jax.models.bert import Bert
from textgen_jax.models.layers import TransformerConfig
from textgen_jax.objectives.mlm import mlm_nsp_loss, mlm_nsp_loss_fn
from textgen_jax.training import optimizer, steps


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_is_mean_mlm_plus_mean_nsp_cross_entropy():
    rng = np.random.default_rng(0)
    mlm_logits = rng.normal(size=(3, 5, 11)).astype(np.float32)
    nsp_logits = rng.normal(size=(3, 2)).astype(np.float32)
    labels = np.full((3, 5), -1, np.int32)
    labels[0, 1], labels[1, 3], labels[1, 4], labels[2, 0] = 4, 7, 0, 10
    nsp_labels = np.array([0, 1, 1], np.int32)
    sums = jax.device_get(mlm_nsp_loss(jnp.asarray(mlm_logits), jnp.asarray(nsp_logits),
                                       jnp.asarray(labels), jnp.asarray(nsp_labels)))
    chosen = labels >= 0
    mlm_mean = -_log_softmax(mlm_logits)[chosen, labels[chosen]].mean()
    nsp_mean = -_log_softmax(nsp_logits)[np.arange(3), nsp_labels].mean()
    means = steps.means_from_sums(sums)
    assert sums["tokens"] == 4 and sums["nsp_examples"] == 3
    # Two formulas of the same cross-entropies from the same float32 logits, over their counts.
    mlm_atol = tolerances.cross_entropy_sum(4, float(np.abs(mlm_logits).max()), classes=11) / 4
    nsp_atol = tolerances.cross_entropy_sum(3, float(np.abs(nsp_logits).max()), classes=2) / 3
    np.testing.assert_allclose(means["loss"], mlm_mean + nsp_mean, atol=mlm_atol + nsp_atol,
                               rtol=0)
    np.testing.assert_allclose(means["nsp_loss"], nsp_mean, atol=nsp_atol, rtol=0)
    # Exact counts, divided once in float32: within one roundoff.
    expected_nsp = np.mean(nsp_logits.argmax(-1) == nsp_labels)
    expected_mlm = np.mean(mlm_logits[chosen].argmax(-1) == labels[chosen])
    np.testing.assert_allclose(means["nsp_accuracy"], expected_nsp, rtol=tolerances.F32)
    np.testing.assert_allclose(means["accuracy"], expected_mlm, rtol=tolerances.F32)
    assert means["nsp_examples"] == 3 and means["tokens"] == 4


def test_train_steps_on_pipeline_batches_lower_the_loss(stdlib_data_dir, stdlib_tokenizer):
    config = base_config()
    config.data.data_dir = stdlib_data_dir
    config.data.seq_len, config.data.global_batch_size = 32, 8
    config.optim.lr, config.optim.warmup_steps = 3e-3, 0
    batch = next(iter(bert_pretraining_dataset(config, stdlib_tokenizer, "train")))
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    model = Bert(TransformerConfig(vocab_size=stdlib_tokenizer.vocab_size, num_layers=2,
                                   d_model=32, num_heads=4, d_ff=64, max_len=32,
                                   activation="gelu", layer_norm_eps=1e-12))
    tx = optimizer.make_optimizer(config.optim, num_steps=10)
    params = nn.meta.unbox(model.init(jax.random.key(0), model.example_batch(32))["params"])
    state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                             opt_state=tx.init(params))
    # Two micro-batches: per-example NSP labels [batch] split like the token rows.
    train_step = jax.jit(steps.make_train_step(model, mlm_nsp_loss_fn, tx, accum_steps=2))
    losses = []
    for _ in range(5):
        state, metrics = train_step(state, batch, jax.random.key(0))
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.1, losses
    assert 0 <= float(metrics["nsp_accuracy"]) <= 1 and float(metrics["nsp_examples"]) == 8
