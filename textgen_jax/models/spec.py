"""What code outside models/ may ask of an architecture, so that it never branches on its name.

Every model takes one batch mapping and returns a mapping of named outputs (the contract):

  inputs               [batch, length] int   token ids (the encoder's, for an encoder-decoder)
  segment_ids          [batch, length] int   0 = padding; tokens attend only within one id
  positions            [batch, length] int   default 0, 1, ...
  token_types          [batch, length] int   BERT's segment A (0) / B (1)
  langs                [batch, length] int   XLM's language ids
  decoder_inputs       [batch, target] int   an encoder-decoder's decoder tokens
  decoder_segment_ids  [batch, target] int   0 = padding
  decoder_langs        [batch, target] int   XLM's translation model's target languages
  extract_positions    [batch] int           where a sequence classifier reads its state

Outputs: 'logits' [batch, length, vocab] (the LM or MLM head), and where the model has them
'nsp_logits', 'classification_logits', 'token_logits', 'start_logits', 'end_logits'.

An `ArchitectureSpec` is bound to one config.model (XLM is an encoder, a causal LM or a
translation model by its config) and says how to build the model, its kind, which batch keys it
reads, how it frames texts, pairs, prompts and mask-filling with its special tokens, and how
another workdir's params start it (init_from).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from textgen_jax import ops
from textgen_jax.config import ConfigError
from textgen_jax.models.layers import TransformerConfig

ENCODER, DECODER, ENCODER_DECODER = "encoder", "decoder", "encoder-decoder"
# Every key of the contract a model may read (see the module docstring).
MODEL_KEYS = ("inputs", "segment_ids", "positions", "token_types", "langs", "decoder_inputs",
              "decoder_segment_ids", "decoder_langs", "extract_positions")


def can_generate(spec_or_model: Any) -> bool:
    """Whether a spec's model (or a built model: every model has `kind` and `uses_languages`)
    has a next-token head to decode with: decoders and encoder-decoders."""
    return spec_or_model.kind != ENCODER


class ArchitectureSpec:
    """One architecture as the rest of the stack sees it; subclasses live beside their model."""

    name: ClassVar[str]
    # Hugging Face: config.json's model_type, the class we import from and export to, their
    # base model's prefix (absent from headless checkpoints), our heads that a checkpoint of
    # another head class lacks ('/'-joined path prefixes; initialised and reported), and the
    # classes of our per-token heads (config.model.head -> class).
    hf_model_type: ClassVar[str]
    hf_class: ClassVar[str]
    hf_base_prefix: ClassVar[str]
    hf_optional_heads: ClassVar[tuple[str, ...]] = ()
    hf_head_classes: ClassVar[dict[str, str]] = {}
    # The batch keys (MODEL_KEYS) the model reads; rows built for it keep only these.
    batch_keys: ClassVar[tuple[str, ...]]
    # Whether batches carry language ids (XLM): decoding and fill-mask take a language then.
    uses_languages: ClassVar[bool] = False

    def __init__(self, model_config: ml_collections.ConfigDict):
        self.model_config = model_config

    @property
    def kind(self) -> str:
        """ENCODER, DECODER or ENCODER_DECODER."""
        raise NotImplementedError

    @property
    def can_generate(self) -> bool:
        """A next-token head to decode with: decoders and encoder-decoders."""
        return can_generate(self)

    @property
    def has_masked_lm(self) -> bool:
        """An MLM head over its 'logits' (fill-mask): the encoders."""
        return self.kind == ENCODER

    def build(self, vocab_size: int) -> nn.Module:
        """The Flax module, sized by the config and the vocabulary."""
        raise NotImplementedError

    def transformer_config(self, vocab_size: int) -> TransformerConfig:
        m = self.model_config
        return TransformerConfig(
            vocab_size=vocab_size, num_layers=m.num_layers, d_model=m.d_model,
            num_heads=m.num_heads, d_ff=m.d_ff, max_len=m.max_len, dropout=m.dropout,
            attention_dropout=m.attention_dropout, layer_norm_eps=m.layer_norm_eps,
            init_std=m.init_std, dtype=jnp.dtype(ops.compute_dtype(m.dtype)), activation=m.activation,
            remat=m.remat, scan_layers=m.scan_layers,
            attention=m.get("attention", "auto"))  # configs saved before the key

    def select(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """`row` without the model keys this architecture does not read (other keys, such as
        targets and labels, stay)."""
        return {key: value for key, value in row.items()
                if key not in MODEL_KEYS or key in self.batch_keys}

    # ---- framing with special tokens ------------------------------------------------------

    def pair_layout(self, tokenizer, has_b: bool) -> tuple[list[int], list[int], list[int]]:
        """(tokens before text A, between A and B — or after A alone —, after B)."""
        raise NotImplementedError

    def prompt_ids(self, tokenizer, ids: Sequence[int]) -> list[int]:
        """The token ids a prompt's text `ids` is fed as to `generate`: a decoder's document
        start, or an encoder-decoder's source as it was trained."""
        start = tokenizer.present(tokenizer.bos_id)  # a tokenizer may lack bos or eos
        if self.kind == ENCODER_DECODER:
            return [*start, *ids, *tokenizer.present(tokenizer.eos_id)]
        return [*start, *ids]

    def masked_text_ids(self, tokenizer, ids: Sequence[int]) -> list[int]:
        """A text with <mask> tokens framed as the MLM head was trained (fill-mask): one token
        on each side."""
        before, between, _ = self.pair_layout(tokenizer, has_b=False)
        return [*before, *ids, *between]

    # ---- Hugging Face configs ------------------------------------------------------------------

    @staticmethod
    def model_config_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
        """Our config.model leaves (besides arch, vocab_size and head) from their config.json
        dict; ValueError for a variant we cannot run exactly."""
        raise NotImplementedError

    def hf_config(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
        """Their config.json keys (besides model_type, architectures and vocab_size) for our
        config; ValueError for what transformers cannot express."""
        raise NotImplementedError

    def update_config_from_hf(self, config: ml_collections.ConfigDict,
                              hf: Mapping[str, Any]) -> None:
        """Sets what config.json says beyond config.model (XLM: its languages)."""

    def hf_extra_tensors(self) -> dict[str, Any]:
        """Their state-dict tensors that are no parameter of ours (XLM's fixed sinusoids)."""
        return {}

    # ---- sizes and surgery --------------------------------------------------------------------

    @property
    def shape_keys(self) -> tuple[str, ...]:
        """The config.model leaves whose change makes a checkpoint's parameters unusable
        (scan_layers: the tree's layout, per layer or stacked); an encoder-decoder's decoder
        has its own depth, heads and FFN width."""
        keys = ("arch", "num_layers", "d_model", "num_heads", "d_ff", "max_len", "vocab_size",
                "scan_layers")
        if self.kind == ENCODER_DECODER:
            keys += ("num_decoder_layers", "num_decoder_heads", "decoder_d_ff")
        return keys

    def tensor_split_sizes(self) -> dict[str, int]:
        """The sizes a mesh's 'tensor' axis splits (heads, FFN widths), by config key."""
        m = self.model_config
        sizes = {"config.model.num_heads": m.num_heads, "config.model.d_ff": m.d_ff}
        if self.kind == ENCODER_DECODER:  # 0: the encoder's
            sizes["config.model.num_decoder_heads"] = m.get("num_decoder_heads") or m.num_heads
            sizes["config.model.decoder_d_ff"] = m.get("decoder_d_ff") or m.d_ff
        return sizes

    def attention_layer_count(self) -> int:
        """Attention layers over T keys per token, for the FLOP count of MFU: one per layer, and
        for an encoder-decoder's decoder two (self-attention and cross-attention)."""
        m = self.model_config
        if self.kind == ENCODER_DECODER:
            return m.num_layers + 2 * (m.num_decoder_layers or m.num_layers)
        return m.num_layers

    def params_from(self, pretrained: "ArchitectureSpec", params: dict[str, Any],
                    init_from: str) -> dict[str, Any]:
        """`params` of a `pretrained` model (unstacked layers) laid out as this model's, for
        config.init_from; ConfigError when they cannot start it."""
        if pretrained.name != self.name:
            raise ConfigError(f"config.init_from={init_from!r} holds a {pretrained.name} "
                             f"checkpoint; this config trains {self.name} (config.model.arch). "
                             f"Start from a {self.name} workdir, or set config.model.arch to "
                             "match.")
        return params
