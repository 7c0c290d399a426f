"""Fine-tuning heads shared by the architectures: a sequence classifier over one token's state.

Each model with `num_labels` > 0 reads one hidden state per row (BERT its pooled [CLS], GPT and
GPT-2 the extract token, XLM the first token, BART the decoder's final eos) and returns
'classification_logits' beside its LM logits.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from textgen_jax.models.layers import DenseGeneral, TransformerConfig


def gather_positions(x: jax.Array, positions: jax.Array) -> jax.Array:
    """x [batch, length, embed], positions [batch] int -> [batch, embed]."""
    return jnp.take_along_axis(x, positions[:, None, None].astype(jnp.int32), axis=1)[:, 0]


def classifier(cfg: TransformerConfig, num_labels: int, name: str = "classifier") -> DenseGeneral:
    """The linear output layer of a sequence classifier (GPT §3.3's W_y; BERT's classifier)."""
    return DenseGeneral(num_labels, kernel_axes=("embed", None), dtype=cfg.dtype,
                        kernel_init=nn.initializers.normal(cfg.init_std), name=name)


class ClassificationHead(nn.Module):
    """state [batch, embed] -> float32 logits [batch, num_labels] through dense, tanh and an
    output projection (BART's BartClassificationHead)."""

    cfg: TransformerConfig
    num_labels: int

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        cfg = self.cfg
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        x = jnp.tanh(classifier(cfg, cfg.d_model, "dense")(x))
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        return classifier(cfg, self.num_labels, "out_proj")(x).astype(jnp.float32)
