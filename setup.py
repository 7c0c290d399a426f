"""textgen_jax: pretrain and fine-tune GPT, BERT, XLM, GPT-2 and BART in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="textgen_jax",
    version="0.1.0",
    description="JAX/Flax stack for the five classic text-generation transformers.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # jax 0.10 needs Python 3.11 (jax 0.11: 3.12).
    python_requires=">=3.11",
    packages=find_packages(include=["textgen_jax", "textgen_jax.*"]),
    # Lower bounds only: the versions CI tests (README, "Versions"). jax picks its own jaxlib;
    # flax, optax and orbax-checkpoint declare lower bounds on jax, so a newer jax (the 0.11
    # of GPU images) resolves with them. An upper bound goes here only beside a named break.
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "grain>=0.2.18",
        "tensorflow-datasets>=4.9.10",
        "array-record>=0.8",
        "sentencepiece>=0.2.3",
        "ml_collections>=1.1",
        "absl-py>=2.1",
        "tensorboardX>=2.6",
        "numpy>=2",
        "psutil>=5.9",
        "safetensors>=0.4",  # transformers checkpoints in and out, without torch
        "fsspec>=2024.1",  # gs:// workdir files through etils.epath (with gcsfs, below)
    ],
    extras_require={
        # The test oracle only: never imported by the package itself.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "torch==2.13.0", "transformers>=5.23,<6", "tokenizers>=0.20",
                 "scikit-learn>=1.5", "scipy>=1.13", "rouge-score>=0.1.2", "sacrebleu>=2.4",
                 "seqeval>=1.2",
                 # launch/colab.ipynb runs headless in tests/decoding/test_colab_notebook.py.
                 "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29", "matplotlib>=3.8"],
        # Fine-tuning's ROUGE (summarization) and BLEU (translation) metrics.
        "finetune": ["rouge-score>=0.1.2", "sacrebleu>=2.4"],
        # An imported checkpoint's own tokenizer.json.
        "hf": ["tokenizers>=0.20"],
        # One per runtime, so jax and its accelerator plugin (CUDA, libtpu) come from one
        # resolution; gcsfs for gs:// workdirs (TensorStore reads checkpoints there itself).
        "cpu": ["jax>=0.10.2", "gcsfs>=2024.1"],
        "cuda": ["jax[cuda12]>=0.10.2", "gcsfs>=2024.1"],
        "tpu": ["jax[tpu]>=0.10.2", "gcsfs>=2024.1"],
    },
    entry_points={"console_scripts": ["textgen-jax=textgen_jax.cli:main"]},
)
