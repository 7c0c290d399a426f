"""Machine calibration: measurements cached per machine, and the choices they drive (the
"auto" compute dtype) made from what is measured, not from constants."""

from __future__ import annotations

import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tolerances

from textgen_jax import ops
from textgen_jax.ops import calibration, cpu


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTGEN_JAX_CACHE", str(tmp_path))
    return tmp_path / "calibration.json"


def test_a_measurement_is_made_once_per_machine_and_then_read_from_the_cache(cache):
    calls = []

    def measure():
        calls.append(1)
        return {"value": len(calls)}

    first = calibration.measured("probe", measure)
    second = calibration.measured("probe", measure)
    assert (first["value"], first["cached"]) == (1, False)
    assert (second["value"], second["cached"]) == (1, True) and len(calls) == 1
    assert first["machine"] == calibration.machine_key()
    # Another machine's entry (another CPU, another jax) is not this one's: measured again.
    entries = json.loads(cache.read_text())
    (key,) = entries
    cache.write_text(json.dumps({key.replace(calibration.machine_key(), "cpu other"):
                                 entries[key]}))
    assert calibration.measured("probe", measure)["value"] == 2 and len(calls) == 2


def test_a_first_use_inside_a_trace_measures_on_the_device_not_in_the_trace(cache):
    """Layouts are chosen as a matmul is traced: the measurement must still execute (a
    traced one would time the tracing; float() of a traced value raises)."""
    def measure():
        start = time.perf_counter()
        value = float(jax.jit(lambda x: (x @ x).sum())(jnp.ones((64, 64))))
        return {"value": value, "s": time.perf_counter() - start}

    @jax.jit
    def traced(x):
        assert calibration.measured("probe", measure)["value"] == 64.0 ** 3
        return x + 1

    traced(1.0)
    assert calibration.measured("probe", measure)["cached"]


def test_an_unreadable_cache_is_measured_again_and_rewritten(cache):
    cache.write_text("{not json")
    assert calibration.measured("probe", lambda: {"value": 7})["cached"] is False
    assert calibration.measured("probe", lambda: {"value": 8})["value"] == 7


@pytest.mark.parametrize("float32_s, bfloat16_s, expected", [
    (1.0, 0.5, "bfloat16"),   # AMX-like: bfloat16 twice as fast
    (1.0, 1.0 / ops.BFLOAT16_MIN_SPEEDUP, "bfloat16"),  # just fast enough
    (1.0, 0.95, "float32"),   # a few percent is not worth bfloat16's rounding
    (1.0, 1.3, "float32"),    # no bfloat16 arithmetic: emulated, slower
])
def test_the_auto_dtype_follows_the_measurement(float32_s, bfloat16_s, expected):
    assert ops.choose_dtype({"float32_s": float32_s, "bfloat16_s": bfloat16_s}) == expected


def test_auto_resolves_on_this_machine_to_what_its_measurement_chooses():
    """The real measurement (the cache of this machine, or a new one): both dtypes timed,
    positive, and the choice the one choose_dtype makes of them; the log line names it."""
    measurement = calibration.measured("train_block_dtype", ops._time_train_block)
    assert measurement["float32_s"] > 0 and measurement["bfloat16_s"] > 0
    assert ops.compute_dtype("auto") == ops.choose_dtype(measurement)
    assert ops.compute_dtype("float32") == "float32"
    assert f"config.model.dtype=auto: {ops.compute_dtype('auto')}" in ops.auto_dtype_reason()
    with pytest.raises(ValueError, match="float16"):
        ops.compute_dtype("float16")


# Seconds per layout and row bucket as two CPUs might measure them: one where the transposed
# [out, rows] product is fastest (the AMD EPYC of bench/README.md), one where the stored
# kernel is (a CPU whose GEMV kernels read [in, out] best).
OUT_ROWS_FAST = {str(b): {"kernel": 9.7, "transposed": 9.0, "out_rows": 5.3}
                 for b in cpu.ROW_BUCKETS}
KERNEL_FAST = {str(b): {"kernel": 5.0, "transposed": 9.0, "out_rows": 9.5}
               for b in cpu.ROW_BUCKETS}


def test_the_decoding_layouts_follow_the_measurement():
    fast_out = cpu.choose_layouts(OUT_ROWS_FAST)
    fast_kernel = cpu.choose_layouts(KERNEL_FAST)
    for bucket in cpu.ROW_BUCKETS:
        assert fast_out[bucket] == {"out_rows": True, "transposed_copies": True}
        assert fast_kernel[bucket] == {"out_rows": False, "transposed_copies": False}
    # Within the margin is a tie: the simpler layout (no copies, no transpose) stays.
    tie = {str(b): {"kernel": 1.0, "transposed": 1.0 / (1 + cpu.LAYOUT_MARGIN / 2),
                    "out_rows": 1.0} for b in cpu.ROW_BUCKETS}
    assert not any(any(choice.values()) for choice in cpu.choose_layouts(tie).values())


@pytest.mark.parametrize("measurement", [OUT_ROWS_FAST, KERNEL_FAST], ids=["out_rows", "kernel"])
def test_decoding_uses_the_measured_layout_and_computes_the_same_product(cache, measurement):
    """The measurement, fed through the cache file, decides the program (an optimization
    barrier marks the [out, rows] product) and whether decoding asks for transposed copies;
    the product is the same either way."""
    cache.write_text(json.dumps({f"decode_matvec_layouts | {calibration.machine_key()}":
                                 measurement}))
    cpu.layouts.cache_clear()
    try:
        expected = cpu.choose_layouts(measurement)[1]
        assert cpu.prefers_transposed_kernels(1, 1 << 20) is expected["transposed_copies"]
        assert not cpu.prefers_transposed_kernels(cpu.FEW_ROWS + 1, 1 << 20)
        assert not cpu.prefers_transposed_kernels(1, cpu.TRANSPOSED_KERNEL_BYTES + 1)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(1, 16)).astype(np.float32)
        kernel_t = rng.normal(size=(24, 16)).astype(np.float32)  # [out, in]
        product = functools.partial(cpu.matmul, kernel_transposed=True)
        program = str(jax.make_jaxpr(product)(x, kernel_t))
        assert ("optimization_barrier" in program) is expected["out_rows"]
        reference = x.astype(np.float64) @ kernel_t.T.astype(np.float64)
        # A 16-term float32 dot in any order: within 16 roundings of the sum of its terms'
        # magnitudes (the deterministic bound n * u * sum |x_i w_i|), plus the output rounding.
        bound = (16 + 1) * tolerances.F32 * (np.abs(x) @ np.abs(kernel_t.T))
        assert np.all(np.abs(np.asarray(product(x, kernel_t)) - reference) <= bound)
    finally:
        cpu.layouts.cache_clear()
