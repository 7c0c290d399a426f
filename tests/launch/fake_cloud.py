"""Stand-ins for the outside tools the launchers drive (gcloud; sbatch, srun, scontrol), so the
launchers' real commands run on this machine. Only the tools are faked: what they are asked to
run (installs, training) runs for real.

A TPU VM worker is a directory with its own HOME and TMPDIR, reached by `ssh` as a local bash
with a clean environment (the image's PATH, no virtual environment); every worker's address is
127.0.0.1. A SLURM node is a task of srun with SLURM's variables set.

Run as `python fake_cloud.py TOOL ARGS...`; `install(bin_dir, state_dir)` writes one wrapper
per tool. Every call is appended to STATE/calls.jsonl. Knobs (environment variables):
  FAKE_CLOUD_DIR          the state directory (buckets/, tpus/, queued/, jobs/)
  FAKE_CLOUD_WORKER_PATH  PATH on a worker
  FAKE_CLOUD_WORKER_ENV   JSON of more variables a worker's image sets (e.g. a package cache)
  FAKE_CLOUD_SSH_FAIL     comma-separated workers whose ssh is refused
  FAKE_CLOUD_STALE_LOCK   new workers start with a libtpu lock file in their TMPDIR
  FAKE_CLOUD_QUEUE        comma-separated states a queued resource reports, one per describe
                          (default ACTIVE); FAKE_CLOUD_QUEUE_REASON the FAILED message
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

TOOLS = ("gcloud", "sbatch", "srun", "scontrol")


def install(bin_dir: Path, state_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("buckets", "tpus", "queued", "jobs"):
        (state_dir / sub).mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        wrapper = bin_dir / tool
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} {tool} "
                           '"$@"\n')
        wrapper.chmod(0o755)


def calls(state_dir: Path) -> list[list[str]]:
    path = state_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _fail(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def _options(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    words = [arg for arg in argv if not arg.startswith("--")]
    options = dict(arg[2:].partition("=")[::2] for arg in argv if arg.startswith("--"))
    return words, options


def _hosts(accelerator: str) -> int:
    family, size = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", accelerator).groups()
    if family in ("v2", "v3", "v4", "v5p"):  # sizes count TensorCores, 4 chips (8 cores) a host
        return max(int(size) // 8, 1)
    return 1 if int(size) <= 8 else int(size) // 4


def _node_dir(root: Path, name: str) -> Path:
    return root / "tpus" / name


def _create_node(root: Path, name: str, accelerator: str) -> None:
    node = _node_dir(root, name)
    if node.exists():
        _fail(f"ERROR: (gcloud.compute.tpus.tpu-vm.create) ALREADY_EXISTS: {name}")
    for worker in range(_hosts(accelerator)):
        for sub in ("home", "tmp"):
            (node / f"worker-{worker}" / sub).mkdir(parents=True)
        if os.environ.get("FAKE_CLOUD_STALE_LOCK"):  # as an earlier run's libtpu leaves it
            (node / f"worker-{worker}" / "tmp" / "libtpu_lockfile").touch()
    (node / "node.json").write_text(json.dumps(
        {"name": name, "acceleratorType": accelerator, "hosts": _hosts(accelerator)}))


def _node(root: Path, name: str, command: str) -> dict:
    path = _node_dir(root, name) / "node.json"
    if not path.exists():
        _fail(f"ERROR: (gcloud.compute.tpus.tpu-vm.{command}) NOT_FOUND: node {name}")
    return json.loads(path.read_text())


def _workers(node: dict, which: str) -> list[int]:
    return list(range(node["hosts"])) if which == "all" else [int(which)]


def gcloud(root: Path, argv: list[str]) -> None:
    words, options = _options(argv)
    if words[:3] == ["storage", "buckets", "describe"]:
        bucket = words[3].removeprefix("gs://")
        if not (root / "buckets" / bucket).is_dir():
            _fail(f"ERROR: (gcloud.storage.buckets.describe) NotFoundError: gs://{bucket} not "
                  "found: 404.")
        print(bucket)
        return
    if words[:2] != ["compute", "tpus"] or "zone" not in options:
        _fail(f"fake gcloud: unsupported call {argv}", 2)
    group, verb = words[2], words[3]
    name = words[4] if verb != "scp" else words[5].split(":")[0]  # scp SOURCE NAME:PATH
    if group == "tpu-vm":
        if verb == "create":
            _create_node(root, name, options["accelerator-type"])
        elif verb == "describe":
            node = _node(root, name, verb)
            print(json.dumps({"name": name, "state": "READY",
                              "acceleratorType": node["acceleratorType"],
                              "networkEndpoints": [{"ipAddress": "127.0.0.1", "port": 8470}]
                              * node["hosts"]}))
        elif verb == "delete":
            _node(root, name, verb)
            shutil.rmtree(_node_dir(root, name))
        elif verb == "scp":
            node = _node(root, name, verb)
            for worker in _workers(node, options["worker"]):
                shutil.copy(words[4], _node_dir(root, name) / f"worker-{worker}" / "home")
        elif verb == "ssh":
            _ssh(root, name, options)
        else:
            _fail(f"fake gcloud: unsupported tpu-vm {verb}", 2)
    elif group == "queued-resources":
        path = root / "queued" / f"{name}.json"
        if verb == "create":
            states = os.environ.get("FAKE_CLOUD_QUEUE", "ACTIVE").split(",")
            path.write_text(json.dumps({"states": states, "accelerator":
                                        options["accelerator-type"]}))
        elif verb == "describe":
            if not path.exists():
                _fail(f"ERROR: (gcloud.compute.tpus.queued-resources.describe) NOT_FOUND: {name}")
            queued = json.loads(path.read_text())
            state = queued["states"].pop(0) if len(queued["states"]) > 1 else queued["states"][0]
            path.write_text(json.dumps(queued))
            if state == "ACTIVE" and not _node_dir(root, name).exists():
                _create_node(root, name, queued["accelerator"])
            report = {"state": state}
            if state == "FAILED":
                report["failedData"] = {"error": {"code": 8, "message": os.environ.get(
                    "FAKE_CLOUD_QUEUE_REASON", "failed")}}
            print(json.dumps({"name": name, "state": report}))
        elif verb == "delete":
            if not path.exists():
                _fail(f"ERROR: (gcloud.compute.tpus.queued-resources.delete) NOT_FOUND: {name}")
            path.unlink()
            shutil.rmtree(_node_dir(root, name), ignore_errors=True)
        else:
            _fail(f"fake gcloud: unsupported queued-resources {verb}", 2)
    else:
        _fail(f"fake gcloud: unsupported group {group}", 2)


def _ssh(root: Path, name: str, options: dict[str, str]) -> None:
    """Runs the command in the worker's own HOME and environment, replacing this process, so
    ending the ssh ends the command (as the launcher does to stop a worker)."""
    node = _node(root, name, "ssh")
    workers = _workers(node, options["worker"])
    if len(workers) != 1:
        _fail("fake gcloud: ssh --worker=all is not simulated; the launcher ssh-es per worker", 2)
    worker = workers[0]
    if str(worker) in os.environ.get("FAKE_CLOUD_SSH_FAIL", "").split(","):
        _fail("ssh: connect to host 127.0.0.1 port 22: Connection refused", 255)
    home = _node_dir(root, name) / f"worker-{worker}" / "home"
    env = {"HOME": str(home), "TMPDIR": str(home.parent / "tmp"), "USER": "worker",
           "LANG": "C.UTF-8", "PATH": os.environ["FAKE_CLOUD_WORKER_PATH"],
           **json.loads(os.environ.get("FAKE_CLOUD_WORKER_ENV", "{}"))}
    os.chdir(home)
    sys.stdout.flush()
    os.execve("/bin/bash", ["bash", "-c", options["command"]], env)


def sbatch(root: Path, argv: list[str]) -> None:
    """Starts the job script in the background with SLURM's job variables, as sbatch does;
    the job's exit code lands in STATE/jobs/ID.exit."""
    _, options = _options(argv)
    script = Path(argv[-1])
    nodes = int(re.search(r"^#SBATCH --nodes=(\d+)$", script.read_text(), re.M).group(1))
    job_id = str(1000 + len(list((root / "jobs").iterdir())))
    output = options.get("output", f"slurm-{job_id}.out").replace("%j", job_id)
    env = dict(os.environ, SLURM_JOB_ID=job_id, SLURM_NNODES=str(nodes),
               SLURM_JOB_NUM_NODES=str(nodes), SLURM_JOB_NODELIST=f"node[0-{nodes - 1}]")
    exit_file = root / "jobs" / f"{job_id}.exit"
    with open(output, "w") as log:
        subprocess.Popen(["bash", "-c", 'bash "$1"; echo $? > "$2"', "job", str(script),
                          str(exit_file)], env=env, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    print(f"Submitted batch job {job_id}")


def srun(root: Path, argv: list[str]) -> None:
    """Runs the command once per task, all at once, with SLURM's task variables."""
    first = next(i for i, arg in enumerate(argv) if not arg.startswith("--"))
    _, options = _options(argv[:first])
    tasks = int(options["ntasks"])
    processes = [subprocess.Popen(argv[first:], env=dict(
        os.environ, SLURM_PROCID=str(task), SLURM_NODEID=str(task), SLURM_LOCALID="0",
        SLURM_NTASKS=str(tasks), SLURM_STEP_ID="0", SLURMD_NODENAME=f"node{task}"))
        for task in range(tasks)]
    sys.exit(max(process.wait() for process in processes))


def scontrol(root: Path, argv: list[str]) -> None:
    """`scontrol show hostnames node[0-N]`: every node resolves to this machine."""
    if argv[:2] != ["show", "hostnames"]:
        _fail(f"fake scontrol: unsupported call {argv}", 2)
    first, last = map(int, re.fullmatch(r"node\[(\d+)-(\d+)\]", argv[2]).groups())
    print("\n".join("127.0.0.1" for _ in range(first, last + 1)))


if __name__ == "__main__":
    tool, arguments = sys.argv[1], sys.argv[2:]
    state = Path(os.environ["FAKE_CLOUD_DIR"])
    with open(state / "calls.jsonl", "a") as record:
        record.write(json.dumps([tool, *arguments]) + "\n")
    globals()[tool](state, arguments)
