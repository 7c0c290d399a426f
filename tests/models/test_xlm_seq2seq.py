"""XLM's translation model (XLM §5): masks, languages on both sides, a KV cache exact against
full recomputation, and greedy and beam decoding through the public decoding API.

A tiny model whose random weights are large enough for sharp, input-dependent attention (the
default 0.02 init would make every logit near zero and hide mistakes).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import tolerances
from textgen_jax import models
from textgen_jax.config import base_config
from textgen_jax.decoding.generate import GenerationOptions, generate_ids, generator_for
from textgen_jax.models.layers import stack_layers
from textgen_jax.models.xlm_seq2seq import XlmEncoderDecoder

VOCAB, PAD, EOS = 61, 0, 2
# Two computations of the same logits at other shapes (a wider batch, the scanned stacks, the
# KV cache against full recomputation) sum in other orders: float32, 5 layers (2 encoder, 3
# decoder) whose longest reduction is the MLP's 64, relative to the logits' scale (about 8
# here: 3e-4). At one shape, a change of masked tokens only is bitwise (a masked score is
# replaced by a constant whose softmax weight is exactly 0), and so is an unchanged row of a
# batch whose other rows change. A wrong mask, language or cache moves logits by > 1e-2.
LOGITS = tolerances.network(layers=5, width=64)
SOURCES = [[1, 17, 33, 8, 41, 22, 9, 2], [1, 44, 12, 2], [1, 50, 3, 3, 26, 2]]


def _sharp(params, seed: int = 0):
    """Every leaf random: embeddings N(0, 0.5), kernels N(0, 0.15), biases N(0, 0.1), norm
    scales 1 + N(0, 0.2)."""
    flat = traverse_util.flatten_dict(params, sep="/")
    rng = np.random.default_rng(seed)
    out = {}
    for path, value in flat.items():
        noise = rng.standard_normal(value.shape).astype(np.float32)
        if path.endswith("scale"):
            out[path] = 1.0 + 0.2 * noise
        elif path.endswith("bias"):
            out[path] = 0.1 * noise
        elif path.endswith("embedding"):
            out[path] = 0.5 * noise
        else:
            out[path] = 0.15 * noise
    return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in out.items()}, sep="/")


def _build(**decoder):
    config = base_config()
    config.model.update(arch="xlm", encoder_decoder=True, num_languages=2, num_layers=2,
                        num_decoder_layers=3, d_model=32, num_heads=4, d_ff=64, max_len=40,
                        activation="gelu", layer_norm_eps=1e-12, **decoder)
    model = models.build_model(config.model, VOCAB)
    assert isinstance(model, XlmEncoderDecoder)
    return model, _sharp(models.param_shapes(model))


@pytest.fixture(scope="module")
def built():
    """(model, params): config.model.arch='xlm' with encoder_decoder=True, built as the loop
    builds it, 2 languages, 2 encoder and 3 decoder layers."""
    return _build()


@pytest.fixture(scope="module")
def asymmetric():
    """As `built`, with the decoder's own heads and FFN width: 4 and 2 heads, FFN 64 and 48."""
    model, params = _build(num_decoder_heads=2, decoder_d_ff=48)
    assert params["encoder"]["block_0"]["attention"]["query"]["kernel"].shape == (32, 4, 8)
    assert params["decoder"]["block_2"]["cross_attention"]["query"]["kernel"].shape == (32, 2, 16)
    assert params["decoder"]["block_2"]["mlp"]["fc_in"]["kernel"].shape == (32, 48)
    return model, params


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, params, source, target, source_mask, target_mask, langs, decoder_langs):
    return model.apply({"params": params}, {
        "inputs": source, "decoder_inputs": target, "segment_ids": source_mask,
        "decoder_segment_ids": target_mask, "langs": langs, "decoder_langs": decoder_langs}
    )["logits"]


def _padded(rows, length):
    out = np.full((len(rows), length), PAD, np.int32)
    for i, ids in enumerate(rows):
        out[i, :len(ids)] = ids
    return out


def _full(model, params, sources, targets, source_lang=0, target_lang=1, width=16):
    """Uncached logits [rows, width, vocab] of right-padded sources and decoder inputs."""
    source, target = _padded(sources, width), _padded(targets, width)
    source_mask = (np.arange(width)[None] < np.array([len(s) for s in sources])[:, None])
    target_mask = (np.arange(width)[None] < np.array([len(t) for t in targets])[:, None])
    return np.asarray(_logits(model, params, source, target, source_mask.astype(np.int32),
                              target_mask.astype(np.int32), source_mask * source_lang,
                              target_mask * target_lang))


def test_stacks_have_the_plain_xlm_layout_plus_cross_attention(built):
    """Each stack's parameters are a plain XLM's (what init_from copies into both); the decoder
    blocks add cross-attention and its norm; the encoder has no output layer."""
    model, params = built
    plain = base_config()
    plain.model.update(arch="xlm", num_languages=2, num_layers=3, d_model=32, num_heads=4,
                       d_ff=64, max_len=40)
    xlm = {path: leaf.shape for path, leaf in traverse_util.flatten_dict(
        models.param_shapes(models.build_model(plain.model, VOCAB)), sep="/").items()}
    ours = {path: leaf.shape for path, leaf in traverse_util.flatten_dict(params, sep="/").items()}
    decoder = {path[len("decoder/"):]: shape for path, shape in ours.items()
               if path.startswith("decoder/")}
    encoder = {path[len("encoder/"):]: shape for path, shape in ours.items()
               if path.startswith("encoder/")}
    assert len(encoder) + len(decoder) == len(ours)
    cross = {path for path in decoder if "/cross_attention" in path}
    assert {path.split("/", 1)[1].split("/")[0] for path in cross} == {
        "cross_attention", "cross_attention_norm"}
    assert {path: decoder[path] for path in decoder if path not in cross} == xlm
    assert encoder == {path: shape for path, shape in xlm.items()
                       if path != "output_bias" and not path.startswith("block_2/")}


def test_masks_causality_and_languages(built):
    model, params = built
    targets = [[EOS, 1, 30, 31, 32], [EOS, 1, 7], [EOS, 1, 9, 10]]
    logits = _full(model, params, SOURCES, targets)
    assert np.abs(logits).max() > 1.0  # sharp enough for the comparisons below to mean much

    # Padding: other pad tokens, and a wider batch, change no real position.
    wider = _full(model, params, SOURCES, targets, width=24)
    source = _padded(SOURCES, 16)
    noisy = np.where(source == PAD, 13, source)
    mask = (source != PAD).astype(np.int32)
    target = _padded(targets, 16)
    target_mask = (target != PAD).astype(np.int32)
    again = np.asarray(_logits(model, params, noisy, target, mask, target_mask, mask * 0,
                               target_mask))
    for row, ids in enumerate(targets):
        np.testing.assert_allclose(wider[row, :len(ids)], logits[row, :len(ids)],
                                   atol=LOGITS * np.abs(logits).max(), rtol=0)
        np.testing.assert_array_equal(again[row, :len(ids)], logits[row, :len(ids)])

    # Causal decoder: changing a target token changes no earlier position, but later ones.
    changed = [list(t) for t in targets]
    changed[0][3] = 55
    other = _full(model, params, SOURCES, changed)
    np.testing.assert_array_equal(other[0, :3], logits[0, :3])
    assert np.abs(other[0, 3:5] - logits[0, 3:5]).max() > 1e-2
    # The decoder reads the source (cross-attention) at every position.
    swapped = _full(model, params, [SOURCES[1], SOURCES[0], SOURCES[2]], targets)
    np.testing.assert_array_equal(swapped[2], logits[2])
    assert np.abs(swapped[0, :1] - logits[0, :1]).max() > 1e-2

    # Language embeddings on both sides.
    for source_lang, target_lang in ((1, 1), (0, 0)):
        moved = _full(model, params, SOURCES, targets, source_lang, target_lang)
        assert np.abs(moved[:, :3] - logits[:, :3]).max() > 1e-2, (source_lang, target_lang)


def test_scanned_stacks_give_the_same_logits(built):
    """config.model.scan_layers: both stacks as one nn.scan, the same weights stacked."""
    model, params = built
    scanned = model.clone(cfg=dataclasses.replace(model.cfg, scan_layers=True))
    stacked = stack_layers(params)
    targets = [[EOS, 1, 30, 31, 32], [EOS, 1, 7], [EOS, 1, 9, 10]]
    expected = _full(model, params, SOURCES, targets)
    got = _full(scanned, stacked, SOURCES, targets)
    for row, ids in enumerate(targets):
        np.testing.assert_allclose(got[row, :len(ids)], expected[row, :len(ids)],
                                   atol=LOGITS * np.abs(expected).max(), rtol=0)


@pytest.mark.parametrize("shape", ["built", "asymmetric"])
def test_cached_logits_equal_full_recomputation_at_every_step(shape, request):
    """The generator's KV-cache logits at each step equal the uncached model's on the
    source and the decoder inputs so far (source language 0, target language 1)."""
    model, params = request.getfixturevalue(shape)
    generator = generator_for(model, decoder_start_id=EOS)
    width = 8
    source = _padded(SOURCES, width)
    batch = jax.tree.map(jnp.asarray, {
        "source": source, "source_segments": (source != PAD).astype(np.int32),
        "language": np.zeros(3, np.int32), "target_language": np.ones(3, np.int32)})
    steps = 10
    start = jax.jit(generator.start, static_argnums=2)
    step = jax.jit(generator.step)
    logits, cache = start(params, batch, 1 + steps)
    rng = np.random.default_rng(1)
    decoded = [[EOS] for _ in SOURCES]
    errors = []
    for i in range(steps):
        full = _full(model, params, SOURCES, decoded)
        expected = np.stack([full[row, len(ids) - 1] for row, ids in enumerate(decoded)])
        assert np.abs(expected).max() > 1.0
        errors.append(np.abs(np.asarray(logits) - expected).max() / np.abs(expected).max())
        tokens = rng.integers(3, VOCAB, size=3).astype(np.int32)
        for row, token in enumerate(tokens):
            decoded[row].append(int(token))
        logits, cache = step(params, cache, batch, jnp.asarray(tokens), i)
    assert max(errors) <= LOGITS, errors


def _log_prob(model, params, source, new, ended: bool):
    """Sum of log p(new tokens, then eos if `ended` | source) by the uncached model."""
    logits = _full(model, params, [source], [[EOS, *new]])[0]
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    following = [*new, EOS] if ended else new
    return float(sum(log_probs[t, token] for t, token in enumerate(following)))


def test_greedy_and_beam_search_through_generate_ids(built):
    model, params = built
    new_tokens = 8
    greedy = generate_ids(model, params, SOURCES, GenerationOptions(max_new_tokens=new_tokens),
                          eos_id=EOS, pad_id=PAD, language_id=0, target_language_id=1)
    # Greedy is argmax of the uncached model at every step, row by row.
    for source, ids in zip(SOURCES, greedy):
        decoded = [EOS]
        for _ in range(new_tokens):
            token = int(_full(model, params, [source], [decoded])[0, len(decoded) - 1].argmax())
            if token == EOS:
                break
            decoded.append(token)
        assert ids == decoded[1:]
    # The target language is read: another language decodes other tokens.
    other = generate_ids(model, params, SOURCES, GenerationOptions(max_new_tokens=new_tokens),
                         eos_id=EOS, pad_id=PAD, language_id=0, target_language_id=0)
    assert other != greedy

    beam = generate_ids(model, params, SOURCES,
                        GenerationOptions(max_new_tokens=new_tokens, num_beams=4,
                                          length_penalty=0.0, early_stopping="never"),
                        eos_id=EOS, pad_id=PAD, language_id=0, target_language_id=1)
    # Unnormalised beam search scores at least greedy's by the uncached model, and differs from
    # it somewhere (a wrong cache reorder or language would break this). Beam search scores
    # with the cached logits: each of a sequence's <= new_tokens + 1 log-probs may differ from
    # the uncached one by twice the logits' bound (the log-sum-exp and the token's logit), so
    # the gain, a difference of two such sums, by 4 * (new_tokens + 1) of it (about 0.01).
    # Where beam search keeps greedy's tokens the gain is exactly 0 (one program, one input).
    assert beam != greedy
    scale = np.abs(_full(model, params, SOURCES, [[EOS, *ids] for ids in beam])).max()
    slack = 4 * (new_tokens + 1) * LOGITS * scale
    gains = []
    for source, greedy_ids, beam_ids in zip(SOURCES, greedy, beam):
        gains.append(_log_prob(model, params, source, beam_ids, len(beam_ids) < new_tokens)
                     - _log_prob(model, params, source, greedy_ids,
                                 len(greedy_ids) < new_tokens))
    assert min(gains) > -slack, (gains, slack)


def test_options_it_cannot_take_are_named():
    config = base_config()
    config.model.update(arch="xlm", encoder_decoder=True, num_labels=3)
    with pytest.raises(ValueError, match="encoder_decoder=True .* num_labels=3"):
        models.build_model(config.model, VOCAB)
