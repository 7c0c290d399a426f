"""GPT: exact against Hugging Face's OpenAIGPTLMHeadModel, causal, packing-safe, trains via CLI."""

from __future__ import annotations

import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tolerances
from conftest import REPO, cli_command, cli_env, read_metrics
from textgen_jax.models.gpt import GPT
from textgen_jax.models.layers import TransformerConfig

VOCAB = 101
# The packed batch and each document alone run the same function at other shapes, so their sums
# run in other orders: float32, 2 layers whose longest reduction is the MLP's 64, relative to
# the logits' scale (about 6 here: 1e-4). A leak between documents moves them by > 1e-2.
LOGITS = tolerances.network(layers=2, width=64)


def _init_shapes(model: GPT) -> dict:
    return nn.meta.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), model.example_batch(8))["params"]))


def _random_tokens(rng: np.random.Generator, *shape: int, vocab: int = VOCAB) -> np.ndarray:
    return rng.integers(0, vocab, size=shape).astype(np.int32)


@pytest.fixture(scope="module")
def tiny():
    """(params, jitted apply) of a tiny GPT with weights of std 0.3 (LayerNorm scales 1 + noise),
    large enough that attention is sharp and input-dependent: a leak between tokens that must
    not see each other moves the logits far beyond the tolerances below."""
    model = GPT(TransformerConfig(vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4,
                                  d_ff=64, max_len=32))
    rng = np.random.default_rng(0)

    def draw(path, shape):
        noise = rng.normal(size=shape.shape).astype(np.float32)
        return jnp.asarray(1.0 + 0.1 * noise if path[-1].key == "scale" else 0.3 * noise)
    params = jax.tree_util.tree_map_with_path(draw, _init_shapes(model))
    apply = jax.jit(lambda params, inputs, segments, positions: model.apply(
        {"params": params},
        {"inputs": inputs, "segment_ids": segments, "positions": positions})["logits"])
    return params, apply


def test_changing_a_future_token_never_changes_earlier_logits(tiny):
    params, apply = tiny
    inputs = _random_tokens(np.random.default_rng(1), 2, 16)
    segments = np.ones_like(inputs)
    positions = np.broadcast_to(np.arange(16, dtype=np.int32), inputs.shape)
    changed = inputs.copy()
    changed[:, 9] = (inputs[:, 9] + 1) % VOCAB
    before = np.asarray(apply(params, inputs, segments, positions))
    after = np.asarray(apply(params, changed, segments, positions))
    # Bitwise: one program at one shape, and a masked score is replaced by a constant whose
    # softmax weight is exactly 0, so the earlier rows see the very same numbers.
    np.testing.assert_array_equal(after[:, :9], before[:, :9])
    assert np.abs(after[:, 9:] - before[:, 9:]).max() > 1e-2  # the change itself is seen


def test_packed_documents_never_attend_to_each_other(tiny):
    params, apply = tiny
    rng = np.random.default_rng(2)
    first, second = _random_tokens(rng, 1, 6), _random_tokens(rng, 1, 10)
    packed = np.concatenate([first, second], axis=1)
    segments = np.array([[1] * 6 + [2] * 10], np.int32)
    positions = np.array([list(range(6)) + list(range(10))], np.int32)

    logits = np.asarray(apply(params, packed, segments, positions))
    alone = [np.asarray(apply(params, doc, np.ones_like(doc),
                              np.arange(doc.shape[1], dtype=np.int32)[None]))
             for doc in (first, second)]
    atol = LOGITS * np.abs(logits).max()
    np.testing.assert_allclose(logits[:, :6], alone[0], atol=atol, rtol=0)
    np.testing.assert_allclose(logits[:, 6:], alone[1], atol=atol, rtol=0)

    # Without the segment ids the second document does see the first: the check has teeth.
    leaky = np.asarray(apply(params, packed, np.ones_like(segments), positions))
    assert np.abs(leaky[:, 6:] - alone[1]).max() > 1e-2


def test_tiny_pretrains_through_the_cli(tmp_path, tiny_run):
    workdir = tmp_path / "gpt_tiny"
    # 30 steps at the preset's lr (5e-4, tuned for 800) move the loss too little to assert on.
    tiny_run(workdir, "--config.train.num_steps=30", "--config.train.eval_every=30",
             "--config.train.checkpoint_every=30", "--config.optim.lr=1e-3",
             config="configs/gpt.py:tiny")
    evals = read_metrics(workdir, "eval")
    assert sorted(evals)[0] == 0 and sorted(evals)[-1] == 30, sorted(evals)
    assert evals[30]["loss"] < evals[0]["loss"] - 0.25, (evals[0]["loss"], evals[30]["loss"])

    result = subprocess.run(
        cli_command("generate", workdir, "--prompt=Return the", "--max_new_tokens=6",
                    "--temperature=0"),
        env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("Return the"), result.stdout
