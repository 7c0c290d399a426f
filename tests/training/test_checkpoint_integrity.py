"""A damaged latest checkpoint (a truncated array file, a missing item) is reported and the
run resumes from the newest one that restores; `textgen_jax.load` reads that one too. A
resume under another training stream (config.data) is refused unless asked for."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import jax
import numpy as np

from conftest import read_metrics

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
