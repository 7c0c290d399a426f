"""`textgen_jax.generate` on text: prompts framed as trained, streaming, errors a user can hit."""

from __future__ import annotations

import flax.linen as nn
import jax
import pytest

import textgen_jax
from textgen_jax.config import base_config
from textgen_jax.decoding import GenerationOptions, generate_ids
from textgen_jax.models import build_model


@pytest.fixture(scope="module")
def loaded(stdlib_tokenizer):
    """A tiny random GPT-2 over the stdlib tokenizer, as `textgen_jax.load` returns it."""
    config = base_config()
    config.model.update(arch="gpt2", num_layers=2, d_model=32, num_heads=4, d_ff=64, max_len=24,
                        dtype="float32")
    model = build_model(config.model, stdlib_tokenizer.vocab_size)
    params = nn.meta.unbox(model.init(jax.random.key(0), model.example_batch(8))["params"])
    params = jax.tree.map(lambda p: 8 * p, params)  # sharper than init: varied greedy tokens
    return textgen_jax.Loaded(model, params, stdlib_tokenizer, config)


def test_greedy_text_is_the_prompt_and_its_greedy_continuation(loaded):
    tok = loaded.tokenizer
    texts = textgen_jax.generate(loaded, ["Return the", "The module"], max_new_tokens=6,
                                 temperature=0)
    for prompt, text in zip(["Return the", "The module"], texts):
        ids = [tok.bos_id] + tok.encode(prompt)
        new = generate_ids(loaded.model, loaded.params, [ids],
                           GenerationOptions(max_new_tokens=6), eos_id=tok.eos_id,
                           pad_id=tok.pad_id)[0]
        assert text == tok.decode(ids[1:] + new)


def test_a_single_prompt_streams_its_text_piece_by_piece(loaded):
    pieces = []
    text, = textgen_jax.generate(loaded, "Return the", max_new_tokens=8, temperature=0,
                                 stream=pieces.append)
    assert len(pieces) > 2 and "".join(pieces) == text


@pytest.mark.parametrize("prompts,options,message", [
    ([""], {}, "prompt 0 .* is empty"),
    (["word " * 40], {}, "leaves no room in the model's context of 24"),
    (["Return"], dict(top_p=0), r"top_p=0 must lie in \(0, 1\]"),
    (["Return"], dict(num_beams=0), "num_beams=0 must be >= 1"),
    ([], {}, "no prompts given"),
])
def test_bad_input_is_a_clear_error(loaded, prompts, options, message):
    with pytest.raises(ValueError, match=message):
        textgen_jax.generate(loaded, prompts, **options)
