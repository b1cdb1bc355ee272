"""The fused forward path (kernels/forward.py) and the GPU backend's activations() built
from the stage kernels, against kernels/reference.py, on seeded inputs in awkward batch
sizes, into NaN-poisoned outputs. Each piece (kernels/forward_pieces.py) in its stage kernel
is tests/test_forward_pieces.py's.

In the CUDA simulator (no GPU) the batches are tiny; on a GPU they include 1001 and
4099 images, and the whole MNIST test set runs through the fused forward pass.
"""

import numpy as np
import pytest
from conftest import SIMULATOR
from numba import cuda
from test_forward_pieces import assert_classes, images, penalties, poisoned

from lenet import LeNet5
from lenet.kernels import forward as fw
from lenet.kernels import forward_pieces as L
from lenet.kernels import reference as ref
from lenet.kernels.architecture import C3_TABLE, RBF_CENTERS
from lenet.kernels.tolerance import assert_close

# fused-kernel batches: a batch of one, a partial group, one over a group of IMAGES
FUSED_BATCHES = (1, 3, L.IMAGES + 1) + (() if SIMULATOR else (1001, 4099))


@pytest.fixture(scope="module")
def net():
    """As tests/test_forward_pieces.py's: a seeded model's float32 parameters, flat device
    buffer, C3 table rows and RBF centers."""
    params = LeNet5(device="cpu", seed=7).parameters()
    flat = np.concatenate([params[name].ravel() for name in L.PARAMETER_SHAPES])
    return {"params": params, "flat": cuda.to_device(flat),
            "table": L.c3_table(C3_TABLE),
            "centers": cuda.to_device(RBF_CENTERS.astype(np.float32).ravel())}


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
    with pytest.raises(ValueError, match=r"forward: params has shape \(100,\), expected"):
        fw.forward(pen, cls, x, cuda.to_device(np.zeros(100, np.float32)), net["table"],
                   net["centers"])
    with pytest.raises(ValueError, match="forward: classes has dtype float32, expected int32"):
        fw.forward(pen, poisoned((2,)), x, net["flat"], net["table"], net["centers"])
    with pytest.raises(ValueError, match="forward: x is a host array"):
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
    got = ops.activations(cuda.to_device(x), flat, C3_TABLE, centers)
    want = ref.forward_ref(params, x)
    names = ["input", "C1", "S2", "C3", "S4", "C5", "F6", "penalties"]
    assert len(got) == len(names)
    for name, a in zip(names, got, strict=True):
        assert np.dtype(a.dtype) == np.float32 and tuple(a.shape) == want[name].shape, name
        assert_close(a.copy_to_host(), want[name], what=name)
    # the buffers are reused: a smaller batch next gets views of the same memory
    again = ops.activations(cuda.to_device(x[:1]), flat, C3_TABLE, centers)
    assert_close(again[-1].copy_to_host(), want["penalties"][:1], what="penalties again")
    empty = ops.activations(cuda.to_device(x[:0]), flat, C3_TABLE, centers)
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
