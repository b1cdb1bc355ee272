"""The CPU's pieces (kernels/cpu_pieces.py) that no path isolates: the explicit
multiply-adds, float32's tanh and one pattern's loss, against exact arithmetic and the
float64 reference (kernels/reference.py's loss_ref). Every other piece is held to the
reference through the paths that run it (tests/test_cpu.py)."""

import math

import numpy as np
import pytest
from numba import njit

from lenet.kernels import cpu_pieces as pieces
from lenet.kernels import reference as ref
from lenet.kernels.architecture import LOSS_KINDS
from lenet.kernels.tolerance import assert_close

fma_jit = njit(lambda a, b, s: pieces.fma(a, b, s))           # intrinsics: compiled code only
fmuladd_jit = njit(lambda a, b, s: pieces.fmuladd(a, b, s))


def test_fma_rounds_once_and_fmuladd_is_a_multiply_add():
    # float32 products are exact in float64, and the float64 sum v rounds to float32 as
    # a * b + s itself does unless v falls on a float32 halfway point (none does here)
    rng = np.random.default_rng(0)
    a, b, s = (rng.uniform(-1, 1, 2000).astype(np.float32) for _ in range(3))
    v = a.astype(np.float64) * b + s
    once = v.astype(np.float32)
    beside = np.nextafter(once, np.where(v > once, np.inf, -np.inf).astype(np.float32))
    assert not np.any(v == (once.astype(np.float64) + beside) / 2)
    fma = np.array([fma_jit(x, y, z) for x, y, z in zip(a, b, s, strict=True)], np.float32)
    np.testing.assert_array_equal(fma, once)
    # a case a separate multiply and add get wrong: (1 + e)(1 - e) - 1 = -e^2
    e = np.float32(2.0 ** -13)
    one = np.float32(1)
    assert fma_jit(one + e, one - e, -one) == -e * e
    assert (one + e) * (one - e) - one == 0       # two roundings lose it
    # fmuladd: the fused result or the separate multiply and add
    fmuladd = np.array([fmuladd_jit(x, y, z) for x, y, z in zip(a, b, s, strict=True)], np.float32)
    twice = a * b + s
    assert np.all((fmuladd == once) | (fmuladd == twice))


def test_tanh32_is_within_4e7_of_tanh():
    x = np.concatenate([np.linspace(-12, 12, 200_001), [0.0, -0.0, 1e-30, 7.9, 8.0, 1e30],
                        10.0 ** np.linspace(-20, 1.3, 2001)]).astype(np.float32)
    out = np.array([pieces.tanh32_jit(v) for v in x[::7]] +
                   [pieces.tanh32_jit(v) for v in x[-2001:]], np.float32)
    xs = np.concatenate([x[::7], x[-2001:]]).astype(np.float64)
    exact = np.tanh(xs)
    rel = np.abs(out - exact) / np.maximum(np.abs(exact), 1e-300)
    assert rel.max() < 4e-7, (rel.max(), xs[rel.argmax()])
    assert math.isnan(pieces.tanh32_jit(np.float32("nan")))
    assert pieces.tanh32_jit(np.float32("inf")) == 1.0
    assert pieces.tanh32_jit(np.float32("-inf")) == -1.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,j", [("mse", 0.0), ("map", 0.1), ("map", 400.0)])
def test_pattern_loss_matches_the_reference(dtype, kind, j):
    # penalties as trained models give them (tens to hundreds, some near 0), and huge
    # ones whose exp(-y) underflows unless taken relative to the largest exponent
    rng = np.random.default_rng(3)
    y = np.concatenate([rng.uniform(0, 300, (20, 10)), rng.uniform(1e3, 1e4, (5, 10))])
    y[::4, 2] = rng.uniform(0, 2, 7)
    labels = rng.integers(0, 10, len(y))
    losses, dy, hy = ref.loss_ref(y, labels, kind, j)
    c = pieces.constants(dtype, j)
    got = np.full(len(y), np.nan)
    g_dy, g_hy = np.full(y.shape, np.nan, dtype), np.full(y.shape, np.nan, dtype)
    for n in range(len(y)):
        got[n] = pieces.pattern_loss(y[n].astype(dtype), labels[n], LOSS_KINDS[kind], c,
                                     g_dy[n], g_hy[n])
    assert_close(got, losses, dtype=dtype, what="losses")
    # loss_ref's derivatives are of the mean: the pieces' are one pattern's
    assert_close(g_dy, dy * len(y), dtype=dtype, what="dy")
    if kind == "map":
        assert_close(g_hy, hy * len(y), dtype=dtype, what="hy")
    else:
        assert not g_hy.any()
