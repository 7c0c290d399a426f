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

from textgen_jax.config import base_config, cpu_tiny, paper_size

_PAPER_SIZES = {  # num_layers, d_model, num_heads
    "enfr_1024": (6, 1024, 8),
    "en_2048": (12, 2048, 16),
}


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    config = base_config()
    config.model.arch = "xlm"
    config.objective = "xlm_mlm"
    config.model.activation = "gelu"  # exact (erf) GELU, as the reference
    config.model.layer_norm_eps = 1e-12  # the reference's epsilon
    config.optim.b2 = 0.98
    config.optim.weight_decay = 0.01
    config.sample.prompts = ()  # trained as a masked LM: nothing to sample
    if preset == "tiny":
        cpu_tiny(config)  # its ffn 1024 is XLM's 4 * d_model
        config.data.dataset = "stdlib_docstrings/pairs"
        config.data.text_key = "text"  # the docstring: what the tokenizer is trained on
        config.data.languages = ("en", "code")
        config.data.language_features = ("docstring", "code")
        config.model.num_languages = 2
        config.tokenizer.languages = ("en", "code")
    elif preset in _PAPER_SIZES:
        paper_size(config, *_PAPER_SIZES[preset], max_len=512)
        if preset == "enfr_1024":
            config.data.dataset = "wmt14_translate/fr-en"
            config.data.text_key = "en"
            config.data.languages = ("en", "fr")
            config.data.language_features = ("en", "fr")
            config.tokenizer.languages = ("en", "fr")
            config.model.num_languages = 2
        else:
            config.data.languages = config.tokenizer.languages = ("en",)
            config.data.language_features = ("text",)
        config.tokenizer.vocab_size = 32_000
        config.data.seq_len = 256  # §3.2: streams of 256 tokens
        config.data.global_batch_size = 64
        config.optim.lr = 1e-4
        config.optim.warmup_steps = 4000
        config.train.num_steps = 500_000
    else:
        raise ValueError(f"unknown xlm preset {preset!r}: use tiny, {', '.join(_PAPER_SIZES)}.")
    return config
