"""XSum extreme summarization (BART §3.4, §5.3): a BBC article in, its one-sentence summary
out, scored by ROUGE-1/2/L (rouge-score) of beam-search summaries.

  textgen-jax train --config configs/finetune/xsum.py:bart-base \
    --config.init_from=runs/bart_base_hf --config.data.data_dir=gs://BUCKET/tfds \
    --workdir runs/bart_base_xsum

TFDS's xsum needs its data downloaded by hand into the data_dir (its manual_dir). Presets:
bart, gpt, gpt2, xlm (tiny) or bart-base/bart-large: sequences of 1024, batch 32, lr 3e-5.
fairseq's BART XSum recipe: label smoothing 0.1; beam 6, length penalty 1.0, summaries of
10 to 60 tokens, no repeated trigram (tiny: at most 32 tokens, no minimum).
"""

import ml_collections

from textgen_jax.finetune.presets import finetune_config


def get_config(arch: str = "bart-base") -> ml_collections.ConfigDict:
    config = finetune_config("xsum", arch)
    config.task.update(num_beams=6, length_penalty=1.0, no_repeat_ngram_size=3,
                       max_target_length=32)
    if "-" in arch:
        config.data.seq_len = min(1024, config.model.max_len)
        config.train.num_steps = 15_000  # BART's XSum fine-tuning length (fairseq README)
        config.task.update(max_target_length=60, min_target_length=10)
    return config
