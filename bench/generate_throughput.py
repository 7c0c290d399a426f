"""Generation throughput of textgen_jax's KV-cache decoding against transformers' `generate`,
on the same weights, with the tokens of both sides compared.

Our model is built with random weights (seed 0) and exported to the transformers model of the
same config through the `export-hf` path (`convert.hf_config_from`, `state_dict_from_params`),
so both sides decode the same network. Prints one JSON line per case, mode, batch and
framework, a `comparison` line per case, mode and batch (ratio = ours / transformers in new
tokens/s; each side's `compile_s`, its first call's excess over the median call; the token
check), a `memory_bandwidth` line, and at the end a Markdown table of the comparisons. Batch-1
float32 decoding reads every weight once per token, so tokens/s is bounded by bandwidth /
weight bytes, and the gpt2 batch-1 lines report the fraction of that bound reached. Within a
case, mode and batch the timed calls alternate between the two frameworks, so that the ratio
does not depend on when each side ran.

Greedy tokens must be equal, row by row, up to the first step where our two largest logits
nearly tie (`near_tie_tolerance`); the script fails otherwise. Beam search tokens are compared
and reported, not asserted (`BEAM_NOTE`).

    .venv/bin/python bench/generate_throughput.py
    .venv/bin/python bench/generate_throughput.py --cases gen_gpt2_small --no-transformers
    .venv/bin/python bench/generate_throughput.py --cases gen_bart_base --modes beam4 --runs 2
    .venv/bin/python bench/generate_throughput.py --tiny --runs 1   # seconds: the test's shape
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
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
# --tiny: every case at this shape (same modes and batches), for tests/bench: seconds, not speed.
TINY = dict(vocab=512, max_len=64, d_model=64, num_layers=2, num_heads=4, d_ff=256,
            source_len=16, new_tokens=12)
SEED = 0
TIMED_RUNS = 3  # --runs; each run times every one of its new tokens
# No EOS: every row generates exactly new_tokens on both sides.
NO_EOS = -1
PAD_ID = 0
DECODER_START_ID = 2  # BART's decoder starts from eos (id 2), on both sides
BEAM_NOTE = ("beam search is compared, not asserted: its choices rank the sums of 2 x beams "
             "candidates across beams, whose near ties the best sequence alone does not show; "
             "the settings are equal on both sides (length_penalty 1, early_stopping False, "
             "no EOS: every hypothesis ends at max length)")


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def prompts(case: dict, batch: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    return rng.integers(3, case["vocab"], size=(batch, case["source_len"]), dtype=np.int64)


def timed(runs_by_name: dict, runs: int) -> dict:
    """{name: (seconds of the first call, seconds of each of `runs` later calls, the first
    call's tokens)} of the `run` callables in runs_by_name (each returns its new tokens
    [batch, new_tokens]): each makes its first (compile) call, then the timed calls alternate
    between them, so that a drift in this machine's speed (its memory bandwidth varies by 1.5x
    over minutes) reaches every side alike."""
    first = {}
    for name, run in runs_by_name.items():
        start = time.perf_counter()
        tokens = run()
        first[name] = (time.perf_counter() - start, tokens)
    times = {name: [] for name in runs_by_name}
    for _ in range(runs):
        for name, run in runs_by_name.items():
            times[name].append(_seconds(run))
    return {name: (first[name][0], times[name], first[name][1]) for name in runs_by_name}


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
            "compile_s": round(first - median, 2), "params": params}


# ---------------------------------------------------------------- memory bandwidth

def bandwidth_gb_s(n: int = 16384) -> dict:
    """Read bandwidth of a float32 matrix-vector product over n x n weights (16384: 1 GiB),
    the access pattern of batch-1 decoding; the best of XLA's and (when installed) torch's."""
    import jax
    import jax.numpy as jnp

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
    """(config, model, params, parameter count): the architecture's own config (its
    activation: BART's exact GELU, GPT-2's tanh GELU) at the case's shape, dropout 0, random
    init with SEED, params cast to `dtype`."""
    import flax.linen as nn
    import jax

    from textgen_jax.models import build_model
    from textgen_jax.presets import architecture_config

    c = architecture_config(case["arch"])
    for key in ("num_layers", "d_model", "num_heads", "d_ff", "max_len"):
        c.model[key] = case[key]
    c.model.update(vocab_size=case["vocab"], dtype=dtype, dropout=0.0, attention_dropout=0.0)
    model = build_model(c.model, case["vocab"])
    params = jax.jit(lambda: jax.tree.map(lambda p: p.astype(dtype), nn.meta.unbox(
        model.init(jax.random.key(SEED), model.example_batch(8))["params"])))()
    return c, model, params, sum(p.size for p in jax.tree.leaves(params))


def selected(case: dict, key: str, modes: list[str] | None) -> list[tuple[str, int]]:
    """The (mode, batch) runs of case[key] whose mode is in `modes` (None: all)."""
    return [(mode, batch) for mode, batch in case[key] if modes is None or mode in modes]


def jax_runner(case: dict, model, params):
    """run(mode, batch) -> a callable making one timed generate call, returning its new
    tokens [batch, new_tokens]."""
    from textgen_jax.decoding import GenerationOptions, generate_ids

    def run(mode: str, batch: int):
        ids = prompts(case, batch).tolist()
        options = GenerationOptions(max_new_tokens=case["new_tokens"],
                                    num_beams=4 if mode == "beam4" else 1)

        def call():
            out = generate_ids(model, params, ids, options, eos_id=NO_EOS, pad_id=PAD_ID,
                               decoder_start_id=DECODER_START_ID)
            assert all(len(row) == case["new_tokens"] for row in out)
            return np.asarray(out)
        return call
    return run


def top2_gaps(case: dict, model, params, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(our top-1 minus top-2 logit, our largest |logit|), each [batch, new_tokens], at the
    step that chose each token of `new` [batch, new_tokens], recomputed in one pass without
    the KV cache (teacher forcing on prompt + new)."""
    import jax
    import jax.numpy as jnp

    source = prompts(case, new.shape[0])
    if case["arch"] == "bart":
        start = np.full((new.shape[0], 1), DECODER_START_ID)
        batch = {"inputs": source, "decoder_inputs": np.concatenate([start, new[:, :-1]], 1)}
        first = 0
    else:  # the logits at the prompt's last token chose the first new token
        batch = {"inputs": np.concatenate([source, new[:, :-1]], 1)}
        first = source.shape[1] - 1

    @jax.jit
    def gaps(params, batch):
        logits = model.apply({"params": params}, batch)["logits"][:, first:]
        top2 = jax.lax.top_k(logits, 2)[0]
        return top2[..., 0] - top2[..., 1], jnp.abs(logits).max(axis=-1)

    batch = {key: jnp.asarray(value, jnp.int32) for key, value in batch.items()}
    return tuple(np.asarray(x) for x in gaps(params, batch))


def near_tie_tolerance(case: dict) -> float:
    """The top-2 logit gap, relative to the largest |logit|, below which the two sides' greedy
    tokens may legitimately differ.

    Both sides evaluate the same float32 network with other kernels (XLA against PyTorch's
    oneDNN/MKL), so each logit differs by the rounding of sums taken in another order: a sum
    of n terms by about sqrt(n) * u relative to the terms' magnitudes (u = 2^-24, independent
    roundings; Higham ch. 3, as in tests/tolerances.py). Each of the L layers (BART: encoder
    and decoder) adds the error of its longest reduction, n = max(d_ff, the attended length),
    which is longer than the output layer's d_model, and LayerNorm renormalises, so the errors
    add: |their logit - ours| <= eps = 16 * L * sqrt(n) * u * S, with S the largest |logit|
    and 16 the safety factor of tests/tolerances.network (a few reductions per block, growth
    through the residual stream). Their argmax can differ from ours only where our top-2 gap
    is under 2 eps (each of the two logits moves by eps); our gaps are recomputed without the
    cache, another order again, within 2 eps of the cached loop's: tolerance 4 eps. GPT-2 small:
    4 * 16 * 12 * sqrt(3072) * 2^-24 = 2.5e-3 of S.
    """
    layers = case["num_layers"] * (2 if case["arch"] == "bart" else 1)
    longest = max(case["d_ff"], case["source_len"] + case["new_tokens"])
    return 4 * 16 * layers * math.sqrt(longest) * 2.0 ** -24


def token_check(case: dict, mode: str, ours: np.ndarray, theirs: np.ndarray, model,
                params) -> dict:
    """The comparison of both sides' new tokens [batch, new_tokens], row by row:
    `equal_prefix` (leading equal tokens per row) and, for greedy, `first_near_tie` (per row,
    the first step whose top-2 gap is under the tolerance, or None). Greedy rows must agree
    up to their first near tie (AssertionError otherwise)."""
    unequal = ours != theirs
    equal_prefix = [int(row.argmax()) if row.any() else ours.shape[1] for row in unequal]
    check = {"tokens_equal": not unequal.any(), "equal_prefix": equal_prefix}
    if mode == "beam4":
        return {**check, "first_near_tie": None, "tokens_asserted": False,
                "tokens_note": BEAM_NOTE}
    gap, scale = top2_gaps(case, model, params, ours)
    tolerance = near_tie_tolerance(case)
    ties = gap < tolerance * scale
    first_near_tie = [int(row.argmax()) if row.any() else None for row in ties]
    for row, (prefix, tie) in enumerate(zip(equal_prefix, first_near_tie)):
        at = (row, min(prefix, ours.shape[1] - 1))
        assert prefix == ours.shape[1] or (tie is not None and prefix >= tie), (
            f"row {row}: our token {ours[at]} and transformers' {theirs[at]} differ at new "
            f"token {prefix}, before any near tie (first: {tie}); our top-2 logit gap there "
            f"is {gap[at]:.3g}, the tolerance {tolerance * scale[at]:.3g}")
    return {**check, "first_near_tie": first_near_tie, "tokens_asserted": True,
            "near_tie_tolerance_relative": tolerance,
            "min_top2_gap_relative": float((gap / scale).min())}


# ---------------------------------------------------------------- transformers

def torch_model(config, params):
    """(our params as the transformers model of the same config, in eval mode; parameter
    count), through the export-hf path's config and state dict: every tensor loads (strict)."""
    import jax
    import torch
    import transformers

    from textgen_jax.convert import hf_config_from, state_dict_from_params

    hf = hf_config_from(config)
    hf_config = transformers.AutoConfig.for_model(hf.pop("model_type"), **hf)
    model = getattr(transformers, hf["architectures"][0])(hf_config)
    state = state_dict_from_params(config, jax.device_get(params))
    model.load_state_dict({key: torch.tensor(value) for key, value in state.items()},
                          strict=True)
    return model.eval(), sum(p.numel() for p in model.parameters())


def torch_runner(case: dict, model):
    """run(mode, batch) -> a callable making one timed `generate` call, returning its new
    tokens [batch, new_tokens]."""
    import torch

    def run(mode: str, batch: int):
        ids = torch.from_numpy(prompts(case, batch))
        kwargs = dict(max_new_tokens=case["new_tokens"], min_new_tokens=case["new_tokens"],
                      do_sample=False, num_beams=4 if mode == "beam4" else 1,
                      pad_token_id=PAD_ID, eos_token_id=None,
                      attention_mask=torch.ones_like(ids))
        if case["arch"] == "bart":
            kwargs.update(decoder_start_token_id=DECODER_START_ID, forced_bos_token_id=None,
                          forced_eos_token_id=None, no_repeat_ngram_size=0, early_stopping=False,
                          length_penalty=1.0)

        def call():
            with torch.inference_mode():
                out = model.generate(ids, **kwargs)
            prompt_len = 1 if case["arch"] == "bart" else ids.shape[1]
            assert out.shape[1] - prompt_len == case["new_tokens"], out.shape
            return out[:, prompt_len:].numpy()
        return call
    return run


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
    parser.add_argument("--tiny", action="store_true",
                        help=f"every case at a tiny shape ({TINY}), for tests; no speed claim")
    args = parser.parse_args()
    bandwidth = bandwidth_gb_s(2048 if args.tiny else 16384)
    emit(bandwidth)
    with_torch = not args.no_transformers and transformers_available()
    rows = []
    for name in args.cases:
        case = {**CASES[name], **(TINY if args.tiny else {})}
        # bfloat16 weights are ours only: transformers has no baseline in that precision.
        for dtype, key in (("float32", "runs"), ("bfloat16", "bf16_runs")):
            chosen = selected(case, key, args.modes)
            if not chosen:
                continue
            config, model, params, size = jax_model(case, dtype)
            sides = {"textgen_jax": (size, jax_runner(case, model, params))}
            if with_torch and dtype == "float32":
                hf_model, hf_size = torch_model(config, params)
                sides["transformers"] = (hf_size, torch_runner(case, hf_model))
            for mode, batch in chosen:
                rows.append(compare(name, case, mode, batch, dtype, sides, args.runs,
                                    bandwidth, model, params))
    print(markdown_table(rows), flush=True)


def compare(name: str, case: dict, mode: str, batch: int, dtype: str, sides: dict,
            runs: int, bandwidth: dict, model, params) -> dict:
    """Times one mode and batch on every side in `sides` ({side: (parameter count, run)}),
    emits a line per side and the batch-1 bound, and with two sides checks their tokens and
    emits the comparison; returns the comparison (ours alone: its fields for ours)."""
    results = timed({side: run(mode, batch) for side, (_, run) in sides.items()}, runs)
    lines = {side: record(name, side, mode, batch, case, *results[side][:2], sides[side][0],
                          dtype) for side in sides}
    for line in lines.values():
        emit(line)
    report_bound(name, lines["textgen_jax"], bandwidth)
    ours = lines["textgen_jax"]
    comparison = {"case": name, "comparison": "textgen_jax / transformers", "mode": mode,
                  "batch": batch, "dtype": dtype,
                  "textgen_jax_new_tokens_per_s": ours["new_tokens_per_s"],
                  "textgen_jax_compile_s": ours["compile_s"]}
    if "transformers" not in lines:
        return comparison
    theirs = lines["transformers"]
    comparison.update(
        transformers_new_tokens_per_s=theirs["new_tokens_per_s"],
        transformers_compile_s=theirs["compile_s"],
        ratio=round(ours["new_tokens_per_s"] / theirs["new_tokens_per_s"], 2),
        **token_check(case, mode, results["textgen_jax"][2], results["transformers"][2],
                      model, params))
    emit(comparison)
    return comparison


def markdown_table(rows: list[dict]) -> str:
    """The comparisons as a Markdown table (– where transformers did not run)."""
    lines = ["| case | mode | batch | ours tokens/s | transformers tokens/s | ratio | "
             "ours compile s | transformers first-call overhead s | tokens equal |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        get = lambda key: row.get(key, "–")  # noqa: E731
        if "tokens_equal" not in row:
            equal = "–"
        elif row["tokens_equal"]:
            equal = "yes"
        elif row["tokens_asserted"]:
            equal = f"to the first near tie (rows equal for {row['equal_prefix']} tokens)"
        else:
            equal = f"no, not asserted (rows equal for {row['equal_prefix']} tokens)"
        ratio = f"{row['ratio']}x" if "ratio" in row else "–"
        lines.append(f"| {row['case']} | {row['mode']} | {row['batch']} | "
                     f"{row['textgen_jax_new_tokens_per_s']} | "
                     f"{get('transformers_new_tokens_per_s')} | {ratio} | "
                     f"{row['textgen_jax_compile_s']} | {get('transformers_compile_s')} | "
                     f"{equal} |")
    return "\n".join(lines)


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
