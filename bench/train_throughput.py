"""Training throughput of textgen_jax against `transformers`, for all five architectures
(rules: bench/README.md).

Each case is an architecture's preset (textgen_jax.presets) at a benchmark shape, trained with
its own pretraining objective (objectives.pretraining_objective) against the `transformers`
class our converter maps it to (the spec's hf_class: OpenAIGPTLMHeadModel, BertForPreTraining,
XLMWithLMHeadModel, GPT2LMHeadModel, BartForConditionalGeneration), built from the config.json
our exporter writes for that config, so both sides have the same shape by construction. Both
train on one batch built once, deterministically from SEED, with the data pipeline's own
corruption (data.masking.mask_tokens for MLM, data.noising.add_noise for BART), saved by our
process and read back by theirs.

Tokens per step are batch x seq_len for every architecture: for BART, the document's tokens,
each read once by the encoder (noised, padded to seq_len) and once by the decoder. FLOPs per
token are the training loop's (training/metrics.py), 6N + 12·L·d·T: N our non-embedding
parameters (both stacks of an encoder-decoder, each applied to one token per document token),
L the spec's attention layers (BART: encoder layers + 2 x decoder layers, the decoder's
self- and cross-attention each over T keys), no causal halving. Both sides' MFU use this count.

Every measurement (case, framework, dtype) and every matmul calibration runs in a fresh
process (`--_one`), so its `peak_rss_mb` (ru_maxrss) is its own; `import_rss_mb` is that
maximum right after the imports (ours: and the numpy batch), and `train_rss_mb` the difference.
Each record also carries its first step's loss (`loss_first_step`, before any update) and the
number of tokens that loss averages (`loss_tokens`). The parent prints one
JSON line per measurement, a `matmul_2048` line per framework and dtype (the MFU
denominator), and a `comparison` line per case (ratio per dtype pair, best against best):

    .venv/bin/python bench/train_throughput.py
    .venv/bin/python bench/train_throughput.py --cases train_bert_bench --steps 20 --no-transformers

`--same-init` starts the transformers side from our initial parameters (exported by our first
run of the case), so the two `loss_first_step` values must agree; our peak memory then includes
the export's copy. `--tiny` shrinks every case to 2 layers of 64, vocabulary 512, batch 2 x 32,
and the calibration to a 256^3 matmul, with no floor on --steps: for tests, not figures.

`--compile-depths 2,8,32` instead times the train step's compilation (nothing runs) at each depth,
unrolled and with config.model.scan_layers, one `compile` line each with its ratio to the
shallowest depth of the same layout and to the unrolled layout at the same depth:

    .venv/bin/python bench/train_throughput.py --cases train_gpt2_bench --compile-depths 2,8,32
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable

import numpy as np

# The small shape of every architecture: vocab 8192, 512 wide, 8 heads, ffn 2048, batch 8 x 256;
# 6 layers, or 3 + 3 for BART (84 d^2 weights per token in its two stacks, against the 72 d^2
# of 6 decoder layers).
_BENCH = dict(vocab=8192, max_len=512, d_model=512, num_heads=8, d_ff=2048, seq_len=256,
              batch=8, min_steps=10)
# Paper sizes: the preset's own shape, ~1k tokens per step (GPT-2 small keeps its 4 x 512).
_BASE = dict(d_model=768, num_heads=12, d_ff=3072, min_steps=5)
CASES = {
    "train_gpt_bench": dict(_BENCH, arch="gpt", preset="base", num_layers=6),
    "train_gpt_base": dict(_BASE, arch="gpt", preset="base", vocab=40478, max_len=512,
                           num_layers=12, seq_len=512, batch=2),
    "train_bert_bench": dict(_BENCH, arch="bert", preset="base", num_layers=6),
    "train_bert_base": dict(_BASE, arch="bert", preset="base", vocab=30522, max_len=512,
                            num_layers=12, seq_len=512, batch=2),
    "train_xlm_bench": dict(_BENCH, arch="xlm", preset="enfr_1024", num_layers=6),
    "train_xlm_base": dict(arch="xlm", preset="enfr_1024", vocab=32000, max_len=512,
                           num_layers=6, d_model=1024, num_heads=8, d_ff=4096, seq_len=256,
                           batch=4, min_steps=5),
    "train_gpt2_bench": dict(_BENCH, arch="gpt2", preset="small", num_layers=6),
    "train_gpt2_small": dict(_BASE, arch="gpt2", preset="small", vocab=50257, max_len=1024,
                             num_layers=12, seq_len=512, batch=4),
    "train_bart_bench": dict(_BENCH, arch="bart", preset="base", num_layers=3),
    "train_bart_base": dict(_BASE, arch="bart", preset="base", vocab=50265, max_len=1024,
                            num_layers=6, seq_len=512, batch=2),
}
TINY = dict(vocab=512, max_len=64, d_model=64, num_layers=2, num_heads=4, d_ff=256, seq_len=32,
            batch=2)
DTYPES = ("float32", "bfloat16")
FRAMEWORKS = ("textgen_jax", "transformers")
OPTIM = dict(lr=3e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)
WARMUP_STEPS = 3
SEED = 0
MATMUL_SIZE, TINY_MATMUL_SIZE = 2048, 256
NOTE = ("textgen_jax's AdamW does not decay norms, biases and embeddings; torch's decays all "
        "parameters (a negligible compute difference). No gradient clipping on either side.")

# The ids our trained tokenizers give their special pieces (data/tokenizer.py: pad 0, unk 1,
# bos 2, eos 3, then <mask>, <sep>, <cls>); batches draw ordinary tokens above them.
SPECIAL = types.SimpleNamespace(pad_id=0, unk_id=1, bos_id=2, eos_id=3, mask_id=4, sep_id=5,
                                cls_id=6)
FIRST_ORDINARY_ID = 7
# The same ids in their config.json (XLM names its own), so padding rows agree too.
HF_TOKEN_IDS = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=3,
                    pad_index=0, unk_index=1, bos_index=2, eos_index=3, mask_index=4)
IGNORE = -100  # torch's cross-entropy ignore_index
BATCH_FILE, LABEL_SHIFT = "batch.npz", "label_shift"


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_steps(step: Callable[[], object], warmup: int, steps: int) -> list[float]:
    """Seconds of each of `steps` calls of `step` after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def case_shape(name: str, tiny: bool) -> dict:
    return {**CASES[name], **TINY} if tiny else CASES[name]


def step_record(name: str, framework: str, dtype: str, case: dict, times: list[float],
                params: int, loss_first_step: float, loss_tokens: int,
                import_rss_mb: float) -> dict:
    """One measurement; the parent adds gflops_per_s and mfu (`with_flops`)."""
    median = statistics.median(times)
    peak = peak_rss_mb()
    return {"case": name, "framework": framework, "dtype": dtype, "arch": case["arch"],
            "batch": case["batch"], "seq_len": case["seq_len"],
            "tokens_per_s": round(case["batch"] * case["seq_len"] / median, 1),
            "step_ms": round(median * 1e3, 1), "step_ms_min": round(min(times) * 1e3, 1),
            "step_ms_max": round(max(times) * 1e3, 1), "timed_steps": len(times),
            "params": params, "loss_first_step": round(loss_first_step, 6),
            "loss_tokens": loss_tokens, "import_rss_mb": round(import_rss_mb),
            "peak_rss_mb": round(peak), "train_rss_mb": round(peak - import_rss_mb),
            "pid": os.getpid(), "note": NOTE}


def matmul_record(framework: str, dtype: str, size: int, times: list[float]) -> dict:
    median = statistics.median(times)
    return {"case": f"matmul_{size}", "framework": framework, "dtype": dtype,
            "gflops_per_s": round(2 * size ** 3 / median / 1e9, 1),
            "ms": round(median * 1e3, 2), "ms_min": round(min(times) * 1e3, 2),
            "ms_max": round(max(times) * 1e3, 2)}


# ---------------------------------------------------------------- batches

def _ordinary_ids(rng: np.random.Generator, shape: tuple[int, ...], vocab: int) -> np.ndarray:
    return rng.integers(FIRST_ORDINARY_ID, vocab, size=shape, dtype=np.int32)


def _ignored(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    return np.where(predicted, labels, IGNORE).astype(np.int64)


def clm_batch(config, rng: np.random.Generator) -> tuple[dict, dict]:
    """Packed rows of one document each (GPT, GPT-2); transformers shifts the labels itself."""
    b, t = config.data.global_batch_size, config.data.seq_len
    ids = _ordinary_ids(rng, (b, t), config.model.vocab_size)
    positions = np.broadcast_to(np.arange(t, dtype=np.int32), ids.shape)
    ours = {"inputs": ids, "segment_ids": np.ones_like(ids), "positions": positions}
    return ours, {"input_ids": ids, "labels": ids, LABEL_SHIFT: np.int64(1)}


def mlm_nsp_batch(config, rng: np.random.Generator) -> tuple[dict, dict]:
    """BERT rows `[CLS] A [SEP] B [SEP]` filling seq_len (A of a random length), 15% masked
    80/10/10 by the pipeline's mask_tokens, NSP labels 50/50 (data/pipeline.py _SentencePairs)."""
    from textgen_jax.data import masking

    b, t, vocab = config.data.global_batch_size, config.data.seq_len, config.model.vocab_size
    ids = _ordinary_ids(rng, (b, t), vocab)
    a_length = rng.integers(1, t - 3, size=(b, 1))  # B gets the other t - 3 - a >= 1 tokens
    positions = np.broadcast_to(np.arange(t, dtype=np.int32), ids.shape)
    ids[:, 0] = SPECIAL.cls_id
    ids[positions == a_length + 1] = SPECIAL.sep_id
    ids[:, -1] = SPECIAL.sep_id
    token_types = (positions >= a_length + 2).astype(np.int32)
    nsp_labels = rng.integers(0, 2, size=b, dtype=np.int32)
    inputs, mlm_labels = masking.mask_tokens(ids, rng, SPECIAL.mask_id, vocab,
                                             masking.special_ids(SPECIAL))
    ours = {"inputs": inputs, "token_types": token_types, "positions": positions,
            "segment_ids": np.ones_like(ids), "mlm_labels": mlm_labels, "nsp_labels": nsp_labels}
    theirs = {"input_ids": inputs, "token_type_ids": token_types,
              "attention_mask": np.ones_like(ids),
              "labels": _ignored(mlm_labels, mlm_labels >= 0), "next_sentence_label": nsp_labels,
              LABEL_SHIFT: np.int64(0)}
    return ours, theirs


def xlm_mlm_batch(config, rng: np.random.Generator) -> tuple[dict, dict]:
    """XLM streams of seq_len tokens, one language per row, 15% masked 80/10/10 by the
    pipeline's mask_tokens (data/multilingual.py _MaskStream)."""
    from textgen_jax.data import masking

    b, t, vocab = config.data.global_batch_size, config.data.seq_len, config.model.vocab_size
    ids = _ordinary_ids(rng, (b, t), vocab)
    langs = np.broadcast_to((np.arange(b, dtype=np.int32) % config.model.num_languages)[:, None],
                            ids.shape)
    inputs, mlm_labels = masking.mask_tokens(ids, rng, SPECIAL.mask_id, vocab,
                                             masking.special_ids(SPECIAL))
    ours = {"inputs": inputs, "langs": langs,
            "positions": np.broadcast_to(np.arange(t, dtype=np.int32), ids.shape),
            "segment_ids": np.ones_like(ids), "mlm_labels": mlm_labels}
    theirs = {"input_ids": inputs, "langs": langs, "attention_mask": np.ones_like(ids),
              "labels": _ignored(mlm_labels, mlm_labels >= 0), LABEL_SHIFT: np.int64(0)}
    return ours, theirs


def denoising_batch(config, rng: np.random.Generator) -> tuple[dict, dict]:
    """BART rows (data/pipeline.py _DenoisingPair): a document of seq_len - 2 tokens in
    sentences of 8-32 tokens; target `[bos] document [eos]`, source config.noise's add_noise of
    it (padded), decoder inputs `eos + target[:-1]`."""
    from textgen_jax.data import noising

    b, t, vocab = config.data.global_batch_size, config.data.seq_len, config.model.vocab_size
    noise = noising.NoiseConfig(**config.noise.to_dict())
    sources, targets = [], []
    for _ in range(b):
        document = _ordinary_ids(rng, (t - 2,), vocab)
        cuts = np.cumsum(rng.integers(8, 33, size=t))
        sentences = np.split(document, cuts[cuts < t - 2])
        source = noising.add_noise(sentences, rng, SPECIAL, noise)
        if source.size > t:
            source = np.append(source[:t - 1], SPECIAL.eos_id)
        sources.append(np.pad(source, (0, t - source.size), constant_values=SPECIAL.pad_id))
        targets.append(np.concatenate([[SPECIAL.bos_id], document, [SPECIAL.eos_id]]))
    inputs = np.stack(sources).astype(np.int32)
    targets = np.stack(targets).astype(np.int32)
    segment_ids = (inputs != SPECIAL.pad_id).astype(np.int32)
    decoder_inputs = np.concatenate([np.full((b, 1), SPECIAL.eos_id, np.int32), targets[:, :-1]],
                                    axis=1)
    target_mask = np.ones_like(targets)
    ours = {"inputs": inputs, "segment_ids": segment_ids, "decoder_inputs": decoder_inputs,
            "targets": targets, "target_mask": target_mask}
    theirs = {"input_ids": inputs, "attention_mask": segment_ids,
              "decoder_input_ids": decoder_inputs, "decoder_attention_mask": target_mask,
              "labels": _ignored(targets, target_mask > 0), LABEL_SHIFT: np.int64(0)}
    return ours, theirs


# Objective name (objectives.OBJECTIVES) -> (ours, theirs) batch builder.
BATCHES = {"clm": clm_batch, "mlm_nsp": mlm_nsp_batch, "xlm_mlm": xlm_mlm_batch,
           "denoising": denoising_batch}


# ---------------------------------------------------------------- textgen_jax

def jax_config(case: dict, dtype: str):
    """The case's preset with the case's shape, dropout 0 and the bench's optimizer."""
    from textgen_jax.presets import architecture_config

    c = architecture_config(case["arch"], case["preset"])
    c.model.update(num_layers=case["num_layers"], d_model=case["d_model"],
                   num_heads=case["num_heads"], d_ff=case["d_ff"], max_len=case["max_len"],
                   vocab_size=case["vocab"], dropout=0.0, attention_dropout=0.0, dtype=dtype)
    c.optim.update(OPTIM, warmup_steps=0, decay="constant", clip_norm=0.0)
    c.data.seq_len, c.data.global_batch_size = case["seq_len"], case["batch"]
    return c


def jax_matmul(dtype: str, size: int) -> dict:
    """size^3 matmul; bfloat16 inputs accumulate in float32, as our layers do."""
    import jax
    import jax.numpy as jnp

    a, b = (jax.random.normal(jax.random.key(i), (size, size)).astype(dtype) for i in (0, 1))
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    jax.block_until_ready(matmul(a, b))
    return matmul_record("textgen_jax", dtype, size,
                         time_steps(lambda: jax.block_until_ready(matmul(a, b)), 3, 10))


def jax_compile_seconds(case: dict, dtype: str, num_layers: int, scan_layers: bool) -> float:
    """Seconds to lower and compile the train step of `case` with `num_layers` blocks."""
    import jax

    from textgen_jax import models, objectives
    from textgen_jax.training import optimizer, partitioning
    from textgen_jax.training import steps as steps_lib

    c = jax_config(case, dtype)
    c.model.num_layers, c.model.scan_layers = num_layers, scan_layers
    mesh = partitioning.make_mesh(c.mesh)
    model = models.build_model(c.model, case["vocab"])
    objective = objectives.pretraining_objective(c)
    tx = optimizer.make_optimizer(c.optim, 10)
    _, abstract_state, shardings = steps_lib.state_shardings(model, tx, case["seq_len"], mesh)
    train_step = steps_lib.jit_train_step(
        steps_lib.make_train_step(model, objective.loss_fn, tx), shardings, mesh)
    ours, _ = BATCHES[objective.name](c, np.random.default_rng(SEED))
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=partitioning.batch_sharding(mesh))
             for k, v in ours.items()}
    start = time.perf_counter()
    with steps_lib.activate(mesh):
        train_step.lower(abstract_state, batch, jax.random.key(0)).compile()
    return time.perf_counter() - start


def compile_records(name: str, case: dict, dtype: str, depths: list[int]) -> list[dict]:
    seconds = {(depth, scan): jax_compile_seconds(case, dtype, depth, scan)
               for depth in depths for scan in (False, True)}
    return [{"name": f"compile_{name}", "framework": "textgen_jax", "dtype": dtype,
             "num_layers": depth, "scan_layers": scan, "compile_s": round(value, 3),
             "ratio_to_shallowest": round(value / seconds[(min(depths), scan)], 3),
             "ratio_to_unrolled": round(value / seconds[(depth, False)], 3)}
            for (depth, scan), value in seconds.items()]


def jax_train(name: str, case: dict, dtype: str, steps: int, exchange: Path | None,
              same_init: bool) -> dict:
    """Our measurement. With `exchange`, also writes the batch and their config.json there
    (and with `same_init` our initial parameters, the same for every dtype) for the
    transformers runs of the case."""
    import jax

    from textgen_jax import convert, models, objectives
    from textgen_jax.training import metrics as metrics_lib
    from textgen_jax.training import optimizer, partitioning
    from textgen_jax.training import steps as steps_lib

    c = jax_config(case, dtype)
    objective = objectives.pretraining_objective(c)
    ours, theirs = BATCHES[objective.name](c, np.random.default_rng(SEED))  # imports data/
    import_rss = peak_rss_mb()
    spec = models.spec_for(c.model)
    model = spec.build(case["vocab"])
    mesh = partitioning.make_mesh(c.mesh)
    tx = optimizer.make_optimizer(c.optim, steps + WARMUP_STEPS + 1)
    state, shardings = steps_lib.create_state(model, tx, case["seq_len"], mesh, seed=SEED)
    train_step = steps_lib.jit_train_step(
        steps_lib.make_train_step(model, objective.loss_fn, tx), shardings, mesh)
    if exchange is not None and not (exchange / BATCH_FILE).exists():  # the first dtype's run
        exchange.mkdir(parents=True, exist_ok=True)
        np.savez(exchange / BATCH_FILE, **theirs)
        if same_init:
            convert.export_hf(c, state.params, exchange, extra=HF_TOKEN_IDS)
        else:
            hf = {**HF_TOKEN_IDS, **convert.hf_config_from(c)}
            (exchange / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    batch = partitioning.global_batch(ours, mesh)
    non_embedding = metrics_lib.count_params(state.params, exclude_embeddings=True)
    flops_per_token = metrics_lib.flops_per_token(
        spec.attention_layer_count(), c.model.d_model, c.data.seq_len, non_embedding)

    rng = jax.random.key(0)
    holder = {"state": state}
    del state

    def step():
        with steps_lib.activate(mesh):
            holder["state"], metrics = train_step(holder["state"], batch, rng)
        return jax.block_until_ready(metrics)

    first = step()  # compiles
    record = step_record(
        name, "textgen_jax", dtype, case, time_steps(step, WARMUP_STEPS, steps),
        metrics_lib.count_params(holder["state"].params), float(first["loss"]),
        int(first["tokens"]), import_rss)
    return {**record, "objective": objective.name, "non_embedding_params": non_embedding,
            "attention_layers": spec.attention_layer_count(), "flops_per_token": flops_per_token}


# ---------------------------------------------------------------- transformers

def torch_matmul(dtype: str, size: int) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count())
    generator = torch.Generator().manual_seed(SEED)
    a, b = (torch.randn(size, size, generator=generator).to(getattr(torch, dtype))
            for _ in range(2))
    return matmul_record("transformers", dtype, size, time_steps(lambda: a @ b, 3, 10))


def torch_train(name: str, case: dict, dtype: str, steps: int, exchange: Path,
                same_init: bool) -> dict:
    """Their measurement, on the config.json and batch our run of the case wrote."""
    import torch
    import transformers

    hf_config = transformers.AutoConfig.from_pretrained(exchange)
    model_class = getattr(transformers, hf_config.architectures[0])  # imports its module
    import_rss = peak_rss_mb()
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(SEED)
    model = (model_class.from_pretrained(exchange) if same_init
             else model_class(hf_config)).train()
    optim = torch.optim.AdamW(model.parameters(), lr=OPTIM["lr"], betas=(OPTIM["b1"], OPTIM["b2"]),
                              eps=OPTIM["eps"], weight_decay=OPTIM["weight_decay"])
    with np.load(exchange / BATCH_FILE) as saved:
        arrays = dict(saved)
    label_shift = int(arrays.pop(LABEL_SHIFT))  # causal LMs shift their labels themselves
    loss_tokens = int((arrays["labels"][:, label_shift:] != IGNORE).sum())
    batch = {k: torch.from_numpy(v.astype(np.int64)) for k, v in arrays.items()}
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16"
                else contextlib.nullcontext())

    def step():
        optim.zero_grad(set_to_none=True)
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optim.step()
        return loss

    first = step().item()
    record = step_record(name, "transformers", dtype, case,
                         time_steps(step, WARMUP_STEPS, steps),
                         sum(p.numel() for p in model.parameters()),  # tied: counted once
                         first, loss_tokens, import_rss)
    return {**record, "hf_class": model_class.__name__,
            "attn_implementation": model.config._attn_implementation}


def transformers_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))


# ---------------------------------------------------------------- one measurement per process

def run_one(what: str, steps: int, tiny: bool, workdir: str, same_init: bool) -> dict:
    """The `--_one name:framework:dtype` child: one measurement in this fresh process."""
    name, framework, dtype = what.split(":")
    if name == "matmul":
        size = TINY_MATMUL_SIZE if tiny else MATMUL_SIZE
        return (jax_matmul if framework == "textgen_jax" else torch_matmul)(dtype, size)
    exchange = Path(workdir) / name if workdir else None
    train = jax_train if framework == "textgen_jax" else torch_train
    return train(name, case_shape(name, tiny), dtype, steps, exchange, same_init)


def measure(what: str, args: argparse.Namespace, steps: int = 0) -> dict:
    """`run_one(what)` in a fresh process; its record (its last stdout line)."""
    command = [sys.executable, os.path.abspath(__file__), f"--_one={what}", f"--steps={steps}",
               f"--workdir={args.workdir}"]
    command += [flag for flag, on in (("--tiny", args.tiny), ("--same-init", args.same_init))
                if on]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True)  # stderr passes through
    lines = result.stdout.splitlines()
    if result.returncode != 0 or not lines:
        raise SystemExit(f"The measurement {what} failed (exit status {result.returncode}); "
                         "its error is above.")
    for line in lines[:-1]:
        print(line, file=sys.stderr)
    return json.loads(lines[-1])


def with_flops(record: dict, flops_per_token: float, matmul: dict) -> dict:
    """The record with the case's FLOPs (ours, the same model for both sides) per second and
    MFU against the framework's matmul in the same dtype."""
    gflops = record["tokens_per_s"] * flops_per_token / 1e9
    return {**record, "flops_per_token": flops_per_token, "gflops_per_s": round(gflops, 1),
            "mfu": round(gflops / matmul["gflops_per_s"], 3)}


def comparison(name: str, ours: dict[str, dict], theirs: dict[str, dict]) -> dict:
    record = {"case": name, "kind": "comparison",
              "textgen_jax_tokens_per_s": {d: r["tokens_per_s"] for d, r in ours.items()},
              "transformers_tokens_per_s": {d: r["tokens_per_s"] for d, r in theirs.items()},
              "ratio": {f"{a}_vs_{b}": round(ours[a]["tokens_per_s"] / theirs[b]["tokens_per_s"], 3)
                        for a in ours for b in theirs}}
    best_ours = max(r["tokens_per_s"] for r in ours.values())
    best_theirs = max(r["tokens_per_s"] for r in theirs.values())
    record["best_ratio"] = round(best_ours / best_theirs, 3)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--steps", type=int, default=0,
                        help="timed steps per run (default and floor: the case's bench/README.md "
                             "minimum, 10 or 5 for the base sizes)")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated dtypes")
    parser.add_argument("--no-transformers", action="store_true",
                        help="skip the transformers baseline")
    parser.add_argument("--compile-depths", default="",
                        help="comma-separated depths: time compilation, unrolled and scanned")
    parser.add_argument("--same-init", action="store_true",
                        help="transformers starts from our initial parameters (loss check)")
    parser.add_argument("--tiny", action="store_true",
                        help="2 layers of 64, vocab 512, batch 2 x 32, no step floor (tests)")
    parser.add_argument("--_one", default="", help=argparse.SUPPRESS)  # the child's measurement
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)  # batch + their config
    args = parser.parse_args()
    if args._one:
        emit(run_one(args._one, args.steps, args.tiny, args.workdir, args.same_init))
        return
    names = args.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}: choose from {', '.join(CASES)}")
    dtypes = args.dtypes.split(",")
    if args.compile_depths:
        depths = [int(depth) for depth in args.compile_depths.split(",")]
        for name in names:
            for dtype in dtypes:
                for record in compile_records(name, case_shape(name, args.tiny), dtype, depths):
                    emit(record)
        return
    frameworks = FRAMEWORKS if not args.no_transformers and transformers_available() else \
        FRAMEWORKS[:1]

    with tempfile.TemporaryDirectory(prefix="train_throughput_") as exchange:
        args.workdir = exchange if len(frameworks) > 1 else ""
        matmul = {(f, d): measure(f"matmul:{f}:{d}", args) for f in frameworks for d in dtypes}
        for record in matmul.values():
            emit(record)
        for name in names:
            steps = args.steps if args.tiny else max(args.steps, CASES[name]["min_steps"])
            ours = {d: measure(f"{name}:textgen_jax:{d}", args, steps) for d in dtypes}
            flops_per_token = ours[dtypes[0]]["flops_per_token"]
            records = {"textgen_jax": ours}
            if len(frameworks) > 1:
                records["transformers"] = {d: measure(f"{name}:transformers:{d}", args, steps)
                                           for d in dtypes}
            for framework, by_dtype in records.items():
                for dtype, record in by_dtype.items():
                    by_dtype[dtype] = with_flops(record, flops_per_token,
                                                 matmul[(framework, dtype)])
                    emit(by_dtype[dtype])
            if len(frameworks) > 1:
                emit(comparison(name, ours, records["transformers"]))


if __name__ == "__main__":
    main()
