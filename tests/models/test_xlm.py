"""XLM: exact against Hugging Face's XLMWithLMHeadModel; causal or bidirectional, padding-safe."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tolerances
from textgen_jax.config import base_config, validate
from textgen_jax.models import build_model
from textgen_jax.models.layers import TransformerConfig
from textgen_jax.models.xlm import Xlm
from textgen_jax.training import partitioning


# A padded batch and the tokens alone run the same function at other shapes, so their sums run
# in other orders: float32, 2 layers whose longest reduction is the MLP's 64, relative to the
# logits' scale (about 6 here: 9e-5). A leak moves them by > 1e-2.
LOGITS = tolerances.network(layers=2, width=64)


def _init_shapes(model: Xlm) -> dict:
    return nn.meta.unbox(jax.eval_shape(
        lambda: model.init(jax.random.key(0), model.example_batch(8))["params"]))


def _tiny_apply(causal: bool):
    """Jitted apply of a tiny 2-language XLM with weights (std 0.3) that make attention sharp."""
    model = Xlm(TransformerConfig(vocab_size=101, num_layers=2, d_model=32, num_heads=4,
                                  d_ff=64, max_len=32, activation="gelu"),
                num_languages=2, causal=causal)
    rng = np.random.default_rng(0)

    def draw(path, shape):
        noise = rng.normal(size=shape.shape).astype(np.float32)
        return jnp.asarray(1.0 + 0.1 * noise if path[-1].key == "scale" else 0.3 * noise)
    params = jax.tree_util.tree_map_with_path(draw, _init_shapes(model))
    return jax.jit(lambda inputs, langs, attention_ids: model.apply(
        {"params": params}, {"inputs": inputs, "langs": langs,
                             "segment_ids": attention_ids})["logits"])


@pytest.fixture(scope="module")
def causal_apply():
    return _tiny_apply(causal=True)


@pytest.fixture(scope="module")
def bidirectional_apply():
    return _tiny_apply(causal=False)


def _change_token_12(apply) -> np.ndarray:
    """|logits change| at positions 0..11 when token 12 changes, [batch, 12, vocab]."""
    inputs = np.random.default_rng(1).integers(0, 101, size=(2, 16)).astype(np.int32)
    langs, attention = np.zeros_like(inputs), np.ones_like(inputs)
    changed = inputs.copy()
    changed[:, 12] = (inputs[:, 12] + 1) % 101
    before, after = apply(inputs, langs, attention), apply(changed, langs, attention)
    return np.abs(np.asarray(after[:, :12]) - np.asarray(before[:, :12]))


def test_causal_mode_never_lets_a_future_token_change_an_earlier_logit(causal_apply):
    # Bitwise: one program at one shape, and a masked score is replaced by a constant whose
    # softmax weight is exactly 0, so the earlier positions see the very same numbers.
    assert _change_token_12(causal_apply).max() == 0.0


def test_bidirectional_mode_lets_a_later_token_change_earlier_logits(bidirectional_apply):
    assert _change_token_12(bidirectional_apply).min(-1).max() > 1e-3


def test_languages_change_the_outputs(bidirectional_apply):
    inputs = np.random.default_rng(2).integers(0, 101, size=(1, 12)).astype(np.int32)
    attention = np.ones_like(inputs)
    a = bidirectional_apply(inputs, np.zeros_like(inputs), attention)
    b = bidirectional_apply(inputs, np.ones_like(inputs), attention)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-2


@pytest.mark.parametrize("causal", [False, True])
def test_padding_never_changes_the_logits_of_real_tokens(causal, causal_apply,
                                                          bidirectional_apply):
    apply = causal_apply if causal else bidirectional_apply
    rng = np.random.default_rng(3)
    real_tokens = rng.integers(0, 101, size=(1, 10)).astype(np.int32)
    real_langs = np.array([[0] * 5 + [1] * 5], np.int32)
    alone = np.asarray(apply(real_tokens, real_langs, np.ones_like(real_tokens)))
    # The same 10 tokens followed by 6 pads of different contents in two rows.
    padded = np.concatenate([np.repeat(real_tokens, 2, 0),
                             rng.integers(0, 101, size=(2, 6)).astype(np.int32)], axis=1)
    langs = np.concatenate([np.repeat(real_langs, 2, 0), rng.integers(0, 2, size=(2, 6))], 1)
    attention = np.array([[1] * 10 + [0] * 6] * 2, np.int32)
    out = np.asarray(apply(padded, langs.astype(np.int32), attention))
    assert np.all(np.isfinite(out))
    for row in range(2):
        np.testing.assert_allclose(out[row, :10], alone[0], atol=LOGITS * np.abs(alone).max(),
                                   rtol=0)
    if not causal:  # without the padding mask the pads are seen: the check has teeth
        leaky = np.asarray(apply(padded, langs.astype(np.int32), np.ones_like(attention)))
        assert np.abs(leaky[0, :10] - alone[0]).max() > 1e-2


def test_output_layer_is_tied_to_the_word_embeddings():
    model = Xlm(TransformerConfig(vocab_size=101, num_layers=1, d_model=32, num_heads=4,
                                  d_ff=64, max_len=32), num_languages=3)
    shapes = _init_shapes(model)
    vocab_leaves = sorted(jax.tree_util.keystr(path) for path, leaf
                          in jax.tree_util.tree_flatten_with_path(shapes)[0]
                          if 101 in leaf.shape)
    assert vocab_leaves == ["['output_bias']", "['token_embed']['embedding']"]
    assert shapes["language_embed"]["embedding"].shape == (3, 32)


def test_sinusoidal_positions_and_one_language_add_no_parameters():
    model = Xlm(TransformerConfig(vocab_size=101, num_layers=1, d_model=32, num_heads=4,
                                  d_ff=64, max_len=32), sinusoidal_positions=True)
    shapes = _init_shapes(model)
    assert "position_embed" not in shapes and "language_embed" not in shapes


def test_every_parameter_carries_logical_axis_names():
    model = Xlm(TransformerConfig(vocab_size=101, num_layers=1, d_model=32, num_heads=4,
                                  d_ff=64, max_len=32), num_languages=3)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), model.example_batch(8)))
    specs = nn.get_partition_spec(boxed["params"])
    flat_specs = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]
    leaves = jax.tree.leaves(nn.meta.unbox(boxed["params"]))
    assert len(flat_specs) == len(leaves)
    allowed = {"embed", "heads", "kv", "mlp", "vocab", "length"}
    for (path, spec), leaf in zip(flat_specs, leaves):
        assert isinstance(spec, jax.sharding.PartitionSpec), path
        assert len(spec) == leaf.ndim, (path, spec)
        # Unnamed only: the language table's few rows.
        names = [name for name in spec if name is not None]
        assert set(names) <= allowed and len(set(names)) == len(names), (path, spec)
        assert len(names) >= leaf.ndim - 1, (path, spec)
    mesh = jax.make_mesh((1, 1, 1), partitioning.MESH_AXES, devices=jax.devices()[:1])
    partitioning.logical_shardings(boxed["params"], mesh)


def test_registered_as_xlm():
    config = base_config()
    config.model.update(arch="xlm", encoder_decoder=False)
    assert isinstance(build_model(config.model, 101), Xlm)


def _xlm_preset(preset: str):
    path = Path(__file__).resolve().parents[2] / "configs" / "xlm.py"
    spec = importlib.util.spec_from_file_location("xlm_presets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


@pytest.mark.parametrize("preset", ["tiny", "enfr_1024", "en_2048"])
def test_presets_are_valid_and_sized_as_the_paper(preset):
    config = _xlm_preset(preset)
    validate(config)
    assert config.model.d_ff == 4 * config.model.d_model
    assert config.model.num_languages == len(config.data.languages)
    assert config.objective == "xlm_mlm" and not config.model.causal


def test_build_model_passes_the_xlm_options():
    config = _xlm_preset("tiny")
    config.model.sinusoidal_positions, config.model.causal = True, True
    model = build_model(config.model, 101)
    assert (model.num_languages, model.sinusoidal_positions, model.causal) == (2, True, True)


@pytest.mark.parametrize("objective", ["xlm_mlm", "tlm"])
def test_cli_pretraining_lowers_the_eval_loss(tmp_path, tiny_run, objective):
    from conftest import read_metrics

    workdir = tmp_path / objective
    tiny_run(workdir, "--config.train.num_steps=30", "--config.train.eval_every=30",
             "--config.optim.lr=2e-3", f"--config.objective={objective}",
             config="configs/xlm.py:tiny")
    evals = read_metrics(workdir, "eval")
    assert sorted(evals) == [0, 30]
    assert evals[30]["loss"] < evals[0]["loss"] - 0.3, (evals[0]["loss"], evals[30]["loss"])
