"""Metrics: JSON lines and TensorBoard in the workdir, one progress line per log step, MFU."""

from __future__ import annotations

import json
import os
import time
from typing import IO, Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from textgen_jax import ops
from textgen_jax.ops import calibration

# Dense peak FLOP/s per chip for MFU, by device kind substring (bfloat16 / float32).
_ACCELERATOR_PEAK_FLOPS = {
    "H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12),
    "L4": (121e12, 30e12), "V100": (125e12, 15.7e12),
    "TPU v6": (918e12, 918e12), "TPU v5p": (459e12, 459e12), "TPU v5 lite": (197e12, 197e12),
    "TPU v5e": (197e12, 197e12), "TPU v4": (275e12, 275e12), "TPU v3": (123e12, 123e12),
}


def _append_to(path: epath.Path) -> IO[str]:
    """A text handle that appends to `path`. An object store (gs://) has no append: there
    the file is rewritten with what it held, and the new lines land when it is closed."""
    if "://" not in os.fspath(path) or not path.exists():
        return path.open("a", encoding="utf-8")
    previous = path.read_text(encoding="utf-8")
    handle = path.open("w", encoding="utf-8")
    handle.write(previous)
    return handle


class _RecordFile:
    """write, flush and close of a binary handle, and no fileno: tensorboardX fsyncs any
    handle that has one, which an fsspec (gs://) file refuses."""

    def __init__(self, handle: IO[bytes]):
        self.write, self.flush, self.close = handle.write, handle.flush, handle.close


class _EpathRecordFiles:
    """tensorboardX's event-file factory for a URI scheme: through etils.epath, like every
    other workdir file (tensorboardX's own gs:// writer would need google-cloud-storage)."""

    def open(self, path: str) -> _RecordFile:
        return _RecordFile(epath.Path(path).open("wb"))

    def directory_check(self, path: str) -> None:
        epath.Path(path).mkdir(parents=True, exist_ok=True)


def keep_until(path: epath.Path, last_step: int) -> int:
    """Drops the records of `path` (metrics.jsonl) after step `last_step` (all of them for -1)
    and any torn line a crash left; returns how many it dropped."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            keep = json.loads(line)["step"] <= last_step
        except (ValueError, KeyError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        temporary = path.parent / f".{path.name}.tmp"
        temporary.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        temporary.replace(path)
    return dropped


class MetricsWriter:
    """Appends metrics to workdir/metrics.jsonl and TensorBoard events (process 0 only);
    both go through etils.epath, so the workdir may be a gs:// URI.

    `start_step`: the step the training loop starts from (a resume's restored step, 0 for a
    fresh run). What an earlier run logged after it is dropped, since this run logs those steps
    again: rows of metrics.jsonl, and TensorBoard's events through its purge_step. Each step
    is then logged once. None (a writer outside the loop) keeps everything and appends.
    """

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True,
                 start_step: int | None = None):
        self.enabled = enabled
        self._tensorboard = None
        self.dropped = 0
        if enabled:
            from tensorboardX import SummaryWriter, record_writer
            workdir = epath.Path(workdir)
            scheme = os.fspath(workdir).split("://")[0] if "://" in os.fspath(workdir) else ""
            if scheme:
                record_writer.register_writer_factory(scheme, _EpathRecordFiles())
            purge_step = None
            if start_step is not None:
                # A fresh run (step 0) logs its step-0 evaluation again: nothing before stays.
                self.dropped = keep_until(workdir / "metrics.jsonl", start_step or -1)
                purge_step = start_step + 1 if start_step else 0
            self._jsonl = _append_to(workdir / "metrics.jsonl")
            self._tensorboard = SummaryWriter(os.fspath(workdir / "tensorboard"),
                                              purge_step=purge_step)

    def write(self, step: int, metrics: dict[str, Any], split: str) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, "time": time.time()}
        record.update({k: float(v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()  # a crash never loses what was logged
        for name, value in metrics.items():
            self._tensorboard.add_scalar(f"{split}/{name}", float(value), int(step))
        self._tensorboard.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tensorboard.close()


def flops_per_token(num_layers: int, d_model: int, seq_len: int, non_embedding_params: int) -> float:
    """Training FLOPs per token: 6N + 12 L d T (Kaplan et al. 2020, with attention), where L
    counts attention layers (`ArchitectureSpec.attention_layer_count`)."""
    return 6 * non_embedding_params + 12 * num_layers * d_model * seq_len


def _measured_matmul_flops(dtype: str, size: int = 1024) -> float:
    """FLOP/s of a size^3 matmul in `dtype` on this CPU, measured once per machine and cached
    (ops.calibration): every run's MFU has the same denominator, however busy the machine
    was when a run started."""
    def measure() -> dict:
        a = jnp.ones((size, size), dtype)
        matmul = jax.jit(lambda x, y: jax.lax.dot(x, y, preferred_element_type=jnp.float32))
        return calibration.seconds({"s": lambda: matmul(a, a).block_until_ready()})

    return 2 * size**3 / calibration.measured(f"matmul_{size}_{dtype}", measure)["s"]


def peak_flops_per_device(dtype: str) -> float:
    """Peak FLOP/s of one local device: a table for accelerators, a measured matmul on CPU."""
    device = jax.local_devices()[0]
    if device.platform != "cpu":
        for kind, (bf16, f32) in _ACCELERATOR_PEAK_FLOPS.items():
            if kind.lower() in device.device_kind.lower():
                return bf16 if dtype == "bfloat16" else f32
    # CPU: the same framework's matmul in the same dtype (bench/README.md); all simulated
    # devices share the cores, so the host's figure is split among them.
    return _measured_matmul_flops(dtype) / jax.local_device_count()


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def progress_line(step: int, num_steps: int, metrics: dict[str, float], tokens_per_s: float,
                  mfu: float, eta_s: float) -> str:
    return (f"step {step:>6}/{num_steps} | loss {metrics['loss']:.4f} | "
            f"lr {metrics.get('lr', float('nan')):.2e} | {tokens_per_s:,.0f} tok/s | "
            f"MFU {100 * mfu:.1f}% | ETA {format_duration(eta_s)}")


def log_info(message: str) -> None:
    """Prints on process 0 only (one line per log step, not one per host)."""
    if jax.process_index() == 0:
        print(message, flush=True)


def count_params(params: Any, exclude_embeddings: bool = False) -> int:
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [getattr(entry, "key", "") for entry in path]
        if exclude_embeddings and "embedding" in names:
            continue
        total += int(np.prod(leaf.shape))
    return total


def bytes_per_device(abstract_tree: Any) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs carrying shardings (the largest
    shard of each leaf, so uneven splits count their bigger part)."""
    total = 0
    for leaf in jax.tree.leaves(abstract_tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += int(np.prod(shape)) * np.dtype(leaf.dtype).itemsize
    return total


def activation_bytes_per_device(config: Any, mesh_shape: dict[str, int],
                                attention_layers: int) -> int:
    """Estimated activations kept for the backward pass on one device: per layer
    s*b*h*(10 + 24/t + 5*a*s/(h*t)) bytes at 16 bits (Korthikanti et al. 2022, eq. 2 with
    tensor parallelism t), twice that in float32, plus the float32 logits and their gradient."""
    m, d = config.model, config.data
    rows = max(d.global_batch_size // (mesh_shape["data"] * mesh_shape["fsdp"])
               // config.optim.grad_accum_steps, 1)
    s, h, a, t = d.seq_len, m.d_model, m.num_heads, mesh_shape["tensor"]
    scale = np.dtype(ops.compute_dtype(m.dtype)).itemsize / 2
    per_layer = s * rows * h * (10 + 24 / t + 5 * a * s / (h * t)) * scale
    logits = 2 * rows * s * m.vocab_size / t * 4
    return int(attention_layers * per_layer + logits)


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size:.0f} B"
        size /= 1024
    raise AssertionError  # unreachable


def memory_report(num_params: int, param_bytes: int, optimizer_bytes: int,
                  activation_bytes: int) -> str:
    total = 2 * param_bytes + optimizer_bytes + activation_bytes
    return (f"memory per device: parameters {format_bytes(param_bytes)} (of {num_params:,} "
            f"parameters), gradients {format_bytes(param_bytes)}, optimizer "
            f"{format_bytes(optimizer_bytes)}, activations ~{format_bytes(activation_bytes)} "
            f"(estimated); total ~{format_bytes(total)}")


def check_device_memory(needed_bytes: int, devices: Any = None) -> None:
    """Errors before compiling when a device reports less memory than the run needs; backends
    that report none (CPU) are not checked."""
    from textgen_jax.config import ConfigError

    for device in devices if devices is not None else jax.local_devices():
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        if limit and needed_bytes > limit:
            raise ConfigError(
                f"the run needs ~{needed_bytes / 2**30:.2f} GiB per device but {device} has "
                f"{limit / 2**30:.2f} GiB; shard more (config.mesh.fsdp, config.mesh.tensor), "
                "lower config.data.global_batch_size or raise config.optim.grad_accum_steps.")
