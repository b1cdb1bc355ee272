"""The CPU reference ops against independent definitions, in float64.

- forwards against plain loops written from the paper's definitions;
- every backward against central finite differences of a random linear
  functional of the op's output, L = sum(R * op(...));
- every Gauss-Newton backward (order 2) against the exact second derivative of a
  quadratic functional L = 1/2 sum(H * op(...)^2) with H >= 0: the linear ops
  are linear in each argument, so there the Gauss-Newton diagonal is exact and
  a central second difference checks it to rounding.
"""

import numpy as np
import pytest

from lenet.kernels import reference as ref
from lenet.kernels.architecture import C3_TABLE, RBF_CENTERS

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
    mse, _, _ = ref.loss_ref(y, labels, "mse")
    close(mse, y[np.arange(5), labels])
    j = 3.0
    per, _, _ = ref.loss_ref(y / 20, labels, "map", j)
    direct = [y[n, labels[n]] / 20 + np.log(np.exp(-j) + np.exp(-y[n] / 20).sum())
              for n in range(5)]
    close(per, np.array(direct))


def test_map_loss_is_stable_for_large_penalties():
    y = np.array([[1e4] * 10, [0.0] * 10])
    per, dy, hy = ref.loss_ref(y, np.array([0, 1]), "map", j=50.0)
    assert np.all(np.isfinite(per)) and np.all(np.isfinite(dy)) and np.all(np.isfinite(hy))
    close(per[0], 1e4 - 50.0)


def test_map_loss_keeps_its_digits_when_one_class_dominates():
    # the label's penalty far below the others: its 1 - p and the loss are ~1e-5, which
    # 1 - p and log(total) computed directly lose to cancellation; 40-digit Decimals agree
    from decimal import Decimal, localcontext
    r = rng(12)
    labels = r.integers(0, 10, 6)
    y = r.uniform(40, 150, (6, 10))
    y[np.arange(6), labels] = r.uniform(0, 0.5, 6)
    j = 10.0
    per, dy, hy = ref.loss_ref(y, labels, "map", j)
    with localcontext() as ctx:
        ctx.prec = 40
        for n, label in enumerate(labels):
            terms = [(-Decimal(v)).exp() for v in y[n]]
            total = (-Decimal(j)).exp() + sum(terms)
            q = 1 - terms[label] / total
            assert abs(Decimal(per[n]) - (Decimal(y[n, label]) + total.ln())) \
                < Decimal(1e-14) * abs(Decimal(per[n]))
            assert abs(Decimal(dy[n, label] * 6) - q) < Decimal(1e-14) * q
            assert abs(Decimal(hy[n, label] * 6) - q * (1 - q)) < Decimal(1e-14) * q


# ---------------------------------------------------------------- backwards

def test_squash_backward_both_orders():
    r = rng(5)
    a = r.standard_normal((4, 7)) * 2
    out = ref.squash_ref(a)
    dout = r.standard_normal(a.shape)
    numeric = numeric_grad(lambda: (dout * ref.squash_ref(a)).sum(), a)
    close(ref.squash_backward_ref(dout, out), numeric)
    # Gauss-Newton: h * f'(a)^2, with f' from finite differences
    hout = r.uniform(0, 1, a.shape)
    fprime = numeric_grad(lambda: ref.squash_ref(a).sum(), a)
    close(ref.squash_backward_ref(hout, out, 2), hout * fprime ** 2)


def _check_linear_op(forward, backward, args, seed):
    """forward(*args) is linear in each argument; check backward(d, *args, order), both
    orders."""
    r = rng(seed)
    out = forward(*args)
    R = r.standard_normal(out.shape)
    H = r.uniform(0.1, 1.0, out.shape)
    grads = backward(R, *args, 1)
    hess = backward(H, *args, 2)
    for k, arr in enumerate(args):
        numeric = numeric_grad(lambda: (R * forward(*args)).sum(), arr)
        close(grads[k], numeric)
        numeric2 = numeric_diag_hessian(lambda: 0.5 * (H * forward(*args) ** 2).sum(), arr)
        # out is linear in each argument, so d2/da2 [1/2 H out^2] = H (dout/da)^2
        close(hess[k], numeric2, rtol=1e-5)


def test_conv_backward_both_orders_c3():
    r = rng(6)
    x = r.standard_normal((2, 6, 7, 7))
    w = r.standard_normal((16, 6, 3, 3)) * C3_TABLE.T[:, :, None, None]
    b = r.standard_normal(16)

    def fwd(x, w, b):
        return ref.conv_ref(x, w, b, C3_TABLE)

    def bwd(da, x, w, b, order):
        return ref.conv_backward_ref(da, x, w, C3_TABLE, order)

    _check_linear_op(fwd, bwd, [x, w, b], 7)
    dx, dw, db = bwd(r.standard_normal((2, 16, 5, 5)), x, w, b, 1)
    assert np.all(dw[~C3_TABLE.T] == 0), "gradients off the table must be exact zeros"


def test_conv_backward_full_table_non_square():
    r = rng(8)
    table = np.ones((2, 3), dtype=bool)
    x = r.standard_normal((3, 2, 6, 8))
    w = r.standard_normal((3, 2, 5, 5))
    b = r.standard_normal(3)
    _check_linear_op(lambda x, w, b: ref.conv_ref(x, w, b, table),
                     lambda d, x, w, b, order: ref.conv_backward_ref(d, x, w, table, order),
                     [x, w, b], 9)


def test_subsample_backward_both_orders():
    r = rng(10)
    x = r.standard_normal((2, 3, 4, 6))
    coef, bias = r.standard_normal(3), r.standard_normal(3)
    _check_linear_op(ref.subsample_ref,
                     lambda d, x, c, b, order: ref.subsample_backward_ref(d, x, c, order),
                     [x, coef, bias], 11)


def test_full_backward_both_orders():
    r = rng(12)
    x, w, b = r.standard_normal((3, 7)), r.standard_normal((5, 7)), r.standard_normal(5)
    _check_linear_op(ref.full_ref,
                     lambda d, x, w, b, order: ref.full_backward_ref(d, x, w, order),
                     [x, w, b], 13)


def test_rbf_backward():
    r = rng(14)
    x, c = r.standard_normal((3, 84)), np.sign(r.standard_normal((10, 84)))
    dy = r.standard_normal((3, 10))
    numeric = numeric_grad(lambda: (dy * ref.rbf_ref(x, c)).sum(), x)
    close(ref.rbf_backward_ref(dy, x, c), numeric)


def test_rbf_backward_order2_is_exact_for_separable_losses():
    # For L = sum_i a_i y_i + 1/2 b_i y_i^2 the formula with dy = a + b y and
    # hy = b is the exact diagonal of d2L/dx2 (no term is dropped).
    r = rng(15)
    x, c = r.standard_normal((2, 84)) * 0.3, np.sign(r.standard_normal((10, 84)))
    a, b = r.standard_normal((2, 10)), r.uniform(0, 0.1, (2, 10))

    def loss():
        y = ref.rbf_ref(x, c)
        return (a * y + 0.5 * b * y * y).sum()

    y = ref.rbf_ref(x, c)
    h = ref.rbf_backward_ref(a + b * y, x, c, 2, hy=b)
    close(h, numeric_diag_hessian(loss, x), rtol=1e-5)


@pytest.mark.parametrize("kind", ["mse", "map"])
def test_loss_derivatives(kind):
    r = rng(16)
    y = r.uniform(0.5, 8.0, (4, 10))
    labels = r.integers(0, 10, 4)

    def losses():
        return ref.loss_ref(y, labels, kind, j=4.0)

    _, dy, hy = losses()
    close(dy, numeric_grad(lambda: losses()[0].mean(), y))
    close(hy, numeric_diag_hessian(lambda: losses()[0].mean(), y), rtol=1e-5)


def test_map_loss_rbf_curvature_is_nonnegative():
    # SDLM divides by mu + h: the estimate must never be negative
    r = rng(17)
    x, c = r.standard_normal((6, 84)), np.sign(r.standard_normal((10, 84)))
    y = ref.rbf_ref(x, c)
    _, dy, hy = ref.loss_ref(y / 50, r.integers(0, 10, 6), "map", j=1.0)
    assert ref.rbf_backward_ref(dy, x, c, 2, hy=hy).min() >= 0


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
        ref.loss_ref(np.zeros((2, 10)), np.array([0, 10]), "mse")
    with pytest.raises(ValueError, match=r"^loss: 'hinge', expected one of \('mse', 'map'\)$"):
        ref.loss_ref(np.zeros((2, 10)), np.array([0, 1]), "hinge")


# ------------------------------------------------------------ the whole network

@pytest.fixture(scope="module")
def net():
    """Seeded float64 parameters (C3's zeros off the table), 3 images and their labels."""
    from lenet import LeNet5
    params = LeNet5(seed=21, init="sqrt-fan-in", dtype=np.float64).parameters()
    r = rng(22)
    return params, r.uniform(-0.1, 1.175, (3, 1, 32, 32)), r.integers(0, 10, 3)


def map_j(params, x):
    """MAP's j near the smallest penalties, so that its dy and hy are far from zero."""
    return float(np.floor(ref.forward_ref(params, x)["penalties"].min()))


def test_forward_ref_names_every_tensor(net):
    params, x, labels = net
    out = ref.forward_ref(params, x, labels, "map", 100.0)
    shapes = {"input": (3, 1, 32, 32), "C1": (3, 6, 28, 28), "S2": (3, 6, 14, 14),
              "C3": (3, 16, 10, 10), "S4": (3, 16, 5, 5), "C5": (3, 120), "F6": (3, 84)}
    for name, shape in shapes.items():
        assert out[name].shape == shape and out[name].dtype == np.float64, name
        if name != "input":
            np.testing.assert_array_equal(out[name], ref.squash_ref(out[name + ".pre"]))
    assert [name for name, _ in ref.LAYERS] == list(shapes)[1:]
    assert out["penalties"].shape == (3, 10)
    np.testing.assert_array_equal(out["classes"], out["penalties"].argmin(axis=1))
    assert out["errors"] == np.count_nonzero(out["classes"] != labels)
    close(out["loss"], out["losses"].mean())
    # the same network from float32 inputs: float64 throughout
    out32 = ref.forward_ref({k: v.astype(np.float32) for k, v in params.items()},
                            x.astype(np.float32))
    assert out32["penalties"].dtype == np.float64


@pytest.mark.parametrize("kind", ["mse", "map"])
def test_backward_ref_gradients_match_finite_differences(net, kind):
    # the mean loss's gradient at 5 seeded entries of every parameter (C3's on the
    # table), against central differences of forward_ref's loss
    params, x, labels = net
    p = {k: v.copy() for k, v in params.items()}
    j = map_j(p, x)
    grads = ref.backward_ref(p, ref.forward_ref(p, x, labels, kind, j))
    r = rng(23)
    for name, value in p.items():
        assert grads[name].shape == value.shape, name
        entries = np.argwhere(value != 0)
        for i in map(tuple, entries[r.choice(len(entries), 5, replace=False)]):
            old = value[i]
            value[i] = old + EPS
            hi = ref.forward_ref(p, x, labels, kind, j)["loss"]
            value[i] = old - EPS
            lo = ref.forward_ref(p, x, labels, kind, j)["loss"]
            value[i] = old
            assert abs(grads[name][i] - (hi - lo) / (2 * EPS)) <= RTOL * max(
                1.0, np.abs(grads[name]).max()), (name, i)
    assert np.all(grads["C3.weight"][~C3_TABLE.T] == 0)


def _squash_second(a):
    """f''(a) of the squashing function A tanh(S a)."""
    t = np.tanh(ref.SQUASH_S * a)
    return -2.0 * ref.SQUASH_A * ref.SQUASH_S ** 2 * t * (1.0 - t * t)


@pytest.mark.parametrize("kind", ["mse", "map"])
def test_backward_ref_curvature_of_f6_biases(net, kind):
    # At F6's biases the SDLM curvature is the exact second derivative of the mean loss
    # less exactly the two terms the recipe drops: f''(a) times the gradient at F6's
    # output, and the loss's off-diagonal second derivatives in the penalties (MAP's
    # -p_i p_l / N; MSE has none). Checked against central second differences.
    params, x, labels = net
    p = {k: v.copy() for k, v in params.items()}
    j = map_j(p, x)
    fwd = ref.forward_ref(p, x, labels, kind, j)
    h = ref.backward_ref(p, fwd, order=2)["F6.bias"]
    n = len(labels)
    diff = fwd["F6"][:, None, :] - RBF_CENTERS[None, :, :]          # (N, 10, 84)
    fprime = ref.squash_derivative_ref(fwd["F6"])
    grad_f6 = 2.0 * np.einsum("ni,nik->nk", fwd["dy"], diff)
    onehot = np.eye(10)[labels]
    p_ = onehot - n * fwd["dy"] if kind == "map" else np.zeros_like(onehot)
    off = -np.einsum("ni,nl,nik,nlk->nk", p_, p_, diff, diff) * 4.0 / n
    off += 4.0 / n * np.einsum("ni,nik->nk", p_ * p_, diff * diff)   # the i == l terms
    dropped = (fprime ** 2 * off + _squash_second(fwd["F6.pre"]) * grad_f6).sum(axis=0)
    picked = rng(24).choice(84, 8, replace=False)
    bias = p["F6.bias"][picked]   # a copy: numeric_diag_hessian varies it, loss() reads it

    def loss():
        p["F6.bias"][picked] = bias
        return ref.forward_ref(p, x, labels, kind, j)["loss"]

    exact = numeric_diag_hessian(loss, bias)
    close(h[picked] + dropped[picked], exact, rtol=1e-5)


@pytest.mark.parametrize("kind", ["mse", "map"])
def test_backward_ref_curvature_is_nonnegative_and_named(net, kind):
    # SDLM divides by mu + h: no curvature may be negative; deltas are named after the
    # forward tensors they belong to and have their shapes
    params, x, labels = net
    fwd = ref.forward_ref(params, x, labels, kind, map_j(params, x))
    for order in (1, 2):
        back = ref.backward_ref(params, fwd, order)
        for name, _ in ref.LAYERS:
            assert back[name].shape == fwd[name].shape, name
            assert back[name + ".pre"].shape == fwd[name].shape, name
        for name in params:
            assert back[name].shape == params[name].shape, name
            if order == 2:
                assert back[name].min() >= 0, name
        assert np.all(back["C3.weight"][~C3_TABLE.T] == 0)


def test_sdlm_steps_ref_takes_one_pattern_after_another(net):
    params, x, labels = net
    r = rng(25)
    rates = {k: r.uniform(1e-3, 1e-2, v.shape) for k, v in params.items()}
    one, stats1, _, _ = ref.sdlm_steps_ref(params, rates, x, labels, [2], "map", 90.0)
    fwd = ref.forward_ref(params, x[2:3], labels[2:3], "map", 90.0)
    grads = ref.backward_ref(params, fwd)
    for name in params:
        close(one[name], params[name] - rates[name] * grads[name])
    np.testing.assert_array_equal(stats1, [fwd["losses"][0], fwd["errors"]])
    two, stats2, last, _ = ref.sdlm_steps_ref(params, rates, x, labels, [2, 0], "map", 90.0)
    then, stats0, last0, _ = ref.sdlm_steps_ref(one, rates, x, labels, [0], "map", 90.0)
    for name in params:
        np.testing.assert_array_equal(two[name], then[name])
    np.testing.assert_array_equal(stats2, stats1 + stats0)
    np.testing.assert_array_equal(last["penalties"], last0["penalties"])


def test_minibatch_steps_ref_steps_on_each_batch_mean(net):
    # SGD with momentum, then steps with rates, over batches [2, 0] then [1], written out
    # from backward_ref
    params, x, labels = net
    lr, momentum = 0.01, 0.9
    after, velocity, stats, last, _ = ref.minibatch_steps_ref(
        params, x, labels, [2, 0, 1], 2, "map", 90.0, lr=lr, momentum=momentum)
    p, v = dict(params), {k: np.zeros_like(a) for k, a in params.items()}
    total = np.zeros(2)
    for batch in ([2, 0], [1]):
        fwd = ref.forward_ref(p, x[batch], labels[batch], "map", 90.0)
        g = ref.backward_ref(p, fwd)
        total += fwd["losses"].sum(), fwd["errors"]
        v = {k: momentum * v[k] - lr * g[k] for k in p}
        p = {k: p[k] + v[k] for k in p}
    for name in params:
        assert np.abs(after[name] - params[name]).max() > 0, name
        np.testing.assert_array_equal(after[name], p[name])
        np.testing.assert_array_equal(velocity[name], v[name])
    np.testing.assert_array_equal(stats, total)
    np.testing.assert_array_equal(last["labels"], labels[[1]])
    r = rng(26)
    rates = {k: r.uniform(1e-3, 1e-2, v.shape) for k, v in params.items()}
    stepped, _, _, _, _ = ref.minibatch_steps_ref(params, x, labels, [2, 0, 1], 2, rates=rates)
    p = dict(params)
    for batch in ([2, 0], [1]):
        g = ref.backward_ref(p, ref.forward_ref(p, x[batch], labels[batch]))
        p = {k: p[k] - rates[k] * g[k] for k in p}
    for name in params:
        np.testing.assert_array_equal(stepped[name], p[name])


def test_whole_network_errors_are_clear(net):
    params, x, labels = net
    with pytest.raises(ValueError, match=r"images: shape \(3, 1, 28, 28\)"):
        ref.forward_ref(params, np.zeros((3, 1, 28, 28)))
    with pytest.raises(ValueError, match=r"params: missing \['F6.bias'\]"):
        ref.forward_ref({k: v for k, v in params.items() if k != "F6.bias"}, x)
    with pytest.raises(ValueError, match="loss: 'hinge'"):
        ref.forward_ref(params, x, labels, "hinge")
    with pytest.raises(ValueError, match="give it labels"):
        ref.backward_ref(params, ref.forward_ref(params, x))
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        ref.backward_ref(params, ref.forward_ref(params, x, labels), order=3)
