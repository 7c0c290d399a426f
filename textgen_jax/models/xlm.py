"""XLM (Lample & Conneau 2019): a post-LN transformer trained as a causal (CLM) or masked (MLM,
TLM) language model over several languages.

Each token's embedding is the sum of its word, position (learned, or fixed sinusoids as in
Vaswani et al. §3.5) and language embeddings (§3.1; only when there is more than one language),
then a LayerNorm. The output layer is a dense layer whose weight is the word embedding table,
with its own bias per vocabulary entry. Names map onto Hugging Face's XLMWithLMHeadModel
(tests/models/test_xlm.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from textgen_jax.models.heads import classifier, token_head_outputs
from textgen_jax.models.layers import (Embed, LayerNorm, TransformerBlock, TransformerConfig,
                                       attention_mask, cached_attention_mask, layer_stack)
from textgen_jax.models.spec import DECODER, ENCODER
from textgen_jax.ops import add_bias


def sinusoidal_position_table(num_positions: int, d_model: int) -> np.ndarray:
    """float32 [num_positions, d_model]: sin on even features, cos on odd ones (Vaswani §3.5)."""
    positions = np.arange(num_positions, dtype=np.float64)[:, None]
    features = np.arange(d_model)
    angles = positions / np.power(10000.0, 2 * (features // 2) / d_model)
    return np.where(features % 2 == 0, np.sin(angles), np.cos(angles)).astype(np.float32)


def embed_tokens(cfg: TransformerConfig, num_languages: int, sinusoidal_positions: bool,
                 inputs: jax.Array, langs: jax.Array | None, positions: jax.Array,
                 deterministic: bool) -> tuple[jax.Array, Embed]:
    """XLM's input layer, called inside a module's compact method (its parameters token_embed,
    position_embed, language_embed and embed_norm belong to that module): inputs, positions
    [batch, length] int -> ([batch, length, embed], the token table for the tied output).

    langs [batch, length]: language ids in [0, num_languages); with one language, or None as
    in the reference, no language embedding is added.
    """
    embed = lambda num, axes, name: Embed(num, cfg.d_model, table_axes=axes,  # noqa: E731
                                          init_std=cfg.init_std, dtype=cfg.dtype, name=name)
    token_embed = embed(cfg.vocab_size, ("vocab", "embed"), "token_embed")
    x = token_embed(inputs)
    if sinusoidal_positions:
        table = sinusoidal_position_table(cfg.max_len, cfg.d_model)
        x = x + jnp.take(jnp.asarray(table), positions, axis=0).astype(cfg.dtype)
    else:
        x = x + embed(cfg.max_len, ("length", "embed"), "position_embed")(positions)
    if num_languages > 1 and langs is not None:
        x = x + embed(num_languages, (None, "embed"), "language_embed")(langs)
    x = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name="embed_norm")(x)
    x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), token_embed


def output_logits(module: nn.Module, token_embed: Embed, x: jax.Array) -> jax.Array:
    """XLM's output layer in `module`'s compact method: x [batch, length, embed] -> float32
    logits [batch, length, vocab], the token table (tied) plus its own 'output_bias'."""
    bias = module.param("output_bias",
                        nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                        (token_embed.num_embeddings,), jnp.float32)
    return nn.with_logical_constraint(add_bias(token_embed.attend(x), bias),
                                      ("batch", "length", "vocab"))


class Xlm(nn.Module):
    """Embeddings + post-LN blocks + tied output layer; `causal` picks CLM over MLM attention.

    `num_languages` > 1 adds a learned language embedding; `sinusoidal_positions` replaces the
    learned position table by fixed sinusoids (not a parameter).
    """

    cfg: TransformerConfig
    num_languages: int = 1
    sinusoidal_positions: bool = False
    causal: bool = False
    # > 0: a sequence classifier on the first token's state (XLMForSequenceClassification).
    num_labels: int = 0
    # A per-token head instead (heads.TOKEN_HEADS): 'token_classification' (num_labels tags,
    # XLMForTokenClassification) or 'question_answering' (XLMForQuestionAnsweringSimple).
    head: str = ""

    uses_languages: ClassVar[bool] = True

    @property
    def kind(self) -> str:
        """Only the causal (CLM) mode has a next-token head to decode with (models/spec.py)."""
        return DECODER if self.causal else ENCODER

    def example_batch(self, seq_len: int) -> dict[str, jax.Array]:
        """A minimal batch, for `init` (shapes only matter; langs create the language
        embedding)."""
        return {"inputs": jnp.ones((1, seq_len), jnp.int32),
                "langs": jnp.zeros((1, seq_len), jnp.int32)}

    @nn.compact
    def __call__(self, batch: Mapping[str, jax.Array], deterministic: bool = True,
                 decode: bool = False) -> dict[str, jax.Array]:
        """batch['inputs'] [batch, length] int -> {'logits': float32 [batch, length, vocab]}.

        Optional keys: 'langs' [batch, length], language ids in [0, num_languages), ignored
        with one language, and, as in the reference, no language embedding is added without
        them; 'segment_ids' [batch, length], 0 for padding, which no token attends to; tokens
        attend only to tokens with the same id (default all ones); 'positions' default to 0,
        1, ... `decode` (causal mode only) appends the inputs to the KV cache, as in DecoderLM.

        With num_labels > 0, also 'classification_logits' float32 [batch, num_labels] of the
        first token's state; with a `head`, that head's outputs instead ('token_logits'
        [batch, length, num_labels], or 'start_logits' and 'end_logits' [batch, length];
        models/heads.py).
        """
        cfg = self.cfg
        inputs = batch["inputs"]
        segment_ids = batch.get("segment_ids", jnp.ones_like(inputs))
        positions = batch.get("positions",
                              jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape))
        x, token_embed = embed_tokens(cfg, self.num_languages, self.sinusoidal_positions, inputs,
                                      batch.get("langs"), positions, deterministic)

        # The reference also zeroes padded hidden states after every layer; since no token
        # attends to padding here, that changes no real token's output and is left out.
        if decode:
            if not self.causal:
                raise ValueError("config.model.causal=False: a bidirectional XLM has no "
                                 "next-token head to decode with; use fill-mask, or train with "
                                 "--config.model.causal=True to generate.")
            mask, _ = cached_attention_mask(self, segment_ids)
        else:
            mask = attention_mask(segment_ids, segment_ids, causal=self.causal)
        x = layer_stack(TransformerBlock, cfg.num_layers, cfg.scan_layers, cfg=cfg,
                        pre_norm=False, residual_init_std=cfg.init_std)(x, mask, deterministic,
                                                                       decode)

        outputs = {"logits": output_logits(self, token_embed, x)}
        if self.head:
            outputs.update(token_head_outputs(cfg, self.head, self.num_labels, x, deterministic))
        elif self.num_labels:
            state = nn.Dropout(cfg.dropout)(x[:, 0], deterministic=deterministic)
            outputs["classification_logits"] = classifier(cfg, self.num_labels)(state).astype(
                jnp.float32)
        return outputs
