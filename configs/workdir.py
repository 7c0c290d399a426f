"""The config a workdir was last run with (its config.json): to continue an imported checkpoint
(`textgen-jax import-hf`) or any run with its own model, changing only what the flags say.

    textgen-jax import-hf path/to/gpt2 --workdir runs/gpt2_hf
    textgen-jax train --config configs/workdir.py:runs/gpt2_hf --workdir runs/gpt2_hf \
      --config.train.num_steps=2000 --config.data.dataset=lm1b

The argument after the colon is the workdir; its model section must stay as saved (the
checkpoint's shapes), everything else can be overridden.
"""

import ml_collections

from textgen_jax.config import from_dict
from textgen_jax.training.checkpoint import read_config


def get_config(workdir: str) -> ml_collections.ConfigDict:
    saved = read_config(workdir)
    if saved is None:
        raise FileNotFoundError(f"{workdir}/config.json not found: configs/workdir.py:WORKDIR "
                                "needs a workdir that was trained or imported (import-hf).")
    return from_dict(saved)
