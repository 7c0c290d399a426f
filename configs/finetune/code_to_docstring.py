"""Code-to-docstring generation on the embedded corpus (no download): a stdlib function's
source in, its docstring out, scored by ROUGE-1/2/L and BLEU of beam-search outputs. The
seq2seq task every generator runs with no dataset to fetch.

  textgen-jax train --config configs/bart.py:tiny --workdir runs/bart_tiny   # pretrain first
  textgen-jax train --config configs/finetune/code_to_docstring.py:bart \
    --config.init_from=runs/bart_tiny --workdir runs/bart_tiny_docstrings

Presets: bart, gpt, gpt2 (tiny; GPT/GPT-2 read `[bos] code [sep] docstring [eos]` and learn
only the docstring's tokens), or arch-size such as bart-base. Label smoothing 0.1; evaluation
decodes 4 batches of 16 with beam 4, at most 32 new tokens, no repeated trigram.
"""

from pathlib import Path

import ml_collections

from textgen_jax.finetune.presets import finetune_config


def get_config(arch: str = "bart") -> ml_collections.ConfigDict:
    config = finetune_config(Path(__file__).resolve().parents[1], "code_to_docstring", arch)
    config.task.update(max_target_length=32, no_repeat_ngram_size=3)
    if "-" not in arch:  # tiny: a beam search of 64 examples keeps each evaluation short
        config.train.eval_batches = 4
    return config
