"""Each backward piece of kernels/backward_pieces.py (the loss piece among them),
run over a batch by the stage kernels of kernels/backward.py, against kernels/reference.py:
losses, deltas (order 1) and Gauss-Newton curvature (order 2), parameter gradients summed
over the batch (C5's and F6's by the training step's dense_grads_kernel, which has no
piece); the C3 out-table rows the C3 delta piece reads, and the pieces' task counts,
taken from kernels/architecture.py's shapes. Inputs are
the reference network's activations on seeded images (rounded to float32) and seeded
deltas; outputs are NaN-poisoned. The stage kernels' own checks are
tests/test_backward.py's.
"""

import ast
import inspect

import numpy as np
import pytest
from conftest import BATCHES
from edited_module import run_edited
from loss_cases import LOSS_CASES
from numba import cuda

from lenet import LeNet5
from lenet.kernels import backward as bw
from lenet.kernels import backward_pieces as bp
from lenet.kernels import reference as ref
from lenet.kernels import sdlm
from lenet.kernels import train_step as ts
from lenet.kernels.architecture import C3_TABLE, C5_UNITS, CONV_TABLES, PARAMETER_AT, RBF_CENTERS
from lenet.kernels.backward_pieces import OUT_TABLE_ROW, c3_out_table
from lenet.kernels.forward_pieces import C1_MAPS, IMAGES, c3_table
from lenet.kernels.tolerance import assert_close

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


def dense_grads(d, x, order):
    """C5's (d (N,120), x (N,400)) or F6's (d (N,84), x (N,120)) weight and bias gradients
    from the training step's dense_grads_kernel in one split, on an activation buffer
    holding only this layer's rows (the other layer's are zeros)."""
    n, layer = len(d), "C5" if d.shape[1] == C5_UNITS else "F6"
    bp = ts.padded(n)
    acts = np.zeros(bp * ts.ROW_LEN, np.float32)
    for name, a in zip(("d5", "a4") if layer == "C5" else ("d6", "a5"), (d, x), strict=True):
        acts[bp * ts.ACT_AT[name]:][:a.size] = a.ravel()
    part = poisoned((1, ts.DENSE_LEN))
    ts.dense_grads_kernel[(ts.DENSE_TILES, 1), ts.THREADS](part, dev(acts), np.int32(bp),
                                                           np.int32(n), np.int32(order))
    grads = part.copy_to_host()[0]
    w, b = (PARAMETER_AT[f"{layer}.{k}"] - PARAMETER_AT["C5.weight"] for k in ("weight", "bias"))
    return grads[w:b].reshape(d.shape[1], x.shape[1]), grads[b:b + d.shape[1]]


def through(order, d, out):
    return ref.squash_backward_ref(d, out, order)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("n", BATCHES)
def test_rbf_delta(params, n, order):
    x6 = activations(n, params, seed=n)["F6"]
    dy = deltas((n, 10), 1, seed=1)
    hy = deltas((n, 10), 2, seed=2)
    want = through(order, ref.rbf_backward_ref(dy, x6, RBF_CENTERS, order, hy), x6)
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
    dx, dw, db = ref.full_backward_ref(d, x, w, order)
    got_dx = poisoned(x.shape)
    bw.dense_delta_all(got_dx, dev(d), dev(w.ravel()), dev(x), order)
    got_dw, got_db = dense_grads(d, x, order)
    assert_close(got_dx.copy_to_host(), through(order, dx, x), what=f"{below} delta")
    assert_close(got_dw, dw, what=f"{layer} weights, order {order}")
    assert_close(got_db, db, what=f"{layer} biases, order {order}")


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("layer", ["S2", "S4"])
@pytest.mark.parametrize("n", BATCHES)
def test_subsample_delta_and_grads(params, n, layer, order):
    below = "C1" if layer == "S2" else "C3"
    x = activations(n, params, seed=20 + n)[below]   # the layer's input
    coef = params[f"{layer}.coef"].astype(np.float32).astype(np.float64)
    maps, size = x.shape[1], x.shape[2] // 2
    d = deltas((n, maps, size, size), order, seed=4)
    dx, dcoef, dbias = ref.subsample_backward_ref(d, x, coef, order)
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
    _, dw, db = ref.conv_backward_ref(d, x, w, CONV_TABLES["C1"], order, need_dx=False)
    got_dw, got_db = poisoned(w.shape), poisoned(6)
    bw.c1_grads_all(got_dw, got_db, dev(d.reshape(n, -1)), dev(x.reshape(n, -1)), order)
    assert_close(got_dw.copy_to_host(), dw, what=f"C1 weights, order {order}")
    assert_close(got_db.copy_to_host(), db, what=f"C1 biases, order {order}")


def test_c3_out_table_lists_the_paper_table():
    # each S2 map's row: how many C3 maps read it, then which, then -1s
    out = c3_out_table(C3_TABLE).copy_to_host().reshape(C1_MAPS, OUT_TABLE_ROW)
    assert out[:, 0].tolist() == [10] * 6                        # each S2 map feeds 10
    for c in range(C1_MAPS):
        assert out[c, 1:11].tolist() == np.flatnonzero(C3_TABLE[c]).tolist()
        assert (out[c, 11:] == -1).all()


def check_c3(params, n, order, table, seed):
    a2 = activations(n, params, seed=seed)["S2"]
    w = params["C3.weight"].astype(np.float32).astype(np.float64)
    d = deltas((n, 16, 10, 10), order, seed=6)
    dx, dw, db = ref.conv_backward_ref(d, a2, w, table, order)
    got_dw, got_db, got_dx = poisoned(w.shape), poisoned(16), poisoned((n, a2[0].size))
    bw.c3_grads_all(got_dw, got_db, dev(d.reshape(n, -1)), dev(a2.reshape(n, -1)),
                    c3_table(table), order)
    bw.c3_delta_all(got_dx, dev(d.reshape(n, -1)), dev(w.ravel()), dev(a2.reshape(n, -1)),
                    c3_out_table(table), order)
    assert_close(got_dw.copy_to_host(), dw, what=f"C3 weights, order {order}")
    assert np.all(got_dw.copy_to_host()[~table.T] == 0)   # exact zeros off the table
    assert_close(got_db.copy_to_host(), db, what=f"C3 biases, order {order}")
    assert_close(got_dx.copy_to_host(), through(order, dx, a2).reshape(n, -1),
                 what=f"S2 delta, order {order}")


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("n", BATCHES)
def test_c3_grads_and_delta(params, n, order):
    check_c3(params, n, order, C3_TABLE, seed=40 + n)


@pytest.mark.parametrize("order", ORDERS)
def test_c3_pieces_follow_another_table(params, order):
    # every C3 map reads 1 to 6 S2 maps, in scattered order; the C3 weights off this
    # table are not zero (the paper's table's zeros are on): only the table's pairs may
    # be read. IMAGES + 1 images: two blocks of c3_delta_kernel
    r = np.random.default_rng(3)
    table = np.zeros((6, 16), bool)
    for m, k in enumerate(r.permutation(np.arange(16) % 6 + 1)):
        table[r.choice(6, k, replace=False), m] = True
    assert table.sum(axis=0).min() == 1 and table.sum(axis=0).max() == 6
    check_c3(params, IMAGES + 1, order, table, seed=45)


# --------------------------------------------------------------------------- loss

@pytest.mark.parametrize("case", LOSS_CASES)
@pytest.mark.parametrize("n", BATCHES)
def test_loss(n, case):
    kind, penalties, j = LOSS_CASES[case]
    r = np.random.default_rng([8, n, len(case)])
    labels = r.integers(0, 10, n).astype(np.int32)
    y = penalties(r, n, labels).astype(np.float32)
    losses, dy, hy = poisoned((n,)), poisoned((n, 10)), poisoned((n, 10))
    bw.loss_all(losses, dy, hy, dev(y), cuda.to_device(labels), kind, j)
    y64 = y.astype(np.float64)
    want = ref.loss_ref(y64, labels, kind, j)
    for got, w, name in zip((losses, dy, hy), want, ("losses", "dy", "hy"), strict=True):
        assert_close(got.copy_to_host(), w, what=name)


def test_loss_of_a_bad_label_is_nan():
    y = np.random.default_rng(9).uniform(5, 150, (3, 10)).astype(np.float32)
    labels = np.array([1, 10, 2], np.int32)
    losses, dy, hy = poisoned((3,)), poisoned((3, 10)), poisoned((3, 10))
    bw.loss_all(losses, dy, hy, dev(y), cuda.to_device(labels), "map", ref.MAP_J)
    got = losses.copy_to_host()
    assert np.isfinite(got[[0, 2]]).all() and np.isnan(got[1])
    assert np.isnan(dy.copy_to_host()[1]).all() and np.isfinite(dy.copy_to_host()[[0, 2]]).all()


def test_task_counts_tile_the_layers():
    # the paper's maps: C1 6@28x28, S2 6@14x14, C3 16@10x10 over Table I's 60 pairs
    assert bp.C1_GRAD_TASKS * bp.C1_BAND_ROWS * bp.C1_GRAD_COLS == 6 * 28 * 28
    assert bp.C1_MAP_TASKS * bp.C1_BAND_ROWS * bp.C1_GRAD_COLS == 28 * 28
    assert bp.C3_GRAD_TASKS * bp.C3_BAND_ROWS * 10 == 60 * 10 * 10
    assert bp.C3_BANDS * bp.C3_BAND_ROWS == 10
    assert bp.C2_DELTA_TASKS * 2 * 14 == 6 * 14 * 14      # (S2 map, pair of rows)
    assert bp.OUT_TABLE_ROW == 1 + 16
    # the kernels import them from backward_pieces and define no copies of their own
    shared = {"C1_GRAD_TASKS", "C2_DELTA_TASKS", "C3_GRAD_TASKS", "C3_PAIRS", "OUT_TABLE_ROW"}
    for module in (ts, sdlm, bw):
        tree = ast.parse(inspect.getsource(module))
        assigned = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign)
                    for t in n.targets if isinstance(t, ast.Name)}
        assert assigned & shared == set(), module.__name__
        assert module.C2_DELTA_TASKS == 42


def test_c3_bands_fail_loudly_when_changed():
    # c3_pair_sum adds a pair's two bands by hand: 10 rows in 5 bands of 2 must not import
    line = "C3_BAND_ROWS = 5\n"
    assert run_edited(bp, line, line).C3_BANDS == 2
    with pytest.raises(AssertionError, match="c3_pair_sum"):
        run_edited(bp, line, "C3_BAND_ROWS = 2\n")


def test_a_launchers_table_is_read_back_once():
    # the backend passes one table at every launch: its pairs are counted once (a copy
    # that waits for the device), and another table is counted again
    from c3_tables import table_of
    table, reads = c3_table(C3_TABLE), []
    real = table.copy_to_host
    table.copy_to_host = lambda *a, **k: reads.append(1) or real(*a, **k)
    for _ in range(3):
        bp.check_c3_pairs("x", table)
    assert len(reads) == 1
    with pytest.raises(ValueError, match="^y: the C3 table connects 61"):
        bp.check_c3_pairs("y", c3_table(table_of(61)))
    bp.check_c3_pairs("x", table)      # the last that passed is still this one
    assert len(reads) == 1
