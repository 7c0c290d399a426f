"""Train on a Cloud TPU pod: create the TPU VM (or a queued resource), install this package on
every worker, run `textgen-jax train` on all workers at once (one process per host, joined by
jax.distributed), stream their logs here, and delete the TPU when done.

    python launch/tpu.py --name gpt2-small --zone us-central2-b --accelerator v4-32 \
        --bucket my-bucket --config configs/gpt2.py:small -- --config.train.num_steps=10000

Checkpoints must sit where every host can write its shards: --bucket mounts a GCS bucket with
gcsfuse at /mnt/gcs on every worker and the workdir defaults to /mnt/gcs/runs/NAME.
--dry-run prints every command instead of running it.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

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
MOUNT = "/mnt/gcs"


def parse_accelerator(name: str) -> tuple[str, int, int]:
    """'v4-32' -> ('v4-32', 16 chips, 4 hosts); 'v5e-256' -> ('v5litepod-256', 256, 64)."""
    match = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", name)
    family = ALIASES.get(match.group(1), match.group(1)) if match else None
    if family not in FAMILIES:
        raise SystemExit(f"--accelerator={name!r}: use FAMILY-SIZE with FAMILY one of "
                         f"{sorted(FAMILIES) + sorted(ALIASES)}, e.g. v4-32 or v5e-256.")
    size = int(match.group(2))
    counts, chips_per_host, single_host_max, _ = FAMILIES[family]
    chips = size // 2 if counts == "cores" else size  # v2-v5p sizes count TensorCores (2/chip)
    hosts = 1 if chips <= single_host_max and counts == "chips" else max(chips // chips_per_host, 1)
    return f"{family}-{size}", chips, hosts


def commands(args: argparse.Namespace, train_flags: list[str]) -> tuple[list, list]:
    """(the commands that create, install and train; the commands that delete)."""
    accelerator, _, _ = parse_accelerator(args.accelerator)
    version = args.version or FAMILIES[accelerator.split("-")[0]][3]
    where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])
    ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, *where, "--worker=all"]
    spot = ["--spot"] if args.spot else []
    if args.queued:
        create = [["gcloud", "compute", "tpus", "queued-resources", "create", args.name,
                   f"--node-id={args.name}", *where, f"--accelerator-type={accelerator}",
                   f"--runtime-version={version}", *spot],
                  f"until [ \"$(gcloud compute tpus queued-resources describe {args.name} "
                  f"{' '.join(where)} --format='value(state.state)')\" = ACTIVE ]; "
                  "do sleep 30; done"]
        delete = [["gcloud", "compute", "tpus", "queued-resources", "delete", args.name, *where,
                   "--force", "--quiet"]]
    else:
        create = [["gcloud", "compute", "tpus", "tpu-vm", "create", args.name, *where,
                   f"--accelerator-type={accelerator}", f"--version={version}", *spot]]
        delete = [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, *where, "--quiet"]]

    archive = f"/tmp/textgen_jax-{args.name}.tar.gz"
    install = ('pip install -U "jax[tpu]" && mkdir -p ~/textgen_jax && '
               f"tar xzf ~/{Path(archive).name} -C ~/textgen_jax && pip install -e ~/textgen_jax")
    setup = [["git", "-C", str(Path(__file__).resolve().parents[1]), "archive",
              "--format=tar.gz", f"--output={archive}", "HEAD"],
             ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{args.name}:~/",
              *where, "--worker=all"],
             [*ssh, f"--command={install}"]]
    if args.bucket:
        mount = (f"sudo mkdir -p {MOUNT} && sudo chown $USER {MOUNT} && "
                 "(command -v gcsfuse || (echo \"deb https://packages.cloud.google.com/apt "
                 "gcsfuse-$(lsb_release -cs) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list"
                 " && curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo "
                 "apt-key add - && sudo apt-get update -q && sudo apt-get install -yq gcsfuse)) && "
                 f"gcsfuse --implicit-dirs {args.bucket} {MOUNT}")
        setup.append([*ssh, f"--command={mount}"])
    workdir = args.workdir or f"{MOUNT}/runs/{args.name}"
    train = common.train_command(args.config, workdir, ["--distributed=on", *train_flags])
    # All workers run the same command; their output streams back here, prefixed by worker.
    run = [*ssh, f"--command=cd ~/textgen_jax && PATH=$HOME/.local/bin:$PATH "
                 f"{shlex.join(train)}"]
    return create + setup + [run], delete


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
    parser.add_argument("--bucket", default=None, help="GCS bucket mounted at /mnt/gcs")
    parser.add_argument("--config", default="configs/gpt2.py:small")
    parser.add_argument("--workdir", default=None, help=f"default {MOUNT}/runs/NAME")
    parser.add_argument("--keep", action="store_true", help="do not delete the TPU at the end")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args, train_flags = parser.parse_known_args(argv)
    train_flags = [flag for flag in train_flags if flag != "--"]
    if not args.bucket and not args.workdir:
        parser.error("give --bucket (mounted on every worker) or a --workdir every worker shares")
    accelerator, chips, hosts = parse_accelerator(args.accelerator)
    print(f"# {accelerator}: {chips} chips on {hosts} worker(s); one training process per worker",
          flush=True)
    launch, delete = commands(args, train_flags)
    try:
        common.run(launch, args.dry_run)
    finally:
        if not args.keep:
            common.run(delete, args.dry_run)


if __name__ == "__main__":
    main()
