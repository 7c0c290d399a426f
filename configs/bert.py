"""BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding"): masked-LM (15%, 80/10/10) + next-sentence prediction (50/50) pretraining.

Presets (the argument after the colon):
  tiny    CPU quick start: 4 layers, d_model 256, 4 heads, 128 positions, sequences of 128,
          trained on the embedded stdlib-docstring corpus with an 8k BPE vocabulary.
            textgen-jax train --config configs/bert.py:tiny --workdir runs/bert_tiny
          Measured on a 2-core CPU: 800 steps, validation MLM + NSP loss 9.77 -> 7.03, MLM
          accuracy 0.116, NSP accuracy 0.49 -> 0.59.
  base    BERT-Base 110M: 12 layers, 768, 12 heads, ffn 3072, 512 positions, vocabulary 30522.
            textgen-jax train --config configs/bert.py:base --workdir runs/bert_base \
              --config.data.dataset=wikipedia/20230601.en --config.data.data_dir=gs://BUCKET/tfds
  large   BERT-Large 340M: 24 layers, 1024, 16 heads, ffn 4096.   (same command, :large)

The paper sizes use the paper's optimisation (§A.2): batch 256 sequences of 512 tokens, Adam
lr 1e-4 with 10k warmup steps and linear decay, weight decay 0.01, dropout 0.1, 1M steps (the
paper trains 90% of the steps at length 128 first; here every step is at seq_len). The objective
is 'mlm_nsp' (the default for arch 'bert'). Any leaf can be overridden: --config.optim.lr=1e-4.
"""

import ml_collections

from textgen_jax.presets import bert_config


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    return bert_config(preset)
