"""A run killed with SIGKILL between checkpoints resumes exactly (bitwise on CPU), with
dropout 0.1 (its random stream must resume too) and bfloat16 compute, the quick start's
settings where they matter most."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

from conftest import REPO, cli_command, cli_env, read_metrics, train_flags

STEPS, EVERY = 40, 5
RESUME_FLAGS = (f"--config.train.num_steps={STEPS}", "--config.train.log_every=1",
                f"--config.train.checkpoint_every={EVERY}", f"--config.train.eval_every={STEPS}",
                "--config.model.dropout=0.1", "--config.model.attention_dropout=0.1",
                "--config.model.dtype=bfloat16")


def _finalized_checkpoints(workdir: Path) -> list[int]:
    directory = workdir / "checkpoints"
    return [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.exists() else []


def _kill_between_checkpoints(workdir: Path, data_dir: str) -> tuple[int, int]:
    """Starts training and SIGKILLs it as soon as a step after a finalized checkpoint is
    logged; returns (that checkpoint's step, the last step logged)."""
    process = subprocess.Popen(cli_command("train", workdir, *train_flags(data_dir), *RESUME_FLAGS),
                               env=cli_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            saved = max(_finalized_checkpoints(workdir), default=0)
            if saved and metrics.exists() and max(read_metrics(workdir)) > saved:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"training ended by itself:\n{process.stderr.read()}"
    return saved, max(read_metrics(workdir))


def test_sigkill_then_restart_resumes_bitwise(tmp_path, tiny_run, stdlib_data_dir,
                                              stdlib_tokenizer):
    reference = tmp_path / "uninterrupted"
    tiny_run(reference, *RESUME_FLAGS)
    expected = read_metrics(reference)
    assert sorted(expected) == list(range(1, STEPS + 1))

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    stdlib_tokenizer.save(interrupted / "tokenizer.model")
    saved, last_logged = _kill_between_checkpoints(interrupted, stdlib_data_dir)
    restarted = tiny_run(interrupted, *RESUME_FLAGS)
    resumed_at = int(re.search(r"resumed from the checkpoint at step (\d+)",
                               restarted.stdout).group(1))
    # It resumed from a checkpoint older than the last step it had done: work was lost and redone.
    assert resumed_at % EVERY == 0 and saved <= resumed_at < last_logged
    after = read_metrics(interrupted)
    assert sorted(after) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        # Bitwise equal losses: same batches in the same order (no repeat, no skip), same state.
        assert after[step]["loss"] == expected[step]["loss"], step
        assert after[step]["grad_norm"] == expected[step]["grad_norm"], step
    assert read_metrics(interrupted, "eval")[STEPS]["loss"] == read_metrics(reference, "eval")[STEPS]["loss"]
    # metrics.jsonl holds each step once: the rows the killed run logged after the checkpoint
    # it resumed from were dropped, not doubled by the redone steps.
    with open(interrupted / "metrics.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, STEPS + 1))
    dropped = int(re.search(rf"dropped (\d+) rows logged after step {resumed_at}",
                            restarted.stdout).group(1))
    assert dropped >= last_logged - resumed_at
