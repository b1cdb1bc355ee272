"""Penalties and labels on which every implementation's loss (kernels/backward_pieces.py's
pattern_loss, kernels/cpu.py's) is compared with kernels/reference.py's loss_ref: each
case is (kind, penalties(rng, n, labels), j)."""

import numpy as np

from lenet.kernels import reference as ref


def penalties_typical(r, n, labels):
    return r.uniform(5, 150, (n, 10))


def penalties_huge(r, n, labels):
    """Up to 1e3: every exp(-y) underflows, even in float64, without the max trick."""
    return r.uniform(950, 1000, (n, 10))


def penalties_near_zero(r, n, labels):
    return r.uniform(0, 3, (n, 10))


def penalties_confident(r, n, labels):
    """The correct class far ahead: 1 - p of it is ~1e-4, lost to cancellation if
    computed as 1 - p in float32."""
    y = r.uniform(40, 150, (n, 10))
    y[np.arange(n), labels] = r.uniform(0, 0.5, n)
    return y


LOSS_CASES = {
    "mse": ("mse", penalties_typical, ref.MAP_J),
    "map": ("map", penalties_typical, ref.MAP_J),
    # j = 10 far above every -y: exp(-j - max(-y)) overflows unless -j is in the max
    "map-huge-y": ("map", penalties_huge, ref.MAP_J),
    "map-huge-y-huge-j": ("map", penalties_huge, 2000.0),
    "map-y-near-0-huge-j": ("map", penalties_near_zero, 1000.0),
    "map-confident": ("map", penalties_confident, ref.MAP_J),
}
