"""The model: forward, gradients against finite differences and the reference, parameter
validation, input checks (architecture facts: tests/test_architecture.py; checkpoints:
tests/test_checkpoint.py)."""

import numpy as np
import pytest

from lenet import C3_TABLE, RBF_CENTERS, LeNet5
from lenet.data import preprocess
from lenet.kernels import reference as ref
from lenet.kernels.architecture import PARAMETER_SHAPES
from lenet.kernels.tolerance import assert_close
from lenet.train import Trainer


def images(n, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(dtype)


def test_layer_output_shapes():
    m = LeNet5(seed=0)
    acts = m.forward_all(m.prepare_images(images(3, dtype=np.float32)))
    shapes = [tuple(a.shape) for a in acts]
    assert shapes == [(3, 1, 32, 32), (3, 6, 28, 28), (3, 6, 14, 14), (3, 16, 10, 10),
                      (3, 16, 5, 5), (3, 120), (3, 84), (3, 10)]


def test_initialisation_follows_fan_in():
    p = LeNet5(seed=3).parameters()
    assert np.abs(p["C1.weight"]).max() <= 2.4 / 25
    assert np.abs(p["F6.weight"]).max() <= 2.4 / 120
    assert np.abs(p["C5.weight"]).max() <= 2.4 / 400
    per_map = np.abs(p["C3.weight"]).max(axis=(1, 2, 3))
    assert np.all(per_map <= 2.4 / (25 * C3_TABLE.sum(axis=0)))
    assert np.all(p["C3.weight"][~C3_TABLE.T] == 0)
    assert np.abs(p["F6.weight"]).max() > 0.8 * 2.4 / 120  # really spread, not tiny
    assert not np.array_equal(p["C5.weight"], LeNet5(seed=4).parameters()["C5.weight"])
    assert np.array_equal(p["C5.weight"], LeNet5(seed=3).parameters()["C5.weight"])


@pytest.mark.parametrize("init, scale", [("fan-in", lambda f: f),
                                         ("sqrt-fan-in", lambda f: np.sqrt(f))])
def test_initialisation_ranges(init, scale):
    # every parameter divided by its bound 2.4 / scale(F) is uniform on [-1, 1]: none
    # beyond 1, and the mean magnitude of all 60,000 is 1/2 (standard error 0.0012).
    # F counted here from the paper's layer table, not from lenet.kernels.architecture
    fans = {"C1": 25, "S2": 4, "S4": 4, "C5": 400, "F6": 120}
    p = LeNet5(seed=5, init=init).parameters()
    normalised = []
    for name, value in p.items():
        layer = name.split(".")[0]
        if layer == "C3":  # per map: 25 times the number of connected S2 maps
            bound = 2.4 / scale(25.0 * C3_TABLE.sum(axis=0))
            bound = bound.reshape((16,) + (1,) * (value.ndim - 1))
            value = value / bound
            value = value[C3_TABLE.T] if value.ndim == 4 else value
        else:
            value = value / (2.4 / scale(float(fans[layer])))
        normalised.append(value.ravel())
    normalised = np.abs(np.concatenate(normalised))
    assert normalised.size == 60_000
    assert normalised.max() <= 1.0
    assert abs(normalised.mean() - 0.5) < 0.006
    assert np.all(p["C3.weight"][~C3_TABLE.T] == 0)


def test_initialisation_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="init must be one of"):
        LeNet5(init="xavier")


# ---------------------------------------------------------------- forward

def test_forward_matches_layer_by_layer_reference():
    m = LeNet5(seed=1, dtype=np.float64)
    p = m.parameters()
    x = images(4)
    a = ref.squash_ref(ref.conv_ref(x, p["C1.weight"], p["C1.bias"], np.ones((1, 6), bool)))
    a = ref.squash_ref(ref.subsample_ref(a, p["S2.coef"], p["S2.bias"]))
    a = ref.squash_ref(ref.conv_ref(a, p["C3.weight"], p["C3.bias"], C3_TABLE))
    a = ref.squash_ref(ref.subsample_ref(a, p["S4.coef"], p["S4.bias"]))
    a = ref.squash_ref(ref.conv_ref(a, p["C5.weight"], p["C5.bias"], np.ones((16, 120), bool)))
    a = ref.squash_ref(ref.full_ref(a.reshape(4, 120), p["F6.weight"], p["F6.bias"]))
    expected = ref.rbf_ref(a, RBF_CENTERS)
    np.testing.assert_allclose(m.forward(x), expected, rtol=1e-12)
    np.testing.assert_array_equal(m.predict(x), expected.argmin(axis=1))
    np.testing.assert_allclose(m.forward(x[:, 0]), expected, rtol=1e-12)  # (N,32,32)


def test_forward_in_chunks_equals_one_batch():
    # each image's penalties are computed by the same code whatever batch it comes in
    # (and whichever thread takes it): slices give the whole batch's rows bit for bit
    m = LeNet5(seed=2)
    x = images(37, dtype=np.float32)
    whole = m.forward(x)
    parts = np.concatenate([m.forward(x[:3]), m.forward(x[3:20]), m.forward(x[20:])])
    np.testing.assert_array_equal(parts, whole)
    assert_close(whole, ref.forward_ref(m.parameters(), x)["penalties"], np.float32,
                 "penalties")


def test_forward_rejects_bad_images():
    m = LeNet5(seed=0)
    with pytest.raises(ValueError, match=r"\(N,1,32,32\)"):
        m.forward(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(TypeError, match="preprocess"):
        m.forward(np.zeros((2, 32, 32), np.uint8))


# ---------------------------------------------------------------- gradients

# An untrained net gives every class a penalty near 84; with the default j = 10
# MAP's extra terms would be ~1e-33 and the test would check MSE again. j = 90
# puts exp(-j) among the exp(-y_i), so every term of eq. 9 counts.
MAP_TEST_J = 90.0


def test_map_test_setting_is_not_trivial():
    m = LeNet5(seed=1, dtype=np.float64)
    acts = m.forward_all(m.prepare_images(images(3, seed=6)))
    _, dy, hy = ref.loss_ref(acts[-1], np.array([3, 7, 1]), "map", MAP_TEST_J)
    _, dy_mse, _ = ref.loss_ref(acts[-1], np.array([3, 7, 1]), "mse")
    assert hy.max() > 1e-3 and np.abs(dy - dy_mse).max() > 1e-3


@pytest.mark.parametrize("loss", ["mse", "map"])
def test_gradients_match_finite_differences(loss):
    r = np.random.default_rng(5)
    m = LeNet5(seed=1, dtype=np.float64)
    x, labels = images(3, seed=6), np.array([3, 7, 1])
    value, grads = m.gradients(x, labels, loss, MAP_TEST_J)
    p = m.parameters()
    assert set(grads) == set(p) and all(grads[k].shape == p[k].shape for k in p)
    assert np.all(grads["C3.weight"][~C3_TABLE.T] == 0)
    eps = 1e-6
    for name in p:
        picks = [tuple(r.integers(0, s) for s in p[name].shape) for _ in range(3)]
        if name == "C3.weight":  # connected pairs only: off-table ones are not parameters
            picks = [(0, 0, 1, 2), (15, 5, 4, 4), (6, 2, 0, 3)]
        for i in picks:
            q = {k: v.copy() for k, v in p.items()}
            q[name][i] += eps
            m.set_parameters(q)
            hi, _ = m.gradients(x, labels, loss, MAP_TEST_J)
            q[name][i] -= 2 * eps
            m.set_parameters(q)
            lo, _ = m.gradients(x, labels, loss, MAP_TEST_J)
            numeric = (hi - lo) / (2 * eps)
            assert abs(numeric - grads[name][i]) <= 1e-6 * max(1.0, abs(numeric)), (name, i)
        m.set_parameters(p)
    assert abs(value - m.gradients(x, labels, loss, MAP_TEST_J)[0]) == 0


@pytest.mark.parametrize("loss, j", [("mse", 10.0), ("map", MAP_TEST_J)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradients_and_curvature_match_the_reference(dtype, loss, j):
    # the fused step (kernels/cpu.py) against kernels/reference.py, 37 images (three
    # chunks of the step); the same again in chunks of GRADIENT_CHUNK images weighted by
    # their sizes
    m = LeNet5(seed=4, dtype=dtype, init="sqrt-fan-in")
    x, labels = images(37, seed=8, dtype=dtype), np.random.default_rng(9).integers(0, 10, 37)
    p = {k: v.astype(np.float64) for k, v in m.parameters().items()}
    fwd = ref.forward_ref(p, x, labels, loss, j)
    grads, curvature = (ref.backward_ref(p, fwd, order) for order in (1, 2))
    value, g = m.gradients(x, labels, loss, j)
    h = m.second_derivatives(x, labels, loss, j)
    assert abs(value - fwd["loss"]) <= (1e-12 if dtype == np.float64 else 1e-6) * fwd["loss"]
    for name, shape in PARAMETER_SHAPES.items():
        for what, got, expected in (("gradient", g, grads), ("curvature", h, curvature)):
            assert got[name].shape == shape and got[name].dtype == dtype, name
            assert np.abs(expected[name]).max() > 0, name
            assert_close(got[name], expected[name], dtype, f"{what} {name}")
    assert np.all(g["C3.weight"][~C3_TABLE.T] == 0) and np.all(h["C3.weight"][~C3_TABLE.T] == 0)
    import lenet.model
    lenet.model.GRADIENT_CHUNK, chunk = 16, lenet.model.GRADIENT_CHUNK
    try:
        value_c, g_c = m.gradients(x, labels, loss, j)
        h_c = m.second_derivatives(x, labels, loss, j)
    finally:
        lenet.model.GRADIENT_CHUNK = chunk
    assert abs(value_c - fwd["loss"]) <= (1e-12 if dtype == np.float64 else 1e-6) * fwd["loss"]
    for name in PARAMETER_SHAPES:
        assert_close(g_c[name], grads[name], dtype, f"chunked gradient {name}")
        assert_close(h_c[name], curvature[name], dtype, f"chunked curvature {name}")


def test_gradients_do_not_pile_up_workspaces():
    # one workspace per power of two of images: 40 calls on batch sizes 1..100 make at
    # most 8 (1, 2, 4, ..., 128), however many sizes were asked for
    m = LeNet5(seed=0)
    sizes = np.random.default_rng(3).integers(1, 101, 40)
    x, labels = images(100, dtype=np.float32), np.arange(100) % 10
    made = []
    workspace = m.ops.workspace
    m.ops.workspace = lambda batch: made.append(batch) or workspace(batch)
    for n in sizes:
        m.gradients(x[:n], labels[:n])
    assert set(made) <= {1, 2, 4, 8, 16, 32, 64, 128}
    assert all(b >= n and b < 2 * n for b, n in zip(made, sizes, strict=True))
    assert len(m.ops._workspaces) == len(set(made)) <= 8 < len(set(sizes.tolist()))


def test_cpu_backend_implements_the_interface():
    from lenet.backend import Backend
    from lenet.ops_cpu import CPUOps
    ops = LeNet5().ops
    assert isinstance(ops, CPUOps) and isinstance(ops, Backend)
    assert Backend.__abstractmethods__ and not CPUOps.__abstractmethods__
    for name in Backend.__abstractmethods__:
        assert callable(getattr(ops, name)), name
        assert getattr(CPUOps, name) is not getattr(Backend, name), name


def test_second_derivatives_of_f6_are_gauss_newton():
    # For the MSE loss, d2E/dx6^2 = 2 exactly; each F6 weight feeds one unit, so
    # its Gauss-Newton curvature is mean_n 2 f'(a6)^2 x5^2.
    m = LeNet5(seed=2, dtype=np.float64)
    x, labels = images(5, seed=7), np.arange(5)
    acts = m.forward_all(m.prepare_images(x))
    x5, x6 = acts[5], acts[6]
    fprime = ref.squash_derivative_ref(x6)
    expected = (2 * fprime[:, :, None] ** 2 * x5[:, None, :] ** 2).mean(axis=0)
    h = m.second_derivatives(x, labels, "mse")
    np.testing.assert_allclose(h["F6.weight"], expected, rtol=1e-12)
    for loss in ("mse", "map"):
        h = m.second_derivatives(x, labels, loss, MAP_TEST_J)
        assert all(v.min() >= 0 for v in h.values()), loss
        assert np.all(h["C3.weight"][~C3_TABLE.T] == 0)


# ---------------------------------------------------- parameters and files

def test_set_parameters_rejects_bad_input():
    m = LeNet5(seed=0)
    good = m.parameters()
    cases = [
        ({k: v for k, v in good.items() if k != "F6.bias"}, "missing \\['F6.bias'\\]"),
        ({**good, "F7.weight": good["F6.weight"]}, "unknown \\['F7.weight'\\]"),
        ({**good, "C1.weight": good["C1.weight"][:5]}, "C1.weight has shape"),
        ({**good, "C1.bias": good["C1.bias"].astype(np.int64)}, "C1.bias has dtype int64"),
        ({**good, "S2.coef": np.full(6, np.nan, np.float32)}, "S2.coef contains NaN"),
        # finite in float64, infinite in the model's float32
        ({**good, "F6.bias": np.full(84, 1e39)}, "F6.bias holds values beyond float32's range"),
    ]
    c3 = good["C3.weight"].copy()
    c3[0, 3] = 0.5  # S2 map 3 -> C3 map 0 is not in the table
    cases.append(({**good, "C3.weight": c3}, "S2 map 3 to C3 map 0"))
    for params, message in cases:
        with pytest.raises(ValueError, match=message):
            m.set_parameters(params)
    np.testing.assert_array_equal(m.parameters()["C1.weight"], good["C1.weight"])
    np.testing.assert_array_equal(m.parameters()["F6.bias"], good["F6.bias"])
    wide = LeNet5(seed=0, dtype=np.float64)    # there they fit
    wide.set_parameters({**good, "F6.bias": np.full(84, 1e39)})
    assert wide.parameters()["F6.bias"][0] == 1e39


def test_device_choice():
    assert LeNet5(device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="device"):
        LeNet5(device="tpu")
    with pytest.raises(ValueError, match="float32 only"):
        LeNet5(device="gpu", dtype=np.float64)


def test_set_parameters_copies():
    # training updates the model's arrays in place: never the caller's dict
    m = LeNet5(seed=0)
    params = m.parameters()
    m.set_parameters(params)
    m.params["F6.bias"] += 1.0
    assert not np.array_equal(params["F6.bias"], m.parameters()["F6.bias"])


# ------------------------------------------------------- bad and empty input

def test_forward_refuses_nonfinite_images_naming_the_first():
    m = LeNet5(seed=0)
    x = images(9, dtype=np.float32)
    x[7, 0, 3, 4] = np.inf
    x[5, 0, 31, 0] = np.nan
    with pytest.raises(ValueError, match="^image 5 contains NaN or infinite values"):
        m.forward(x)
    m.max_batch = 3  # in chunks the index is still the image's in the whole batch
    with pytest.raises(ValueError, match="^image 5 contains NaN"):
        m.predict(x)
    with pytest.raises(ValueError, match="^image 0 contains NaN"):
        m.gradients(x[5:6], [3])
    big = images(2)  # float64 finite, but infinite as the model's float32
    big[1, 0, 0, 0] = 1e300
    with pytest.raises(ValueError, match="^image 1 contains NaN or infinite values "
                       r"\(as float32\)"):
        m.forward(big)
    with pytest.raises(ValueError, match="^image 1 is not in the paper's input encoding"):
        LeNet5(seed=0, dtype=np.float64).forward(big)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_images_outside_the_paper_s_encoding_are_refused(device):
    # 0..255 and 0..1 pixels (the usual mistakes: 28% test error for the shipped
    # weights, not an error), refused by every entry point; on the GPU device input too,
    # in forward's stream and in prepare_images (one case: the simulator is slow)
    from numba import cuda
    m = LeNet5(device=device, seed=0)
    digits = np.random.default_rng(2).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    good = preprocess(digits)
    byte = np.pad(digits, ((0, 0), (2, 2), (2, 2))).astype(np.float32)[:, None]
    calls = (m.forward, m.predict, m.forward_all, lambda a: m.gradients(a, [1] * 4),
             lambda a: Trainer(m, a, np.arange(4) % 10))
    for scale, message in [(1.0, "from 0 to 255, none near the background"),
                           (1 / 255, "from 0 to 1, none near the background")]:
        x = good.copy()
        x[2] = byte[2] * scale
        cases = [(x, call) for call in calls]
        if device == "gpu" and scale == 1.0:
            cases += [(cuda.to_device(x), m.forward), (cuda.to_device(x), calls[3])]
        for x_in, call in cases:
            with pytest.raises(ValueError, match=f"^image 2 is not in the paper's input "
                               rf"encoding \(background -0.1, ink 1.175\): its values "
                               f"run {message}; lenet.data.preprocess maps"):
                call(x_in)
    if device == "cpu":
        assert m.predict(good).shape == (4,)


def _address(a):
    """Where a device array's data lies (the simulator's wrap a NumPy array)."""
    cai = getattr(a, "__cuda_array_interface__", None)
    return cai["data"][0] if cai else a._ary.__array_interface__["data"][0]


def test_device_input_is_checked_on_the_device(monkeypatch):
    # the device array itself goes to the check kernel, no copy to the host and back
    from numba import cuda

    from lenet.kernels import inputs
    m = LeNet5(device="gpu", seed=0)
    x = images(3, dtype=np.float32)
    x[2, 0, 5, 5] = -np.inf
    device = cuda.to_device(x)
    checked = []
    launch = inputs.InputCheck.launch    # every device check (first_refused's too)
    monkeypatch.setattr(inputs.InputCheck, "launch",
                        lambda self, a: checked.append(_address(a)) or launch(self, a))
    with pytest.raises(ValueError, match="^image 2 contains NaN or infinite values"):
        m.forward(device)
    with pytest.raises(ValueError, match="^image 0 contains NaN or infinite values"):
        m.gradients(device[2:], cuda.to_device(np.array([1], np.int32)))
    assert checked == [_address(device), _address(device[2:])]


def test_lists_and_tuples_are_arrays_and_scalars_are_refused():
    m = LeNet5(seed=0, dtype=np.float64)
    x = images(2)
    np.testing.assert_array_equal(m.forward(x.tolist()), m.forward(x))
    np.testing.assert_array_equal(m.predict(tuple(x)), m.predict(x))
    loss, _ = m.gradients(x, [3, 7])
    assert loss == m.gradients(x, np.array([3, 7]))[0] == m.gradients(x, (3, 7))[0]
    assert m.second_derivatives(x[:1], [4])["F6.bias"].shape == (84,)
    cases = [(lambda: m.gradients(x[:1], 3), ValueError, r"labels must have shape \(1,\)"),
             (lambda: m.gradients(x, [3.0, 7.0]), TypeError, "labels must be integers"),
             (lambda: m.gradients(x, [True, False]), TypeError, "labels must be integers"),
             (lambda: m.gradients(x, [3, 10]), ValueError, "labels must lie in 0..9"),
             (lambda: m.forward(0.5), ValueError, r"shape \(N,1,32,32\)"),
             (lambda: m.forward("digits"), ValueError, r"shape \(N,1,32,32\)"),
             (lambda: m.forward([x[0], x[1, 0, :5]]), ValueError, r"shape \(N,1,32,32\)"),
             (lambda: m.forward([[["a"] * 32] * 32]), TypeError, "floating point")]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_empty_batches():
    m = LeNet5(seed=0)
    empty = np.zeros((0, 1, 32, 32), np.float32)
    assert m.forward(empty).shape == (0, 10)
    assert m.predict(empty).shape == (0,)
    assert m.forward(np.zeros((0, 32, 32), np.float32)).shape == (0, 10)
    for call in (m.gradients, m.second_derivatives):
        with pytest.raises(ValueError, match="empty batch"):
            call(empty, np.zeros(0, np.int64))
    with pytest.raises(TypeError, match="floating point"):  # checked even when empty
        m.forward(np.zeros((0, 32, 32), np.uint8))


def test_device_inference_allocates_nothing_and_waits_for_its_stream_only(monkeypatch):
    # forward and predict on device input into the caller's buffers: after the first
    # call no device memory is allocated and the device is never synchronized as a whole
    # (the input check and the forward pass are ordered on one stream); the results are
    # the CPU model's
    from numba import cuda

    from lenet.kernels import forward as fused
    from lenet.kernels import inputs
    m = LeNet5(device="gpu", seed=2)
    x = images(4, dtype=np.float32)
    xd = cuda.to_device(x)
    pen, cls = cuda.device_array((4, 10), np.float32), cuda.device_array(4, np.int32)
    m.forward(xd, out=pen)
    m.predict(xd, out=cls)

    def refused(*args, **kwargs):
        raise AssertionError("allocated device memory or synchronized the whole device")

    for module in (fused.cuda, inputs.cuda, cuda):
        for name in ("synchronize", "device_array", "device_array_like", "to_device",
                     "mapped_array", "pinned_array"):
            monkeypatch.setattr(module, name, refused)
    pen.copy_to_device(np.full((4, 10), np.nan, np.float32))   # poisoned
    assert m.forward(xd, out=pen) is pen
    assert m.predict(xd, out=cls) is cls
    monkeypatch.undo()
    cpu = LeNet5(device="cpu", seed=2)
    assert_close(pen.copy_to_host(), cpu.forward(x))
    assert np.array_equal(cls.copy_to_host(), cpu.predict(x))
    bad = x.copy()
    bad[3, 0, 1, 2] = np.nan
    with pytest.raises(ValueError, match="^image 3 contains NaN or infinite values"):
        m.forward(cuda.to_device(bad), out=pen)
    with pytest.raises(ValueError, match="out is float32 .3, 10.; the result is"):
        LeNet5(device="cpu", seed=2).forward(x, out=np.empty((3, 10), np.float32))
    with pytest.raises(ValueError, match="out is >f4 .4, 10.; the result is float32 .4, 10."):
        LeNet5(device="cpu", seed=2).forward(x, out=np.empty((4, 10), ">f4"))
    with pytest.raises(TypeError, match="out must be an array .NumPy, or a device array on "
                       "the GPU., not list"):
        LeNet5(device="cpu", seed=2).forward(x, out=[[0.0] * 10] * 4)
