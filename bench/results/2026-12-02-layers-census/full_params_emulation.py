"""How far full_backward_params_kernel_v2's float32 sums are from float64, emulated in
NumPy in the kernel's order, at the GPU test sizes (4,099 images; F6's 120 -> 84 and
C5's 400 -> 120 on the full-connection kernels), and at 60,000 images:

    python bench/results/2026-12-02-layers-census/full_params_emulation.py

The kernel sums each slice of SPLIT_ROWS images in one float32 register per parameter,
image by image in order (one FMA each: the product exact, one rounding), then the
finishing kernel adds the slices in order from 0. The emulation does the same: every
product in float64 (exact for float32 factors), every sum rounded to float32. The
inputs are tests/test_layer_kernels.py's (seeded uniform activations, dout in [-1, 1],
hout in [0, 1]); g = dout f'(a) (or hout f'(a)^2) is computed in float32 as the kernel
does. The reference is float64 from the same float32 inputs, as kernels/tolerance.py
asks; the figure is its relative error (Frobenius norm over weights and biases).
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from lenet.kernels import reference as ref  # noqa: E402
from lenet.kernels.tolerance import relative_error  # noqa: E402

A, S = np.float32(ref.SQUASH_A), np.float32(ref.SQUASH_S)
SPLITS = (256, 512, 1024)   # rows per slice; the kernel's SPLIT_ROWS is 512


def g32(d, out, order):
    """through_squash in float32, as the kernel computes it."""
    fp = np.float32(S / A) * (np.float32(A * A) - out * out)
    if order == 2:
        fp = fp * fp
    return (d * fp).astype(np.float32)


def sequential(g, xe, rows):
    """acc[o, i] = float32 sum over rows, in order, of g[n, o] xe[n, i] (one FMA each)."""
    acc = np.zeros((g.shape[1], xe.shape[1]), np.float32)
    for n in rows:
        acc = (acc.astype(np.float64) + np.outer(g[n].astype(np.float64), xe[n])).astype(
            np.float32)
    return acc


def sliced(g, xe, split):
    """The slices' sums added in order, each rounded to float32."""
    total = np.zeros((g.shape[1], xe.shape[1]), np.float32)
    for start in range(0, g.shape[0], split):
        part = sequential(g, xe, range(start, min(g.shape[0], start + split)))
        total = (total.astype(np.float64) + part).astype(np.float32)
    return total


def case(n, n_in, n_out, order):
    r = np.random.default_rng([4, n, n_in, order])
    x = r.uniform(-1.7, 1.7, (n, n_in)).astype(np.float32)
    out = r.uniform(-1.7, 1.7, (n, n_out)).astype(np.float32)
    r.uniform(-9.6 / n_in, 9.6 / n_in, (n_out, n_in))   # the test's weights (unused here)
    d = r.uniform(-1, 1, out.shape) if order == 1 else r.uniform(0, 1, out.shape)
    d = d.astype(np.float32)
    xo = x if order == 1 else (x * x).astype(np.float32)
    xe = np.concatenate([xo, np.ones((n, 1), np.float32)], axis=1)   # the bias: input 1
    d64, out64, x64 = d.astype(np.float64), out.astype(np.float64), x.astype(np.float64)
    back = ref.squash_backward_ref if order == 1 else ref.squash_backward2_ref
    want = back(d64, out64).T @ np.concatenate([x64 ** order, np.ones((n, 1))], axis=1)
    g = g32(d, out, order)
    errors = {f"slices of {s}": relative_error(sliced(g, xe, s), want) for s in SPLITS}
    errors["one float32 sum"] = relative_error(sliced(g, xe, n), want)
    return errors


def main():
    print("images, inputs -> units, order: relative error against float64")
    for n, n_in, n_out in ((4099, 120, 84), (4099, 400, 120), (1001, 400, 120),
                           (60000, 120, 84)):
        for order in (1, 2):
            errors = case(n, n_in, n_out, order)
            print(f"{n}, {n_in} -> {n_out}, order {order}: "
                  + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()), flush=True)


if __name__ == "__main__":
    main()
