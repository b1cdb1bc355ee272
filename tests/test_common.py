"""kernels/common.py: kernels named by their place in the source tree
(kernels.<module>.<function>) and listed for the compile census, the @kernel decorator's
refusals, the argument check every simulated launch makes against a kernel's signature,
the launchers' device-array checks, cdiv, and through_squash against the derivative of
A tanh(S a) worked out in float64."""

import os

import numpy as np
import pytest
from numba import cuda

from lenet.kernels import (  # noqa: F401  (every kernel module: KERNELS complete)
    backward,
    common,
    distort,
    forward,
    inputs,
    sdlm,
    train_step,
)
from lenet.kernels.architecture import SQUASH_A, SQUASH_S

KERNELS_DIR = os.path.dirname(os.path.abspath(common.__file__))


def test_every_kernel_is_named_by_its_module_and_function():
    assert len(common.KERNELS) > 20
    names = [k.name for k in common.KERNELS]
    assert len(set(names)) == len(names)
    for k in common.KERNELS:
        top, module, function = k.name.split(".")
        assert top == "kernels" and function == k.py_func.__name__ == k.__name__, k.name
        assert os.path.isfile(os.path.join(KERNELS_DIR, f"{module}.py")), k.name
    # under lenet.kernels too (the installed name), the source tree's name
    assert forward.forward_kernel.name == "kernels.forward.forward_kernel"
    assert forward.forward_kernel.py_func.__module__ == "lenet.kernels.forward"
    assert repr(sdlm.sdlm_kernel) == "<Kernel kernels.sdlm.sdlm_kernel>"


@pytest.fixture
def scratch_kernels(monkeypatch):
    """KERNELS emptied for the test: its kernels stay out of the compile census."""
    monkeypatch.setattr(common, "KERNELS", [])
    return common


def test_the_decorator_registers_and_refuses(scratch_kernels):
    @common.kernel("void(float32[::1], int32)", allow={"float64": "a reason"}, fastmath=True)
    def fill(x, n):
        i = cuda.grid(1)
        if i < x.shape[0]:
            x[i] = n
    assert common.KERNELS == [fill]
    assert fill.name == "test_common.fill"   # outside lenet.kernels: its module's own name
    assert fill.allow == {"float64": "a reason"} and fill.options == {"fastmath": True}
    with pytest.raises(ValueError, match="kernel: need signatures"):
        common.kernel()
    with pytest.raises(ValueError, match=r"allow keys are \('float64', 'local_memory', "
                                         r"'spills'\)"):
        common.kernel("void(int32)", allow={"registers": "no"})


FILL = "void(float32[::1], int32, float32, boolean)"


@pytest.mark.parametrize("args, problem", [
    (lambda: (np.zeros(4, np.float32), 1, 1.0, True), "x is a ndarray, not a device array"),
    (lambda: ([0.0] * 4, 1, 1.0, True), "x is a list, not a device array"),
    (lambda: (cuda.to_device(np.zeros(4)), 1, 1.0, True),
     "x is float64 1-D, expected float32 1-D"),
    (lambda: (cuda.to_device(np.zeros((2, 2), np.float32)), 1, 1.0, True),
     "x is float32 2-D, expected float32 1-D"),
    (lambda: (cuda.to_device(np.zeros(8, np.float32))[::2], 1, 1.0, True),
     "x is not C-contiguous"),
    (lambda: (cuda.to_device(np.zeros(4, np.float32)), 1.0, 1.0, True),
     r"n is float, expected an integer \(int32\)"),
    (lambda: (cuda.to_device(np.zeros(4, np.float32)), True, 1.0, True),
     r"n is bool, expected an integer \(int32\)"),
    (lambda: (cuda.to_device(np.zeros(4, np.float32)), 1, "1", True),
     r"v is str, expected a number \(float32\)"),
    (lambda: (cuda.to_device(np.zeros(4, np.float32)), 1, 1.0, 1), "b is int, expected a bool"),
    (lambda: (cuda.to_device(np.zeros(4, np.float32)), 1, 1.0), "3 arguments for 4 parameters"),
])
def test_arguments_that_do_not_fit_the_signature_are_named(scratch_kernels, args, problem):
    @common.kernel(FILL)
    def fill(x, n, v, b):
        pass
    with pytest.raises(TypeError, match=f"^{fill.name}: arguments do not fit its signature: "
                                        f"{problem}$"):
        fill.check_args(args())


def test_arguments_that_fit_pass_numpy_scalars_included(scratch_kernels):
    @common.kernel(FILL)
    def fill(x, n, v, b):
        pass
    x = cuda.to_device(np.zeros(4, np.float32))
    fill.check_args((x, np.int32(3), np.float32(0.5), np.bool_(False)))
    fill.check_args((x, 3, 2, True))     # an int is a number


def test_a_simulated_launch_checks_its_arguments_first(scratch_kernels):
    @common.kernel("void(float32[::1], int32)")
    def fill(x, n):
        i = cuda.grid(1)
        if i < x.shape[0]:
            x[i] = n
    x = cuda.to_device(np.zeros(5, np.float32))
    if common.config.ENABLE_CUDASIM:
        with pytest.raises(TypeError, match="n is float, expected an integer"):
            fill[1, 8](x, 2.0)
        assert not x.copy_to_host().any()     # refused before it ran
    fill[1, 8](x, 7)
    np.testing.assert_array_equal(x.copy_to_host(), np.full(5, 7, np.float32))


@pytest.mark.parametrize("a, message", [
    (lambda: np.zeros((2, 3), np.float32), "x is a host array; pass a device array"),
    (lambda: [1, 2], "x is a list, not a device array"),
    (lambda: cuda.to_device(np.zeros((3, 2), np.float32)), r"x has shape \(3, 2\), expected "
                                                           r"\(2, 3\)"),
    (lambda: cuda.to_device(np.zeros((2, 3))), "x has dtype float64, expected float32"),
    (lambda: cuda.to_device(np.zeros((2, 6), np.float32))[:, ::2], "x must be C-contiguous"),
])
def test_check_device_array_names_the_argument(a, message):
    with pytest.raises(ValueError, match=f"^op: {message}$"):
        common.check_device_array("op", "x", a(), (2, 3))
    common.check_device_array("op", "x", cuda.to_device(np.zeros((2, 3), np.float32)), (2, 3))


def test_check_device_arrays_names_the_first_misfit_in_order():
    good = cuda.to_device(np.zeros((2, 3), np.float32))
    labels = cuda.to_device(np.zeros(2, np.int32))
    common.check_device_arrays("op", x=(good, (2, 3)), labels=(labels, (2,), np.int32))
    with pytest.raises(ValueError, match=r"^op: labels has dtype int32, expected float32$"):
        common.check_device_arrays("op", x=(good, (2, 3)), labels=(labels, (2,)),
                                   y=(np.zeros(3), (3,)))
    with pytest.raises(ValueError, match=r"^op: y is a host array; pass a device array$"):
        common.check_device_arrays("op", y=(np.zeros(3), (3,)), labels=(labels, (2,)))


@pytest.mark.parametrize("a, b, expected", [(0, 4, 0), (1, 4, 1), (4, 4, 1), (5, 4, 2),
                                            (1023, 128, 8), (1025, 128, 9)])
def test_cdiv_rounds_up(a, b, expected):
    assert common.cdiv(a, b) == expected == int(np.ceil(a / b))


@pytest.mark.parametrize("order", [1, 2])
def test_through_squash_is_the_squash_derivative(order):
    # f(a) = A tanh(S a): f'(a) = A S (1 - tanh(S a)^2), from the output alone
    through = getattr(common.through_squash, "py_func", common.through_squash)
    a = np.array([-3.0, -0.7, 0.0, 0.25, 1.0, 4.0])
    d = np.array([0.5, -1.5, 2.0, -0.25, 1.0, 3.0])
    fp = SQUASH_A * SQUASH_S * (1 - np.tanh(SQUASH_S * a) ** 2)
    want = d * fp ** order
    out = (SQUASH_A * np.tanh(SQUASH_S * a)).astype(np.float32)
    got = np.array([through(np.float32(di), oi, order) for di, oi in
                    zip(d.astype(np.float32), out, strict=True)])
    assert got.dtype == np.float32
    # float32 rounding of the output: its relative error times ~2 f^2 / (A^2 - f^2)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=0)
