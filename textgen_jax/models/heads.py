"""Fine-tuning heads shared by the architectures: a sequence classifier over one token's state,
and the per-token heads of the encoders.

Each model with `num_labels` > 0 reads one hidden state per row (BERT its pooled [CLS], GPT and
GPT-2 the extract token, XLM the first token, BART the decoder's final eos) and returns
'classification_logits' beside its LM logits. The encoders (BERT, XLM) with a `head` from
TOKEN_HEADS read every token's state instead (`token_head_outputs`).
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


# The encoders' per-token heads (config.model.head), keyed by the fine-tuning task kind each
# serves (finetune/tasks.py). Their layers are named as Hugging Face's *ForTokenClassification
# and *ForQuestionAnswering(Simple) name theirs, so weights map one to one.
TOKEN_HEADS = {"token_classification": "token_classification",
               "extractive_qa": "question_answering"}


def token_head_outputs(cfg: TransformerConfig, head: str, num_labels: int, x: jax.Array,
                       deterministic: bool = True) -> dict[str, jax.Array]:
    """The outputs of per-token head `head` on the encoder's states x [batch, length, embed].

    'token_classification': {'token_logits': float32 [batch, length, num_labels]} from dropout
      and a `classifier` Dense (BERT §4.3, NER).
    'question_answering': {'start_logits', 'end_logits': float32 [batch, length]} from a
      `qa_outputs` Dense(2): the start and end vectors S, E of BERT §4.2.
    Call it inside the model's compact method: its layers are the model's own.
    """
    if head == "token_classification":
        if num_labels < 1:
            raise ValueError(f"head {head!r} needs one logit per tag, but num_labels="
                             f"{num_labels}: set --config.model.num_labels to the task's tags.")
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        logits = classifier(cfg, num_labels)(x).astype(jnp.float32)
        return {"token_logits": nn.with_logical_constraint(logits, ("batch", "length", None))}
    if head == "question_answering":
        logits = classifier(cfg, 2, "qa_outputs")(x).astype(jnp.float32)
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}
    raise ValueError(f"config.model.head={head!r}: use '' (none) or one of "
                     f"{tuple(TOKEN_HEADS.values())}.")
