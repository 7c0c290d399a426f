"""The real CLI as 2 processes x 4 CPU devices joined over 127.0.0.1 (gloo collectives): same
losses as 1 process with 8 devices, a checkpoint that restores in 1 process with 1 device,
SIGTERM to one process saves on an agreed step and resumes exactly, and a dead process makes the
other exit with an error instead of hanging."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

import tolerances
from conftest import REPO, cli_command, cli_env, free_port, read_metrics, train_flags

STEPS = 20
FLAGS = (f"--config.train.num_steps={STEPS}", "--config.train.log_every=1",
         f"--config.train.eval_every={STEPS}", f"--config.train.checkpoint_every={STEPS}",
         "--config.mesh.data=2", "--config.mesh.fsdp=4", "--config.mesh.tensor=1")
# How far 2 processes' losses may drift from 1 process's on the same mesh, as in
# test_multidevice.py: the same per-device programs, whose cross-device sums (gloo's or XLA's
# in-process collectives) may run in another order; each step's longest float32 reduction
# <= 1024 terms, the per-step differences adding like a random walk over the steps.
STEP = tolerances.reordered_sum(1024)



class Cluster:
    """`num_processes` CLI processes of `devices` CPU devices each; killed on exit."""

    def __init__(self, workdir: Path, command: str, flags: tuple[str, ...], num_processes: int = 2,
                 devices: int = 4, heartbeat_timeout: int = 10):
        port = free_port()
        self.logs = [workdir.parent / f"{workdir.name}.process{i}.log" for i in range(num_processes)]
        self.processes = []
        for i in range(num_processes):
            with open(self.logs[i], "w") as log:
                self.processes.append(subprocess.Popen(
                    cli_command(command, workdir, *flags, f"--coordinator_address=127.0.0.1:{port}",
                                f"--num_processes={num_processes}", f"--process_id={i}",
                                "--distributed_timeout=60", f"--heartbeat_timeout={heartbeat_timeout}"),
                    env=cli_env(devices), cwd=REPO, stdout=log, stderr=subprocess.STDOUT))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=60)

    def wait(self, timeout: float = 300) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=max(deadline - time.monotonic(), 1)))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"processes still running after {timeout} s:\n{self.output()}")
        return codes

    def output(self, index: int | None = None) -> str:
        indices = range(len(self.logs)) if index is None else [index]
        return "\n".join(f"--- process {i} ---\n{self.logs[i].read_text()[-3000:]}" for i in indices)


def _prepare(workdir: Path, tokenizer) -> Path:
    workdir.mkdir(parents=True)
    tokenizer.save(workdir / "tokenizer.model")
    return workdir


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, stdlib_data_dir, stdlib_tokenizer) -> Path:
    """A workdir trained STEPS steps by 2 processes x 4 devices (data=2, fsdp=4)."""
    workdir = _prepare(tmp_path_factory.mktemp("two") / "two_processes", stdlib_tokenizer)
    with Cluster(workdir, "train", (*train_flags(stdlib_data_dir), *FLAGS)) as cluster:
        assert cluster.wait() == [0, 0], cluster.output()
        log = cluster.logs[0].read_text()
    # The float32 parameters split over fsdp=4 (a few small vectors replicated); Adam's two
    # moments follow them.
    report = re.search(r"memory per device: parameters ([0-9.]+) KiB \(of ([0-9,]+) parameters"
                       r"\).*optimizer ([0-9.]+) KiB", log)
    assert report, log[-3000:]
    sharded_kib = int(report.group(2).replace(",", "")) * 4 / 4 / 1024
    assert sharded_kib <= float(report.group(1)) < 1.05 * sharded_kib
    # Adam's two moments are as large as the parameters, plus a few step counts (bytes); each
    # size is printed to 0.1 KiB (rounded by <= 0.05): within 3 * 0.05 KiB + the counts.
    assert float(report.group(3)) == pytest.approx(2 * float(report.group(1)), abs=0.2)
    return workdir


def test_two_processes_match_eight_devices_and_restore_on_one(tmp_path, tiny_run,
                                                              two_process_run):
    # 1 process x 8 devices reading the global batch as the 2 processes' 2 input shards.
    reference = tmp_path / "one_process"
    tiny_run(reference, *FLAGS, "--config.data.input_shards=2", num_devices=8)
    two = two_process_run

    expected, losses = read_metrics(reference), read_metrics(two)
    assert sorted(losses) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert losses[step]["loss"] == pytest.approx(expected[step]["loss"],
                                                     rel=math.sqrt(STEPS) * STEP), step
    # Only process 0 writes metrics: one train record per step, not one per process.
    records = (two / "metrics.jsonl").read_text().count('"split": "train"')
    assert records == STEPS
    # Every process wrote its own shards of the global arrays.
    params_dir = two / "checkpoints" / str(STEPS) / "params"
    assert {p.name for p in params_dir.glob("ocdbt.process_*")} == {"ocdbt.process_0",
                                                                     "ocdbt.process_1"}

    evaluated = tiny_run(two, command="eval", num_devices=1)
    restored_loss = float(re.search(r"loss ([0-9.]+)", evaluated.stdout).group(1))
    # One forward pass summed over other shards, and the eval command prints 4 decimals.
    logged = read_metrics(two, "eval")[STEPS]["loss"]
    assert abs(restored_loss - logged) <= STEP * logged + 0.5e-4


def _wait_for_step(workdir: Path, cluster: Cluster, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (workdir / "metrics.jsonl").exists() and max(read_metrics(workdir), default=0) >= step:
            return
        if any(p.poll() is not None for p in cluster.processes):
            raise AssertionError(f"a process ended before step {step}:\n{cluster.output()}")
        time.sleep(0.01)
    raise AssertionError(f"step {step} not reached in {timeout} s:\n{cluster.output()}")


def test_sigterm_to_one_process_saves_on_an_agreed_step_and_resumes_exactly(
        tmp_path, stdlib_data_dir, stdlib_tokenizer, two_process_run):
    flags = (*train_flags(stdlib_data_dir), *FLAGS)
    interrupted = _prepare(tmp_path / "interrupted", stdlib_tokenizer)
    with Cluster(interrupted, "train", flags) as cluster:
        _wait_for_step(interrupted, cluster, 2)
        cluster.processes[1].send_signal(signal.SIGTERM)  # not the coordinator's process
        assert cluster.wait(timeout=120) == [0, 0], cluster.output()
        saved = int(re.search(r"SIGTERM: saving the checkpoint at step (\d+)",
                              cluster.logs[0].read_text()).group(1))
    assert 2 <= saved < STEPS
    assert sorted(int(p.name) for p in (interrupted / "checkpoints").iterdir()
                  if p.name.isdigit()) == [saved]

    with Cluster(interrupted, "train", flags) as cluster:
        assert cluster.wait() == [0, 0], cluster.output()
        assert f"resumed from the checkpoint at step {saved}" in cluster.logs[0].read_text()
    expected, after = read_metrics(two_process_run), read_metrics(interrupted)
    assert sorted(after) == list(range(1, STEPS + 1))
    # Bitwise: the same program on the same processes and devices, from the same state and
    # batches, and XLA's CPU programs and gloo's collectives are deterministic.
    for step in range(1, STEPS + 1):
        assert after[step]["loss"] == expected[step]["loss"], step
        assert after[step]["grad_norm"] == expected[step]["grad_norm"], step


@pytest.mark.parametrize("victim", [0])  # the coordinator's process: the harder loss
def test_a_killed_process_makes_the_other_exit_with_an_error(tmp_path, stdlib_data_dir,
                                                             stdlib_tokenizer, victim):
    workdir = _prepare(tmp_path / "run", stdlib_tokenizer)
    flags = (*train_flags(stdlib_data_dir), *FLAGS, "--config.train.num_steps=100000")
    with Cluster(workdir, "train", flags, heartbeat_timeout=10) as cluster:
        _wait_for_step(workdir, cluster, 2)
        cluster.processes[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        survivor = cluster.processes[1 - victim]
        try:
            code = survivor.wait(timeout=90)  # far below the run's length: it did not hang
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the survivor hung:\n{cluster.output(1 - victim)}")
        seconds = time.monotonic() - killed_at
        log = cluster.logs[1 - victim].read_text()
    print(f"survivor (process {1 - victim}) exited {code} after {seconds:.1f} s")
    assert code != 0
    assert ("lost contact with the others" in log
            or "another task died" in log), log[-3000:]


def test_an_unreachable_coordinator_and_a_bad_process_id_are_clear_errors(tmp_path):
    def run(*flags):
        return subprocess.run(cli_command("eval", tmp_path, *flags), env=cli_env(1), cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    start = time.monotonic()
    result = run(f"--coordinator_address=127.0.0.1:{free_port()}", "--num_processes=2",
                 "--process_id=1", "--distributed_timeout=3")
    assert time.monotonic() - start < 60
    assert result.returncode == 1
    assert "cannot reach the coordinator at 127.0.0.1:" in result.stderr
    assert "within 3 s" in result.stderr

    result = run("--coordinator_address=127.0.0.1:1234", "--num_processes=2", "--process_id=2")
    assert result.returncode == 1
    assert "--process_id=2 is outside [0, 2)" in result.stderr
