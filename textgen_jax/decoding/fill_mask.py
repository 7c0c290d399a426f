"""Fill-mask: the most likely tokens at each <mask> of a text, for models with an MLM head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from textgen_jax import models


def language_id(config: ml_collections.ConfigDict, language: str) -> int:
    """An XLM model's index of `language` ('' = its first language)."""
    languages = tuple(config.data.get("languages", ())) or ("",)
    if language and language not in languages:
        raise ValueError(f"language={language!r} is not one of the model's languages "
                         f"{languages} (config.data.languages).")
    return languages.index(language) if language else 0


def _mlm_logits(loaded, ids: list[int], language: str) -> jax.Array:
    """float32 [len(ids) + 2, vocab] logits of the text framed by one token on each side, as
    the architecture was trained (`ArchitectureSpec.masked_text_ids`)."""
    config = loaded.config
    spec = models.spec_for(config.model)
    if not spec.has_masked_lm:
        raise ValueError(f"config.model.arch={config.model.arch!r} (causal="
                         f"{config.model.causal}) has no masked-LM head; fill-mask needs a bert "
                         "or a non-causal xlm model.")
    inputs = jnp.asarray([spec.masked_text_ids(loaded.tokenizer, ids)], jnp.int32)
    batch = {"inputs": inputs}  # BERT's token types default to segment A (§3.1)
    if spec.uses_languages:
        batch["langs"] = jnp.full_like(inputs, language_id(config, language))
    return loaded.model.apply({"params": loaded.params}, batch)["logits"][0]


def fill_mask(loaded, text: str, top_k: int = 5,
              language: str = "") -> list[list[tuple[str, float]]]:
    """For each '<mask>' of `text`, in order, the top_k (token text, probability) fillers.

    `loaded` is a `textgen_jax.load` result; `language` picks an XLM model's language ('' =
    its first). Raises ValueError when the text has no <mask> or the model no MLM head.
    """
    tok = loaded.tokenizer
    if not tok.has_piece("<mask>"):
        raise ValueError("The model's tokenizer has no '<mask>' piece, so no text can mark a "
                         "token to fill in; fill-mask needs a model trained with masked LM.")
    ids = tok.encode(text)
    if tok.mask_id not in ids:
        raise ValueError(f"The text {text!r} has no <mask>; write <mask> where a token is "
                         "to be filled in.")
    max_len = loaded.config.model.max_len - 2
    if len(ids) > max_len:
        raise ValueError(f"The text is {len(ids)} tokens, more than the model's {max_len} "
                         "(config.model.max_len minus 2 for the framing tokens).")
    logits = _mlm_logits(loaded, ids, language)
    probabilities = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))
    fillers = []
    for position in np.flatnonzero(np.asarray(ids) == tok.mask_id):
        row = probabilities[position + 1]  # after the opening framing token
        best = np.argsort(-row)[:top_k]
        fillers.append([(tok.decode([int(i)]), float(row[i])) for i in best])
    return fillers
