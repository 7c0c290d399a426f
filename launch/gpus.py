"""Train on the GPUs of one machine: a single process drives all of them (the mesh spans every
visible GPU; no jax.distributed needed).

    python launch/gpus.py --gpus 0,1,2,3 --workdir runs/gpt2_small --config configs/gpt2.py:small

--dry-run prints the commands instead of running them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def commands(args: argparse.Namespace, train_flags: list[str]) -> list[str]:
    env = [f"XLA_PYTHON_CLIENT_MEM_FRACTION={args.memory_fraction}"]
    if args.gpus:
        env.insert(0, f"CUDA_VISIBLE_DEVICES={args.gpus}")
    train = common.train_command(args.config, args.workdir, ["--distributed=off", *train_flags])
    return ["nvidia-smi --query-gpu=index,name,memory.total --format=csv"
            + (f" --id={args.gpus}" if args.gpus else ""),
            " ".join(env) + " " + shlex.join(train)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", default="", help="GPU ids, e.g. 0,1,2,3 (default: all)")
    parser.add_argument("--memory-fraction", default="0.90",
                        help="of each GPU's memory JAX preallocates")
    parser.add_argument("--config", default="configs/gpt2.py:small")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args, train_flags = parser.parse_known_args(argv)
    train_flags = [flag for flag in train_flags if flag != "--"]
    count = len(args.gpus.split(",")) if args.gpus else "all"
    print(f"# one process over {count} GPUs of this machine")
    common.run(commands(args, train_flags), args.dry_run)


if __name__ == "__main__":
    main()
