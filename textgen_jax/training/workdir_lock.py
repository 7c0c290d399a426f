"""One writer per workdir: `train` holds workdir/LOCK (process 0 of a run, once for all its
hosts) while it runs, and a second `train` on the same workdir is refused with a message naming
the process and host that hold it.

A lock left by a run that died (kill -9, a lost machine) never blocks the next one: on the same
host it is stale once its process is gone (pid and start time, so a reused pid does not count);
from another host, once its heartbeat (rewritten at every log step) is older than
STALE_AFTER_S. The lock file is written through etils.epath like every workdir file (on gs://
it is advisory: an object store has no exclusive create).
"""

from __future__ import annotations

import json
import os
import socket
import time

import psutil
from etils import epath

from textgen_jax.config import ConfigError

LOCK_FILE = "LOCK"
STALE_AFTER_S = 30 * 60  # a holder on another host that has not logged for this long is gone


def _this_process() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid,
            "started": psutil.Process(pid).create_time(), "heartbeat": time.time()}


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return time.time() - float(holder.get("heartbeat", 0)) < STALE_AFTER_S
    try:
        return abs(psutil.Process(int(holder["pid"])).create_time()
                   - float(holder["started"])) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError, TypeError):
        return False


class WorkdirLock:
    """acquire() / heartbeat() / release() of workdir/LOCK; acquire raises ConfigError while
    another live run holds it and returns the stale holder it replaced, if any."""

    def __init__(self, workdir: str | os.PathLike):
        self.path = epath.Path(workdir) / LOCK_FILE
        self._me = _this_process()

    def _write(self, exclusive: bool) -> bool:
        text = json.dumps(self._me)
        if "://" in os.fspath(self.path):  # no exclusive create on an object store: advisory
            if exclusive and self.path.exists():
                return False
            self.path.write_text(text)
            return True
        try:
            flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
            descriptor = os.open(os.fspath(self.path), flags, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w", encoding="utf-8") as f:
            f.write(text)
        return True

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:  # torn by a crash mid-write: nobody can hold it
            return {}

    def acquire(self) -> dict | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # another run may take or drop it between our reads
            if self._write(exclusive=True):
                return None
            holder = self._holder()
            if holder is None:
                continue
            if holder and _alive(holder):
                raise ConfigError(
                    f"workdir {self.path.parent} is in use by process {holder.get('pid')} on "
                    f"host {holder.get('host')} (started "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder['started']))}):"
                    " one train per workdir. Wait for it, stop it, or use another --workdir "
                    f"(if that process is gone, delete {self.path}).")
            self.path.unlink(missing_ok=True)  # stale: its process is gone
            if self._write(exclusive=True):
                return holder
        raise ConfigError(f"could not take {self.path}: another run keeps taking it.")

    def heartbeat(self) -> None:
        self._me["heartbeat"] = time.time()
        self._write(exclusive=False)

    def release(self) -> None:
        holder = self._holder()
        if holder and holder.get("pid") == self._me["pid"] and \
                holder.get("host") == self._me["host"]:
            self.path.unlink(missing_ok=True)
