"""Generation with a KV cache for every generator: GPT, GPT-2, causal XLM and BART.

The prompt (BART: the encoder's output) is written into the cache by one call, then each new
token costs one call on one position. Greedy, sampling (temperature, top-k, top-p) and beam
search share the logits processors of Hugging Face's `generate`, in its order: repetition
penalty, no-repeat n-grams, min new tokens, then temperature, top-k, top-p. The token loop is
one compiled `lax.while_loop`; a call compiles once per (model, batch, prompt width, options)
and never per token. Prompts of different lengths are left-padded, each row keeping its own
positions, and a row stops at its EOS (the loop stops when every row has).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from textgen_jax import ops
from textgen_jax.models.layers import DECODE_KERNELS, transposed_kernels, unscanned
from textgen_jax.models.spec import ENCODER_DECODER, can_generate

NEG_INF = -jnp.inf
# Prompt widths round up to a multiple of this, so prompts of nearby lengths share one compile
# (left padding with per-row positions makes the width free of meaning).
PROMPT_WIDTH_MULTIPLE = 8


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """How to pick the new tokens; the defaults are greedy decoding of up to 32 tokens.

    temperature 0 is greedy; above 0 samples, after top_k (0 = off) and top_p (1 = off).
    num_beams > 1 is beam search (deterministic: the sampling options do not apply), scored
    as sum of log-probabilities / generated_length ** length_penalty; early_stopping is True
    (stop a row at num_beams finished hypotheses), False (stop when no running beam can still
    win, judged at the current length) or "never" (judged at the longest possible length).
    """

    max_new_tokens: int = 32
    min_new_tokens: int = 0
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    seed: int = 0

    def validate(self) -> None:
        """Raises ValueError naming the first bad option and its fix."""
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1.")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens={self.min_new_tokens} must lie in [0, "
                             f"max_new_tokens={self.max_new_tokens}].")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy).")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 = no top-k filter).")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must lie in (0, 1] (1 = no nucleus filter).")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty={self.repetition_penalty} must be > 0 "
                             "(1 = off, above 1 discourages repeats).")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"no_repeat_ngram_size={self.no_repeat_ngram_size} must be >= 0 "
                             "(0 = off).")
        if self.num_beams < 1:
            raise ValueError(f"num_beams={self.num_beams} must be >= 1 (1 = no beam search).")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping={self.early_stopping!r} must be True, False or "
                             "'never'.")


class _Plan(NamedTuple):
    """The static (compile-time) part of the options."""

    num_new: int
    greedy: bool
    top_k: int
    use_top_p: bool
    repetition_penalty: float
    no_repeat_ngram_size: int
    min_new_tokens: int
    num_beams: int
    length_penalty: float
    early_stopping: bool | str
    eos_id: int
    pad_id: int
    stream: bool
    transposed_kernels: bool  # steps read DECODE_KERNELS (ops.prefers_transposed_kernels)


# ---- the models behind one interface -----------------------------------------------------


def _empty_cache(init: Callable[[], Any]) -> Any:
    """Zeros shaped like the 'cache' collection that `init` (a decode=True init) creates."""
    shapes = jax.eval_shape(init)["cache"]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _language_ids(model: nn.Module, key: str, batch: Mapping[str, jax.Array],
                  tokens: jax.Array) -> dict[str, jax.Array]:
    """{key: batch['language'] of each row, per token of tokens [batch, length]} for a model
    that reads language ids (XLM); {} otherwise."""
    if not model.uses_languages:
        return {}
    return {key: jnp.broadcast_to(batch["language"][:, None], tokens.shape)}


@dataclasses.dataclass(frozen=True)
class _CausalLM:
    """GPT, GPT-2 and causal XLM. Batch: 'prompt' [batch, width] left-padded, 'lengths' [batch]
    and 'language' [batch] (read by models with language ids). Row r's token at slot s has
    position s - padding_r.

    The decoding state passed between calls holds the model's 'cache' collection (and
    DECODE_KERNELS when `with_transposed_kernels` added them)."""

    model: nn.Module

    def batch(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, pad_id: int,
              language_id: int, target_language_id: int) -> tuple[dict[str, np.ndarray], int]:
        """(the batch of `prompts`, how many new tokens fit after the longest)."""
        del target_language_id  # the continuation is in the prompt's language
        max_len, longest = self.model.cfg.max_len, max(len(ids) for ids in prompts)
        if longest >= max_len:
            raise ValueError(f"a prompt of {longest} tokens leaves no room in the model's "
                             f"context of {max_len} (config.model.max_len); shorten the prompt "
                             f"to at most {max_len - 1} tokens.")
        width = _round_up(longest, PROMPT_WIDTH_MULTIPLE)
        prompt = np.full((len(prompts), width), pad_id, np.int32)
        for row, ids in enumerate(prompts):
            prompt[row, width - len(ids):] = ids
        return {"prompt": prompt, "lengths": np.array([len(ids) for ids in prompts], np.int32),
                "language": np.full((len(prompts),), language_id, np.int32)
                }, min(max_new_tokens, max_len - longest)

    def _apply(self, params, state, batch, tokens, segments, positions):
        inputs = {"inputs": tokens, "segment_ids": segments, "positions": positions,
                  **_language_ids(self.model, "langs", batch, tokens)}
        outputs, updated = self.model.apply({"params": params, **state}, inputs, decode=True,
                                            mutable=["cache"])
        return outputs["logits"][:, -1].astype(jnp.float32), {**state, **updated}

    def history(self, batch):
        prompt = batch["prompt"]
        return prompt, prompt.shape[1] - batch["lengths"]

    def start(self, params, batch, cache_len):
        prompt, first = self.history(batch)
        rows, width = prompt.shape
        cache = _empty_cache(lambda: self.model.init(
            jax.random.key(0), {"inputs": jnp.ones((rows, cache_len), jnp.int32)}, decode=True))
        slots = jnp.arange(width)[None]
        segments = (slots >= first[:, None]).astype(jnp.int32)
        positions = jnp.maximum(slots - first[:, None], 0)
        return self._apply(params, {"cache": cache}, batch, prompt, segments, positions)

    def step(self, params, state, batch, tokens, i):
        position = (batch["lengths"] + i)[:, None]
        return self._apply(params, state, batch, tokens[:, None], jnp.ones_like(position),
                           position)


@dataclasses.dataclass(frozen=True)
class _EncoderDecoder:
    """BART and XLM's translation model. Batch: 'source' [batch, source_len] right-padded,
    'source_segments' [batch, source_len] (1 real, 0 padding), 'language' and
    'target_language' [batch] (the source's and the output's language ids, read by models with
    language ids); the decoder starts from `decoder_start_id` and the encoder runs once."""

    model: nn.Module
    decoder_start_id: int

    def batch(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, pad_id: int,
              language_id: int, target_language_id: int) -> tuple[dict[str, np.ndarray], int]:
        """(the batch of `prompts` as sources, how many new tokens the decoder has room for)."""
        max_len, longest = self.model.cfg.max_len, max(len(ids) for ids in prompts)
        if longest > max_len:
            raise ValueError(f"a source of {longest} tokens is longer than the model's context "
                             f"of {max_len} (config.model.max_len); shorten the prompt.")
        width = min(_round_up(longest, PROMPT_WIDTH_MULTIPLE), max_len)
        rows = len(prompts)
        source = np.full((rows, width), pad_id, np.int32)
        for row, ids in enumerate(prompts):
            source[row, :len(ids)] = ids
        lengths = np.array([len(ids) for ids in prompts])
        return {"source": source,
                "source_segments": (np.arange(width)[None] < lengths[:, None]).astype(np.int32),
                "language": np.full((rows,), language_id, np.int32),
                "target_language": np.full((rows,), target_language_id, np.int32),
                }, min(max_new_tokens, max_len - 1)

    def history(self, batch):
        rows = batch["source"].shape[0]
        return (jnp.full((rows, 1), self.decoder_start_id, jnp.int32),
                jnp.zeros((rows,), jnp.int32))

    def start(self, params, batch, cache_len):
        source = {"inputs": batch["source"], "segment_ids": batch["source_segments"],
                  **_language_ids(self.model, "langs", batch, batch["source"])}
        encoded = self.model.apply({"params": params}, source, method="encode")
        rows = batch["source"].shape[0]
        cache = _empty_cache(lambda: self.model.init(
            jax.random.key(0),
            {**source, "decoder_inputs": jnp.ones((rows, cache_len), jnp.int32)}, decode=True))
        return self._decode(params, {"cache": cache}, batch, self.history(batch)[0], encoded)

    def step(self, params, state, batch, tokens, i):
        del i  # the cache knows the next position
        return self._decode(params, state, batch, tokens[:, None], None)

    def _decode(self, params, state, batch, tokens, encoded):
        # Only a model with language ids reads 'target_language' (as `_language_ids` does).
        target_language = ({"language": batch["target_language"]}
                           if self.model.uses_languages else {})
        inputs = {"decoder_inputs": tokens, "segment_ids": batch["source_segments"],
                  **_language_ids(self.model, "decoder_langs", target_language, tokens)}
        outputs, updated = self.model.apply({"params": params, **state}, inputs, encoded,
                                            decode=True, method="decode", mutable=["cache"])
        return outputs["logits"][:, -1].astype(jnp.float32), {**state, **updated}


def generator_for(model: nn.Module, decoder_start_id: int = 0):
    """The generation interface of a model; ValueError for a model that cannot generate."""
    if not can_generate(model):
        raise ValueError(
            f"{type(model).__name__} (causal={getattr(model, 'causal', False)}) is an encoder "
            "with no next-token head, so it cannot generate; use fill-mask with it, or a gpt, "
            "gpt2, causal xlm (--config.model.causal=True) or bart checkpoint to generate.")
    if model.kind == ENCODER_DECODER:
        return _EncoderDecoder(model, decoder_start_id)
    return _CausalLM(model)


def with_transposed_kernels(generator, params, state, batch) -> dict:
    """The decoding `state` (after `start`) with DECODE_KERNELS added: transposed copies of the
    kernels that `generator.step` reads, made once from params before the token loop."""
    rows = jax.tree.leaves(batch)[0].shape[0]
    step = functools.partial(generator.step, params, state, batch,
                             jnp.zeros((rows,), jnp.int32), 0)
    return {**state, DECODE_KERNELS: transposed_kernels(params, step)}


# ---- logits processors ---------------------------------------------------------------------


def _process(scores, history, first, length, i, plan: _Plan):
    """HF's logits processors on float32 scores [rows, vocab]: history [rows, slots] holds the
    tokens so far in slots [first, length) (the prompt, BART's decoder start, new tokens)."""
    rows, vocab = scores.shape
    row_ids = jnp.arange(rows)[:, None]
    slots = jnp.arange(history.shape[1])[None]
    if plan.repetition_penalty != 1.0:  # CTRL (Keskar et al. 2019 §4.1), as in HF
        seen = (slots >= first[:, None]) & (slots < length)
        present = jnp.zeros((rows, vocab), bool).at[row_ids, history].max(seen)
        penalized = jnp.where(scores < 0, scores * plan.repetition_penalty,
                              scores / plan.repetition_penalty)
        scores = jnp.where(present, penalized, scores)
    n = plan.no_repeat_ngram_size
    if n > 0 and n <= history.shape[1]:
        # Ban every token that would complete an n-gram already present in the history.
        starts = history.shape[1] - n + 1
        suffix = jax.lax.dynamic_slice_in_dim(history, jnp.maximum(length - (n - 1), 0), n - 1,
                                              axis=1)
        match = ((jnp.arange(starts)[None] >= first[:, None])
                 & (jnp.arange(starts)[None] + n <= length))
        for k in range(n - 1):
            match &= history[:, k:k + starts] == suffix[:, k:k + 1]
        banned = jnp.zeros((rows, vocab), bool).at[row_ids, history[:, n - 1:]].max(match)
        scores = jnp.where(banned, NEG_INF, scores)
    if plan.min_new_tokens > 0 and plan.eos_id >= 0:  # a tokenizer without eos: no stop to hold
        scores = scores.at[:, plan.eos_id].set(
            jnp.where(i < plan.min_new_tokens, NEG_INF, scores[:, plan.eos_id]))
    return scores


def _warp(scores, temperature, top_p, plan: _Plan):
    """Temperature, top-k, then top-p (nucleus: the smallest set of most likely tokens whose
    probability reaches top_p; Holtzman et al. 2019 §3.1) on float32 scores [rows, vocab]."""
    scores = scores / temperature
    if 0 < plan.top_k < scores.shape[-1]:
        kth = jax.lax.top_k(scores, plan.top_k)[0][:, -1:]
        scores = jnp.where(scores < kth, NEG_INF, scores)
    if plan.use_top_p:
        ordered = -jnp.sort(-scores, axis=-1)
        probs = jax.nn.softmax(ordered, axis=-1)
        kept = jnp.cumsum(probs, axis=-1) - probs < top_p  # the mass before a token
        threshold = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
        scores = jnp.where(scores < threshold, NEG_INF, scores)
    return scores


# ---- the compiled token loops --------------------------------------------------------------

# The `stream` of each generate call in flight, by the call's own id: a loop compiled once
# serves every call, so its callback finds the caller's sink by the id the call passes in.
_streams: dict[int, Callable[[np.ndarray], None]] = {}
_stream_ids = itertools.count()


def _emit(call: np.ndarray, tokens: np.ndarray) -> None:
    _streams[int(call)](np.asarray(tokens))


def _write(history, column, tokens):
    """history [..., slots] with tokens [...] written at slot `column`."""
    return jax.lax.dynamic_update_index_in_dim(history, tokens[..., None].astype(history.dtype),
                                               column, axis=history.ndim - 1)


@functools.partial(jax.jit, static_argnames=("generator", "plan"))
def _sample_loop(generator, params, batch, rng, temperature, top_p, call, *, plan: _Plan):
    """Greedy or sampled tokens [batch, num_new] (pad after a row's EOS); with plan.stream,
    each step's tokens go to the stream registered under `call` (a uint32 scalar)."""
    prompt, first = generator.history(batch)
    width = prompt.shape[1]
    logits, cache = generator.start(params, batch, width + plan.num_new)
    if plan.transposed_kernels:
        cache = with_transposed_kernels(generator, params, cache, batch)
    rows = prompt.shape[0]
    history = jnp.concatenate(
        [prompt, jnp.full((rows, plan.num_new), plan.pad_id, jnp.int32)], axis=1)

    def choose(state):
        i, history, logits, cache, finished, rng = state
        scores = _process(logits, history, first, width + i, i, plan)
        if plan.greedy:
            token = jnp.argmax(scores, axis=-1)
        else:
            rng, key = jax.random.split(rng)
            token = jax.random.categorical(key, _warp(scores, temperature, top_p, plan))
        token = jnp.where(finished, plan.pad_id, token).astype(jnp.int32)
        if plan.stream:
            jax.debug.callback(_emit, call, token, ordered=True)
        return i, _write(history, width + i, token), logits, cache, finished | (
            token == plan.eos_id), rng

    def advance(state):
        i, history, _, cache, finished, rng = state
        logits, cache = generator.step(params, cache, batch, history[:, width + i], i)
        return i, history, logits, cache, finished, rng

    def body(state):
        state = advance(choose(state))
        return (state[0] + 1,) + state[1:]

    # Every token but the last is followed by a model step; the last needs none.
    state = (jnp.zeros((), jnp.int32), history, logits, cache, jnp.zeros((rows,), bool), rng)
    state = jax.lax.while_loop(lambda s: (s[0] < plan.num_new - 1) & ~s[4].all(), body, state)
    return choose(state)[1][:, width:]


def _per_beam(path, leaf) -> bool:
    """Whether a decoding state leaf has one row per beam. Cross-attention caches (the
    projected source) keep one row per prompt, which its beams share (MultiHeadAttention groups
    their queries); the transposed kernels are no rows at all."""
    names = {getattr(key, "key", None) for key in path}
    return leaf.ndim > 0 and not names & {"cross_attention", DECODE_KERNELS}


def _reorder_cache(cache, rows):
    """The cache of the beams `rows` [batch * num_beams]."""
    # jnp.take, not cache[rows]: XLA:CPU fuses it into the cache update that follows, where
    # indexing adds two copies of every layer's keys and values per step.
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.take(leaf, rows, axis=0) if _per_beam(path, leaf) else leaf,
        cache)


@functools.partial(jax.jit, static_argnames=("generator", "plan"))
def _beam_loop(generator, params, batch, *, plan: _Plan):
    """The best beam's tokens [batch, num_new] (pad after its EOS), with HF's beam search
    semantics (top 2 * num_beams candidates per step, finished hypotheses scored with the
    length penalty, early stopping True / False / 'never')."""
    k = plan.num_beams
    prompt, first = generator.history(batch)
    rows, width = prompt.shape
    slots = width + plan.num_new
    logits, cache = generator.start(params, batch, slots)
    # Start on one row per prompt, then copy each row's cache into its beams (all but the
    # projected source, which the beams share).
    expand = lambda x: jnp.repeat(x, k, axis=0) if x.ndim else x  # noqa: E731
    cache = jax.tree_util.tree_map_with_path(
        lambda path, leaf: expand(leaf) if _per_beam(path, leaf) else leaf, cache)
    logits, batch = expand(logits), jax.tree.map(expand, batch)
    if plan.transposed_kernels:
        cache = with_transposed_kernels(generator, params, cache, batch)
    first = jnp.repeat(first, k)
    vocab = logits.shape[-1]
    history = jnp.concatenate([prompt, jnp.full((rows, plan.num_new), plan.pad_id, jnp.int32)],
                              axis=1)
    running = jnp.repeat(history[:, None], k, axis=1)  # [batch, beams, slots]
    running_scores = jnp.zeros((rows, k)).at[:, 1:].set(-1e9)
    top_beams = jnp.arange(2 * k) < k
    gather = lambda x, index: jnp.take_along_axis(  # noqa: E731
        x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)

    def choose(state):
        (i, running, running_scores, finished_seqs, finished_scores, is_finished, unsatisfied,
         logits, cache, _, _) = state
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        log_probs = _process(log_probs, running.reshape(rows * k, slots), first, width + i, i,
                             plan)
        totals = (log_probs.reshape(rows, k, vocab) + running_scores[:, :, None])
        topk_scores, topk_index = jax.lax.top_k(totals.reshape(rows, k * vocab), 2 * k)
        origin, token = topk_index // vocab, topk_index % vocab
        candidates = _write(gather(running, origin), width + i, token)
        hits = (token == plan.eos_id) | (i + 1 >= plan.num_new)
        # Running beams: the best num_beams candidates that did not just finish.
        running_scores, best = jax.lax.top_k(topk_scores - 1e9 * hits, k)
        running, origin = gather(candidates, best), gather(origin, best)
        # Finished hypotheses: merge those of the top num_beams candidates that just finished.
        scores = topk_scores / ((i + 1).astype(jnp.float32) ** plan.length_penalty)
        if plan.early_stopping is True:
            scores -= 1e9 * is_finished.all(axis=-1, keepdims=True)
        scores -= 1e9 * ~unsatisfied
        just_finished = hits & top_beams[None]
        scores -= 1e9 * ~just_finished
        merged_scores = jnp.concatenate([finished_scores, scores], axis=1)
        finished_scores, best = jax.lax.top_k(merged_scores, k)
        finished_seqs = gather(jnp.concatenate([finished_seqs, candidates], axis=1), best)
        is_finished = gather(jnp.concatenate([is_finished, just_finished], axis=1), best)
        # Can a running beam still beat the worst finished hypothesis?
        if plan.early_stopping == "never" and plan.length_penalty > 0:
            best_length = jnp.float32(plan.num_new)
        else:
            best_length = (i + 1).astype(jnp.float32)
        best_running = running_scores[:, :1] / best_length ** plan.length_penalty
        worst = jnp.where(is_finished, finished_scores.min(axis=1, keepdims=True), -1e9)
        unsatisfied = unsatisfied & (best_running > worst).any(axis=-1, keepdims=True)
        go_on = unsatisfied.any() & ~hits.all()
        if plan.early_stopping is True:
            go_on &= ~is_finished.all()
        return (i, running, running_scores, finished_seqs, finished_scores, is_finished,
                unsatisfied, logits, cache, origin, go_on)

    def advance(state):
        i, running, *rest, logits, cache, origin, go_on = state
        beams = (jnp.arange(rows)[:, None] * k + origin).reshape(-1)
        logits, cache = generator.step(params, _reorder_cache(cache, beams), batch,
                                       running[:, :, width + i].reshape(-1), i)
        return (i, running, *rest, logits, cache, origin, go_on)

    def body(state):
        state = advance(choose(state))
        return (state[0] + 1,) + state[1:]

    # Every step but the last is followed by a model step; the last needs none.
    state = (jnp.zeros((), jnp.int32), running, running_scores, running,
             jnp.full((rows, k), -1e9), jnp.zeros((rows, k), bool), jnp.ones((rows, 1), bool),
             logits, cache, jnp.zeros((rows, k), jnp.int32), jnp.array(True))
    state = jax.lax.while_loop(lambda s: s[-1] & (s[0] < plan.num_new - 1), body, state)
    state = jax.lax.cond(state[-1], choose, lambda s: s, state)
    return state[3][:, 0, width:]


# ---- entry points --------------------------------------------------------------------------


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def generate_ids(model: nn.Module, params: Any, prompts: Sequence[Sequence[int]],
                 options: GenerationOptions, *, eos_id: int, pad_id: int,
                 decoder_start_id: int | None = None, language_id: int = 0,
                 target_language_id: int = 0,
                 stream: Callable[[np.ndarray], None] | None = None) -> list[list[int]]:
    """New token ids for each prompt (token ids), without the prompt, cut before EOS.

    A decoder-only model continues the prompt; BART and XLM's translation model read it as
    their source and decode from `decoder_start_id` (default eos_id, as they were trained).
    XLM's language ids: `language_id` the prompt's (the source's), `target_language_id` the
    translation's. Decoder-only prompts hold at most
    max_len - 1 tokens and max_new_tokens shrinks to the room left. `stream`, called with each
    step's tokens [batch] (pad once a row is done), sees them as they are produced.
    """
    options.validate()
    model, params = unscanned(model, params)  # the KV cache lives in the unrolled blocks
    if not prompts:
        raise ValueError("no prompts given; pass at least one prompt.")
    start_id = eos_id if decoder_start_id is None else decoder_start_id
    if model.kind == ENCODER_DECODER and start_id < 0:
        raise ValueError("an encoder-decoder's decoder starts from an eos token (or "
                         "decoder_start_id), and this tokenizer has none: use the checkpoint's "
                         "own tokenizer, which has one.")
    generator = generator_for(model, start_id)
    for index, ids in enumerate(prompts):
        if len(ids) == 0:
            raise ValueError(f"prompt {index} is empty; give each prompt at least one token "
                             "of text.")
    rows = len(prompts)
    batch, num_new = generator.batch(prompts, options.max_new_tokens, pad_id=pad_id,
                                     language_id=language_id,
                                     target_language_id=target_language_id)
    plan = _Plan(num_new=num_new, greedy=options.temperature == 0, top_k=options.top_k,
                 use_top_p=options.top_p < 1, repetition_penalty=float(options.repetition_penalty),
                 no_repeat_ngram_size=options.no_repeat_ngram_size,
                 min_new_tokens=min(options.min_new_tokens, num_new),
                 num_beams=options.num_beams, length_penalty=float(options.length_penalty),
                 early_stopping=options.early_stopping, eos_id=eos_id, pad_id=pad_id,
                 stream=stream is not None and options.num_beams == 1,
                 transposed_kernels=ops.prefers_transposed_kernels(
                     rows * options.num_beams,
                     sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(params))))
    batch = jax.tree.map(jnp.asarray, batch)
    call = next(_stream_ids) % (1 << 32)
    if plan.stream:
        _streams[call] = stream
    try:
        if options.num_beams > 1:
            out = _beam_loop(generator, params, batch, plan=plan)
        else:
            out = _sample_loop(generator, params, batch, jax.random.key(options.seed),
                               jnp.float32(max(options.temperature, 1e-6)),
                               jnp.float32(options.top_p), jnp.uint32(call), plan=plan)
        out = np.asarray(out)
        if plan.stream:
            jax.effects_barrier()
    finally:
        if plan.stream:
            del _streams[call]
    results = []
    for row in out.tolist():
        results.append(row[:row.index(eos_id)] if eos_id in row else row)
    return results
