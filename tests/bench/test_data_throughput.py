"""bench/data_throughput.py runs the loop's clm pipeline and derives the host requirement from
what it prints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, cli_env


def test_clm_throughput_and_host_requirement(tmp_path, stdlib_data_dir, stdlib_tokenizer):
    workdir = tmp_path / "bench"
    (workdir / "gpt2").mkdir(parents=True)
    stdlib_tokenizer.save(workdir / "gpt2" / "tokenizer.model")  # no tokenizer training here
    result = subprocess.run(
        [sys.executable, "bench/data_throughput.py", "--objectives=clm", "--workers=0",
         "--seconds=2", "--warmup-batches=1", f"--workdir={workdir}",
         f"--data-dir={stdlib_data_dir}"],
        env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["case"] for r in records] == ["data_clm", "host_requirement"]
    clm, host = records

    assert (clm["arch"], clm["workers"]) == ("gpt2", 0)
    assert clm["batches"] > 0 and clm["seconds"] >= 2
    assert clm["tokens_per_s"] > 0
    assert clm["tokens_per_s"] == pytest.approx(
        clm["batches"] * clm["batch"] * clm["seq_len"] / clm["seconds"], rel=1e-3)
    # Packed rows: padding only at the end of a finite stream, and this one repeats.
    assert clm["non_padding_tokens_per_s"] == pytest.approx(clm["tokens_per_s"])

    # GPT-2 small's non-embedding parameters: per layer 12 d² + 13 d (qkv, output, MLP, two
    # LayerNorms), and the final LayerNorm.
    layers, d = host["num_layers"], host["d_model"]
    assert (layers, d, host["seq_len"]) == (12, 768, 1024)
    assert host["non_embedding_params"] == layers * (12 * d * d + 13 * d) + 2 * d
    flops = 6 * host["non_embedding_params"] + 12 * layers * d * host["seq_len"]
    assert host["flops_per_token"] == flops
    needed = host["mfu"] * host["chips"] * host["peak_flops_per_chip"] / flops
    assert host["tokens_per_s_per_host"] == pytest.approx(needed, abs=0.1)
    assert host["clm_tokens_per_s_per_core"] == clm["tokens_per_s"]  # 1 process at 0 workers
    assert host["cores_needed"] == pytest.approx(needed / clm["tokens_per_s"], abs=0.01)
