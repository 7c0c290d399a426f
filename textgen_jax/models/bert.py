"""BERT (Devlin et al. 2019): a post-LN bidirectional encoder with MLM and NSP heads.

Inputs are `[CLS] A [SEP] B [SEP]` rows. Each token's embedding is the sum of its word, learned
position and token-type (segment A = 0, B = 1) embeddings, then a LayerNorm (§3.2, Fig. 2).
The pooled output is tanh(dense(first token)); the MLM head (dense, GELU, LayerNorm) ties its
decoder to the word embeddings and adds an output bias per vocabulary entry, as the reference
implementation does. Names map onto Hugging Face's BertForPreTraining (tests/models/test_bert.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from textgen_jax.models import hf as hf_lib
from textgen_jax.models.heads import classifier, token_head_outputs
from textgen_jax.models.layers import (DenseGeneral, Embed, LayerNorm, TransformerBlock,
                                       TransformerConfig, activation_fn, attention_mask,
                                       layer_stack)
from textgen_jax.models.spec import ENCODER, ArchitectureSpec
from textgen_jax.ops import add_bias

NUM_NSP_CLASSES = 2  # class 0: B is A's true next segment, class 1: B is random (reference order)


class MaskedLMHead(nn.Module):
    """hidden [batch, length, embed] -> float32 logits [batch, length, vocab] (§3.1, Task #1)."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x: jax.Array, token_embed: Embed) -> jax.Array:
        cfg = self.cfg
        x = DenseGeneral(cfg.d_model, kernel_axes=("embed", None), dtype=cfg.dtype,
                         kernel_init=nn.initializers.normal(cfg.init_std), name="transform")(x)
        x = activation_fn(cfg.activation)(x)
        x = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name="transform_norm")(x)
        bias = self.param("output_bias",
                          nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                          (cfg.vocab_size,), jnp.float32)
        return add_bias(token_embed.attend(x), bias)


class Bert(nn.Module):
    """Encoder + pooler + MLM and NSP heads, as pretrained in the paper (§3.1)."""

    cfg: TransformerConfig
    type_vocab_size: int = 2
    # > 0 adds a sequence classifier on the pooled output (§4.1; BertForSequenceClassification).
    num_labels: int = 0
    # A per-token head instead (heads.TOKEN_HEADS): 'token_classification' (num_labels tags,
    # BertForTokenClassification) or 'question_answering' (BertForQuestionAnswering).
    head: str = ""
    # An encoder (models/spec.py): no next-token head, so `generate` refuses it.
    kind: ClassVar[str] = ENCODER
    uses_languages: ClassVar[bool] = False

    def example_batch(self, seq_len: int) -> dict[str, jax.Array]:
        """A minimal batch, for `init` (shapes only matter)."""
        return {"inputs": jnp.ones((1, seq_len), jnp.int32),
                "token_types": jnp.zeros((1, seq_len), jnp.int32)}

    @nn.compact
    def __call__(self, batch: Mapping[str, jax.Array],
                 deterministic: bool = True) -> dict[str, jax.Array]:
        """batch['inputs'] [batch, length] int ->
        {'logits': the MLM logits, float32 [batch, length, vocab], 'nsp_logits': float32
        [batch, 2]}, and 'classification_logits' float32 [batch, num_labels] when
        num_labels > 0; with a `head`, that head's outputs instead ('token_logits' [batch,
        length, num_labels], or 'start_logits' and 'end_logits' [batch, length];
        models/heads.py).

        Optional keys: 'token_types' [batch, length] (0 = segment A, the default; 1 = B);
        'segment_ids' [batch, length], 0 for padding, which no token attends to;
        tokens attend only to tokens with the same id (default all ones). 'positions' default
        to 0, 1, ...
        """
        cfg = self.cfg
        inputs = batch["inputs"]
        segment_ids = batch.get("segment_ids", jnp.ones_like(inputs))
        positions = batch.get("positions",
                              jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape))
        token_types = batch.get("token_types", jnp.zeros_like(inputs))
        embed = lambda num, axes, name: Embed(num, cfg.d_model, table_axes=axes,  # noqa: E731
                                              init_std=cfg.init_std, dtype=cfg.dtype, name=name)
        token_embed = embed(cfg.vocab_size, ("vocab", "embed"), "token_embed")
        x = (token_embed(inputs)
             + embed(cfg.max_len, ("length", "embed"), "position_embed")(positions)
             + embed(self.type_vocab_size, (None, "embed"), "token_type_embed")(token_types))
        x = LayerNorm(cfg.layer_norm_eps, cfg.dtype, name="embed_norm")(x)
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

        mask = attention_mask(segment_ids, segment_ids, causal=False)
        x = layer_stack(TransformerBlock, cfg.num_layers, cfg.scan_layers, cfg=cfg,
                        pre_norm=False, residual_init_std=cfg.init_std)(x, mask, deterministic)

        pooled = jnp.tanh(DenseGeneral(
            cfg.d_model, kernel_axes=("embed", None), dtype=cfg.dtype,
            kernel_init=nn.initializers.normal(cfg.init_std), name="pooler")(x[:, 0]))
        nsp_logits = DenseGeneral(
            NUM_NSP_CLASSES, kernel_axes=("embed", None), dtype=cfg.dtype,
            kernel_init=nn.initializers.normal(cfg.init_std), name="nsp")(pooled)
        mlm_logits = MaskedLMHead(cfg, name="mlm")(x, token_embed)
        outputs = {"logits": nn.with_logical_constraint(mlm_logits, ("batch", "length", "vocab")),
                   "nsp_logits": nsp_logits.astype(jnp.float32)}
        if self.head:
            outputs.update(token_head_outputs(cfg, self.head, self.num_labels, x, deterministic))
        elif self.num_labels:
            pooled = nn.Dropout(cfg.dropout)(pooled, deterministic=deterministic)
            outputs["classification_logits"] = classifier(cfg, self.num_labels)(
                pooled).astype(jnp.float32)
        return outputs


class BertSpec(ArchitectureSpec):
    """`[CLS] A [SEP] B [SEP]` rows with token types (§3.2); fill-mask frames `[CLS] text
    [SEP]` (§3.1)."""

    name = "bert"
    kind = Bert.kind
    batch_keys = ("inputs", "segment_ids", "positions", "token_types")
    hf_model_type, hf_class, hf_base_prefix = "bert", "BertForPreTraining", "bert."
    hf_optional_heads = ("pooler/", "nsp/", "mlm/", "classifier/", "qa_outputs/")
    hf_head_classes = {"token_classification": "BertForTokenClassification",
                       "question_answering": "BertForQuestionAnswering"}

    def build(self, vocab_size: int) -> Bert:
        m = self.model_config
        return Bert(self.transformer_config(vocab_size), num_labels=m.num_labels, head=m.head)

    def pair_layout(self, tokenizer, has_b: bool) -> tuple[list[int], list[int], list[int]]:
        return [tokenizer.cls_id], [tokenizer.sep_id], [tokenizer.sep_id] if has_b else []

    @staticmethod
    def model_config_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
        hf_lib.require(hf, "position_embedding_type", "absolute", "BERT's learned positions")
        hf_lib.require(hf, "type_vocab_size", 2, "segments A and B")
        return dict(num_layers=hf["num_hidden_layers"], d_model=hf["hidden_size"],
                    num_heads=hf["num_attention_heads"], d_ff=hf["intermediate_size"],
                    max_len=hf["max_position_embeddings"],
                    dropout=hf.get("hidden_dropout_prob", 0.1),
                    attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                    layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                    init_std=hf.get("initializer_range", 0.02),
                    activation=hf_lib.activation_from_hf(hf.get("hidden_act", "gelu"), "bert"),
                    num_labels=hf_lib.num_labels(hf) if hf_lib.is_classifier(hf) else 0)

    def hf_config(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
        m = config.model
        hf = dict(num_hidden_layers=m.num_layers, hidden_size=m.d_model,
                  num_attention_heads=m.num_heads, intermediate_size=m.d_ff,
                  max_position_embeddings=m.max_len, hidden_dropout_prob=m.dropout,
                  attention_probs_dropout_prob=m.attention_dropout,
                  layer_norm_eps=m.layer_norm_eps, initializer_range=m.init_std,
                  hidden_act=hf_lib.activation_to_hf(m.activation), type_vocab_size=2)
        if m.num_labels and not m.head:
            # An imported id2label of that size is kept.
            hf.update(architectures=["BertForSequenceClassification"], num_labels=m.num_labels)
        return hf
