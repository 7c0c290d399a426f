"""The mesh from config.mesh, the divisibility checks, and where the logical rules put params.

Checks that need 8 devices run in one subprocess (the device count is fixed when jax starts).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_collections
import pytest

from textgen_jax.config import ConfigError
from textgen_jax.training import partitioning

REPO = Path(__file__).resolve().parents[2]


def _mesh_config(data: int, fsdp: int, tensor: int) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})


@pytest.mark.parametrize("sizes, expected", [
    ((-1, 1, 1), (8, 1, 1)),
    ((2, -1, 2), (2, 2, 2)),
    ((1, 2, -1), (1, 2, 4)),
    ((2, 4, 1), (2, 4, 1)),
])
def test_mesh_shape_resolves_the_free_axis(sizes, expected):
    assert partitioning.mesh_shape(_mesh_config(*sizes), 8) == expected


@pytest.mark.parametrize("sizes, fragments", [
    ((-1, -1, 1), ["more than one -1", "data=-1, fsdp=-1, tensor=1"]),
    ((-1, 3, 1), ["data=-1, fsdp=3, tensor=1", "do not divide", "8 devices"]),
    ((2, 2, 1), ["data=2, fsdp=2, tensor=1", "has 4 devices but 8 are available"]),
])
def test_mesh_shape_errors_name_the_sizes(sizes, fragments):
    with pytest.raises(ConfigError) as error:
        partitioning.mesh_shape(_mesh_config(*sizes), 8)
    for fragment in fragments:
        assert fragment in str(error.value)


_EIGHT_DEVICE_SCRIPT = textwrap.dedent("""
    import json, math
    import flax.linen as nn
    import jax
    from textgen_jax import models
    from textgen_jax.config import ConfigError, base_config
    from textgen_jax.training import partitioning

    def config_with(mesh, **model):
        config = base_config()
        config.mesh.data, config.mesh.fsdp, config.mesh.tensor = mesh
        config.model.update(model)
        return config

    def check(config, vocab):
        try:
            partitioning.check_divisibility(config, partitioning.make_mesh(config.mesh), vocab)
            return None
        except ConfigError as error:
            return str(error)

    out = {"device_count": jax.device_count(), "errors": {}, "shardings": {}}
    out["mesh"] = dict(partitioning.make_mesh(config_with((2, -1, 2)).mesh).shape)
    cases = {
        "fits": (config_with((2, 2, 2)), 1000),
        "tensor_heads": (config_with((1, 1, 8)), 1000),
        "tensor_d_ff": (config_with((-1, 1, 4), d_ff=510), 1000),
        "tensor_vocab": (config_with((-1, 1, 2)), 1001),
        "fsdp_d_model": (config_with((1, 8, 1), d_model=132, num_heads=4), 1000),
    }
    batch = config_with((-1, 1, 1))
    batch.optim.grad_accum_steps = 4
    cases["batch_accum"] = (batch, 1000)  # 16 rows into 4 micro-batches over 8 devices
    split = config_with((4, 2, 1))
    split.data.global_batch_size = 12
    cases["batch_data_fsdp"] = (split, 1000)
    for name, (config, vocab) in cases.items():
        out["errors"][name] = check(config, vocab)

    # Where each parameter lands, for meshes that pass the check.
    for mesh_sizes, model in [((2, 2, 2), {}), ((1, 1, 8), dict(num_heads=8)),
                              ((1, 8, 1), {})]:
        config = config_with(mesh_sizes, **model)
        mesh = partitioning.make_mesh(config.mesh)
        assert check(config, 1024) is None
        module = models.build_model(config.model, 1024)
        boxed = jax.eval_shape(lambda: module.init(jax.random.key(0),
                                                   module.example_batch(8))["params"])
        shardings = partitioning.logical_shardings(boxed, mesh)
        flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(boxed))[0]
        out["shardings"][str(mesh_sizes)] = {
            "mesh": dict(mesh.shape),
            "params": {jax.tree_util.keystr(path): [list(leaf.shape),
                                                    [list(p) if isinstance(p, tuple) else p
                                                     for p in sharding.spec]]
                       for (path, leaf), sharding in zip(flat, jax.tree.leaves(shardings))},
        }
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", _EIGHT_DEVICE_SCRIPT], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["device_count"] == 8
    return out


def test_make_mesh_resolves_minus_one_over_the_devices(eight_devices):
    assert eight_devices["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}


@pytest.mark.parametrize("case, fragments", [
    ("fits", None),
    ("tensor_heads", ["config.mesh.tensor=8", "config.model.num_heads=4"]),
    ("tensor_d_ff", ["config.mesh.tensor=4", "config.model.d_ff=510"]),
    ("tensor_vocab", ["config.mesh.tensor=2", "vocabulary size=1001"]),
    ("fsdp_d_model", ["config.mesh.fsdp=8", "config.model.d_model=132"]),
    ("batch_accum", ["config.data.global_batch_size=16", "config.optim.grad_accum_steps=4",
                     "8 data-parallel devices", "multiple of 32"]),
    ("batch_data_fsdp", ["config.data.global_batch_size=12", "data=4 x fsdp=2",
                         "multiple of 8"]),
])
def test_check_divisibility_names_the_values(eight_devices, case, fragments):
    message = eight_devices["errors"][case]
    if fragments is None:
        assert message is None
    else:
        assert message is not None, case
        for fragment in fragments:
            assert fragment in message, (fragment, message)


def _axes(entry) -> list[str]:
    return [] if entry is None else ([entry] if isinstance(entry, str) else list(entry))


def test_meshes_that_pass_the_check_split_every_parameter_evenly(eight_devices):
    for mesh_sizes, layout in eight_devices["shardings"].items():
        mesh = layout["mesh"]
        sharded = set()
        for name, (shape, spec) in layout["params"].items():
            assert len(spec) <= len(shape), name
            for size, entry in zip(shape, spec):
                parts = math.prod(mesh[axis] for axis in _axes(entry))
                assert size % parts == 0, (mesh_sizes, name, shape, spec)
                sharded.update(_axes(entry))
        # Every non-trivial mesh axis other than data holds some parameter.
        assert {axis for axis in ("fsdp", "tensor") if mesh[axis] > 1} <= sharded, mesh_sizes
        assert "data" not in sharded  # parameters are replicated over pure data parallelism



def test_one_process_reading_two_input_shards_gets_the_rows_of_two_processes(
        stdlib_data_dir, stdlib_tokenizer):
    import numpy as np

    from textgen_jax import objectives
    from textgen_jax.config import base_config

    config = base_config()
    config.data.update(data_dir=stdlib_data_dir, seq_len=32, global_batch_size=8,
                       input_shards=2)
    objective = objectives.pretraining_objective(config)
    mine = iter(partitioning.process_dataset(objective.dataset, config, stdlib_tokenizer,
                                             "train", shuffle=True, repeat=True))
    processes = [iter(objective.dataset(config, stdlib_tokenizer, "train", process_index=i,
                                        process_count=2, shuffle=True, repeat=True))
                 for i in range(2)]
    for _ in range(3):
        batch, parts = next(mine), [next(p) for p in processes]
        assert sorted(batch) == sorted(parts[0])
        for key in batch:  # process 0's rows, then process 1's: the global batch of 2 hosts
            np.testing.assert_array_equal(batch[key], np.concatenate([p[key] for p in parts]))

    config.data.input_shards = 3
    with pytest.raises(ConfigError, match="global_batch_size=8 does not divide into "
                                          "config.data.input_shards=3"):
        partitioning.process_dataset(objective.dataset, config, stdlib_tokenizer, "train",
                                     shuffle=True, repeat=True)
