"""KV-cache generation: exact against full recomputation and against transformers' `generate`,
compiled once per shape, every option doing what it says, clear errors on bad input.

The models are tiny transformers models with random weights (large enough for sharp, input-
dependent attention), imported through textgen_jax.convert.
"""

from __future__ import annotations

import functools
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from textgen_jax.convert import from_transformers
from textgen_jax.decoding.generate import (GenerationOptions, generate_ids, generator_for,
                                           with_transposed_kernels)
from textgen_jax.models.bart import Bart
from textgen_jax.models.gpt import GPT
from textgen_jax.models.gpt2 import GPT2
from textgen_jax.models.layers import DECODE_KERNELS, TransformerConfig
from textgen_jax.models.xlm import Xlm

import tolerances
from conftest import count_compiles


VOCAB, MAX_LEN, PAD = 97, 40, 0
# Prompts of different lengths: one batch is left-padded to the longest.
PROMPTS = [[5, 17, 33, 8, 61, 22, 9], [44, 12], [70, 3, 3, 91, 26]]
# The cached step and the full recomputation compute the same logits at other shapes, so their
# sums run in other orders: float32, at most 4 layers (BART's encoder and decoder) whose longest
# reduction is the MLP's 128, relative to the logits' scale. A wrong cache slot, position or
# mask moves logits by a fraction of their scale.
LOGITS = tolerances.network(layers=4, width=128)


def _randomise(hf_model) -> None:
    """Every tensor random (HF's zero biases and unit LayerNorms would hide mapping mistakes),
    with weights large enough for sharp attention."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in hf_model.named_parameters():
            if ("ln" in name or "layer_norm" in name or "layernorm" in name) and \
                    name.endswith("weight"):
                tensor.copy_(1.0 + 0.2 * torch.randn_like(tensor))
            elif name.endswith("bias"):
                tensor.copy_(0.1 * torch.randn_like(tensor))
            elif "emb" in name or "wte" in name or "wpe" in name or "shared" in name:
                tensor.copy_(0.5 * torch.randn_like(tensor))
            else:
                tensor.copy_(0.15 * torch.randn_like(tensor))


def _cfg(**overrides) -> TransformerConfig:
    values = dict(vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=4, d_ff=128,
                  max_len=MAX_LEN)
    values.update(overrides)
    return TransformerConfig(**values)


def _build(arch: str):
    """(hf_model, our model, our params) of one tiny architecture with the same weights."""
    common = dict(bos_token_id=1, eos_token_id=2, pad_token_id=PAD)
    if arch == "gpt2":
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=VOCAB, n_positions=MAX_LEN, n_embd=32, n_layer=2, n_head=4,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common))
        _randomise(hf)
        return hf.eval(), GPT2(_cfg()), from_transformers(hf).params
    if arch == "gpt":
        hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(
            vocab_size=VOCAB, n_positions=MAX_LEN, n_embd=32, n_layer=2, n_head=4, afn="gelu",
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common))
        _randomise(hf)
        return hf.eval(), GPT(_cfg()), from_transformers(hf).params
    if arch == "xlm":
        hf = transformers.XLMWithLMHeadModel(transformers.XLMConfig(
            vocab_size=VOCAB, emb_dim=32, n_layers=2, n_heads=4, max_position_embeddings=MAX_LEN,
            n_langs=1, causal=True, gelu_activation=True, dropout=0.0, attention_dropout=0.0,
            layer_norm_eps=1e-12, asm=False, **common))
        _randomise(hf)
        model = Xlm(_cfg(layer_norm_eps=1e-12, activation="gelu"), causal=True)
        return hf.eval(), model, from_transformers(hf).params
    # "bart_asymmetric": a decoder of its own depth, heads and FFN width (3 + 1 layers, 4 and 2
    # heads, FFN 48 and 40), as distilled summarisers have.
    shape = ((3, 1, 4, 2, 48, 40) if arch == "bart_asymmetric" else (2, 2, 4, 4, 64, 64))
    hf = transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=shape[0], decoder_layers=shape[1],
        encoder_attention_heads=shape[2], decoder_attention_heads=shape[3],
        encoder_ffn_dim=shape[4], decoder_ffn_dim=shape[5], max_position_embeddings=MAX_LEN,
        activation_function="gelu", dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, decoder_start_token_id=2, **common))
    _randomise(hf)
    with torch.no_grad():
        hf.final_logits_bias.copy_(0.5 * torch.randn_like(hf.final_logits_bias))
    model = Bart(_cfg(num_layers=shape[0], num_heads=shape[2], d_ff=shape[4],
                      activation="gelu"),
                 num_decoder_layers=shape[1], num_decoder_heads=shape[3], decoder_d_ff=shape[5])
    return hf.eval(), model, from_transformers(hf).params


@pytest.fixture(scope="module", params=["gpt2", "gpt", "xlm", "bart"])
def arch(request):
    return request.param, *_build(request.param)


_BUILT: dict = {}


def _built(arch: str):
    if arch not in _BUILT:
        _BUILT[arch] = _build(arch)
    return _BUILT[arch]


# ---- the cache is exact ------------------------------------------------------------------


def _full_logits(model, params, prompts, generated):
    """Logits at the last token of each row's prompt + generated[row], recomputed without a
    cache and without left padding: decoder-only rows (causal: later tokens change nothing)
    and BART's targets are right-padded to a fixed length, BART's sources right-padded with
    their mask, as in training."""
    if isinstance(model, Bart):
        source = np.concatenate([_right_padded(ids, 8) for ids in prompts])
        targets = np.concatenate([_right_padded([2] + list(new)) for new in generated])
        logits = _uncached(model, params, {"inputs": source, "decoder_inputs": targets,
                                           "segment_ids": (source != PAD).astype(np.int32)})
        return np.stack([logits[row, len(new)] for row, new in enumerate(generated)])
    rows = []
    for ids, new in zip(prompts, generated):
        tokens = list(ids) + list(new)
        rows.append(_uncached(model, params, {"inputs": _right_padded(tokens)})[
            0, len(tokens) - 1])
    return np.stack(rows)


def _right_padded(tokens, length=32):
    return np.asarray([list(tokens) + [PAD] * (length - len(tokens))], np.int32)


@functools.partial(jax.jit, static_argnums=0)
def _uncached(model, params, batch):
    return model.apply({"params": params}, batch)["logits"]


@pytest.mark.parametrize("transpose_kernels", [False, True])
@pytest.mark.parametrize("name", ["gpt2", "gpt", "xlm", "bart"])
def test_cached_logits_equal_full_recomputation_at_every_step(name, transpose_kernels):
    _, model, params = _built(name)
    generator = generator_for(model, decoder_start_id=2)
    width = 8
    if isinstance(model, Bart):  # the source right-padded, the decoder cached
        source = np.full((3, width), PAD, np.int32)
        for row, ids in enumerate(PROMPTS):
            source[row, :len(ids)] = ids
        batch = {"source": source, "source_segments": (source != PAD).astype(np.int32)}
    else:  # the prompts left-padded, each row with its own positions
        prompt = np.full((3, width), PAD, np.int32)
        for row, ids in enumerate(PROMPTS):
            prompt[row, width - len(ids):] = ids
        batch = {"prompt": prompt, "lengths": np.array([len(p) for p in PROMPTS], np.int32)}
        if isinstance(model, Xlm):
            batch["language"] = np.zeros(3, np.int32)
    batch = jax.tree.map(jnp.asarray, batch)
    steps = 10
    start = jax.jit(generator.start, static_argnums=2)
    step = jax.jit(generator.step)
    logits, cache = start(params, batch, width + steps)
    if transpose_kernels:  # the steps read transposed copies of the kernels they use
        cache = jax.jit(functools.partial(with_transposed_kernels, generator))(
            params, cache, batch)
        assert jax.tree.leaves(cache[DECODE_KERNELS])
    rng = np.random.default_rng(1)
    generated = [[] for _ in PROMPTS]
    errors = []
    for i in range(steps):
        expected = _full_logits(model, params, PROMPTS, generated)
        assert np.abs(expected).max() > 1.0  # not a comparison of near-zero numbers
        errors.append(np.abs(np.asarray(logits) - expected).max() / np.abs(expected).max())
        tokens = rng.integers(3, VOCAB, size=3).astype(np.int32)
        for row, token in enumerate(tokens):
            generated[row].append(int(token))
        logits, cache = step(params, cache, batch, jnp.asarray(tokens), i)
    print(f"{name}: max |cached - full logits| / logits' scale over {steps} steps: "
          f"{max(errors):.2e}")
    assert max(errors) <= LOGITS, errors


# ---- equal to transformers' generate -------------------------------------------------------


def _hf_generate(hf_model, prompt, eos_id, **options):
    """transformers' new tokens for one prompt (no padding), cut before EOS."""
    ids = torch.tensor([prompt])
    if isinstance(hf_model, transformers.XLMWithLMHeadModel):
        # XLM's `generate` appends a <mask> to the input and predicts there (an MLM-style
        # decoder), which is not causal-LM decoding: its greedy loop is run on its logits.
        assert not options
        new = []
        with torch.no_grad():
            while len(new) < 12 and eos_id not in new:
                tokens = torch.tensor([list(prompt) + new])  # a generated pad id is a token
                logits = hf_model(tokens, attention_mask=torch.ones_like(tokens)).logits
                new.append(int(logits[0, -1].argmax()))
        return new[:new.index(eos_id)] if eos_id in new else new
    kwargs = dict(max_new_tokens=12, do_sample=False, eos_token_id=eos_id, pad_token_id=PAD,
                  attention_mask=torch.ones_like(ids))
    if hf_model.config.is_encoder_decoder:
        kwargs.update(decoder_start_token_id=2, forced_bos_token_id=None,
                      forced_eos_token_id=None, no_repeat_ngram_size=0, min_length=0)
    kwargs.update(options)
    with torch.no_grad():
        out = hf_model.generate(ids, **kwargs)[0].tolist()
    new = out[1:] if hf_model.config.is_encoder_decoder else out[len(prompt):]
    return new[:new.index(eos_id)] if eos_id in new else new


def _eos_hit_mid_sequence(hf_model) -> int:
    """A token transformers' greedy output first reaches at its 4th step or later for some
    prompt: as EOS it makes that row stop early (an absent token is the EOS)."""
    for prompt in PROMPTS:
        out = _hf_generate(hf_model, prompt, eos_id=VOCAB + 1)
        for i, token in enumerate(out):
            if i >= 3 and token not in out[:i]:
                return token
    raise AssertionError("greedy decoding repeats one token for every prompt")


@pytest.mark.parametrize("name", ["gpt2", "gpt", "xlm", "bart", "bart_asymmetric"])
def test_greedy_equals_transformers_generate(name):
    hf_model, model, params = _built(name)
    eos_id = _eos_hit_mid_sequence(hf_model)
    expected = [_hf_generate(hf_model, prompt, eos_id) for prompt in PROMPTS]
    assert any(3 <= len(new) < 12 for new in expected)  # a row stopped early
    ours = generate_ids(model, params, PROMPTS, GenerationOptions(max_new_tokens=12),
                        eos_id=eos_id, pad_id=PAD, decoder_start_id=2)
    assert ours == expected


@pytest.mark.parametrize("name,length_penalty,early_stopping", [
    ("gpt2", 1.0, False), ("bart", 2.0, True), ("bart", 0.5, "never")])
def test_beam_search_equals_transformers_generate(name, length_penalty, early_stopping):
    hf_model, model, params = _built(name)
    eos_id = _eos_hit_mid_sequence(hf_model)
    options = dict(num_beams=3, length_penalty=length_penalty, early_stopping=early_stopping)
    expected = [_hf_generate(hf_model, prompt, eos_id, **options) for prompt in PROMPTS]
    ours = generate_ids(model, params, PROMPTS,
                        GenerationOptions(max_new_tokens=12, **options),
                        eos_id=eos_id, pad_id=PAD, decoder_start_id=2)
    assert ours == expected
    greedy = [_hf_generate(hf_model, prompt, eos_id) for prompt in PROMPTS]
    assert expected != greedy  # the case tells beam search from greedy


def test_logits_processors_equal_transformers_generate():
    """Repetition penalty, no-repeat n-grams and min new tokens, as transformers applies them."""
    hf_model, model, params = _built("gpt2")
    eos_id = _eos_hit_mid_sequence(hf_model)
    options = dict(repetition_penalty=1.8, no_repeat_ngram_size=2, min_new_tokens=5)
    expected = [_hf_generate(hf_model, prompt, eos_id, **options) for prompt in PROMPTS]
    ours = generate_ids(model, params, PROMPTS, GenerationOptions(max_new_tokens=12, **options),
                        eos_id=eos_id, pad_id=PAD)
    assert ours == expected
    assert expected != [_hf_generate(hf_model, prompt, eos_id) for prompt in PROMPTS]
    for new in ours:
        assert len(new) >= 5
        bigrams = list(zip(new, new[1:]))
        assert len(bigrams) == len(set(bigrams))


@pytest.mark.parametrize("num_beams", [1, 2])
def test_repetition_penalty_ignores_left_padding(num_beams):
    """The pad token is the short prompt's own first pick: were the left padding counted as
    seen tokens, the penalty would push it down in the batch but not when the prompt is alone
    (8 tokens, a whole prompt width: no padding)."""
    _, model, params = _built("gpt2")
    short = PROMPTS[0] + [40]
    long = PROMPTS[2] + short
    options = GenerationOptions(max_new_tokens=6, repetition_penalty=1e3, num_beams=num_beams)
    pick = lambda prompts, pad: generate_ids(  # noqa: E731
        model, params, prompts, options, eos_id=VOCAB + 1, pad_id=pad)
    pad = pick([short], PAD)[0][0]
    assert pad not in short
    assert pick([long, short], pad) == [pick([long], pad)[0], pick([short], pad)[0]]
    # The witness: the same token as a real prompt token is penalised away.
    assert pick([[pad] + short], pad)[0][0] != pad


def test_sampling_compiles_once_per_shape_and_is_reproducible_from_the_seed():
    _, model, params = _built("gpt2")
    sample = lambda prompts, **options: generate_ids(  # noqa: E731
        model, params, prompts, GenerationOptions(**{"max_new_tokens": 10, "temperature": 1.0,
                                                     **options}), eos_id=VOCAB + 1, pad_id=PAD)
    first = sample(PROMPTS, seed=0)
    assert sample(PROMPTS, seed=0) == first
    assert sample(PROMPTS, seed=1) != first
    # Other prompts of the same padded width, another seed and temperature: nothing compiles.
    others = [[9, 9, 9], [1, 2, 3, 4, 5, 6], [7]]
    assert count_compiles(lambda: sample(others, seed=5, temperature=0.7)) == 0
    # The counter does see a compilation: a new shape (four rows) compiles.
    assert count_compiles(lambda: sample(others + [[4]], seed=5)) > 0


def test_concurrent_streamed_calls_each_receive_only_their_own_tokens():
    _, model, params = _built("gpt2")
    prompts = [PROMPTS[0], PROMPTS[2]]  # one row each, same padded width: one compiled loop
    options = GenerationOptions(max_new_tokens=12)
    start = threading.Barrier(len(prompts))
    streamed = [[] for _ in prompts]
    results = [None] * len(prompts)

    def call(index: int) -> None:
        def sink(tokens) -> None:
            streamed[index].append(int(tokens[0]))
            time.sleep(0.01)  # keep both calls in flight together
        start.wait()
        results[index] = generate_ids(model, params, [prompts[index]], options,
                                      eos_id=VOCAB + 1, pad_id=PAD, stream=sink)[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results[0] != results[1]  # otherwise a mixed-up stream would go unnoticed
    assert streamed == results


@pytest.mark.parametrize("filters", [dict(top_k=1), dict(top_p=1e-3)])
def test_top_k_1_and_a_tiny_top_p_leave_only_the_greedy_token(filters):
    _, model, params = _built("gpt2")
    greedy = generate_ids(model, params, PROMPTS, GenerationOptions(max_new_tokens=10),
                          eos_id=VOCAB + 1, pad_id=PAD)
    hot = GenerationOptions(max_new_tokens=10, temperature=5.0, **filters)
    assert generate_ids(model, params, PROMPTS, hot, eos_id=VOCAB + 1, pad_id=PAD) == greedy


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("prompts,options,message", [
    ([[5], []], {}, "prompt 1 is empty"),
    ([list(range(3, 3 + MAX_LEN))], {}, f"a prompt of {MAX_LEN} tokens leaves no room"),
    ([[5]], dict(top_p=0.0), r"top_p=0.0 must lie in \(0, 1\]"),
    ([[5]], dict(top_p=1.5), r"top_p=1.5 must lie in \(0, 1\]"),
    ([[5]], dict(num_beams=0), "num_beams=0 must be >= 1"),
    ([], {}, "no prompts given"),
])
def test_bad_input_is_a_clear_error(prompts, options, message):
    _, model, params = _built("gpt2")
    with pytest.raises(ValueError, match=message):
        generate_ids(model, params, prompts, GenerationOptions(**options), eos_id=2, pad_id=PAD)


def test_an_encoder_only_model_cannot_generate():
    from textgen_jax.models.bert import Bert
    for encoder in (Bert(_cfg()), Xlm(_cfg(), causal=False)):
        with pytest.raises(ValueError, match="encoder with no next-token head.*fill-mask"):
            generate_ids(encoder, {}, [[5]], GenerationOptions(), eos_id=2, pad_id=PAD)
