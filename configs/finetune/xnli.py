"""XNLI cross-lingual classification (XLM §5.2): entailment learnt in English, evaluated in it
and in every other XNLI language of the model (config.task.eval_languages), each reported as
accuracy_<lang> beside the English accuracy.

  textgen-jax train --config configs/xlm.py:enfr_1024 --workdir runs/xlm_enfr  # pretrain
  textgen-jax train --config configs/finetune/xnli.py:zero_shot,xlm-enfr_1024 \
    --config.init_from=runs/xlm_enfr --workdir runs/xlm_enfr_xnli \
    --config.data.data_dir=gs://BUCKET/tfds

Presets: [zero_shot,]ARCH, ARCH an architecture (xlm, bert: tiny) or arch-size such as
xlm-enfr_1024 or bert-base.
  zero_shot,ARCH  the paper's protocol (task xnli_zero_shot): fine-tune on MNLI's English
                  training set (TFDS multi_nli) and evaluate zero-shot on XNLI's test split in
                  every XNLI language: all 15 for a model without language ids (multilingual
                  BERT), those of config.data.languages for XLM.
  ARCH            XNLI alone (task xnli): it has no training split, so this trains on its
                  validation split in English and evaluates on its test split, in the
                  languages of config.data.languages.
XLM's tiny preset reads 'en' and 'code', not XNLI's other languages, so it evaluates English
only. Unmeasured: both need the XNLI (and MNLI) download.
"""

import ml_collections

from textgen_jax.finetune.presets import finetune_config
from textgen_jax.finetune.tasks import XNLI_LANGUAGES


def get_config(preset: str = "zero_shot,xlm-enfr_1024") -> ml_collections.ConfigDict:
    protocol, _, arch = preset.rpartition(",")
    if protocol not in ("", "zero_shot"):
        raise ValueError(f"unknown XNLI protocol {protocol!r} in preset {preset!r}: use ARCH "
                         "or zero_shot,ARCH.")
    config = finetune_config("xnli_zero_shot" if protocol else "xnli", arch)
    config.task.language = "en"
    # XLM reads the languages it has ids for; zero-shot on a model without them (multilingual
    # BERT) reads every XNLI language.
    languages = (XNLI_LANGUAGES if protocol and config.model.arch != "xlm"
                 else tuple(config.data.languages))
    config.task.eval_languages = tuple(language for language in languages
                                       if language in XNLI_LANGUAGES and language != "en")
    return config
