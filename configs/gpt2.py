"""GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners").

Presets (the argument after the colon):
  tiny    CPU quick start: 4 layers, d_model 256, 4 heads, context 256, trained on the embedded
          stdlib-docstring corpus with an 8k BPE vocabulary.
            textgen-jax train --config configs/gpt2.py:tiny --workdir runs/gpt2_tiny
          Measured on a 2-core CPU: 800 steps in ~6 min, validation loss 9.03 -> 5.32 nats
          (a unigram model of the corpus: 6.58).
  small   GPT-2 124M: 12 layers, 768, 12 heads, context 1024, vocabulary 50257.
            textgen-jax train --config configs/gpt2.py:small --workdir runs/gpt2_small \
              --config.data.dataset=c4/en --config.data.data_dir=gs://BUCKET/tfds
  medium  GPT-2 355M: 24 layers, 1024, 16 heads.   (same command, :medium)
  large   GPT-2 774M: 36 layers, 1280, 20 heads.   (same command, :large)
  xl      GPT-2 1.5B: 48 layers, 1600, 25 heads.   (same command, :xl)

The paper sizes use the paper's vocabulary size (50257) as config.model.vocab_size and a
tokenizer of that size trained by the stack (config.tokenizer.vocab_size); an imported
Hugging Face checkpoint brings its own. Any leaf can be overridden: --config.optim.lr=3e-4.
"""

import ml_collections

from textgen_jax.presets import gpt2_config


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    return gpt2_config(preset)
