"""BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding"): masked-LM (15%, 80/10/10) + next-sentence prediction (50/50) pretraining.

Presets (the argument after the colon):
  tiny    CPU quick start: 4 layers, d_model 256, 4 heads, 128 positions, sequences of 128,
          trained on the embedded stdlib-docstring corpus with an 8k BPE vocabulary.
            textgen-jax train --config configs/bert.py:tiny --workdir runs/bert_tiny
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

from textgen_jax.config import base_config

_PAPER_SIZES = {  # num_layers, d_model, num_heads
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    config = base_config()
    config.model.arch = "bert"
    config.model.activation = "gelu"  # exact (erf) GELU, as the reference
    config.model.layer_norm_eps = 1e-12  # the reference's epsilon
    config.optim.b2 = 0.999  # §A.2: Adam beta2 0.999
    config.optim.decay = "linear"
    config.optim.end_lr_ratio = 0.0
    config.optim.weight_decay = 0.01
    config.sample.prompts = ()  # an encoder: nothing to sample
    if preset == "tiny":
        config.model.num_layers = 4
        config.model.d_model = 256
        config.model.num_heads = 4
        config.model.d_ff = 1024
        config.model.max_len = 128
        config.data.seq_len = 128
        config.data.global_batch_size = 16
        config.model.dtype = "bfloat16"
        config.tokenizer.vocab_size = 8192
        config.optim.lr = 1e-3
        config.optim.warmup_steps = 50
        config.train.num_steps = 800
        config.train.log_every = 20
        config.train.eval_every = 200
        config.train.checkpoint_every = 200
    elif preset in _PAPER_SIZES:
        layers, d_model, heads = _PAPER_SIZES[preset]
        config.model.num_layers = layers
        config.model.d_model = d_model
        config.model.num_heads = heads
        config.model.d_ff = 4 * d_model
        config.model.max_len = 512
        config.model.vocab_size = 30522
        config.model.dropout = 0.1
        config.model.attention_dropout = 0.1
        config.model.dtype = "bfloat16"
        config.tokenizer.vocab_size = 30522
        config.tokenizer.max_train_chars = 200_000_000
        config.data.seq_len = 512
        config.data.global_batch_size = 256
        config.optim.lr = 1e-4
        config.optim.warmup_steps = 10_000
        config.train.num_steps = 1_000_000
        config.train.log_every = 100
        config.train.eval_every = 2000
        config.train.eval_batches = 50
        config.train.checkpoint_every = 2000
    else:
        raise ValueError(f"unknown bert preset {preset!r}: use tiny, {', '.join(_PAPER_SIZES)}.")
    return config
