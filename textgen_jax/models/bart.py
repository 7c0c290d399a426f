"""BART (Lewis et al. 2019): a post-LN encoder-decoder with a tied output layer.

The token table is shared by the encoder, the decoder and the output layer (§2.1, the standard
Transformer of Vaswani et al.). Each stack adds learned positions, which the reference stores
with an offset of 2 (row = position + 2), then a LayerNorm over the embeddings. Encoder blocks
are post-LN self-attention + MLP; decoder blocks put cross-attention over the encoder's output
between the causal self-attention and the MLP. Logits are the tied projection plus
`final_logits_bias`. Names map onto Hugging Face's BartForConditionalGeneration
(tests/models/test_bart.py).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from textgen_jax.models import hf as hf_lib
from textgen_jax.models.heads import ClassificationHead, gather_positions
from textgen_jax.models.layers import (MLP, REMAT_POLICIES, Embed, LayerNorm, MultiHeadAttention,
                                       TransformerBlock, TransformerConfig, attention_mask,
                                       cached_attention_mask, layer_stack)
from textgen_jax.models.spec import ENCODER_DECODER, ArchitectureSpec
from textgen_jax.ops import add_bias

# The reference's learned position table keeps two extra leading rows (a fairseq legacy of
# padding_idx = 1): position p reads row p + 2.
POSITION_OFFSET = 2


class DecoderBlock(nn.Module):
    """Post-LN causal self-attention, cross-attention over the encoder output, MLP."""

    cfg: TransformerConfig

    def __call__(self, x: jax.Array, encoded: jax.Array | None, self_mask: jax.Array,
                 cross_mask: jax.Array, deterministic: bool = True,
                 decode: bool = False) -> jax.Array:
        """x [batch, target_len, embed], encoded [batch, source_len, embed],
        self_mask [batch, 1, target_len, target_len], cross_mask [batch, 1, target_len,
        source_len] -> [batch, target_len, embed]. `decode` runs both attentions on their KV
        caches (self_mask then spans the cache); encoded=None reuses the cached source."""
        if self.cfg.remat == "none" or decode:
            return self.layer(x, encoded, self_mask, cross_mask, deterministic, decode)
        # As TransformerBlock: same parameters, the backward pass recomputes.
        return nn.remat(DecoderBlock.layer, policy=REMAT_POLICIES[self.cfg.remat],
                        static_argnums=(5, 6))(self, x, encoded, self_mask, cross_mask,
                                               deterministic, decode)

    @nn.compact
    def layer(self, x: jax.Array, encoded: jax.Array | None, self_mask: jax.Array,
              cross_mask: jax.Array, deterministic: bool, decode: bool) -> jax.Array:
        cfg = self.cfg
        dropout = functools.partial(nn.Dropout(cfg.dropout), deterministic=deterministic)
        norm = functools.partial(LayerNorm, eps=cfg.layer_norm_eps, dtype=cfg.dtype)
        self_attention = MultiHeadAttention(cfg, out_init_std=cfg.init_std, name="attention")
        cross_attention = MultiHeadAttention(cfg, out_init_std=cfg.init_std, cross=True,
                                             name="cross_attention")
        mlp = MLP(cfg, out_init_std=cfg.init_std, name="mlp")
        x = norm(name="attention_norm")(
            x + dropout(self_attention(x, self_mask, deterministic=deterministic, decode=decode)))
        x = norm(name="cross_attention_norm")(
            x + dropout(cross_attention(x, cross_mask, kv=encoded, deterministic=deterministic,
                                        decode=decode)))
        x = norm(name="mlp_norm")(x + dropout(mlp(x, deterministic=deterministic)))
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class _Stack(nn.Module):
    """Learned positions + embedding LayerNorm, then cfg.num_layers encoder or decoder
    blocks."""

    cfg: TransformerConfig
    is_decoder: bool

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None, encoded: jax.Array | None = None,
                 cross_mask: jax.Array | None = None, deterministic: bool = True,
                 decode_segments: jax.Array | None = None) -> jax.Array:
        """x: token embeddings [batch, length, embed] -> [batch, length, embed].

        decode_segments [batch, length] (decoder only; 1 real, 0 padding) decode with the KV
        cache: the inputs take the next cache slots, whose indices are their positions, and
        `mask` (None) is built over the cache.
        """
        cfg = self.cfg
        if x.shape[1] > cfg.max_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_len={cfg.max_len}: "
                             f"raise config.model.max_len or shorten the inputs.")
        decode = decode_segments is not None
        first = 0
        if decode:
            mask, first = cached_attention_mask(self, decode_segments)
        positions = first + jnp.arange(x.shape[1]) + POSITION_OFFSET
        x = x + Embed(cfg.max_len + POSITION_OFFSET, cfg.d_model, table_axes=("length", "embed"),
                      init_std=cfg.init_std, dtype=cfg.dtype, name="position_embed")(positions)
        x = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name="embed_norm")(x)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        if self.is_decoder:
            return layer_stack(DecoderBlock, cfg.num_layers, cfg.scan_layers, cfg=cfg)(
                x, encoded, mask, cross_mask, deterministic, decode)
        return layer_stack(TransformerBlock, cfg.num_layers, cfg.scan_layers, cfg=cfg,
                           pre_norm=False, residual_init_std=cfg.init_std)(x, mask, deterministic)


class Bart(nn.Module):
    """Encoder-decoder with shared, tied token embeddings; `encode` once, `decode` per step.

    `cfg` is the encoder's; the decoder has its own `num_decoder_layers`, `num_decoder_heads`
    and `decoder_d_ff` (None or 0: the encoder's), as transformers' BartConfig; its
    cross-attention has the decoder's heads. `scale_embedding` multiplies token embeddings by
    sqrt(d_model), off in BART's released configs.
    """

    cfg: TransformerConfig
    num_decoder_layers: int | None = None
    num_decoder_heads: int | None = None
    decoder_d_ff: int | None = None
    scale_embedding: bool = False
    # > 0: a classifier on the decoder's state at each row's final eos
    # (BartForSequenceClassification).
    num_labels: int = 0
    kind: ClassVar[str] = ENCODER_DECODER
    uses_languages: ClassVar[bool] = False

    def setup(self):
        cfg = self.cfg
        self.token_embed = Embed(cfg.vocab_size, cfg.d_model, init_std=cfg.init_std,
                                 dtype=cfg.dtype)
        self.encoder = _Stack(cfg, is_decoder=False)
        self.decoder = _Stack(cfg.decoder(self.num_decoder_layers, self.num_decoder_heads,
                                          self.decoder_d_ff), is_decoder=True)
        self.final_logits_bias = self.param(
            "final_logits_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
            (cfg.vocab_size,), jnp.float32)
        if self.num_labels:
            self.classification_head = ClassificationHead(cfg, self.num_labels)

    def example_batch(self, seq_len: int) -> dict[str, jax.Array]:
        """A minimal batch, for `init` (shapes only matter)."""
        ones = jnp.ones((1, seq_len), jnp.int32)
        return {"inputs": ones, "decoder_inputs": ones}

    def _embed_tokens(self, ids: jax.Array) -> jax.Array:
        x = self.token_embed(ids)
        if self.scale_embedding:
            x = x * np.sqrt(self.cfg.d_model).astype(x.dtype)
        return x

    def encode(self, batch: Mapping[str, jax.Array], deterministic: bool = True) -> jax.Array:
        """batch['inputs'] [batch, source_len] int -> encoded [batch, source_len, embed].

        batch['segment_ids'] [batch, source_len] (optional): 1 (or a packed row's document id)
        for real tokens, 0 for padding; tokens attend only to tokens with the same id.
        """
        inputs = batch["inputs"]
        segment_ids = batch.get("segment_ids", jnp.ones_like(inputs))
        mask = attention_mask(segment_ids, segment_ids, causal=False)
        return self.encoder(self._embed_tokens(inputs), mask, deterministic=deterministic)

    def decode(self, batch: Mapping[str, jax.Array], encoded: jax.Array | None,
               deterministic: bool = True, decode: bool = False) -> dict[str, jax.Array]:
        """batch['decoder_inputs'] [batch, target_len] int, encoded [batch, source_len, embed]
        -> {'logits': float32 [batch, target_len, vocab]}.

        batch['segment_ids'] is the source's (as in `encode`), batch['decoder_segment_ids'] the
        target's (1 real, 0 padding); a target token attends to target tokens up to itself and
        to every real source token. `decode` appends the decoder inputs to the KV cache
        ('cache' collection, sized by `init` with decode=True); the first decode call passes
        `encoded`, later ones None (its projections are cached) with the same source
        segment_ids.
        """
        return {"logits": self._logits(self._decoder_states(batch, encoded, deterministic,
                                                            decode))}

    def _decoder_states(self, batch: Mapping[str, jax.Array], encoded: jax.Array | None,
                        deterministic: bool, decode: bool) -> jax.Array:
        decoder_inputs = batch["decoder_inputs"]
        source_segments = batch.get("segment_ids")
        if source_segments is None:
            source_segments = jnp.ones(encoded.shape[:2], jnp.int32)
        target_segments = batch.get("decoder_segment_ids", jnp.ones_like(decoder_inputs))
        self_mask = (None if decode
                     else attention_mask(target_segments, target_segments, causal=True))
        cross_mask = attention_mask(target_segments, source_segments, causal=False)
        return self.decoder(self._embed_tokens(decoder_inputs), self_mask, encoded, cross_mask,
                            deterministic=deterministic,
                            decode_segments=target_segments if decode else None)

    def _logits(self, x: jax.Array) -> jax.Array:
        logits = add_bias(self.token_embed.attend(x), self.final_logits_bias)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))

    def __call__(self, batch: Mapping[str, jax.Array], deterministic: bool = True,
                 decode: bool = False) -> dict[str, jax.Array]:
        """batch['inputs'] [batch, source_len], batch['decoder_inputs'] [batch, target_len] int
        -> {'logits': float32 [batch, target_len, vocab]}; segment ids as in `encode` and
        `decode`.

        With num_labels > 0, also 'classification_logits': float32 [batch, num_labels] of the
        decoder state at batch['extract_positions'] [batch] (the final eos; default the last).
        """
        encoded = self.encode(batch, deterministic=deterministic)
        x = self._decoder_states(batch, encoded, deterministic, decode)
        outputs = {"logits": self._logits(x)}
        if self.num_labels:
            decoder_inputs = batch["decoder_inputs"]
            last = jnp.full(decoder_inputs.shape[:1], decoder_inputs.shape[1] - 1)
            extract_positions = batch.get("extract_positions", last)
            outputs["classification_logits"] = self.classification_head(
                gather_positions(x, extract_positions), deterministic)
        return outputs


class BartSpec(ArchitectureSpec):
    """An encoder-decoder: a source `<s> text </s>`, pairs as `<s> A </s></s> B </s>` (the
    reference's), and a classifier on the decoder's final eos."""

    name = "bart"
    kind = ENCODER_DECODER
    batch_keys = ("inputs", "segment_ids", "decoder_inputs", "decoder_segment_ids",
                  "extract_positions")
    hf_model_type, hf_class = "bart", "BartForConditionalGeneration"
    hf_base_prefix = "model."

    def build(self, vocab_size: int) -> Bart:
        m = self.model_config
        return Bart(self.transformer_config(vocab_size), num_decoder_layers=m.num_decoder_layers,
                    num_decoder_heads=m.get("num_decoder_heads"),
                    decoder_d_ff=m.get("decoder_d_ff"),  # configs saved before the keys
                    scale_embedding=m.scale_embedding, num_labels=m.num_labels)

    def pair_layout(self, tokenizer, has_b: bool) -> tuple[list[int], list[int], list[int]]:
        eos = tokenizer.eos_id
        if has_b:
            return [tokenizer.bos_id], [eos, eos], [eos]
        return [tokenizer.bos_id], [eos], []

    @staticmethod
    def model_config_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
        hf_lib.require(hf, "add_final_layer_norm", False, "BART's post-LN stacks (not mBART)")
        hf_lib.require(hf, "normalize_before", False, "BART's post-LN stacks (not mBART)")
        return dict(num_layers=hf["encoder_layers"], num_decoder_layers=hf["decoder_layers"],
                    d_model=hf["d_model"], num_heads=hf["encoder_attention_heads"],
                    num_decoder_heads=hf["decoder_attention_heads"], d_ff=hf["encoder_ffn_dim"],
                    decoder_d_ff=hf["decoder_ffn_dim"], max_len=hf["max_position_embeddings"],
                    dropout=hf.get("dropout", 0.1),
                    attention_dropout=hf.get("attention_dropout", 0.0),
                    layer_norm_eps=1e-5, init_std=hf.get("init_std", 0.02),
                    activation=hf_lib.activation_from_hf(hf.get("activation_function", "gelu"),
                                                         "bart"),
                    scale_embedding=bool(hf.get("scale_embedding", False)))

    def hf_config(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
        m = config.model
        return dict(encoder_layers=m.num_layers,
                    decoder_layers=m.num_decoder_layers or m.num_layers,
                    d_model=m.d_model, encoder_attention_heads=m.num_heads,
                    decoder_attention_heads=m.get("num_decoder_heads") or m.num_heads,
                    encoder_ffn_dim=m.d_ff, decoder_ffn_dim=m.get("decoder_d_ff") or m.d_ff,
                    max_position_embeddings=m.max_len,
                    dropout=m.dropout, attention_dropout=m.attention_dropout,
                    activation_dropout=0.0, init_std=m.init_std,
                    activation_function=hf_lib.activation_to_hf(m.activation),
                    scale_embedding=bool(m.scale_embedding), is_encoder_decoder=True)
