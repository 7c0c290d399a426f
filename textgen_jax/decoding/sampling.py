"""Sampling with temperature and top-k by full recomputation (KV-cache decoding comes later).

The whole token loop is one compiled `lax.fori_loop` over a fixed buffer, so a call compiles
once per (batch, buffer length) and never per token.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _filter_top_k(logits: jax.Array, top_k: int) -> jax.Array:
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


@functools.partial(jax.jit, static_argnames=("model", "num_new", "top_k", "greedy"))
def _generate(model, params, tokens, lengths, rng, temperature, *, num_new, top_k, greedy):
    """tokens [batch, buffer] right-padded prompts, lengths [batch] -> tokens with num_new more."""
    rows = jnp.arange(tokens.shape[0])

    def step(i, carry):
        tokens, rng = carry
        logits = model.apply({"params": params}, tokens)  # causal: padding after a row is unseen
        position = lengths + i
        next_logits = logits[rows, position - 1].astype(jnp.float32)
        if greedy:
            next_token = next_logits.argmax(-1)
        else:
            rng, key = jax.random.split(rng)
            next_logits = _filter_top_k(next_logits / temperature, top_k)
            next_token = jax.random.categorical(key, next_logits)
        return tokens.at[rows, position].set(next_token.astype(tokens.dtype)), rng

    tokens, _ = jax.lax.fori_loop(0, num_new, step, (tokens, rng))
    return tokens


def sample(model, params, tokenizer, prompts: list[str], max_new_tokens: int = 32,
           temperature: float = 0.8, top_k: int = 40, seed: int = 0) -> list[str]:
    """Continues each prompt; temperature 0 is greedy. Returns prompt + continuation."""
    if not prompts:
        raise ValueError("no prompts given; pass at least one --prompt.")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy).")
    max_len = model.cfg.max_len
    encoded = [[tokenizer.bos_id] + tokenizer.encode(p) for p in prompts]
    longest = max(len(ids) for ids in encoded)
    if longest >= max_len:
        raise ValueError(f"a prompt of {longest} tokens leaves no room in the model's context "
                         f"of {max_len}; shorten the prompt.")
    num_new = min(max_new_tokens, max_len - longest)
    buffer = np.full((len(prompts), longest + num_new), tokenizer.pad_id, np.int32)
    for row, ids in enumerate(encoded):
        buffer[row, :len(ids)] = ids
    lengths = np.array([len(ids) for ids in encoded], np.int32)
    out = _generate(model, params, jnp.asarray(buffer), jnp.asarray(lengths),
                    jax.random.key(seed), jnp.float32(max(temperature, 1e-6)),
                    num_new=num_new, top_k=top_k, greedy=temperature == 0)
    texts = []
    for row, ids in zip(np.asarray(out), encoded):
        new = row[len(ids):len(ids) + num_new].tolist()
        if tokenizer.eos_id in new:
            new = new[:new.index(tokenizer.eos_id)]
        texts.append(tokenizer.decode(ids[1:] + new))
    return texts
