"""When the CLI joins a multi-process run, and the errors for an incomplete or wrong setup
(the 2-process runs themselves are in test_multiprocess.py)."""

from __future__ import annotations

import pytest

from textgen_jax import distributed

CLUSTER_ENV = ("SLURM_JOB_ID", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS",
               "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


@pytest.fixture
def clean_env(monkeypatch):
    for name in CLUSTER_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_clusters_of_several_hosts_are_detected(clean_env):
    assert not distributed.cluster_detected()
    clean_env.setenv("SLURM_JOB_ID", "42")
    clean_env.setenv("SLURM_NTASKS", "1")
    assert not distributed.cluster_detected()  # a one-task job runs alone
    clean_env.setenv("SLURM_NTASKS", "4")
    assert distributed.cluster_detected()
    clean_env.delenv("SLURM_JOB_ID")
    clean_env.setenv("TPU_WORKER_HOSTNAMES", "t1v-0,t1v-1,t1v-2,t1v-3")
    assert distributed.cluster_detected()
    clean_env.setenv("TPU_WORKER_HOSTNAMES", "t1v-0")  # a single-host TPU VM
    assert not distributed.cluster_detected()


def test_a_single_process_does_not_initialize(clean_env):
    assert distributed.initialize("auto") is False
    assert distributed.initialize("off", "127.0.0.1:1", 2, 0) is False


@pytest.mark.parametrize("args, message", [
    (("auto", "127.0.0.1:1234", 2, None), "needs all of --coordinator_address"),
    (("auto", None, 2, 0), "needs all of --coordinator_address"),
    (("auto", "127.0.0.1:1234", 2, 2), r"--process_id=2 is outside \[0, 2\)"),
    (("auto", "127.0.0.1:1234", 2, -1), r"--process_id=-1 is outside \[0, 2\)"),
    (("auto", "localhost", 2, 1), "use HOST:PORT"),
    (("maybe",), "--distributed='maybe'"),
])
def test_an_incomplete_or_wrong_setup_is_an_error_naming_the_value(clean_env, args, message):
    with pytest.raises(distributed.DistributedError, match=message):
        distributed.initialize(*args)


def test_the_environment_names_the_run_like_the_flags(clean_env):
    clean_env.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    clean_env.setenv("JAX_NUM_PROCESSES", "2")
    clean_env.setenv("JAX_PROCESS_ID", "5")
    with pytest.raises(distributed.DistributedError, match=r"--process_id=5 is outside \[0, 2\)"):
        distributed.initialize()
