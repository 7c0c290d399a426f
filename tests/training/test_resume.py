"""A run killed with SIGKILL resumes exactly (bitwise on CPU), with dropout 0.1 (its random
stream must resume too) and bfloat16 compute, the quick start's settings where they matter
most: killed between checkpoints, and killed while an asynchronous checkpoint is being
written (the unfinished one is discarded, the newest finished one resumed)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, cli_command, cli_env, read_metrics, train_flags, train_tiny_workdir

STEPS, EVERY = 40, 5
RESUME_FLAGS = (f"--config.train.num_steps={STEPS}", "--config.train.log_every=1",
                f"--config.train.checkpoint_every={EVERY}", f"--config.train.eval_every={STEPS}",
                "--config.model.dropout=0.1", "--config.model.attention_dropout=0.1",
                "--config.model.dtype=bfloat16")
UNFINISHED = "orbax-checkpoint-tmp"  # Orbax writes a checkpoint here, then renames it


def _finalized_checkpoints(workdir: Path) -> list[int]:
    directory = workdir / "checkpoints"
    return [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.exists() else []


def _unfinished_checkpoints(workdir: Path) -> list[str]:
    directory = workdir / "checkpoints"
    return [p.name for p in directory.iterdir() if UNFINISHED in p.name] if directory.exists() else []


def _kill_when(workdir: Path, data_dir: str, flags: tuple[str, ...], ready) -> None:
    """Starts training and SIGKILLs it as soon as `ready()` holds."""
    process = subprocess.Popen(cli_command("train", workdir, *train_flags(data_dir), *flags),
                               env=cli_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if ready():
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"training ended by itself:\n{process.stderr.read()}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, stdlib_data_dir, stdlib_tokenizer):
    """The metrics of the run every interrupted one must reproduce."""
    workdir = train_tiny_workdir(tmp_path_factory.mktemp("uninterrupted"), stdlib_data_dir,
                                 stdlib_tokenizer, *RESUME_FLAGS)
    assert sorted(read_metrics(workdir)) == list(range(1, STEPS + 1))
    return read_metrics(workdir), read_metrics(workdir, "eval")


def _assert_same_run(workdir: Path, uninterrupted) -> None:
    expected, expected_eval = uninterrupted
    after = read_metrics(workdir)
    assert sorted(after) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        # Bitwise equal losses: same batches in the same order (no repeat, no skip), same state.
        assert after[step]["loss"] == expected[step]["loss"], step
        assert after[step]["grad_norm"] == expected[step]["grad_norm"], step
    assert read_metrics(workdir, "eval")[STEPS]["loss"] == expected_eval[STEPS]["loss"]


def test_sigkill_then_restart_resumes_bitwise(tmp_path, tiny_run, stdlib_data_dir,
                                              stdlib_tokenizer, uninterrupted):
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    stdlib_tokenizer.save(interrupted / "tokenizer.model")
    metrics = interrupted / "metrics.jsonl"
    killed_after = {}

    def a_step_after_a_checkpoint() -> bool:
        saved = max(_finalized_checkpoints(interrupted), default=0)
        if saved and metrics.exists() and max(read_metrics(interrupted)) > saved:
            killed_after.update(saved=saved, logged=max(read_metrics(interrupted)))
            return True
        return False

    _kill_when(interrupted, stdlib_data_dir, RESUME_FLAGS, a_step_after_a_checkpoint)
    saved, last_logged = killed_after["saved"], max(read_metrics(interrupted))
    restarted = tiny_run(interrupted, *RESUME_FLAGS)
    resumed_at = int(re.search(r"resumed from the checkpoint at step (\d+)",
                               restarted.stdout).group(1))
    # It resumed from a checkpoint older than the last step it had done: work was lost and redone.
    assert resumed_at % EVERY == 0 and saved <= resumed_at < last_logged
    _assert_same_run(interrupted, uninterrupted)
    # metrics.jsonl holds each step once: the rows the killed run logged after the checkpoint
    # it resumed from were dropped, not doubled by the redone steps.
    with open(interrupted / "metrics.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, STEPS + 1))
    dropped = int(re.search(rf"dropped (\d+) rows logged after step {resumed_at}",
                            restarted.stdout).group(1))
    assert dropped >= last_logged - resumed_at


def test_sigkill_while_a_checkpoint_is_written_resumes_from_the_last_finished_one(
        tmp_path, tiny_run, stdlib_data_dir, stdlib_tokenizer, uninterrupted):
    # A checkpoint every step keeps an asynchronous save in flight most of the time; the kill
    # lands while one is unfinished on disk (tried again in the rare case it just finished).
    flags = tuple(flag.replace(f"checkpoint_every={EVERY}", "checkpoint_every=1")
                  for flag in RESUME_FLAGS)
    for attempt in range(5):
        interrupted = tmp_path / f"interrupted_{attempt}"
        interrupted.mkdir()
        stdlib_tokenizer.save(interrupted / "tokenizer.model")
        _kill_when(interrupted, stdlib_data_dir, flags,
                   lambda: bool(_finalized_checkpoints(interrupted)
                                and _unfinished_checkpoints(interrupted)))
        unfinished = _unfinished_checkpoints(interrupted)
        if unfinished:
            break
    assert unfinished, "every kill landed after the save had finished"
    finished = max(_finalized_checkpoints(interrupted))

    restarted = tiny_run(interrupted, *flags)
    resumed_at = int(re.search(r"resumed from the checkpoint at step (\d+)",
                               restarted.stdout).group(1))
    assert resumed_at == finished
    _assert_same_run(interrupted, uninterrupted)
    # What the killed save left was removed, not kept beside the finished checkpoints.
    assert not _unfinished_checkpoints(interrupted)
