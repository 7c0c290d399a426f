"""Orbax checkpoints: params, optimizer state, step, resolved config and data-iterator state.

Each checkpoint is a composite of items, so `textgen_jax.load` restores the params alone.
Restoring always passes abstract arrays carrying the target shardings, so a checkpoint written
on one topology restores on any other (256 chips -> one CPU and back).

Every workdir path goes through `workdir_path` (etils.epath), as Orbax's own do, so a workdir
may be a gs:// (or other fsspec/epath) URI as well as a local directory.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from textgen_jax import data as data_lib
from textgen_jax import models
from textgen_jax.config import ConfigError, base_config

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"  # the params of the best evaluation by a fine-tuning task's metric
CONFIG_FILE = "config.json"


# The leaves that decide the training stream: a resume under other values would restore the
# iterator position of another pipeline (config.train.restart_data starts the new one over).
DATA_KEYS = ("objective", "task.name", "data.dataset", "data.files", "data.text_key",
             "data.train_split", "data.seq_len", "data.global_batch_size",
             "data.shuffle_buffer_seed", "data.input_shards", "data.languages",
             "data.language_features", "data.parallel_dataset", "data.language_alpha")


def _leaf(values: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return tuple(values) if isinstance(values, list) else values


def data_changes(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> list[str]:
    """'config.KEY: checkpoint A, now B' for each DATA_KEYS leaf that differs from the
    workdir's config.json (the config its checkpoints were trained with)."""
    saved = read_config(workdir)
    if saved is None:
        return []
    defaults, now = base_config().to_dict(), config.to_dict()
    changes = []
    for key in DATA_KEYS:
        before = _leaf(saved, key) if _leaf(saved, key) is not None else _leaf(defaults, key)
        if before != _leaf(now, key):
            changes.append(f"config.{key}: checkpoint {before!r}, now {_leaf(now, key)!r}")
    return changes


def workdir_path(workdir: str | os.PathLike) -> epath.Path:
    """The workdir as an etils.epath.Path: a local directory made absolute, or a URI
    (gs://bucket/run) kept as it is. Every file of a workdir is read and written through it."""
    path = epath.Path(workdir)
    return path if path.is_absolute() else path.absolute()


def _atomicity(commit_file: bool) -> ocp.options.AtomicityOptions | None:
    """Orbax's default finishes a checkpoint by renaming its directory (a gs:// workdir gets a
    commit file anyway); `commit_file` writes in place and finishes with a commit file, for a
    bucket mounted with gcsfuse, where a rename copies and deletes every object."""
    return ocp.options.AtomicityOptions(mode=ocp.options.AtomicityMode.COMMIT_FILE) \
        if commit_file else None


def manager(workdir: str | os.PathLike, keep: int = 3, async_save: bool = True,
            commit_file: bool = False, writer: bool = False) -> ocp.CheckpointManager:
    """The workdir's checkpoints; `commit_file` as config.train.checkpoint_commit_file.
    `writer`: the one run that writes this workdir (it holds its lock), which removes what an
    interrupted save left unfinished (a kill -9 or a failed write mid-save)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        atomicity_options=_atomicity(commit_file), cleanup_tmp_directories=writer)
    return ocp.CheckpointManager(workdir_path(workdir) / CHECKPOINT_DIR, options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, config: ml_collections.ConfigDict,
         data_iterator: grain.DatasetIterator | None, force: bool = False) -> bool:
    """Starts an (async) save of everything needed to resume at `step`."""
    items = dict(
        params=ocp.args.StandardSave(state.params),
        opt_state=ocp.args.StandardSave(state.opt_state),
        meta=ocp.args.JsonSave({"step": int(step)}),
        config=ocp.args.JsonSave(config.to_dict()),
    )
    if data_iterator is not None:
        items["data"] = data_lib.iterator_save_args(data_iterator)
    return mngr.save(step, args=ocp.args.Composite(**items), force=force)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state: Any,
            data_iterator: grain.DatasetIterator | None) -> Any:
    """Restores params and optimizer state onto `abstract_state`'s shardings; resumes the
    iterator in place. Returns (params, opt_state)."""
    items = dict(params=ocp.args.StandardRestore(abstract_state.params),
                 opt_state=ocp.args.StandardRestore(abstract_state.opt_state))
    if data_iterator is not None:
        items["data"] = data_lib.iterator_restore_args(data_iterator)
    restored = mngr.restore(step, args=ocp.args.Composite(**items))
    return restored["params"], restored["opt_state"]


def holds_optimizer_state(mngr: ocp.CheckpointManager, step: int) -> bool:
    """False for a params-only checkpoint (the step 0 of an imported model)."""
    return (mngr.directory / str(step) / "opt_state").exists()


def restore_params_from(mngr: ocp.CheckpointManager, step: int, abstract_params: Any) -> Any:
    """The params item alone of checkpoint `step`, on `abstract_params`' shardings."""
    restored = mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))
    return restored["params"]


def best_manager(workdir: str | os.PathLike, metric: str,
                 commit_file: bool = False) -> ocp.CheckpointManager:
    """Keeps one params checkpoint in workdir/best: the one of the highest `metric`."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, best_fn=lambda metrics: metrics[metric], best_mode="max",
        keep_checkpoints_without_metrics=False, enable_async_checkpointing=False,
        atomicity_options=_atomicity(commit_file))
    return ocp.CheckpointManager(workdir_path(workdir) / BEST_DIR, options=options)


def save_best(mngr: ocp.CheckpointManager, step: int, params: Any,
              metrics: dict[str, float]) -> None:
    """Offers the params evaluated at `step`; Orbax keeps them only while they are the best."""
    mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                            meta=ocp.args.JsonSave({"step": int(step),
                                                                    **metrics})),
              metrics=metrics, force=True)


def restore_params(workdir: str | os.PathLike, abstract_params: Any, step: int | None = None,
                   best: bool = False, commit_file: bool = False) -> tuple[Any, int]:
    """Only the params of the latest (or given) checkpoint in `workdir`, on the target
    shardings; with `best`, those kept in workdir/best by a fine-tuning task's metric.
    `commit_file`: the run's config.train.checkpoint_commit_file (then a checkpoint still
    being written, with no commit file yet, is never read)."""
    if best:
        best_dir = workdir_path(workdir) / BEST_DIR
        if not best_dir.is_dir():
            raise FileNotFoundError(f"{best_dir} not found: only a fine-tuning run "
                                    "(config.task.name) keeps a best checkpoint.")
        mngr = ocp.CheckpointManager(best_dir, options=ocp.CheckpointManagerOptions(
            atomicity_options=_atomicity(commit_file)))
    else:
        mngr = manager(workdir, commit_file=commit_file)
    candidates = sorted(mngr.all_steps(), reverse=True) if step is None else [step]
    if not candidates:
        raise FileNotFoundError(f"no checkpoint in {workdir_path(workdir) / CHECKPOINT_DIR}; "
                                "train first (textgen-jax train --workdir ...).")
    try:
        for index, candidate in enumerate(candidates):
            try:
                return restore_params_from(mngr, candidate, abstract_params), candidate
            except Exception as error:  # noqa: BLE001  (any unreadable file: try the next)
                if index == len(candidates) - 1:
                    raise unreadable_error(workdir, candidate, error,
                                           earlier=step is None) from error
                logging.warning("checkpoint %d of %s cannot be restored (%s); reading step %d "
                                "instead", candidate, workdir, describe(error),
                                candidates[index + 1])
    finally:
        mngr.close()


def describe(error: BaseException) -> str:
    """One line of what went wrong with a checkpoint (its exception's first line; a long one
    keeps its start and its end, where storage errors put the cause)."""
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    if len(line) > 300:
        line = f"{line[:120]} ... {line[-170:]}"
    return f"{type(error).__name__}: {line}"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, no permission, a storage error); the
    message names the step, the cause and the checkpoint the next run resumes from."""


def write_error(workdir: str | os.PathLike, step: int, error: BaseException,
                intact: int | None) -> CheckpointWriteError:
    """The error that ends a run whose save of `step` failed; `intact` is the newest step
    whose checkpoint was finished (None: none yet)."""
    if intact:
        then = (f"the checkpoint at step {intact} is intact: fix the cause (free space on the "
                f"workdir's disk, its permissions) and run train again to resume from step "
                f"{intact}.")
    else:
        then = ("no checkpoint was finished before it: fix the cause (free space on the "
                "workdir's disk, its permissions) and run train again to start over.")
    return CheckpointWriteError(f"training stopped: writing the checkpoint at step {step} to "
                                f"{workdir} failed ({describe(error)}); {then}")


def unreadable_error(workdir: str | os.PathLike, step: int, error: BaseException,
                     earlier: bool = True) -> ConfigError:
    """The error of a checkpoint that does not restore, when no other one is to be tried
    (`earlier`: the newer ones failed too)."""
    others = ", and no other checkpoint can either" if earlier else ""
    return ConfigError(f"checkpoint {step} of {workdir} cannot be restored ({describe(error)})"
                       f"{others}: its files are damaged. Start a new --workdir (or init_from "
                       "one that is intact).")


UNREADABLE_DIR = "unreadable_checkpoints"


def set_aside(mngr: ocp.CheckpointManager, workdir: str | os.PathLike, step: int) -> epath.Path:
    """Moves checkpoint `step` out of the manager's directory into workdir/
    unreadable_checkpoints/<step> (process 0; every process waits), so that the run can save
    that step again; returns where it went."""
    target = workdir_path(workdir) / UNREADABLE_DIR / f"{step}-{int(time.time())}"
    if jax.process_index() == 0:
        target.parent.mkdir(parents=True, exist_ok=True)
        (epath.Path(mngr.directory) / str(step)).rename(target)
    multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    mngr.reload()
    return target


def read_config(workdir: str | os.PathLike) -> dict[str, Any] | None:
    path = workdir_path(workdir) / CONFIG_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_config(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> None:
    """Writes the resolved config atomically (process 0 only)."""
    if jax.process_index() != 0:
        return
    path = workdir_path(workdir) / CONFIG_FILE
    temporary = path.with_name(CONFIG_FILE + ".tmp")
    temporary.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list),
                         encoding="utf-8")
    temporary.replace(path)


def check_compatible(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> None:
    """Errors when the workdir's checkpoints are of another architecture or size."""
    saved = read_config(workdir)
    if saved is None or not (workdir_path(workdir) / CHECKPOINT_DIR).is_dir():
        return
    # vocab_size 0 means "the tokenizer's size", known only once the tokenizer is loaded.
    keys = [key for key in models.spec_for(config.model).shape_keys
            if not (key == "vocab_size" and config.model[key] == 0)]
    # A key that an older workdir's config lacks had today's default.
    saved_model = {**base_config().model.to_dict(), **saved["model"]}
    differences = [f"config.model.{key}: checkpoint {saved_model.get(key)!r}, "
                   f"now {config.model[key]!r}"
                   for key in keys if saved_model.get(key) != config.model[key]]
    if differences:
        raise ConfigError(
            f"workdir {workdir} holds checkpoints of another model ("
            + "; ".join(differences)
            + "). Use a new --workdir, or the config the checkpoints were trained with.")
