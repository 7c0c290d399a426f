"""CoNLL-2003 named entity recognition (BERT §5.3): a tag per word (PER, ORG, LOC, MISC in IOB
tags), predicted on the word's first piece by a linear classifier over the encoder's states
(config.model.head='token_classification'), scored by CoNLL's entity F1.

  textgen-jax train --config configs/finetune/conll2003.py:bert-base \
    --config.init_from=runs/bert_base_hf --config.data.data_dir=gs://BUCKET/tfds \
    --workdir runs/bert_base_conll

TFDS's conll2003 downloads and prepares itself on first use (train 14k sentences, dev 3.3k).
Presets: bert, xlm (tiny) or bert-base, xlm-... (encoders only). The paper sizes fine-tune
4 epochs at batch 32, lr 5e-5 (§A.3's grid), 128 tokens per sentence, set here; words cut off
by seq_len are neither predicted nor scored. Unmeasured here.
"""

import ml_collections

from textgen_jax.finetune.presets import finetune_config


def get_config(arch: str = "bert-base") -> ml_collections.ConfigDict:
    config = finetune_config("conll2003", arch)
    if "-" in arch:  # a paper size
        config.optim.update(lr=5e-5, warmup_steps=180)
        config.train.update(num_steps=1_800, eval_every=450, checkpoint_every=450)
    return config
