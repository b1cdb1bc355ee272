"""The fused mini-batch step (kernels/train_step.py) against kernels/reference.py:
gradients, Gauss-Newton curvature, an SGD step's velocities and parameters, at awkward
batch sizes, with several groups per block and several batch splits, into NaN-poisoned
buffers (the activation rows past the batch included: nothing may read them into a
result); a C3 table of another number of pairs is refused. The Trainer that runs it through
lenet/workspace.py is tests/test_gpu_model.py's; the workspace's grid and batch limit are
tests/test_occupancy.py's."""

import numpy as np
import pytest
from c3_tables import table_of
from numba import cuda

from lenet import LeNet5
from lenet.kernels import forward_pieces as L
from lenet.kernels import reference as ref
from lenet.kernels import train_step as ts
from lenet.kernels.architecture import C3_TABLE, PARAMETER_SHAPES, RBF_CENTERS
from lenet.kernels.backward_pieces import c3_out_table
from lenet.kernels.tolerance import assert_close


def flat(params):
    return np.concatenate([params[name].ravel() for name in L.PARAMETER_SHAPES])


def unflat(buffer):
    return {name: buffer[L.PARAMETER_AT[name]:L.PARAMETER_AT[name] + int(np.prod(shape))]
            .reshape(shape) for name, shape in L.PARAMETER_SHAPES.items()}


def nan(shape, dtype=np.float32):
    return cuda.to_device(np.full(shape, np.nan, dtype))


class Step:
    """Device buffers of launch_step for `count` images of a set of n, NaN-poisoned."""

    def __init__(self, params, x, labels, count, blocks, splits):
        self.bp = ts.padded(count)
        self.acts = nan(self.bp * ts.ROW_LEN)
        self.params = cuda.to_device(flat(params))
        self.grads, self.rates = nan(L.PARAMETERS_LEN), nan(L.PARAMETERS_LEN)
        self.velocity = cuda.to_device(np.zeros(L.PARAMETERS_LEN, np.float32))
        self.images = cuda.to_device(x.reshape(len(x), L.IN_LEN))
        self.labels = cuda.to_device(np.asarray(labels, np.int32))
        self.conv_part, self.dense_part = nan((blocks, ts.CONV_LEN)), nan((splits, ts.DENSE_LEN))
        self.stats_part, self.stats = nan((blocks, 2)), cuda.to_device(np.zeros(2))
        self.centers = cuda.to_device(RBF_CENTERS.astype(np.float32).ravel())
        self.tables(C3_TABLE)

    def tables(self, table):
        """Use the C3 connection table `table` (6, 16) bool."""
        self.table, self.out_table = L.c3_table(table), c3_out_table(table)

    def run(self, index, start, count, kind="mse", j=10.0, order=1, mode="store", lr=0.0,
            momentum=0.0):
        ts.launch_step(self.acts, self.bp, self.params, self.grads, self.velocity, self.rates,
                       self.images, self.labels, cuda.to_device(np.asarray(index, np.int32)),
                       start, count, kind, j, order, mode, lr, momentum, self.conv_part,
                       self.dense_part, self.stats_part, self.stats, self.centers, self.table,
                       self.out_table, split_images=2)

    def rows(self, name, count):
        at, n = ts.ACT_AT[name], ts.ACT_LEN[name]
        return self.acts.copy_to_host()[self.bp * at:self.bp * (at + n)].reshape(-1, n)[:count]


def images(n, seed):
    return np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def start():
    return LeNet5(seed=5, init="sqrt-fan-in").parameters()


def test_sgd_step_gradients_and_velocities(start):
    # one SGD step on 5 of 7 images through a shuffled index: two groups (4 + 1) in one
    # block, C5's and F6's sums in two splits; MAP with j near the penalties (dy and hy
    # both non-trivial); from a non-zero velocity, so momentum counts
    x, labels = images(7, seed=1), np.array([3, 1, 4, 1, 5, 9, 2])
    index, count = [6, 2, 0, 5, 3, 1, 4], 5
    picked = np.array(index[1:1 + count])
    j = float(np.floor(ref.forward_ref(start, x[picked])["penalties"].min()))
    fwd = ref.forward_ref(start, x[picked], labels[picked], "map", j)
    g = ref.backward_ref(start, fwd)
    lr, momentum = 0.05, 0.9
    v0 = np.random.default_rng(3).uniform(-1e-3, 1e-3, L.PARAMETERS_LEN).astype(np.float32)
    v0 *= flat({k: v != 0 for k, v in start.items()})    # none for C3's absent weights
    step = Step(start, x, labels, count, blocks=1, splits=2)
    step.velocity = cuda.to_device(v0)
    step.run(index, 1, count, kind="map", j=j, mode="sgd", lr=lr, momentum=momentum)
    got_g, got_v = unflat(step.grads.copy_to_host()), unflat(step.velocity.copy_to_host())
    got_p = unflat(step.params.copy_to_host())
    for name in PARAMETER_SHAPES:
        assert_close(got_g[name], g[name], what=f"gradient {name}")
        v = momentum * unflat(v0)[name].astype(np.float64) - lr * g[name]
        assert_close(got_v[name], v, what=f"velocity {name}")
        assert_close(got_p[name], start[name] + v, what=name)
    assert np.all(got_p["C3.weight"][~C3_TABLE.T] == 0)
    assert_close(step.rows("y", count), fwd["penalties"], what="penalties")
    total, wrong = step.stats.copy_to_host()
    assert total / count == pytest.approx(fwd["loss"], rel=1e-5)
    assert wrong == fwd["errors"]


def test_curvature_across_blocks(start):
    # the Gauss-Newton diagonal (order 2) of 6 images in two blocks (groups 4 + 2) and
    # three splits; the parameters stay as they are (mode "store")
    x, labels = images(6, seed=2), np.array([0, 7, 7, 2, 8, 1])
    j = float(np.floor(ref.forward_ref(start, x)["penalties"].min()))
    want = ref.backward_ref(start, ref.forward_ref(start, x, labels, "map", j), order=2)
    step = Step(start, x, labels, 6, blocks=2, splits=3)
    step.run(np.arange(6), 0, 6, kind="map", j=j, order=2)
    got = unflat(step.grads.copy_to_host())
    for name in PARAMETER_SHAPES:
        assert_close(got[name], want[name], what=f"curvature {name}")
    np.testing.assert_array_equal(step.params.copy_to_host(), flat(start))


def test_wrong_arguments_are_refused():
    start = LeNet5(seed=1).parameters()
    step = Step(start, images(3, 0), [1, 2, 3], 3, blocks=1, splits=1)
    with pytest.raises(ValueError, match="step: 5 images for 4 rows"):
        step.run([0, 1, 2], 0, 5)
    with pytest.raises(ValueError, match=r"step: images 2\.\.4 outside the index of 3"):
        step.run([0, 1, 2], 2, 2)
    with pytest.raises(ValueError, match="mode 'adam'"):
        step.run([0, 1, 2], 0, 3, mode="adam")


@pytest.mark.parametrize("pairs", [61, 59])
def test_a_table_of_other_pairs_is_refused(pairs):
    # batch_kernel's C3 gradient tasks and shared sums are sized for Table I's 60 pairs:
    # 61 would read past them (on a GPU: wrong C3 gradients, silently), 59 past the table
    start = LeNet5(seed=1).parameters()
    step = Step(start, images(3, 0), [1, 2, 3], 3, blocks=1, splits=1)
    step.tables(table_of(pairs))
    with pytest.raises(ValueError, match=f"^step: the C3 table connects {pairs} .* pairs; the "
                                         "fused kernels take Table I's 60$"):
        step.run([0, 1, 2], 0, 3)
    assert np.isnan(step.grads.copy_to_host()).all()          # nothing was launched
    np.testing.assert_array_equal(step.params.copy_to_host(), flat(start))
    from lenet.workspace import Workspace
    with pytest.raises(ValueError, match=f"^Workspace: the C3 table connects {pairs} "):
        Workspace(4, step.centers, step.table, step.out_table)
