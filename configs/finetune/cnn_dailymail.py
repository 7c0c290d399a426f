"""CNN/DailyMail abstractive summarization (BART §3.4, §5.3): the article in, the highlights
out, scored by ROUGE-1/2/L (rouge-score) of beam-search summaries.

  textgen-jax train --config configs/finetune/cnn_dailymail.py:bart-base \
    --config.init_from=runs/bart_base_hf --config.data.data_dir=gs://BUCKET/tfds \
    --workdir runs/bart_base_cnndm

Presets: bart, gpt, gpt2, xlm (tiny; GPT/GPT-2 read `[bos] article [sep] highlights [eos]`)
or bart-base/bart-large: sequences of 1024 (the article is cut to it), batch 32, lr 3e-5.
fairseq's BART CNN/DM recipe: label smoothing 0.1; beam 4, length penalty 2.0, summaries of
55 to 140 tokens, no repeated trigram (tiny: at most 48 tokens, no minimum).
"""

import ml_collections

from textgen_jax.finetune.presets import finetune_config


def get_config(arch: str = "bart-base") -> ml_collections.ConfigDict:
    config = finetune_config("cnn_dailymail", arch)
    config.task.update(num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3,
                       max_target_length=48)
    if "-" in arch:
        config.data.seq_len = min(1024, config.model.max_len)
        config.train.num_steps = 20_000  # BART's CNN/DM fine-tuning length (fairseq README)
        config.task.update(max_target_length=140, min_target_length=55)
    return config
