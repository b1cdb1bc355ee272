"""Accuracy of kernels.forward_pieces.squash against float64 A tanh(S a), over every float32 a.

Emulates, in NumPy, the 16 PTX instructions the function compiles to for sm_90 (printed
by `--ptx`; the order of operations below is theirs): float32 multiplies and adds
rounded to nearest, fma as one rounding of the exact float64 product-sum (double
rounding can move a rare tie by 1 ulp), ex2.approx.ftz.f32 and rcp.approx.ftz.f32 as
the correctly rounded result times (1 + d) with d at -bound, 0 and +bound of the PTX
ISA's stated error (2 ulp and 1 ulp), all 9 combinations, keeping the worst.

f is odd in a exactly (|a| and copysign; z = a^2), so only a >= 0 is walked: every
float32 in [0, 16) (1,098,907,648 values); above 16 the function returns A exactly
(checked on a sample up to the largest float32, and at infinity).

    python bench/results/2026-12-02-squash-accuracy/measure.py [--ptx] [--quick]
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
sys.path.insert(0, ROOT)
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")   # import the constants, no GPU needed

from lenet.kernels import layers  # noqa: E402
from lenet.kernels.reference import SQUASH_A, SQUASH_S  # noqa: E402

f32 = np.float32
ULP1 = 2.0 ** -23


def rn(v):
    return np.asarray(v, dtype=np.float64).astype(np.float32)


def fma(a, b, c):
    return rn(np.float64(1.0) * a * b + c)


def squash32(a, d_ex2=0.0, d_rcp=0.0):
    """The compiled instruction sequence, a >= 0 float32 array."""
    q1, q2, q3, q4 = (f32(layers._Q1), f32(layers._Q2), f32(layers._Q3), f32(layers._Q4))
    z = rn(a.astype(np.float64) * a)
    p = fma(z, q4, q3)
    p = fma(z, p, q2)
    p = fma(z, p, q1)
    az = rn(a.astype(np.float64) * z)
    t = rn(az.astype(np.float64) * p)
    small = fma(a, f32(layers._Q0), t)
    arg = rn(a.astype(np.float64) * f32(layers._EXP_SCALE))
    e = rn(np.exp2(arg.astype(np.float64)) * (1.0 + d_ex2))
    d = rn(e.astype(np.float64) + 1.0)
    r = rn((1.0 / d.astype(np.float64)) * (1.0 + d_rcp))
    big = fma(r, f32(layers._MINUS_2A), f32(layers._A))
    return np.where(a < layers.SQUASH_POLY_BELOW, small, big)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ptx", action="store_true", help="print the compiled sequence and exit")
    p.add_argument("--quick", action="store_true", help="every 64th float32 only")
    args = p.parse_args()
    if args.ptx:
        print(PTX)
        return
    stop = int(np.float32(16.0).view(np.uint32))
    step = 64 if args.quick else 1
    chunk = 1 << 22
    worst = {"rel": (0.0, 0.0), "abs": (0.0, 0.0)}
    by_range = {}
    tiny = float(np.finfo(np.float32).tiny)        # smallest normal float32, 2^-126
    edges = [0.0, tiny, 2.0 ** -20, 0.01, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    subnormal_abs = 0.0
    with np.errstate(over="ignore", under="ignore"):
        for lo in range(0, stop, chunk * step):
            bits = np.arange(lo, min(stop, lo + chunk * step), step, dtype=np.uint32)
            a = bits.view(np.float32)
            ref = SQUASH_A * np.tanh(SQUASH_S * a.astype(np.float64))
            corners = [(0.0, 0.0)]
            if a[-1] >= 1.0:   # the approximate instructions only feed |a| >= 1
                corners = [(de, dr) for de in (-2 * ULP1, 0.0, 2 * ULP1)
                           for dr in (-ULP1, 0.0, ULP1)]
            err = np.zeros(len(a))
            for de, dr in corners:
                err = np.maximum(err, np.abs(squash32(a, de, dr).astype(np.float64) - ref))
            sub = a < tiny   # subnormal a: the result's own spacing (2^-149) bounds it
            if sub.any():
                subnormal_abs = max(subnormal_abs, float(err[sub].max()))
            rel = np.where(sub, 0.0, err / np.where(ref > 0, ref, 1.0))
            i, j = int(np.argmax(rel)), int(np.argmax(err))
            if rel[i] > worst["rel"][0]:
                worst["rel"] = (float(rel[i]), float(a[i]))
            if err[j] > worst["abs"][0]:
                worst["abs"] = (float(err[j]), float(a[j]))
            slot = np.searchsorted(edges, a, side="right") - 1
            for s in np.unique(slot[~sub]):
                m = slot == s
                old = by_range.get(int(s), 0.0)
                by_range[int(s)] = max(old, float(rel[m].max()))
    # above 16: A exactly, up to the largest float32 and at infinity
    big = np.concatenate([np.geomspace(16.0, 3.4e38, 100001), [np.inf]]).astype(np.float32)
    with np.errstate(over="ignore"):
        out = squash32(big)
    assert np.all(out == f32(SQUASH_A)), "squash(a >= 16) is not float32(A)"
    count = (stop + step - 1) // step
    print(f"float32 inputs walked: {count:,} in [0, 16) (every {step}th), and a >= 16")
    print(f"max relative error {worst['rel'][0]:.3e} at a = {worst['rel'][1]!r} "
          f"(normal a; subnormal a: absolute error <= {subnormal_abs:.1e})")
    print(f"max absolute error {worst['abs'][0]:.3e} at a = {worst['abs'][1]!r}")
    for s, v in sorted(by_range.items()):
        print(f"  a in [{edges[s]:g}, {edges[s + 1]:g}): max relative error {v:.3e}")
    print(f"a >= 16 (sampled to 3.4e38, and inf): float32(A) = {float(f32(SQUASH_A))!r}, "
          f"relative error {abs(float(f32(SQUASH_A)) - SQUASH_A) / SQUASH_A:.1e}")


PTX = """\
mul.f32      z, a, a
fma.rn.f32   p, z, Q4, Q3
fma.rn.f32   p, z, p, Q2
fma.rn.f32   p, z, p, Q1
mul.f32      az, a, z
mul.f32      t, az, p
fma.rn.f32   small, a, Q0, t
abs.f32      |a|
mul.f32      arg, |a|, 2S/ln2
ex2.approx.ftz.f32   e, arg
add.f32      d, e, 1
rcp.approx.ftz.f32   r, d
fma.rn.f32   big, r, -2A, A
copysign.f32 big, a, big
setp.lt.f32  p, |a|, 1
selp.f32     f, small, big, p"""

if __name__ == "__main__":
    main()
