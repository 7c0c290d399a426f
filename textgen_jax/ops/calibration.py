"""Measurements of this machine that choose backend numerics: made at first use, cached.

Which compute dtype trains faster on a CPU, and which kernel layout a decoding step should
read, differ between CPUs (AMX, AVX-512 BF16 or neither; cache sizes; memory bandwidth), so
they are measured rather than tuned once on one machine. Each measurement takes a second or
two, is stored in `cache_path()` under a key naming the machine (CPU model and ISA flags, core
count, jax version), and is reused by every later run on that machine. `TEXTGEN_JAX_CACHE`
moves the cache; deleting the file measures again.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import jax

# The CPU features that change which dtype or layout is fastest.
_ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")


def cache_path() -> Path:
    """The calibration file: $TEXTGEN_JAX_CACHE/calibration.json, default ~/.cache/textgen_jax."""
    root = os.environ.get("TEXTGEN_JAX_CACHE") or Path.home() / ".cache" / "textgen_jax"
    return Path(root).expanduser() / "calibration.json"


def _cpu_description() -> str:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:  # not Linux: the model name from platform only
        pass
    return f"{model} [{' '.join(f for f in _ISA_FLAGS if f in flags)}]"


def machine_key() -> str:
    """What a measurement holds for: the backend's devices (on CPU: model, ISA flags, cores)
    and the jax version."""
    device = jax.local_devices()[0]
    hardware = (_cpu_description() + f" x{os.cpu_count()}" if device.platform == "cpu"
                else device.device_kind)
    return f"{device.platform} {hardware} jax {jax.__version__}"


def _load() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):  # none yet, or unreadable: measure again
        return {}


def _store(entries: dict) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False,
                                         suffix=".tmp") as tmp:
            json.dump(entries, tmp, indent=1, sort_keys=True)
        os.replace(tmp.name, path)  # atomic: a concurrent reader sees the old or the new file
    except OSError:  # a read-only home: the measurement still serves this process
        pass


def measured(name: str, measure: Callable[[], dict]) -> dict:
    """Measurement `name` of this machine: the cached one, or `measure()` run now and cached.
    The result carries `machine` (machine_key) and `cached` (whether it came from the file).

    The first use may come while a model is being traced (a layout is chosen as a matmul is
    traced): the measurement then still runs on the device, not into the trace, where every
    operation would be staged and every timing that of tracing alone."""
    key = f"{name} | {machine_key()}"
    entries = _load()
    if key in entries:
        return {**entries[key], "cached": True}
    with jax.ensure_compile_time_eval():
        result = dict(measure(), machine=machine_key())
    _store({**_load(), key: result})
    return {**result, "cached": False}


def seconds(runs: dict[str, Callable[[], object]], repeats: int = 7) -> dict[str, float]:
    """{name: the fastest of `repeats` timed calls of runs[name]} (each call blocks until
    done), after one untimed call of each (the compile). The calls alternate between the
    runs, so that other work on the machine slows each alike, and the fastest call is the
    least disturbed one."""
    for run in runs.values():
        run()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best
