"""Training throughput of textgen_jax against transformers' GPT2LMHeadModel (rules: bench/README.md).

Prints one JSON line per case, framework and dtype, a `matmul_2048` calibration line per
framework and dtype (the MFU denominator), and a `comparison` line per case:

    .venv/bin/python bench/train_throughput.py
    .venv/bin/python bench/train_throughput.py --cases train_gpt2_bench --steps 20 --no-transformers

`--compile-depths 2,8,32` instead times the train step's compilation (nothing runs) at each depth,
unrolled and with config.model.scan_layers, one `compile` line each with its ratio to the
shallowest depth of the same layout and to the unrolled layout at the same depth:

    .venv/bin/python bench/train_throughput.py --cases train_gpt2_bench --compile-depths 2,8,32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from typing import Callable

import numpy as np

CASES = {
    "train_gpt2_bench": dict(vocab=8192, max_len=512, d_model=512, num_layers=6, num_heads=8,
                             d_ff=2048, seq_len=256, batch=8, min_steps=10),
    "train_gpt2_small": dict(vocab=50257, max_len=1024, d_model=768, num_layers=12, num_heads=12,
                             d_ff=3072, seq_len=512, batch=4, min_steps=5),
}
DTYPES = ("float32", "bfloat16")
OPTIM = dict(lr=3e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)
WARMUP_STEPS = 3
SEED = 0
NOTE = ("textgen_jax's AdamW does not decay norms, biases and embeddings; torch's decays all "
        "parameters (a negligible compute difference). No gradient clipping on either side.")


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(step: Callable[[], None], warmup: int, steps: int) -> list[float]:
    """Seconds of each of `steps` calls of `step` after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def token_ids(case: dict) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    return rng.integers(0, case["vocab"], size=(case["batch"], case["seq_len"]), dtype=np.int32)


def flops_per_token(case: dict, non_embedding_params: int) -> float:
    """6N + 12·L·d·T (bench/README.md): N without embeddings, no causal halving."""
    return (6 * non_embedding_params
            + 12 * case["num_layers"] * case["d_model"] * case["seq_len"])


def step_record(name: str, framework: str, dtype: str, case: dict, times: list[float],
                params: int, non_embedding: int, matmul_gflops: float) -> dict:
    median = statistics.median(times)
    tokens_per_s = case["batch"] * case["seq_len"] / median
    gflops = tokens_per_s * flops_per_token(case, non_embedding) / 1e9
    return {"case": name, "framework": framework, "dtype": dtype,
            "tokens_per_s": round(tokens_per_s, 1), "step_ms": round(median * 1e3, 1),
            "step_ms_min": round(min(times) * 1e3, 1), "step_ms_max": round(max(times) * 1e3, 1),
            "timed_steps": len(times), "params": params, "non_embedding_params": non_embedding,
            "gflops_per_s": round(gflops, 1), "mfu": round(gflops / matmul_gflops, 3),
            "peak_rss_mb": round(peak_rss_mb()), "note": NOTE}


def matmul_record(framework: str, dtype: str, times: list[float]) -> dict:
    median = statistics.median(times)
    return {"case": "matmul_2048", "framework": framework, "dtype": dtype,
            "gflops_per_s": round(2 * 2048 ** 3 / median / 1e9, 1),
            "ms": round(median * 1e3, 2), "ms_min": round(min(times) * 1e3, 2),
            "ms_max": round(max(times) * 1e3, 2)}


# ---------------------------------------------------------------- textgen_jax

def jax_matmul_gflops(dtype: str) -> dict:
    """2048^3 matmul; bfloat16 inputs accumulate in float32, as our layers do."""
    import jax
    import jax.numpy as jnp

    a, b = (jax.random.normal(jax.random.key(i), (2048, 2048)).astype(dtype) for i in (0, 1))
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    jax.block_until_ready(matmul(a, b))
    return matmul_record("textgen_jax", dtype,
                         time_steps(lambda: jax.block_until_ready(matmul(a, b)), 3, 10))


def jax_config(case: dict, dtype: str):
    from textgen_jax import config as config_lib

    c = config_lib.base_config()
    for key in ("num_layers", "d_model", "num_heads", "d_ff", "max_len"):
        c.model[key] = case[key]
    c.model.arch, c.model.dtype = "gpt2", dtype
    c.optim.update(OPTIM, warmup_steps=0, decay="constant", clip_norm=0.0)
    c.data.seq_len, c.data.global_batch_size = case["seq_len"], case["batch"]
    return c


def jax_compile_seconds(case: dict, dtype: str, num_layers: int, scan_layers: bool) -> float:
    """Seconds to lower and compile the train step of `case` with `num_layers` blocks."""
    import jax

    from textgen_jax.models import build_model
    from textgen_jax.objectives import clm_loss_fn
    from textgen_jax.training import optimizer, partitioning
    from textgen_jax.training import steps as steps_lib

    c = jax_config(case, dtype)
    c.model.num_layers, c.model.scan_layers = num_layers, scan_layers
    mesh = partitioning.make_mesh(c.mesh)
    model = build_model(c.model, case["vocab"])
    tx = optimizer.make_optimizer(c.optim, 10)
    _, abstract_state, shardings = steps_lib.state_shardings(model, tx, case["seq_len"], mesh)
    train_step = steps_lib.jit_train_step(
        steps_lib.make_train_step(model, clm_loss_fn, tx), shardings, mesh)
    ids = jax.ShapeDtypeStruct((case["batch"], case["seq_len"]), np.int32,
                               sharding=partitioning.batch_sharding(mesh))
    batch = {"inputs": ids, "segment_ids": ids, "positions": ids}
    start = time.perf_counter()
    with steps_lib.activate(mesh):
        train_step.lower(abstract_state, batch, jax.random.key(0)).compile()
    return time.perf_counter() - start


def compile_records(name: str, case: dict, dtype: str, depths: list[int]) -> list[dict]:
    seconds = {(depth, scan): jax_compile_seconds(case, dtype, depth, scan)
               for depth in depths for scan in (False, True)}
    return [{"name": f"compile_{name}", "framework": "textgen_jax", "dtype": dtype,
             "num_layers": depth, "scan_layers": scan, "compile_s": round(value, 3),
             "ratio_to_shallowest": round(value / seconds[(min(depths), scan)], 3),
             "ratio_to_unrolled": round(value / seconds[(depth, False)], 3)}
            for (depth, scan), value in seconds.items()]


def jax_train(name: str, case: dict, dtype: str, steps: int, matmul_gflops: float) -> dict:
    import jax

    from textgen_jax.models import build_model
    from textgen_jax.objectives import clm_loss_fn
    from textgen_jax.training import optimizer, partitioning
    from textgen_jax.training import steps as steps_lib

    c = jax_config(case, dtype)

    mesh = partitioning.make_mesh(c.mesh)
    model = build_model(c.model, case["vocab"])
    tx = optimizer.make_optimizer(c.optim, steps + WARMUP_STEPS + 1)
    state, shardings = steps_lib.create_state(model, tx, case["seq_len"], mesh, seed=SEED)
    train_step = steps_lib.jit_train_step(
        steps_lib.make_train_step(model, clm_loss_fn, tx), shardings, mesh)
    ids = token_ids(case)
    batch = partitioning.global_batch(
        {"inputs": ids, "segment_ids": np.ones_like(ids),
         "positions": np.broadcast_to(np.arange(case["seq_len"], dtype=np.int32), ids.shape)},
        mesh)

    sizes = {"/".join(str(getattr(k, "key", k)) for k in path): leaf.size
             for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}
    params = sum(sizes.values())
    non_embedding = params - sum(v for k, v in sizes.items() if k.endswith("embedding"))

    rng = jax.random.key(0)
    holder = {"state": state}

    def step():
        with steps_lib.activate(mesh):
            holder["state"], metrics = train_step(holder["state"], batch, rng)
        jax.block_until_ready((holder["state"], metrics))

    step()  # compile
    record = step_record(name, "textgen_jax", dtype, case, time_steps(step, WARMUP_STEPS, steps),
                         params, non_embedding, matmul_gflops)
    del holder, state
    return record


# ---------------------------------------------------------------- transformers

def torch_matmul_gflops(dtype: str) -> dict:
    import torch

    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(SEED)
    a, b = (torch.randn(2048, 2048, generator=generator).to(torch_dtype) for _ in range(2))
    return matmul_record("transformers", dtype, time_steps(lambda: a @ b, 3, 10))


def torch_train(name: str, case: dict, dtype: str, steps: int, matmul_gflops: float) -> dict:
    import contextlib

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(SEED)
    config = GPT2Config(vocab_size=case["vocab"], n_positions=case["max_len"],
                        n_embd=case["d_model"], n_layer=case["num_layers"],
                        n_head=case["num_heads"], n_inner=case["d_ff"], resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=case["vocab"] - 1,
                        eos_token_id=case["vocab"] - 1, loss_type="ForCausalLM")
    model = GPT2LMHeadModel(config).train()
    optim = torch.optim.AdamW(model.parameters(), lr=OPTIM["lr"], betas=(OPTIM["b1"], OPTIM["b2"]),
                              eps=OPTIM["eps"], weight_decay=OPTIM["weight_decay"])
    ids = torch.from_numpy(token_ids(case).astype(np.int64))
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16"
                else contextlib.nullcontext())

    def step():
        optim.zero_grad(set_to_none=True)
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()

    params = sum(p.numel() for p in model.parameters())  # tied: wte counted once
    embedding = model.transformer.wte.weight.numel() + model.transformer.wpe.weight.numel()
    record = step_record(name, "transformers", dtype, case, time_steps(step, WARMUP_STEPS, steps),
                         params, params - embedding, matmul_gflops)
    del model, optim
    return record


def transformers_available() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- main

def comparison(name: str, ours: dict[str, dict], theirs: dict[str, dict]) -> dict:
    record = {"case": name, "kind": "comparison",
              "textgen_jax_tokens_per_s": {d: r["tokens_per_s"] for d, r in ours.items()},
              "transformers_tokens_per_s": {d: r["tokens_per_s"] for d, r in theirs.items()},
              "ratio": {f"{a}_vs_{b}": round(ours[a]["tokens_per_s"] / theirs[b]["tokens_per_s"], 3)
                        for a in ours for b in theirs}}
    best_ours = max(r["tokens_per_s"] for r in ours.values())
    best_theirs = max(r["tokens_per_s"] for r in theirs.values())
    record["best_ratio"] = round(best_ours / best_theirs, 3)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--steps", type=int, default=0,
                        help="timed steps per run (default and floor: the case's bench/README.md "
                             "minimum, 10 or 5 for the 124M model)")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated dtypes")
    parser.add_argument("--no-transformers", action="store_true",
                        help="skip the transformers baseline")
    parser.add_argument("--compile-depths", default="",
                        help="comma-separated depths: time compilation, unrolled and scanned")
    args = parser.parse_args()
    names = args.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}: choose from {', '.join(CASES)}")
    dtypes = args.dtypes.split(",")
    if args.compile_depths:
        depths = [int(depth) for depth in args.compile_depths.split(",")]
        for name in names:
            for dtype in dtypes:
                for record in compile_records(name, CASES[name], dtype, depths):
                    emit(record)
        return
    with_torch = not args.no_transformers and transformers_available()
    cores = os.cpu_count()
    if with_torch:
        import torch
        torch.set_num_threads(cores)

    jax_matmul = {d: jax_matmul_gflops(d) for d in dtypes}
    torch_matmul = {d: torch_matmul_gflops(d) for d in dtypes} if with_torch else {}
    for record in [*jax_matmul.values(), *torch_matmul.values()]:
        emit(record)

    for name in names:
        case = CASES[name]
        steps = max(args.steps, case["min_steps"])
        ours = {}
        for dtype in dtypes:
            ours[dtype] = jax_train(name, case, dtype, steps, jax_matmul[dtype]["gflops_per_s"])
            emit(ours[dtype])
        if with_torch:
            theirs = {}
            for dtype in dtypes:
                theirs[dtype] = torch_train(name, case, dtype, steps,
                                            torch_matmul[dtype]["gflops_per_s"])
                emit(theirs[dtype])
            emit(comparison(name, ours, theirs))


if __name__ == "__main__":
    main()
