"""What pretraining buys: each architecture's embedded-corpus fine-tune from its pretrained
`tiny` workdir against the same fine-tune from random initialisation, over several seeds.

For each architecture: pretrains `configs/<arch>.py:tiny` into PRETRAINED/<arch>_tiny unless a
checkpoint is there already (the README's quick start makes them), then fine-tunes the task
(`configs/finetune/<task>.py:<arch>`, default docstring_kind: no download) once per seed from
that workdir (config.init_from) and once per seed from random initialisation with the same
tokenizer, config and data order. Prints one JSON line per run (the final evaluation's primary
metric, the task's first), one `gain` line per architecture (mean and standard deviation of
each side, the margin and the margin in units of the larger standard deviation), and a
Markdown table for the README.

    .venv/bin/python bench/finetune_gain.py                          # five archs, 3 seeds
    .venv/bin/python bench/finetune_gain.py --archs gpt2,bert --seeds 3 --pretrained runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

ARCHS = ("gpt", "bert", "xlm", "gpt2", "bart")


def _pretrained(arch: str, root: Path, steps: int) -> Path:
    from textgen_jax.presets import architecture_config
    from textgen_jax.training import checkpoint
    from textgen_jax.training.loop import train_and_evaluate

    workdir = root / f"{arch}_tiny"
    if (workdir / checkpoint.CHECKPOINT_DIR).is_dir():
        return workdir
    config = architecture_config(arch, "tiny")
    if steps:
        config.train.num_steps = steps
    print(json.dumps({"pretraining": arch, "workdir": str(workdir),
                      "steps": config.train.num_steps}), flush=True)
    train_and_evaluate(config, str(workdir))
    return workdir


def _fine_tune(task: str, arch: str, pretrained: Path, init: str, seed: int, workdir: Path,
               steps: int, overrides: list[str]) -> float:
    import importlib.util

    from textgen_jax.data.tokenizer import TOKENIZER_FILENAME
    from textgen_jax.finetune.tasks import get_task
    from textgen_jax.training.loop import train_and_evaluate

    path = Path(__file__).resolve().parents[1] / "configs" / "finetune" / f"{task}.py"
    spec = importlib.util.spec_from_file_location(f"finetune_{task}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arch)
    config.seed = seed
    config.data.shuffle_buffer_seed = seed
    config.sample.prompts = ()
    if steps:
        config.train.update(num_steps=steps, eval_every=steps, checkpoint_every=steps)
    for override in overrides:  # KEY=VALUE, the value parsed as the leaf's type
        key, _, value = override.partition("=")
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else (
            value.lower() in ("1", "true"))
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    if init == "pretrained":
        config.init_from = str(pretrained)
    else:  # the same vocabulary, so that only the initialisation differs
        shutil.copyfile(pretrained / TOKENIZER_FILENAME, workdir / TOKENIZER_FILENAME)
    result = train_and_evaluate(config, str(workdir))
    return float(result["eval"][get_task(config.task.name).metrics[0]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated")
    parser.add_argument("--task", default="docstring_kind",
                        help="an embedded-corpus task with a config in configs/finetune/")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrained", default="runs",
                        help="where the <arch>_tiny workdirs are, or are pretrained")
    parser.add_argument("--out", default="runs/finetune_gain", help="the fine-tunes' workdirs")
    parser.add_argument("--pretrain-steps", type=int, default=0, help="0: the preset's")
    parser.add_argument("--finetune-steps", type=int, default=0, help="0: the preset's")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a fine-tuning config override, e.g. task.lm_weight=0 (repeatable)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds={args.seeds}: use 1 or more (3 for a standard deviation).")

    rows = []
    for arch in args.archs.split(","):
        if arch not in ARCHS:
            parser.error(f"--archs names {arch!r}; use some of {','.join(ARCHS)}.")
        pretrained = _pretrained(arch, Path(args.pretrained), args.pretrain_steps)
        scores: dict[str, list[float]] = {"pretrained": [], "random": []}
        for seed in range(args.seeds):
            for init in scores:
                start = time.perf_counter()
                score = _fine_tune(args.task, arch, pretrained, init, seed,
                                   Path(args.out) / f"{arch}_{init}_{seed}",
                                   args.finetune_steps, args.set)
                scores[init].append(score)
                print(json.dumps({"case": "finetune", "task": args.task, "arch": arch,
                                  "init": init, "seed": seed, "metric": score,
                                  "run_s": round(time.perf_counter() - start, 1)}), flush=True)
        summary = {"case": "gain", "task": args.task, "arch": arch, "seeds": args.seeds,
                   "overrides": args.set}
        for init, values in scores.items():
            summary[f"{init}_mean"] = statistics.fmean(values)
            summary[f"{init}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        margin = summary["pretrained_mean"] - summary["random_mean"]
        spread = max(summary["pretrained_std"], summary["random_std"])
        summary.update(margin=margin, margin_in_std=margin / spread if spread else None)
        print(json.dumps(summary), flush=True)
        rows.append(summary)

    print(f"\n| arch | {args.task}: pretrained | random init | margin | margin / std |")
    print("|---|---|---|---|---|")
    for row in rows:
        ratio = "" if row["margin_in_std"] is None else f"{row['margin_in_std']:.1f}"
        print(f"| {row['arch']} | {row['pretrained_mean']:.3f} ± {row['pretrained_std']:.3f} | "
              f"{row['random_mean']:.3f} ± {row['random_std']:.3f} | {row['margin']:+.3f} | "
              f"{ratio} |")


if __name__ == "__main__":
    main()
