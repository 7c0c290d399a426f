"""The one training loop: every architecture, objective and topology goes through here."""

from __future__ import annotations

import functools
import math
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from textgen_jax import config as config_lib
from textgen_jax import data as data_lib
from textgen_jax import decoding, models, ops
from textgen_jax.finetune.objectives import objective_for
from textgen_jax.finetune.tasks import in_language
from textgen_jax.training import (checkpoint, init_from, metrics as metrics_lib, optimizer,
                                  partitioning, steps)
from textgen_jax.training.workdir_lock import WorkdirLock


class DivergenceError(ValueError):
    """The loss or gradients became non-finite; the message names the step and the fix."""


class _Preemption:
    """Turns SIGTERM into a stop that the loop reads between steps, so it can save first.

    One process: a Python signal handler sets a flag. Several: JAX's preemption sync manager
    (started by jax.distributed.initialize) catches SIGTERM on any process and makes all of
    them reach the same step; a Python handler would replace its own and stop one process alone.
    """

    def __init__(self):
        self.requested = False
        self._multiprocess = jax.process_count() > 1
        if not self._multiprocess:
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def reached(self, step: int) -> bool:
        if self._multiprocess:
            from jax.experimental import multihost_utils
            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def restore(self) -> None:
        if not self._multiprocess:
            signal.signal(signal.SIGTERM, self._previous)


def resolve_vocab_size(config: ml_collections.ConfigDict, tokenizer_size: int) -> None:
    if config.model.vocab_size == 0:
        config.model.vocab_size = tokenizer_size
    elif config.model.vocab_size < tokenizer_size:
        raise config_lib.ConfigError(
            f"config.model.vocab_size={config.model.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer_size} pieces; set it to 0 (= the tokenizer's size) or larger.")


def make_predict_step(config: ml_collections.ConfigDict, objective):
    """The (params, batch) -> {'predictions', 'labels', ...} of a fine-tuning objective, whose
    metrics need predictions, jitted unless the objective compiles its own; None for the
    others."""
    if objective.predict_fn is None:
        return None
    model = models.build_model(config.model, config.model.vocab_size)
    predict = functools.partial(objective.predict_fn, model)
    return jax.jit(predict) if objective.jit_predict else predict


def evaluate(eval_step, params, config: ml_collections.ConfigDict, tokenizer,
             mesh, predict=None) -> dict[str, float]:
    """Loss, perplexity and accuracy over the first config.train.eval_batches batches of the
    validation split (read in order, so every evaluation sees the same tokens), and a
    fine-tuning task's metrics (`predict` from make_predict_step, built here when None); for
    each of config.task.eval_languages, its loss and metrics in that language as
    <name>_<language>."""
    objective = objective_for(config)
    dataset = partitioning.process_dataset(objective.dataset, config, tokenizer,
                                           config.data.eval_split, shuffle=False, repeat=True)
    predict = predict or make_predict_step(config, objective)
    totals: dict[str, float] = {}
    outputs: dict[str, list[np.ndarray]] = {}
    iterator = iter(dataset)
    for _ in range(config.train.eval_batches):
        batch = partitioning.global_batch(next(iterator), mesh)
        sums = jax.device_get(eval_step(params, batch))
        for name, value in sums.items():
            totals[name] = totals.get(name, 0.0) + float(value)
        if predict is not None:
            for name, value in predict(params, batch).items():
                outputs.setdefault(name, []).append(np.asarray(
                    multihost_utils.process_allgather(value, tiled=True)))
    result = steps.means_from_sums(totals)
    result["perplexity"] = math.exp(min(result["loss"], 50.0))
    if predict is not None:
        result.update(objective.score(config, tokenizer, config.data.eval_split,
                                      {name: np.concatenate(values)
                                       for name, values in outputs.items()}))
    for language in config.task.eval_languages:  # cross-lingual transfer (XLM §5.2)
        scores = evaluate(eval_step, params, in_language(config, language), tokenizer, mesh,
                          predict)
        result.update({f"{name}_{language}": scores[name]
                       for name in ("loss", *objective.metrics)})
    return result


def _lock_workdir(workdir: str, log) -> WorkdirLock | None:
    """Process 0 takes the workdir's lock for the whole run (every process learns whether it
    could); None on the other processes."""
    lock, refused = None, None
    if jax.process_index() == 0:
        try:
            lock = WorkdirLock(workdir)
            stale = lock.acquire()
            if stale is not None:
                log(f"took over the lock of process {stale.get('pid')} on host "
                    f"{stale.get('host')}, which is gone")
        except config_lib.ConfigError as error:
            refused = error
    if jax.process_count() > 1:
        held = multihost_utils.broadcast_one_to_all(np.int32(refused is None))
        if not held and refused is None:
            raise config_lib.ConfigError(f"workdir {workdir} is in use by another run (see "
                                         "process 0's error); one train per workdir.")
    if refused is not None:
        raise refused
    return lock


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains (or resumes) in `workdir`; returns the final train and eval metrics. Holds the
    workdir's lock while it runs: a second run on the same workdir is refused."""
    config_lib.validate(config)
    checkpoint.workdir_path(workdir).mkdir(parents=True, exist_ok=True)
    checkpoint.check_compatible(workdir, config)
    lock = _lock_workdir(workdir, metrics_lib.log_info)
    try:
        return _train_and_evaluate(config, workdir, lock)
    finally:
        if lock is not None:
            lock.release()


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        lock: WorkdirLock | None) -> dict[str, Any]:
    log = metrics_lib.log_info

    # ---- mesh -------------------------------------------------------------------------
    mesh = partitioning.make_mesh(config.mesh)
    log(f"mesh {dict(mesh.shape)} over {jax.device_count()} {jax.devices()[0].platform} devices, "
        f"{jax.process_count()} process(es)")

    # ---- tokenizer and input ------------------------------------------------------------
    if config.init_from:  # fine-tuning reads the ids the model was pretrained on
        init_from.check_tokenizer(workdir, config.init_from)
    tokenizer = data_lib.load_or_train_tokenizer(workdir, config,
                                                 process_index=jax.process_index(),
                                                 process_count=jax.process_count())
    resolve_vocab_size(config, tokenizer.vocab_size)
    checkpoint.check_compatible(workdir, config)
    partitioning.check_divisibility(config, mesh, config.model.vocab_size)
    objective = objective_for(config)
    objective.check_vocabulary(config, tokenizer, f"in {workdir}")
    train_data = partitioning.process_dataset(objective.dataset, config, tokenizer,
                                              config.data.train_split, shuffle=True, repeat=True)
    train_iterator = iter(train_data)

    # ---- model, optimizer, sharded state -------------------------------------------------
    spec = models.spec_for(config.model)
    model = spec.build(config.model.vocab_size)
    loss_fn = objective.loss_fn
    num_steps = config.train.num_steps
    schedule = optimizer.learning_rate_schedule(config.optim, num_steps)
    tx = optimizer.make_optimizer(config.optim, num_steps, config.train.freeze)
    _, abstract_state, shardings = steps.state_shardings(model, tx, config.data.seq_len, mesh)

    # ---- memory: a report, and an error before compiling what cannot fit ------------------
    param_bytes = metrics_lib.bytes_per_device(abstract_state.params)
    optimizer_bytes = metrics_lib.bytes_per_device(abstract_state.opt_state)
    activation_bytes = metrics_lib.activation_bytes_per_device(
        config, dict(mesh.shape), spec.attention_layer_count())
    log(metrics_lib.memory_report(metrics_lib.count_params(abstract_state.params), param_bytes,
                                  optimizer_bytes, activation_bytes))
    metrics_lib.check_device_memory(2 * param_bytes + optimizer_bytes + activation_bytes)

    # ---- checkpoint: resume from the latest, or start fresh --------------------------------
    mngr = checkpoint.manager(workdir, config.train.keep_checkpoints,
                              config.train.async_checkpointing,
                              config.train.checkpoint_commit_file, writer=True)

    def restored(step: int) -> steps.TrainState:
        if step == 0 and not checkpoint.holds_optimizer_state(mngr, step):
            # Params alone at step 0 (textgen-jax import-hf): a fresh optimizer and data stream.
            params = checkpoint.restore_params_from(mngr, step, abstract_state.params)
            log(f"initialised from the imported parameters at step {step}")
            return steps.state_with_fresh_optimizer(step, params, tx, shardings)
        changes = checkpoint.data_changes(workdir, config)
        if changes and not config.train.restart_data:
            raise config_lib.ConfigError(
                "the training data differ from the checkpoint's (" + "; ".join(changes)
                + "): its iterator position belongs to the old stream. Use the old values, or "
                "--config.train.restart_data=True to resume the model and optimizer and start "
                "the new stream from its beginning.")
        if changes:
            log("config.train.restart_data: the data stream starts over (" + "; ".join(changes)
                + ")")
        params, opt_state = checkpoint.restore(mngr, step, abstract_state,
                                               None if changes else train_iterator)
        log(f"resumed from the checkpoint at step {step}")
        return steps.TrainState(step=jax.device_put(np.int32(step), shardings.step),
                                params=params, opt_state=opt_state)

    # The newest checkpoint that restores; newer ones that do not (a truncated file, a missing
    # item) are reported and set aside, so that this run can write those steps again.
    state, start_step, unreadable = None, 0, []
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            state, start_step = restored(step), step
            break
        except config_lib.ConfigError:
            raise
        except Exception as error:  # noqa: BLE001  (any damage: try the previous one)
            log(f"checkpoint {step} cannot be restored ({checkpoint.describe(error)})")
            unreadable.append((step, error))
            train_iterator = iter(train_data)  # a partial restore may have moved it
    if unreadable and state is None:
        raise checkpoint.unreadable_error(workdir, *unreadable[0])
    for step, _ in unreadable:
        moved = checkpoint.set_aside(mngr, workdir, step)
        log(f"checkpoint {step} moved to {moved}; resuming from step {start_step}")
    if state is None:
        state, _ = steps.create_state(model, tx, config.data.seq_len, mesh, config.seed)
        if config.init_from:
            state = init_from.start_from_pretrained(state, config, tx, shardings, log)
    checkpoint.write_config(workdir, config)
    num_params = metrics_lib.count_params(state.params)
    log(f"{config.model.arch}: {num_params:,} parameters, vocabulary {config.model.vocab_size}")
    if config.model.dtype == "auto":
        log(ops.auto_dtype_reason())

    # ---- update and eval steps -----------------------------------------------------------
    train_step = steps.jit_train_step(
        steps.make_train_step(model, loss_fn, tx, schedule, config.optim.grad_accum_steps),
        shardings, mesh)
    eval_step = steps.jit_eval_step(steps.make_eval_step(model, loss_fn), shardings.params, mesh)
    rng = jax.random.key(config.seed + 1)

    # ---- observability --------------------------------------------------------------------
    writer = metrics_lib.MetricsWriter(workdir, enabled=jax.process_index() == 0,
                                       start_step=start_step)
    if writer.dropped:
        log(f"metrics.jsonl: dropped {writer.dropped} rows logged after step {start_step} "
            "by an earlier run (this run logs those steps again)")
    tokens_per_step = config.data.global_batch_size * config.data.seq_len
    flops_per_step = tokens_per_step * metrics_lib.flops_per_token(
        spec.attention_layer_count(), config.model.d_model, config.data.seq_len,
        metrics_lib.count_params(state.params, exclude_embeddings=True))
    peak_flops = metrics_lib.peak_flops_per_device(ops.compute_dtype(config.model.dtype)) * jax.device_count()

    last_saved = start_step
    written = start_step or None  # the newest checkpoint known to be finished
    divergence = steps.Divergence()

    def check_finite(step: int, params: Any = None) -> None:
        """Raises before anything non-finite is evaluated or saved (a ValueError: the CLI
        prints it as one line); `params`, when given, must be finite too."""
        bad = divergence.first_bad_step()
        what = "the loss or the gradient norm"
        if bad is None and params is not None and not divergence.params_finite(params):
            bad, what = step, "a parameter"
        if bad is not None:
            raise DivergenceError(
                f"training stopped: {what} became NaN or inf at step "
                f"{bad} (config.optim.lr={config.optim.lr}, warmup_steps="
                f"{config.optim.warmup_steps}, dtype {ops.compute_dtype(config.model.dtype)}). Likely causes: a "
                "learning rate too high for this model (lower config.optim.lr or raise "
                "config.optim.warmup_steps), a bad batch, or bfloat16 overflow. No checkpoint "
                f"after step {last_saved} was written: the workdir resumes from step "
                f"{last_saved}.")

    def finish_saves() -> None:
        """Waits for the save in flight; a failed write ends the run naming its step."""
        nonlocal written
        try:
            mngr.wait_until_finished()
        except Exception as error:  # noqa: BLE001  (disk full, permissions, storage errors)
            raise checkpoint.write_error(workdir, last_saved, error, written) from error
        written = last_saved or None

    def save(step: int) -> None:
        nonlocal last_saved
        if step != last_saved:
            check_finite(step, state.params)
            finish_saves()  # the previous save's failure is reported as its own
            last_saved = step
            try:
                checkpoint.save(mngr, step, state, config, train_iterator, force=True)
            except Exception as error:  # noqa: BLE001
                raise checkpoint.write_error(workdir, step, error, written) from error

    best_mngr = None
    if objective.metrics:
        best_mngr = checkpoint.best_manager(workdir, objective.metrics[0],
                                            config.train.checkpoint_commit_file)

    predict_step = make_predict_step(config, objective)  # compiled once, not per evaluation

    def run_eval(step: int) -> dict[str, float]:
        check_finite(step)
        result = evaluate(eval_step, state.params, config, tokenizer, mesh, predict_step)
        shown = [*objective.metrics, *(f"{name}_{language}" for language in
                                       config.task.eval_languages for name in objective.metrics)]
        task = "".join(f" | {name} {result[name]:.3f}" for name in shown if name != "accuracy")
        # A regression task (STS-B) has no accuracy.
        accuracy = f" | accuracy {result['accuracy']:.3f}" if "accuracy" in result else ""
        log(f"eval at step {step}: loss {result['loss']:.4f} | perplexity "
            f"{result['perplexity']:.2f}{accuracy}{task}")
        writer.write(step, result, "eval")
        if best_mngr is not None:  # a fine-tuning task: keep the best params by its metric
            checkpoint.save_best(best_mngr, step, state.params,
                                 {name: float(result[name]) for name in objective.metrics})
        return result

    # ---- the loop ---------------------------------------------------------------------------
    preemption = _Preemption()
    train_metrics: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    step = start_step
    last_log_time, last_log_step = time.perf_counter(), step
    try:
        with steps.activate(mesh):
            if step == 0:  # the starting point of the validation curve
                run_eval(0)
            while step < num_steps:
                batch = partitioning.global_batch(next(train_iterator), mesh)
                state, step_metrics = train_step(state, batch, rng)
                step += 1
                divergence.record(step_metrics, step)
                if step % config.train.log_every == 0 or step == num_steps:
                    train_metrics = {k: float(v) for k, v in jax.device_get(step_metrics).items()
                                     if k != steps.FINITE}
                    elapsed = time.perf_counter() - last_log_time
                    steps_done = step - last_log_step
                    tokens_per_s = steps_done * tokens_per_step / elapsed
                    train_metrics["tokens_per_s"] = tokens_per_s
                    train_metrics["mfu"] = steps_done * flops_per_step / elapsed / peak_flops
                    eta = elapsed / steps_done * (num_steps - step)
                    log(metrics_lib.progress_line(step, num_steps, train_metrics, tokens_per_s,
                                                  train_metrics["mfu"], eta))
                    writer.write(step, train_metrics, "train")
                    check_finite(step)
                    if lock is not None:
                        lock.heartbeat()
                    last_log_time, last_log_step = time.perf_counter(), step
                if step % config.train.eval_every == 0 or step == num_steps:
                    eval_metrics = run_eval(step)
                    last_log_time = time.perf_counter()
                if step % config.train.checkpoint_every == 0 or step == num_steps:
                    save(step)
                if preemption.reached(step):
                    log(f"SIGTERM: saving the checkpoint at step {step} before exit")
                    save(step)
                    break
        finish_saves()
    finally:
        preemption.restore()
        mngr.close()
        if best_mngr is not None:
            best_mngr.close()
        writer.close()

    if (step == num_steps and jax.process_index() == 0 and config.sample.prompts
            and spec.can_generate):
        samples = decoding.sample(spec, model, state.params, tokenizer,
                                  list(config.sample.prompts),
                                  max_new_tokens=config.sample.max_new_tokens,
                                  temperature=config.sample.temperature,
                                  top_k=config.sample.top_k, seed=config.seed)
        for text in samples:
            log(f"sample | {text}")
    return {"train": train_metrics, "eval": eval_metrics, "step": step}
