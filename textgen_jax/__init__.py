"""textgen_jax: pretrain and fine-tune GPT, BERT, XLM, GPT-2 and BART in JAX/Flax."""

__version__ = "0.1.0"

from textgen_jax.api import Loaded, evaluate, fill_mask, generate, load  # noqa: E402

__all__ = ["Loaded", "evaluate", "fill_mask", "generate", "load", "__version__"]
