"""The CPU reference ops against independent definitions, in float64.

- forwards against plain loops written from the paper's definitions;
- every backward against central finite differences of a random linear
  functional of the op's output, L = sum(R * op(...));
- every Gauss-Newton backward2 against the exact second derivative of a
  quadratic functional L = 1/2 sum(H * op(...)^2) with H >= 0: the linear ops
  are linear in each argument, so there the Gauss-Newton diagonal is exact and
  a central second difference checks it to rounding.
"""

import numpy as np
import pytest

from kernels import reference as ref
from lenet.architecture import C3_TABLE

RTOL = 1e-6   # finite differences in float64 with EPS below
EPS = 1e-5


def rng(seed=0):
    return np.random.default_rng(seed)


def numeric_grad(f, arr):
    """Central differences of scalar f() with respect to every element of arr."""
    g = np.zeros_like(arr)
    for i in np.ndindex(arr.shape):
        old = arr[i]
        arr[i] = old + EPS
        hi = f()
        arr[i] = old - EPS
        lo = f()
        arr[i] = old
        g[i] = (hi - lo) / (2 * EPS)
    return g


def numeric_diag_hessian(f, arr, eps=1e-3):
    """Central second differences: d2f/da_i^2 for every element."""
    h = np.zeros_like(arr)
    f0 = f()
    for i in np.ndindex(arr.shape):
        old = arr[i]
        arr[i] = old + eps
        hi = f()
        arr[i] = old - eps
        lo = f()
        arr[i] = old
        h[i] = (hi - 2 * f0 + lo) / (eps * eps)
    return h


def close(a, b, rtol=RTOL):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, np.abs(b).max()))


def conv_loops(x, w, b, table):
    """The convolution as the paper writes it, with loops."""
    n, c_in, h, wd = x.shape
    m, _, k, _ = w.shape
    out = np.zeros((n, m, h - k + 1, wd - k + 1))
    for o in range(m):
        out[:, o] = b[o]
        for c in range(c_in):
            if table[c, o]:
                for u in range(k):
                    for v in range(k):
                        out[:, o] += w[o, c, u, v] * x[:, c, u:u + h - k + 1, v:v + wd - k + 1]
    return out


# ----------------------------------------------------------------- forwards

def test_squash_maps_plus_minus_one_to_themselves():
    # the paper chooses A and S so that f(1) = 1 and f(-1) = -1
    assert abs(ref.squash_ref(1.0) - 1.0) < 1e-4
    assert abs(ref.squash_ref(-1.0) + 1.0) < 1e-4
    assert abs(ref.squash_ref(50.0) - 1.7159) < 1e-12


def test_conv_matches_loops_with_c3_table():
    r = rng(1)
    x = r.standard_normal((2, 6, 14, 14))
    w = r.standard_normal((16, 6, 5, 5)) * C3_TABLE.T[:, :, None, None]
    b = r.standard_normal(16)
    close(ref.conv_ref(x, w, b, C3_TABLE), conv_loops(x, w, b, C3_TABLE))


def test_conv_ignores_weights_off_the_table():
    r = rng(2)
    x = r.standard_normal((2, 6, 14, 14))
    w = r.standard_normal((16, 6, 5, 5))
    b = r.standard_normal(16)
    masked = w * C3_TABLE.T[:, :, None, None]
    close(ref.conv_ref(x, w, b, C3_TABLE), ref.conv_ref(x, masked, b, C3_TABLE))


def test_subsample_matches_loops():
    r = rng(3)
    x = r.standard_normal((3, 4, 6, 8))
    coef, bias = r.standard_normal(4), r.standard_normal(4)
    out = ref.subsample_ref(x, coef, bias)
    for i in range(3):
        for j in range(4):
            s = x[:, :, 2 * i, 2 * j] + x[:, :, 2 * i + 1, 2 * j] + \
                x[:, :, 2 * i, 2 * j + 1] + x[:, :, 2 * i + 1, 2 * j + 1]
            close(out[:, :, i, j], coef * s + bias)


def test_rbf_and_losses_match_direct_formulas():
    r = rng(4)
    x, c = r.standard_normal((5, 84)), np.sign(r.standard_normal((10, 84)))
    y = ref.rbf_ref(x, c)
    for n in range(5):
        for i in range(10):
            assert abs(y[n, i] - sum((x[n, j] - c[i, j]) ** 2 for j in range(84))) < 1e-9
    labels = r.integers(0, 10, 5)
    mse, _, _ = ref.mse_loss_ref(y, labels)
    close(mse, y[np.arange(5), labels])
    j = 3.0
    per, _, _ = ref.map_loss_ref(y / 20, labels, j)
    direct = [y[n, labels[n]] / 20 + np.log(np.exp(-j) + np.exp(-y[n] / 20).sum())
              for n in range(5)]
    close(per, np.array(direct))


def test_map_loss_is_stable_for_large_penalties():
    y = np.array([[1e4] * 10, [0.0] * 10])
    per, dy, hy = ref.map_loss_ref(y, np.array([0, 1]), j=50.0)
    assert np.all(np.isfinite(per)) and np.all(np.isfinite(dy)) and np.all(np.isfinite(hy))
    close(per[0], 1e4 - 50.0)


# ---------------------------------------------------------------- backwards

def test_squash_backward_and_backward2():
    r = rng(5)
    a = r.standard_normal((4, 7)) * 2
    out = ref.squash_ref(a)
    dout = r.standard_normal(a.shape)
    numeric = numeric_grad(lambda: (dout * ref.squash_ref(a)).sum(), a)
    close(ref.squash_backward_ref(dout, out), numeric)
    # Gauss-Newton: h * f'(a)^2, with f' from finite differences
    hout = r.uniform(0, 1, a.shape)
    fprime = numeric_grad(lambda: ref.squash_ref(a).sum(), a)
    close(ref.squash_backward2_ref(hout, out), hout * fprime ** 2)


def _check_linear_op(forward, backward, backward2, args, seed):
    """forward(*args) is linear in each argument; check backward and backward2."""
    r = rng(seed)
    out = forward(*args)
    R = r.standard_normal(out.shape)
    H = r.uniform(0.1, 1.0, out.shape)
    grads = backward(R, *args)
    hess = backward2(H, *args)
    for k, arr in enumerate(args):
        numeric = numeric_grad(lambda: (R * forward(*args)).sum(), arr)
        close(grads[k], numeric)
        numeric2 = numeric_diag_hessian(lambda: 0.5 * (H * forward(*args) ** 2).sum(), arr)
        # out is linear in each argument, so d2/da2 [1/2 H out^2] = H (dout/da)^2
        close(hess[k], numeric2, rtol=1e-5)


def test_conv_backward_and_backward2_c3():
    r = rng(6)
    x = r.standard_normal((2, 6, 7, 7))
    w = r.standard_normal((16, 6, 3, 3)) * C3_TABLE.T[:, :, None, None]
    b = r.standard_normal(16)

    def fwd(x, w, b):
        return ref.conv_ref(x, w, b, C3_TABLE)

    def bwd(da, x, w, b):
        return ref.conv_backward_ref(da, x, w, C3_TABLE)

    def bwd2(ha, x, w, b):
        return ref.conv_backward2_ref(ha, x, w, C3_TABLE)

    _check_linear_op(fwd, bwd, bwd2, [x, w, b], 7)
    dx, dw, db = bwd(r.standard_normal((2, 16, 5, 5)), x, w, b)
    assert np.all(dw[~C3_TABLE.T] == 0), "gradients off the table must be exact zeros"


def test_conv_backward_full_table_non_square():
    r = rng(8)
    table = np.ones((2, 3), dtype=bool)
    x = r.standard_normal((3, 2, 6, 8))
    w = r.standard_normal((3, 2, 5, 5))
    b = r.standard_normal(3)
    _check_linear_op(lambda x, w, b: ref.conv_ref(x, w, b, table),
                     lambda d, x, w, b: ref.conv_backward_ref(d, x, w, table),
                     lambda h, x, w, b: ref.conv_backward2_ref(h, x, w, table),
                     [x, w, b], 9)


def test_subsample_backward_and_backward2():
    r = rng(10)
    x = r.standard_normal((2, 3, 4, 6))
    coef, bias = r.standard_normal(3), r.standard_normal(3)
    _check_linear_op(ref.subsample_ref,
                     lambda d, x, c, b: ref.subsample_backward_ref(d, x, c),
                     lambda h, x, c, b: ref.subsample_backward2_ref(h, x, c),
                     [x, coef, bias], 11)


def test_full_backward_and_backward2():
    r = rng(12)
    x, w, b = r.standard_normal((3, 7)), r.standard_normal((5, 7)), r.standard_normal(5)
    _check_linear_op(ref.full_ref,
                     lambda d, x, w, b: ref.full_backward_ref(d, x, w),
                     lambda h, x, w, b: ref.full_backward2_ref(h, x, w),
                     [x, w, b], 13)


def test_rbf_backward():
    r = rng(14)
    x, c = r.standard_normal((3, 84)), np.sign(r.standard_normal((10, 84)))
    dy = r.standard_normal((3, 10))
    numeric = numeric_grad(lambda: (dy * ref.rbf_ref(x, c)).sum(), x)
    close(ref.rbf_backward_ref(dy, x, c), numeric)


def test_rbf_backward2_is_exact_for_separable_losses():
    # For L = sum_i a_i y_i + 1/2 b_i y_i^2 the formula with dy = a + b y and
    # hy = b is the exact diagonal of d2L/dx2 (no term is dropped).
    r = rng(15)
    x, c = r.standard_normal((2, 84)) * 0.3, np.sign(r.standard_normal((10, 84)))
    a, b = r.standard_normal((2, 10)), r.uniform(0, 0.1, (2, 10))

    def loss():
        y = ref.rbf_ref(x, c)
        return (a * y + 0.5 * b * y * y).sum()

    y = ref.rbf_ref(x, c)
    h = ref.rbf_backward2_ref(b, a + b * y, x, c)
    close(h, numeric_diag_hessian(loss, x), rtol=1e-5)


@pytest.mark.parametrize("kind", ["mse", "map"])
def test_loss_derivatives(kind):
    r = rng(16)
    y = r.uniform(0.5, 8.0, (4, 10))
    labels = r.integers(0, 10, 4)

    def losses():
        if kind == "mse":
            return ref.mse_loss_ref(y, labels)
        return ref.map_loss_ref(y, labels, j=4.0)

    _, dy, hy = losses()
    close(dy, numeric_grad(lambda: losses()[0].mean(), y))
    close(hy, numeric_diag_hessian(lambda: losses()[0].mean(), y), rtol=1e-5)


def test_map_loss_rbf_curvature_is_nonnegative():
    # SDLM divides by mu + h: the estimate must never be negative
    r = rng(17)
    x, c = r.standard_normal((6, 84)), np.sign(r.standard_normal((10, 84)))
    y = ref.rbf_ref(x, c)
    _, dy, hy = ref.map_loss_ref(y / 50, r.integers(0, 10, 6), j=1.0)
    assert ref.rbf_backward2_ref(hy, dy, x, c).min() >= 0


def test_ops_keep_float32():
    r = rng(18)
    x = r.standard_normal((2, 6, 14, 14)).astype(np.float32)
    w = r.standard_normal((16, 6, 5, 5)).astype(np.float32)
    b = r.standard_normal(16).astype(np.float32)
    a = ref.conv_ref(x, w, b, C3_TABLE)
    assert a.dtype == np.float32
    assert ref.squash_ref(a).dtype == np.float32
    assert all(g.dtype == np.float32 for g in ref.conv_backward_ref(a, x, w, C3_TABLE))


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="table"):
        ref.conv_ref(np.zeros((1, 6, 14, 14)), np.zeros((16, 6, 5, 5)), np.zeros(16),
                     np.ones((16, 6), bool))
    with pytest.raises(ValueError, match="even"):
        ref.subsample_ref(np.zeros((1, 2, 5, 5)), np.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="labels"):
        ref.mse_loss_ref(np.zeros((2, 10)), np.array([0, 10]))
