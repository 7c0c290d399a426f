"""One `train` per workdir: a live holder of workdir/LOCK refuses the next run, naming its
process and host; a lock whose process is gone (or whose host stopped its heartbeat) never
blocks one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from conftest import REPO, cli_command, cli_env, train_flags
from textgen_jax.config import ConfigError
from textgen_jax.training import workdir_lock
from textgen_jax.training.workdir_lock import LOCK_FILE, WorkdirLock


def _holder(tmp_path, **fields) -> None:
    record = {"host": socket.gethostname(), "pid": os.getpid(),
              "started": psutil.Process().create_time(), "heartbeat": time.time(), **fields}
    (tmp_path / LOCK_FILE).write_text(json.dumps(record))


def test_a_live_holder_refuses_and_its_release_frees_the_workdir(tmp_path):
    first = WorkdirLock(tmp_path)
    assert first.acquire() is None
    with pytest.raises(ConfigError) as error:
        WorkdirLock(tmp_path).acquire()
    assert f"process {os.getpid()} on host {socket.gethostname()}" in str(error.value)
    first.release()
    assert not (tmp_path / LOCK_FILE).exists()
    WorkdirLock(tmp_path).acquire()


def test_a_dead_or_reused_pid_or_a_silent_host_is_stale(tmp_path):
    dead = psutil.Popen([sys.executable, "-c", "pass"])
    started = dead.create_time()
    dead.wait()
    _holder(tmp_path, pid=dead.pid, started=started)
    assert WorkdirLock(tmp_path).acquire()["pid"] == dead.pid  # taken over, reported
    _holder(tmp_path, started=psutil.Process().create_time() - 100)  # our pid, another process
    assert WorkdirLock(tmp_path).acquire() is not None
    _holder(tmp_path, host="elsewhere", heartbeat=time.time() - workdir_lock.STALE_AFTER_S - 1)
    assert WorkdirLock(tmp_path).acquire()["host"] == "elsewhere"
    _holder(tmp_path, host="elsewhere")  # a recent heartbeat from another host: alive
    with pytest.raises(ConfigError, match="on host elsewhere"):
        WorkdirLock(tmp_path).acquire()
    # Release never removes another process's lock.
    WorkdirLock(tmp_path).release()
    assert (tmp_path / LOCK_FILE).exists()


def test_a_second_train_on_a_workdir_in_use_is_refused(tmp_path, stdlib_data_dir,
                                                       stdlib_tokenizer):
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    stdlib_tokenizer.save(workdir / "tokenizer.model")
    flags = (*train_flags(stdlib_data_dir), "--config.train.log_every=1",
             "--config.train.eval_every=100000", "--config.train.checkpoint_every=100000")
    first = subprocess.Popen(cli_command("train", workdir, *flags,
                                         "--config.train.num_steps=100000"),
                             env=cli_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (workdir / "metrics.jsonl").exists() and time.monotonic() < deadline:
            assert first.poll() is None, "the first run ended by itself"
            time.sleep(0.1)
        second = subprocess.run(cli_command("train", workdir, *flags,
                                            "--config.train.num_steps=2"),
                                env=cli_env(), cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 1
        message = second.stderr.strip().splitlines()[-1]
        assert f"in use by process {first.pid} on host {socket.gethostname()}" in message
        assert first.poll() is None  # the holder runs on, untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
