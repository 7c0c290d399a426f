"""Train on several GPU nodes under SLURM: one process per node owning all its GPUs, joined by
jax.distributed with the first node of the allocation as coordinator.

    python launch/slurm.py --nodes 4 --gpus-per-node 8 --partition gpu --time 24:00:00 \
        --workdir /shared/runs/gpt2_medium --config configs/gpt2.py:medium

writes the batch script (--script, default WORKDIR/job.sbatch) and submits it with sbatch, its
log going to WORKDIR/slurm-JOBID.out.
The workdir must be on a filesystem every node shares (every process writes its checkpoint
shards). --dry-run prints the script and the sbatch command instead.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PORT = 8476


def batch_script(args: argparse.Namespace, train_flags: list[str]) -> str:
    """The job script. Every path and flag is quoted for the batch shell, and srun hands them to
    each task as arguments (`"$@"`), never through another layer of shell parsing; only
    $SLURM_PROCID is read by each task, and the coordinator (the first host of the
    allocation, which runs process 0) once by the batch shell."""
    train = common.train_command(args.config, args.workdir, [
        f"--num_processes={args.nodes}", *train_flags])
    task = 'exec "$@" --process_id="$SLURM_PROCID"'
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={args.job_name}",
        f"#SBATCH --nodes={args.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={args.gpus_per_node}",
        f"#SBATCH --cpus-per-task={args.cpus_per_task}",
        f"#SBATCH --time={args.time}",
        *([f"#SBATCH --partition={args.partition}"] if args.partition else []),
        *([f"#SBATCH --account={args.account}"] if args.account else []),
        "set -euo pipefail",
        'export JAX_COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" '
        f'| head -n 1):{args.port}"',
        # Each process owns all its node's GPUs: JAX's own SLURM detection would otherwise give
        # it only GPU $SLURM_LOCALID (one process per GPU).
        f"export JAX_LOCAL_DEVICE_IDS={','.join(map(str, range(args.gpus_per_node)))}",
        *([f"source {shlex.quote(args.venv + '/bin/activate')}"] if args.venv else []),
        f"cd {shlex.quote(args.repo)}",
        # One task per node; each sees all of its node's GPUs.
        f"srun --ntasks={args.nodes} --ntasks-per-node=1 bash -c {shlex.quote(task)} task "
        + shlex.join(train),
    ]
    return "\n".join(lines) + "\n"


def submit_command(args: argparse.Namespace, path: str) -> list[str]:
    # The log path goes to sbatch as an argument: in an #SBATCH line a space would split it.
    return ["sbatch", f"--output={os.path.join(args.workdir, 'slurm-%j.out')}", path]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--cpus-per-task", type=int, default=16)
    parser.add_argument("--time", default="24:00:00")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--job-name", default="textgen-jax")
    parser.add_argument("--config", default="configs/gpt2.py:small")
    parser.add_argument("--workdir", required=True, help="on a filesystem all nodes share")
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]),
                        help="this repository's path on the nodes")
    parser.add_argument("--venv", default=os.environ.get("VIRTUAL_ENV"),
                        help="virtual environment to activate on the nodes")
    parser.add_argument("--port", type=int, default=PORT, help="the coordinator's port on the "
                        "first node")
    parser.add_argument("--script", default=None, help="default WORKDIR/job.sbatch")
    parser.add_argument("--dry-run", action="store_true", help="print the script and command")
    args, train_flags = parser.parse_known_args(argv)
    train_flags = [flag for flag in train_flags if flag != "--"]
    script = batch_script(args, train_flags)
    path = args.script or os.path.join(args.workdir, "job.sbatch")
    print(f"# {args.nodes} node(s) x {args.gpus_per_node} GPUs = "
          f"{args.nodes * args.gpus_per_node} GPUs; one training process per node")
    if args.dry_run:
        print(f"# {path}:\n{script}", end="")
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        Path(path).write_text(script)
    common.run([submit_command(args, path)], args.dry_run)


if __name__ == "__main__":
    main()
