"""The models' forward pass on fine-tuning rows (finetune/pipelines.py): one dispatcher over
each architecture's call signature, shared by the sequence, per-token and seq2seq objectives.
"""

from __future__ import annotations

import functools

import jax


def model_outputs(arch: str, model, params, rows: dict[str, jax.Array], rng=None,
                  deterministic: bool = True) -> dict[str, jax.Array]:
    """The model's outputs on fine-tuning rows [B, L], called with each architecture's inputs:
    always a mapping ('logits' [B, L, vocab], and the head's outputs where it has one).

    Seq2seq rows (they hold decoder_inputs and target_mask, not decoder_mask) mask the decoder
    with target_mask; an XLM row with decoder_inputs runs XLM's encoder-decoder (XLM §5).
    """
    apply = functools.partial(model.apply, {"params": params}, deterministic=deterministic,
                              rngs=None if deterministic else {"dropout": rng})
    if arch == "bert":
        outputs = apply(rows["inputs"], rows["token_types"], rows["positions"],
                        rows["attention_ids"])
    elif arch == "xlm" and "decoder_inputs" not in rows:
        outputs = apply(rows["inputs"], rows["langs"], rows["positions"], rows["attention_ids"])
    elif arch == "xlm":
        outputs = apply(rows["inputs"], rows["decoder_inputs"], input_ids_mask=rows["input_mask"],
                        decoder_mask=rows["target_mask"], langs=rows["langs"],
                        decoder_langs=rows["decoder_langs"])
    elif arch in ("gpt", "gpt2"):
        outputs = apply(rows["inputs"], rows["attention_ids"], rows["positions"],
                        extract_positions=rows.get("extract_positions"))
    elif arch == "bart":
        outputs = apply(rows["inputs"], rows["decoder_inputs"], input_ids_mask=rows["input_mask"],
                        decoder_mask=rows.get("decoder_mask", rows.get("target_mask")),
                        extract_positions=rows.get("extract_positions"))
    else:
        raise ValueError(f"config.model.arch={arch!r} has no fine-tuning inputs; use one of "
                         "bert, xlm, gpt, gpt2, bart.")
    # A model without a head returns its logits alone.
    return outputs if isinstance(outputs, dict) else {"logits": outputs}
