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

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from textgen_jax.config import ConfigError
from textgen_jax.models import hf as hf_lib
from textgen_jax.models.bart import DecoderBlock
from textgen_jax.models.layers import (TransformerBlock, TransformerConfig, attention_mask,
                                       cached_attention_mask, layer_stack)
from textgen_jax.models.spec import DECODER, ENCODER, ENCODER_DECODER, ArchitectureSpec
from textgen_jax.models.xlm import Xlm, embed_tokens, output_logits, sinusoidal_position_table


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
    `encode` once, `decode` per step. `cfg` is the encoder's; the decoder has its own
    `num_decoder_layers`, `num_decoder_heads` and `decoder_d_ff` (None or 0: the encoder's)."""

    cfg: TransformerConfig
    num_languages: int = 1
    sinusoidal_positions: bool = False
    num_decoder_layers: int | None = None
    num_decoder_heads: int | None = None
    decoder_d_ff: int | None = None

    kind: ClassVar[str] = ENCODER_DECODER
    uses_languages: ClassVar[bool] = True

    def setup(self):
        stack = lambda cfg, is_decoder: XlmStack(  # noqa: E731
            cfg, cfg.num_layers, self.num_languages, self.sinusoidal_positions, is_decoder)
        self.encoder = stack(self.cfg, False)
        self.decoder = stack(self.cfg.decoder(self.num_decoder_layers, self.num_decoder_heads,
                                              self.decoder_d_ff), True)

    def example_batch(self, seq_len: int) -> dict[str, jax.Array]:
        """A minimal batch, for `init` (shapes only matter; langs create the language
        embeddings)."""
        ones, zeros = jnp.ones((1, seq_len), jnp.int32), jnp.zeros((1, seq_len), jnp.int32)
        return {"inputs": ones, "decoder_inputs": ones, "langs": zeros, "decoder_langs": zeros}

    def encode(self, batch: Mapping[str, jax.Array], deterministic: bool = True) -> jax.Array:
        """batch['inputs'] [batch, source_len] int -> encoded [batch, source_len, embed].

        Optional: batch['segment_ids'] [batch, source_len] (1 real, 0 padding) and
        batch['langs'] [batch, source_len], the source's language ids (without them no language
        embedding is added, as in the reference).
        """
        inputs = batch["inputs"]
        return self.encoder(inputs, batch.get("segment_ids", jnp.ones_like(inputs)),
                            batch.get("langs"), deterministic=deterministic)

    def decode(self, batch: Mapping[str, jax.Array], encoded: jax.Array | None,
               deterministic: bool = True, decode: bool = False) -> dict[str, jax.Array]:
        """batch['decoder_inputs'] [batch, target_len] int, encoded [batch, source_len, embed]
        -> {'logits': float32 [batch, target_len, vocab]}.

        batch['segment_ids'] is the source's, batch['decoder_segment_ids'] the target's (1 real,
        0 padding), batch['decoder_langs'] [batch, target_len] the target's language ids.
        `decode` appends the decoder inputs to the KV cache ('cache' collection, sized by `init`
        with decode=True); the first decode call passes `encoded`, later ones None with the
        same source segment_ids.
        """
        decoder_inputs = batch["decoder_inputs"]
        source_segments = batch.get("segment_ids")
        if source_segments is None:
            source_segments = jnp.ones(encoded.shape[:2], jnp.int32)
        logits = self.decoder(decoder_inputs,
                              batch.get("decoder_segment_ids", jnp.ones_like(decoder_inputs)),
                              batch.get("decoder_langs"), encoded, source_segments,
                              deterministic=deterministic, decode=decode)
        return {"logits": logits}

    def __call__(self, batch: Mapping[str, jax.Array], deterministic: bool = True,
                 decode: bool = False) -> dict[str, jax.Array]:
        """batch['inputs'] [batch, source_len], batch['decoder_inputs'] [batch, target_len] int
        -> {'logits': float32 [batch, target_len, vocab]}; segment and language ids as in
        `encode` and `decode`."""
        return self.decode(batch, self.encode(batch, deterministic=deterministic),
                           deterministic=deterministic, decode=decode)


def xlm_translation_params(pretrained: dict[str, Any]) -> dict[str, Any]:
    """A plain XLM's params laid out as XLM's translation model's (XLM §5; the reference
    reloads its pretrained model into both its encoder and its decoder): each stack takes every
    embedding, block and norm, the decoder the output layer too. The decoder's cross-attention
    has no pretrained value: it starts random."""
    encoder = {name: value for name, value in pretrained.items() if name != "output_bias"}
    return {"encoder": encoder, "decoder": pretrained}


class XlmSpec(ArchitectureSpec):
    """XLM by its config: a masked LM (encoder), a causal LM (config.model.causal) or the
    translation model (config.model.encoder_decoder). Rows carry language ids; a pair is
    `</s> A </s> B </s>` and a text to fill `</s> text </s>`, as the reference frames
    sentences; a causal stream opens each sentence with `</s>`."""

    name = "xlm"
    uses_languages = True
    hf_model_type, hf_class, hf_base_prefix = "xlm", "XLMWithLMHeadModel", "transformer."
    hf_optional_heads = ("output_bias",)
    hf_head_classes = {"token_classification": "XLMForTokenClassification",
                       "question_answering": "XLMForQuestionAnsweringSimple"}

    @property
    def kind(self) -> str:
        if self.model_config.encoder_decoder:
            return ENCODER_DECODER
        return DECODER if self.model_config.causal else ENCODER

    @property
    def batch_keys(self) -> tuple[str, ...]:
        if self.kind == ENCODER_DECODER:
            return ("inputs", "segment_ids", "langs", "decoder_inputs", "decoder_segment_ids",
                    "decoder_langs")
        return ("inputs", "segment_ids", "positions", "langs")

    def build(self, vocab_size: int) -> Xlm | XlmEncoderDecoder:
        m, cfg = self.model_config, self.transformer_config(vocab_size)
        if self.kind != ENCODER_DECODER:
            return Xlm(cfg, num_languages=m.num_languages,
                       sinusoidal_positions=m.sinusoidal_positions, causal=m.causal,
                       num_labels=m.num_labels, head=m.head)
        if m.num_labels or m.causal:
            raise ConfigError(
                f"config.model.encoder_decoder=True (XLM's translation model, for seq2seq "
                f"tasks) takes no num_labels={m.num_labels} or causal={m.causal}: set them to "
                "0 and False, or encoder_decoder=False.")
        return XlmEncoderDecoder(cfg, num_languages=m.num_languages,
                                 sinusoidal_positions=m.sinusoidal_positions,
                                 num_decoder_layers=m.num_decoder_layers,
                                 num_decoder_heads=m.get("num_decoder_heads"),
                                 decoder_d_ff=m.get("decoder_d_ff"))

    def pair_layout(self, tokenizer, has_b: bool) -> tuple[list[int], list[int], list[int]]:
        return [tokenizer.bos_id], [tokenizer.eos_id], [tokenizer.eos_id] if has_b else []

    def prompt_ids(self, tokenizer, ids: Sequence[int]) -> list[int]:
        if self.kind == DECODER:
            return [*tokenizer.present(tokenizer.eos_id), *ids]
        return super().prompt_ids(tokenizer, ids)

    def masked_text_ids(self, tokenizer, ids: Sequence[int]) -> list[int]:
        return [tokenizer.eos_id, *ids, tokenizer.eos_id]

    @staticmethod
    def model_config_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
        d = hf["emb_dim"]
        hf_lib.require(hf, "asm", False, "a full softmax output layer")
        num_languages = hf.get("n_langs", 1)
        if num_languages > 1 and not hf.get("use_lang_emb", True):
            raise ValueError(f"config.json has n_langs={num_languages} with use_lang_emb=False; "
                             "only XLMs with language embeddings (or one language) are supported.")
        if not hf.get("gelu_activation", True):
            raise ValueError("config.json has gelu_activation=False (ReLU); only GELU XLMs are "
                             "supported.")
        return dict(num_layers=hf["n_layers"], d_model=d, num_heads=hf["n_heads"], d_ff=4 * d,
                    max_len=hf["max_position_embeddings"], dropout=hf.get("dropout", 0.1),
                    attention_dropout=hf.get("attention_dropout", 0.1),
                    layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                    init_std=hf.get("embed_init_std", d ** -0.5), activation="gelu",
                    num_languages=num_languages,
                    sinusoidal_positions=bool(hf.get("sinusoidal_embeddings", False)),
                    causal=bool(hf.get("causal", False)))

    def hf_config(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
        m = config.model
        hf_lib.check_export(m.d_ff == 4 * m.d_model, f"config.model.d_ff={m.d_ff}",
                            "transformers' XLM has an ffn of 4 * emb_dim")
        hf = dict(n_layers=m.num_layers, emb_dim=m.d_model, n_heads=m.num_heads,
                  max_position_embeddings=m.max_len, dropout=m.dropout,
                  attention_dropout=m.attention_dropout, layer_norm_eps=m.layer_norm_eps,
                  embed_init_std=m.init_std, gelu_activation=True,
                  sinusoidal_embeddings=bool(m.sinusoidal_positions), causal=bool(m.causal),
                  n_langs=m.num_languages, use_lang_emb=True, asm=False)
        languages = tuple(config.data.languages)
        if len(languages) == m.num_languages:
            hf.update(lang2id={lang: i for i, lang in enumerate(languages)},
                      id2lang={i: lang for i, lang in enumerate(languages)})
        return hf

    def update_config_from_hf(self, config: ml_collections.ConfigDict,
                              hf: Mapping[str, Any]) -> None:
        if "lang2id" in hf and config.model.num_languages > 1:
            languages = tuple(sorted(hf["lang2id"], key=hf["lang2id"].get))
            config.data.languages = config.tokenizer.languages = languages

    def hf_extra_tensors(self) -> dict[str, Any]:
        m = self.model_config
        if not m.sinusoidal_positions:
            return {}
        return {"transformer.position_embeddings.weight": sinusoidal_position_table(
            m.max_len, m.d_model)}

    def params_from(self, pretrained: ArchitectureSpec, params: dict[str, Any],
                    init_from: str) -> dict[str, Any]:
        params = super().params_from(pretrained, params, init_from)
        if pretrained.kind == self.kind or ENCODER_DECODER not in (pretrained.kind, self.kind):
            return params
        if pretrained.kind == ENCODER_DECODER:
            raise ConfigError(f"config.init_from={init_from!r} holds XLM's translation model "
                              "(config.model.encoder_decoder=True); this config trains the "
                              "plain XLM. Set --config.model.encoder_decoder=True, or start "
                              "from a plain XLM workdir.")
        m, p = self.model_config, pretrained.model_config
        ours = {"num_decoder_layers": m.num_decoder_layers or m.num_layers,
                "num_decoder_heads": m.get("num_decoder_heads") or m.num_heads,
                "decoder_d_ff": m.get("decoder_d_ff") or m.d_ff}
        theirs = {"num_decoder_layers": p.num_layers, "num_decoder_heads": p.num_heads,
                  "decoder_d_ff": p.d_ff}
        if ours != theirs:  # both stacks take the pretrained XLM's blocks
            raise ConfigError(
                f"config.init_from={init_from!r} holds an XLM of {p.num_layers} layers, "
                f"{p.num_heads} heads and d_ff {p.d_ff}, which start both stacks; this decoder "
                f"has {ours}. Set config.model.num_decoder_layers, num_decoder_heads and "
                "decoder_d_ff to 0 (the encoder's).")
        return xlm_translation_params(params)
