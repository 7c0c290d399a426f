"""A transformers checkpoint directory <-> a textgen_jax workdir (the CLI's import-hf and
export-hf)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from textgen_jax import models
from textgen_jax.convert.huggingface import export_hf, import_hf
from textgen_jax.data.hf_tokenizer import HF_TOKENIZER_FILENAME
from textgen_jax.data.tokenizer import MISSING_ROLES, TOKENIZER_FILENAME, load_tokenizer
from textgen_jax.training import checkpoint

HF_CONFIG_FILE = "hf_config.json"  # their config.json, kept for export


def import_to_workdir(src_dir: str | os.PathLike, workdir: str | os.PathLike, *,
                      allow_pickle: bool = False, tokenizer: str = "",
                      log=print) -> list[str]:
    """Writes a workdir holding the checkpoint's params (step 0), config and tokenizer.

    `tokenizer`: a tokenizer.json or sentencepiece .model to use when `src_dir` has no
    tokenizer.json. Our parameters the checkpoint lacks (e.g. BERT's NSP head under
    BertForMaskedLM) are initialised as in training. Returns the report lines it logged.
    """
    src, workdir = Path(src_dir), Path(workdir)
    if (workdir / checkpoint.CHECKPOINT_DIR).exists():
        raise ValueError(f"{workdir} already holds checkpoints; import into a new --workdir.")
    imported = import_hf(src, allow_pickle)
    config = imported.config
    tokenizer_source = src / HF_TOKENIZER_FILENAME if not tokenizer else Path(tokenizer)
    if not tokenizer_source.exists():
        raise FileNotFoundError(
            f"{tokenizer_source} not found: the imported model's ids need its own tokenizer. "
            "Pass --tokenizer PATH (a tokenizer.json, or a sentencepiece .model).")
    workdir.mkdir(parents=True, exist_ok=True)
    target = (HF_TOKENIZER_FILENAME if tokenizer_source.suffix == ".json"
              else TOKENIZER_FILENAME)
    shutil.copyfile(tokenizer_source, workdir / target)
    loaded_tokenizer = load_tokenizer(workdir)
    vocab = loaded_tokenizer.vocab_size
    if vocab > config.model.vocab_size:
        (workdir / target).unlink()
        raise ValueError(f"the tokenizer {tokenizer_source} has {vocab} tokens, more than the "
                         f"model's vocab_size={config.model.vocab_size}; use the checkpoint's "
                         "own tokenizer.")

    model = models.build_model(config.model, config.model.vocab_size)
    params = _with_initialised(model, imported.params, imported.missing, config.seed)
    report = [f"imported {config.model.arch} ({_count(params):,} parameters) from {src}"]
    report += [f"newly initialised (not in the checkpoint): {p}" for p in imported.missing]
    report += [f"dropped (no place in {config.model.arch}): {t}" for t in imported.dropped]
    report += [f"the tokenizer has no {role} token: {MISSING_ROLES[role]}"
               for role in loaded_tokenizer.missing_roles]
    for line in report:
        log(line)

    mngr = checkpoint.manager(str(workdir), async_save=False)
    mngr.save(0, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave({"step": 0}),
        config=ocp.args.JsonSave(config.to_dict())))
    mngr.wait_until_finished()
    mngr.close()
    checkpoint.write_config(str(workdir), config)
    (workdir / HF_CONFIG_FILE).write_text(
        json.dumps(json.loads((src / "config.json").read_text(encoding="utf-8")), indent=2),
        encoding="utf-8")
    return report


def _with_initialised(model, imported: dict, missing: list[str], seed: int) -> dict:
    """`imported` params, with the model's own init for the `missing` leaves."""
    if not missing:
        return imported
    initialised = nn.meta.unbox(model.init(jax.random.key(seed),
                                           model.example_batch(8))["params"])
    merged = traverse_util.flatten_dict(jax.tree.map(np.asarray, initialised))
    merged.update(traverse_util.flatten_dict(imported))
    return traverse_util.unflatten_dict(merged)


def _count(params) -> int:
    return sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree.leaves(params))


def export_workdir(workdir: str | os.PathLike, out_dir: str | os.PathLike,
                   step: int | None = None) -> None:
    """Writes the workdir's latest (or given) params as a transformers checkpoint directory,
    with its tokenizer.json when it has one."""
    import textgen_jax

    loaded = textgen_jax.load(str(workdir), step)
    saved_hf = Path(workdir) / HF_CONFIG_FILE
    extra = json.loads(saved_hf.read_text(encoding="utf-8")) if saved_hf.exists() else {}
    export_hf(loaded.config, jax.device_get(loaded.params), out_dir,
              extra={k: v for k, v in extra.items() if k != "architectures"})
    if (Path(workdir) / HF_TOKENIZER_FILENAME).exists():
        shutil.copyfile(Path(workdir) / HF_TOKENIZER_FILENAME,
                        Path(out_dir) / HF_TOKENIZER_FILENAME)
