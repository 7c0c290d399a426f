"""Train on several GPU nodes under SLURM: one process per node owning all its GPUs, joined by
jax.distributed with the first node of the allocation as coordinator.

    python launch/slurm.py --nodes 4 --gpus-per-node 8 --partition gpu --time 24:00:00 \
        --workdir /shared/runs/gpt2_medium --config configs/gpt2.py:medium

writes the batch script (--script, default WORKDIR/job.sbatch) and submits it with sbatch.
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
    # $SLURM_PROCID is expanded by each task (single quotes), the coordinator once by the batch
    # shell: the first host of the allocation, which runs process 0.
    train = common.train_command(args.config, args.workdir, [
        "--coordinator_address=$JAX_COORDINATOR_ADDRESS", "--num_processes=$SLURM_NNODES",
        "--process_id=$SLURM_PROCID", *train_flags])
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={args.job_name}",
        f"#SBATCH --nodes={args.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={args.gpus_per_node}",
        f"#SBATCH --cpus-per-task={args.cpus_per_task}",
        f"#SBATCH --time={args.time}",
        f"#SBATCH --output={args.workdir}/slurm-%j.out",
        *([f"#SBATCH --partition={args.partition}"] if args.partition else []),
        *([f"#SBATCH --account={args.account}"] if args.account else []),
        "set -euo pipefail",
        'export JAX_COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" '
        f'| head -n 1):{PORT}"',
        *([f"source {shlex.quote(args.venv)}/bin/activate"] if args.venv else []),
        f"cd {shlex.quote(args.repo)}",
        # One task per node; each sees all of its node's GPUs.
        f"srun --ntasks={args.nodes} --ntasks-per-node=1 bash -c '"
        + " ".join(train).replace("'", "'\\''") + "'",
    ]
    return "\n".join(lines) + "\n"


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
    common.run([["sbatch", path]], args.dry_run)


if __name__ == "__main__":
    main()
