"""Text in, text out: prompts framed as each architecture was trained, KV-cache generation,
continuations decoded."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn

from textgen_jax.decoding.generate import GenerationOptions, generate_ids
from textgen_jax.models.spec import ENCODER_DECODER, ArchitectureSpec


def generate_text(spec: ArchitectureSpec, model: nn.Module, params: Any, tokenizer,
                  prompts: Sequence[str],
                  options: GenerationOptions, language_id: int = 0,
                  target_language_id: int = 0,
                  stream: Callable[[str], None] | None = None) -> list[str]:
    """Each prompt continued (decoder-only: prompt + continuation; an encoder-decoder: its
    output text), framed as `spec`'s architecture was trained (`spec.prompt_ids`). XLM's
    language ids: the prompt's, and the output's (translation model).

    `stream`, for a single prompt, is called with each new piece of text as it is decoded.
    """
    for index, text in enumerate(prompts):
        if not tokenizer.encode(text):
            raise ValueError(f"prompt {index} ({text!r}) is empty; give each prompt some text.")
    texts_ids = [tokenizer.encode(text) for text in prompts]
    encoded = [spec.prompt_ids(tokenizer, ids) for ids in texts_ids]
    # A decoder's prompt is its text after the start token (if the tokenizer has one).
    texts_ids = [framed[len(framed) - len(ids):] for framed, ids in zip(encoded, texts_ids)]
    writes_new_text = spec.kind == ENCODER_DECODER  # not a continuation of the prompt
    on_tokens = None
    if stream is not None and len(prompts) == 1:
        on_tokens = _TextStream(tokenizer, [] if writes_new_text else texts_ids[0], stream)
    new = generate_ids(model, params, encoded, options, eos_id=tokenizer.eos_id,
                       pad_id=tokenizer.pad_id, language_id=language_id,
                       target_language_id=target_language_id, stream=on_tokens)
    if writes_new_text:  # the output opens with its targets' bos
        texts = [tokenizer.decode([t for t in ids if t != tokenizer.bos_id]) for ids in new]
    else:
        texts = [tokenizer.decode(ids + continuation)
                 for ids, continuation in zip(texts_ids, new)]
    if on_tokens is not None:
        on_tokens.finish(texts[0])
    return texts


class _TextStream:
    """Writes one row's text as its tokens arrive: the prompt's text first, then at each step
    what the new token adds (the text of all ids so far, less what was written)."""

    def __init__(self, tokenizer, prompt_ids: list[int], write: Callable[[str], None]):
        self._tokenizer, self._write = tokenizer, write
        self._ids = list(prompt_ids)
        self._shown = ""
        self._done = False
        self._show(tokenizer.decode(self._ids))

    def _show(self, text: str) -> None:
        # A piece can change how the text before it decodes: wait until it only extends it.
        if text.startswith(self._shown) and len(text) > len(self._shown):
            self._write(text[len(self._shown):])
            self._shown = text

    def __call__(self, tokens) -> None:
        token = int(tokens[0])
        self._done |= token == self._tokenizer.eos_id
        if not self._done:
            self._ids.append(token)
            self._show(self._tokenizer.decode(self._ids))

    def finish(self, text: str) -> None:
        """Writes whatever of the final text is not written yet."""
        self._show(text)


def sample(spec: ArchitectureSpec, model: nn.Module, params: Any, tokenizer, prompts: list[str],
           max_new_tokens: int = 32, temperature: float = 0.8, top_k: int = 40,
           seed: int = 0) -> list[str]:
    """Continues each prompt; temperature 0 is greedy. Returns prompt + continuation."""
    if not prompts:
        raise ValueError("no prompts given; pass at least one --prompt.")
    options = GenerationOptions(max_new_tokens=max_new_tokens, temperature=temperature,
                                top_k=top_k, seed=seed)
    return generate_text(spec, model, params, tokenizer, prompts, options)
