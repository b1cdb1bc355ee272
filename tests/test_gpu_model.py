"""The GPU model against the CPU model with the same parameters: the layer-by-layer path
(path="layers"), and training through the fused step and the fused per-pattern kernel
(whose kernels are tested on their own in tests/test_train_step.py and
tests/test_sdlm.py); the fused forward path is tests/test_forward.py.

Runs on a real GPU with thousands of images and in the CUDA simulator (chosen by
conftest.py when there is no GPU) with a few. Interop with CuPy needs a real GPU.
"""

import numpy as np
import pytest
from conftest import SIMULATOR

from kernels import reference as ref
from kernels.tolerance import assert_close
from kernels.tolerance import relative_error as ref_relative_error
from lenet import LeNet5

N_IMAGES = 2 if SIMULATOR else 3001
# the simulator runs every CUDA thread in Python: one backward pass over one image
# takes minutes there, so it checks the MAP loss only (with j = 90 its dy and hy
# are both non-trivial for an untrained net, whose penalties are near 84; MSE's
# hy is 0); a real GPU checks both on 1000 images
LOSSES = ["map"] if SIMULATOR else ["mse", "map"]


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def pair():
    cpu = LeNet5(device="cpu", seed=11)
    gpu = LeNet5(device="gpu", path="layers")
    gpu.set_parameters(cpu.parameters())
    return cpu, gpu


def test_parameters_move_losslessly(pair, tmp_path):
    cpu, gpu = pair
    for k, v in cpu.parameters().items():
        np.testing.assert_array_equal(gpu.parameters()[k], v)
    gpu.save(tmp_path / "g.npz")
    back = LeNet5.load(tmp_path / "g.npz", device="cpu")
    for k, v in cpu.parameters().items():
        np.testing.assert_array_equal(back.parameters()[k], v)


def test_forward_and_predict_match_cpu(pair):
    cpu, gpu = pair
    x = images(N_IMAGES, seed=1)
    assert_close(gpu.forward(x), cpu.forward(x).astype(np.float64), what="penalties")
    np.testing.assert_array_equal(gpu.predict(x), cpu.predict(x))


def test_forward_with_c5_on_the_full_connection_kernels(pair, monkeypatch):
    # on a GPU C5 always runs on kernels/full.py; the simulator runs it there only when
    # asked (GPUOps.whole_input_as_full), which it is here for the whole network
    from kernels import conv
    from lenet.ops_gpu import GPUOps
    cpu, gpu = pair
    monkeypatch.setattr(GPUOps, "whole_input_as_full", True)
    ran = []
    conv_forward = conv.conv_forward
    monkeypatch.setattr(conv, "conv_forward", lambda out, *a: (ran.append(out.shape[1]),
                                                              conv_forward(out, *a))[1])
    x = images(N_IMAGES, seed=1)
    assert_close(gpu.forward(x), cpu.forward(x).astype(np.float64), what="penalties")
    assert ran == [6, 16]  # C1 and C3 on the convolution kernels, C5 not


def test_forward_in_chunks(pair):
    _, gpu = pair
    x = images(3, seed=2)
    whole = gpu.forward(x)
    gpu.max_batch = 2
    try:
        assert_close(gpu.forward(x), whole, what="chunked penalties")
    finally:
        gpu.max_batch = gpu.ops.max_batch


def test_device_input_gives_device_output(pair):
    from numba import cuda
    cpu, gpu = pair
    x = images(3, seed=3)
    y = gpu.forward(cuda.to_device(x))
    assert hasattr(y, "copy_to_host")
    assert_close(y.copy_to_host(), cpu.forward(x), what="penalties from device input")
    np.testing.assert_array_equal(gpu.predict(cuda.to_device(x)).copy_to_host(), cpu.predict(x))


@pytest.mark.parametrize("loss", LOSSES)
def test_gradients_and_curvature_match_cpu(pair, loss):
    cpu, gpu = pair
    n = 1 if SIMULATOR else 1000
    x = images(n, seed=4)
    labels = np.random.default_rng(5).integers(0, 10, n)
    j = 90.0
    if loss == "map":  # the check below is about MAP, not MSE in disguise
        _, _, hy = ref.map_loss_ref(cpu.forward(x).astype(np.float64), labels, j)
        assert hy.max() > 1e-3 / n
    value_cpu, grads_cpu = cpu.gradients(x, labels, loss, j)
    value_gpu, grads_gpu = gpu.gradients(x, labels, loss, j)
    assert abs(value_gpu - value_cpu) <= 1e-5 * abs(value_cpu)
    for k in grads_cpu:
        assert_close(grads_gpu[k], grads_cpu[k], what=f"d{k}")
    h_cpu = cpu.second_derivatives(x, labels, loss, j)
    h_gpu = gpu.second_derivatives(x, labels, loss, j)
    for k in h_cpu:
        assert_close(h_gpu[k], h_cpu[k], what=f"h{k}")


@pytest.mark.parametrize("recipe", ["sgd", "sdlm-batch"])
def test_fused_training_pass_matches_cpu(recipe):
    # the same recipe, seed and data on both devices take the same steps: the GPU through
    # the workspace's fused step (and, for sdlm-batch, its fused curvature estimate), the
    # CPU layer by layer in float64. A few steps only: over hundreds of momentum steps
    # float32 rounding differences grow (seen on an H100: 1.4e-4 after 256 steps)
    from lenet.train import Trainer
    n = 3 if SIMULATOR else 40
    x = images(n, seed=6)
    labels = np.random.default_rng(7).integers(0, 10, n)
    a = LeNet5(device="cpu", seed=3, dtype=np.float64)
    b = LeNet5(device="gpu")
    start = {k: v.astype(np.float32) for k, v in a.parameters().items()}
    b.set_parameters(start)
    a.set_parameters({k: v.astype(np.float64) for k, v in start.items()})
    batch = n if SIMULATOR else 16     # on a GPU: two full steps and a partial one
    ta, tb = (Trainer(m, x, labels, recipe=recipe, batch_size=batch, seed=1, mu=0.1,
                      fused=fused) for m, fused in ((a, False), (b, True)))
    assert tb.workspace is not None and ta.workspace is None
    (loss_a, err_a), (loss_b, err_b) = ta.train_pass(), tb.train_pass()
    assert abs(loss_b - loss_a) <= 1e-5 * abs(loss_a) and err_a == err_b
    pa, pb = a.parameters(), b.parameters()
    for k in pa:
        assert_close(pb[k], pa[k], what=k)
        assert not np.array_equal(pb[k], start[k]), k     # the pass moved it
    if recipe == "sdlm-batch":
        for k, h in ta.hessian.views.items():
            assert_close(b.ops.to_host(tb.hessian[k]), h, what=f"curvature {k}")


# C5-shaped: the kernel covers the whole input, so the output is 1x1. Fully connected,
# the GPU backend runs it on the full-connection kernels (which it does under the
# simulator only when asked: GPUOps.whole_input_as_full); with one pair left out of the
# table, on the convolution kernels, which must still zero that pair's gradient.
C5_LIKE = (3, 5) if SIMULATOR else (16, 120)  # input maps, output maps
C5_TABLES = {"full": np.ones(C5_LIKE, bool),
             "one-pair-missing": ~np.eye(*C5_LIKE, dtype=bool) | (np.arange(C5_LIKE[1]) > 0)}


@pytest.mark.parametrize("table_name", C5_TABLES)
def test_whole_input_convolution_matches_cpu(table_name, monkeypatch):
    from kernels import conv, full
    from lenet.ops_cpu import CPUOps
    from lenet.ops_gpu import GPUOps
    table = C5_TABLES[table_name]
    assert table.sum() == table.size - (table_name != "full")
    # the kernels of the other path must not run
    unused = (conv, ("conv_forward", "conv_backward", "conv_backward2")) \
        if table_name == "full" else (full, ("full_forward", "full_backward", "full_backward2"))
    for name in unused[1]:
        monkeypatch.setattr(unused[0], name, lambda *a, _n=name: pytest.fail(f"{_n} ran"))
    monkeypatch.setattr(GPUOps, "whole_input_as_full", True)
    (c, m), n = C5_LIKE, 3 if SIMULATOR else 1001
    rng = np.random.default_rng(12)
    x = rng.uniform(-1.2, 1.2, (n, c, 5, 5)).astype(np.float32)
    weight = rng.uniform(-0.3, 0.3, (m, c, 5, 5)).astype(np.float32)
    bias = rng.uniform(-0.3, 0.3, m).astype(np.float32)
    d = rng.uniform(-1, 1, (n, m, 1, 1)).astype(np.float32)
    h = rng.uniform(0, 1, (n, m, 1, 1)).astype(np.float32)
    cpu, gpu = CPUOps(), GPUOps()
    f64 = [a.astype(np.float64) for a in (x, weight, bias, d, h)]
    out_cpu = cpu.conv(*f64[:3], cpu.prepare_table(table))
    table_gpu = gpu.prepare_table(table)
    xg, wg, bg, dg, hg = (gpu.asarray(a) for a in (x, weight, bias, d, h))
    out_gpu = gpu.conv(xg, wg, bg, table_gpu)
    assert_close(gpu.to_host(out_gpu), out_cpu, what="out")
    out32 = gpu.asarray(out_cpu.astype(np.float32))  # the backward takes float32 outputs
    for name, backward, dh, dh64 in (("d", "conv_backward", dg, f64[3]),
                                     ("h", "conv_backward2", hg, f64[4])):
        want = getattr(cpu, backward)(dh64, out_cpu.astype(np.float32).astype(np.float64),
                                      f64[0], f64[1], cpu.prepare_table(table))
        got = getattr(gpu, backward)(dh, out32, xg, wg, table_gpu)
        for what, g, w in zip(("x", "weight", "bias"), got, want, strict=True):
            assert_close(gpu.to_host(g), w, what=f"{name}{what}")
        if table_name != "full":
            assert np.all(gpu.to_host(got[1])[0, 0] == 0)  # the pair left out
        assert getattr(gpu, backward)(dh, out32, xg, wg, table_gpu, False)[0] is None


def test_fused_paper_steps_match_cpu():
    # the paper's recipe on the GPU: the curvature through the fused step (order 2), the
    # per-pattern steps in one launch of kernels/sdlm.py; the CPU model takes them layer by
    # layer through the reference ops, in float64, from the same float32 parameters,
    # curvature patterns and order. Each phase of the kernel is tests/test_sdlm.py's
    from lenet.train import Trainer
    # float32 rounding grows over sequential steps, doubling about every 4 patterns
    # (measured with the float32 CPU loop against float64): 16 leave a 20x margin
    n = 2 if SIMULATOR else 16
    x = images(n, seed=8)
    labels = np.random.default_rng(9).integers(0, 10, n)
    a = LeNet5(device="cpu", seed=4, dtype=np.float64, init="sqrt-fan-in")
    b = LeNet5(device="gpu")
    start = {k: v.astype(np.float32) for k, v in a.parameters().items()}
    b.set_parameters(start)
    a.set_parameters({k: v.astype(np.float64) for k, v in start.items()})
    ta, tb = (Trainer(m, x, labels, recipe="paper", seed=2, mu=0.2, fused=m is b)
              for m in (a, b))
    assert tb.fused and not ta.fused  # the GPU takes the fused kernel, the CPU the loop
    (loss_a, err_a), (loss_b, err_b) = ta.train_pass(), tb.train_pass()
    assert abs(loss_b - loss_a) <= 1e-5 * abs(loss_a)
    assert err_b == err_a
    pa, pb = a.parameters(), b.parameters()
    for k in pa:
        assert_close(pb[k], pa[k], what=k)
        # every parameter moved, by the reference's step (a looser bound: a step is a
        # small difference of float32 numbers)
        step_a, step_b = pa[k] - start[k], pb[k] - start[k]
        assert np.abs(step_a).max() > 0, k
        assert ref_relative_error(step_b, step_a) < 1e-3, k


@pytest.mark.skipif(SIMULATOR, reason="the simulator runs blocks one after another, so its "
                    "atomics cannot race: bit-reproducibility is a property of a real GPU")
def test_gpu_training_is_reproducible():
    # the same seed on the same device repeats a run bit for bit
    from lenet.train import Trainer
    n = 256
    x = images(n, seed=9)
    labels = np.random.default_rng(10).integers(0, 10, n)
    runs = []
    for _ in range(2):
        model = LeNet5(device="gpu", seed=4)
        Trainer(model, x, labels, recipe="sgd", batch_size=16, seed=2).train_pass()
        runs.append(model.parameters())
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k], err_msg=k)


@pytest.mark.skipif(SIMULATOR, reason="CuPy needs a real GPU; the simulator cannot run it")
def test_cupy_input_without_host_copy(pair):
    cp = pytest.importorskip("cupy", reason="CuPy is not installed")
    cpu, gpu = pair
    x = images(257, seed=8)
    y = gpu.forward(cp.asarray(x))
    assert_close(np.asarray(cp.asarray(y).get()), cpu.forward(x), what="penalties from CuPy")


@pytest.mark.skipif(SIMULATOR, reason="the MNIST test set is too large for the simulator")
def test_same_predictions_on_mnist_test_set(pair, mnist_dir):
    from lenet.data import load_mnist, preprocess
    cpu, gpu = pair
    images_, _ = load_mnist("test", mnist_dir)
    x = preprocess(images_)
    np.testing.assert_array_equal(gpu.predict(x), cpu.predict(x))
