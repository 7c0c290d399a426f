"""The start-up memory estimate and the check that stops a run before compiling."""

from __future__ import annotations

import jax
import pytest

from textgen_jax import config as config_lib
from textgen_jax.config import ConfigError
from textgen_jax.training import metrics


class _DeviceReporting:
    """A device whose backend reports its memory (a GPU/TPU stand-in on this CPU machine)."""

    def __init__(self, bytes_limit: int):
        self._stats = {"bytes_limit": bytes_limit, "bytes_in_use": 0}

    def memory_stats(self):
        return self._stats

    def __str__(self):
        return "TPU_0(process=0)"


def test_a_device_with_too_little_memory_is_an_error_naming_both_sizes_and_the_fixes():
    gib = 2 ** 30
    with pytest.raises(ConfigError, match=r"needs ~3.00 GiB per device but TPU_0\(process=0\) "
                                          r"has 2.00 GiB.*config.mesh.fsdp"):
        metrics.check_device_memory(3 * gib, [_DeviceReporting(2 * gib)])
    metrics.check_device_memory(1 * gib, [_DeviceReporting(2 * gib)])  # fits: no error
    # This CPU reports no memory: not checked, whatever the size.
    assert jax.local_devices()[0].memory_stats() is None
    metrics.check_device_memory(10 ** 15)


def test_activation_estimate_follows_the_rows_and_heads_each_device_holds():
    config = config_lib.base_config()
    config.model.vocab_size = 1000
    one = metrics.activation_bytes_per_device(config, {"data": 1, "fsdp": 1, "tensor": 1}, 2)
    eight_way_data = metrics.activation_bytes_per_device(
        config, {"data": 2, "fsdp": 4, "tensor": 1}, 2)
    # The estimate is proportional to the rows a device holds, truncated to whole bytes.
    assert eight_way_data == pytest.approx(one / 8, abs=1)
    tensor = metrics.activation_bytes_per_device(config, {"data": 1, "fsdp": 1, "tensor": 4}, 2)
    assert one / 4 < tensor < one  # the 10 s*b*h bytes of norms and residuals stay whole
    config.model.dtype = "bfloat16"
    assert metrics.activation_bytes_per_device(
        config, {"data": 1, "fsdp": 1, "tensor": 1}, 2) < one
