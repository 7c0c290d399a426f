"""A damaged latest checkpoint (a truncated array file, a missing item) is reported and the
run resumes from the newest one that restores; `textgen_jax.load` reads that one too. A save
that fails to write (the disk full) ends the run with one clear line and leaves the previous
checkpoint to resume from. A resume under another training stream (config.data) is refused
unless asked for."""

from __future__ import annotations

import logging
import re
import resource
import shutil
import subprocess
import time
from pathlib import Path

import jax
import numpy as np

from conftest import REPO, cli_command, cli_env, read_metrics, train_flags

FLAGS = ("--config.train.checkpoint_every=2", "--config.train.log_every=1",
         "--config.train.keep_checkpoints=5", "--config.train.async_checkpointing=False")


def _steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _truncate_arrays(item: Path) -> int:
    """Cuts every data file of a checkpoint item to half its size; returns how many."""
    files = [p for p in item.rglob("*") if p.is_file() and p.stat().st_size > 256
             and "metadata" not in p.name and p.suffix != ".json"]
    for path in files:
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    return len(files)


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, tiny_run,
                                                                        caplog):
    workdir = tmp_path / "workdir"
    tiny_run(workdir, "--config.train.num_steps=4", "--config.train.eval_every=4", *FLAGS)
    assert _steps(workdir) == [2, 4]
    assert _truncate_arrays(workdir / "checkpoints" / "4" / "params") > 0

    # textgen_jax.load reads step 2, and says so.
    import textgen_jax
    from textgen_jax.training import checkpoint
    with caplog.at_level(logging.WARNING):
        loaded = textgen_jax.load(str(workdir))
    assert "checkpoint 4" in caplog.text and "reading step 2 instead" in caplog.text
    expected, _ = checkpoint.restore_params(str(workdir), loaded.params, step=2)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded.params),
                                                    jax.tree.leaves(expected)))

    # train: reports step 4, sets it aside, resumes from 2 and writes 4 and 6 afresh.
    resumed = tiny_run(workdir, "--config.train.num_steps=6", "--config.train.eval_every=6",
                       *FLAGS)
    assert "checkpoint 4 cannot be restored" in resumed.stdout, resumed.stdout
    assert "resumed from the checkpoint at step 2" in resumed.stdout
    assert _steps(workdir) == [2, 4, 6]
    assert [p.name.split("-")[0] for p in (workdir / "unreadable_checkpoints").iterdir()] == ["4"]
    assert sorted(read_metrics(workdir)) == list(range(1, 7))

    # A checkpoint that lost its optimizer state is damaged, not an import: resume from 4.
    shutil.rmtree(workdir / "checkpoints" / "6" / "opt_state")
    again = tiny_run(workdir, "--config.train.num_steps=8", "--config.train.eval_every=8",
                     *FLAGS)
    assert "checkpoint 6 cannot be restored" in again.stdout
    assert "resumed from the checkpoint at step 4" in again.stdout
    assert "imported" not in again.stdout


def test_a_resume_under_other_data_is_refused_unless_the_stream_restarts(tmp_path, tiny_run):
    workdir = tmp_path / "workdir"
    tiny_run(workdir, "--config.train.num_steps=2", "--config.train.eval_every=2", *FLAGS)
    refused = tiny_run(workdir, "--config.train.num_steps=4", "--config.data.seq_len=16",
                       *FLAGS, check=False)
    assert refused.returncode == 1
    message = refused.stderr.strip().splitlines()[-1]
    assert "config.data.seq_len: checkpoint 32, now 16" in message, message
    assert "--config.train.restart_data=True" in message
    assert _steps(workdir) == [2]  # nothing written
    restarted = tiny_run(workdir, "--config.train.num_steps=4", "--config.data.seq_len=16",
                         "--config.train.restart_data=True", "--config.train.eval_every=4",
                         *FLAGS)
    assert "the data stream starts over (config.data.seq_len" in restarted.stdout
    assert "resumed from the checkpoint at step 2" in restarted.stdout
    assert _steps(workdir) == [2, 4]


def test_a_failed_checkpoint_write_ends_the_run_and_the_previous_checkpoint_resumes(
        tmp_path, tiny_run, stdlib_data_dir, stdlib_tokenizer):
    # The disk fills up during training: once the first checkpoint is finished, the running
    # process may no longer write a file past 16 kB (RLIMIT_FSIZE; Python ignores SIGXFSZ, so
    # a write past it fails with EFBIG, as one to a full disk fails with ENOSPC). Its metrics
    # stay far below that; a checkpoint's array files do not.
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    stdlib_tokenizer.save(workdir / "tokenizer.model")
    flags = ("--config.train.num_steps=200", "--config.train.log_every=10",
             "--config.train.checkpoint_every=10", "--config.train.eval_every=200")
    process = subprocess.Popen(cli_command("train", workdir, *train_flags(stdlib_data_dir),
                                           *flags),
                               env=cli_env(), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not _steps_or_none(workdir) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (16_000, 16_000))
    stdout, stderr = process.communicate(timeout=300)

    assert process.returncode == 1, stderr[-3000:]
    # Orbax's own log of the failed write may come after it (asyncio reports the failed
    # tasks when they are collected at exit): the CLI's one line is found by its prefix.
    message = [line for line in stderr.splitlines()
               if line.startswith("textgen-jax train: error:")][-1]
    found = re.search(r"writing the checkpoint at step (\d+) to .* failed \((.*)\); the "
                      r"checkpoint at step (\d+) is intact: .* resume from step (\d+)\.$", message)
    assert found, message
    failed, intact = int(found.group(1)), int(found.group(3))
    assert "File too large" in found.group(2), message  # the cause, from the storage layer
    assert intact == max(_steps(workdir)) == failed - 10, (message, _steps(workdir))
    assert int(found.group(4)) == intact

    # The next run (with room to write again) resumes from that checkpoint and finishes.
    resumed = tiny_run(workdir, *flags)
    assert f"resumed from the checkpoint at step {intact}" in resumed.stdout
    assert max(_steps(workdir)) == 200
    assert sorted(read_metrics(workdir)) == list(range(10, 201, 10))
    assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]


def _steps_or_none(workdir: Path) -> list[int]:
    return _steps(workdir) if (workdir / "checkpoints").is_dir() else []
