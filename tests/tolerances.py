"""Floating-point tolerances, derived rather than tuned, so that the suite passes on any x86 CPU
(with or without AVX-512 or AMX) and on a GPU, and still fails on a real error.

Two computations of the same mathematical value differ only by rounding when they evaluate it
in another order (XLA's CPU and GPU kernels, oneDNN or MKL under PyTorch, a sharded program's
partial sums) or at another precision. The bounds below follow the standard error analysis
(Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 3):

- Unit roundoff u: 2**-24 for float32, 2**-9 for bfloat16 (8 bits of mantissa), 2**-53 for
  float64.
- A sum or dot product of n terms is exact to n*u relative to the sum of the terms' magnitudes
  in the worst case, and to about sqrt(n)*u when the roundings are independent, which is the
  case for reordered reductions of data that is not adversarial.
- A network composes such reductions: each of L layers adds its own, and LayerNorm and
  softmax renormalise, so errors add across layers instead of multiplying.

What a test asserts is then "equal up to c * the error of the longest reduction chain", where
the factor c and the chain are stated beside the tolerance. The error is relative to the terms'
magnitudes, not to each result (a logit near 0 is the sum of large terms), so a test scales a
relative bound by the largest magnitude of the values it compares. A wrong mask, a wrong
position, a swapped weight or a missing scale moves the values by a fraction of their own size:
orders of magnitude above every bound here.

Where a test claims bitwise equality instead, it says why: the same program on the same shapes
and the same numbers (XLA's and PyTorch's kernels are deterministic on one machine), or a
change the computation must not see, such as a masked token, whose softmax weight is exactly 0.

A rate measured from n random draws strays from its true value p by sqrt(p * (1 - p) / n)
(one standard deviation); a statistical test allows 4 of them (`binomial`), or 5 when it checks
many counts at once, so that a correct sampler fails for hardly any seed.
"""

from __future__ import annotations

import math

F32 = 2.0 ** -24  # unit roundoff of float32
BF16 = 2.0 ** -9  # unit roundoff of bfloat16
F64 = 2.0 ** -53  # unit roundoff of float64


def reordered_sum(n: int, roundoff: float = F32) -> float:
    """Relative difference of two orders of one sum of n terms (independent roundings)."""
    return math.sqrt(n) * roundoff


def network(layers: int, width: int, roundoff: float = F32, factor: float = 16.0) -> float:
    """Relative difference of a network's outputs computed by two kernels: `layers` blocks,
    each a chain of a few reductions of length <= `width` (its attention, its MLP and its
    normalisations), whose errors add; `factor` covers the few reductions per block and the
    growth of values through the residual stream (a safety factor, stated where used)."""
    return factor * layers * reordered_sum(width, roundoff)


def rounded_activations(layers: int, roundoff: float = BF16, factor: float = 16.0) -> float:
    """Relative difference of a network whose activations are rounded to a narrower type
    (bfloat16) at a few points per block but accumulated in float32 (textgen_jax.ops), against
    the same network in float32. Rounding the terms of a dot product once each moves it by about
    one roundoff of the terms' magnitudes, whatever its length, so the width does not enter;
    `factor` covers a block's few rounding points and the residual stream's growth."""
    return factor * layers * roundoff


def cross_entropy_sum(terms: int, logit_scale: float, classes: int,
                      roundoff: float = F32) -> float:
    """Absolute difference of a sum of `terms` cross-entropies, log-sum-exp(z) - z_label,
    computed two ways (another formula, order or precision) from the same logits z: each term
    rounds values of the logits' scale (plus log(classes)) a few times, 8 u of them with a
    safety factor, and takes the log of a sum of `classes` exps (sqrt(classes) u); the terms'
    errors add, in the worst case."""
    return terms * roundoff * (8 * (logit_scale + math.log(classes)) + math.sqrt(classes))


def binomial(rate: float, draws: int, sigmas: float = 4.0) -> float:
    """How far a rate measured from `draws` independent draws may stray from its true `rate`:
    `sigmas` binomial standard deviations, sigmas * sqrt(rate * (1 - rate) / draws). At 4, a
    correct sampler fails by chance for fewer than 1 seed in 15,000."""
    return sigmas * math.sqrt(rate * (1 - rate) / draws)


def gradient_is_noise(path) -> bool:
    """Whether a parameter (its jax.tree_util key path) has no gradient in exact arithmetic, so
    that two runs move it by rounding noise alone: an attention key bias (softmax is unchanged
    when one vector is added to every key: q.(k+b) shifts all of a query's scores by q.b).
    Adam normalises that noise into steps of up to lr, so no relative bound holds for it."""
    return [getattr(key, "key", None) for key in path][-2:] == ["key", "bias"]


def assert_same_updates(before, reference, other, rel: float, max_step: float) -> int:
    """Two runs that started from `before` (parameter trees) reached `reference` and `other`:
    tensor by tensor, ||other - reference|| <= rel * ||reference - before|| (how far the
    tensor moved), except where the gradient is noise (`gradient_is_noise`), which each run
    may move by at most `max_step` per element. Returns how many tensors the relative bound
    checked."""
    import jax
    import numpy as np

    checked = 0
    for (path, want), got, start in zip(jax.tree_util.tree_leaves_with_path(reference),
                                        jax.tree.leaves(other), jax.tree.leaves(before)):
        want, got, start = (np.asarray(x, np.float64) for x in (want, got, start))
        name = jax.tree_util.keystr(path)
        if gradient_is_noise(path):
            assert max(np.abs(want - start).max(), np.abs(got - start).max()) <= max_step, name
            continue
        assert np.linalg.norm(got - want) <= rel * np.linalg.norm(want - start), name
        checked += 1
    return checked
