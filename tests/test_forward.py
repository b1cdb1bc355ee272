"""The fused forward path (kernels/forward.py), each of its pieces (kernels/forward_pieces.py) in
its stage kernel, and the GPU backend's activations() built from them, against
kernels/reference.py, on seeded inputs in awkward batch sizes, into NaN-poisoned outputs.

In the CUDA simulator (no GPU) the batches are tiny; on a GPU they include 1001 and
4099 images, and the whole MNIST test set runs through the fused forward pass.
"""

import numpy as np
import pytest
from conftest import BATCHES, SIMULATOR
from numba import cuda

from lenet import LeNet5
from lenet.kernels import forward as fw
from lenet.kernels import forward_pieces as L
from lenet.kernels import reference as ref
from lenet.kernels.architecture import C3_TABLE, PARAMETER_SHAPES, RBF_CENTERS
from lenet.kernels.tolerance import RELATIVE_ERROR, assert_close

TOL = RELATIVE_ERROR[np.dtype(np.float32)]
# fused-kernel batches: a batch of one, a partial group, one over a group of IMAGES
FUSED_BATCHES = (1, 3, L.IMAGES + 1) + (() if SIMULATOR else (1001, 4099))


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


# ------------------------------------------------------------------------ pieces

def test_parameter_layout():
    assert list(L.PARAMETER_AT) == list(PARAMETER_SHAPES)   # the flat order is the model's
    assert L.PARAMETERS_LEN == 60_900  # 60,000 trainable + C3's 900 zeros off the table
    assert L.CONV_PARAMETERS_LEN == L.PARAMETER_AT["C5.weight"] == 2_616


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


def test_c3_tables_list_the_paper_table():
    from lenet.kernels.backward_pieces import OUT_TABLE_ROW, c3_out_table
    rows = L.c3_table(C3_TABLE).copy_to_host().reshape(L.C3_MAPS, L.TABLE_ROW)
    assert rows[:, 0].tolist() == [3] * 6 + [4] * 9 + [6]   # Table I: 60 connections
    for m in range(L.C3_MAPS):
        assert rows[m, 1:1 + rows[m, 0]].tolist() == np.flatnonzero(C3_TABLE[:, m]).tolist()
        assert (rows[m, 1 + rows[m, 0]:] == -1).all()
    assert rows[12, 1:5].tolist() == [0, 1, 3, 4]              # a non-contiguous one
    out = c3_out_table(C3_TABLE).copy_to_host().reshape(L.C1_MAPS, OUT_TABLE_ROW)
    assert out[:, 0].tolist() == [10] * 6                        # each S2 map feeds 10
    for c in range(L.C1_MAPS):
        assert out[c, 1:11].tolist() == np.flatnonzero(C3_TABLE[c]).tolist()
        assert (out[c, 11:] == -1).all()


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


# ------------------------------------------------------------------ fused kernel

@pytest.mark.parametrize("n", FUSED_BATCHES)
def test_fused_forward(net, n):
    x = images(n, seed=20 + n)
    pen, cls = poisoned((n, 10)), poisoned((n,), np.int32)
    fw.forward(pen, cls, cuda.to_device(x.reshape(n, -1)), net["flat"], net["table"],
               net["centers"])
    want = penalties(net["params"], x)
    assert_close(pen.copy_to_host(), want, what="penalties")
    assert_classes(cls.copy_to_host(), want)


def test_fused_forward_strides_over_groups(net):
    # fewer blocks than groups of IMAGES: block 0 takes groups 0 and 1 in turn
    n = L.IMAGES + 1
    x = images(n, seed=30)
    pen, cls = poisoned((n, 10)), poisoned((n,), np.int32)
    fw.forward_kernel[1, fw.THREADS](pen, cls, cuda.to_device(x.reshape(n, -1)),
                                     net["flat"], net["table"], net["centers"])
    want = penalties(net["params"], x)
    assert_close(pen.copy_to_host(), want, what="penalties")
    assert_classes(cls.copy_to_host(), want)


def test_launcher_refuses_wrong_arguments(net):
    x = cuda.to_device(np.zeros((2, L.IN_LEN), np.float32))
    pen, cls = poisoned((2, 10)), poisoned((2,), np.int32)
    with pytest.raises(ValueError, match=r"forward: params is float32 \(100,\), expected"):
        fw.forward(pen, cls, x, cuda.to_device(np.zeros(100, np.float32)), net["table"],
                   net["centers"])
    with pytest.raises(ValueError, match=r"forward: classes is float32 \(2,\)"):
        fw.forward(pen, poisoned((2,)), x, net["flat"], net["table"], net["centers"])
    with pytest.raises(ValueError, match="forward: x must be a Numba device array"):
        fw.forward(pen, cls, np.zeros((2, L.IN_LEN), np.float32), net["flat"], net["table"],
                   net["centers"])


# ---------------------------------------------------- the backend's activations

@pytest.mark.parametrize("n", [1, L.IMAGES + 1])   # two blocks of every stage kernel
def test_activations_are_the_reference_layers(n):
    from lenet.ops_gpu import GPUOps
    from lenet.workspace import FlatBuffer
    params = LeNet5(device="cpu", seed=8).parameters()
    ops = GPUOps()
    flat = FlatBuffer(cuda.to_device(np.concatenate([params[k].ravel()
                                                     for k in L.PARAMETER_SHAPES])))
    x = images(n, seed=50 + n)
    centers = cuda.to_device(RBF_CENTERS.astype(np.float32))
    got = ops.activations(cuda.to_device(x), flat, ops.prepare_table(C3_TABLE), centers)
    want = ref.forward_ref(params, x)
    names = ["input", "C1", "S2", "C3", "S4", "C5", "F6", "penalties"]
    assert len(got) == len(names)
    for name, a in zip(names, got, strict=True):
        assert np.dtype(a.dtype) == np.float32 and tuple(a.shape) == want[name].shape, name
        assert_close(a.copy_to_host(), want[name], what=name)
    # the buffers are reused: a smaller batch next gets views of the same memory
    again = ops.activations(cuda.to_device(x[:1]), flat, ops.prepare_table(C3_TABLE), centers)
    assert_close(again[-1].copy_to_host(), want["penalties"][:1], what="penalties again")
    empty = ops.activations(cuda.to_device(x[:0]), flat, ops.prepare_table(C3_TABLE), centers)
    assert [tuple(a.shape)[0] for a in empty] == [0] * len(names)


# -------------------------------------------------------------------- the model

@pytest.fixture(scope="module")
def models():
    """The seeded parameters, and the GPU model holding them."""
    fused = LeNet5(device="gpu", seed=11)
    return fused.parameters(), fused


def test_model_forward_and_predict(models):
    start, fused = models
    n = 3
    x = images(n, seed=40)
    want = penalties(start, x)
    y = fused.forward(x)                         # NumPy in, NumPy out
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert_close(y, want, what="penalties")
    assert_classes(fused.predict(x[:, 0]), want)  # (N,32,32) accepted too
    yd = fused.forward(cuda.to_device(x))        # device in, device out
    assert hasattr(yd, "copy_to_host")
    assert_close(yd.copy_to_host(), want, what="penalties from device input")
    assert_classes(fused.predict(cuda.to_device(x)).copy_to_host(), want)
    assert fused.forward(x[:0]).shape == (0, 10) and fused.predict(x[:0]).shape == (0,)


def test_fused_host_input_in_chunks(models, monkeypatch):
    start, fused = models
    monkeypatch.setattr(fw, "CHUNK", 2)
    x = images(5, seed=41)
    assert_close(fused.forward(x.astype(np.float64)), penalties(start, x),
                 what="chunked penalties")


def test_fused_path_follows_parameter_changes(models):
    # the fused kernel reads one flat buffer; set_parameters and in-place updates of the
    # model's parameter arrays (what training does) must both reach it
    start, fused = models
    x = images(1, seed=42)
    try:
        changed = dict(start, **{"F6.bias": start["F6.bias"] + np.float32(0.25)})
        fused.set_parameters(changed)
        assert_close(fused.forward(x), penalties(changed, x), what="after set_parameters")
        changed["C5.bias"] = changed["C5.bias"] * np.float32(0.5)
        fused.params["C5.bias"].copy_to_device(changed["C5.bias"])   # the view, in place
        assert_close(fused.forward(x), penalties(changed, x), what="after an in-place update")
        for k, v in fused.parameters().items():
            np.testing.assert_array_equal(v, changed[k], err_msg=k)
    finally:
        fused.set_parameters(start)


@pytest.mark.skipif(SIMULATOR, reason="CuPy and PyTorch arrays need a real GPU")
@pytest.mark.parametrize("library", ["cupy", "torch"])
def test_fused_reads_other_libraries_in_place(models, library):
    lib = pytest.importorskip(library, reason=f"{library} is not installed")
    start, fused = models
    x = images(257, seed=43)
    xd = lib.asarray(x) if library == "cupy" else lib.as_tensor(x, device="cuda")
    y = fused.forward(xd)
    assert hasattr(y, "copy_to_host")
    assert_close(y.copy_to_host(), penalties(start, x), what=f"penalties from {library}")


@pytest.mark.skipif(SIMULATOR, reason="the MNIST test set is too large for the simulator")
def test_mnist_test_set_predictions(models, mnist_dir):
    from lenet.data import load_mnist, preprocess
    start, fused = models
    x = preprocess(load_mnist("test", mnist_dir)[0])
    assert_classes(fused.predict(x), penalties(start, x), what="classes on MNIST")
