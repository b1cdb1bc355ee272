"""Each backward piece of kernels/layers_backward.py, run over a batch by the stage
kernels of kernels/backward.py, against kernels/reference.py: deltas (order 1) and
Gauss-Newton curvature (order 2), parameter gradients summed over the batch. Inputs are
the reference network's activations on seeded images (rounded to float32) and seeded
deltas; outputs are NaN-poisoned.
"""

import numpy as np
import pytest
from conftest import BATCHES
from numba import cuda

from kernels import backward as bw
from kernels import reference as ref
from kernels.architecture import C3_TABLE, CONV_TABLES, RBF_CENTERS
from kernels.conv import conv_table
from kernels.layers import c3_table
from kernels.layers_backward import c3_out_table
from kernels.tolerance import assert_close
from lenet import LeNet5

ORDERS = (1, 2)
OUTPUTS = ["input"] + [name for name, _ in ref.LAYERS]   # what each layer reads


def poisoned(shape):
    return cuda.to_device(np.full(shape, np.nan, np.float32))


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a, np.float32))


@pytest.fixture(scope="module")
def params():
    return {k: v.astype(np.float64) for k, v in LeNet5(device="cpu", seed=5).parameters().items()}


def activations(n, params, seed):
    """The reference network's tensors on seeded images, rounded to float32, by name."""
    x = np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32))
    fwd = ref.forward_ref(params, x)
    return {k: fwd[k].astype(np.float32).astype(np.float64) for k in OUTPUTS}


def deltas(shape, order, seed):
    """Seeded deltas: signed for gradients, non-negative for curvature."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(-1, 1, shape) if order == 1 else rng.uniform(0, 1, shape)
    return d.astype(np.float32).astype(np.float64)


def through(order, d, out):
    return ref.squash_backward_ref(d, out) if order == 1 else ref.squash_backward2_ref(d, out)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("n", BATCHES)
def test_rbf_delta(params, n, order):
    x6 = activations(n, params, seed=n)["F6"]
    dy = deltas((n, 10), 1, seed=1)
    hy = deltas((n, 10), 2, seed=2)
    want = through(order, ref.rbf_backward_ref(dy, x6, RBF_CENTERS) if order == 1
                   else ref.rbf_backward2_ref(hy, dy, x6, RBF_CENTERS), x6)
    d6 = poisoned((n, 84))
    bw.rbf_delta_all(d6, dev(dy), dev(hy), dev(x6), dev(RBF_CENTERS.ravel()), order)
    assert_close(d6.copy_to_host(), want, what=f"F6 delta, order {order}")


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("layer", ["C5", "F6"])
@pytest.mark.parametrize("n", BATCHES)
def test_dense_delta_and_grads(params, n, layer, order):
    below = "S4" if layer == "C5" else "C5"
    x = activations(n, params, seed=10 + n)[below].reshape(n, -1)   # the layer's input
    w = params[f"{layer}.weight"].reshape(-1, x.shape[1]).astype(np.float32).astype(np.float64)
    d = deltas((n, w.shape[0]), order, seed=3)
    backward = ref.full_backward_ref if order == 1 else ref.full_backward2_ref
    dx, dw, db = backward(d, x, w)
    got_dx, got_dw, got_db = poisoned(x.shape), poisoned(w.shape), poisoned(w.shape[:1])
    bw.dense_delta_all(got_dx, dev(d), dev(w.ravel()), dev(x), order)
    bw.dense_grads_all(got_dw, got_db, dev(d), dev(x), order)
    assert_close(got_dx.copy_to_host(), through(order, dx, x), what=f"{below} delta")
    assert_close(got_dw.copy_to_host(), dw, what=f"{layer} weights, order {order}")
    assert_close(got_db.copy_to_host(), db, what=f"{layer} biases, order {order}")


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("layer", ["S2", "S4"])
@pytest.mark.parametrize("n", BATCHES)
def test_subsample_delta_and_grads(params, n, layer, order):
    below = "C1" if layer == "S2" else "C3"
    x = activations(n, params, seed=20 + n)[below]   # the layer's input
    coef = params[f"{layer}.coef"].astype(np.float32).astype(np.float64)
    maps, size = x.shape[1], x.shape[2] // 2
    d = deltas((n, maps, size, size), order, seed=4)
    backward = ref.subsample_backward_ref if order == 1 else ref.subsample_backward2_ref
    dx, dcoef, dbias = backward(d, x, coef)
    got_dx, got_dc, got_db = poisoned((n, x[0].size)), poisoned(maps), poisoned(maps)
    bw.subsample_delta_all(got_dx, dev(d.reshape(n, -1)), dev(x.reshape(n, -1)), dev(coef),
                           order)
    bw.subsample_grads_all(got_dc, got_db, dev(d.reshape(n, -1)), dev(x.reshape(n, -1)), order)
    assert_close(got_dx.copy_to_host(), through(order, dx, x).reshape(n, -1),
                 what=f"{below} delta")
    assert_close(got_dc.copy_to_host(), dcoef, what=f"{layer} coefficients, order {order}")
    assert_close(got_db.copy_to_host(), dbias, what=f"{layer} biases, order {order}")


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("n", BATCHES)
def test_c1_grads(params, n, order):
    x = activations(n, params, seed=30 + n)["input"]
    w = params["C1.weight"]
    d = deltas((n, 6, 28, 28), order, seed=5)
    backward = ref.conv_backward_ref if order == 1 else ref.conv_backward2_ref
    _, dw, db = backward(d, x, w, CONV_TABLES["C1"], False)
    got_dw, got_db = poisoned(w.shape), poisoned(6)
    bw.c1_grads_all(got_dw, got_db, dev(d.reshape(n, -1)), dev(x.reshape(n, -1)), order)
    assert_close(got_dw.copy_to_host(), dw, what=f"C1 weights, order {order}")
    assert_close(got_db.copy_to_host(), db, what=f"C1 biases, order {order}")


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("n", BATCHES)
def test_c3_grads_and_delta(params, n, order):
    a2 = activations(n, params, seed=40 + n)["S2"]
    w = params["C3.weight"].astype(np.float32).astype(np.float64)
    d = deltas((n, 16, 10, 10), order, seed=6)
    backward = ref.conv_backward_ref if order == 1 else ref.conv_backward2_ref
    dx, dw, db = backward(d, a2, w, C3_TABLE)
    table = conv_table(C3_TABLE)
    got_dw, got_db, got_dx = poisoned(w.shape), poisoned(16), poisoned((n, a2[0].size))
    bw.c3_grads_all(got_dw, got_db, dev(d.reshape(n, -1)), dev(a2.reshape(n, -1)),
                    c3_table(table), order)
    bw.c3_delta_all(got_dx, dev(d.reshape(n, -1)), dev(w.ravel()), dev(a2.reshape(n, -1)),
                    c3_out_table(table), order)
    assert_close(got_dw.copy_to_host(), dw, what=f"C3 weights, order {order}")
    assert np.all(got_dw.copy_to_host()[~C3_TABLE.T] == 0)   # exact zeros off the table
    assert_close(got_db.copy_to_host(), db, what=f"C3 biases, order {order}")
    assert_close(got_dx.copy_to_host(), through(order, dx, a2).reshape(n, -1),
                 what=f"S2 delta, order {order}")
