"""Where a training step's time goes, ours against transformers', grouped by operation.

Runs the GPT-2 `train_gpt2_bench` step (bench/README.md's rules: random init, AdamW, dropout
0) under each framework's profiler: ours with `jax.profiler.trace` (XLA:CPU records one event
per executed thunk: a fusion, a dot, a copy...), transformers' with `torch.profiler` (one
event per aten operator, self time). Prints one JSON line per framework with the step time
and its top operations (milliseconds per step, share of the step), then the groups side by
side. A `kind` groups our thunks by what they compute (dot, fusion, copy/transpose, reduce,
...); an XLA fusion's name says little, so the HLO of the ten largest fusions is printed with
`--hlo`.

    .venv/bin/python bench/profile_train_step.py
    .venv/bin/python bench/profile_train_step.py --dtype bfloat16 --steps 5 --hlo
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import (CASES, OPTIM, SEED, WARMUP_STEPS, clm_batch,  # noqa: E402
                              jax_config, time_steps)

CASE = CASES["train_gpt2_bench"]


def _kind(name: str) -> str:
    """A thunk's group: its HLO op name without the numeric suffix (dot.12 -> dot)."""
    return re.sub(r"[._]\d+$", "", re.sub(r"\.\d+(\.\d+)*$", "", name))


def profile_ours(dtype: str, steps: int, show_hlo: bool) -> dict:
    import jax

    from textgen_jax.models import build_model
    from textgen_jax.objectives import clm_loss_fn
    from textgen_jax.training import optimizer, partitioning
    from textgen_jax.training import steps as steps_lib

    c = jax_config(CASE, dtype)
    mesh = partitioning.make_mesh(c.mesh)
    model = build_model(c.model, CASE["vocab"])
    tx = optimizer.make_optimizer(c.optim, 100)
    state, shardings = steps_lib.create_state(model, tx, CASE["seq_len"], mesh, seed=SEED)
    train_step = steps_lib.jit_train_step(
        steps_lib.make_train_step(model, clm_loss_fn, tx), shardings, mesh)
    batch = partitioning.global_batch(clm_batch(c, np.random.default_rng(SEED))[0], mesh)
    rng = jax.random.key(0)
    holder = {"state": state}

    def step():
        with steps_lib.activate(mesh):
            holder["state"], metrics = train_step(holder["state"], batch, rng)
        jax.block_until_ready((holder["state"], metrics))

    step_ms = sum(time_steps(step, WARMUP_STEPS, steps)) / steps * 1e3
    trace_dir = tempfile.mkdtemp(prefix="textgen_profile_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(steps):
            step()
    (path,) = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    # Thunks run on XLA's worker threads; host-side (Python, PjRt) events are not thunks.
    host = re.compile(r"^(\$|PjitFunction|CommonPjRt|Allocate|Handle|Parse|PythonRef|Thunk"
                      r"Executor|ExecuteHelper)")
    by_name = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not host.match(event["name"]):
            by_name[event["name"]] += event.get("dur", 0) / 1e3 / steps
    by_kind = collections.Counter()
    for name, ms in by_name.items():
        by_kind[_kind(name)] += ms
    record = {"framework": "textgen_jax", "dtype": dtype, "step_ms": round(step_ms, 1),
              "thunk_ms": round(sum(by_name.values()), 1),
              "top_kinds": {k: round(v, 1) for k, v in by_kind.most_common(15)},
              "top_thunks": {k: round(v, 1) for k, v in by_name.most_common(25)}}
    if show_hlo:
        compiled = train_step.lower(holder["state"], batch, rng).compile()
        text = compiled.as_text()
        for name, _ in by_name.most_common(10):
            match = re.search(rf"^.*\b{re.escape(name)} = .*$", text, re.M)
            if match:
                print(f"--- {name}: {match.group(0)[:400]}")
    return record


def profile_theirs(dtype: str, steps: int) -> dict:
    import contextlib

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=CASE["vocab"], n_positions=CASE["max_len"],
                        n_embd=CASE["d_model"], n_layer=CASE["num_layers"],
                        n_head=CASE["num_heads"], n_inner=CASE["d_ff"], resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).train()
    optim = torch.optim.AdamW(model.parameters(), lr=OPTIM["lr"],
                              betas=(OPTIM["b1"], OPTIM["b2"]), eps=OPTIM["eps"],
                              weight_decay=OPTIM["weight_decay"])
    theirs = clm_batch(jax_config(CASE, dtype), np.random.default_rng(SEED))[1]
    ids = torch.from_numpy(theirs["input_ids"].astype(np.int64))  # the batch ours reads
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16"
                else contextlib.nullcontext())

    def step():
        optim.zero_grad(set_to_none=True)
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()

    step_ms = sum(time_steps(step, WARMUP_STEPS, steps)) / steps * 1e3
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    by_name = {event.key: event.self_cpu_time_total / 1e3 / steps
               for event in prof.key_averages()}
    top = sorted(by_name.items(), key=lambda item: -item[1])[:25]
    return {"framework": "transformers", "dtype": dtype, "step_ms": round(step_ms, 1),
            "op_ms": round(sum(by_name.values()), 1),
            "top_ops": {k: round(v, 1) for k, v in top}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--hlo", action="store_true", help="print the largest thunks' HLO")
    parser.add_argument("--no-transformers", action="store_true")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(os.cpu_count())
    print(json.dumps(profile_ours(args.dtype, args.steps, args.hlo)), flush=True)
    if not args.no_transformers:
        print(json.dumps(profile_theirs(args.dtype, args.steps)), flush=True)


if __name__ == "__main__":
    main()
