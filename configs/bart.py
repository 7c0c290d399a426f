"""BART (Lewis et al. 2019, "BART: Denoising Sequence-to-Sequence Pre-training for Natural
Language Generation, Translation, and Comprehension"): a post-LN encoder-decoder pretrained to
reconstruct documents from their noised version, with the paper's best noise (§5.1): text
infilling of 30% of the tokens in Poisson(3) spans plus sentence permutation (config.noise).

Presets (the argument after the colon):
  tiny    CPU quick start: 3 encoder + 3 decoder layers, d_model 256, 4 heads, 256 positions,
          sequences of 128, trained on the embedded stdlib-docstring corpus with an 8k BPE
          vocabulary.
            textgen-jax train --config configs/bart.py:tiny --workdir runs/bart_tiny
          Measured on a 2-core CPU: 800 steps, validation loss 9.05 -> 5.98, reconstruction
          token accuracy 0.004 -> 0.153.
  base    BART-Base 140M: 6 + 6 layers, 768, 12 heads, ffn 3072, 1024 positions, vocabulary
          50265.
            textgen-jax train --config configs/bart.py:base --workdir runs/bart_base \
              --config.data.dataset=wikipedia/20230601.en --config.data.data_dir=gs://BUCKET/tfds
  large   BART-Large 400M: 12 + 12 layers, 1024, 16 heads, ffn 4096.   (same command, :large)

The paper trains the large model with batch 8000 for 500k steps (§5.1) and otherwise follows
RoBERTa; the optimisation here (Adam beta2 0.98, eps 1e-6, weight decay 0.01, linear decay,
dropout 0.1) is RoBERTa's, at batch 256 sequences of 512 tokens, since the paper gives no
learning rate. The objective is 'denoising' (the default for arch 'bart'); the decoder starts
from eos, as the reference. Any leaf can be overridden: --config.noise.infill_rate=0.4.

The decoder may have its own shape, as distilled summarisers do (transformers' BartConfig
decoder_layers, decoder_attention_heads, decoder_ffn_dim; 0 = the encoder's):
  --config.model.num_decoder_layers=1 --config.model.num_decoder_heads=2
  --config.model.decoder_d_ff=512
"""

import ml_collections

from textgen_jax.presets import bart_config


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    return bart_config(preset)
