"""bench/generate_throughput.py at its tiny shape, with transformers: both sides decode the same
weights (ours exported), so their greedy tokens agree up to a near tie; every line carries its
compile time, and each ratio is ours / transformers of the lines it summarises."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, cli_env

SCRIPT = REPO / "bench" / "generate_throughput.py"


def test_tiny_run_compares_the_tokens_of_both_sides_on_the_same_weights():
    # Greedy only: its tokens are asserted equal; beam search's best sequence is reported
    # but not asserted (bench/README.md), and bfloat16 weights have no transformers side.
    result = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--runs", "1",
                             "--modes", "greedy"], env=cli_env(), cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    sides = {(r["case"], r["mode"], r["batch"], r["framework"]): r
             for r in records if "new_tokens_per_s" in r}
    comparisons = [r for r in records if "comparison" in r]
    assert sorted((c["case"], c["mode"], c["batch"]) for c in comparisons) == [
        ("gen_bart_base", "greedy", 4),
        ("gen_gpt2_small", "greedy", 1), ("gen_gpt2_small", "greedy", 8)]
    table = result.stdout[result.stdout.index("| case |"):].splitlines()
    assert len(table) == 2 + len(comparisons)

    for comparison in comparisons:
        key = (comparison["case"], comparison["mode"], comparison["batch"])
        ours, theirs = sides[key + ("textgen_jax",)], sides[key + ("transformers",)]
        assert ours["params"] > 0 and ours["compile_s"] == comparison["textgen_jax_compile_s"]
        assert theirs["compile_s"] == comparison["transformers_compile_s"]
        assert comparison["ratio"] == round(
            ours["new_tokens_per_s"] / theirs["new_tokens_per_s"], 2)
        new_tokens = ours["new_tokens"]
        prefixes = comparison["equal_prefix"]
        assert len(prefixes) == comparison["batch"]
        assert comparison["tokens_equal"] == all(p == new_tokens for p in prefixes)
        # Each row equal to its end, or at least up to its first near tie.
        assert comparison["tokens_asserted"]
        for prefix, tie in zip(prefixes, comparison["first_near_tie"]):
            assert prefix == new_tokens or (tie is not None and prefix >= tie)
        assert any(f"| {comparison['ratio']}x |" in line and f"| {key[0]} | {key[1]} | "
                   f"{key[2]} |" in line for line in table)
