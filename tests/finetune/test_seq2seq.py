"""The seq2seq objective on tiny models over real code_to_docstring rows: label smoothing as
optax's, no loss on padding or source tokens, and beam-search predictions that, from a model
trained to reproduce its targets, score ROUGE 1 and compile once."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tolerances
from textgen_jax import models
from textgen_jax.config import ConfigError, base_config
from textgen_jax.decoding.generate import GenerationOptions
from textgen_jax.finetune.objectives import objective_for
from textgen_jax.finetune.pipelines import finetune_rows, references, task_source
from textgen_jax.finetune.seq2seq import (NO_TOKEN, seq2seq_logits, seq2seq_loss_fn,
                                          seq2seq_predict_fn, seq2seq_score_fn)
from textgen_jax.objectives.clm import cross_entropy_sums

from conftest import count_compiles

SEQ_LEN = 40
TASK = "code_to_docstring"


def _config(task_config, arch: str):
    config = task_config(TASK, arch, seq_len=SEQ_LEN, batch=4)
    config.model.update(num_layers=1, d_model=64, num_heads=4, d_ff=128, max_len=64,
                        dtype="float32")
    return config


def _model(config, tokenizer):
    model = models.build_model(config.model, tokenizer.vocab_size)
    params = model.init(jax.random.key(0), model.example_batch(SEQ_LEN))["params"]
    return model, params


def _batch(config, tokenizer, indices) -> dict[str, jnp.ndarray]:
    rows = finetune_rows(config, tokenizer, "validation", shuffle=False, repeat=False)
    return {key: jnp.stack([rows[i][key] for i in indices]) for key in rows[0]}


def test_label_smoothing_is_optax_smooth_labels_cross_entropy():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 5, 11)) * 3, jnp.float32)
    targets = jnp.asarray(rng.integers(0, 11, (3, 5)))
    weights = jnp.asarray(rng.integers(0, 2, (3, 5)), jnp.float32)
    # Two formulas of the same 15 cross-entropies from the same float32 logits.
    atol = tolerances.cross_entropy_sum(15, float(jnp.abs(logits).max()), classes=11)
    for smoothing in (0.0, 0.1, 0.3):
        expected = optax.softmax_cross_entropy(
            logits, optax.smooth_labels(jax.nn.one_hot(targets, 11), smoothing))
        sums = cross_entropy_sums(logits, targets, weights, smoothing)
        np.testing.assert_allclose(sums["loss"], (expected * weights).sum(), atol=atol, rtol=0)
        plain = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        np.testing.assert_allclose(sums.get("nll", sums["loss"]), (plain * weights).sum(),
                                   atol=atol, rtol=0)


@pytest.mark.parametrize("arch", ["bart", "gpt2"])
def test_only_target_tokens_carry_loss(task_config, stdlib_tokenizer, arch):
    config = _config(task_config, arch)
    model, params = _model(config, stdlib_tokenizer)
    batch = _batch(config, stdlib_tokenizer, range(4))
    spec = models.spec_for(config.model)
    loss = lambda b: seq2seq_loss_fn(model, params, b, None, True, spec=spec,  # noqa: E731
                                     label_smoothing=0.1)
    sums = loss(batch)
    mask = np.asarray(batch["target_mask"]).astype(bool)
    assert 0 < sums["tokens"] == mask.sum() < mask.size
    # Targets where the mask is 0 (padding; GPT's source) and padded input tokens change nothing.
    changed = dict(batch, targets=jnp.where(mask, batch["targets"], 5))
    padding = batch["segment_ids"] == 0
    changed["inputs"] = jnp.where(padding, 7, batch["inputs"])
    # Bitwise: the same shapes, masked scores replaced by a constant whose softmax weight is
    # exactly 0, and masked targets' losses weighted by exactly 0.
    for name, value in loss(changed).items():
        np.testing.assert_array_equal(value, sums[name], err_msg=name)
    if arch == "gpt2":
        # The loss is next-token cross-entropy from the [sep] (prompt_lengths - 1) to the last
        # docstring token: p(docstring, eos | [bos] code [sep]), nothing of the code.
        logits = seq2seq_logits(spec, model, params, batch)
        inputs = np.asarray(batch["inputs"])
        expected = 0.0
        for row, (start, length) in enumerate(zip(np.asarray(batch["prompt_lengths"]) - 1,
                                                  np.asarray(batch["segment_ids"]).sum(1))):
            expected += optax.softmax_cross_entropy_with_integer_labels(
                logits[row, start:length - 1], inputs[row, start + 1:length]).sum()
        # The loss function's logits are seq2seq_logits' (the same ops on the same numbers):
        # two formulas of the same cross-entropies.
        np.testing.assert_allclose(sums["nll"], expected, rtol=0, atol=tolerances.cross_entropy_sum(
            int(sums["tokens"]), float(jnp.abs(logits).max()), classes=logits.shape[-1]))


def _short_examples(config, tokenizer, count: int = 4) -> list[int]:
    """Examples of the validation split whose docstring is a few tokens long."""
    source = task_source(config, "validation")
    short = [i for i in range(len(source))
             if len(tokenizer.encode(references(config, source[i]))) <= 10]
    return short[:count]


@pytest.mark.parametrize("arch", ["bart", "gpt2"])
def test_a_model_trained_on_its_targets_decodes_them_with_rouge_1(task_config, stdlib_tokenizer,
                                                                   arch):
    config = _config(task_config, arch)
    model, params = _model(config, stdlib_tokenizer)
    indices = _short_examples(config, stdlib_tokenizer)
    assert len(indices) == 4
    batch = _batch(config, stdlib_tokenizer, indices)
    if arch == "gpt2":  # prompts of different lengths: the left padding of generation
        assert len(set(np.asarray(batch["prompt_lengths"]).tolist())) > 1
    spec = models.spec_for(config.model)
    tx = optax.adam(3e-3)

    @jax.jit
    def step(params, opt_state):
        def mean_loss(p):
            sums = seq2seq_loss_fn(model, p, batch, None, True, spec=spec, label_smoothing=0.0)
            return sums["loss"] / sums["tokens"]
        loss, grads = jax.value_and_grad(mean_loss)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = tx.init(params)
    for _ in range(150):
        params, opt_state, loss = step(params, opt_state)
    assert loss < 0.05

    options = GenerationOptions(max_new_tokens=14, num_beams=2, early_stopping=True)
    outputs = seq2seq_predict_fn(model, params, batch, spec=spec, options=options)
    assert outputs["predictions"].shape == (4, 14)
    np.testing.assert_array_equal(outputs["example_index"], indices)
    # Each prediction ends at eos: NO_TOKEN after it, eos itself never kept.
    assert (outputs["predictions"] == NO_TOKEN).any(axis=1).all()
    assert not (outputs["predictions"] == stdlib_tokenizer.eos_id).any()
    scores = seq2seq_score_fn(config, stdlib_tokenizer, "validation", outputs,
                              metrics=("rouge1", "rougeL", "bleu"))
    assert scores["rouge1"] == scores["rougeL"] == 1.0  # precision = recall = 1: exactly 1
    # Evaluations repeat the same batches: the second decodes without compiling.
    assert count_compiles(lambda: seq2seq_predict_fn(model, params, batch, spec=spec,
                                                options=options)) == 0
    # The scores follow the examples: pairing predictions with other references drops them.
    shuffled = dict(outputs, example_index=np.roll(outputs["example_index"], 1))
    assert seq2seq_score_fn(config, stdlib_tokenizer, "validation", shuffled,
                            metrics=("rouge1",))["rouge1"] < 1.0


@pytest.mark.parametrize("key,value,message", [
    ("label_smoothing", 1.0, r"config.task.label_smoothing=1.0 must lie in \[0, 1\)"),
    ("num_beams", 0, r"config.task .*num_beams=0 must be >= 1"),
])
def test_bad_seq2seq_options_are_config_errors(key, value, message):
    config = base_config()
    config.model.arch, config.task.name = "bart", TASK
    config.task[key] = value
    with pytest.raises(ConfigError, match=message):
        objective_for(config)
