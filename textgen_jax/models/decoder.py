"""The decoder-only causal LM shared by GPT (post-LN) and GPT-2 (pre-LN + final LayerNorm).

Token + learned position embeddings, causal self-attention blocks, and an output layer tied to
the token embedding. Packed documents stay apart through segment ids (0 = padding).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from textgen_jax.models import hf as hf_lib
from textgen_jax.models.heads import classifier, gather_positions
from textgen_jax.models.layers import (Embed, LayerNorm, TransformerBlock, TransformerConfig,
                                       attention_mask, cached_attention_mask, layer_stack)
from textgen_jax.models.spec import DECODER, ArchitectureSpec


class DecoderLM(nn.Module):
    """Causal LM; `pre_norm` picks GPT-2's pre-LN blocks with a final LayerNorm over GPT's
    post-LN blocks, `scale_residual_init` GPT-2's depth-scaled residual projections."""

    cfg: TransformerConfig
    pre_norm: bool = True
    scale_residual_init: bool = True
    # > 0: a sequence classifier on the state of each row's extract token (GPT §3.3).
    num_labels: int = 0
    kind: ClassVar[str] = DECODER
    uses_languages: ClassVar[bool] = False

    def example_batch(self, seq_len: int) -> dict[str, jax.Array]:
        """A minimal batch, for `init` (shapes only matter)."""
        return {"inputs": jnp.ones((1, seq_len), jnp.int32)}

    @nn.compact
    def __call__(self, batch: Mapping[str, jax.Array], deterministic: bool = True,
                 decode: bool = False) -> dict[str, jax.Array]:
        """batch['inputs'] [batch, length] int -> {'logits': float32 [batch, length, vocab]}.

        Optional keys: 'segment_ids' (0 = padding) keep packed documents apart; 'positions'
        restart per document. `decode` appends the inputs to the KV cache ('cache' collection,
        sized by `init` with decode=True) and attends over everything cached; pass the
        positions then. With num_labels > 0, also 'classification_logits': float32
        [batch, num_labels] of the state at batch['extract_positions'] [batch] (default: the
        last).
        """
        inputs = batch["inputs"]
        segment_ids = batch.get("segment_ids", jnp.ones_like(inputs))
        positions = batch.get("positions",
                              jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape))
        cfg = self.cfg
        token_embed = Embed(cfg.vocab_size, cfg.d_model, init_std=cfg.init_std, dtype=cfg.dtype,
                            name="token_embed")
        position_embed = Embed(cfg.max_len, cfg.d_model, table_axes=("length", "embed"),
                               init_std=cfg.init_std, dtype=cfg.dtype, name="position_embed")
        x = token_embed(inputs) + position_embed(positions)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

        if decode:
            mask, _ = cached_attention_mask(self, segment_ids)
        else:
            mask = attention_mask(segment_ids, segment_ids, causal=True)
        residual_init_std = cfg.init_std
        if self.scale_residual_init:
            # GPT-2 §2.3: residual projections scaled by 1/sqrt(N), N = 2 residual layers per block.
            residual_init_std /= np.sqrt(2 * cfg.num_layers)
        blocks = layer_stack(TransformerBlock, cfg.num_layers, cfg.scan_layers, cfg=cfg,
                             pre_norm=self.pre_norm, residual_init_std=residual_init_std)
        x = blocks(x, mask, deterministic, decode)
        if self.pre_norm:  # post-LN blocks already end in a LayerNorm
            x = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name="final_norm")(x)
        outputs = {"logits": nn.with_logical_constraint(token_embed.attend(x),
                                                        ("batch", "length", "vocab"))}
        if self.num_labels:
            extract_positions = batch.get("extract_positions",
                                          jnp.full(inputs.shape[:1], inputs.shape[1] - 1))
            state = nn.Dropout(cfg.dropout)(gather_positions(x, extract_positions),
                                            deterministic=deterministic)
            outputs["classification_logits"] = classifier(cfg, self.num_labels)(state).astype(
                jnp.float32)
        return outputs


class DecoderSpec(ArchitectureSpec):
    """GPT's and GPT-2's spec: a document opens with [bos]; fine-tuning rows are
    `start A delim B extract` (GPT §3.3), the classifier reading the extract token."""

    module: ClassVar[type[DecoderLM]]
    batch_keys = ("inputs", "segment_ids", "positions", "extract_positions")
    kind = DECODER
    hf_base_prefix = "transformer."

    def build(self, vocab_size: int) -> DecoderLM:
        return self.module(self.transformer_config(vocab_size),
                           num_labels=self.model_config.num_labels)

    def pair_layout(self, tokenizer, has_b: bool) -> tuple[list[int], list[int], list[int]]:
        start, end = tokenizer.present(tokenizer.bos_id), tokenizer.present(tokenizer.eos_id)
        if has_b:
            return start, [tokenizer.sep_id], end
        return start, end, []

    @staticmethod
    def _model_config_from_hf(hf: Mapping[str, Any], d_ff: int,
                              activation: str) -> dict[str, Any]:
        """The leaves GPT's and GPT-2's config.json spell alike."""
        return dict(num_layers=hf["n_layer"], d_model=hf["n_embd"], num_heads=hf["n_head"],
                    d_ff=d_ff, max_len=hf["n_positions"], dropout=hf.get("resid_pdrop", 0.1),
                    attention_dropout=hf.get("attn_pdrop", 0.1),
                    layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                    init_std=hf.get("initializer_range", 0.02), activation=activation)

    def hf_config(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
        m = config.model
        hf_lib.check_export(m.activation == "gelu_tanh",
                            f"config.model.activation={m.activation!r}",
                            "GPT and GPT-2 use the tanh GELU")
        return dict(n_layer=m.num_layers, n_embd=m.d_model, n_head=m.num_heads,
                    n_positions=m.max_len, resid_pdrop=m.dropout, embd_pdrop=m.dropout,
                    attn_pdrop=m.attention_dropout, layer_norm_epsilon=m.layer_norm_eps,
                    initializer_range=m.init_std)
