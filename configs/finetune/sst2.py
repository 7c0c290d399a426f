"""GLUE SST-2 (binary sentiment of movie-review sentences), scored by accuracy: BERT's (§4.1)
and GPT's (§4.1) single-sentence classification benchmark.

  textgen-jax train --config configs/finetune/sst2.py:bert-base \
    --config.init_from=runs/bert_base_hf --config.data.data_dir=gs://BUCKET/tfds \
    --workdir runs/bert_base_sst2

(runs/bert_base_hf from `textgen-jax import-hf bert-base-uncased`, or a workdir of ours.)
TFDS prepares glue/sst2 in array_record on first use. Presets: bert, gpt, gpt2, xlm, bart
(tiny) or arch-size (bert-base: batch 32 x 128 tokens, lr 3e-5, ~3 epochs in 10k steps).
"""

import ml_collections

from textgen_jax.finetune.presets import finetune_config


def get_config(arch: str = "bert-base") -> ml_collections.ConfigDict:
    return finetune_config("glue/sst2", arch)
