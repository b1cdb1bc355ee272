"""The compiled CPU path of the paper's recipe (kernels/sdlm_cpu.py) against the NumPy
layer-by-layer loop it replaces (lenet.train.Trainer(fused=False), kernels/reference.py)."""

import math

import numpy as np
import pytest

from kernels import sdlm_cpu
from kernels.tolerance import assert_close, relative_error
from lenet import LeNet5
from lenet.architecture import C3_TABLE, RBF_CENTERS
from lenet.train import Trainer


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(np.float32)


def start_pair(dtype, seed=4):
    """The reference model in float64 and the model under test in `dtype`, both from the
    same float32 parameters (Lush's initialisation: biases 0, coefficients 0.5)."""
    start = LeNet5(seed=seed, init="lush").parameters()
    ref, fast = LeNet5(dtype=np.float64), LeNet5(dtype=dtype)
    ref.set_parameters({k: v.astype(np.float64) for k, v in start.items()})
    fast.set_parameters({k: v.astype(dtype) for k, v in start.items()})
    return start, ref, fast


@pytest.mark.parametrize("loss", ["mse", "map"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_cpu_steps_match_the_loop(dtype, loss):
    # one pass of per-pattern steps, same curvature patterns and order; float64 agrees
    # to rounding; float32 to the project tolerance, its rounding growing over
    # sequential steps (about 2x every 4 patterns, tests/test_gpu_model.py), so 12
    n = 6 if dtype == np.float64 else 12
    x, labels = images(n, seed=8), np.random.default_rng(9).integers(0, 10, n)
    start, ref, fast = start_pair(dtype)
    ta, tb = (Trainer(m, x, labels, recipe="paper", seed=2, mu=0.3, loss=loss, j=20,
                      fused=m is fast) for m in (ref, fast))
    assert tb.fused and not ta.fused  # the CPU backend takes the compiled steps by default
    (loss_a, err_a), (loss_b, err_b) = ta.train_pass(), tb.train_pass()
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    assert abs(loss_b - loss_a) <= tolerance * abs(loss_a)
    assert err_b == err_a
    pa, pb = ref.parameters(), fast.parameters()
    for k in pa:
        assert_close(pb[k], pa[k], dtype=dtype, what=k)
        step_a, step_b = pa[k] - start[k], pb[k] - start[k]
        assert np.abs(step_a).max() > 0, k  # every parameter moved
        # the step itself, a small difference of float32 numbers: a looser bound there
        assert relative_error(step_b, step_a) < (1e-9 if dtype == np.float64 else 1e-3), k


def test_fused_cpu_steps_repeat_bit_for_bit():
    x, labels = images(20, seed=3), np.random.default_rng(4).integers(0, 10, 20)
    runs = []
    for _ in range(2):
        model = LeNet5(seed=1, init="lush")
        Trainer(model, x, labels, recipe="paper", seed=5, mu=0.5).train_pass()
        runs.append(model.parameters())
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k], err_msg=k)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_penalties_match_the_forward(dtype):
    # the compiled forward (the CPU model's default path), on an awkward batch, against
    # the layer-by-layer NumPy forward in float64
    model = LeNet5(seed=6, init="sqrt-fan-in", dtype=dtype)
    assert model.path == "fused"
    x = images(7, seed=2).astype(dtype)
    out = model.forward(x)
    reference = LeNet5(dtype=np.float64, path="layers")
    reference.set_parameters({k: v.astype(np.float64) for k, v in model.parameters().items()})
    assert_close(out, reference.forward(x.astype(np.float64)), dtype=dtype, what="penalties")


def test_tanh32_is_within_4e7_of_tanh():
    x = np.concatenate([np.linspace(-12, 12, 200_001), [0.0, -0.0, 1e-30, 7.9, 8.0, 1e30],
                        10.0 ** np.linspace(-20, 1.3, 2001)]).astype(np.float32)
    out = np.array([sdlm_cpu.tanh32_jit(v) for v in x[::7]] +
                   [sdlm_cpu.tanh32_jit(v) for v in x[-2001:]], np.float32)
    xs = np.concatenate([x[::7], x[-2001:]]).astype(np.float64)
    exact = np.tanh(xs)
    rel = np.abs(out - exact) / np.maximum(np.abs(exact), 1e-300)
    assert rel.max() < 4e-7, (rel.max(), xs[rel.argmax()])
    assert math.isnan(sdlm_cpu.tanh32_jit(np.float32("nan")))
    assert sdlm_cpu.tanh32_jit(np.float32("inf")) == 1.0
    assert sdlm_cpu.tanh32_jit(np.float32("-inf")) == -1.0


def _args(dtype=np.float32, n=3):
    model = LeNet5(seed=0, init="lush")
    params = model.parameters()
    hess = {k: np.zeros_like(v) for k, v in params.items()}
    return [params, hess, np.zeros(2), images(n), np.arange(n, dtype=np.int32) % 10,
            np.arange(n, dtype=np.int32), 0, n, 5e-4, 1.0, "mse", 10.0,
            RBF_CENTERS.astype(np.float32), C3_TABLE]


def test_a_label_outside_the_classes_makes_the_loss_nan():
    args = _args()
    args[4] = np.array([0, 11, 2], np.int32)
    sdlm_cpu.sdlm_steps_cpu(*args)
    assert math.isnan(args[2][0])


@pytest.mark.parametrize("change, message", [
    (lambda a: a[0].update({"C5.weight": np.zeros((120, 16, 5, 4), np.float32)}),
     r"C5.weight must be a C-contiguous float32 array of shape \(120, 16, 5, 5\)"),
    (lambda a: a[1].update({"F6.bias": np.zeros(84, np.float64)}), "h F6.bias must be"),
    (lambda a: a.__setitem__(5, np.array([0, 1, 3], np.int32)), "order indexes outside"),
    (lambda a: a.__setitem__(7, 4), r"patterns 0..4 outside the order of 3"),
    (lambda a: a.__setitem__(10, "hinge"), "kind 'hinge'"),
    (lambda a: a.__setitem__(2, np.zeros(2, np.float32)), "stats must be"),
])
def test_steps_refuse_what_does_not_fit(change, message):
    args = _args()
    change(args)
    with pytest.raises(ValueError, match=message):
        sdlm_cpu.sdlm_steps_cpu(*args)
