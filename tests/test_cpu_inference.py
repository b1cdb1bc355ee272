"""kernels/cpu.py's inference (penalties_cpu) takes groups of cpu.LANES images side by side
and the images left over one at a time: every image's penalties must match the float64
reference (kernels/reference.py's layers, composed here) and be the same bits whichever
way, batch, position or thread count computed them."""

import numba
import numpy as np
import pytest

from kernels import cpu
from kernels import reference as ref
from kernels.architecture import C3_TABLE, CONV_TABLES, RBF_CENTERS
from kernels.tolerance import assert_close
from lenet import LeNet5


class Reference:
    """The float64 penalties of float32 parameters, layer by layer."""

    def __init__(self, params):
        self.p = {k: np.asarray(v, np.float64) for k, v in params.items()}

    def forward(self, x):
        p, f = self.p, ref.squash_ref
        a = x.astype(np.float64)
        for conv, sub in (("C1", "S2"), ("C3", "S4")):
            a = f(ref.conv_ref(a, p[conv + ".weight"], p[conv + ".bias"], CONV_TABLES[conv]))
            a = f(ref.subsample_ref(a, p[sub + ".coef"], p[sub + ".bias"]))
        a = f(ref.conv_ref(a, p["C5.weight"], p["C5.bias"], CONV_TABLES["C5"]))
        a = f(ref.full_ref(a.reshape(a.shape[0], -1), p["F6.weight"], p["F6.bias"]))
        return ref.rbf_ref(a, RBF_CENTERS.astype(np.float64))


def setup(dtype, n, seed):
    start = LeNet5(seed=seed, init="sqrt-fan-in").parameters()
    fast = LeNet5(dtype=dtype)
    fast.set_parameters({k: v.astype(dtype) for k, v in start.items()})
    x = np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32))
    return Reference(start), fast.flat_params, x.astype(np.float32)


def penalties(x, params, dtype):
    out = np.full((x.shape[0], 10), np.nan, dtype)
    cpu.penalties_cpu(out, x.astype(dtype), params, RBF_CENTERS.astype(dtype), C3_TABLE)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_image_gets_the_same_bits_in_any_batch(dtype):
    # 53 = 3 blocks of 16 (two groups of 8 each) + 5 left over one at a time; the slices
    # move every image between a group's lanes and the one-at-a-time path
    n = 53
    ref, params, x = setup(dtype, n, seed=21)
    whole = penalties(x, params, dtype)
    assert_close(whole, ref.forward(x.astype(np.float64)), dtype=dtype, what="penalties")
    for lo, hi in [(0, 1), (52, 53), (3, 10), (5, 13), (7, 31), (1, 53), (45, 53)]:
        np.testing.assert_array_equal(penalties(x[lo:hi], params, dtype), whole[lo:hi],
                                      err_msg=f"images {lo}..{hi}")
    flat = np.full((n, 10), np.nan, dtype)    # (N, 1024) images: the same
    cpu.penalties_cpu(flat, x.reshape(n, 1024).astype(dtype), params,
                      RBF_CENTERS.astype(dtype), C3_TABLE)
    np.testing.assert_array_equal(flat, whole)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(penalties(x, params, dtype), whole, err_msg="1 thread")
    finally:
        numba.set_num_threads(before)


def test_a_group_of_extreme_images_leaves_its_neighbours_alone():
    # saturating images (every pixel +-1e4) in one group's lanes next to ordinary ones:
    # lanes never mix, so the ordinary images' penalties are those they get alone
    ref, params, x = setup(np.float32, 2 * cpu.LANES, seed=22)
    x[1::2] = np.where(np.arange(1024).reshape(1, 32, 32) % 3 == 0, 1e4, -1e4)
    out = penalties(x, params, np.float32)
    assert_close(out, ref.forward(x.astype(np.float64)), what="penalties")
    for i in range(0, 2 * cpu.LANES, 2):
        np.testing.assert_array_equal(penalties(x[i:i + 1], params, np.float32), out[i:i + 1])
