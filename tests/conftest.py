"""Shared data fixtures: the embedded corpus is prepared once per test session.

Float32 in this suite means float32: on a GPU, XLA would by default run float32 matmuls in
TensorFloat-32 (a 10-bit mantissa, roundoff 2**-11 instead of 2**-24), which no float32
tolerance here allows for and PyTorch (the oracle) does not do. So the suite asks for full
float32 matmuls, in this process and in every process it starts (on a CPU this changes
nothing). Tolerances are derived in tests/tolerances.py.

The suite's processes (pytest's workers and the CLI runs they start) share one persistent XLA
compilation cache: most CLI tests train the same tiny GPT-2, and on XLA:CPU compiling its
initialiser and train step costs more than running them. A program is the same program
whichever process compiled it (the cache key holds the HLO, the compile options, the XLA
flags and the jax version).
"""

from __future__ import annotations

import os
import tempfile

os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"  # before jax reads its config
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"textgen_jax_tests_xla_cache_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from textgen_jax.config import base_config
from textgen_jax.data.corpus import prepared_stdlib_docstrings
from textgen_jax.data.tokenizer import Tokenizer, load_or_train_tokenizer


@pytest.fixture(scope="session")
def stdlib_data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A data dir holding both configs of the prepared stdlib corpus."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for config_name in ("documents", "pairs"):
        prepared_stdlib_docstrings(config_name, data_dir)
    return data_dir


@pytest.fixture(scope="session")
def stdlib_tokenizer(stdlib_data_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """A small BPE tokenizer trained on the stdlib corpus (a fraction of it, for speed), with
    the language tags of the XLM tiny preset."""
    config = base_config()
    config.data.data_dir = stdlib_data_dir
    config.tokenizer.languages = ("en", "code")
    config.tokenizer.vocab_size = 1000
    config.tokenizer.max_train_chars = 300_000
    return load_or_train_tokenizer(tmp_path_factory.mktemp("workdir"), config)


@pytest.fixture(scope="session")
def finetune_data_dir(stdlib_data_dir: str) -> str:
    """The session data dir, with stdlib_docstrings/kinds (fine-tuning) prepared too."""
    prepared_stdlib_docstrings("kinds", stdlib_data_dir)
    return stdlib_data_dir


@pytest.fixture
def task_config(finetune_data_dir: str):
    """task_config(task, arch, seq_len=32, batch=4) -> a config for that fine-tuning task."""
    def make(task: str, arch: str, seq_len: int = 32, batch: int = 4):
        config = base_config()
        config.task.name = task
        config.model.arch = arch
        config.data.update(data_dir=finetune_data_dir, seq_len=seq_len, global_batch_size=batch)
        return config
    return make


# ---- running the real CLI in fresh processes -------------------------------------------------


import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# A GPT-2 small enough for a step in tens of milliseconds on 2 cores.
TINY_OVERRIDES = (
    "--config.model.num_layers=2", "--config.model.d_model=64", "--config.model.num_heads=4",
    "--config.model.d_ff=128", "--config.model.max_len=64", "--config.data.seq_len=32",
    "--config.data.global_batch_size=8", "--config.optim.warmup_steps=5",
    "--config.train.eval_batches=2", "--config.sample.max_new_tokens=8",
    "--config.model.dtype=float32",  # exactness checks (1 vs 8 devices) are float32 claims
)


def cli_env(num_devices: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    # The checkout first; keep what the caller's path adds (a GPU image's carried packages).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), env.get("PYTHONPATH"))))
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_command(command: str, workdir: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "textgen_jax.cli", command, f"--workdir={workdir}", *flags]


def read_metrics(workdir: Path, split: str = "train") -> dict[int, dict]:
    """The last record per step of one split in workdir/metrics.jsonl."""
    records = {}
    with open(workdir / "metrics.jsonl", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record["split"] == split:
                records[record["step"]] = record
    return records


# The range of each fine-tuning metric (finetune/metrics.py): correlations can be negative,
# sacrebleu's BLEU is on 0-100, the others are fractions.
_METRIC_RANGE = {"matthews": (-1.0, 1.0), "pearson": (-1.0, 1.0), "spearman": (-1.0, 1.0),
                 "bleu": (0.0, 100.0)}


def assert_finetune_run(workdir: Path, task_name: str, eval_steps: list[int]) -> None:
    """A fine-tune in `workdir` logged finite losses and its task's metrics (in range) at
    `eval_steps`, and kept exactly the params of its best evaluation by the task's first
    metric, which `textgen_jax.load(best=True)` restores."""
    import jax
    import numpy as np

    import textgen_jax
    from textgen_jax.finetune.tasks import get_task

    task = get_task(task_name)
    evals = read_metrics(workdir, "eval")
    assert sorted(evals) == eval_steps
    assert all(math.isfinite(record["loss"]) for record in read_metrics(workdir).values())
    for metrics in evals.values():
        assert math.isfinite(metrics["loss"])
        for name in task.metrics:
            low, high = _METRIC_RANGE.get(name, (0.0, 1.0))
            assert low <= metrics[name] <= high, (name, metrics[name])
    kept = [int(p.name) for p in (workdir / "best").iterdir() if p.name.isdigit()]
    assert len(kept) == 1
    assert evals[kept[0]][task.metrics[0]] == max(e[task.metrics[0]] for e in evals.values())
    best = textgen_jax.load(str(workdir), best=True).params
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(best))

@pytest.fixture
def tiny_run(stdlib_data_dir: str, stdlib_tokenizer: Tokenizer):
    """run(workdir, *extra_flags, command='train', num_devices=1, config=...) -> CompletedProcess.

    Trains the tiny preset of `config` (GPT-2 by default) on the prepared corpus through the
    real CLI in a fresh process; the workdir starts with the session's tokenizer so no test
    retrains one.
    """
    def run(workdir: Path, *extra: str, command: str = "train", num_devices: int = 1,
            check: bool = True, config: str = "configs/gpt2.py:tiny"
            ) -> subprocess.CompletedProcess:
        workdir.mkdir(parents=True, exist_ok=True)
        if not (workdir / "tokenizer.model").exists():
            stdlib_tokenizer.save(workdir / "tokenizer.model")
        flags = (train_flags(stdlib_data_dir, config) if command == "train" else ()) + tuple(extra)
        result = subprocess.run(cli_command(command, workdir, *flags), env=cli_env(num_devices),
                                capture_output=True, text=True, timeout=600, cwd=REPO)
        if check and result.returncode != 0:
            raise AssertionError(f"textgen-jax {command} failed:\n{result.stderr[-4000:]}")
        return result
    return run


def train_flags(data_dir: str, config: str = "configs/gpt2.py:tiny") -> tuple[str, ...]:
    return (f"--config={config}", f"--config.data.data_dir={data_dir}",
            *TINY_OVERRIDES)


def train_tiny_workdir(workdir: Path, data_dir: str, tokenizer: Tokenizer, *flags: str) -> Path:
    """A tiny GPT-2 trained through the CLI in `workdir` (with the session's tokenizer)."""
    tokenizer.save(workdir / "tokenizer.model")
    subprocess.run(cli_command("train", workdir, *train_flags(data_dir), *flags), env=cli_env(),
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    return workdir


def assert_iterator_resumes(make_iterator, skip: int = 3, compare: int = 2) -> list[dict]:
    """A fresh iterator given another's state after `skip` batches yields the same next
    `compare` batches. Returns them."""
    first = make_iterator()
    for _ in range(skip):
        next(first)
    state = first.get_state()
    expected = [next(first) for _ in range(compare)]
    again = make_iterator()
    again.set_state(state)
    for want in expected:
        got = next(again)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    return expected


def count_compiles(run) -> int:
    """How many new XLA programs `run()` needs: compiled now, or loaded from the suite's
    persistent compilation cache (an earlier process compiled it)."""
    import jax
    events = []

    def on_duration(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            events.append(event)

    def on_event(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            events.append(event)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    try:
        run()
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
        jax.monitoring.unregister_event_listener(on_event)
    return len(events)
