"""XLM's translation model (Lample & Conneau 2019, §5): an encoder-decoder whose two stacks are
each an XLM, both initialised from one pretrained XLM.

As Facebook's XLM code (TransformerModel with is_encoder=True / is_decoder=True), each stack has
its own word, position and language embeddings and embedding LayerNorm (models/xlm.py's
`embed_tokens`) and post-LN blocks; a decoder block adds cross-attention over the encoder's
output (the reference's `encoder_attn` and `layer_norm15`) between its causal self-attention and
its MLP (BART's DecoderBlock, the same post-LN layout). The decoder's output layer is tied to its
own token table, with XLM's output bias. The encoder and the decoder's embeddings, self-attention,
MLPs and norms take a pretrained XLM's parameters; the cross-attention starts random
(training/init_from.py).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from textgen_jax.models.bart import DecoderBlock
from textgen_jax.models.layers import (TransformerBlock, TransformerConfig, attention_mask,
                                       cached_attention_mask, layer_stack)
from textgen_jax.models.xlm import embed_tokens, output_logits


class XlmStack(nn.Module):
    """One side of the translation model: XLM's embeddings, then encoder blocks, or decoder
    blocks and XLM's tied output layer."""

    cfg: TransformerConfig
    num_layers: int
    num_languages: int
    sinusoidal_positions: bool
    is_decoder: bool

    @nn.compact
    def __call__(self, inputs: jax.Array, segments: jax.Array, langs: jax.Array | None,
                 encoded: jax.Array | None = None, source_segments: jax.Array | None = None,
                 deterministic: bool = True, decode: bool = False) -> jax.Array:
        """inputs [batch, length] int, segments [batch, length] (1 real, 0 padding), langs
        [batch, length] or None -> encoder: [batch, length, embed]; decoder: float32 logits
        [batch, length, vocab].

        The decoder attends causally to itself and to encoded [batch, source_len, embed] where
        source_segments [batch, source_len] is real. `decode` (decoder only) appends the inputs
        to the KV cache, their positions continuing from the cache's; encoded=None then reuses
        the source projected by the first decode call.
        """
        cfg = self.cfg
        first = 0
        if decode:
            self_mask, first = cached_attention_mask(self, segments)
        else:
            self_mask = attention_mask(segments, segments, causal=self.is_decoder)
        positions = jnp.broadcast_to(first + jnp.arange(inputs.shape[1]), inputs.shape)
        x, token_embed = embed_tokens(cfg, self.num_languages, self.sinusoidal_positions, inputs,
                                      langs, positions, deterministic)
        if not self.is_decoder:
            return layer_stack(TransformerBlock, self.num_layers, cfg.scan_layers, cfg=cfg,
                               pre_norm=False, residual_init_std=cfg.init_std)(
                x, self_mask, deterministic)
        cross_mask = attention_mask(segments, source_segments, causal=False)
        x = layer_stack(DecoderBlock, self.num_layers, cfg.scan_layers, cfg=cfg)(
            x, encoded, self_mask, cross_mask, deterministic, decode)
        return output_logits(self, token_embed, x)


class XlmEncoderDecoder(nn.Module):
    """XLM's encoder-decoder (config.model.arch='xlm', config.model.encoder_decoder=True);
    `encode` once, `decode` per step. `num_decoder_layers` (None or 0) defaults to
    cfg.num_layers."""

    cfg: TransformerConfig
    num_languages: int = 1
    sinusoidal_positions: bool = False
    num_decoder_layers: int | None = None

    can_generate = True

    def setup(self):
        stack = lambda layers, is_decoder: XlmStack(  # noqa: E731
            self.cfg, layers, self.num_languages, self.sinusoidal_positions, is_decoder)
        self.encoder = stack(self.cfg.num_layers, False)
        self.decoder = stack(self.num_decoder_layers or self.cfg.num_layers, True)

    def example_inputs(self, seq_len: int) -> tuple[jax.Array, ...]:
        """Arguments of a minimal call, for `init` (shapes only matter; langs create the
        language embeddings)."""
        ones, zeros = jnp.ones((1, seq_len), jnp.int32), jnp.zeros((1, seq_len), jnp.int32)
        return ones, ones, ones, ones, zeros, zeros

    def encode(self, inputs: jax.Array, input_ids_mask: jax.Array | None = None,
               langs: jax.Array | None = None, deterministic: bool = True) -> jax.Array:
        """inputs [batch, source_len] int -> encoded [batch, source_len, embed].

        input_ids_mask [batch, source_len]: 1 real, 0 padding. langs [batch, source_len]: the
        source's language ids (None: no language embedding, as in the reference).
        """
        if input_ids_mask is None:
            input_ids_mask = jnp.ones_like(inputs)
        return self.encoder(inputs, input_ids_mask, langs, deterministic=deterministic)

    def decode(self, decoder_inputs: jax.Array, encoded: jax.Array | None,
               input_ids_mask: jax.Array | None = None, decoder_mask: jax.Array | None = None,
               decoder_langs: jax.Array | None = None, deterministic: bool = True,
               decode: bool = False) -> jax.Array:
        """decoder_inputs [batch, target_len] int, encoded [batch, source_len, embed] ->
        float32 logits [batch, target_len, vocab].

        input_ids_mask is the source's, decoder_mask the target's (1 real, 0 padding),
        decoder_langs [batch, target_len] the target's language ids. `decode` appends
        decoder_inputs to the KV cache ('cache' collection, sized by `init` with decode=True);
        the first decode call passes `encoded`, later ones None with the same input_ids_mask.
        """
        if input_ids_mask is None:
            input_ids_mask = jnp.ones(encoded.shape[:2], jnp.int32)
        if decoder_mask is None:
            decoder_mask = jnp.ones_like(decoder_inputs)
        return self.decoder(decoder_inputs, decoder_mask, decoder_langs, encoded, input_ids_mask,
                            deterministic=deterministic, decode=decode)

    def __call__(self, inputs: jax.Array, decoder_inputs: jax.Array,
                 input_ids_mask: jax.Array | None = None, decoder_mask: jax.Array | None = None,
                 langs: jax.Array | None = None, decoder_langs: jax.Array | None = None,
                 deterministic: bool = True, decode: bool = False) -> jax.Array:
        """inputs [batch, source_len], decoder_inputs [batch, target_len] int -> float32 logits
        [batch, target_len, vocab]; masks and languages as in `encode` and `decode`."""
        encoded = self.encode(inputs, input_ids_mask, langs, deterministic=deterministic)
        return self.decode(decoder_inputs, encoded, input_ids_mask, decoder_mask, decoder_langs,
                           deterministic=deterministic, decode=decode)
