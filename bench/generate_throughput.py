"""Generation throughput of textgen_jax's KV-cache decoding against transformers' `generate`.

Prints one JSON line per case, mode, batch and framework, a `comparison` line per case, mode
and batch (ratio = ours / transformers in new tokens/s), and a `memory_bandwidth` line: batch-1
float32 decoding reads every weight once per token, so tokens/s is bounded by bandwidth /
weight bytes, and the gpt2 batch-1 lines report the fraction of that bound reached. Within a
case, mode and batch the timed calls alternate between the two frameworks, so that the ratio
does not depend on when each side ran.

    .venv/bin/python bench/generate_throughput.py
    .venv/bin/python bench/generate_throughput.py --cases gen_gpt2_small --no-transformers
    .venv/bin/python bench/generate_throughput.py --cases gen_bart_base --modes beam4 --runs 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time

import numpy as np

CASES = {
    # GPT-2 124M, random init: prompt 32 tokens, 128 new, greedy, batch 1 and 8.
    "gen_gpt2_small": dict(arch="gpt2", vocab=50257, max_len=1024, d_model=768, num_layers=12,
                           num_heads=12, d_ff=3072, source_len=32, new_tokens=128,
                           runs=[("greedy", 1), ("greedy", 8)],
                           # Ours only: bfloat16 weights halve the bytes read per token.
                           bf16_runs=[("greedy_bf16_weights", 1)]),
    # bart-base shape: source 256 tokens, 64 new, greedy and beam 4, batch 4.
    "gen_bart_base": dict(arch="bart", vocab=50265, max_len=1024, d_model=768, num_layers=6,
                          num_heads=12, d_ff=3072, source_len=256, new_tokens=64,
                          runs=[("greedy", 4), ("beam4", 4)], bf16_runs=[]),
}
SEED = 0
TIMED_RUNS = 3  # --runs; each run times every one of its new tokens
# No EOS: every row generates exactly new_tokens on both sides.
NO_EOS = -1


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def prompts(case: dict, batch: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    return rng.integers(3, case["vocab"], size=(batch, case["source_len"]), dtype=np.int64)


def timed(runs_by_name: dict, runs: int) -> dict:
    """{name: (seconds of the first call, seconds of each of `runs` later calls)} of the
    `run` callables in runs_by_name: each makes its first (compile) call, then the timed calls
    alternate between them, so that a drift in this machine's speed (its memory bandwidth
    varies by 1.5x over minutes) reaches every side alike."""
    first = {name: _seconds(run) for name, run in runs_by_name.items()}
    times = {name: [] for name in runs_by_name}
    for _ in range(runs):
        for name, run in runs_by_name.items():
            times[name].append(_seconds(run))
    return {name: (first[name], times[name]) for name in runs_by_name}


def record(name, framework, mode, batch, case, first, times, params,
           dtype="float32") -> dict:
    median = statistics.median(times)
    new = case["new_tokens"]
    return {"case": name, "framework": framework, "mode": mode, "batch": batch,
            "dtype": dtype, "new_tokens": new,
            "new_tokens_per_s": round(batch * new / median, 1),
            "ms_per_token": round(median / new * 1e3, 2),
            "run_s": round(median, 3), "run_s_min": round(min(times), 3),
            "run_s_max": round(max(times), 3), "first_call_s": round(first, 2),
            "first_call_compile_s": round(first - median, 2), "params": params}


# ---------------------------------------------------------------- memory bandwidth

def bandwidth_gb_s() -> dict:
    """Read bandwidth of a float32 matrix-vector product over 1 GiB of weights, the access
    pattern of batch-1 decoding; the best of XLA's and (when installed) torch's."""
    import jax
    import jax.numpy as jnp

    n = 16384  # 16384^2 float32 = 1 GiB
    weights = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    vector = jnp.ones((n,), jnp.float32)
    gemv = jax.jit(lambda w, v: w @ v)
    gemv(weights, vector).block_until_ready()
    times = [_seconds(lambda: gemv(weights, vector).block_until_ready()) for _ in range(5)]
    result = {"case": "memory_bandwidth", "bytes": n * n * 4,
              "textgen_jax_gb_s": round(n * n * 4 / min(times) / 1e9, 1)}
    try:
        import torch
        w = torch.randn(n, n)
        v = torch.ones(n)
        times = [_seconds(lambda: w @ v) for _ in range(5)]
        result["transformers_gb_s"] = round(n * n * 4 / min(times) / 1e9, 1)
    except ImportError:
        pass
    result["gb_s"] = max(v for k, v in result.items() if k.endswith("_gb_s"))
    return result


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------- textgen_jax

def jax_model(case: dict, dtype: str = "float32"):
    import flax.linen as nn
    import jax

    from textgen_jax import config as config_lib
    from textgen_jax.models import build_model

    c = config_lib.base_config()
    for key in ("num_layers", "d_model", "num_heads", "d_ff", "max_len"):
        c.model[key] = case[key]
    c.model.arch, c.model.dtype = case["arch"], dtype
    model = build_model(c.model, case["vocab"])
    params = jax.jit(lambda: jax.tree.map(lambda p: p.astype(dtype), nn.meta.unbox(
        model.init(jax.random.key(SEED), model.example_batch(8))["params"])))()
    return model, params, sum(p.size for p in jax.tree.leaves(params))


def selected(case: dict, key: str, modes: list[str] | None) -> list[tuple[str, int]]:
    """The (mode, batch) runs of case[key] whose mode is in `modes` (None: all)."""
    return [(mode, batch) for mode, batch in case[key] if modes is None or mode in modes]


def jax_runner(case: dict, dtype: str = "float32"):
    """(parameter count, run(mode, batch) -> a callable making one timed generate call)."""
    from textgen_jax.decoding import GenerationOptions, generate_ids

    model, params, size = jax_model(case, dtype)

    def run(mode: str, batch: int):
        ids = prompts(case, batch).tolist()
        options = GenerationOptions(max_new_tokens=case["new_tokens"],
                                    num_beams=4 if mode == "beam4" else 1)

        def call():
            out = generate_ids(model, params, ids, options, eos_id=NO_EOS, pad_id=0,
                               decoder_start_id=2)
            assert all(len(row) == case["new_tokens"] for row in out)
        return call
    return size, run


# ---------------------------------------------------------------- transformers

def torch_runner(case: dict):
    """(parameter count, run(mode, batch) -> a callable making one timed `generate` call)."""
    import torch
    import transformers

    torch.manual_seed(SEED)
    if case["arch"] == "gpt2":
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=case["vocab"], n_positions=case["max_len"], n_embd=case["d_model"],
            n_layer=case["num_layers"], n_head=case["num_heads"], n_inner=case["d_ff"]))
    else:
        model = transformers.BartForConditionalGeneration(transformers.BartConfig(
            vocab_size=case["vocab"], d_model=case["d_model"], encoder_layers=case["num_layers"],
            decoder_layers=case["num_layers"], encoder_attention_heads=case["num_heads"],
            decoder_attention_heads=case["num_heads"], encoder_ffn_dim=case["d_ff"],
            decoder_ffn_dim=case["d_ff"], max_position_embeddings=case["max_len"]))
    model = model.eval()

    def run(mode: str, batch: int):
        ids = torch.from_numpy(prompts(case, batch))
        kwargs = dict(max_new_tokens=case["new_tokens"], min_new_tokens=case["new_tokens"],
                      do_sample=False, num_beams=4 if mode == "beam4" else 1, pad_token_id=0,
                      eos_token_id=None, attention_mask=torch.ones_like(ids))
        if case["arch"] == "bart":
            kwargs.update(decoder_start_token_id=2, forced_bos_token_id=None,
                          forced_eos_token_id=None, no_repeat_ngram_size=0, early_stopping=False,
                          length_penalty=1.0)

        def call():
            with torch.inference_mode():
                out = model.generate(ids, **kwargs)
            prompt_len = 1 if case["arch"] == "bart" else ids.shape[1]
            assert out.shape[1] - prompt_len == case["new_tokens"], out.shape
        return call
    return sum(p.numel() for p in model.parameters()), run


def transformers_available() -> bool:
    return all(importlib.util.find_spec(name) for name in ("torch", "transformers"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--no-transformers", action="store_true")
    parser.add_argument("--runs", type=int, default=TIMED_RUNS,
                        help="timed generate calls per case after the first (compile) call")
    all_modes = sorted({mode for case in CASES.values()
                        for mode, _ in case["runs"] + case["bf16_runs"]})
    parser.add_argument("--modes", nargs="+", choices=all_modes,
                        help="only these modes (default: all)")
    args = parser.parse_args()
    bandwidth = bandwidth_gb_s()
    emit(bandwidth)
    with_torch = not args.no_transformers and transformers_available()
    for name in args.cases:
        case = CASES[name]
        # bfloat16 weights are ours only: transformers has no baseline in that precision.
        for dtype, key in (("float32", "runs"), ("bfloat16", "bf16_runs")):
            chosen = selected(case, key, args.modes)
            if not chosen:
                continue
            runners = {"textgen_jax": jax_runner(case, dtype)}
            if with_torch and dtype == "float32":
                runners["transformers"] = torch_runner(case)
            for mode, batch in chosen:
                compare(name, case, mode, batch, dtype, runners, args.runs, bandwidth)


def compare(name: str, case: dict, mode: str, batch: int, dtype: str, runners: dict,
            runs: int, bandwidth: dict) -> None:
    """Times one mode and batch on every side in `runners` ({side: (parameter count,
    run)}), and emits a line per side, the batch-1 bound and, with two sides, the ratio."""
    results = timed({side: run(mode, batch) for side, (_, run) in runners.items()}, runs)
    lines = {side: record(name, side, mode, batch, case, *results[side], runners[side][0],
                          dtype) for side in runners}
    for line in lines.values():
        emit(line)
    report_bound(name, lines["textgen_jax"], bandwidth)
    if "transformers" in lines:
        ours, theirs = lines["textgen_jax"], lines["transformers"]
        emit({"case": name, "comparison": "textgen_jax / transformers", "mode": mode,
              "batch": batch, "textgen_jax_new_tokens_per_s": ours["new_tokens_per_s"],
              "transformers_new_tokens_per_s": theirs["new_tokens_per_s"],
              "ratio": round(ours["new_tokens_per_s"] / theirs["new_tokens_per_s"], 2)})


def report_bound(name: str, line: dict, bandwidth: dict) -> None:
    """For a batch-1 line (every weight read once per token): the bandwidth bound on tokens/s
    and the fraction of it reached."""
    if line["batch"] != 1:
        return
    weight_bytes = line["params"] * (4 if line["dtype"] == "float32" else 2)
    bound = bandwidth["gb_s"] * 1e9 / weight_bytes
    emit({"case": name, "framework": "textgen_jax", "mode": line["mode"], "batch": 1,
          "dtype": line["dtype"], "bandwidth_bound_tokens_per_s": round(bound, 1),
          "fraction_of_bound": round(line["new_tokens_per_s"] / bound, 3)})


if __name__ == "__main__":
    main()
