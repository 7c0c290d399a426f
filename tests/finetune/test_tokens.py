"""The per-token fine-tuning objectives (token classification, extractive QA) on tiny BERT and
XLM models: which positions the losses read, and the errors of a model that cannot run them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import tolerances
from textgen_jax import models
from textgen_jax.config import ConfigError, base_config
from textgen_jax.data.masking import IGNORE_LABEL
from textgen_jax.finetune.objectives import finetune_objective
from textgen_jax.finetune.tasks import get_task
from textgen_jax.finetune.tokens import (extractive_qa_loss_fn, extractive_qa_predict_fn,
                                         token_classification_loss_fn,
                                         token_classification_predict_fn)
from textgen_jax.models.bert import Bert
from textgen_jax.models.layers import TransformerConfig
from textgen_jax.models.xlm import Xlm

VOCAB, BATCH, LENGTH, TAGS = 40, 3, 12, 5
CFG = TransformerConfig(vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=2, d_ff=64,
                        max_len=16, dropout=0.1)
# The losses and predictions are checked against this test's own model.apply of the same
# batch: eagerly, the same ops on the same numbers (bitwise), so a loss differs from the
# test's sum of log-softmaxes by those last operations only (tests/tolerances.py).


def _model(arch: str, head: str):
    model = (Bert(CFG, num_labels=TAGS if head == "token_classification" else 0, head=head)
             if arch == "bert" else
             Xlm(CFG, num_languages=2, num_labels=TAGS if head == "token_classification" else 0,
                 head=head))
    boxed = model.init(jax.random.key(0), model.example_batch(LENGTH))["params"]
    # Larger weights than the init, so that the logits differ clearly between positions.
    return model, boxed, jax.tree.map(lambda p: p * 3.0, nn.meta.unbox(boxed))


def _batch(arch: str, rng: np.random.Generator) -> dict[str, jnp.ndarray]:
    lengths = np.array([LENGTH, 9, 6])
    real = (np.arange(LENGTH) < lengths[:, None]).astype(np.int32)
    labels = rng.integers(0, TAGS, (BATCH, LENGTH))
    labels[rng.random((BATCH, LENGTH)) < 0.3] = IGNORE_LABEL  # later pieces of words
    labels[:, 0] = IGNORE_LABEL  # [cls]
    labels[real == 0] = IGNORE_LABEL
    batch = {"inputs": rng.integers(4, VOCAB, (BATCH, LENGTH)) * real,
             "positions": np.broadcast_to(np.arange(LENGTH), (BATCH, LENGTH)) * real,
             "segment_ids": real, "labels": labels,
             "start_positions": np.array([3, 0, 2]), "end_positions": np.array([5, 0, 4]),
             "context_offsets": rng.integers(-1, 50, (BATCH, LENGTH, 2)),
             "max_context": rng.integers(0, 2, (BATCH, LENGTH)),
             "example_index": np.array([7, 1, 4])}
    batch["token_types" if arch == "bert" else "langs"] = (np.arange(LENGTH) >= 3) * real
    return {key: jnp.asarray(value, jnp.int32) for key, value in batch.items()}


def _spec(arch: str) -> models.ArchitectureSpec:
    config = base_config()
    config.model.arch = arch
    return models.spec_for(config.model)


def _apply(arch: str, model, params, batch):
    return model.apply({"params": params}, _spec(arch).select(batch))


@pytest.mark.parametrize("arch", ["bert", "xlm"])
def test_heads_are_named_as_transformers_and_carry_logical_axes(arch):
    for head, name, size in (("token_classification", "classifier", TAGS),
                             ("question_answering", "qa_outputs", 2)):
        model, boxed, params = _model(arch, head)
        assert params[name]["kernel"].shape == (CFG.d_model, size)
        assert boxed[name]["kernel"].names == ("embed", None)
        assert boxed[name]["bias"].names == (None,)
        outputs = _apply(arch, model, params, _batch(arch, np.random.default_rng(0)))
        if head == "token_classification":
            assert outputs["token_logits"].shape == (BATCH, LENGTH, TAGS)
            assert "classification_logits" not in outputs
        else:
            assert outputs["start_logits"].shape == outputs["end_logits"].shape == (BATCH, LENGTH)
            # The two columns of qa_outputs: swapping them swaps start and end.
            swapped = {**params, name: jax.tree.map(lambda p: p[..., ::-1], params[name])}
            again = _apply(arch, model, swapped, _batch(arch, np.random.default_rng(0)))
            # Another column of the head's kernel may be summed in another order: one
            # reduction of d_model terms, relative to the logits' scale.
            np.testing.assert_allclose(again["start_logits"], outputs["end_logits"], rtol=0,
                                       atol=tolerances.network(1, CFG.d_model) * np.abs(
                                           outputs["end_logits"]).max())


@pytest.mark.parametrize("arch", ["bert", "xlm"])
def test_token_loss_is_the_cross_entropy_of_the_tagged_tokens_only(arch):
    model, _, params = _model(arch, "token_classification")
    batch = _batch(arch, np.random.default_rng(1))
    sums = token_classification_loss_fn(model, params, batch, None, True, spec=_spec(arch))
    logits = _apply(arch, model, params, batch)["token_logits"]
    log_probs = jax.nn.log_softmax(logits)
    tagged = np.asarray(batch["labels"]) != IGNORE_LABEL
    labels = np.asarray(batch["labels"])
    expected = -sum(float(log_probs[b, t, labels[b, t]]) for b, t in zip(*np.nonzero(tagged)))
    assert sums["tokens"] == tagged.sum()
    atol = tolerances.cross_entropy_sum(int(tagged.sum()), float(jnp.abs(logits).max()),
                                        classes=TAGS)
    np.testing.assert_allclose(sums["loss"], expected, atol=atol, rtol=0)
    # Untagging a position removes exactly its term.
    b, t = map(int, np.argwhere(tagged)[0])
    untagged = dict(batch, labels=batch["labels"].at[b, t].set(IGNORE_LABEL))
    fewer = token_classification_loss_fn(model, params, untagged, None, True, spec=_spec(arch))
    np.testing.assert_allclose(fewer["loss"], expected + float(log_probs[b, t, labels[b, t]]),
                               atol=atol, rtol=0)
    predicted = token_classification_predict_fn(model, params, batch, spec=_spec(arch))
    np.testing.assert_array_equal(predicted["predictions"], np.argmax(log_probs, -1))
    # A count (< 2**24) in float32 is exact.
    np.testing.assert_array_equal(sums["correct"],
                                  (predicted["predictions"] == labels)[tagged].sum())
    # Training mode applies dropout before the classifier.
    noisy = token_classification_loss_fn(model, params, batch, jax.random.key(1), False,
                                         spec=_spec(arch))
    assert abs(float(noisy["loss"]) - float(sums["loss"])) > 1e-4


@pytest.mark.parametrize("arch", ["bert", "xlm"])
def test_qa_loss_averages_the_start_and_end_cross_entropies(arch):
    model, _, params = _model(arch, "question_answering")
    batch = _batch(arch, np.random.default_rng(2))
    sums = extractive_qa_loss_fn(model, params, batch, None, True, spec=_spec(arch))
    outputs = _apply(arch, model, params, batch)
    start = jax.nn.log_softmax(outputs["start_logits"])
    end = jax.nn.log_softmax(outputs["end_logits"])
    rows = np.arange(BATCH)
    per_example = -(start[rows, batch["start_positions"]] + end[rows, batch["end_positions"]]) / 2
    scale = float(jnp.abs(jnp.stack([outputs["start_logits"], outputs["end_logits"]])).max())
    np.testing.assert_allclose(sums["loss"], per_example.sum(), rtol=0,
                               atol=tolerances.cross_entropy_sum(2 * BATCH, scale, LENGTH))
    assert sums["tokens"] == BATCH  # the loop's mean is per question (BERT §4.2)
    hits = ((np.argmax(start, -1) == batch["start_positions"]).sum()
            + (np.argmax(end, -1) == batch["end_positions"]).sum())
    np.testing.assert_array_equal(sums["correct"], hits / 2)  # half-integers: exact
    predicted = extractive_qa_predict_fn(model, params, batch, spec=_spec(arch))
    np.testing.assert_array_equal(predicted["start_logits"], outputs["start_logits"])
    np.testing.assert_array_equal(predicted["end_logits"], outputs["end_logits"])
    for key in ("context_offsets", "max_context", "example_index"):  # what scoring reads
        np.testing.assert_array_equal(predicted[key], batch[key])


def _task_config(task: str, arch: str, head: str, num_labels: int = 0):
    config = base_config()
    config.task.name = task
    config.model.update(arch=arch, head=head, num_labels=num_labels)
    return config


def test_a_model_without_the_tasks_head_is_an_error():
    conll = get_task("conll2003")
    objective = finetune_objective(_task_config("conll2003", "bert", "token_classification",
                                                conll.num_labels))
    assert objective.metrics == ("entity_f1",) and objective.pieces == ("<cls>", "<sep>")
    with pytest.raises(ConfigError, match=r"head 'question_answering', not "
                                          r"config.model.head='': set --config.model.head="):
        finetune_objective(_task_config("squad", "xlm", ""))
    with pytest.raises(ConfigError, match="head 'token_classification', not config.model.head="
                                          "'question_answering'"):
        finetune_objective(_task_config("conll2003", "bert", "question_answering",
                                        conll.num_labels))
    with pytest.raises(ConfigError, match=r"needs an encoder, one of \('bert', 'xlm'\), not "
                                          "config.model.arch='gpt2'"):
        finetune_objective(_task_config("squad", "gpt2", "question_answering"))
    with pytest.raises(ConfigError, match="num_labels=3: set --config.model.num_labels=9"):
        finetune_objective(_task_config("conll2003", "xlm", "token_classification", 3))
    with pytest.raises(ConfigError, match="head='question_answering' is a per-token head, but "
                                          "config.task.name='glue/sst2' is classification"):
        finetune_objective(_task_config("glue/sst2", "bert", "question_answering", 2))
    with pytest.raises(ValueError, match="config.model.head='qa': use '' .* or one of"):
        Bert(CFG, head="qa").init(jax.random.key(0), Bert(CFG).example_batch(4))
