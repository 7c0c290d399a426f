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

from textgen_jax.presets import gpt_config


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    return gpt_config(preset)
