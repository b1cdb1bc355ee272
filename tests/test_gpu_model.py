"""The GPU model against kernels/reference.py (float64) with the same parameters: forward
and predict (the fused forward), forward_all (GPUOps.activations), gradients and curvature
(the fused step), and whole training passes through the fused step and the fused
per-pattern kernel against tests/trainer_ref.py (their kernels are tested on their own in
tests/test_train_step.py and tests/test_sdlm.py; the fused forward in
tests/test_forward.py).

Runs on a real GPU with thousands of images and in the CUDA simulator (chosen by
conftest.py when there is no GPU) with a few. Interop with CuPy needs a real GPU.
"""

import numpy as np
import pytest
from conftest import SIMULATOR
from trainer_ref import trainer_pass_ref

from lenet import LeNet5
from lenet.kernels import reference as ref
from lenet.kernels.architecture import C3_TABLE, PARAMETER_SHAPES
from lenet.kernels.tolerance import assert_close
from lenet.kernels.tolerance import relative_error as ref_relative_error

N_IMAGES = 2 if SIMULATOR else 3001
# MAP with j = 90 has dy and hy both non-trivial for an untrained net, whose penalties
# are near 84; MSE's hy is 0
LOSSES = ["mse", "map"]


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(np.float32)


def float64(params):
    return {k: v.astype(np.float64) for k, v in params.items()}


@pytest.fixture(scope="module")
def pair():
    cpu = LeNet5(device="cpu", seed=11)
    gpu = LeNet5(device="gpu")
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


def test_forward_and_predict_match_the_reference(pair):
    _, gpu = pair
    x = images(N_IMAGES, seed=1)
    expected = ref.forward_ref(float64(gpu.parameters()), x)
    assert_close(gpu.forward(x), expected["penalties"], what="penalties")
    np.testing.assert_array_equal(gpu.predict(x), expected["classes"])


def test_forward_in_pieces(pair):
    # any split of a batch gives its rows
    _, gpu = pair
    x = images(3, seed=2)
    whole = gpu.forward(x)
    assert_close(np.concatenate([gpu.forward(x[:2]), gpu.forward(x[2:])]), whole,
                 what="penalties in pieces")
    assert_close(whole, ref.forward_ref(float64(gpu.parameters()), x)["penalties"],
                 what="penalties")


def test_forward_all_matches_the_reference(pair):
    # every layer's output through GPUOps.activations, named as forward_ref names them
    from lenet.backend import on_device
    _, gpu = pair
    x = images(N_IMAGES, seed=13)
    expected = ref.forward_ref(float64(gpu.parameters()), x)
    acts = gpu.forward_all(gpu.prepare_images(x))
    names = ("input", "C1", "S2", "C3", "S4", "C5", "F6", "penalties")
    assert len(acts) == len(names)
    for name, a in zip(names, acts, strict=True):
        assert on_device(a), name   # on the device
        host = gpu.ops.to_host(a)
        assert host.dtype == np.float32 and host.shape == expected[name].shape, name
        assert_close(host, expected[name], what=name)


def test_gpu_backend_implements_the_interface(pair):
    from lenet.backend import Backend
    from lenet.ops_gpu import GPUOps
    _, gpu = pair
    assert isinstance(gpu.ops, GPUOps) and isinstance(gpu.ops, Backend)
    assert not GPUOps.__abstractmethods__
    for name in Backend.__abstractmethods__:
        assert getattr(GPUOps, name) is not getattr(Backend, name), name


# the simulator: MAP only (the wrappers do not depend on the loss; the fused step's MSE is
# tests/test_implementations.py's test_gpu_train_step[mse])
@pytest.mark.parametrize("loss", ["map"] if SIMULATOR else LOSSES)
def test_gradients_and_curvature_match_the_reference(pair, loss):
    # through the fused step (kernels/train_step.py) in mode STORE
    _, gpu = pair
    n = 2 if SIMULATOR else 1000
    x = images(n, seed=4)
    labels = np.random.default_rng(5).integers(0, 10, n)
    j = 90.0
    params = float64(gpu.parameters())
    fwd = ref.forward_ref(params, x, labels, loss, j)
    if loss == "map":  # the check below is about MAP, not MSE in disguise
        assert fwd["hy"].max() > 1e-3 / n
    grads, curvature = (ref.backward_ref(params, fwd, order) for order in (1, 2))
    value, g = gpu.gradients(x, labels, loss, j)
    assert abs(value - fwd["loss"]) <= 1e-5 * abs(fwd["loss"])
    h = gpu.second_derivatives(x, labels, loss, j)
    for name, shape in PARAMETER_SHAPES.items():
        for what, got, expected in (("d", g, grads), ("h", h, curvature)):
            assert isinstance(got[name], np.ndarray) and got[name].shape == shape
            assert_close(got[name], expected[name], what=f"{what}{name}")
    assert np.all(g["C3.weight"][~C3_TABLE.T] == 0) and np.all(h["C3.weight"][~C3_TABLE.T] == 0)


@pytest.mark.parametrize("recipe", ["sgd", "sdlm-batch"])
def test_fused_training_pass_matches_the_reference(recipe):
    # the same recipe, seed and data: the GPU through the workspace's fused step (and, for
    # sdlm-batch, its fused curvature estimate), the reference in float64 over the same
    # order. A few steps only: over hundreds of momentum steps float32 rounding
    # differences grow (seen on an H100: 1.4e-4 after 256 steps)
    from lenet.train import Trainer
    n = 3 if SIMULATOR else 40
    x = images(n, seed=6)
    labels = np.random.default_rng(7).integers(0, 10, n)
    b = LeNet5(device="gpu", seed=3)
    start = float64(b.parameters())
    batch = n if SIMULATOR else 16     # on a GPU: two full steps and a partial one
    settings = dict(recipe=recipe, batch_size=batch, seed=1,
                    **({"mu": 0.1} if recipe == "sdlm-batch" else {}))
    expected, out = trainer_pass_ref(start, x, labels, **settings)
    tb = Trainer(b, x, labels, **settings)
    assert tb.workspace is not None
    loss_b, err_b = tb.train_pass()
    assert abs(loss_b - out["loss"]) <= 1e-5 * abs(out["loss"]) and err_b == out["error"]
    pb = b.parameters()
    for k in expected:
        assert_close(pb[k], expected[k], what=k)
        assert not np.array_equal(pb[k], start[k]), k     # the pass moved it
    if recipe == "sdlm-batch":
        for k, h in out["hessian"].items():
            assert_close(b.ops.to_host(tb.hessian[k]), h, what=f"curvature {k}")


def test_fused_paper_steps_match_the_reference():
    # the paper's recipe on the GPU: the curvature through the fused step (order 2), the
    # per-pattern steps in one launch of kernels/sdlm.py; the reference takes them in
    # float64 from the same float32 parameters, curvature patterns and order. Each phase
    # of the kernel is tests/test_sdlm.py's
    from lenet.train import Trainer
    # float32 rounding grows over sequential steps, doubling about every 4 patterns
    # (measured with the float32 CPU loop against float64): 16 leave a 20x margin
    n = 2 if SIMULATOR else 16
    x = images(n, seed=8)
    labels = np.random.default_rng(9).integers(0, 10, n)
    b = LeNet5(device="gpu", seed=4, init="sqrt-fan-in")
    start = float64(b.parameters())
    settings = dict(recipe="paper", seed=2, mu=0.2)
    pa, out = trainer_pass_ref(start, x, labels, **settings)
    loss_b, err_b = Trainer(b, x, labels, **settings).train_pass()
    assert abs(loss_b - out["loss"]) <= 1e-5 * abs(out["loss"])
    assert err_b == out["error"]
    pb = b.parameters()
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


# ------------------------------------------------- what a review of the GPU path found

def test_device_labels_are_checked_as_host_labels_are(pair):
    gpu = pair[1]
    # out-of-range labels as a device array gave a NaN loss (out-of-bounds reads on a GPU)
    from numba import cuda

    from lenet.train import Trainer, error_rate
    x = images(4, seed=3)
    for bad, error, message in ((np.array([1, 2, 10, 3], np.int32), ValueError,
                                 "labels must lie in 0..9"),
                                (np.array([1, 2, -1, 3], np.int32), ValueError,
                                 "labels must lie in 0..9"),
                                (np.array([1., 2., 3., 4.], np.float32), TypeError,
                                 "labels must be integers")):
        for call in (lambda labels: gpu.gradients(x, labels),
                     lambda labels: Trainer(gpu, x, labels, recipe="sgd", batch_size=4),
                     lambda labels: error_rate(gpu, x, labels)):
            with pytest.raises(error, match=message):
                call(cuda.to_device(bad))


def test_forward_all_takes_what_forward_takes_on_both_devices(pair):
    cpu, gpu = pair
    x = images(3, seed=4)
    for model in (gpu, cpu):
        acts = model.forward_all(x)          # NumPy images, not prepared: as forward takes them
        np.testing.assert_allclose(model.ops.to_host(acts[-1]), cpu.forward(x), rtol=1e-5)
        with pytest.raises(TypeError, match="images must be floating point"):
            model.forward_all(x.astype(np.int64))
        assert len(model.forward_all(x[:, 0])) == 8        # (N,32,32) on both
        # each call's arrays are the caller's: another call does not write them
        first = [model.ops.to_host(a) for a in acts]
        model.forward_all(images(3, seed=5))
        for a, was in zip(acts, first, strict=True):
            np.testing.assert_array_equal(model.ops.to_host(a), was)


def test_an_empty_device_batch_answers_on_the_device_and_checks_out(pair):
    gpu = pair[1]
    from numba import cuda
    empty = cuda.to_device(np.zeros((0, 1, 32, 32), np.float32))
    y = gpu.forward(empty)
    assert not isinstance(y, np.ndarray) and tuple(y.shape) == (0, 10)
    classes = gpu.predict(empty)
    assert not isinstance(classes, np.ndarray) and classes.dtype == np.int32
    with pytest.raises(ValueError, match=r"out is float32 \(5, 3\); the result is float32 "
                                         r"\(0, 10\)"):
        gpu.forward(empty, out=cuda.to_device(np.zeros((5, 3), np.float32)))


def test_a_cpu_model_refuses_device_arrays_in_one_line():
    from numba import cuda
    model = LeNet5(device="cpu")
    x = images(2, seed=5)
    for call in (lambda: model.forward(cuda.to_device(x)),
                 lambda: model.gradients(x, cuda.to_device(np.array([1, 2], np.int32))),
                 lambda: model.forward_all(cuda.to_device(x))):
        with pytest.raises(TypeError, match="a device array, and this model runs on the CPU"):
            call()
