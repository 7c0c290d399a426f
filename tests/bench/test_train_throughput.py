"""bench/train_throughput.py at its tiny shape: every architecture against its `transformers`
class, each measurement in its own process, both sides training the same objective on the same
batch from the same parameters (--same-init)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

import tolerances
from conftest import REPO, cli_env

CASES = ("train_gpt_bench", "train_bert_bench", "train_xlm_bench", "train_gpt2_bench",
         "train_bart_bench")
VOCAB, LAYERS, D_MODEL, SEQ_LEN = 512, 2, 64, 32  # the bench's TINY shape
# Every record's first-step loss is compared with the other side's on the same batch and
# parameters in float32: two kernels' orders of a network of at most 4 blocks in a chain (BART's
# 2 + 2) whose longest reduction is the MLP's 256, relative to the values compared (the loss,
# ln 512 + ln 2 at most at this initialisation). A shifted label, another mask or another
# decoder input moves a token's loss by the spread of the initial logits (~0.1 nats), and a
# mean of ~64 tokens by far more than this bound.
LOSS_TOLERANCE = tolerances.network(layers=4, width=256) * (math.log(VOCAB) + math.log(2))


@pytest.fixture(scope="module")
def records() -> list[dict]:
    result = subprocess.run(
        [sys.executable, "bench/train_throughput.py", "--tiny", "--same-init", "--steps=1",
         "--dtypes=float32", f"--cases={','.join(CASES)}"],
        env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _measurements(records: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["case"], r["framework"]): r for r in records
            if r["case"] in CASES and r.get("kind") != "comparison"}


def test_every_case_measured_in_its_own_process(records):
    matmuls = [r for r in records if r["case"].startswith("matmul_")]
    assert sorted(r["framework"] for r in matmuls) == ["textgen_jax", "transformers"]
    measured = _measurements(records)
    assert sorted(measured) == sorted((c, f) for c in CASES
                                      for f in ("textgen_jax", "transformers"))
    pids = [r["pid"] for r in measured.values()]
    assert len(set(pids)) == len(pids) and os.getpid() not in pids
    gflops = {r["framework"]: r["gflops_per_s"] for r in matmuls}
    for record in measured.values():
        assert (record["batch"], record["seq_len"], record["timed_steps"]) == (2, SEQ_LEN, 1)
        assert record["tokens_per_s"] > 0
        step_s = record["step_ms"] / 1e3  # rounded to 0.1 ms
        assert 2 * SEQ_LEN / (step_s + 5e-5) - 0.1 <= record["tokens_per_s"] \
            <= 2 * SEQ_LEN / max(step_s - 5e-5, 1e-9) + 0.1
        assert 0 < record["import_rss_mb"] <= record["peak_rss_mb"]
        assert abs(record["train_rss_mb"]
                   - (record["peak_rss_mb"] - record["import_rss_mb"])) <= 1  # rounding
        assert record["gflops_per_s"] == pytest.approx(
            record["tokens_per_s"] * record["flops_per_token"] / 1e9, abs=0.06)
        matmul = gflops[record["framework"]]  # gflops_per_s rounded to 0.1, mfu to 0.001
        assert record["mfu"] == pytest.approx(record["gflops_per_s"] / matmul,
                                              abs=5e-4 + 0.05 / matmul)


def test_comparison_is_ours_over_theirs(records):
    measured = _measurements(records)
    comparisons = {r["case"]: r for r in records if r.get("kind") == "comparison"}
    assert sorted(comparisons) == sorted(CASES)
    for case, comparison in comparisons.items():
        ratio = (measured[(case, "textgen_jax")]["tokens_per_s"]
                 / measured[(case, "transformers")]["tokens_per_s"])
        assert comparison["ratio"] == {"float32_vs_float32": round(ratio, 3)}
        assert comparison["best_ratio"] == round(ratio, 3)


def test_both_sides_train_the_same_objective_on_the_same_batch(records):
    measured = _measurements(records)
    for case in CASES:
        ours, theirs = measured[(case, "textgen_jax")], measured[(case, "transformers")]
        # The same predicted tokens: every next token (2 rows of 31), BART's whole target
        # (2 x 32), or 15% of the non-special tokens, at least one per row.
        assert ours["loss_tokens"] == theirs["loss_tokens"] > 0, case
        if ours["objective"] == "clm":
            assert ours["loss_tokens"] == 2 * (SEQ_LEN - 1)
        if ours["objective"] == "denoising":
            assert ours["loss_tokens"] == 2 * SEQ_LEN
        # Random initialisation: near-uniform predictions, plus ln 2 for BERT's NSP.
        uniform = math.log(VOCAB) + (math.log(2) if ours["objective"] == "mlm_nsp" else 0.0)
        assert abs(ours["loss_first_step"] - uniform) < 0.5, case
        assert ours["loss_first_step"] == pytest.approx(theirs["loss_first_step"],
                                                        abs=LOSS_TOLERANCE), case


def test_flops_count_both_stacks_of_an_encoder_decoder(records):
    measured = _measurements(records)
    for case in CASES:
        ours = measured[(case, "textgen_jax")]
        # Attention over the sequence: one layer per block, two per decoder block of BART
        # (self- and cross-attention); 6N over every non-embedding parameter.
        layers = LAYERS + 2 * LAYERS if ours["arch"] == "bart" else LAYERS
        assert ours["attention_layers"] == layers
        assert ours["flops_per_token"] == (6 * ours["non_embedding_params"]
                                           + 12 * layers * D_MODEL * SEQ_LEN)
        assert measured[(case, "transformers")]["flops_per_token"] == ours["flops_per_token"]
