"""config.init_from starts a run from another workdir's params; config.train.freeze keeps some
of them fixed. Through the real CLI on the tiny GPT-2."""

from __future__ import annotations

import numpy as np
import pytest
import tolerances
from conftest import read_metrics, train_tiny_workdir

import textgen_jax


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, stdlib_data_dir, stdlib_tokenizer):
    return train_tiny_workdir(tmp_path_factory.mktemp("pretrained"), stdlib_data_dir,
                              stdlib_tokenizer, "--config.train.num_steps=30",
                              "--config.train.eval_every=30", "--config.train.checkpoint_every=30")


def _leaves(params) -> dict[str, np.ndarray]:
    from flax import traverse_util
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def test_fine_tune_starts_at_the_pretrained_params_and_freezes(pretrained, tmp_path, tiny_run):
    workdir = tmp_path / "fine_tuned"
    run = tiny_run(workdir, f"--config.init_from={pretrained}", "--config.train.num_steps=6",
                   "--config.train.eval_every=6", "--config.train.checkpoint_every=6",
                   "--config.train.freeze=('token_embed', 'block_0')")
    assert f"initialised from {pretrained}: 0 new parameter(s), 0 dropped" in run.stdout
    # Its step-0 evaluation is the pretrained model's last one: the same params, same data,
    # at most summed in another order by another run's program (the longest float32
    # reduction <= 1024 terms: the vocabulary's softmax, the eval batches' tokens).
    before = read_metrics(pretrained, "eval")[30]["loss"]
    start = read_metrics(workdir, "eval")[0]["loss"]
    assert abs(start - before) <= tolerances.reordered_sum(1024) * before, (start, before)

    old = _leaves(textgen_jax.load(str(pretrained)).params)
    new = _leaves(textgen_jax.load(str(workdir)).params)
    for path in old:
        if path.startswith(("token_embed/", "block_0/")):
            np.testing.assert_array_equal(new[path], old[path], err_msg=path)
        else:
            assert not np.array_equal(new[path], old[path]), f"{path} was not trained"


def test_bad_init_from_is_named(pretrained, tmp_path, tiny_run):
    run = tiny_run(tmp_path / "other_arch", f"--config.init_from={pretrained}",
                   config="configs/gpt.py:tiny", check=False)
    assert run.returncode == 1
    message = run.stderr.strip().splitlines()[-1]
    assert "holds a gpt2 checkpoint" in message and "trains gpt" in message, message

    run = tiny_run(tmp_path / "other_size", f"--config.init_from={pretrained}",
                   "--config.model.d_ff=256", check=False)
    message = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 1 and "block_0/mlp/fc_in/kernel" in message, message

    run = tiny_run(tmp_path / "bad_freeze", f"--config.init_from={pretrained}",
                   "--config.train.freeze=('blocks_0',)", check=False)
    message = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 1 and "'blocks_0'" in message and "block_0" in message, message
    assert not (tmp_path / "bad_freeze" / "checkpoints").exists()


def test_a_classification_fine_tune_starts_from_the_pretrained_body(pretrained, tmp_path,
                                                                     tiny_run):
    """docstring_kind on the tiny GPT-2: the body comes from `pretrained`, the classifier is
    new, and training lowers the task loss (GPT's LM term included)."""
    workdir = tmp_path / "kind"
    run = tiny_run(workdir, f"--config.init_from={pretrained}", "--config.train.num_steps=12",
                   "--config.train.eval_every=12", "--config.train.checkpoint_every=12",
                   "--config.optim.lr=1e-3", config="configs/finetune/docstring_kind.py:gpt2")
    assert "2 new parameter(s), 0 dropped" in run.stdout
    assert "newly initialised: classifier/kernel" in run.stdout
    evals = read_metrics(workdir, "eval")
    assert evals[12]["loss"] < evals[0]["loss"], evals
    assert 0.0 <= evals[12]["accuracy"] <= 1.0 and "lm_loss" in evals[12]
    params = _leaves(textgen_jax.load(str(workdir)).params)
    assert params["classifier/kernel"].shape == (64, 3)
    # The task's metric is evaluated, and the params of its best evaluation are kept.
    assert "eval at step 12:" in run.stdout and "| macro_f1 " in run.stdout
    kept = [int(p.name) for p in (workdir / "best").iterdir() if p.name.isdigit()]
    assert len(kept) == 1 and kept[0] in evals
    best_step = kept[0]
    assert evals[best_step]["macro_f1"] == max(e["macro_f1"] for e in evals.values())
    best = _leaves(textgen_jax.load(str(workdir), best=True).params)
    initial = _leaves(textgen_jax.load(str(pretrained)).params)
    same_as = initial if best_step == 0 else params
    np.testing.assert_array_equal(best["block_1/mlp/fc_in/kernel"],
                                  same_as["block_1/mlp/fc_in/kernel"])
