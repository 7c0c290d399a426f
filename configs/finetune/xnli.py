"""XNLI cross-lingual classification (XLM §5.2): fine-tune entailment in one language
(config.task.language, English), evaluate in it and in every other language of the model
(config.task.eval_languages), each reported as accuracy_<lang> beside the English accuracy.

  textgen-jax train --config configs/xlm.py:enfr_1024 --workdir runs/xlm_enfr  # pretrain
  textgen-jax train --config configs/finetune/xnli.py:xlm-enfr_1024 \
    --config.init_from=runs/xlm_enfr --workdir runs/xlm_enfr_xnli \
    --config.data.data_dir=gs://BUCKET/tfds

XNLI has no training split: this trains on its validation split and evaluates on its test
split (the paper fine-tunes on MNLI's English training set instead). Presets: xlm (tiny: its
languages 'en' and 'code' are not XNLI's, so it evaluates English only), bert, or arch-size
such as xlm-enfr_1024 (evaluates fr too). Unmeasured: it needs the XNLI download.
"""

import ml_collections

from textgen_jax.finetune.presets import finetune_config
from textgen_jax.finetune.tasks import XNLI_LANGUAGES


def get_config(arch: str = "xlm-enfr_1024") -> ml_collections.ConfigDict:
    config = finetune_config("xnli", arch)
    config.task.language = "en"
    config.task.eval_languages = tuple(language for language in config.data.languages
                                       if language in XNLI_LANGUAGES and language != "en")
    return config
