"""1 device vs 8 simulated devices (data=2, fsdp=2, tensor=2), for every architecture, with
dropout 0.1 and in bfloat16 too: the same losses, gradient norms and parameters after the
steps, right shardings, and a checkpoint written on 8 devices restores in this 1-device
process."""

from __future__ import annotations

import math
import subprocess
import sys

import jax
import pytest

import textgen_jax
import tolerances
from conftest import REPO, cli_env, read_metrics
from textgen_jax.training import optimizer, partitioning, steps

STEPS = 20
FLAGS = (f"--config.train.num_steps={STEPS}", "--config.train.log_every=1",
         f"--config.train.eval_every={STEPS}", f"--config.train.checkpoint_every={STEPS}")
MESH_2X2X2 = ("--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2")
DROPOUT = ("--config.model.dropout=0.1", "--config.model.attention_dropout=0.1")
BFLOAT16 = ("--config.model.dtype=bfloat16",)

# How far the two runs may drift apart, from the arithmetic. Both compute the same function of
# the same parameters, batch and dropout masks (the random bits do not depend on the sharding),
# but the 8-device program sums in another order: partial sums per shard, then across shards.
# Reordering a float32 sum of n terms moves it by about sqrt(n) unit roundoffs (2**-24) when the
# roundings are independent; the longest reductions here are the vocabulary's softmax and the
# batch's tokens (n <= 1024, so 32 roundoffs). In bfloat16 the activations are also rounded at
# other points (a shard's partial product is rounded before the cross-shard sum): one bfloat16
# roundoff (2**-9) per step. Over the steps these per-step differences add like a random walk:
# sqrt(STEPS) of them. That bounds the relative difference of a loss or a gradient norm; the
# parameters follow Adam, whose normalised update m/sqrt(v) carries the gradient's relative
# error once from m and half again from v and compounds over the steps: a factor 4 on top.
# Measured on an AMD EPYC (Zen 4) over the seven cases below: losses and gradient norms within
# 1/30 of their bound, parameters within 1/4. A gradient that is wrong on one shard, or
# scaled, moves these by percents to tens of percents from the first step.


def _run_tolerance(bfloat16: bool) -> float:
    return math.sqrt(STEPS) * (tolerances.reordered_sum(1024)
                               + (tolerances.BF16 if bfloat16 else 0.0))


def _initial_params(workdir):
    """The parameters the run started from, made again in this process by the loop's own
    initialisation (create_state with the run's seed)."""
    loaded = textgen_jax.load(str(workdir))
    config = loaded.config
    mesh = partitioning.data_parallel_mesh()
    tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
    state, _ = steps.create_state(loaded.model, tx, config.data.seq_len, mesh, config.seed)
    return loaded.params, state.params, config


@pytest.mark.parametrize("config, accum, extra", [
    ("configs/gpt2.py:tiny", 1, ()),
    ("configs/gpt2.py:tiny", 2, DROPOUT),
    ("configs/gpt2.py:tiny", 2, DROPOUT + BFLOAT16),
    ("configs/gpt.py:tiny", 1, DROPOUT + BFLOAT16),
    ("configs/bert.py:tiny", 1, DROPOUT),
    ("configs/xlm.py:tiny", 1, DROPOUT + BFLOAT16),
    ("configs/bart.py:tiny", 1, DROPOUT),
], ids=lambda v: v if isinstance(v, (str, int)) else "+".join(
    sorted({f.split("=")[0].rsplit(".", 1)[-1] for f in v}) or ["plain"]))
def test_eight_devices_match_one_device_and_restore_on_one(tmp_path, tiny_run, config, accum,
                                                           extra):
    flags = (*FLAGS, f"--config.optim.grad_accum_steps={accum}", *extra)
    tolerance = _run_tolerance(bfloat16=BFLOAT16[0] in extra)
    one = tmp_path / "one_device"
    eight = tmp_path / "eight_devices"
    tiny_run(one, *flags, config=config)
    tiny_run(eight, *flags, *MESH_2X2X2, num_devices=8, config=config)

    losses_one, losses_eight = read_metrics(one), read_metrics(eight)
    assert sorted(losses_one) == sorted(losses_eight) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert losses_eight[step]["loss"] == pytest.approx(losses_one[step]["loss"],
                                                           rel=tolerance)
        # The gradient too (a wrong scale would hide behind AdamW and clipping in the loss).
        assert losses_eight[step]["grad_norm"] == pytest.approx(losses_one[step]["grad_norm"],
                                                                rel=tolerance)
    assert losses_one[STEPS]["loss"] < losses_one[1]["loss"] - 0.05  # it did learn

    # The parameters after the steps, tensor by tensor: how far the two runs' updates differ,
    # against how far the parameters moved.
    # The 8-device checkpoint restores in this 1-device process (textgen_jax.load), onto the
    # same values the 1-device run reached.
    params_one, initial, run_config = _initial_params(one)
    params_eight = textgen_jax.load(str(eight)).params
    assert len(jax.devices()) == 1 and {device for leaf in jax.tree.leaves(params_eight)
                                        for device in leaf.sharding.device_set} == {
        jax.devices()[0]}
    max_step = STEPS * run_config.optim.lr  # Adam (b1**2 < b2) moves an element <= lr a step
    assert tolerances.assert_same_updates(initial, params_one, params_eight,
                                          4 * tolerance, max_step) >= 10


SHARDING_CHECK = r"""
import jax, numpy as np
from textgen_jax import config as config_lib
from textgen_jax.models import build_model
from textgen_jax.training import optimizer, partitioning, steps

config = config_lib.base_config()
config.model.update(num_layers=1, d_model=32, num_heads=4, d_ff=64, max_len=16)
config.mesh.update(data=2, fsdp=2, tensor=2)
mesh = partitioning.make_mesh(config.mesh)
model = build_model(config.model, vocab_size=64)
tx = optimizer.make_optimizer(config.optim, 10)
state, _ = steps.create_state(model, tx, 16, mesh, seed=0)
params = state.params
block = params["block_0"]

def axes(x):
    return tuple(x.sharding.spec) + (None,) * (x.ndim - len(x.sharding.spec))

def shard_shape(x):
    return x.addressable_shards[0].data.shape

# Heads, mlp and vocab split over 'tensor'; the embed dimension over 'fsdp'.
assert axes(block["attention"]["query"]["kernel"]) == ("fsdp", "tensor", None), axes(block["attention"]["query"]["kernel"])
assert shard_shape(block["attention"]["query"]["kernel"]) == (16, 2, 8)
assert axes(block["attention"]["out"]["kernel"]) == ("tensor", None, "fsdp")
assert axes(block["mlp"]["fc_in"]["kernel"]) == ("fsdp", "tensor")
assert shard_shape(block["mlp"]["fc_in"]["kernel"]) == (16, 32)
assert axes(block["mlp"]["fc_out"]["kernel"]) == ("tensor", "fsdp")
assert axes(params["token_embed"]["embedding"]) == ("tensor", "fsdp")
assert shard_shape(params["token_embed"]["embedding"]) == (32, 16)
assert axes(params["position_embed"]["embedding"]) == (None, "fsdp")
assert axes(params["final_norm"]["scale"]) == ("fsdp",)
# Adam's moments are sharded exactly like the parameters they follow.
adam = state.opt_state[1][0]
for moment in (adam.mu, adam.nu):
    flat_p = jax.tree_util.tree_leaves_with_path(params)
    flat_m = dict(jax.tree_util.tree_leaves_with_path(moment))
    for path, leaf in flat_p:
        assert flat_m[path].sharding.is_equivalent_to(leaf.sharding, leaf.ndim), path
# A batch is split over data x fsdp and replicated over tensor.
batch = partitioning.global_batch({"inputs": np.zeros((8, 16), np.int32)}, mesh)["inputs"]
assert axes(batch) == (("data", "fsdp"), None) and shard_shape(batch) == (2, 16)

# Every architecture (both stacks of an encoder-decoder, cross-attention included): each
# attention and MLP kernel and the token table are split over 'tensor' as above.
from flax import traverse_util
EXPECTED = {("query", "kernel"): ("fsdp", "tensor", None), ("key", "kernel"): ("fsdp", "tensor", None),
            ("value", "kernel"): ("fsdp", "tensor", None), ("out", "kernel"): ("tensor", None, "fsdp"),
            ("fc_in", "kernel"): ("fsdp", "tensor"), ("fc_out", "kernel"): ("tensor", "fsdp"),
            ("token_embed", "embedding"): ("tensor", "fsdp")}
for arch, extra in (("gpt", {}), ("bert", {}), ("xlm", {"num_languages": 2}),
                    ("bart", {"num_decoder_layers": 1}),
                    ("xlm", {"encoder_decoder": True, "num_languages": 2})):
    config = config_lib.base_config()
    config.model.update(arch=arch, num_layers=1, d_model=32, num_heads=4, d_ff=64, max_len=16,
                        **extra)
    model = build_model(config.model, vocab_size=64)
    state, _ = steps.create_state(model, tx, 16, mesh, seed=0)
    flat = traverse_util.flatten_dict(state.params)
    for path, leaf in flat.items():
        want = EXPECTED.get(path[-2:])
        if want is not None:
            assert axes(leaf) == want, (arch, path, axes(leaf))
    kinds = {path[-2] for path in flat if path[-2:] in EXPECTED}
    assert kinds == {"query", "key", "value", "out", "fc_in", "fc_out", "token_embed"}, (arch, kinds)
    if extra.get("encoder_decoder") or arch == "bart":
        assert any("cross_attention" in path for path in flat if path[-2:] in EXPECTED), arch
print("OK")
"""


def test_parameters_carry_the_shardings_the_rules_ask_for():
    result = subprocess.run([sys.executable, "-c", SHARDING_CHECK], env=cli_env(8), cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
