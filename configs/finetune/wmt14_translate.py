"""WMT14 German -> English translation, scored by sacrebleu's corpus BLEU of beam-search
translations: BART's (§3.4; the paper's figure is on WMT16 ro-en) and XLM's (§5) supervised
machine translation, fine-tuned from a pretrained model.

  textgen-jax train --config configs/finetune/wmt14_translate.py:bart-base \
    --config.init_from=runs/bart_base_hf --config.data.data_dir=gs://BUCKET/tfds \
    --workdir runs/bart_base_wmt14

Presets: bart, gpt, gpt2, xlm (tiny; XLM as the encoder-decoder of XLM §5) or arch-size:
sequences of 256, batch 32, lr 3e-5. Label smoothing 0.1, beam 5, length penalty 1.0 (fairseq's translation defaults);
translations of at most 200 tokens (tiny: 32).
"""

import ml_collections

from textgen_jax.finetune.presets import finetune_config


def get_config(arch: str = "bart-base") -> ml_collections.ConfigDict:
    config = finetune_config("wmt14_translate/de-en", arch)
    config.task.update(num_beams=5, length_penalty=1.0, max_target_length=32)
    if "-" in arch:
        config.data.seq_len = min(256, config.model.max_len)
        config.train.num_steps = 50_000
        config.task.max_target_length = 200
    return config
