"""XLM (Lample & Conneau 2019, "Cross-lingual Language Model Pretraining"): a post-LN
transformer with language embeddings, pretrained by masked LM over streams of text (MLM, §3.2),
causal LM (CLM, §3.1) or translation LM over parallel pairs (TLM, §3.3).

Presets (the argument after the colon):
  tiny        CPU quick start: 4 layers, d_model 256, 4 heads, ffn 1024, sequences of 128, two
              "languages" of the embedded corpus: English docstrings ('en') and the Python code
              they document ('code'), from stdlib_docstrings/pairs; objective xlm_mlm.
                textgen-jax train --config configs/xlm.py:tiny --workdir runs/xlm_tiny
              Measured on a 2-core CPU: 800 steps, validation MLM loss 8.79 -> 5.80, accuracy
              on the predicted tokens 0.106 -> 0.167.
              TLM over the (docstring, code) pairs, or CLM (which needs a causal model):
                textgen-jax train --config configs/xlm.py:tiny --workdir runs/xlm_tiny_tlm \
                  --config.objective=tlm
              (measured: 800 steps, validation TLM loss 8.82 -> 5.57, accuracy 0.091 -> 0.213)
                textgen-jax train --config configs/xlm.py:tiny --workdir runs/xlm_tiny_clm \
                  --config.objective=xlm_clm --config.model.causal=True
              Then: textgen-jax fill-mask --workdir runs/xlm_tiny --text "Return the <mask>."
  enfr_1024   The paper's English-French MLM model: 6 layers, 1024, 8 heads, ffn 4096, streams
              of 256 tokens, batch 64, on WMT14 fr-en (one feature per language, 'en' and 'fr';
              the paper's monolingual data is Wikipedia, which needs a dataset with one feature
              per language here).
                textgen-jax train --config configs/xlm.py:enfr_1024 --workdir runs/xlm_enfr \
                  --config.data.data_dir=gs://BUCKET/tfds
              TLM on the same pairs: add --config.objective=tlm.
  en_2048     The paper's English MLM model: 12 layers, 2048, 16 heads, ffn 8192, one language
              (no language embedding), on the dataset named by --config.data.dataset.
                textgen-jax train --config configs/xlm.py:en_2048 --workdir runs/xlm_en \
                  --config.data.dataset=wikipedia/20230601.en \
                  --config.data.data_dir=gs://BUCKET/tfds

Paper optimisation (§5.1): GELU, dropout 0.1, Adam with linear warmup and lr 1e-4; tokens are
masked 15% (80/10/10) without the paper's frequency-based subsampling of the masked words.
Languages are sampled with q_i ∝ p_i^0.5 (§3.4; config.data.language_alpha). The paper sizes
are unmeasured here. Any leaf can be overridden: --config.optim.lr=5e-4.
"""

import ml_collections

from textgen_jax.presets import xlm_config


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    return xlm_config(preset)
