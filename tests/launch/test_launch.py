"""The launch scripts' --dry-run output: the exact commands for a v4-32 and a v5e-256 pod, a
SLURM job of 4 GPU nodes and one multi-GPU machine."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _dry_run(script: str, *args: str) -> list[str]:
    result = subprocess.run([sys.executable, str(REPO / "launch" / script), "--dry-run", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _commands(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in lines if line.startswith("$ ")]


def _train_command(ssh: list[str]) -> list[str]:
    remote = next(arg for arg in ssh if arg.startswith("--command="))[len("--command="):]
    return shlex.split(remote.split("&& ", 1)[1].split(" ", 1)[1])  # after cd, PATH=...


def test_tpu_v4_32_creates_installs_trains_on_all_4_workers_and_deletes():
    lines = _dry_run("tpu.py", "--name=run1", "--zone=us-central2-b", "--accelerator=v4-32",
                     "--bucket=my-bucket", "--config=configs/gpt2.py:small", "--",
                     "--config.train.num_steps=100")
    assert lines[0] == "# v4-32: 16 chips on 4 worker(s); one training process per worker"
    create, archive, scp, install, mount, train, delete = _commands(lines)
    assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "run1",
                      "--zone=us-central2-b", "--accelerator-type=v4-32",
                      "--version=tpu-ubuntu2204-base"]
    assert archive[:2] == ["git", "-C"] and "archive" in archive
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
    for ssh in (install, mount, train):
        assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "run1"]
        assert "--worker=all" in ssh
    assert "pip install -e ~/textgen_jax" in install[-1]
    assert "gcsfuse --implicit-dirs my-bucket /mnt/gcs" in mount[-1]
    assert _train_command(train) == [
        "textgen-jax", "train", "--config=configs/gpt2.py:small",
        "--workdir=/mnt/gcs/runs/run1", "--distributed=on", "--config.train.num_steps=100"]
    assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "run1",
                      "--zone=us-central2-b", "--quiet"]


def test_tpu_v5e_256_queued_spot_resource_on_64_workers():
    lines = _dry_run("tpu.py", "--name=big", "--zone=us-west4-a", "--accelerator=v5e-256",
                     "--queued", "--spot", "--workdir=/mnt/shared/runs/big",
                     "--config=configs/gpt2.py:medium")
    assert lines[0] == "# v5litepod-256: 256 chips on 64 worker(s); one training process per worker"
    commands = _commands(lines)
    create, wait, delete = commands[0], commands[1], commands[-1]
    assert create == ["gcloud", "compute", "tpus", "queued-resources", "create", "big",
                      "--node-id=big", "--zone=us-west4-a", "--accelerator-type=v5litepod-256",
                      "--runtime-version=v2-alpha-tpuv5-lite", "--spot"]
    assert wait[0] == "until" and "ACTIVE" in wait
    assert _train_command(commands[-2]) == [
        "textgen-jax", "train", "--config=configs/gpt2.py:medium",
        "--workdir=/mnt/shared/runs/big", "--distributed=on"]
    assert not any("gcsfuse" in " ".join(c) for c in commands)  # no bucket: nothing mounted
    assert delete == ["gcloud", "compute", "tpus", "queued-resources", "delete", "big",
                      "--zone=us-west4-a", "--force", "--quiet"]


def test_tpu_rejects_an_unknown_accelerator():
    result = subprocess.run([sys.executable, str(REPO / "launch" / "tpu.py"), "--dry-run",
                             "--name=x", "--zone=z", "--accelerator=v9-8", "--bucket=b"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--accelerator='v9-8'" in result.stderr


def test_slurm_runs_one_process_per_node_with_the_first_node_as_coordinator():
    lines = _dry_run("slurm.py", "--nodes=4", "--gpus-per-node=8", "--partition=gpu",
                     "--workdir=/shared/runs/x", "--repo=/shared/textgen_jax", "--",
                     "--config.mesh.fsdp=8")
    text = "\n".join(lines)
    for directive in ("--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8",
                      "--partition=gpu"):
        assert f"#SBATCH {directive}" in lines
    assert ('export JAX_COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" '
            '| head -n 1):8476"') in lines
    srun = next(line for line in lines if line.startswith("srun "))
    assert srun.startswith("srun --ntasks=4 --ntasks-per-node=1 bash -c '")
    train = shlex.split(shlex.split(srun)[-1])
    assert train == ["textgen-jax", "train", "--config=configs/gpt2.py:small",
                     "--workdir=/shared/runs/x", "--coordinator_address=$JAX_COORDINATOR_ADDRESS",
                     "--num_processes=$SLURM_NNODES", "--process_id=$SLURM_PROCID",
                     "--config.mesh.fsdp=8"]
    assert text.index("cd /shared/textgen_jax") < text.index("srun ")
    assert lines[-1] == "$ sbatch /shared/runs/x/job.sbatch"


def test_single_host_gpus_one_process_over_the_chosen_gpus():
    lines = _dry_run("gpus.py", "--gpus=0,1,2,3", "--workdir=runs/x")
    assert lines[-1] == ("$ CUDA_VISIBLE_DEVICES=0,1,2,3 XLA_PYTHON_CLIENT_MEM_FRACTION=0.90 "
                         "textgen-jax train --config=configs/gpt2.py:small --workdir=runs/x "
                         "--distributed=off")
