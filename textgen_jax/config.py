"""The base config every preset starts from, and the checks run on a resolved config.

A preset in configs/ calls `base_config()` and overrides leaves; the CLI then applies
`--config.a.b=v` overrides (ml_collections rejects unknown keys) and `validate` checks values.
"""

from __future__ import annotations

import json
import math
from typing import Any

import ml_collections

from textgen_jax.ops import ATTENTION_CHOICES, DTYPE_CHOICES

DEFAULT_SPECIAL_SYMBOLS = ("<mask>", "<sep>", "<cls>")


def base_config() -> ml_collections.ConfigDict:
    """Defaults shared by every architecture; presets override what differs."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.objective = ""  # '' = the architecture's own (gpt2: clm)
    # A workdir (ours or `import-hf`) whose latest params start a fresh run: fine-tuning.
    # Parameters it lacks (new heads) are initialised; the start reports both lists.
    c.init_from = ""

    c.model = ml_collections.ConfigDict()
    c.model.arch = "gpt2"
    c.model.num_layers = 2
    c.model.d_model = 128
    c.model.num_heads = 4
    c.model.d_ff = 512
    c.model.max_len = 256  # number of learned positions (GPT-2's n_positions)
    c.model.vocab_size = 0  # 0 = the tokenizer's size
    c.model.dropout = 0.0
    c.model.attention_dropout = 0.0
    c.model.layer_norm_eps = 1e-5
    c.model.init_std = 0.02
    c.model.activation = "gelu_tanh"  # gelu_tanh (GPT, GPT-2) | gelu (exact erf: BERT, XLM, BART)
    # Compute dtype (parameters stay float32): float32 | bfloat16 | auto (bfloat16 on GPUs and
    # TPUs; on a CPU the faster of the two there, measured once and cached: textgen_jax.ops).
    c.model.dtype = "float32"
    # Encoder-decoders (BART, XLM's translation model): the decoder's own depth, heads and
    # FFN width (0 = the encoder's num_layers, num_heads, d_ff), as transformers' BartConfig.
    c.model.num_decoder_layers = 0
    c.model.num_decoder_heads = 0
    c.model.decoder_d_ff = 0
    # Rematerialisation of the transformer blocks: none | full (keep each block's input,
    # recompute the rest in the backward pass) | save_dots (also keep matmul outputs).
    c.model.remat = "none"
    # One nn.scan over the blocks, parameters stacked on a leading 'layers' axis: compile time
    # independent of depth (as MaxText). Decoding and the Hugging Face tables unstack them.
    c.model.scan_layers = False
    # The attention kernel: auto (per backend: cuDNN flash attention on GPUs, the einsums
    # elsewhere) | einsum | dot_product_attention (jax.nn's; no attention dropout).
    c.model.attention = "auto"
    c.model.num_labels = 0  # > 0 adds a sequence classifier (fine-tuning; models/heads.py)
    # BERT, XLM: a per-token head instead of the sequence classifier (models/heads.py
    # TOKEN_HEADS): 'token_classification' (num_labels tags) | 'question_answering' | ''.
    c.model.head = ""
    c.model.scale_embedding = False  # BART: token embeddings * sqrt(d_model) (off in BART's)
    # XLM only (Lample & Conneau 2019): language embeddings for this many languages (> 1 adds
    # them), fixed sinusoidal positions instead of learned ones, causal (CLM) attention.
    c.model.num_languages = 1
    c.model.sinusoidal_positions = False
    c.model.causal = False
    # XLM §5: the translation model, an encoder-decoder whose two stacks are XLMs (both
    # initialised from a pretrained XLM by init_from); set by the seq2seq fine-tuning presets.
    c.model.encoder_decoder = False

    c.data = ml_collections.ConfigDict()
    # A TFDS name ('stdlib_docstrings/documents' is the embedded corpus, 'lm1b', 'c4/en', ...)
    # or '' with `files` set to a glob of local .txt/.jsonl files.
    c.data.dataset = "stdlib_docstrings/documents"
    c.data.files = ""
    c.data.text_key = "text"  # the feature (or jsonl field) holding the text
    c.data.data_dir = ""  # TFDS data dir; '' = ~/.cache/textgen_jax/tfds or $TEXTGEN_JAX_DATA_DIR
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.seq_len = 128
    c.data.global_batch_size = 16
    c.data.shuffle_buffer_seed = 0
    c.data.worker_count = 0  # grain worker processes (0 = read in the training process)
    # The global batch is read as this many disjoint shards, each process reading
    # input_shards / process_count of them (0 = one per process). The data depend on it, not on
    # the process count: 1 process with input_shards=2 reads what 2 processes read.
    c.data.input_shards = 0
    # Multilingual objectives (xlm_clm, xlm_mlm, tlm): language names, the feature holding each
    # language's text (in `dataset` for monolingual streams, in `parallel_dataset` for the
    # translation pairs of TLM), and the exponent of the language sampling q_i ∝ p_i^alpha.
    c.data.languages = ()
    c.data.language_features = ()
    c.data.parallel_dataset = ""  # '' = config.data.dataset
    c.data.language_alpha = 0.5  # XLM §3.4

    # BART's noising (textgen_jax.data.noising.NoiseConfig's fields); the default is the paper's
    # best (§5.1): text infilling of 30% of the tokens in Poisson(3) spans + sentence permutation.
    c.noise = ml_collections.ConfigDict()
    c.noise.permute_sentences = True
    c.noise.mask_rate = 0.0
    c.noise.infill_rate = 0.3
    c.noise.poisson_lambda = 3.0
    c.noise.delete_rate = 0.0
    c.noise.rotate_document = False

    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.kind = "bpe"  # bpe | unigram
    c.tokenizer.vocab_size = 8192
    c.tokenizer.max_train_chars = 20_000_000
    c.tokenizer.languages = ()  # language tags reserved as <lang:xx>; must hold data.languages
    # An existing sentencepiece .model to use instead of training one ('' = train). It needs
    # pad, unk, bos and eos ids, and the pieces its objective uses ('<mask>' for MLM).
    c.tokenizer.model_file = ""

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 3e-4
    c.optim.warmup_steps = 100
    c.optim.decay = "cosine"  # cosine | linear | constant
    c.optim.end_lr_ratio = 0.1
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.1
    c.optim.clip_norm = 1.0
    c.optim.grad_accum_steps = 1

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1 = all devices the other axes leave
    c.mesh.fsdp = 1
    c.mesh.tensor = 1

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000
    c.train.log_every = 10
    c.train.eval_every = 200
    c.train.eval_batches = 16
    c.train.checkpoint_every = 200
    c.train.keep_checkpoints = 3
    c.train.async_checkpointing = True
    # Finish each checkpoint with a commit file instead of a directory rename: for a workdir on
    # a gcsfuse mount (a gs:// workdir gets this from Orbax by itself).
    c.train.checkpoint_commit_file = False
    # Parameters not trained: '/'-joined path prefixes, e.g. ('token_embed', 'block_0').
    c.train.freeze = ()
    # Resuming with another training stream (checkpoint.DATA_KEYS: dataset, seq_len, batch,
    # ...) is refused, since the checkpoint's iterator position belongs to the old one; True
    # resumes the model and optimizer and starts the new stream from its beginning.
    c.train.restart_data = False

    c.sample = ml_collections.ConfigDict()
    c.sample.prompts = ("Return the",)
    c.sample.max_new_tokens = 48
    c.sample.temperature = 0.8
    c.sample.top_k = 40

    # Fine-tuning (configs/finetune/): a task of textgen_jax.finetune.tasks ('' = pretraining)
    # and the language a multilingual task reads ('' = its first; XNLI: en, set per evaluation).
    c.task = ml_collections.ConfigDict()
    c.task.name = ""
    c.task.language = ""
    # Cross-lingual transfer (XLM §5.2, XNLI): evaluation also reads the task in each of these
    # languages and reports its metrics as <metric>_<language> (accuracy_de, ...).
    c.task.eval_languages = ()
    c.task.lm_weight = 0.5  # GPT, GPT-2: the auxiliary LM loss's weight (GPT §3.3)
    # extractive_qa: answer spans decoded from the n_best best starts and ends, at most
    # max_answer_length tokens long (BERT's SQuAD decoding), across the windows of a context
    # longer than one row, each doc_stride tokens after the last; questions cut to
    # max_query_length tokens (run_squad.py's flags). SQuAD v2.0 answers '' (no answer) when
    # the best null score (the [cls] start + end) beats the best span's by more than
    # null_score_diff_threshold.
    c.task.max_answer_length = 30
    c.task.n_best = 20
    c.task.doc_stride = 128
    c.task.max_query_length = 64
    c.task.null_score_diff_threshold = 0.0
    # seq2seq tasks: the loss's label smoothing, and the beam search that evaluation decodes
    # with (new tokens per example at most and at least, n-grams never repeated, 0 = off).
    c.task.label_smoothing = 0.0
    c.task.num_beams = 4
    c.task.max_target_length = 64
    c.task.min_target_length = 0
    c.task.length_penalty = 1.0
    c.task.no_repeat_ngram_size = 0
    return c


class ConfigError(ValueError):
    """A config value that cannot work; the message names the value and the fix."""


# The valid range of every numeric leaf that has one: key -> (low, high, what a valid value
# is). Bounds are inclusive unless written as ('>', x) or ('<', x).
_RANGES: dict[str, tuple[Any, Any, str]] = {
    "model.num_layers": (1, None, "a positive number of layers"),
    "model.d_model": (1, None, "a positive width"),
    "model.d_ff": (1, None, "a positive width"),
    "model.max_len": (1, None, "a positive number of positions"),
    "model.vocab_size": (0, None, "0 (the tokenizer's size) or a positive size"),
    "model.dropout": (0.0, ("<", 1.0), "a probability in [0, 1)"),
    "model.attention_dropout": (0.0, ("<", 1.0), "a probability in [0, 1)"),
    "model.layer_norm_eps": ((">", 0.0), None, "a positive epsilon"),
    "model.init_std": ((">", 0.0), None, "a positive standard deviation"),
    "model.num_labels": (0, None, "0 (no classifier) or a number of labels"),
    "model.num_languages": (1, None, "1 or more languages"),
    "data.seq_len": (2, None, "at least 2 tokens"),
    "data.global_batch_size": (1, None, "a positive number of sequences"),
    "data.worker_count": (0, None, "0 (read in the training process) or more workers"),
    "data.language_alpha": (0.0, 1.0, "an exponent in [0, 1]"),
    "noise.mask_rate": (0.0, 1.0, "a rate in [0, 1]"),
    "noise.infill_rate": (0.0, 1.0, "a rate in [0, 1]"),
    "noise.delete_rate": (0.0, 1.0, "a rate in [0, 1]"),
    "noise.poisson_lambda": ((">", 0.0), None, "a positive mean span length"),
    "tokenizer.vocab_size": (8, None, "a vocabulary of 8 pieces or more"),
    "tokenizer.max_train_chars": (1, None, "a positive number of characters"),
    "optim.lr": ((">", 0.0), None, "a positive learning rate, e.g. 3e-4"),
    "optim.warmup_steps": (0, None, "0 or more steps"),
    "optim.end_lr_ratio": (0.0, 1.0, "a fraction of the peak lr in [0, 1]"),
    "optim.b1": (0.0, ("<", 1.0), "a decay in [0, 1)"),
    "optim.b2": (0.0, ("<", 1.0), "a decay in [0, 1)"),
    "optim.eps": ((">", 0.0), None, "a positive epsilon"),
    "optim.weight_decay": (0.0, None, "0 or a positive decay"),
    "optim.clip_norm": (0.0, None, "0 (no clipping) or a positive norm"),
    "train.num_steps": (1, None, "a positive number of steps"),
    "train.log_every": (1, None, "a positive number of steps"),
    "train.eval_every": (1, None, "a positive number of steps"),
    "train.eval_batches": (1, None, "a positive number of batches"),
    "train.checkpoint_every": (1, None, "a positive number of steps"),
    "train.keep_checkpoints": (1, None, "1 or more checkpoints"),
    "sample.max_new_tokens": (1, None, "a positive number of tokens"),
    "sample.temperature": (0.0, None, "0 (greedy) or a positive temperature"),
    "sample.top_k": (0, None, "0 (off) or a positive k"),
    "task.lm_weight": (0.0, None, "0 or a positive weight"),
    "task.label_smoothing": (0.0, ("<", 1.0), "a smoothing in [0, 1)"),
    "task.num_beams": (1, None, "1 (greedy) or more beams"),
    "task.max_target_length": (1, None, "a positive number of tokens"),
    "task.min_target_length": (0, None, "0 or more tokens"),
    "task.length_penalty": (None, None, "a number"),
    "task.no_repeat_ngram_size": (0, None, "0 (off) or an n-gram size"),
}


def _in_range(value: Any, low: Any, high: Any) -> bool:
    def holds(bound, above: bool) -> bool:
        if bound is None:
            return True
        strict, limit = bound if isinstance(bound, tuple) else (None, bound)
        if above:
            return value > limit if strict else value >= limit
        return value < limit if strict else value <= limit
    return holds(low, True) and holds(high, False)


def _check_ranges(config: ml_collections.ConfigDict) -> None:
    for key, (low, high, valid) in _RANGES.items():
        section, leaf = key.split(".")
        if section not in config or leaf not in config[section]:
            continue  # a config saved before the key
        value = config[section][leaf]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config.{key}={value!r} is not a number: use {valid}.")
        if math.isnan(value) or not _in_range(value, low, high):
            raise ConfigError(f"config.{key}={value!r} is out of range: use {valid}.")


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks values that do not depend on the devices; raises ConfigError."""
    m, d, o = config.model, config.data, config.optim
    _check_ranges(config)
    for key in ("num_heads", "num_decoder_heads"):
        heads = m.get(key, 0)  # configs saved before num_decoder_heads lack it
        if heads < 0 or (heads and m.d_model % heads):
            raise ConfigError(
                f"config.model.d_model={m.d_model} is not divisible by config.model.{key}="
                f"{heads}; pick {key} dividing d_model.")
    if m.num_heads == 0:
        raise ConfigError("config.model.num_heads=0: use a positive head count.")
    for key in ("num_decoder_layers", "decoder_d_ff"):
        if m.get(key, 0) < 0:
            raise ConfigError(f"config.model.{key}={m[key]}: use 0 (the encoder's) or a "
                              "positive size.")
    if m.remat not in ("none", "full", "save_dots"):
        raise ConfigError(f"config.model.remat={m.remat!r}: use 'none', 'full' or 'save_dots'.")
    if m.dtype not in DTYPE_CHOICES:
        raise ConfigError(f"config.model.dtype={m.dtype!r}: use one of "
                          f"{', '.join(DTYPE_CHOICES)}.")
    if m.attention not in ATTENTION_CHOICES:
        raise ConfigError(f"config.model.attention={m.attention!r}: use one of "
                          f"{', '.join(ATTENTION_CHOICES)}.")
    if d.seq_len > m.max_len:
        raise ConfigError(
            f"config.data.seq_len={d.seq_len} exceeds config.model.max_len={m.max_len}; "
            "lower seq_len or raise max_len.")
    if o.decay not in ("cosine", "linear", "constant"):
        raise ConfigError(f"config.optim.decay={o.decay!r}: use cosine, linear or constant.")
    if o.grad_accum_steps < 1:
        raise ConfigError(f"config.optim.grad_accum_steps={o.grad_accum_steps} must be >= 1.")
    if config.tokenizer.kind not in ("bpe", "unigram"):
        raise ConfigError(f"config.tokenizer.kind={config.tokenizer.kind!r}: use bpe or unigram.")
    unreserved = [lang for lang in d.languages if lang not in config.tokenizer.languages]
    if unreserved:
        raise ConfigError(
            f"config.data.languages={tuple(d.languages)} names {unreserved}, missing from "
            f"config.tokenizer.languages={tuple(config.tokenizer.languages)}: the shared "
            f"vocabulary reserves a tag for each language; add {unreserved} to "
            "config.tokenizer.languages.")
    if not d.dataset and not d.files:
        raise ConfigError("config.data.dataset is '' and config.data.files is '': name one.")
    if d.input_shards < 0:
        raise ConfigError(f"config.data.input_shards={d.input_shards}: use 0 (one per process) "
                          "or a positive multiple of the process count.")
    for key in ("doc_stride", "max_query_length", "max_answer_length", "n_best"):
        if config.task.get(key, 1) < 1:  # configs saved before a key lack it
            raise ConfigError(f"config.task.{key}={config.task[key]}: use a positive number "
                              "of tokens.")
    for axis in ("data", "fsdp", "tensor"):
        size = config.mesh[axis]
        if size == 0 or size < -1:
            raise ConfigError(f"config.mesh.{axis}={size}: use a positive size or -1.")


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def _lists_to_tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def from_dict(values: dict[str, Any]) -> ml_collections.ConfigDict:
    """Rebuilds a resolved config (from a workdir's config.json) over the current defaults."""
    config = base_config()
    config.update(_lists_to_tuples(values))
    return config


def cpu_tiny(config: ml_collections.ConfigDict) -> None:
    """The CPU quick-start shape every architecture's `tiny` preset starts from: 4 layers of
    256 with 4 heads and ffn 1024, context 256, batches of 16 x 128 tokens in the faster
    compute dtype of the machine (auto: bfloat16 on CPUs with AMX or AVX512-BF16, float32 on
    the others), an 8k vocabulary, 800 steps evaluated and saved every 200."""
    config.model.update(num_layers=4, d_model=256, num_heads=4, d_ff=1024, max_len=256,
                        dtype="auto")
    config.data.update(seq_len=128, global_batch_size=16)
    config.tokenizer.vocab_size = 8192
    config.optim.update(lr=1e-3, warmup_steps=50)
    config.train.update(num_steps=800, log_every=20, eval_every=200, checkpoint_every=200)


def paper_size(config: ml_collections.ConfigDict, num_layers: int, d_model: int,
               num_heads: int, max_len: int) -> None:
    """The shape shared by the paper-size presets: ffn 4 x d_model, dropout 0.1, the auto
    compute dtype (bfloat16 on accelerators), a tokenizer trained on up to 200M characters,
    and a long run's log/eval/save cadence."""
    config.model.update(num_layers=num_layers, d_model=d_model, num_heads=num_heads,
                        d_ff=4 * d_model, max_len=max_len, dropout=0.1, attention_dropout=0.1,
                        dtype="auto")
    config.tokenizer.max_train_chars = 200_000_000
    config.train.update(log_every=100, eval_every=2000, eval_batches=50, checkpoint_every=2000)
