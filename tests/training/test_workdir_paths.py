"""A workdir named by a gs:// URI: the config, tokenizer, metrics (JSON lines and TensorBoard)
and init_from's tokenizer copy go through etils.epath, never os.path or open.

Offline, gs:// is served by a stand-in fsspec filesystem (the backend epath uses for gs://
when TensorFlow is absent) that keeps each bucket in a local directory. A write through
os.path/open would instead land in the working directory as ./gs:/bucket/..., which the
tests check does not exist. Orbax's checkpoints are not covered here: Orbax writes arrays to
gs:// with TensorStore's own GCS driver, which needs the network.
"""

from __future__ import annotations

import json
import os

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

from textgen_jax.config import base_config
from textgen_jax.data.tokenizer import load_or_train_tokenizer, load_tokenizer
from textgen_jax.training import checkpoint, init_from, metrics as metrics_lib


class LocalBucketFileSystem(LocalFileSystem):
    """gs://bucket/key stored as ROOT/bucket/key on the local disk."""

    protocol = ("gs", "gcs")
    root = ""

    def __init__(self, *args, **kwargs):
        super().__init__()  # gcsfs options (finalize_on_close) mean nothing here

    @classmethod
    def _strip_protocol(cls, path):
        path = os.fspath(path)
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                return os.path.join(cls.root, path[len(prefix):]).rstrip("/")
        return super()._strip_protocol(path)


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """The local directory behind gs://; the test runs in an empty working directory."""
    root = tmp_path / "bucket_store"
    root.mkdir()
    monkeypatch.setattr(LocalBucketFileSystem, "root", str(root))
    for protocol in LocalBucketFileSystem.protocol:
        fsspec.register_implementation(protocol, LocalBucketFileSystem, clobber=True)
    from etils.epath import backend
    backend.fsspec_backend._get_filesystem.cache_clear()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield root
    backend.fsspec_backend._get_filesystem.cache_clear()
    assert not os.listdir(cwd), f"written beside the bucket, through a local path: " \
                                f"{os.listdir(cwd)}"


def test_workdir_files_go_through_epath_to_gs(bucket, stdlib_tokenizer, tmp_path):
    workdir = "gs://runs/gpt2_tiny"
    assert os.fspath(checkpoint.workdir_path(workdir)) == workdir
    local_model = tmp_path / "given.model"
    stdlib_tokenizer.save(local_model)

    config = base_config()
    config.tokenizer.model_file = str(local_model)
    tokenizer = load_or_train_tokenizer(workdir, config)
    assert (bucket / "runs/gpt2_tiny/tokenizer.model").read_bytes() == local_model.read_bytes()
    assert load_tokenizer(workdir).encode("def f(x):") == tokenizer.encode("def f(x):")

    config.model.vocab_size = tokenizer.vocab_size
    checkpoint.write_config(workdir, config)
    assert checkpoint.read_config(workdir) == json.loads(
        (bucket / "runs/gpt2_tiny/config.json").read_text())
    assert checkpoint.read_config(workdir)["model"]["vocab_size"] == tokenizer.vocab_size
    checkpoint.check_compatible(workdir, config)

    # Two runs of the writer (a resume): the second keeps the first one's records.
    for step in (1, 2):
        writer = metrics_lib.MetricsWriter(workdir)
        writer.write(step, {"loss": 5.0 / step}, "train")
        writer.close()
    records = [json.loads(line) for line in
               (bucket / "runs/gpt2_tiny/metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in records] == [(1, 5.0), (2, 2.5)]
    events = list((bucket / "runs/gpt2_tiny/tensorboard").iterdir())
    assert events and all(e.name.startswith("events.out.tfevents") for e in events)
    assert b"train/loss" in events[-1].read_bytes()

    # Fine-tuning from a gs:// workdir copies its tokenizer into the new (gs://) one.
    init_from.check_tokenizer("gs://runs/finetuned", workdir)
    assert (bucket / "runs/finetuned/tokenizer.model").read_bytes() == local_model.read_bytes()
