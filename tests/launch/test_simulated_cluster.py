"""The launchers' real commands on a simulated TPU pod and a simulated SLURM cluster.

gcloud, sbatch, srun and scontrol are stand-ins (fake_cloud.py); everything they are asked to
run is real: each TPU worker installs uv and the package with its `cpu` extra from the package
registry into a venv of its own, in its own HOME; then the workers train a tiny GPT-2 as 2
processes joined by jax.distributed into one shared workdir, which a fresh 1-device process
restores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY_OVERRIDES, cli_env, free_port, read_metrics
from fake_cloud import calls, install

STEPS = 4
TRAIN = (f"--config.train.num_steps={STEPS}", f"--config.train.checkpoint_every={STEPS}",
         f"--config.train.eval_every={STEPS}", "--config.train.log_every=1", *TINY_OVERRIDES)
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"



@pytest.fixture
def cloud(tmp_path):
    """(the launcher's environment, the fake cloud's state directory)."""
    state = tmp_path / "cloud"
    install(tmp_path / "bin", state)
    # A worker's image: a system Python (this one's base interpreter, not a venv) and the usual
    # system paths. The package cache stands for a warm image; the installs still resolve and
    # install everything into each worker's own venv. uv trusts the system's certificates, as
    # pip does here (this network's TLS goes through the machine's own CA bundle).
    worker_path = os.pathsep.join([str(Path(sys._base_executable).parent), "/usr/local/bin",
                                   "/usr/bin", "/bin"])
    worker_env = {"UV_CACHE_DIR": str(Path.home() / ".cache" / "uv"), "UV_NATIVE_TLS": "1",
                  "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
               FAKE_CLOUD_DIR=str(state), FAKE_CLOUD_WORKER_PATH=worker_path,
               FAKE_CLOUD_WORKER_ENV=json.dumps(worker_env))
    return env, state


def _tpu(env: dict, cwd: Path, *flags: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """launch/tpu.py for a v4-16 (2 workers) named pod, run from `cwd` (its logs go there)."""
    return subprocess.run([sys.executable, str(REPO / "launch" / "tpu.py"), "--name=pod",
                           "--zone=us-central2-b", "--accelerator=v4-16", f"--python={PYTHON}",
                           "--extra=cpu", *flags], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def _shared_workdir(tmp_path: Path, tokenizer) -> Path:
    workdir = tmp_path / "shared" / "pod run"
    workdir.mkdir(parents=True)
    tokenizer.save(workdir / "tokenizer.model")  # so no worker trains a tokenizer
    return workdir


def _restore_in_one_device_process(workdir: Path) -> dict:
    code = ("import json, jax, textgen_jax; loaded = textgen_jax.load({!r}); "
            "print(json.dumps({{'devices': jax.device_count(), 'leaves': "
            "len(jax.tree.leaves(loaded.params)), 'layers': loaded.config.model.num_layers}}))")
    result = subprocess.run([sys.executable, "-c", code.format(str(workdir))], env=cli_env(1),
                            capture_output=True, text=True, timeout=300, cwd=REPO, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tpu_pod_of_2_workers_installs_trains_into_one_workdir_and_deletes_the_tpu(
        cloud, tmp_path, stdlib_data_dir, stdlib_tokenizer):
    env, state = cloud
    env = dict(env, FAKE_CLOUD_STALE_LOCK="1")
    workdir = _shared_workdir(tmp_path, stdlib_tokenizer)
    started = time.monotonic()
    result = _tpu(env, tmp_path, f"--workdir={workdir}", "--config=configs/gpt2.py:tiny",
                  f"--coordinator-port={free_port()}", "--",
                  f"--config.data.data_dir={stdlib_data_dir}", *TRAIN)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    logs = tmp_path / "tpu-logs" / "pod"
    worker_logs = [(logs / f"worker-{i}.log").read_text() for i in range(2)]
    print(f"simulated pod: {time.monotonic() - started:.0f} s")

    for log in worker_logs:  # each installed into its own venv, freed its TPU, then trained
        assert f"worker ready: Python {PYTHON}" in log and ", jax 0." in log
        assert "freeing the TPU: removing" in log and "libtpu_lockfile" in log
    assert worker_logs[0].splitlines()[-1] in result.stdout  # worker 0 streamed here
    assert not (state / "tpus" / "pod").exists()
    assert ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod", "--zone=us-central2-b",
            "--quiet"] in calls(state)
    ssh_calls = [c for c in calls(state) if c[4:5] == ["ssh"]]
    assert sorted({c[-2] for c in ssh_calls}) == ["--worker=0", "--worker=1"]

    assert max(read_metrics(workdir)) == STEPS
    assert (workdir / "checkpoints" / str(STEPS)).is_dir()
    restored = _restore_in_one_device_process(workdir)
    assert restored["devices"] == 1 and restored["layers"] == 2 and restored["leaves"] > 0


def test_tpu_a_worker_whose_ssh_fails_stops_the_launch_and_the_tpu_is_deleted(
        cloud, tmp_path):
    env, state = cloud
    env = dict(env, FAKE_CLOUD_SSH_FAIL="1")
    result = _tpu(env, tmp_path, f"--workdir={tmp_path / 'shared'}", timeout=300)
    assert result.returncode != 0
    assert "worker 1 failed (install, exit 255)" in result.stderr
    assert "Connection refused" in result.stderr  # the tail of its log
    assert not (state / "tpus" / "pod").exists()

    kept = _tpu(env, tmp_path, f"--workdir={tmp_path / 'shared'}", "--keep", "--name=kept",
                timeout=300)
    assert kept.returncode != 0 and "worker 1 failed" in kept.stderr
    assert (state / "tpus" / "kept").exists()  # --keep: left for the user, who is told how
    assert "kept TPU kept; delete it with: gcloud compute tpus tpu-vm delete kept" in kept.stdout


@pytest.mark.parametrize("states, timeout, message", [
    ("WAITING_FOR_RESOURCES,PROVISIONING,FAILED", 60,
     "queued resource pod is FAILED: no capacity left in us-central2-b"),
    ("WAITING_FOR_RESOURCES", 1, "queued resource pod is still WAITING_FOR_RESOURCES after 1 s"),
])
def test_tpu_queued_resource_wait_ends_on_failure_or_timeout(cloud, tmp_path, states, timeout,
                                                             message):
    env, state = cloud
    env = dict(env, FAKE_CLOUD_QUEUE=states,
               FAKE_CLOUD_QUEUE_REASON="no capacity left in us-central2-b")
    (state / "buckets" / "b").mkdir()
    result = _tpu(env, tmp_path, "--queued", "--bucket=b", "--poll-seconds=0.1",
                  f"--queue-timeout={timeout}", timeout=120)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert not list((state / "queued").iterdir())  # the queued resource was deleted
    assert not [c for c in calls(state) if c[4:5] == ["ssh"]]


def test_slurm_job_script_runs_2_nodes_with_a_spaced_workdir_and_a_quoted_flag(
        cloud, tmp_path, stdlib_data_dir, stdlib_tokenizer):
    env, state = cloud
    workdir = _shared_workdir(tmp_path, stdlib_tokenizer)
    env = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    submit = subprocess.run(
        [sys.executable, str(REPO / "launch" / "slurm.py"), "--nodes=2", "--gpus-per-node=1",
         f"--workdir={workdir}", f"--repo={REPO}", f"--venv={sys.prefix}",
         f"--port={free_port()}", "--config=configs/gpt2.py:tiny", "--",
         f"--config.data.data_dir={stdlib_data_dir}", *TRAIN,
         "--config.train.freeze=('token_embed', 'block_0')"],
        env=env, capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, submit.stderr
    assert "Submitted batch job 1000" in submit.stdout
    exit_file = state / "jobs" / "1000.exit"
    deadline = time.monotonic() + 600
    while not exit_file.exists() and time.monotonic() < deadline:
        time.sleep(1)
    log = (workdir / "slurm-1000.out").read_text()
    assert exit_file.read_text().strip() == "0", log[-4000:]
    print(f"simulated SLURM job: {time.monotonic() - started:.0f} s")

    srun = next(c for c in calls(state) if c[0] == "srun")
    assert srun[1:3] == ["--ntasks=2", "--ntasks-per-node=1"]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["train"]["freeze"] == ["token_embed", "block_0"]  # arrived as one flag, intact
    assert max(read_metrics(workdir)) == STEPS
    assert _restore_in_one_device_process(workdir)["devices"] == 1
