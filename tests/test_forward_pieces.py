"""Each forward piece of kernels/forward_pieces.py (a CUDA device function) in the stage
kernel of kernels/forward.py that runs it over a batch, against kernels/reference.py, on
seeded inputs in awkward batch sizes, into NaN-poisoned outputs; the flat parameter layout
and the C3 table rows the pieces read; a change to a constant a piece's code is written for
fails at import. The fused kernel built from them is tests/test_forward.py's.
"""

import numpy as np
import pytest
from conftest import BATCHES, SIMULATOR
from edited_module import run_edited
from numba import cuda

from lenet import LeNet5
from lenet.kernels import forward as fw
from lenet.kernels import forward_pieces as L
from lenet.kernels import reference as ref
from lenet.kernels.architecture import C3_TABLE, PARAMETER_SHAPES, RBF_CENTERS
from lenet.kernels.tolerance import RELATIVE_ERROR, assert_close

TOL = RELATIVE_ERROR[np.dtype(np.float32)]


def images(n, seed):
    return np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(np.float32)


def poisoned(shape, dtype=np.float32):
    return cuda.to_device(np.full(shape, -1 if np.dtype(dtype).kind == "i" else np.nan, dtype))


def penalties(params, x):
    """The float64 reference's penalties (N,10)."""
    return ref.forward_ref(params, x)["penalties"]


@pytest.fixture(scope="module")
def net():
    """The parameters of a seeded model: float32 dict, flat device buffer, C3 table rows."""
    params = LeNet5(device="cpu", seed=7).parameters()
    flat = np.concatenate([params[name].ravel() for name in L.PARAMETER_SHAPES])
    return {"params": params, "flat": cuda.to_device(flat),
            "table": L.c3_table(C3_TABLE),
            "centers": cuda.to_device(RBF_CENTERS.astype(np.float32).ravel())}


def assert_classes(classes, penalties, what="classes"):
    """classes == argmin of the float64 penalties, except where the two smallest are
    within the float32 tolerance of each other (either answer is right there)."""
    classes = np.asarray(classes)
    want = penalties.argmin(axis=1)
    wrong = np.flatnonzero(classes != want)
    for i in wrong:
        low = np.sort(penalties[i])[:2]
        assert low[1] - low[0] <= TOL * np.abs(penalties[i]).max() and \
            penalties[i, classes[i]] <= low[1], \
            f"{what}: image {i} got {classes[i]}, the reference's argmin is {want[i]}"


def test_parameter_layout():
    assert list(L.PARAMETER_AT) == list(PARAMETER_SHAPES)   # the flat order is the model's
    assert L.PARAMETERS_LEN == 60_900  # 60,000 trainable + C3's 900 zeros off the table
    assert L.CONV_PARAMETERS_LEN == L.PARAMETER_AT["C5.weight"] == 2_616


def test_the_simulators_stand_in_for_ex2_needs_no_newer_python(monkeypatch):
    # setup.cfg says Python 3.10; math.exp2 came in 3.11 (the stand-in once used it)
    import math
    if not SIMULATOR:
        pytest.skip("the stand-ins replace the PTX instructions in the simulator only")
    monkeypatch.delattr(math, "exp2", raising=False)
    assert L.ex2(np.float32(3.0)) == 8.0 and L.ex2(np.float32(-1.0)) == 0.5
    assert L.ex2(np.float32(500.0)) == np.float32(2.0 ** 127)   # held below float32's top


def test_squash_matches_float64_tanh():
    # every 16384th float32 in [0, 16) and its negative, and the special values. The
    # exhaustive walk (every float32, with ex2/rcp at their error bounds) is
    # bench/results/2026-12-02-squash-accuracy/; on a GPU this runs the real instructions
    step = 16384 if SIMULATOR else 64
    bits = np.arange(0, int(np.float32(16).view(np.uint32)), step, dtype=np.uint32)
    a = bits.view(np.float32)
    a = np.concatenate([a, -a, np.float32([1.0, -1.0, 0.9999999, 1e-30, 20.0, 1e30])])
    out = fw.squash_all(a)
    want = ref.squash_ref(a.astype(np.float64))
    normal = np.abs(a) >= np.finfo(np.float32).tiny
    rel = np.abs(out - want)[normal] / np.maximum(np.abs(want[normal]), 1e-300)
    assert rel.max() <= 4e-7, f"max relative error {rel.max():.2e} at {a[normal][rel.argmax()]}"
    special = fw.squash_all(np.float32([0.0, -0.0, np.inf, -np.inf, np.nan]))
    assert special[0] == 0 and special[1] == 0
    assert special[2] == np.float32(ref.SQUASH_A) and special[3] == -np.float32(ref.SQUASH_A)
    assert np.isnan(special[4])
    np.testing.assert_array_equal(fw.squash_all(-a), -out)   # odd, bit for bit


@pytest.mark.parametrize("n", BATCHES)
def test_c1s2_piece(net, n):
    x = images(n, seed=n)
    s2, c1 = poisoned((n, L.S2_LEN)), poisoned((n, fw.C1_LEN))
    fw.c1s2(s2, c1, cuda.to_device(x.reshape(n, -1)), net["flat"])
    want = ref.forward_ref(net["params"], x)
    assert_close(c1.copy_to_host(), want["C1"].reshape(n, -1), what="C1")
    assert_close(s2.copy_to_host(), want["S2"].reshape(n, -1), what="S2")


@pytest.mark.parametrize("n", BATCHES)
def test_c3s4_piece(net, n):
    # from the reference's S2, so that the piece is checked on its own
    s2_in = ref.forward_ref(net["params"], images(n, seed=10 + n))["S2"].astype(np.float32)
    want = reference_from_s2(s2_in, net["params"], C3_TABLE)
    s4, c3 = poisoned((n, L.S4_LEN)), poisoned((n, fw.C3_LEN))
    fw.c3s4(s4, c3, cuda.to_device(s2_in.reshape(n, -1)), net["flat"], net["table"])
    assert_close(c3.copy_to_host(), want["C3"].reshape(n, -1), what="C3")
    assert_close(s4.copy_to_host(), want["S4"].reshape(n, -1), what="S4")


def other_table():
    """A C3 table that is not the paper's: every map reads 1 to 6 S2 maps (1 and 6 both
    occur), in scattered order."""
    r = np.random.default_rng(3)
    table = np.zeros((L.C1_MAPS, L.C3_MAPS), bool)
    for m, k in enumerate(r.permutation(np.arange(L.C3_MAPS) % L.C3_MAX_IN + 1)):
        table[r.choice(L.C1_MAPS, k, replace=False), m] = True
    return table


def test_c3s4_piece_follows_its_table(net):
    # the weights off this table are not zero: the piece must read only the table's pairs
    table, n = other_table(), 2
    params = dict(net["params"])
    params["C3.weight"] = np.random.default_rng(4).uniform(
        -0.3, 0.3, PARAMETER_SHAPES["C3.weight"]).astype(np.float32)
    flat = cuda.to_device(np.concatenate([params[k].ravel() for k in L.PARAMETER_SHAPES]))
    s2_in = ref.forward_ref(params, images(n, seed=12))["S2"].astype(np.float32)
    want = reference_from_s2(s2_in, params, table)
    s4, c3 = poisoned((n, L.S4_LEN)), poisoned((n, fw.C3_LEN))
    fw.c3s4(s4, c3, cuda.to_device(s2_in.reshape(n, -1)), flat, L.c3_table(table))
    assert_close(c3.copy_to_host(), want["C3"].reshape(n, -1), what="C3")
    assert_close(s4.copy_to_host(), want["S4"].reshape(n, -1), what="S4")


def reference_from_s2(s2, params, table):
    p = {k: v.astype(np.float64) for k, v in params.items()}
    c3 = ref.squash_ref(ref.conv_ref(s2.astype(np.float64), p["C3.weight"], p["C3.bias"],
                                     table))
    return {"C3": c3, "S4": ref.squash_ref(ref.subsample_ref(c3, p["S4.coef"], p["S4.bias"]))}


def test_c3_table_lists_the_paper_table():
    # the rows the C3 pieces read (c3_out_table, backward_pieces', is
    # tests/test_backward_pieces.py's)
    rows = L.c3_table(C3_TABLE).copy_to_host().reshape(L.C3_MAPS, L.TABLE_ROW)
    assert rows[:, 0].tolist() == [3] * 6 + [4] * 9 + [6]   # Table I: 60 connections
    for m in range(L.C3_MAPS):
        assert rows[m, 1:1 + rows[m, 0]].tolist() == np.flatnonzero(C3_TABLE[:, m]).tolist()
        assert (rows[m, 1 + rows[m, 0]:] == -1).all()
    assert rows[12, 1:5].tolist() == [0, 1, 3, 4]              # a non-contiguous one


@pytest.mark.parametrize("table, match", [
    (np.ones((6, 15), bool), r"expected bool \(6, 16\)"),
    (np.ones((6, 16), np.int32), r"expected bool \(6, 16\)"),
    (np.eye(6, 16, dtype=bool), "every C3 map must read 1 to 6 S2 maps, not 0 to 1"),
])
def test_c3_table_refuses_what_the_piece_cannot_read(table, match):
    with pytest.raises(ValueError, match="c3_table: .*" + match):
        L.c3_table(table)


@pytest.mark.parametrize("layer", ["C5", "F6"])
@pytest.mark.parametrize("n", BATCHES)
def test_dense_piece(net, layer, n):
    w = net["params"][f"{layer}.weight"].reshape(PARAMETER_SHAPES[f"{layer}.weight"][0], -1)
    b = net["params"][f"{layer}.bias"]
    x = np.random.default_rng(n).uniform(-1.7, 1.7, (n, w.shape[1])).astype(np.float32)
    out = poisoned((n, w.shape[0]))
    fw.dense(out, cuda.to_device(x), cuda.to_device(w.ravel()), cuda.to_device(b))
    want = ref.squash_ref(ref.full_ref(x.astype(np.float64), w.astype(np.float64),
                                       b.astype(np.float64)))
    assert_close(out.copy_to_host(), want, what=layer)


@pytest.mark.parametrize("n", BATCHES)
def test_rbf_piece(net, n):
    x6 = np.random.default_rng(n).uniform(-1.7, 1.7, (n, L.F6_UNITS)).astype(np.float32)
    x6[0] = RBF_CENTERS[4]   # a row on a bitmap: penalty 0 for class 4
    pen, cls = poisoned((n, 10)), poisoned((n,), np.int32)
    fw.rbf(pen, cls, cuda.to_device(x6), net["centers"])
    want = ref.rbf_ref(x6.astype(np.float64), RBF_CENTERS)
    assert_close(pen.copy_to_host(), want, what="penalties")
    assert_classes(cls.copy_to_host(), want)
    assert cls.copy_to_host()[0] == 4


def test_dense_partials_units_fail_loudly_when_changed():
    # dense_partials names its 4 weight rows one by one: 5 would silently drop a unit
    line = "\nDENSE_UNITS = 4 "
    assert run_edited(L, line, line).DENSE_UNITS == 4          # the source runs as it is
    with pytest.raises(AssertionError, match="dense_partials"):
        run_edited(L, line, "\nDENSE_UNITS = 5 ")
