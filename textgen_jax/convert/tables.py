"""Where each of our parameters lives in a `transformers` state dict, per architecture.

One table serves import and export: a `Tensor` names our path, their key and how the array is
laid out there. torch `nn.Linear` weights are [out, in]; GPT's and GPT-2's `Conv1D` weights are
[in, out], with query, key and value fused into one `c_attn`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

LINEAR = "linear"  # torch [out, in] weight of our kernel [*in_dims, *out_dims]
CONV1D = "conv1d"  # [in, out] weight of our kernel
COPY = "copy"  # the same array, flattened or reshaped to ours
ROW = "row"  # ours [n] is theirs [1, n] (BART's final_logits_bias)


@dataclasses.dataclass(frozen=True)
class Tensor:
    ours: tuple[str, ...]  # path in our params
    theirs: str  # key in the transformers state dict
    layout: str = COPY
    in_dims: int = 1  # how many leading dims of our kernel are inputs (LINEAR, CONV1D)
    part: tuple[int, int] | None = None  # (index, count): a slice of theirs along its last axis


def _dense(ours: tuple[str, ...], theirs: str, layout: str, in_dims: int = 1) -> Iterator[Tensor]:
    yield Tensor((*ours, "kernel"), f"{theirs}.weight", layout, in_dims)
    yield Tensor((*ours, "bias"), f"{theirs}.bias")


def _norm(ours: tuple[str, ...], theirs: str) -> Iterator[Tensor]:
    yield Tensor((*ours, "scale"), f"{theirs}.weight")
    yield Tensor((*ours, "bias"), f"{theirs}.bias")


def _attention(ours: tuple[str, ...], names: Mapping[str, str], out: str) -> Iterator[Tensor]:
    """Separate torch Linear query/key/value (`names`: ours -> their prefix) and output."""
    for our_name, their_name in names.items():
        yield from _dense((*ours, our_name), their_name, LINEAR)
    yield from _dense((*ours, "out"), out, LINEAR, in_dims=2)


def _mlp(ours: tuple[str, ...], fc_in: str, fc_out: str, layout: str) -> Iterator[Tensor]:
    yield from _dense((*ours, "mlp", "fc_in"), fc_in, layout)
    yield from _dense((*ours, "mlp", "fc_out"), fc_out, layout)


def _gpt_block(i: int, prefix: str) -> Iterator[Tensor]:
    """GPT and GPT-2 blocks: fused Conv1D c_attn, Conv1D projections, ln_1 and ln_2."""
    block, their = (f"block_{i}",), f"{prefix}.h.{i}"
    for index, name in enumerate(("query", "key", "value")):
        yield Tensor((*block, "attention", name, "kernel"), f"{their}.attn.c_attn.weight", CONV1D,
                     part=(index, 3))
        yield Tensor((*block, "attention", name, "bias"), f"{their}.attn.c_attn.bias",
                     part=(index, 3))
    yield from _dense((*block, "attention", "out"), f"{their}.attn.c_proj", CONV1D, in_dims=2)
    yield from _norm((*block, "attention_norm"), f"{their}.ln_1")
    yield from _mlp(block, f"{their}.mlp.c_fc", f"{their}.mlp.c_proj", CONV1D)
    yield from _norm((*block, "mlp_norm"), f"{their}.ln_2")


def gpt2(model: Mapping[str, Any]) -> Iterator[Tensor]:
    yield Tensor(("token_embed", "embedding"), "transformer.wte.weight")
    yield Tensor(("position_embed", "embedding"), "transformer.wpe.weight")
    for i in range(model["num_layers"]):
        yield from _gpt_block(i, "transformer")
    yield from _norm(("final_norm",), "transformer.ln_f")


def gpt(model: Mapping[str, Any]) -> Iterator[Tensor]:
    yield Tensor(("token_embed", "embedding"), "transformer.tokens_embed.weight")
    yield Tensor(("position_embed", "embedding"), "transformer.positions_embed.weight")
    for i in range(model["num_layers"]):
        yield from _gpt_block(i, "transformer")


def _fine_tuning_head(model: Mapping[str, Any]) -> Iterator[Tensor]:
    """The head of config.model.head (models/heads.py), else the sequence classifier of
    num_labels: `qa_outputs` or `classifier`, named as in transformers' *ForQuestionAnswering,
    *ForTokenClassification and BertForSequenceClassification."""
    if model.get("head") == "question_answering":
        yield from _dense(("qa_outputs",), "qa_outputs", LINEAR)
    elif model.get("num_labels"):
        yield from _dense(("classifier",), "classifier", LINEAR)


def bert(model: Mapping[str, Any]) -> Iterator[Tensor]:
    embeddings = "bert.embeddings"
    yield Tensor(("token_embed", "embedding"), f"{embeddings}.word_embeddings.weight")
    yield Tensor(("position_embed", "embedding"), f"{embeddings}.position_embeddings.weight")
    yield Tensor(("token_type_embed", "embedding"), f"{embeddings}.token_type_embeddings.weight")
    yield from _norm(("embed_norm",), f"{embeddings}.LayerNorm")
    for i in range(model["num_layers"]):
        block, their = (f"block_{i}",), f"bert.encoder.layer.{i}"
        yield from _attention((*block, "attention"),
                              {name: f"{their}.attention.self.{name}"
                               for name in ("query", "key", "value")},
                              f"{their}.attention.output.dense")
        yield from _norm((*block, "attention_norm"), f"{their}.attention.output.LayerNorm")
        yield from _mlp(block, f"{their}.intermediate.dense", f"{their}.output.dense", LINEAR)
        yield from _norm((*block, "mlp_norm"), f"{their}.output.LayerNorm")
    yield from _dense(("pooler",), "bert.pooler.dense", LINEAR)
    yield from _dense(("nsp",), "cls.seq_relationship", LINEAR)
    yield from _dense(("mlm", "transform"), "cls.predictions.transform.dense", LINEAR)
    yield from _norm(("mlm", "transform_norm"), "cls.predictions.transform.LayerNorm")
    yield Tensor(("mlm", "output_bias"), "cls.predictions.bias")
    yield from _fine_tuning_head(model)


def xlm(model: Mapping[str, Any]) -> Iterator[Tensor]:
    yield Tensor(("token_embed", "embedding"), "transformer.embeddings.weight")
    if not model["sinusoidal_positions"]:
        yield Tensor(("position_embed", "embedding"), "transformer.position_embeddings.weight")
    if model["num_languages"] > 1:
        yield Tensor(("language_embed", "embedding"), "transformer.lang_embeddings.weight")
    yield from _norm(("embed_norm",), "transformer.layer_norm_emb")
    for i in range(model["num_layers"]):
        block, their = (f"block_{i}",), f"transformer.attentions.{i}"
        yield from _attention((*block, "attention"),
                              {"query": f"{their}.q_lin", "key": f"{their}.k_lin",
                               "value": f"{their}.v_lin"}, f"{their}.out_lin")
        yield from _norm((*block, "attention_norm"), f"transformer.layer_norm1.{i}")
        yield from _mlp(block, f"transformer.ffns.{i}.lin1", f"transformer.ffns.{i}.lin2", LINEAR)
        yield from _norm((*block, "mlp_norm"), f"transformer.layer_norm2.{i}")
    yield Tensor(("output_bias",), "pred_layer.proj.bias")
    if model.get("head"):  # XLM's sequence classifier (a SequenceSummary) is not mapped
        yield from _fine_tuning_head(model)


def bart(model: Mapping[str, Any]) -> Iterator[Tensor]:
    yield Tensor(("token_embed", "embedding"), "model.shared.weight")
    depths = {"encoder": model["num_layers"],
              "decoder": model["num_decoder_layers"] or model["num_layers"]}
    for stack, depth in depths.items():
        their_stack = f"model.{stack}"
        yield Tensor((stack, "position_embed", "embedding"),
                     f"{their_stack}.embed_positions.weight")
        yield from _norm((stack, "embed_norm"), f"{their_stack}.layernorm_embedding")
        for i in range(depth):
            block, their = (stack, f"block_{i}"), f"{their_stack}.layers.{i}"
            projections = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}
            yield from _attention((*block, "attention"),
                                  {o: f"{their}.self_attn.{t}" for o, t in projections.items()},
                                  f"{their}.self_attn.out_proj")
            yield from _norm((*block, "attention_norm"), f"{their}.self_attn_layer_norm")
            if stack == "decoder":
                yield from _attention((*block, "cross_attention"),
                                      {o: f"{their}.encoder_attn.{t}"
                                       for o, t in projections.items()},
                                      f"{their}.encoder_attn.out_proj")
                yield from _norm((*block, "cross_attention_norm"),
                                 f"{their}.encoder_attn_layer_norm")
            yield from _mlp(block, f"{their}.fc1", f"{their}.fc2", LINEAR)
            yield from _norm((*block, "mlp_norm"), f"{their}.final_layer_norm")
    yield Tensor(("final_logits_bias",), "final_logits_bias", ROW)


TABLES = {"gpt2": gpt2, "gpt": gpt, "bert": bert, "xlm": xlm, "bart": bart}

# Their tensors tied to one of the table (same values): a checkpoint may hold any one of them.
TIED = {
    "gpt2": {"transformer.wte.weight": ("lm_head.weight",)},
    "gpt": {"transformer.tokens_embed.weight": ("lm_head.weight",)},
    "bert": {"bert.embeddings.word_embeddings.weight": ("cls.predictions.decoder.weight",),
             "cls.predictions.bias": ("cls.predictions.decoder.bias",)},
    "xlm": {"transformer.embeddings.weight": ("pred_layer.proj.weight",)},
    "bart": {"model.shared.weight": ("lm_head.weight", "model.encoder.embed_tokens.weight",
                                     "model.decoder.embed_tokens.weight")},
}
# Suffixes of their keys that are fixed buffers, never parameters (XLM's sinusoidal table too).
BUFFERS = (".attn.bias", ".attn.masked_bias", "position_ids",
           "transformer.position_embeddings.weight")
