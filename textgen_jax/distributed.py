"""Joining JAX's multi-controller runtime: one process per host, all running the same program.

`initialize` runs before anything touches a JAX backend. It joins a cluster named by flags or
environment variables (coordinator address, process count, process id), or the TPU pod / SLURM
job JAX detects by itself, and does nothing for a single process. A coordinator that cannot be
reached and a process id out of range are clear errors, never a hang; a host that dies later
makes the others exit after `heartbeat_timeout_s` (JAX's coordination service).
"""

from __future__ import annotations

import os
import socket
import sys
import time

from textgen_jax.config import ConfigError

MODES = ("auto", "on", "off")


class DistributedError(ConfigError):
    """A multi-process setup that cannot work; the message names the value and the fix."""


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def cluster_detected() -> bool:
    """A SLURM job of several tasks, or a Cloud TPU pod of several workers (JAX then finds the
    coordinator, process count and id by itself)."""
    if os.environ.get("SLURM_JOB_ID") and (_env_int("SLURM_NTASKS") or 1) > 1:
        return True
    workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([w for w in workers.split(",") if w]) > 1


def _wait_for_coordinator(address: str, timeout_s: float) -> None:
    """Polls the coordinator's port, so an unreachable one is an error naming it (JAX's own
    connect would abort the process with a stack trace)."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"cannot reach the coordinator at {address} within {timeout_s:g} s ({error}); "
                    "start process 0 with the same --coordinator_address, check the host and "
                    "port (and firewalls), or raise --distributed_timeout.") from None
            time.sleep(0.2)


def initialize(mode: str = "auto", coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None,
               timeout_s: int = 300, heartbeat_timeout_s: int = 100) -> bool:
    """Joins the cluster when one is named or detected; returns whether it did.

    Flags win over the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
    mode 'on' always calls jax.distributed.initialize (JAX detects TPU pods, SLURM, MPI);
    'off' never does; 'auto' does when a coordinator or more than one process is named, or a
    SLURM job / TPU pod of several hosts is detected.
    """
    if mode not in MODES:
        raise DistributedError(f"--distributed={mode!r}: use one of {MODES}.")
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    named = coordinator_address is not None or (num_processes or 1) > 1
    if mode == "off" or (mode == "auto" and not named and not cluster_detected()):
        return False

    import jax

    kwargs = {}
    if named:
        if coordinator_address is None or num_processes is None or process_id is None:
            raise DistributedError(
                f"a multi-process run needs all of --coordinator_address (now "
                f"{coordinator_address!r}), --num_processes ({num_processes!r}) and --process_id "
                f"({process_id!r}), as flags or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / "
                "JAX_PROCESS_ID.")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise DistributedError(
                f"--process_id={process_id} is outside [0, {num_processes}) for --num_processes="
                f"{num_processes}; give the processes the distinct ids 0 .. {num_processes - 1}.")
        if ":" not in coordinator_address:
            raise DistributedError(f"--coordinator_address={coordinator_address!r}: use HOST:PORT.")
        if process_id != 0:  # process 0 hosts the coordinator; the others wait for it
            _wait_for_coordinator(coordinator_address, timeout_s)
        kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                      process_id=process_id)
    jax.distributed.initialize(**kwargs, initialization_timeout=int(timeout_s),
                               heartbeat_timeout_seconds=int(heartbeat_timeout_s))
    return True


# Runtime errors that mean a peer process is gone (gloo/NCCL sockets, the coordination service).
_LOST_PEER_MARKERS = ("Connection reset", "Connection closed", "Connection refused", "heartbeat",
                      "UNAVAILABLE", "another task died", "Broken pipe")


def exit_on_lost_process(command: str, error: BaseException) -> None:
    """After a JAX runtime error in a multi-process run, prints one clear line and exits 1 at
    once: the other processes then fail fast too, where JAX's exit barrier would wait
    heartbeat_timeout_s and abort with a stack trace. Returns (the caller re-raises) for a
    single process or another kind of error."""
    import jax

    if jax.process_count() == 1 or not isinstance(error, jax.errors.JaxRuntimeError):
        return
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = f"process {jax.process_index()} of {jax.process_count()}"
    if any(marker in str(error) for marker in _LOST_PEER_MARKERS):
        where += (" lost contact with the others (another process died or was killed; see its "
                  "log)")
    print(f"textgen-jax {command}: error: {where}: {detail}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)
