"""BART pretraining (Lewis et al. 2019, §2.2): reconstruct the original document from its noised
version, a token cross-entropy over the decoder's outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from textgen_jax.objectives.clm import cross_entropy_sums


def denoising_loss_fn(model, params, batch: dict[str, jax.Array], rng: jax.Array | None,
                      deterministic: bool) -> dict[str, jax.Array]:
    """The loop's view of the objective: sums over a `bart_denoising_dataset` batch.

    Returns {'loss', 'correct', 'tokens'} summed over the real target tokens ([bos] + document
    + [eos]), so 'accuracy' is the reconstruction token accuracy.
    """
    rngs = None if deterministic else {"dropout": rng}
    # The decoder's real tokens are the targets' (decoder_inputs is eos + targets[:-1]).
    logits = model.apply({"params": params}, {**batch, "decoder_segment_ids": batch["target_mask"]},
                         deterministic=deterministic, rngs=rngs)["logits"]
    return cross_entropy_sums(logits, batch["targets"],
                              batch["target_mask"].astype(jnp.float32))
