"""bench/gpu_check.sh's MFU part on a CPU (DRY_RUN=1: bench/gpu_mfu.py --dry-run): both XLA flag
settings, both objectives, every attention kernel measured or skipped with its reason, and each
MFU equal to what the printed tokens/s, FLOPs per token and peak give."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from conftest import REPO, cli_env

sys.path.insert(0, str(REPO / "bench"))
import gpu_mfu  # noqa: E402  (bench/ is no package)

from textgen_jax.ops import ATTENTION_CHOICES  # noqa: E402

SCRIPT = REPO / "bench" / "gpu_check.sh"
# Each setting runs one case, so that the two runs together cover both settings and both
# objectives at half the compilations of the full matrix (a tiny train step compiles in
# seconds on XLA:CPU); the two runs go side by side.
RUNS = {"default": "gpt2_small", "maxtext": "bert_base"}
OBJECTIVES = {"gpt2_small": "clm", "bert_base": "mlm_nsp"}


def relative_rounding(value: float, step: float) -> float:
    """The largest relative error of `value` printed rounded to a multiple of `step`."""
    return 0.5 * step / abs(value)


def significant_rounding(value: float, digits: int = 4) -> float:
    """The largest relative error of `value` printed to `digits` significant digits."""
    return relative_rounding(value, 10.0 ** (math.floor(math.log10(abs(value))) - digits + 1))


def test_script_parses():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dry_run_measures_every_kernel_under_both_flag_settings(tmp_path):
    processes = {}
    for setting, case in RUNS.items():
        env = {**cli_env(), "DRY_RUN": "1", "PYTHON": sys.executable,
               "OUT": str(tmp_path / setting),
               "MFU_FLAGS": f"--xla-flags {setting} --cases {case}"}
        processes[setting] = subprocess.Popen(["bash", str(SCRIPT)], env=env, cwd=REPO,
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True)
    for setting, process in processes.items():
        _, stderr = process.communicate(timeout=600)
        log = (tmp_path / setting / "mfu.log").read_text()
        assert process.returncode == 0, stderr[-2000:] + log[-4000:]

    for setting, case in RUNS.items():
        lines = (tmp_path / setting / "mfu.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]  # every line is JSON
        [calibration] = [r for r in records if r["case"] == f"matmul_{gpu_mfu.TINY_MATMUL_SIZE}"]
        [flags] = [r for r in records if r["case"] == "xla_flags"]
        kernels = {r["attention"]: r for r in records if r["case"] == case}
        assert len(records) == 2 + len(kernels)

        assert flags["xla_flags"] == setting and flags["worker_status"] == 0
        # Flags this XLA does not know are dropped (and named), never fatal; the rest apply.
        assert sorted(flags["flags"] + flags["dropped_unknown_to_this_xla"]) == sorted(
            gpu_mfu.XLA_SETTINGS[setting])
        assert bool(flags["flags"]) == (setting == "maxtext")

        assert sorted(kernels) == sorted(ATTENTION_CHOICES)
        measured = {name: r for name, r in kernels.items() if "skipped" not in r}
        assert measured, kernels
        for name, record in kernels.items():
            assert "error" not in record, record
            assert record["xla_flags"] == setting and record["backend"] == "cpu"
            if "skipped" in record:
                # A skip names its reason; an alias names the kernel measured in its stead.
                assert record["skipped"]
                assert name == "auto" and any(f"'{kernel}'" in record["skipped"]
                                              for kernel in measured)
                continue
            assert record["objective"] == OBJECTIVES[case]
            assert (record["batch"], record["seq_len"]) == (gpu_mfu.TINY["batch"],
                                                            gpu_mfu.TINY["seq_len"])
            assert record["tokens_per_s"] > 0 and record["timed_steps"] == gpu_mfu.DRY_RUN_STEPS
            assert math.isfinite(record["loss"]) and not record["cudnn_attention"]
            assert record["flops_per_token"] > 6 * record["non_embedding_params"] > 0

            # The dry run's peak is the matmul it measured (GFLOP/s printed to 0.1).
            assert record["peak_source"] == f"measured matmul_{gpu_mfu.TINY_MATMUL_SIZE} bfloat16"
            peak = record["peak_tflops"] * 1e12
            assert math.isclose(peak, calibration["gflops_per_s"] * 1e9,
                                rel_tol=significant_rounding(peak))
            # MFU from the printed figures: tokens/s is printed to 0.1, the peak and the MFU to
            # 4 significant digits, so the two sides differ by at most the sum of those three
            # relative roundings.
            for mfu_key, flops_per_token in (
                    ("mfu", record["flops_per_token"]),
                    ("mfu_with_output_layer",
                     record["flops_per_token"] + record["output_layer_flops_per_token"])):
                mfu = record["tokens_per_s"] * flops_per_token / peak
                tolerance = (relative_rounding(record["tokens_per_s"], 0.1)
                             + significant_rounding(peak) + significant_rounding(mfu))
                assert math.isclose(record[mfu_key], mfu, rel_tol=tolerance), (mfu_key, record)
            tflops = record["tokens_per_s"] * record["flops_per_token"] / 1e12
            assert math.isclose(record["tflops_per_s"], tflops,
                                rel_tol=relative_rounding(record["tokens_per_s"], 0.1)
                                + significant_rounding(tflops))


def test_unknown_chip_has_no_mfu_and_says_why():
    peak, source = gpu_mfu.peak_flops(0.0, "NVIDIA Imaginary X1", "gpu", 1, dry_run=False)
    assert peak is None and "--peak-tflops" in source and "NVIDIA Imaginary X1" in source
    assert gpu_mfu.peak_flops(0.0, "NVIDIA H200", "gpu", 2, dry_run=False) == (
        2 * 989e12, "PEAK_BF16_FLOPS")
    assert gpu_mfu.peak_flops(500.0, "NVIDIA H200", "gpu", 1, dry_run=False)[0] == 500e12


def test_flags_refused_at_start_up_are_found_by_name():
    stderr = ("F1202 parse_flags_from_env.cc:234] Unknown flags in XLA_FLAGS: "
              "--xla_gpu_pipeline_all_gather=on --xla_bogus=1\n")
    assert gpu_mfu.unknown_flags(list(gpu_mfu.MAXTEXT_XLA_FLAGS), stderr) == [
        "--xla_gpu_pipeline_all_gather=on"]
    assert gpu_mfu.unknown_flags(list(gpu_mfu.MAXTEXT_XLA_FLAGS), "Traceback ...") == []
