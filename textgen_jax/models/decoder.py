"""The decoder-only causal LM shared by GPT (post-LN) and GPT-2 (pre-LN + final LayerNorm).

Token + learned position embeddings, causal self-attention blocks, and an output layer tied to
the token embedding. Packed documents stay apart through segment ids (0 = padding).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from textgen_jax.models.heads import classifier, gather_positions
from textgen_jax.models.layers import (Embed, LayerNorm, TransformerBlock, TransformerConfig,
                                       attention_mask, cached_attention_mask, layer_stack)


class DecoderLM(nn.Module):
    """Causal LM; `pre_norm` picks GPT-2's pre-LN blocks with a final LayerNorm over GPT's
    post-LN blocks, `scale_residual_init` GPT-2's depth-scaled residual projections."""

    cfg: TransformerConfig
    pre_norm: bool = True
    scale_residual_init: bool = True
    # > 0: a sequence classifier on the state of each row's extract token (GPT §3.3).
    num_labels: int = 0

    def example_inputs(self, seq_len: int) -> tuple[jax.Array, ...]:
        """Arguments of a minimal call, for `init` (shapes only matter)."""
        return (jnp.ones((1, seq_len), jnp.int32),)

    @nn.compact
    def __call__(self, inputs: jax.Array, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None, deterministic: bool = True,
                 decode: bool = False, extract_positions: jax.Array | None = None
                 ) -> jax.Array | dict[str, jax.Array]:
        """inputs [batch, length] int -> float32 logits [batch, length, vocab].

        segment_ids (0 = padding) keep packed documents apart; positions restart per document.
        `decode` appends the inputs to the KV cache ('cache' collection, sized by `init` with
        decode=True) and attends over everything cached; pass the positions then.
        With num_labels > 0: {'logits': the LM logits, 'classification_logits': float32
        [batch, num_labels] of the state at extract_positions [batch] (default: the last)}.
        """
        cfg = self.cfg
        if segment_ids is None:
            segment_ids = jnp.ones_like(inputs)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
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
        logits = nn.with_logical_constraint(token_embed.attend(x), ("batch", "length", "vocab"))
        if not self.num_labels:
            return logits
        if extract_positions is None:
            extract_positions = jnp.full(inputs.shape[:1], inputs.shape[1] - 1)
        state = nn.Dropout(cfg.dropout)(gather_positions(x, extract_positions),
                                        deterministic=deterministic)
        return {"logits": logits,
                "classification_logits": classifier(cfg, self.num_labels)(state).astype(
                    jnp.float32)}
