"""1 device vs 8 simulated devices (data=2, fsdp=2, tensor=2), for every architecture: same
losses, right shardings, and a checkpoint written on 8 devices restores in a fresh 1-device
process."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO, cli_env, read_metrics

STEPS = 20
FLAGS = (f"--config.train.num_steps={STEPS}", "--config.train.log_every=1",
         f"--config.train.eval_every={STEPS}", f"--config.train.checkpoint_every={STEPS}")
MESH_2X2X2 = ("--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2")


@pytest.mark.parametrize("config, accum", [
    ("configs/gpt2.py:tiny", 1), ("configs/gpt2.py:tiny", 2), ("configs/gpt.py:tiny", 1),
    ("configs/bert.py:tiny", 1), ("configs/xlm.py:tiny", 1), ("configs/bart.py:tiny", 1),
])
def test_eight_devices_match_one_device_and_restore_on_one(tmp_path, tiny_run, config, accum):
    accum_flag = f"--config.optim.grad_accum_steps={accum}"
    one = tmp_path / "one_device"
    eight = tmp_path / "eight_devices"
    tiny_run(one, *FLAGS, accum_flag, config=config)
    tiny_run(eight, *FLAGS, accum_flag, *MESH_2X2X2, num_devices=8, config=config)

    losses_one, losses_eight = read_metrics(one), read_metrics(eight)
    assert sorted(losses_one) == sorted(losses_eight) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert losses_eight[step]["loss"] == pytest.approx(losses_one[step]["loss"], rel=1e-5)
        # The gradient too (a wrong scale would hide behind AdamW and clipping in the loss).
        assert losses_eight[step]["grad_norm"] == pytest.approx(losses_one[step]["grad_norm"],
                                                                rel=1e-4)
    assert losses_one[STEPS]["loss"] < losses_one[1]["loss"] - 0.05  # it did learn

    # The 8-device checkpoint, restored by textgen_jax.load in a fresh 1-device process.
    evaluated = tiny_run(eight, command="eval", num_devices=1)
    restored_loss = float(re.search(r"loss ([0-9.]+)", evaluated.stdout).group(1))
    assert restored_loss == pytest.approx(read_metrics(eight, "eval")[STEPS]["loss"], rel=1e-5)


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
