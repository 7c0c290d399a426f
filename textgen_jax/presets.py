"""Each architecture's presets: the configs that configs/<arch>.py serve (their docstrings give
the commands and measured results), here so that the library can build one without reading
configs/ (fine-tuning presets start from them: finetune/presets.py).
"""

from __future__ import annotations

from typing import Callable

import ml_collections

from textgen_jax.config import base_config, cpu_tiny, paper_size


def gpt_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    """configs/gpt.py's preset `preset`."""
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


_GPT2_SIZES = {  # num_layers, d_model, num_heads
    "small": (12, 768, 12),
    "medium": (24, 1024, 16),
    "large": (36, 1280, 20),
    "xl": (48, 1600, 25),
}


def gpt2_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    """configs/gpt2.py's preset `preset`."""
    config = base_config()
    config.model.arch = "gpt2"
    if preset == "tiny":
        cpu_tiny(config)
    elif preset in _GPT2_SIZES:
        paper_size(config, *_GPT2_SIZES[preset], max_len=1024)
        config.model.vocab_size = config.tokenizer.vocab_size = 50257
        config.data.seq_len = 1024
        config.data.global_batch_size = 512
        config.optim.lr = 6e-4 if preset == "small" else 3e-4
        config.optim.warmup_steps = 2000
        config.train.num_steps = 600_000
    else:
        raise ValueError(f"unknown gpt2 preset {preset!r}: use tiny, {', '.join(_GPT2_SIZES)}.")
    return config


_BERT_SIZES = {  # num_layers, d_model, num_heads
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}


def bert_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    """configs/bert.py's preset `preset`."""
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
        cpu_tiny(config)
        config.model.max_len = 128
    elif preset in _BERT_SIZES:
        paper_size(config, *_BERT_SIZES[preset], max_len=512)
        config.model.vocab_size = config.tokenizer.vocab_size = 30522
        config.data.seq_len = 512
        config.data.global_batch_size = 256
        config.optim.lr = 1e-4
        config.optim.warmup_steps = 10_000
        config.train.num_steps = 1_000_000
    else:
        raise ValueError(f"unknown bert preset {preset!r}: use tiny, {', '.join(_BERT_SIZES)}.")
    return config


_XLM_SIZES = {  # num_layers, d_model, num_heads
    "enfr_1024": (6, 1024, 8),
    "en_2048": (12, 2048, 16),
}


def xlm_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    """configs/xlm.py's preset `preset`."""
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
    elif preset in _XLM_SIZES:
        paper_size(config, *_XLM_SIZES[preset], max_len=512)
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
        raise ValueError(f"unknown xlm preset {preset!r}: use tiny, {', '.join(_XLM_SIZES)}.")
    return config


_BART_SIZES = {  # num_layers (each stack), d_model, num_heads
    "base": (6, 768, 12),
    "large": (12, 1024, 16),
}


def bart_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    """configs/bart.py's preset `preset`."""
    config = base_config()
    config.model.arch = "bart"
    config.model.activation = "gelu"  # exact (erf) GELU, as the reference
    config.model.layer_norm_eps = 1e-5
    config.optim.b2 = 0.98
    config.optim.eps = 1e-6
    config.optim.decay = "linear"
    config.optim.end_lr_ratio = 0.0
    config.optim.weight_decay = 0.01
    # A denoiser reconstructs its input: try textgen-jax generate --prompt "Return the <mask>."
    config.sample.prompts = ()
    if preset == "tiny":
        cpu_tiny(config)
        config.model.num_layers = 3
    elif preset in _BART_SIZES:
        paper_size(config, *_BART_SIZES[preset], max_len=1024)
        config.model.vocab_size = config.tokenizer.vocab_size = 50265
        config.data.seq_len = 512
        config.data.global_batch_size = 256
        config.optim.lr = 4e-4
        config.optim.warmup_steps = 10_000
        config.train.num_steps = 500_000
    else:
        raise ValueError(f"unknown bart preset {preset!r}: use tiny, {', '.join(_BART_SIZES)}.")
    return config


ARCHITECTURES: dict[str, Callable[[str], ml_collections.ConfigDict]] = {
    "gpt": gpt_config, "gpt2": gpt2_config, "bert": bert_config, "xlm": xlm_config,
    "bart": bart_config}


def architecture_config(arch: str, preset: str = "tiny") -> ml_collections.ConfigDict:
    """The config of architecture `arch` at `preset` (configs/<arch>.py:<preset>)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHITECTURES)}.")
    return ARCHITECTURES[arch](preset)
