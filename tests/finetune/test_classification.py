"""The sequence-task objective on tiny models: choice and order axes, the extract token, the
regression and auxiliary LM terms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import tolerances
from textgen_jax import models
from textgen_jax.config import base_config
from textgen_jax.finetune.classification import sequence_logits, sequence_task_loss_fn
from textgen_jax.models.bart import Bart
from textgen_jax.models.gpt2 import GPT2
from textgen_jax.models.layers import TransformerConfig
from textgen_jax.objectives.clm import causal_lm_loss

VOCAB, LENGTH = 50, 10
GPT2_SPEC = models.spec_for(base_config().model)  # gpt2
# Equal up to rounding: the same examples at other places in the batch (rows a kernel may sum
# in other orders), float32, 2 layers whose longest reduction is the MLP's 64, relative to the
# logits' scale (tests/tolerances.py). Bitwise: a change the model must not see (a masked
# token, another row) on the same shapes, since a masked score is replaced by a constant whose
# softmax weight is exactly 0 and a row at its own place is computed alike. Losses are checked
# against the same logits (the loss function calls sequence_logits, eagerly: the same ops on
# the same numbers), so only their last few operations differ.
LOGITS = tolerances.network(layers=2, width=64)


def _gpt2(num_labels: int):
    model = GPT2(TransformerConfig(vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4,
                                   d_ff=64, max_len=16), num_labels=num_labels)
    params = model.init(jax.random.key(0), {"inputs": jnp.ones((1, LENGTH), jnp.int32)})["params"]
    # Larger weights than the init, so that every token moves the classifier's input.
    params = jax.tree.map(lambda p: p * 3.0, params)
    return model, params


def _rows(rng: np.random.Generator, *lead: int) -> dict[str, jnp.ndarray]:
    inputs = rng.integers(4, VOCAB, (*lead, LENGTH)).astype(np.int32)
    lengths = rng.integers(5, LENGTH + 1, lead)
    attention = (np.arange(LENGTH) < lengths[..., None]).astype(np.int32)
    return {"inputs": jnp.asarray(inputs * attention), "segment_ids": jnp.asarray(attention),
            "positions": jnp.asarray(np.broadcast_to(np.arange(LENGTH), inputs.shape)),
            "extract_positions": jnp.asarray(lengths - 1, jnp.int32)}


def test_the_classifier_reads_the_extract_token_only_from_its_left():
    model, params = _gpt2(num_labels=3)
    batch = _rows(np.random.default_rng(0), 4)
    logits, _ = sequence_logits(GPT2_SPEC, "classification", model, params, batch)
    assert logits.shape == (4, 3)
    # A token after the extract position never changes the logits; one before it does.
    extract = int(batch["extract_positions"][0])
    after = dict(batch, inputs=batch["inputs"].at[0, extract + 1:].set(7))
    np.testing.assert_array_equal(sequence_logits(GPT2_SPEC, "classification", model, params,
                                                  after)[0], logits)
    before = dict(batch, inputs=batch["inputs"].at[0, extract - 1].add(1))
    changed = sequence_logits(GPT2_SPEC, "classification", model, params, before)[0]
    assert np.abs(np.asarray(changed[0] - logits[0])).max() > 1e-3
    np.testing.assert_array_equal(changed[1:], logits[1:])


def test_multiple_choice_scores_each_choice_and_follows_their_order():
    model, params = _gpt2(num_labels=1)
    batch = _rows(np.random.default_rng(1), 2, 4)
    batch["labels"] = jnp.asarray([2, 0], jnp.int32)
    logits, _ = sequence_logits(GPT2_SPEC, "multiple_choice", model, params, batch)
    assert logits.shape == (2, 4)
    order = np.array([3, 1, 0, 2])
    permuted = {k: v[:, order] if v.ndim >= 2 else v for k, v in batch.items()}
    scale = float(jnp.abs(logits).max())
    np.testing.assert_allclose(sequence_logits(GPT2_SPEC, "multiple_choice", model, params,
                                               permuted)[0], logits[:, order],
                               atol=LOGITS * scale, rtol=0)
    sums = sequence_task_loss_fn(model, params, batch, None, True, spec=GPT2_SPEC,
                                 kind="multiple_choice", regression=False, lm_weight=0.0)
    expected = -jax.nn.log_softmax(logits)[jnp.arange(2), batch["labels"]].sum()
    np.testing.assert_allclose(sums["loss"], expected, rtol=0,
                               atol=tolerances.cross_entropy_sum(2, scale, classes=4))
    assert sums["tokens"] == 2


def test_similarity_in_both_orders_is_symmetric_and_the_lm_term_is_weighted():
    model, params = _gpt2(num_labels=2)
    rng = np.random.default_rng(2)
    batch = _rows(rng, 3, 2)
    batch["labels"] = jnp.asarray([0, 1, 1], jnp.int32)
    swapped = {k: v[:, ::-1] if v.ndim >= 2 else v for k, v in batch.items()}
    logits = sequence_logits(GPT2_SPEC, "similarity", model, params, batch)[0]
    np.testing.assert_allclose(sequence_logits(GPT2_SPEC, "similarity", model, params,
                                               swapped)[0], logits,
                               atol=LOGITS * np.abs(logits).max(), rtol=0)
    plain = sequence_task_loss_fn(model, params, batch, None, True, spec=GPT2_SPEC,
                                  kind="similarity", regression=False, lm_weight=0.0)
    weighted = sequence_task_loss_fn(model, params, batch, None, True, spec=GPT2_SPEC,
                                     kind="similarity", regression=False, lm_weight=0.5)
    rows = {k: v.reshape(-1, LENGTH) for k, v in batch.items() if v.ndim == 3}
    lm = causal_lm_loss(model.apply({"params": params}, rows)["logits"],
                        rows["inputs"], rows["segment_ids"])
    mean_lm = lm["loss"] / lm["tokens"]
    # The same rows' logits and causal_lm_loss: a few float32 operations apart (16 u).
    np.testing.assert_allclose(weighted["loss"], plain["loss"] + 0.5 * mean_lm * 3,
                               rtol=16 * tolerances.F32)
    np.testing.assert_allclose(weighted["lm_loss"] / weighted["lm_examples"], mean_lm,
                               rtol=16 * tolerances.F32)


def test_regression_is_the_squared_error_of_the_score():
    model, params = _gpt2(num_labels=1)
    batch = _rows(np.random.default_rng(3), 4)
    batch["labels"] = jnp.asarray([0.5, 2.0, -1.0, 3.5], jnp.float32)
    scores = sequence_logits(GPT2_SPEC, "regression", model, params, batch)[0][:, 0]
    sums = sequence_task_loss_fn(model, params, batch, None, True, spec=GPT2_SPEC,
                                 kind="regression", regression=True, lm_weight=0.0)
    # The same scores, squared and summed (4 positive terms): a few float32 roundings (16 u).
    np.testing.assert_allclose(sums["loss"], ((scores - batch["labels"]) ** 2).sum(),
                               rtol=16 * tolerances.F32)


def test_bart_classifies_from_the_decoder_state_at_the_final_eos():
    model = Bart(TransformerConfig(vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=4,
                                   d_ff=64, max_len=16), num_labels=3)
    rng = np.random.default_rng(4)
    inputs = jnp.asarray(rng.integers(4, VOCAB, (2, LENGTH)), jnp.int32)
    params = model.init(jax.random.key(0), {"inputs": inputs, "decoder_inputs": inputs})["params"]
    params = jax.tree.map(lambda p: p * 3.0, params)
    extract = jnp.asarray([5, 9], jnp.int32)
    out = model.apply({"params": params}, {"inputs": inputs, "decoder_inputs": inputs,
                                           "extract_positions": extract})
    assert out["classification_logits"].shape == (2, 3)
    # The decoder is causal: decoder tokens after the extract position change nothing.
    later = inputs.at[0, 6:].set(3)
    again = model.apply({"params": params}, {"inputs": inputs, "decoder_inputs": later,
                                             "extract_positions": extract})
    np.testing.assert_array_equal(again["classification_logits"][0],
                                  out["classification_logits"][0])


def test_without_num_labels_the_models_return_plain_logits():
    model, params = _gpt2(num_labels=0)
    logits = model.apply({"params": params}, {"inputs": jnp.ones((1, LENGTH), jnp.int32)})["logits"]
    assert logits.shape == (1, LENGTH, VOCAB)
