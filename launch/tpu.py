"""Train on a Cloud TPU pod: create the TPU VM (or a queued resource), install this package on
every worker, run `textgen-jax train` on all workers at once (one process per host, joined by
jax.distributed), keep each worker's log, and delete the TPU when done.

    python launch/tpu.py --name gpt2-small --zone us-central2-b --accelerator v4-32 \
        --bucket my-bucket --config configs/gpt2.py:small -- --config.train.num_steps=10000

What it does, in order (--dry-run prints every command instead of running it):
  1. checks the workdir: gs://BUCKET/runs/NAME with --bucket (the bucket must exist), or
     --workdir, which a pod of several workers must share (gs://, or a filesystem mounted on
     every worker: checked on the workers before training);
  2. creates the TPU VM (`tpu-vm create`), or a queued resource (`--queued`) and waits until
     it is ACTIVE, ending on FAILED or SUSPENDED with the reason, or after --queue-timeout;
  3. copies this checkout (`git archive`, uncommitted edits included) to every worker and,
     over one ssh per worker, installs uv, makes a Python --python venv with it (TPU images
     ship Python 3.10, too old for our jax) and installs the package with its [--extra] extra
     there, so jax, jaxlib and libtpu come from one resolution;
  4. on every worker: ends the processes that hold /dev/accel* or /dev/vfio/* and removes the
     libtpu lock file (a stale run would leave the new one without a TPU), then starts
     `textgen-jax train` with worker 0 as coordinator;
  5. writes each worker's output to LOG_DIR/worker-I.log and streams worker 0's here; the first
     worker that fails stops the others, its name and the tail of its log are printed, and the
     launcher exits 1;
  6. deletes the TPU (also after a failure or Ctrl-C) unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# accelerator family -> (what the size counts, chips per host in a multi-host slice, hosts of
# a single-host slice up to this many chips, default runtime version)
FAMILIES = {
    "v2": ("cores", 4, 8, "tpu-ubuntu2204-base"),
    "v3": ("cores", 4, 8, "tpu-ubuntu2204-base"),
    "v4": ("cores", 4, 8, "tpu-ubuntu2204-base"),
    "v5p": ("cores", 4, 8, "v2-alpha-tpuv5"),
    "v5litepod": ("chips", 4, 8, "v2-alpha-tpuv5-lite"),
    "v6e": ("chips", 4, 8, "v2-alpha-tpuv6e"),
}
ALIASES = {"v5e": "v5litepod"}
# Where the code and its virtual environment live on each worker.
CODE = "~/textgen_jax"
VENV = "~/textgen_jax_venv"
MOUNT = "/mnt/gcs"  # --gcsfuse only
# Queued-resource states that will never become ACTIVE by waiting.
QUEUE_DEAD_ENDS = ("FAILED", "SUSPENDING", "SUSPENDED", "DELETING")
# The worker 0 address is known only once the TPU exists; --dry-run prints this instead.
WORKER0_PLACEHOLDER = "WORKER0_IP"


class LaunchError(Exception):
    """A launch that cannot go on; the message names the value or the worker and the fix."""


def parse_accelerator(name: str) -> tuple[str, int, int]:
    """'v4-32' -> ('v4-32', 16 chips, 4 hosts); 'v5e-256' -> ('v5litepod-256', 256, 64)."""
    match = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", name)
    family = ALIASES.get(match.group(1), match.group(1)) if match else None
    if family not in FAMILIES:
        raise LaunchError(f"--accelerator={name!r}: use FAMILY-SIZE with FAMILY one of "
                          f"{sorted(FAMILIES) + sorted(ALIASES)}, e.g. v4-32 or v5e-256.")
    size = int(match.group(2))
    counts, chips_per_host, single_host_max, _ = FAMILIES[family]
    chips = size // 2 if counts == "cores" else size  # v2-v5p sizes count TensorCores (2/chip)
    hosts = 1 if chips <= single_host_max and counts == "chips" else max(chips // chips_per_host, 1)
    return f"{family}-{size}", chips, hosts


def workdir_of(args: argparse.Namespace, hosts: int) -> str:
    """The training workdir. A pod of several hosts needs one every worker writes to: a
    relative path (each worker's own home) is refused here, any other local path is checked
    on the workers before training (a /tmp or an unmounted path is per worker)."""
    if args.gcsfuse:
        return f"{MOUNT}/runs/{args.name}"
    if args.bucket:
        return f"gs://{args.bucket}/runs/{args.name}"
    workdir = args.workdir
    if hosts > 1 and not workdir.startswith(("gs://", "/")):
        raise LaunchError(
            f"--workdir={workdir!r} is not on storage the {hosts} workers share: each worker "
            "would write its checkpoint shards to its own disk. Use --bucket BUCKET (a gs:// "
            "workdir), --workdir gs://BUCKET/PATH, or an absolute path on a filesystem mounted "
            "on every worker (e.g. Filestore).")
    return workdir


def _where(args: argparse.Namespace) -> list[str]:
    return [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])


def _gcloud(args: argparse.Namespace, *words: str) -> list[str]:
    return ["gcloud", "compute", "tpus", *words, args.name, *_where(args)]


def ssh(args: argparse.Namespace, worker: int, script: str) -> list[str]:
    """One ssh to one worker, running `script` in its login shell (bash on TPU VM images)."""
    return [*_gcloud(args, "tpu-vm", "ssh"), f"--worker={worker}", f"--command={script}"]


def create_command(args: argparse.Namespace, accelerator: str) -> list[str]:
    version = args.version or FAMILIES[accelerator.split("-")[0]][3]
    spot = ["--spot"] if args.spot else []
    if args.queued:
        return [*_gcloud(args, "queued-resources", "create"), f"--node-id={args.name}",
                f"--accelerator-type={accelerator}", f"--runtime-version={version}", *spot]
    return [*_gcloud(args, "tpu-vm", "create"), f"--accelerator-type={accelerator}",
            f"--version={version}", *spot]


def delete_command(args: argparse.Namespace) -> list[str]:
    if args.queued:
        return [*_gcloud(args, "queued-resources", "delete"), "--force", "--quiet"]
    return [*_gcloud(args, "tpu-vm", "delete"), "--quiet"]


def install_script(args: argparse.Namespace, archive_name: str) -> str:
    """Unpacks the checkout, gets uv (with the image's Python, whatever its version), makes a
    Python --python venv and installs the package with its extra into it, in one resolution."""
    return "\n".join([
        "set -euo pipefail",
        f"rm -rf {CODE} && mkdir -p {CODE} && tar xzf ~/{archive_name} -C {CODE}",
        'export PATH="$HOME/.local/bin:$PATH"',
        # Ubuntu's Python 3.10 only runs uv's installer; PEP 668 images need the override.
        "command -v uv >/dev/null || PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q "
        "--user --upgrade uv",
        f"uv venv -q --allow-existing --seed --python {shlex.quote(args.python)} {VENV}",
        f'uv pip install -q --python {VENV}/bin/python -e "$HOME/textgen_jax[{args.extra}]"',
        f'echo "worker ready: $({VENV}/bin/python -V), jax $({VENV}/bin/python -c '
        f'"import jax; print(jax.__version__)")"',
    ])


# Ends what holds the TPU (a stale run) and removes libtpu's lock file, as MaxText does before
# a run; `find -lname` reads /proc directly, so neither lsof nor fuser has to be on the image.
FREE_TPU = """as_root=""; [ "$(id -u)" = 0 ] || as_root="sudo -n"
holders=$($as_root find /proc/[0-9]*/fd -maxdepth 1 \\( -lname "/dev/accel*" -o -lname "/dev/vfio/*" \\) 2>/dev/null | cut -d/ -f3 | sort -u | tr "\\n" " " || true)
if [ -n "$holders" ]; then echo "freeing the TPU: ending processes $holders"; $as_root kill -9 $holders || true; sleep 2; fi
lock="${TMPDIR:-/tmp}/libtpu_lockfile"
if [ -e "$lock" ]; then echo "freeing the TPU: removing $lock"; $as_root rm -f "$lock"; fi"""


def train_script(args: argparse.Namespace, workdir: str, train_flags: Sequence[str],
                 coordinator: str, hosts: int, worker: int) -> str:
    distributed = ["--distributed=off"]
    if hosts > 1:
        distributed = [f"--coordinator_address={coordinator}:{args.coordinator_port}",
                       f"--num_processes={hosts}", f"--process_id={worker}"]
    train = common.train_command(args.config, workdir, [*distributed, *train_flags])
    return "\n".join(["set -euo pipefail", FREE_TPU, f"cd {CODE}",
                      f"exec {VENV}/bin/{shlex.join(train)}"])


def shared_check_scripts(workdir: str, token: str) -> tuple[str, str]:
    """(worker 0 writes a token into the workdir, every worker reads it back)."""
    marker = f"{shlex.quote(workdir)}/.launch-check-{token}"
    write = f"set -eu\ncd {CODE}\nmkdir -p {shlex.quote(workdir)}\necho {token} > {marker}"
    read = (f"cd {CODE}\n[ \"$(cat {marker} 2>/dev/null)\" = {token} ] || {{ echo \"this worker "
            f"does not see {marker}, written by worker 0: --workdir={workdir} is not on storage "
            "every worker shares\" >&2; exit 1; }")
    return write, read


class Workers:
    """Runs one command per worker over its own ssh, all at once: each worker's output goes to
    LOG_DIR/worker-I.log, worker 0's is also streamed here. The first worker that fails ends
    the others and raises LaunchError naming it, with the tail of its log."""

    def __init__(self, args: argparse.Namespace, count: int):
        self.args, self.count = args, count
        self.log_dir = Path(args.log_dir or f"tpu-logs/{args.name}")

    def log(self, worker: int) -> Path:
        return self.log_dir / f"worker-{worker}.log"

    def run(self, what: str, script_for: Callable[[int], str],
            workers: Sequence[int] | None = None) -> None:
        workers = range(self.count) if workers is None else workers
        commands = {worker: ssh(self.args, worker, script_for(worker)) for worker in workers}
        print(f"# {what}: {len(commands)} worker(s), one ssh each", flush=True)
        for command in commands.values():
            print(f"$ {common.quote(command)}", flush=True)
        if self.args.dry_run:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        processes, streams = {}, []
        try:
            for worker, command in commands.items():
                log = self.log(worker).open("ab")
                log.write(f"\n### {what}\n$ {common.quote(command)}\n".encode())
                log.flush()
                processes[worker] = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True)
                stream = threading.Thread(target=_copy, daemon=True, args=(
                    processes[worker].stdout, log, sys.stdout.buffer if worker == 0 else None))
                stream.start()
                streams.append(stream)
            failed = self._wait(processes)
        finally:
            for process in processes.values():
                _end(process)
            for stream in streams:
                stream.join(timeout=10)
        if failed is not None:
            worker, code = failed
            tail = "".join(self.log(worker).read_text(errors="replace").splitlines(True)[-20:])
            raise LaunchError(f"worker {worker} failed ({what}, exit {code}); the others were "
                              f"stopped. Last lines of {self.log(worker)}:\n{tail}")

    @staticmethod
    def _wait(processes: dict[int, subprocess.Popen]) -> tuple[int, int] | None:
        running = dict(processes)
        while running:
            for worker, process in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[worker]
                if code != 0:
                    return worker, code
            time.sleep(0.2)
        return None


def _copy(source, log, terminal) -> None:
    for line in iter(source.readline, b""):
        log.write(line)
        log.flush()
        if terminal is not None:
            terminal.write(line)
            terminal.flush()
    log.close()


def _end(process: subprocess.Popen) -> None:
    """Ends a worker's ssh and everything it started locally (its own process group)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _check(command: list[str], what: str) -> str:
    """Runs a gcloud query; its stdout, or LaunchError with what it printed."""
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise LaunchError(f"{what} failed (exit {result.returncode}): "
                          f"{detail[-1] if detail else 'no output'}\n  $ {common.quote(command)}")
    return result.stdout


def check_bucket(args: argparse.Namespace, workdir: str) -> None:
    """The bucket of a gs:// (or --gcsfuse) workdir exists, before anything is created."""
    match = re.match(r"gs://([^/]+)", workdir)
    bucket = args.bucket or (match.group(1) if match else None)
    if bucket is None:
        return
    command = ["gcloud", "storage", "buckets", "describe", f"gs://{bucket}",
               "--format=value(name)"] + ([f"--project={args.project}"] if args.project else [])
    print(f"$ {common.quote(command)}", flush=True)
    if not args.dry_run:
        try:
            _check(command, f"bucket gs://{bucket}")
        except LaunchError as error:
            raise LaunchError(f"{error}\nCreate it (gcloud storage buckets create "
                              f"gs://{bucket} --location=REGION) or name another; "
                              "no TPU was created.") from None


def wait_until_active(args: argparse.Namespace) -> None:
    describe = [*_gcloud(args, "queued-resources", "describe"), "--format=json"]
    print(f"# every {args.poll_seconds:g} s until ACTIVE (ends on {', '.join(QUEUE_DEAD_ENDS)}, "
          f"or after {args.queue_timeout:g} s):\n$ {common.quote(describe)}", flush=True)
    if args.dry_run:
        return
    deadline, last = time.monotonic() + args.queue_timeout, None
    while True:
        state = json.loads(_check(describe, "describing the queued resource")).get("state", {})
        name = state.get("state", "UNKNOWN")
        if name != last:
            print(f"# queued resource {args.name}: {name}", flush=True)
            last = name
        if name == "ACTIVE":
            return
        if name in QUEUE_DEAD_ENDS:
            detail = (state.get("failedData") or state.get("suspendedData")
                      or state.get("suspendingData") or {})
            reason = detail.get("error", {}).get("message") if isinstance(detail, dict) else None
            raise LaunchError(f"queued resource {args.name} is {name}: "
                              f"{reason or json.dumps(state)}")
        if time.monotonic() >= deadline:
            raise LaunchError(f"queued resource {args.name} is still {name} after "
                              f"{args.queue_timeout:g} s (--queue-timeout); try another zone "
                              "or --spot, or wait longer.")
        time.sleep(args.poll_seconds)


def worker_addresses(args: argparse.Namespace, hosts: int) -> list[str]:
    describe = [*_gcloud(args, "tpu-vm", "describe"), "--format=json"]
    print(f"$ {common.quote(describe)}", flush=True)
    if args.dry_run:
        return [WORKER0_PLACEHOLDER] + [f"WORKER{i}_IP" for i in range(1, hosts)]
    node = json.loads(_check(describe, f"describing TPU {args.name}"))
    addresses = [endpoint["ipAddress"] for endpoint in node.get("networkEndpoints", [])]
    if not addresses:
        raise LaunchError(f"TPU {args.name} reports no workers (state {node.get('state')}).")
    if len(addresses) != hosts:
        print(f"# TPU {args.name} has {len(addresses)} workers (expected {hosts})", flush=True)
    return addresses


def archive(args: argparse.Namespace) -> Path:
    """This checkout as a tarball: HEAD plus uncommitted edits to tracked files."""
    path = Path(f"/tmp/textgen_jax-{args.name}.tar.gz")
    tree = subprocess.run(["git", "-C", str(REPO), "stash", "create"], capture_output=True,
                          text=True).stdout.strip() if not args.dry_run else ""
    common.run([["git", "-C", str(REPO), "archive", "--format=tar.gz", f"--output={path}",
                 tree or "HEAD"]], args.dry_run)
    return path


def launch(args: argparse.Namespace, train_flags: list[str]) -> None:
    accelerator, chips, hosts = parse_accelerator(args.accelerator)
    workdir = workdir_of(args, hosts)
    print(f"# {accelerator}: {chips} chips on {hosts} worker(s); one training process per worker; "
          f"workdir {workdir}", flush=True)
    check_bucket(args, workdir)
    created = False
    try:
        if not args.existing:
            common.run([create_command(args, accelerator)], args.dry_run)
            created = True
            if args.queued:
                wait_until_active(args)
        addresses = worker_addresses(args, hosts)
        workers = Workers(args, len(addresses))
        tarball = archive(args)
        common.run([["gcloud", "compute", "tpus", "tpu-vm", "scp", str(tarball),
                     f"{args.name}:~/", "--worker=all", *_where(args)]], args.dry_run)
        workers.run("install", lambda worker: install_script(args, tarball.name))
        if args.gcsfuse:
            workers.run("mount the bucket", lambda worker: mount_script(args.bucket))
        if len(addresses) > 1 and not workdir.startswith("gs://"):
            token = uuid.uuid4().hex[:12]
            write, read = shared_check_scripts(workdir, token)
            workers.run("check the workdir is shared (write)", lambda worker: write, [0])
            workers.run("check the workdir is shared (read)", lambda worker: read)
        flags = [*train_flags, *(["--config.train.checkpoint_commit_file=true"]
                                 if args.gcsfuse else [])]
        workers.run("train", lambda worker: train_script(
            args, workdir, flags, addresses[0], len(addresses), worker))
    finally:
        if created and not args.keep:
            common.run([delete_command(args)], args.dry_run)
        elif created or args.existing:
            print(f"# kept TPU {args.name}; delete it with: "
                  f"{common.quote(delete_command(args))}", flush=True)


def mount_script(bucket: str) -> str:
    """gcsfuse at MOUNT (installed from Google's apt repository when missing)."""
    return "\n".join([
        "set -euo pipefail",
        "if ! command -v gcsfuse >/dev/null; then",
        '  echo "deb https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -cs) main" '
        "| sudo tee /etc/apt/sources.list.d/gcsfuse.list",
        "  curl -fsS https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -",
        "  sudo apt-get update -q && sudo apt-get install -yq gcsfuse",
        "fi",
        f"sudo mkdir -p {MOUNT} && sudo chown \"$USER\" {MOUNT}",
        f"mountpoint -q {MOUNT} || gcsfuse --implicit-dirs {shlex.quote(bucket)} {MOUNT}",
    ])


def _interrupted(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="TPU VM (and queued resource) name")
    parser.add_argument("--zone", required=True)
    parser.add_argument("--accelerator", required=True, help="e.g. v4-32, v5e-256, v6e-64")
    parser.add_argument("--project", default=None)
    parser.add_argument("--version", default=None, help="TPU runtime version (default by family)")
    parser.add_argument("--queued", action="store_true", help="create a queued resource")
    parser.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
    parser.add_argument("--existing", action="store_true",
                        help="run on a TPU that exists already (e.g. one kept with --keep): "
                             "neither create nor delete it")
    parser.add_argument("--bucket", default=None,
                        help="GCS bucket (must exist); the workdir is gs://BUCKET/runs/NAME")
    parser.add_argument("--gcsfuse", action="store_true",
                        help=f"mount --bucket with gcsfuse at {MOUNT} and write there instead "
                             "(checkpoints then finish with a commit file, not a rename)")
    parser.add_argument("--workdir", default=None,
                        help="instead of --bucket: gs://... or a path every worker shares")
    parser.add_argument("--config", default="configs/gpt2.py:small")
    parser.add_argument("--python", default="3.12",
                        help="the workers' Python, made by uv (jax 0.10 needs >= 3.11)")
    parser.add_argument("--extra", default="tpu", choices=["tpu", "cpu"],
                        help="the package extra installed on the workers (cpu: a simulation)")
    parser.add_argument("--coordinator-port", type=int, default=8476)
    parser.add_argument("--queue-timeout", type=float, default=24 * 3600,
                        help="seconds to wait for a queued resource to become ACTIVE")
    parser.add_argument("--poll-seconds", type=float, default=30)
    parser.add_argument("--log-dir", default=None, help="default tpu-logs/NAME")
    parser.add_argument("--keep", action="store_true", help="do not delete the TPU at the end")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args, train_flags = parser.parse_known_args(argv)
    train_flags = [flag for flag in train_flags if flag != "--"]
    if bool(args.bucket) == bool(args.workdir):
        parser.error("give either --bucket (workdir gs://BUCKET/runs/NAME) or --workdir")
    if args.gcsfuse and not args.bucket:
        parser.error("--gcsfuse mounts --bucket: give --bucket too")
    signal.signal(signal.SIGTERM, _interrupted)  # a closed terminal cleans up as Ctrl-C does
    try:
        launch(args, train_flags)
    except (LaunchError, KeyboardInterrupt) as error:
        sys.exit(f"launch/tpu.py: error: {error or 'interrupted'}")


if __name__ == "__main__":
    main()
