"""XLM's objectives (Lample & Conneau 2019, §3): causal LM, masked LM and translation LM.

The model is `Xlm`; batches come from textgen_jax/data/multilingual.py and carry each token's
language id ('langs'), which the model adds as a language embedding.
"""

from __future__ import annotations

import jax

from textgen_jax.objectives.clm import causal_lm_loss
from textgen_jax.objectives.mlm import masked_lm_loss


def xlm_clm_loss_fn(model, params, batch: dict[str, jax.Array], rng: jax.Array | None,
                    deterministic: bool) -> dict[str, jax.Array]:
    """Next-token sums over an `xlm_clm_dataset` batch; attention stays within a document."""
    rngs = None if deterministic else {"dropout": rng}
    logits = model.apply({"params": params}, batch, deterministic=deterministic,
                         rngs=rngs)["logits"]
    return causal_lm_loss(logits, batch["inputs"], batch["segment_ids"])


def xlm_mlm_loss_fn(model, params, batch: dict[str, jax.Array], rng: jax.Array | None,
                    deterministic: bool) -> dict[str, jax.Array]:
    """Masked-token sums over an `xlm_mlm_dataset` or `tlm_dataset` batch (no NSP, §3.2)."""
    rngs = None if deterministic else {"dropout": rng}
    logits = model.apply({"params": params}, batch, deterministic=deterministic,
                         rngs=rngs)["logits"]
    return masked_lm_loss(logits, batch["mlm_labels"])
