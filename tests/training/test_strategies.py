"""Each sharding strategy on 8 simulated devices (data, fsdp, tensor, data+fsdp+tensor) trains
every architecture exactly like 1 device; FSDP stores 1/8 of every parameter per device;
config.model.remat leaves the loss and gradients unchanged.

One fresh 8-device process runs the real train step (partitioning rules, jit shardings,
optimizer) on real batches of each objective's pipeline: one compile per strategy and
architecture, no CLI start-up per run (tests/training/test_multidevice.py covers the CLI).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import tolerances
from conftest import REPO, TINY_OVERRIDES, cli_env

STEPS = 3
# data+fsdp+tensor (2, 2, 2) runs 20 steps through the CLI in test_multidevice.py.
STRATEGIES = {"data": (8, 1, 1), "fsdp": (1, 8, 1), "tensor": (1, 1, 8)}
ARCHITECTURES = ("gpt2", "gpt", "bert", "xlm", "bart")
# How far a strategy's losses may drift from one device's, as in test_multidevice.py: the same
# function summed in another order (partial sums per shard, then across shards), each step's
# longest float32 reduction <= 1024 terms (the vocabulary's softmax, the batch's 256 tokens),
# those per-step differences adding like a random walk over the steps: 3.3e-6.
LOSSES = math.sqrt(STEPS) * tolerances.reordered_sum(1024)
# Remat recomputes the blocks' forward pass inside the backward one, which XLA may fuse and
# order otherwise: float32, 2 layers whose longest reduction is the vocabulary's (1000), for
# the loss and for the gradients (relative to their largest element).
REMAT = tolerances.network(layers=2, width=1024)

SCRIPT = r"""
import importlib.util, json, sys
import jax, numpy as np
from textgen_jax import models, objectives
from textgen_jax.data.tokenizer import Tokenizer
from textgen_jax.training import loop, metrics as metrics_lib, optimizer, partitioning, steps

data_dir, tokenizer_file, num_steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
REMAT_ARCHITECTURES = ("gpt2", "bert", "bart")  # BART: encoder and decoder blocks
overrides, strategies = json.loads(sys.argv[4]), json.loads(sys.argv[5])
tokenizer = Tokenizer.load(tokenizer_file)


def tiny_config(arch):
    spec = importlib.util.spec_from_file_location("preset", f"configs/{arch}.py")
    preset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preset)
    config = preset.get_config("tiny")
    for flag in overrides:
        key, value = flag[len("--config."):].split("=")
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], str) else value
    config.data.data_dir = data_dir
    config.model.num_heads = 8  # tensor=8 must divide the heads
    config.optim.warmup_steps = 1  # a nonzero learning rate from the second step on
    loop.resolve_vocab_size(config, tokenizer.vocab_size)
    return config


def train(shape, devices):
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = shape
    mesh = partitioning.make_mesh(config.mesh, devices)
    partitioning.check_divisibility(config, mesh, config.model.vocab_size)
    state, shardings = steps.create_state(model, tx, config.data.seq_len, mesh, config.seed)
    param_bytes = sum(leaf.addressable_shards[0].data.nbytes
                      for leaf in jax.tree.leaves(state.params))
    # Parameters a device holds whole although one of their dimensions splits over the devices.
    whole = [jax.tree_util.keystr(path)
             for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)
             if leaf.addressable_shards[0].data.nbytes == leaf.nbytes
             and any(size % len(devices) == 0 for size in leaf.shape)]
    # The start-up memory report counts the same bytes from the abstract state.
    abstract = steps.state_shardings(model, tx, config.data.seq_len, mesh)[1]
    assert metrics_lib.bytes_per_device(abstract.params) == param_bytes, shape
    train_step = steps.jit_train_step(steps.make_train_step(model, objective.loss_fn, tx),
                                      shardings, mesh)
    losses = []
    with steps.activate(mesh):
        for batch in batches:
            state, metrics = train_step(state, partitioning.global_batch(batch, mesh), rng)
            losses.append(float(metrics["loss"]))
    return losses, param_bytes, whole


def remat_differences():
    # config.model.remat: the loss and gradients of the first batch, blocks rematerialised.
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, 1, 1
    mesh = partitioning.make_mesh(config.mesh, jax.devices()[:1])
    params = steps.create_state(model, tx, config.data.seq_len, mesh, 0)[0].params
    gradients = {}
    for remat in ("none", "full", "save_dots"):
        config.model.remat = remat
        remat_model = models.build_model(config.model, config.model.vocab_size)
        loss = lambda p: objective.loss_fn(remat_model, p, batches[0], rng,
                                           deterministic=False)["loss"]
        assert ("remat" in str(jax.make_jaxpr(jax.grad(loss))(params))) == (remat != "none")
        gradients[remat] = jax.jit(jax.value_and_grad(loss))(params)
    reference_loss, reference_grads = gradients.pop("none")
    scale = max(float(abs(g).max()) for g in jax.tree.leaves(reference_grads))
    return {remat: [abs(float(value - reference_loss)) / abs(float(reference_loss)),
                    max(float(abs(a - b).max()) for a, b in zip(
                        jax.tree.leaves(grads), jax.tree.leaves(reference_grads))) / scale]
            for remat, (value, grads) in gradients.items()}


for arch in json.loads(sys.argv[6]):
    config = tiny_config(arch)
    objective = objectives.pretraining_objective(config)
    iterator = iter(objective.dataset(config, tokenizer, "train", process_index=0,
                                      process_count=1, shuffle=True, repeat=True))
    batches = [next(iterator) for _ in range(num_steps)]
    model = models.build_model(config.model, config.model.vocab_size)
    tx = optimizer.make_optimizer(config.optim, num_steps)
    rng = jax.random.key(1)
    result = {"one": train((1, 1, 1), jax.devices()[:1])}
    for name, shape in strategies.items():
        result[name] = train(tuple(shape), jax.devices())
    # Every architecture's blocks are the same TransformerBlock: pre-LN and post-LN suffice.
    result["remat"] = remat_differences() if arch in REMAT_ARCHITECTURES else {}
    print(f"RESULT {arch} " + json.dumps(result), flush=True)
"""


def test_every_strategy_matches_one_device_for_every_architecture(stdlib_data_dir,
                                                                   stdlib_tokenizer, tmp_path):
    tokenizer_file = tmp_path / "tokenizer.model"
    stdlib_tokenizer.save(tokenizer_file)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, stdlib_data_dir, str(tokenizer_file), str(STEPS),
         json.dumps(TINY_OVERRIDES), json.dumps(STRATEGIES), json.dumps(ARCHITECTURES)],
        env=cli_env(8), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    results = dict(line.split(" ", 2)[1:] for line in result.stdout.splitlines()
                   if line.startswith("RESULT "))
    assert sorted(results) == sorted(ARCHITECTURES)
    for arch, text in results.items():
        runs = json.loads(text)
        remat = runs.pop("remat")
        baseline, replicated_bytes, _ = runs.pop("one")
        worst = {}
        for strategy, (losses, _, _) in runs.items():
            worst[strategy] = max(abs(a - b) / abs(b) for a, b in zip(losses, baseline))
            assert losses == pytest.approx(baseline, rel=LOSSES), (arch, strategy)
        fsdp_ratio, fsdp_whole = runs["fsdp"][1] / replicated_bytes, runs["fsdp"][2]
        print(f"{arch}: max relative loss difference {worst}; FSDP bytes per device / "
              f"replicated = {fsdp_ratio:.6f}; remat (relative loss difference, max gradient "
              f"difference / max gradient) {remat}")
        # Every parameter with a dimension divisible by 8 is split 8 ways, biases and norm
        # scales included; only what no dimension divides (BERT's 2-class NSP bias) stays whole.
        assert not fsdp_whole, (arch, fsdp_whole)
        # Integer byte counts: what no dimension divides moves the ratio from 1/8 by 7 times
        # its share of the bytes (1e-4 for BERT); 1e-3 allows about 20 such floats, and any
        # parameter a dimension divides that stays whole is named above.
        assert fsdp_ratio == pytest.approx(1 / 8, rel=1e-3), arch
        for name, (loss_difference, gradient_difference) in remat.items():
            assert loss_difference <= REMAT and gradient_difference <= REMAT, (arch, name)
