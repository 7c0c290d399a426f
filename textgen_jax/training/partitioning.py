"""The mesh and the one list of rules from logical axis names to mesh axes.

Parameters and activations are annotated with logical names in the models; these rules decide
where each lands. The first rule whose mesh axes are still free wins (flax semantics), so for an
activation ('batch', 'length', 'embed') 'batch' takes data+fsdp and 'embed' stays unsharded,
while a parameter ('vocab', 'embed') is split over tensor and fsdp. Under FSDP, what the rules
leave whole on 'fsdp' (biases over heads, mlp or vocab) is then split along a dimension that the
fsdp size divides (`logical_shardings`), so every parameter takes 1/fsdp of its bytes.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from textgen_jax import models
from textgen_jax.config import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
# config.mesh of data_parallel_mesh(): what a restored checkpoint runs on.
DATA_PARALLEL_MESH = {"data": -1, "fsdp": 1, "tensor": 1}

LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("kv", None),
    ("length", None),
    ("layers", None),
)


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
    """Resolves the -1 entry of config.mesh against the device count."""
    sizes = [mesh_config[axis] for axis in MESH_AXES]
    given = f"data={sizes[0]}, fsdp={sizes[1]}, tensor={sizes[2]}"
    if sizes.count(-1) > 1:
        raise ConfigError(f"config.mesh has more than one -1 ({given}); set all but one axis.")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ConfigError(
                f"config.mesh ({given}): {known} devices in the fixed axes do not divide the "
                f"{num_devices} devices available; make their product divide {num_devices}.")
        sizes[sizes.index(-1)] = num_devices // known
    elif known != num_devices:
        raise ConfigError(
            f"config.mesh ({given}) has {known} devices but {num_devices} are available; make "
            f"the product {num_devices} or set one axis to -1.")
    return tuple(sizes)


def make_mesh(mesh_config: ml_collections.ConfigDict,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_config, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def data_parallel_mesh() -> Mesh:
    """Every device on the `data` axis (params replicated, batches split): the mesh that
    restores and evaluates a checkpoint whatever mesh wrote it."""
    return make_mesh(ml_collections.ConfigDict(DATA_PARALLEL_MESH))


def check_divisibility(config: ml_collections.ConfigDict, mesh: Mesh, vocab_size: int) -> None:
    """Errors, before anything compiles, for sizes the mesh cannot split evenly."""
    tensor, fsdp = mesh.shape["tensor"], mesh.shape["fsdp"]
    data_parallel = mesh.shape["data"] * fsdp
    m = config.model
    sizes = {**models.spec_for(m).tensor_split_sizes(), "the vocabulary size": vocab_size}
    for name, value in sizes.items():
        if value % tensor:
            raise ConfigError(f"config.mesh.tensor={tensor} does not divide {name}={value}; "
                              f"pick a tensor size that divides it.")
    if m.d_model % fsdp:
        raise ConfigError(f"config.mesh.fsdp={fsdp} does not divide config.model.d_model="
                          f"{m.d_model}; pick an fsdp size that divides it.")
    batch, accum = config.data.global_batch_size, config.optim.grad_accum_steps
    if batch % (data_parallel * accum):
        raise ConfigError(
            f"config.data.global_batch_size={batch} does not split into "
            f"config.optim.grad_accum_steps={accum} micro-batches across {data_parallel} "
            f"data-parallel devices (mesh data={mesh.shape['data']} x fsdp={fsdp}); make it a "
            f"multiple of {data_parallel * accum}.")
    if batch % jax.process_count():
        raise ConfigError(f"config.data.global_batch_size={batch} does not divide across "
                          f"{jax.process_count()} processes.")


def resolve_input_shards(config: ml_collections.ConfigDict) -> int:
    """Sets config.data.input_shards (0 = one per process) and checks that the processes can
    split it and the global batch evenly."""
    processes = jax.process_count()
    shards = config.data.input_shards or processes
    if shards % processes:
        raise ConfigError(f"config.data.input_shards={shards} does not split across {processes} "
                          f"processes; use a multiple of {processes} (or 0).")
    if config.data.global_batch_size % shards:
        raise ConfigError(f"config.data.global_batch_size={config.data.global_batch_size} does "
                          f"not divide into config.data.input_shards={shards}; use a multiple.")
    config.data.input_shards = shards
    return shards


def process_dataset(dataset_fn, config: ml_collections.ConfigDict, tokenizer, split: str, *,
                    shuffle: bool, repeat: bool):
    """This process's batches [global_batch / process_count, ...]: the rows of its input shards
    (shards process_index * k ... + k - 1, k = input_shards / process_count), concatenated.

    `dataset_fn` is an objective's dataset(config, tokenizer, split, *, process_index,
    process_count, shuffle, repeat). One shard per process is the plain per-host pipeline.
    """
    shards = resolve_input_shards(config)
    per_process = shards // jax.process_count()
    first = jax.process_index() * per_process
    datasets = [dataset_fn(config, tokenizer, split, process_index=first + i,
                           process_count=shards, shuffle=shuffle, repeat=repeat)
                for i in range(per_process)]
    if per_process == 1:
        return datasets[0]
    import grain
    # Round-robin over the shards (one batch of each), stacked, then concatenated on rows.
    mixed = grain.IterDataset.mix(datasets, [1.0] * per_process).batch(per_process)
    return mixed.map(lambda batch: {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()})


def _split_over_fsdp(spec: PartitionSpec, shape: tuple[int, ...],
                     mesh: Mesh) -> PartitionSpec:
    """`spec` with 'fsdp' added on the largest dimension of `shape` that it divides, when the
    rules left the array whole on 'fsdp' (biases over heads, mlp or vocab; the 'layers' axis
    of scanned stacks); unchanged when no dimension divides (as MaxText and T5X shard)."""
    fsdp = mesh.shape["fsdp"]
    entries = list(spec) + [None] * (len(shape) - len(spec))
    as_tuples = [() if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
                 for entry in entries]
    if fsdp == 1 or any("fsdp" in axes for axes in as_tuples):
        return spec
    local = [size // math.prod(mesh.shape[axis] for axis in axes)
             for size, axes in zip(shape, as_tuples)]
    candidates = [dim for dim in range(len(shape)) if local[dim] % fsdp == 0]
    if not candidates:
        return spec
    dim = max(candidates, key=lambda d: local[d])
    entries[dim] = as_tuples[dim] + ("fsdp",) if as_tuples[dim] else "fsdp"
    return PartitionSpec(*entries)


def logical_shardings(boxed_tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for a tree of nn.LogicallyPartitioned values (unannotated = replicated
    by the rules). Under FSDP every array with a dimension that the fsdp size divides is split
    over 'fsdp', so parameters and optimizer state take 1/fsdp of their bytes per device."""
    is_spec = lambda x: isinstance(x, PartitionSpec)  # noqa: E731
    specs = nn.logical_to_mesh(nn.get_partition_spec(boxed_tree), LOGICAL_AXIS_RULES)
    specs = jax.tree.map(lambda spec, leaf: _split_over_fsdp(spec, leaf.shape, mesh), specs,
                         nn.meta.unbox(boxed_tree), is_leaf=is_spec)
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=is_spec)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batch arrays [batch, ...] split on their first axis over the data-parallel axes (any
    rank: token rows [batch, length] as well as per-example labels [batch])."""
    spec = nn.logical_to_mesh_axes(("batch",), LOGICAL_AXIS_RULES)
    return NamedSharding(mesh, PartitionSpec(*spec))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded over the data-parallel axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v)
            for k, v in local_batch.items()}
