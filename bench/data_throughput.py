"""Input-pipeline throughput: the tokens per second one host process gets from each pretraining
objective's grain pipeline on the embedded corpus, by grain worker count, and what a TPU v4
host needs to keep GPT-2 small fed.

Each case is the loop's own input path (training/loop.py): the architecture's `tiny` preset
with config.objective and config.data.worker_count set, the tokenizer the loop would load or
train in a workdir (WORKDIR/<arch>, kept, so each is trained once), and
`partitioning.process_dataset(objective.dataset, ...)` over the train split, shuffled and
repeated. After `--warmup-batches` (the first batch includes starting the workers), batches
are pulled for `--seconds`. One JSON line per objective and worker count: tokens/s (batch x
seq_len per batch), non-padding tokens/s (segment_ids > 0), and the main process's CPU seconds
per second (all its threads, not the workers'); then a `host_requirement` line and a Markdown
table. GPT's pipeline is GPT-2's (the same config.data), so clm runs once, on gpt2. Only the
packed streams (clm, xlm_mlm) use config.data.worker_count, and xlm_mlm starts that many
workers per language stream; the other pipelines read in the main process whatever it says.

`host_requirement`: GPT-2 small (configs/gpt2.py:small) at `--mfu` of `--chips` chips of
`--accelerator` (the peak the loop's MFU uses), FLOPs per token as the loop counts them
(6N + 12·L·d·T, N the non-embedding parameters of the abstract state), so tokens/s per host =
mfu x chips x peak / FLOPs per token; cores needed = that / the best clm tokens/s per process
(max(1, workers) processes).

    .venv/bin/python bench/data_throughput.py                       # all objectives, workers 0,1,2
    .venv/bin/python bench/data_throughput.py --objectives clm --workers 0 --quick
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

OBJECTIVE_ARCHS = {"clm": "gpt2", "mlm_nsp": "bert", "xlm_mlm": "xlm", "tlm": "xlm",
                   "denoising": "bart"}
QUICK_SECONDS = 2.0


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def case_config(objective: str, workers: int, data_dir: str):
    from textgen_jax.presets import architecture_config

    config = architecture_config(OBJECTIVE_ARCHS[objective], "tiny")
    config.objective = objective
    config.data.worker_count = workers
    if data_dir:
        config.data.data_dir = data_dir
    return config


def tokenizer_for(config, workdir: Path):
    """The tokenizer the loop would use in `workdir` (trained there on first use)."""
    from textgen_jax import data as data_lib
    from textgen_jax.finetune.objectives import objective_for

    tokenizer = data_lib.load_or_train_tokenizer(str(workdir), config)
    objective_for(config).check_vocabulary(config, tokenizer, f"in {workdir}")
    return tokenizer


def measure(objective: str, workers: int, seconds: float, warmup_batches: int, workdir: Path,
            data_dir: str) -> dict:
    """One case: batches pulled from the loop's training iterator for `seconds`."""
    from textgen_jax.finetune.objectives import objective_for
    from textgen_jax.training import partitioning

    config = case_config(objective, workers, data_dir)
    tokenizer = tokenizer_for(config, workdir / config.model.arch)
    start = time.perf_counter()
    dataset = partitioning.process_dataset(objective_for(config).dataset, config, tokenizer,
                                           config.data.train_split, shuffle=True, repeat=True)
    iterator = iter(dataset)
    try:
        first = next(iterator)
        startup_s = time.perf_counter() - start
        for _ in range(warmup_batches):
            next(iterator)
        batches = tokens = real_tokens = 0
        cpu_start, start = time.process_time(), time.perf_counter()
        while time.perf_counter() - start < seconds or not batches:
            batch = next(iterator)
            batches += 1
            tokens += batch["inputs"].size
            real_tokens += int(np.count_nonzero(batch["segment_ids"]))
        elapsed = time.perf_counter() - start
        main_cpu_s = time.process_time() - cpu_start
    finally:
        if hasattr(iterator, "close"):
            iterator.close()  # stops grain's worker processes
    batch_size, seq_len = first["inputs"].shape
    return {"case": f"data_{objective}", "arch": config.model.arch, "workers": workers,
            "batch": batch_size, "seq_len": seq_len,
            "tokens_per_s": round(tokens / elapsed, 1),
            "non_padding_tokens_per_s": round(real_tokens / elapsed, 1),
            "tokens_per_s_per_process": round(tokens / elapsed / max(1, workers), 1),
            "batches": batches, "seconds": round(elapsed, 3), "startup_s": round(startup_s, 3),
            "main_process_cores": round(main_cpu_s / elapsed, 3),
            "cpu_count": os.cpu_count()}


def gpt2_small_flops_per_token() -> dict:
    """GPT-2 small's training FLOPs per token, counted as the loop counts them for MFU."""
    import flax.linen as nn

    from textgen_jax import models
    from textgen_jax.presets import architecture_config
    from textgen_jax.training import metrics as metrics_lib
    from textgen_jax.training import optimizer, steps

    config = architecture_config("gpt2", "small")
    spec = models.spec_for(config.model)
    model = spec.build(config.model.vocab_size)
    tx = optimizer.make_optimizer(config.optim, config.train.num_steps)
    _, boxed = steps.abstract_state(model, tx, config.data.seq_len)
    non_embedding = metrics_lib.count_params(nn.meta.unbox(boxed).params,
                                             exclude_embeddings=True)
    layers = spec.attention_layer_count()
    return {"num_layers": layers, "d_model": config.model.d_model,
            "seq_len": config.data.seq_len, "vocab_size": config.model.vocab_size,
            "non_embedding_params": non_embedding,
            "flops_per_token": metrics_lib.flops_per_token(layers, config.model.d_model,
                                                           config.data.seq_len, non_embedding)}


def host_requirement(records: list[dict], accelerator: str, chips: int, mfu: float) -> dict:
    from textgen_jax.training.metrics import _ACCELERATOR_PEAK_FLOPS

    if accelerator not in _ACCELERATOR_PEAK_FLOPS:
        raise SystemExit(f"--accelerator={accelerator!r}: use one of "
                         f"{', '.join(_ACCELERATOR_PEAK_FLOPS)}.")
    peak = _ACCELERATOR_PEAK_FLOPS[accelerator][0]  # bfloat16
    model = gpt2_small_flops_per_token()
    needed = mfu * chips * peak / model["flops_per_token"]
    clm = [r for r in records if r["case"] == "data_clm"]
    best = max(clm, key=lambda r: r["tokens_per_s_per_process"], default=None)
    per_core = best["tokens_per_s_per_process"] if best else None
    return {"case": "host_requirement", "model": "gpt2:small", **model,
            "accelerator": accelerator, "chips": chips, "peak_flops_per_chip": peak, "mfu": mfu,
            "tokens_per_s_per_host": round(needed, 1),
            "clm_workers": best["workers"] if best else None,
            "clm_tokens_per_s_per_core": per_core,
            "cores_needed": round(needed / per_core, 2) if per_core else None}


def markdown(records: list[dict], requirement: dict) -> str:
    lines = ["| objective | arch | workers | batch × seq | tokens/s | non-padding tokens/s | "
             "per process | main process cores |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['case'][5:]} | {r['arch']} | {r['workers']} | {r['batch']} × "
                     f"{r['seq_len']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['non_padding_tokens_per_s']:,.0f} | "
                     f"{r['tokens_per_s_per_process']:,.0f} | "
                     f"{r['main_process_cores']:.2f} |")
    q = requirement
    lines.append(f"\nGPT-2 small ({q['flops_per_token'] / 1e6:.0f} MFLOP/token) at "
                 f"{100 * q['mfu']:.0f}% MFU on {q['chips']} × {q['accelerator']}: "
                 f"{q['tokens_per_s_per_host']:,.0f} tokens/s per host"
                 + (f"; {q['cores_needed']:.1f} cores at the best clm "
                    f"{q['clm_tokens_per_s_per_core']:,.0f} tokens/s per process."
                    if q["cores_needed"] else "."))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default=",".join(OBJECTIVE_ARCHS), help="comma-separated")
    parser.add_argument("--workers", default="0,1,2", help="grain worker counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per case")
    parser.add_argument("--warmup-batches", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_SECONDS:g} timed seconds and 1 warm-up batch (a smoke test)")
    parser.add_argument("--workdir", default="runs/data_throughput",
                        help="holds one tokenizer per architecture, trained on first use")
    parser.add_argument("--data-dir", default="", help="TFDS data dir ('' = the default)")
    parser.add_argument("--accelerator", default="TPU v4")
    parser.add_argument("--chips", type=int, default=4, help="chips per host")
    parser.add_argument("--mfu", type=float, default=0.5)
    args = parser.parse_args()
    objectives = args.objectives.split(",")
    for objective in objectives:
        if objective not in OBJECTIVE_ARCHS:
            parser.error(f"--objectives names {objective!r}; use some of "
                         f"{','.join(OBJECTIVE_ARCHS)}.")
    try:
        workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers={args.workers!r}: give counts like 0,1,2.")
    if args.quick:
        args.seconds, args.warmup_batches = QUICK_SECONDS, 1

    # grain's worker processes read absl flags, which nothing here parses.
    from absl import flags
    flags.FLAGS.mark_as_parsed()

    records = []
    for objective in objectives:
        for count in workers:
            records.append(measure(objective, count, args.seconds, args.warmup_batches,
                                   Path(args.workdir), args.data_dir))
            emit(records[-1])
    requirement = host_requirement(records, args.accelerator, args.chips, args.mfu)
    emit(requirement)
    print("\n" + markdown(records, requirement))


if __name__ == "__main__":  # grain's workers are spawned: they import this module
    main()
