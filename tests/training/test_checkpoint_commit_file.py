"""config.train.checkpoint_commit_file (the TPU launcher's --gcsfuse): a checkpoint is written in
place and finished with a commit file, never by renaming a directory (on a gcsfuse mount a
rename copies and deletes every object), and a checkpoint without its commit file (a save cut
short) is never restored."""

from __future__ import annotations

import os
import shutil
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from textgen_jax.config import base_config
from textgen_jax.training import checkpoint


class State(NamedTuple):
    params: Any
    opt_state: Any


def test_commit_file_checkpoints_are_never_renamed_and_unfinished_ones_never_read(
        tmp_path, monkeypatch):
    params = {"dense": {"kernel": jnp.arange(12.0).reshape(3, 4), "bias": jnp.ones(4)}}
    renamed_dirs = []
    real_rename = os.rename

    def recording_rename(source, target, *args, **kwargs):
        if os.path.isdir(source):
            renamed_dirs.append((os.fspath(source), os.fspath(target)))
        return real_rename(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "rename", recording_rename)
    mngr = checkpoint.manager(tmp_path, async_save=False, commit_file=True)
    checkpoint.save(mngr, 1, State(params, {"count": jnp.zeros(())}), base_config(), None)
    mngr.wait_until_finished()
    mngr.close()
    assert (tmp_path / checkpoint.CHECKPOINT_DIR / "1" / "commit_success.txt").is_file()
    assert renamed_dirs == []

    # A save of step 2 cut short: its arrays are there, its commit file is not.
    steps = tmp_path / checkpoint.CHECKPOINT_DIR
    shutil.copytree(steps / "1", steps / "2")
    (steps / "2" / "commit_success.txt").unlink()
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    restored, step = checkpoint.restore_params(tmp_path, abstract, commit_file=True)
    assert step == 1
    jax.tree.map(np.testing.assert_array_equal, restored, params)

