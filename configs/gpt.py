"""GPT (Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training").

Presets (the argument after the colon):
  tiny    CPU quick start: 4 layers, d_model 256, 4 heads, context 256, trained on the embedded
          stdlib-docstring corpus with an 8k BPE vocabulary.
            textgen-jax train --config configs/gpt.py:tiny --workdir runs/gpt_tiny
          Measured on a 2-core CPU: 800 steps, validation loss 8.95 -> 5.35 nats.
  base    The paper's model (§4.1): 12 layers, 768, 12 heads, ffn 3072, context 512,
          vocabulary 40478, dropout 0.1, Adam lr 2.5e-4 (2000 warmup steps, cosine decay),
          batches of 64 x 512 tokens (the paper: 100 epochs of BooksCorpus; set num_steps).
            textgen-jax train --config configs/gpt.py:base --workdir runs/gpt_base \
              --config.data.dataset=c4/en --config.data.data_dir=gs://BUCKET/tfds

The base preset uses the paper's vocabulary size (40478) as config.model.vocab_size and a
tokenizer of that size trained by the stack (config.tokenizer.vocab_size); an imported
Hugging Face checkpoint brings its own. Any leaf can be overridden: --config.optim.lr=1e-4.
"""

import ml_collections

from textgen_jax.config import base_config, cpu_tiny, paper_size


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    config = base_config()
    config.model.arch = "gpt"
    # The original code's tanh GELU (Hugging Face's OpenAIGPT afn='gelu' is this one too).
    config.model.activation = "gelu_tanh"
    if preset == "tiny":
        cpu_tiny(config)
        # Post-LN stalls (validation loss ~6.6 from step 200 to 400) at GPT-2 tiny's lr 1e-3 with
        # 50 warmup steps; at step 200, lr 5e-4 reached 6.17 and 2.5e-4 6.38 (100 warmup steps).
        config.optim.lr = 5e-4
        config.optim.warmup_steps = 100
    elif preset == "base":
        # §4.1: residual, embedding and attention dropout 0.1.
        paper_size(config, num_layers=12, d_model=768, num_heads=12, max_len=512)
        config.model.vocab_size = config.tokenizer.vocab_size = 40478
        config.data.seq_len = 512
        config.data.global_batch_size = 64
        # §4.1: Adam, max lr 2.5e-4, linear warmup over 2000 updates, cosine annealing to 0,
        # decoupled weight decay w = 0.01 on non-bias weights. The paper trains 100 epochs of
        # BooksCorpus; num_steps below is a placeholder to set for your corpus.
        config.optim.lr = 2.5e-4
        config.optim.warmup_steps = 2000
        config.optim.decay = "cosine"
        config.optim.end_lr_ratio = 0.0
        config.optim.b1 = 0.9
        config.optim.b2 = 0.999
        config.optim.weight_decay = 0.01
        config.train.num_steps = 1_000_000
    else:
        raise ValueError(f"unknown gpt preset {preset!r}: use tiny or base.")
    return config
