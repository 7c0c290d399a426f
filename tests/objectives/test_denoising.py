"""BART denoising: the pipeline's rows on the real corpus, the loss, and CLI pretraining."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import flax.linen as nn
import jax
import numpy as np
import pytest
import tolerances
from conftest import assert_iterator_resumes

from textgen_jax.config import base_config
from textgen_jax.data.noising import NoiseConfig, add_noise
from textgen_jax.data.pipeline import bart_denoising_dataset, shuffle_seed, split_sentences
from textgen_jax.data.sources import example_text, open_source
from textgen_jax.models.bart import Bart
from textgen_jax.models.layers import TransformerConfig
from textgen_jax.objectives import pretraining_objective
from textgen_jax.objectives.denoising import denoising_loss_fn
from textgen_jax.training import steps

SEQ_LEN = 256  # about a fifth of the corpus documents fit: both padding and truncation occur


@pytest.fixture
def config(stdlib_data_dir):
    config = base_config()
    config.model.arch = "bart"
    config.data.data_dir = stdlib_data_dir
    config.data.seq_len, config.data.global_batch_size = SEQ_LEN, 8
    return config


def _document_sentences(config, tokenizer, document: int) -> list[np.ndarray]:
    """The document's tokenized sentences, cut to seq_len - 2 tokens in all."""
    text = example_text(open_source(config.data, "train")[document], config.data.text_key)
    ids = [tokenizer.encode(sentence) for sentence in split_sentences(text)]
    sentences, budget = [], SEQ_LEN - 2
    for sentence in ids:
        if sentence[:budget]:
            sentences.append(np.asarray(sentence[:budget], np.int32))
        budget -= len(sentence[:budget])
    return sentences


def _batches(config, tokenizer, count: int, **kwargs) -> list[dict[str, np.ndarray]]:
    iterator = iter(bart_denoising_dataset(config, tokenizer, "train", **kwargs))
    return [next(iterator) for _ in range(count)]


def test_noise_defaults_are_the_papers_best(config):
    assert config.noise.to_dict() == dataclasses.asdict(NoiseConfig())
    assert pretraining_objective(config).name == "denoising"


def test_rows_are_the_document_and_its_noised_version(config, stdlib_tokenizer):
    tok = stdlib_tokenizer
    rows = _batches(config, tok, 3, shuffle=False, repeat=False)
    truncated = 0
    for batch_number, batch in enumerate(rows):
        assert {k: v.shape for k, v in batch.items()} == {
            k: (8, SEQ_LEN) for k in ("inputs", "segment_ids", "decoder_inputs", "targets",
                                      "target_mask")}
        for row in range(8):
            index = batch_number * 8 + row  # unshuffled: row i is document i
            sentences = _document_sentences(config, tok, index)
            body = np.concatenate([np.zeros(0, np.int32), *sentences])
            target_length = int(batch["target_mask"][row].sum())
            truncated += target_length == SEQ_LEN
            # The target is [bos] + the tokenized document + [eos], then padding.
            np.testing.assert_array_equal(batch["targets"][row, :target_length],
                                          [tok.bos_id, *body, tok.eos_id])
            assert np.all(batch["targets"][row, target_length:] == tok.pad_id)
            # The decoder reads the target shifted right after eos (the decoder start token).
            np.testing.assert_array_equal(batch["decoder_inputs"][row],
                                          [tok.eos_id, *batch["targets"][row, :-1]])
            # The source is add_noise of the same sentences with the row's (seed, index) rng.
            source_length = int(batch["segment_ids"][row].sum())
            source = batch["inputs"][row, :source_length]
            assert np.all(batch["inputs"][row, source_length:] == tok.pad_id)
            expected = add_noise(sentences, np.random.default_rng([shuffle_seed(config), index]),
                                 tok, NoiseConfig())
            if expected.size <= SEQ_LEN:  # longer ones (0-length spans) are cut to seq_len
                np.testing.assert_array_equal(source, expected)
                # Infilling replaces exactly ceil(30%) of the tokens by masks; permutation only
                # reorders: the other tokens are a sub-multiset of the document's.
                kept = source[1:-1][source[1:-1] != tok.mask_id]
                assert kept.size == body.size - math.ceil(0.3 * body.size)
                assert not Counter(kept.tolist()) - Counter(body.tolist())
                assert (source == tok.mask_id).sum() >= 1
            assert source[0] == tok.bos_id and source[-1] == tok.eos_id
            assert not np.array_equal(source, batch["targets"][row, :target_length])
    assert 0 < truncated < 24  # both truncated documents and padded rows were checked


def test_rows_follow_config_noise_and_seed(config, stdlib_tokenizer):
    first = _batches(config, stdlib_tokenizer, 2, shuffle=False, repeat=False)
    again = _batches(config, stdlib_tokenizer, 2, shuffle=False, repeat=False)
    for want, got in zip(first, again):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    config.seed = 1  # other noise, same documents
    reseeded = _batches(config, stdlib_tokenizer, 2, shuffle=False, repeat=False)
    np.testing.assert_array_equal(reseeded[0]["targets"], first[0]["targets"])
    assert not np.array_equal(reseeded[0]["inputs"], first[0]["inputs"])
    config.noise.infill_rate, config.noise.permute_sentences = 0.0, False  # no noise
    clean = _batches(config, stdlib_tokenizer, 1, shuffle=False, repeat=False)[0]
    np.testing.assert_array_equal(clean["inputs"], clean["targets"])
    np.testing.assert_array_equal(clean["segment_ids"], clean["target_mask"])


def test_iterator_resumes_exactly(config, stdlib_tokenizer):
    assert_iterator_resumes(lambda: iter(bart_denoising_dataset(config, stdlib_tokenizer,
                                                                "train")), skip=1)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_is_cross_entropy_over_real_target_tokens(config, stdlib_tokenizer):
    # The first batch whose targets include padding, so that the mask is tested.
    batch = next(batch for batch in _batches(config, stdlib_tokenizer, 6, shuffle=False,
                                             repeat=False) if batch["target_mask"].min() == 0)
    model = Bart(TransformerConfig(vocab_size=stdlib_tokenizer.vocab_size, num_layers=1,
                                   d_model=32, num_heads=4, d_ff=64,
                                   max_len=SEQ_LEN, activation="gelu"),
                 num_decoder_layers=2)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0),
                                               model.example_batch(SEQ_LEN))["params"])

    @jax.jit
    def loss_and_logits(params, batch):
        return denoising_loss_fn(model, params, batch, None, True), model.apply(
            {"params": params}, {**batch, "decoder_segment_ids": batch["target_mask"]})["logits"]

    sums, logits = jax.device_get(loss_and_logits(params, batch))
    logits = logits.astype(np.float64)
    real = batch["target_mask"] == 1
    log_probs = _log_softmax(logits)[real, batch["targets"][real]]
    means = steps.means_from_sums(sums)
    assert sums["tokens"] == real.sum() < real.size  # padding is not counted
    # The loss function applies the model to the same batch in the same program (its logits
    # may be fused apart: 3 layers whose longest reduction is the MLP's 64, moving each
    # log-softmax by twice that), then its cross-entropy, in float32 against float64.
    tokens, scale = int(real.sum()), float(np.abs(logits).max())
    atol = (2 * tolerances.network(layers=3, width=64) * scale
            + tolerances.cross_entropy_sum(tokens, scale, logits.shape[-1]) / tokens)
    np.testing.assert_allclose(means["loss"], -log_probs.mean(), atol=atol, rtol=0)
    # Exact counts, divided once in float32: within one roundoff.
    np.testing.assert_allclose(means["accuracy"],
                               np.mean(logits[real].argmax(-1) == batch["targets"][real]),
                               rtol=tolerances.F32)


def test_cli_pretraining_lowers_the_eval_loss(tmp_path, tiny_run):
    from conftest import read_metrics

    workdir = tmp_path / "bart"
    result = tiny_run(workdir, "--config.train.num_steps=30", "--config.train.eval_every=30",
                      "--config.optim.lr=2e-3", config="configs/bart.py:tiny")
    evals = read_metrics(workdir, "eval")
    assert sorted(evals) == [0, 30]
    assert evals[30]["loss"] < evals[0]["loss"] - 0.3, (evals[0]["loss"], evals[30]["loss"])
    assert 0 < evals[30]["accuracy"] <= 1 and evals[30]["accuracy"] > evals[0]["accuracy"]
    assert "sample |" not in result.stderr + result.stdout  # configs/bart.py: sample.prompts = ()
    # The trained workdir generates through the CLI: greedy, and beam search.
    for flags in (("--temperature=0",), ("--num_beams=3", "--early_stopping=true")):
        generated = tiny_run(workdir, "--prompt=Return the value.", "--max_new_tokens=8",
                             *flags, command="generate")
        assert generated.stdout.strip(), flags
