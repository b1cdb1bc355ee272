"""The stage kernels of kernels/backward.py as such: their grid (at least one block, at most
MAX_BLOCKS, each thread striding over what is left), the order they take (1 or 2, anything
else refused in one line before a launch) and an empty batch. What each piece they run
computes is tests/test_backward_pieces.py's."""

import numpy as np
import pytest
from numba import cuda

from lenet.kernels import backward as bw
from lenet.kernels import reference as ref
from lenet.kernels.architecture import RBF_CENTERS
from lenet.kernels.tolerance import assert_close


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a, np.float32))


def test_blocks_cover_the_work_up_to_max_blocks():
    t, most = bw.THREADS, bw.MAX_BLOCKS
    assert [bw._blocks(k) for k in (0, 1, t, t + 1, 2 * t)] == [1, 1, 1, 2, 2]
    assert bw._blocks(most * t) == most and bw._blocks(most * t + 1) == most
    assert bw._blocks(10**9) == most


def test_threads_stride_past_the_grid():
    # more (image, F6 unit) pairs than MAX_BLOCKS * THREADS threads: the last ones are
    # a thread's second turn (in the simulator 8 blocks: 13 images of 84 units)
    n = bw.MAX_BLOCKS * bw.THREADS // 84 + 1
    rng = np.random.default_rng(1)
    x6 = rng.uniform(-1.7, 1.7, (n, 84)).astype(np.float32).astype(np.float64)
    dy = rng.uniform(-1, 1, (n, 10)).astype(np.float32).astype(np.float64)
    d6 = cuda.to_device(np.full((n, 84), np.nan, np.float32))
    bw.rbf_delta_all(d6, dev(dy), dev(np.zeros((n, 10))), dev(x6), dev(RBF_CENTERS.ravel()), 1)
    want = ref.squash_backward_ref(ref.rbf_backward_ref(dy, x6, RBF_CENTERS), x6)
    assert d6.size > bw._blocks(d6.size) * bw.THREADS
    assert_close(d6.copy_to_host(), want, what="F6 delta")


@pytest.mark.parametrize("order", [0, 3, "1"])
def test_an_order_other_than_1_or_2_is_refused(order):
    poisoned = cuda.to_device(np.full((1, 84), np.nan, np.float32))
    ten = dev(np.zeros((1, 10)))
    with pytest.raises(ValueError, match=r"^order must be 1 \(gradients\) or 2 "
                                         rf"\(Gauss-Newton\), not {order!r}$"):
        bw.rbf_delta_all(poisoned, ten, ten, dev(np.zeros((1, 84))),
                         dev(RBF_CENTERS.ravel()), order)
    assert np.isnan(poisoned.copy_to_host()).all()     # nothing launched


def test_an_empty_batch_launches_no_c3_delta():
    d2 = cuda.to_device(np.zeros((0, 6 * 14 * 14), np.float32))
    bw.c3_delta_all(d2, dev(np.zeros((0, 16 * 100))), dev(np.zeros(1516)),
                    dev(np.zeros((0, 6 * 14 * 14))), None, 1)
    assert d2.copy_to_host().shape == (0, 6 * 14 * 14)
