"""The launch scripts' --dry-run output (v4-32, v5e-256 queued spot, v6e-64, a SLURM job of 4
GPU nodes, one multi-GPU machine) and the errors they give before anything is created."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fake_cloud import calls, install
from textgen_jax.config import base_config

REPO = Path(__file__).resolve().parents[2]


def _launch(script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launch" / script), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def _dry_run(script: str, *args: str) -> list[str]:
    result = _launch(script, "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _commands(lines: list[str]) -> list[list[str]]:
    """The printed commands, each as its argv (a command's script spans several lines)."""
    text = "\n".join(line for line in lines if not line.startswith("#"))
    return [shlex.split(command) for command in text.split("$ ")[1:]]


def _script(command: list[str]) -> str:
    return next(arg for arg in command if arg.startswith("--command="))[len("--command="):]


def _train_argv(script: str) -> list[str]:
    return shlex.split(script.splitlines()[-1])[1:]  # after `exec`


def _worker(command: list[str]) -> int:
    return int(next(arg for arg in command if arg.startswith("--worker="))[len("--worker="):])


def test_tpu_v4_32_checks_the_bucket_installs_per_worker_frees_the_tpu_trains_and_deletes():
    lines = _dry_run("tpu.py", "--name=run1", "--zone=us-central2-b", "--accelerator=v4-32",
                     "--bucket=my-bucket", "--config=configs/gpt2.py:small", "--",
                     "--config.train.num_steps=100", "--config.train.freeze=('token_embed',)")
    assert lines[0].startswith("# v4-32: 16 chips on 4 worker(s)")
    commands = _commands(lines)
    bucket, create, describe, archive, scp = commands[:5]
    installs, trains, delete = commands[5:9], commands[9:13], commands[13]
    assert len(commands) == 14
    assert bucket[:5] == ["gcloud", "storage", "buckets", "describe", "gs://my-bucket"]
    assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "run1",
                      "--zone=us-central2-b", "--accelerator-type=v4-32",
                      "--version=tpu-ubuntu2204-base"]
    assert describe[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "run1"]
    assert archive[:2] == ["git", "-C"] and "archive" in archive
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
    # One ssh per worker, never --worker=all: each worker has its own log and exit code.
    assert [_worker(c) for c in installs] == [0, 1, 2, 3] == [_worker(c) for c in trains]
    install = _script(installs[0])
    assert "pip install -q --user --upgrade uv" in install
    assert "uv venv -q --allow-existing --seed --python 3.12 ~/textgen_jax_venv" in install
    assert 'uv pip install -q --python ~/textgen_jax_venv/bin/python -e "$HOME/textgen_jax[tpu]"' \
        in install
    assert '"jax[tpu]' not in install  # jax comes with the package's extra, in one resolution
    for worker, train in enumerate(trains):
        script = _script(train)
        assert script.index("/dev/accel*") < script.index("libtpu_lockfile") < script.index("exec")
        assert _train_argv(script) == [
            "~/textgen_jax_venv/bin/textgen-jax", "train", "--config=configs/gpt2.py:small",
            "--workdir=gs://my-bucket/runs/run1", "--coordinator_address=WORKER0_IP:8476",
            "--num_processes=4", f"--process_id={worker}", "--config.train.num_steps=100",
            "--config.train.freeze=('token_embed',)"]
    assert not any("gcsfuse" in " ".join(c) for c in commands)  # gs:// is written directly
    assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "run1",
                      "--zone=us-central2-b", "--quiet"]


def test_tpu_v5e_256_queued_spot_waits_checks_the_shared_workdir_on_64_workers():
    lines = _dry_run("tpu.py", "--name=big", "--zone=us-west4-a", "--accelerator=v5e-256",
                     "--queued", "--spot", "--workdir=/mnt/shared/runs/big",
                     "--config=configs/gpt2.py:medium")
    assert lines[0].startswith("# v5litepod-256: 256 chips on 64 worker(s)")
    text = "\n".join(lines)
    assert "until ACTIVE (ends on FAILED, SUSPENDING, SUSPENDED, DELETING" in text
    commands = _commands(lines)
    create, wait, delete = commands[0], commands[1], commands[-1]
    assert create == ["gcloud", "compute", "tpus", "queued-resources", "create", "big",
                      "--zone=us-west4-a", "--node-id=big", "--accelerator-type=v5litepod-256",
                      "--runtime-version=v2-alpha-tpuv5-lite", "--spot"]
    assert wait[:6] == ["gcloud", "compute", "tpus", "queued-resources", "describe", "big"]
    ssh = [c for c in commands if c[4] == "ssh"]
    # install, the shared-workdir check (worker 0 writes, all read), train
    assert len(ssh) == 64 + 1 + 64 + 64
    assert "/mnt/shared/runs/big/.launch-check-" in _script(ssh[64])
    trains = ssh[-64:]
    assert _train_argv(_script(trains[63]))[2:7] == [
        "--config=configs/gpt2.py:medium", "--workdir=/mnt/shared/runs/big",
        "--coordinator_address=WORKER0_IP:8476", "--num_processes=64", "--process_id=63"]
    assert not any("gcsfuse" in " ".join(c) for c in commands)
    assert delete == ["gcloud", "compute", "tpus", "queued-resources", "delete", "big",
                      "--zone=us-west4-a", "--force", "--quiet"]


def test_tpu_v6e_64_with_gcsfuse_writes_checkpoints_with_a_commit_file():
    lines = _dry_run("tpu.py", "--name=six", "--zone=us-east5-b", "--accelerator=v6e-64",
                     "--bucket=b", "--gcsfuse")
    assert lines[0].startswith("# v6e-64: 64 chips on 16 worker(s)")
    commands = _commands(lines)
    assert "--version=v2-alpha-tpuv6e" in commands[1]
    ssh = [c for c in commands if c[4] == "ssh"]
    mounts = [c for c in ssh if "gcsfuse --implicit-dirs b /mnt/gcs" in _script(c)]
    assert [_worker(c) for c in mounts] == list(range(16))
    train = _train_argv(_script(ssh[-1]))
    assert "--workdir=/mnt/gcs/runs/six" in train
    assert "--config.train.checkpoint_commit_file=true" in train
    assert base_config().train.checkpoint_commit_file is False  # the key the flag sets


def test_single_host_tpu_runs_one_process_without_a_coordinator():
    lines = _dry_run("tpu.py", "--name=one", "--zone=z", "--accelerator=v5e-8", "--bucket=b")
    commands = _commands(lines)
    train = _train_argv(_script(commands[-2]))
    assert "--distributed=off" in train and not any("coordinator" in a for a in train)


@pytest.fixture
def fake_gcloud(tmp_path):
    """(env with the fake gcloud first on PATH, its state directory)."""
    state = tmp_path / "cloud"
    install(tmp_path / "bin", state)
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
               FAKE_CLOUD_DIR=str(state))
    return env, state


@pytest.mark.parametrize("flags, message", [
    (["--accelerator=v9-8", "--bucket=b"], "--accelerator='v9-8'"),
    (["--accelerator=v4-16", "--workdir=runs/x"], "--workdir='runs/x' is not on storage"),
    (["--accelerator=v4-16", "--workdir=~/runs/x"], "--workdir='~/runs/x' is not on storage"),
    (["--accelerator=v4-16", "--bucket=missing"], "bucket gs://missing failed"),
])
def test_tpu_bad_input_is_a_clear_error_before_any_tpu_exists(fake_gcloud, flags, message):
    env, state = fake_gcloud
    result = _launch("tpu.py", "--name=x", "--zone=z", *flags, env=env)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not [c for c in calls(state) if "create" in c]


def test_slurm_runs_one_process_per_node_with_the_first_node_as_coordinator():
    lines = _dry_run("slurm.py", "--nodes=4", "--gpus-per-node=8", "--partition=gpu",
                     "--workdir=/shared/runs/x y", "--repo=/shared/textgen_jax", "--",
                     "--config.mesh.fsdp=8", "--config.train.freeze=('token_embed', 'block_0')")
    for directive in ("--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8",
                      "--partition=gpu"):
        assert f"#SBATCH {directive}" in lines
    assert ('export JAX_COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" '
            '| head -n 1):8476"') in lines
    assert "export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7" in lines  # all GPUs, not SLURM_LOCALID
    srun = shlex.split(next(line for line in lines if line.startswith("srun ")))
    assert srun[:5] == ["srun", "--ntasks=4", "--ntasks-per-node=1", "bash", "-c"]
    assert srun[6:] == ["task", "textgen-jax", "train", "--config=configs/gpt2.py:small",
                        "--workdir=/shared/runs/x y", "--num_processes=4",
                        "--config.mesh.fsdp=8", "--config.train.freeze=('token_embed', 'block_0')"]
    text = "\n".join(lines)
    assert text.index("cd /shared/textgen_jax") < text.index("srun ")
    assert shlex.split(lines[-1][2:]) == ["sbatch", "--output=/shared/runs/x y/slurm-%j.out",
                                          "/shared/runs/x y/job.sbatch"]


def test_single_host_gpus_one_process_over_the_chosen_gpus():
    lines = _dry_run("gpus.py", "--gpus=0,1,2,3", "--workdir=runs/x")
    assert lines[-1] == ("$ CUDA_VISIBLE_DEVICES=0,1,2,3 XLA_PYTHON_CLIENT_MEM_FRACTION=0.90 "
                         "textgen-jax train --config=configs/gpt2.py:small --workdir=runs/x "
                         "--distributed=off")
