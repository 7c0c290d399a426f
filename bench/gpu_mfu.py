"""MFU of bfloat16 training on a GPU: GPT-2 small, BERT-base, each attention kernel, 2 flag sets.

Each case and kernel runs under XLA's default flags and under MaxText's recommended GPU flags
(rules and the record's fields: bench/README.md).

XLA reads XLA_FLAGS once, when jax starts its backend, so each flag setting runs in a worker
process of its own; this process only starts them, forwards their JSON lines and reports what a
worker could not (a crash, a timeout). One line per case, attention kernel and setting:

    python bench/gpu_mfu.py                          # on a lent GPU (bench/gpu_check.sh runs it)
    python bench/gpu_mfu.py --cases gpt2_small --attention einsum --xla-flags maxtext
    python bench/gpu_mfu.py --dry-run                # CPU: tiny shapes, the same code path

A measurement is the training loop's own step (training.steps.make_train_step with the
architecture's pretraining objective: clm for GPT-2, MLM + NSP for BERT) on random token ids.
MFU = tokens/s x FLOPs per token / peak FLOP/s, with the loop's FLOPs per token
(training.metrics.flops_per_token: 6N + 12·L·d·T, N without embeddings); `mfu_with_output_layer`
adds the tied output layer's 6·vocab·d, which MaxText's and nanoGPT's MFU count. The peak is the
chip's published dense bfloat16 figure by jax's device_kind (PEAK_BF16_FLOPS; `--peak-tflops`
overrides it; an unlisted kind gives mfu null), on CPU the measured 2048³ bfloat16 matmul
(256³ with --dry-run), as train_throughput.py, whose cases, configs and batches this reuses.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np

from train_throughput import (BATCHES, CASES as TRAIN_CASES, MATMUL_SIZE, SEED, TINY,
                              TINY_MATMUL_SIZE, WARMUP_STEPS, emit, jax_config, jax_matmul,
                              time_steps)

# Published dense (no sparsity) bfloat16 tensor-core peaks, FLOP/s per chip, from NVIDIA's
# datasheets, keyed by jax's device_kind (the CUDA device name).
PEAK_BF16_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,  # H100 SXM
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100 NVL": 835e12,
    "NVIDIA H200": 989e12,  # H200 SXM
    "NVIDIA H200 NVL": 835e12,
    "NVIDIA GH200 480GB": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA L40S": 362e12,
    "NVIDIA L4": 121e12,
}

# MaxText's XLA flags for GPU training: AI-Hypercomputer/maxtext at e591f30,
# src/maxtext/configs/gpu/a3/llama_2_7b/1vm.sh (the same list in
# docs/run_maxtext/run_maxtext_single_host_gpu.md), without its --xla_dump_to. Its
# --xla_gpu_enable_command_buffer='' is written here as the empty value it means (no CUDA
# graphs). Most of them tune collectives, which one GPU has none of.
MAXTEXT_XLA_FLAGS = (
    "--xla_gpu_enable_latency_hiding_scheduler=true",
    "--xla_gpu_enable_triton_gemm=false",
    "--xla_gpu_enable_command_buffer=",
    "--xla_gpu_enable_highest_priority_async_stream=true",
    "--xla_gpu_all_reduce_combine_threshold_bytes=134217728",
    "--xla_gpu_all_gather_combine_threshold_bytes=134217728",
    "--xla_gpu_reduce_scatter_combine_threshold_bytes=67108864",
    "--xla_gpu_pipeline_all_gather=on",
    "--xla_gpu_pipeline_reduce_scatter=on",
    "--xla_gpu_pipeline_all_reduce=on",
    "--xla_gpu_enable_while_loop_double_buffering=true",
    "--xla_gpu_enable_all_gather_combine_by_dim=false",
    "--xla_gpu_enable_reduce_scatter_combine_by_dim=false",
    "--xla_disable_hlo_passes=rematerialization",
)
XLA_SETTINGS = {"default": (), "maxtext": MAXTEXT_XLA_FLAGS}
MAXTEXT_SOURCE = "AI-Hypercomputer/maxtext@e591f30:src/maxtext/configs/gpu/a3/llama_2_7b/1vm.sh"

# train_throughput.py's paper-size cases at a realistic per-device batch (sequences x tokens).
CASES = {
    "gpt2_small": dict(TRAIN_CASES["train_gpt2_small"], batch=16, seq_len=1024),
    "bert_base": dict(TRAIN_CASES["train_bert_base"], batch=32, seq_len=512),
}
DRY_RUN_STEPS = 2  # --dry-run (train_throughput.TINY shapes): timed steps after one warm-up
CUDNN_ATTENTION = "__cudnn$fmha"  # the custom-call target of cuDNN's fused attention in HLO


def significant(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


# ---------------------------------------------------------------- worker: one flag setting

def shape(name: str, dry_run: bool) -> dict:
    """The case's shape: its own, or train_throughput.TINY's with --dry-run."""
    return {**CASES[name], **TINY} if dry_run else CASES[name]


def peak_flops(override_tflops: float, device_kind: str, backend: str, num_devices: int,
               dry_run: bool) -> tuple[float | None, str]:
    """(peak FLOP/s of all devices, where it comes from); None when the chip is not listed. On
    a CPU, measures the matmul and prints its line."""
    if override_tflops:
        return override_tflops * 1e12 * num_devices, "--peak-tflops"
    if backend == "cpu":
        # The host's cores, shared by every simulated device (bench/README.md's CPU rule).
        record = jax_matmul("bfloat16", TINY_MATMUL_SIZE if dry_run else MATMUL_SIZE)
        emit(record)
        return record["gflops_per_s"] * 1e9, f"measured {record['case']} bfloat16"
    if device_kind in PEAK_BF16_FLOPS:
        return PEAK_BF16_FLOPS[device_kind] * num_devices, "PEAK_BF16_FLOPS"
    return None, (f"device_kind {device_kind!r} is not in PEAK_BF16_FLOPS: mfu is null; pass "
                  "--peak-tflops (dense bfloat16, per chip) or add the chip")


def case_runner(name: str, dry_run: bool, steps: int, peak: float | None):
    """Builds case `name`'s initial state (seed SEED) and batch once; returns
    measure(attention) -> the figures of that kernel's record, each kernel starting from the
    same parameters: the loop's jitted train step in bfloat16, timed after its compile."""
    import jax

    from textgen_jax import models, objectives
    from textgen_jax.training import metrics as metrics_lib
    from textgen_jax.training import optimizer, partitioning
    from textgen_jax.training import steps as steps_lib

    case = shape(name, dry_run)
    c = jax_config(case, "bfloat16")
    objective = objectives.pretraining_objective(c)
    mesh = partitioning.make_mesh(c.mesh)
    warmup = 1 if dry_run else WARMUP_STEPS
    tx = optimizer.make_optimizer(c.optim, warmup + steps + 1)
    # The attention kernel changes no parameter: one initialisation serves every kernel.
    state, shardings = steps_lib.create_state(models.build_model(c.model, case["vocab"]), tx,
                                              case["seq_len"], mesh, seed=SEED)
    initial = jax.device_get(state)
    del state
    ours, _ = BATCHES[objective.name](c, np.random.default_rng(SEED))
    batch = partitioning.global_batch(ours, mesh)
    rng = jax.random.key(0)
    params = metrics_lib.count_params(initial.params)
    non_embedding = metrics_lib.count_params(initial.params, exclude_embeddings=True)
    layers = models.spec_for(c.model).attention_layer_count()
    flops_per_token = metrics_lib.flops_per_token(layers, c.model.d_model, case["seq_len"],
                                                  non_embedding)
    output_layer_flops = 6 * case["vocab"] * c.model.d_model  # the tied embedding's matmul

    def measure(attention: str) -> dict:
        c.model.attention = attention
        model = models.build_model(c.model, case["vocab"])
        train_step = steps_lib.jit_train_step(
            steps_lib.make_train_step(model, objective.loss_fn, tx), shardings, mesh)
        holder = {"state": jax.device_put(initial, shardings)}
        start = time.perf_counter()
        with steps_lib.activate(mesh):
            compiled = train_step.lower(holder["state"], batch, rng).compile()
        compile_s = time.perf_counter() - start

        def step():
            holder["state"], holder["metrics"] = compiled(holder["state"], batch, rng)
            jax.block_until_ready(holder)

        times = time_steps(step, warmup, steps)
        median = float(np.median(times))
        tokens_per_s = case["batch"] * case["seq_len"] / median

        def mfu(flops_per_token: float) -> float | None:
            return None if peak is None else significant(tokens_per_s * flops_per_token / peak)

        return {"batch": case["batch"], "seq_len": case["seq_len"], "dtype": c.model.dtype,
                "objective": objective.name, "tokens_per_s": round(tokens_per_s, 1),
                "step_ms": round(median * 1e3, 2), "step_ms_min": round(min(times) * 1e3, 2),
                "step_ms_max": round(max(times) * 1e3, 2), "timed_steps": len(times),
                "compile_s": round(compile_s, 1),
                "cudnn_attention": CUDNN_ATTENTION in compiled.as_text(),
                "loss": round(float(holder["metrics"]["loss"]), 4), "params": params,
                "non_embedding_params": non_embedding, "flops_per_token": flops_per_token,
                "output_layer_flops_per_token": output_layer_flops,
                "tflops_per_s": significant(tokens_per_s * flops_per_token / 1e12),
                "peak_tflops": None if peak is None else significant(peak / 1e12),
                "mfu": mfu(flops_per_token),
                "mfu_with_output_layer": mfu(flops_per_token + output_layer_flops)}

    return measure


def skip_reason(choice: str, backend: str, choices: list[str]) -> str:
    """Why `choice` is not measured on `backend` ('' if it is)."""
    from textgen_jax.ops.attention_kernels import resolve_attention

    try:
        kernel = resolve_attention(choice, backend, dropout=False)
    except ValueError as error:
        return str(error)
    if kernel != choice and kernel in choices:
        return (f"'{choice}' is '{kernel}' on {backend} (ops.attention_kernels.resolve_attention): "
                f"measured under that name")
    return ""


def run_worker(setting: str, args: argparse.Namespace) -> None:
    """Every case and attention kernel in this process, under the XLA_FLAGS it started with."""
    import jax

    backend, device_kind = jax.default_backend(), jax.devices()[0].device_kind
    peak, peak_source = peak_flops(args.peak_tflops, device_kind, backend, jax.device_count(),
                                   args.dry_run)
    choices = args.attention.split(",")
    for name in args.cases.split(","):
        steps = DRY_RUN_STEPS if args.dry_run else max(args.steps, CASES[name]["min_steps"])
        measure = None
        for choice in choices:
            record = {"case": name, "attention": choice, "xla_flags": setting,
                      "device_kind": device_kind, "backend": backend, "dry_run": args.dry_run}
            reason = skip_reason(choice, backend, choices)
            if reason:
                emit({**record, "skipped": reason})
                continue
            try:  # one failing kernel (or case) must not hide the others
                measure = measure or case_runner(name, args.dry_run, steps, peak)
                record.update(measure(choice))
            except Exception as error:
                record["error"] = f"{type(error).__name__}: {error}"[:2000]
            emit({**record, "peak_source": peak_source})


# ---------------------------------------------------------------- main: one worker per setting

def _pump(stream, lines: list[str], json_to_stdout: bool) -> None:
    """Forwards a worker's lines as they come, its JSON lines to stdout, all else to stderr."""
    for line in stream:
        sink = sys.stdout if json_to_stdout and line.startswith("{") else sys.stderr
        sink.write(line)
        sink.flush()
        lines.append(line)


def start_worker(setting: str, flags: list[str], args: argparse.Namespace,
                 timeout_s: float | None) -> tuple[int | str, list[dict], str]:
    """(exit status or 'timeout', the worker's records, the tail of its stderr); its lines are
    forwarded as they come, so a run cut short keeps what it measured."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(filter(None, (os.environ.get("XLA_FLAGS", ""), *flags)))
    command = [sys.executable, os.path.abspath(__file__), "--worker", setting,
               "--cases", args.cases, "--attention", args.attention, "--steps", str(args.steps),
               "--peak-tflops", str(args.peak_tflops), *(["--dry-run"] if args.dry_run else [])]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    out, err = [], []
    pumps = [threading.Thread(target=_pump, args=(process.stdout, out, True)),
             threading.Thread(target=_pump, args=(process.stderr, err, False))]
    for pump in pumps:
        pump.start()
    try:
        status = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        status = "timeout"
    for pump in pumps:
        pump.join()
    records = [json.loads(line) for line in out if line.startswith("{")]
    return status, records, "".join(err)[-4000:]


def unknown_flags(flags: list[str], stderr: str) -> list[str]:
    """The `flags` this XLA refused at start-up ("Unknown flags in XLA_FLAGS: ...")."""
    match = re.search(r"Unknown flags in XLA_FLAGS: (.*)", stderr)
    if not match:
        return []
    named = set(re.findall(r"--(\w+)", match.group(1)))
    return [flag for flag in flags if flag[2:].split("=")[0] in named]


def run_setting(setting: str, args: argparse.Namespace, timeout_s: float | None) -> bool:
    """One worker under `setting`'s flags (again without any this XLA does not know); then an
    'xla_flags' line and an error line for each case and kernel it did not report. True if
    every case and kernel was measured or skipped."""
    flags, dropped = list(XLA_SETTINGS[setting]), []
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        left = None if deadline is None else max(deadline - time.monotonic(), 1.0)
        status, records, stderr = start_worker(setting, flags, args, left)
        refused = [] if records else unknown_flags(flags, stderr)
        if not refused:
            break
        dropped += refused
        flags = [flag for flag in flags if flag not in refused]
    emit({"case": "xla_flags", "xla_flags": setting, "flags": flags,
          "dropped_unknown_to_this_xla": dropped, "inherited": os.environ.get("XLA_FLAGS", ""),
          "source": MAXTEXT_SOURCE if setting == "maxtext" else "XLA's defaults",
          "worker_status": status})
    reported = {(r["case"], r["attention"]) for r in records if "attention" in r}
    why = ("timed out" if status == "timeout" else f"worker exited with {status}") + \
        f"; stderr tail: {stderr[-600:]}"
    missing = [(name, choice) for name in args.cases.split(",")
               for choice in args.attention.split(",") if (name, choice) not in reported]
    for name, choice in missing:
        emit({"case": name, "attention": choice, "xla_flags": setting, "error": why})
    return not missing and not any("error" in r for r in records)


def main() -> None:
    from textgen_jax.ops import ATTENTION_CHOICES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--attention", default=",".join(ATTENTION_CHOICES),
                        help="comma-separated config.model.attention values")
    parser.add_argument("--xla-flags", default=",".join(XLA_SETTINGS),
                        help=f"comma-separated flag settings, each in its own process: "
                             f"{', '.join(XLA_SETTINGS)}")
    parser.add_argument("--steps", type=int, default=10,
                        help="timed steps per measurement (at least the case's min_steps, 5)")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="dense bfloat16 peak per chip, TFLOP/s, instead of the table's")
    parser.add_argument("--timeout-s", type=float, default=0.0,
                        help="for all settings together, shared out as each worker starts")
    parser.add_argument("--dry-run", action="store_true",
                        help=f"train_throughput.TINY shapes, {DRY_RUN_STEPS} timed steps: "
                             "the same code path on a CPU")
    parser.add_argument("--worker", metavar="SETTING", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for option, given, allowed in (("--cases", args.cases, CASES),
                                   ("--attention", args.attention, ATTENTION_CHOICES),
                                   ("--xla-flags", args.xla_flags, XLA_SETTINGS)):
        unknown = [value for value in given.split(",") if value not in allowed]
        if unknown:
            parser.error(f"{option}: unknown {unknown}; choose from {', '.join(allowed)}")
    if args.worker:
        run_worker(args.worker, args)
        return
    settings = args.xla_flags.split(",")
    deadline = time.monotonic() + args.timeout_s if args.timeout_s else None
    complete = True
    for index, setting in enumerate(settings):
        share = None  # of the time left, for this setting and those after it
        if deadline is not None:
            share = (deadline - time.monotonic()) / (len(settings) - index)
        complete &= run_setting(setting, args, share)
    sys.exit(0 if complete else 1)


if __name__ == "__main__":
    main()
