"""A run whose loss or parameters turn NaN or inf stops with one line naming the step, and
never writes a checkpoint of that state: the last good one stays the latest."""

from __future__ import annotations

import math

import jax
import numpy as np

from conftest import read_metrics


def test_a_diverging_run_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                               tiny_run):
    workdir = tmp_path / "workdir"
    tiny_run(workdir, "--config.train.num_steps=2", "--config.train.checkpoint_every=2",
             "--config.train.eval_every=2", "--config.train.log_every=1")
    # Resumed with a learning rate no model survives: the parameters overflow within steps.
    result = tiny_run(workdir, "--config.train.num_steps=8", "--config.train.checkpoint_every=1",
                      "--config.train.eval_every=100", "--config.train.log_every=1",
                      "--config.optim.lr=1e30", "--config.optim.warmup_steps=0",
                      "--config.optim.decay=constant", check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("textgen-jax train: error: training stopped:"), message
    assert "config.optim.lr=1e+30" in message and "lower config.optim.lr" in message, message
    bad = int(message.split(" at step ")[1].split()[0])
    assert 2 < bad <= 8
    # The step named is the first whose logged loss (or a saved parameter) is not finite.
    logged = read_metrics(workdir)
    first_nan = min((step for step, row in logged.items() if not math.isfinite(row["loss"])),
                    default=None)
    assert first_nan in (bad, None) and all(math.isfinite(logged[s]["loss"])
                                            for s in logged if s < bad)
    # Every checkpoint left is of a step before it, and the latest holds finite parameters.
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and steps[-1] < bad and f"resumes from step {steps[-1]}" in message, message

    import textgen_jax
    loaded = textgen_jax.load(str(workdir))
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(loaded.params))
