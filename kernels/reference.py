"""CPU reference of LeNet-5: the definition every implementation is checked against.

Pure NumPy, batched over images (axis 0), in the inputs' dtype (float64 to check
gradients). Each op has a forward, <op>_ref, and a backward, <op>_backward_ref(...,
order): order 1 the gradients of a scalar loss, order 2 the Gauss-Newton diagonal of the
SDLM recipe (curvature through each linear map with squared weights and inputs, f''
dropped). Parameter derivatives are summed over the batch; losses are means over patterns.
The whole network, in float64 with named tensors: forward_ref, backward_ref and the
training loops sdlm_steps_ref and minibatch_steps_ref (LAYERS: the order of the layers).

Tests: pytest tests/test_reference.py (each backward against central finite differences);
pytest -s tests/test_implementations.py compares every implementation with it.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .architecture import (  # noqa: F401 -- the reference's constants, re-exported
    CONV_TABLES,
    INPUT_ACCEPTED,
    INPUT_BACKGROUND,
    INPUT_INK,
    INPUT_NEAR,
    LOSS_KINDS,
    MAP_J,
    PARAMETER_SHAPES,
    RBF_CENTERS,
    SQUASH_A,
    SQUASH_S,
)


def _batch_sum(a, axis):
    """Sum over the batch (and pixels) accumulated in float64, returned in a's
    dtype: float32 sums of 10^4+ terms that cancel lose too many digits."""
    return a.sum(axis=axis, dtype=np.float64).astype(a.dtype, copy=False)


# --------------------------------------------------------------------- input

def first_refused_ref(x):
    """Index of the first image of x (N, ...) that is not in the input encoding
    (INPUT_ACCEPTED, INPUT_NEAR; compared in x's dtype), or -1."""
    x = np.asarray(x)
    rows = x.reshape(len(x), int(np.prod(x.shape[1:], dtype=np.int64)))
    if not rows.size:
        return 0 if len(rows) else -1   # images without pixels have none at the background
    low, high = rows.min(axis=1), rows.max(axis=1)   # a NaN in a row makes both NaN
    bad = ~((low >= INPUT_ACCEPTED[0]) & (high <= INPUT_ACCEPTED[1]) & (low <= INPUT_NEAR))
    return int(np.argmax(bad)) if bad.any() else -1


def refusal(image, index, dtype=np.float32):
    """The ValueError for refused image `index` (its values) as given in `dtype`."""
    image = np.asarray(image, dtype)
    if not np.isfinite(image).all():
        return ValueError(f"image {index} contains NaN or infinite values (as "
                          f"{np.dtype(dtype).name}); images must be finite")
    low, high = float(image.min()), float(image.max())
    none = ", none near the background" if low > INPUT_NEAR else ""
    return ValueError(f"image {index} is not in the paper's input encoding (background "
                      f"{INPUT_BACKGROUND:g}, ink {INPUT_INK:g}): its values run from "
                      f"{low:.4g} to {high:.4g}{none}; lenet.data.preprocess maps 0..255 "
                      "pixels to it")


# --------------------------------------------------------------------- squash

def squash_ref(a):
    """f(a) = A tanh(S a), so that f(1) = 1 and f(-1) = -1."""
    return SQUASH_A * np.tanh(SQUASH_S * a)


def squash_derivative_ref(out):
    """f'(a) written through the output f(a): S/A (A^2 - f(a)^2)."""
    return (SQUASH_S / SQUASH_A) * (SQUASH_A * SQUASH_A - out * out)


def squash_backward_ref(dout, out, order=1):
    """da = dout f'(a) (order 2: dout f'(a)^2, the term in f''(a) dropped), f'(a) computed
    from the forward output `out`."""
    d = squash_derivative_ref(out)
    return dout * d if order == 1 else dout * d * d


# ----------------------------------------------------------------------- conv

def _check_conv(x, weight, bias, table):
    n_maps, c_in, k, k2 = weight.shape
    if x.ndim != 4 or x.shape[1] != c_in or k != k2:
        raise ValueError(f"conv: x {x.shape} does not match weight {weight.shape} "
                         "(expected x (N,C,H,W), weight (M,C,K,K))")
    if bias.shape != (n_maps,):
        raise ValueError(f"conv: bias {bias.shape} should be ({n_maps},)")
    if table.shape != (c_in, n_maps):
        raise ValueError(f"conv: table {table.shape} should be ({c_in}, {n_maps})")
    return k


def _masked(weight, table):
    """The weights with every pair the table leaves out set to exact zero."""
    return weight * table.T[:, :, None, None].astype(weight.dtype)


def conv_ref(x, weight, bias, table):
    """x (N,C,H,W) -> a (N,M,H-K+1,W-K+1): a[n,m,y,x] = bias[m] +
    sum over c with table[c,m] and u, v of weight[m,c,u,v] * x[n,c,y+u,x+v]."""
    k = _check_conv(x, weight, bias, table)
    cols = sliding_window_view(x, (k, k), axis=(2, 3))  # (N,C,Ho,Wo,K,K)
    a = np.tensordot(cols, _masked(weight, table), axes=([1, 4, 5], [1, 2, 3]))
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) + bias[None, :, None, None]


def _full_correlation(d, weight):
    """dx[n,c,i,j] = sum_{m,u,v} d[n,m,i-u,j-v] * weight[m,c,u,v] (zero outside d)."""
    k = weight.shape[-1]
    padded = np.pad(d, ((0, 0), (0, 0), (k - 1, k - 1), (k - 1, k - 1)))
    cols = sliding_window_view(padded, (k, k), axis=(2, 3))
    dx = np.tensordot(cols, weight[:, :, ::-1, ::-1], axes=([1, 4, 5], [0, 2, 3]))
    return np.ascontiguousarray(dx.transpose(0, 3, 1, 2))


def conv_backward_ref(da, x, weight, table, order=1, need_dx=True):
    """Derivatives through conv_ref given those at its output, da (N,M,Ho,Wo): dx (N,C,H,W)
    (None unless need_dx: C1 needs none), dweight (M,C,K,K) (zero where the table has no
    connection) and dbias (M,). Order 2: x and weight squared."""
    k = weight.shape[-1]
    w = _masked(weight, table)
    if order == 2:
        x, w = x * x, w * w
    cols = sliding_window_view(x, (k, k), axis=(2, 3))
    dweight = _masked(np.tensordot(da, cols, axes=([0, 2, 3], [0, 2, 3])), table)
    dx = _full_correlation(da, w) if need_dx else None
    return dx, dweight, _batch_sum(da, (0, 2, 3))


# ------------------------------------------------------------------ subsample

def _block_sum(x):
    n, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"subsample: map size {h}x{w} must be even")
    return x.reshape(n, c, h // 2, 2, w // 2, 2).sum(axis=(3, 5))


def _upsample(d):
    return d.repeat(2, axis=2).repeat(2, axis=3)


def subsample_ref(x, coef, bias):
    """x (N,C,H,W) -> coef[c] * (sum of each 2x2 block) + bias[c], (N,C,H/2,W/2)."""
    if coef.shape != (x.shape[1],) or bias.shape != (x.shape[1],):
        raise ValueError(f"subsample: coef {coef.shape} and bias {bias.shape} should be "
                         f"({x.shape[1]},) for x {x.shape}")
    return coef[None, :, None, None] * _block_sum(x) + bias[None, :, None, None]


def subsample_backward_ref(da, x, coef, order=1):
    """Returns dx (N,C,H,W) = da coef spread over each 2x2 block, dcoef (C,) = sum da s
    (s the block sums), dbias (C,) = sum da. Order 2: coef and s squared."""
    s = _block_sum(x)
    if order == 2:
        s, coef = s * s, coef * coef
    dx = _upsample(da * coef[None, :, None, None])
    return dx, _batch_sum(da * s, (0, 2, 3)), _batch_sum(da, (0, 2, 3))


# ----------------------------------------------------------------------- full

def full_ref(x, weight, bias):
    """x (N,I) -> x @ weight.T + bias, (N,O)."""
    if x.ndim != 2 or weight.shape[1] != x.shape[1] or bias.shape != weight.shape[:1]:
        raise ValueError(f"full: x {x.shape}, weight {weight.shape}, bias {bias.shape} "
                         "do not fit (expected (N,I), (O,I), (O,))")
    return x @ weight.T + bias


def full_backward_ref(da, x, weight, order=1):
    """Returns dx (N,I) = da @ weight, dweight (O,I) = da.T @ x, dbias (O,) = sum da.
    Order 2: x and weight squared."""
    if order == 2:
        x, weight = x * x, weight * weight
    return da @ weight, da.T @ x, _batch_sum(da, 0)


# ------------------------------------------------------------------------ rbf

def rbf_ref(x, centers):
    """x (N,84), centers (10,84) -> y (N,10), y[n,i] = sum_j (x[n,j] - centers[i,j])^2."""
    if x.ndim != 2 or x.shape[1] != centers.shape[1]:
        raise ValueError(f"rbf: x {x.shape} does not fit centers {centers.shape}")
    diff = x[:, None, :] - centers[None, :, :]
    return (diff * diff).sum(axis=2)


def rbf_backward_ref(dy, x, centers, order=1, hy=None):
    """dx[n,j] = sum_i dy[n,i] 2 (x[n,j] - c[i,j]) from dy = dE/dy. Order 2, with hy the
    diagonal of d2E/dy2: hx[n,j] = sum_i 2 dy[n,i] + 4 hy[n,i] (x[n,j] - c[i,j])^2. Its
    first term is y's own curvature (d2y_i/dx_j2 = 2): exact, not dropped, because it is
    what makes the MSE loss curved at all. Off-diagonal terms of d2E/dy2 are dropped, as
    SDLM drops every off-diagonal term."""
    if order == 1:
        return 2.0 * (dy.sum(axis=1, keepdims=True) * x - dy @ centers)
    diff = x[:, None, :] - centers[None, :, :]
    return 2.0 * dy.sum(axis=1, keepdims=True) + 4.0 * (hy[:, :, None] * diff * diff).sum(axis=1)


# --------------------------------------------------------------------- losses

LOSSES = tuple(LOSS_KINDS)


def _check_labels(y, labels):
    if labels.shape != (y.shape[0],):
        raise ValueError(f"loss: labels {labels.shape} should be ({y.shape[0]},) for y {y.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= y.shape[1]):
        raise ValueError(f"loss: labels must lie in 0..{y.shape[1] - 1}")


def loss_ref(y, labels, kind, j=MAP_J):
    """The loss `kind` of penalties y (N,10), as the kernels' pattern_loss gives it with
    scale 1/N: (per-pattern losses (N,), whose mean is E; dy = dE/dy; hy = the diagonal
    of d2E/dy2, Gauss-Newton's for MAP), onehot the labels' one-hot rows:

        mse (paper eq. 8):  E = mean_n y[n,D],   dy = onehot / N,   hy = 0
        map (paper eq. 9):  E = mean_n y[n,D] + log(exp(-j) + sum_i exp(-y[n,i])),
                            p_i = exp(-y_i) / (exp(-j) + sum_k exp(-y_k)),
                            dy = (onehot - p) / N,   hy = p (1 - p) / N

    MAP from r, the sum of exp(z - max z) over every term but the largest (which is 1):
    log(total) = log1p(r) and 1 - p keep their digits when one term dominates.
    """
    if kind not in LOSSES:
        raise ValueError(f"loss: {kind!r}, expected one of {LOSSES}")
    _check_labels(y, labels)
    n = y.shape[0]
    rows = np.arange(n)
    onehot = np.zeros_like(y)
    onehot[rows, labels] = 1.0
    if kind == "mse":
        return y[rows, labels], onehot / n, np.zeros_like(y)
    z = np.concatenate([np.full((n, 1), -j, dtype=y.dtype), -y], axis=1)
    largest = np.zeros(z.shape, bool)
    largest[rows, z.argmax(axis=1)] = True
    zmax = z[largest]
    e = np.exp(z - zmax[:, None])
    r = np.where(largest, 0.0, e).sum(axis=1, keepdims=True)
    total = 1.0 + r
    p = (e / total)[:, 1:]
    q = (np.where(largest, r, total - e) / total)[:, 1:]   # 1 - p
    return (y[rows, labels] + zmax) + np.log1p(r[:, 0]), np.where(onehot == 1, q, -p) / n, \
        p * q / n


# ---------------------------------------------------------------- whole network

# The layers of LeNet-5 in order, input to output: (name, kind). Each kind's forward and
# backward are the ops above; the parameters of layer L are "L.weight" and "L.bias"
# (conv, full) or "L.coef" and "L.bias" (subsample), as kernels.architecture names them.
LAYERS = (("C1", "conv"), ("S2", "subsample"), ("C3", "conv"), ("S4", "subsample"),
          ("C5", "full"), ("F6", "full"))


def _float64_params(params):
    missing = sorted(set(PARAMETER_SHAPES) - set(params))
    if missing:
        raise ValueError(f"params: missing {missing}")
    out = {name: np.asarray(params[name], dtype=np.float64) for name in PARAMETER_SHAPES}
    for name, shape in PARAMETER_SHAPES.items():
        if out[name].shape != shape:
            raise ValueError(f"params: {name} has shape {out[name].shape}, expected {shape}")
    return out


def _layer_forward(name, kind, x, p):
    """The pre-activation of layer `name` from its input x."""
    if kind == "conv":
        return conv_ref(x, p[name + ".weight"], p[name + ".bias"], CONV_TABLES[name])
    if kind == "subsample":
        return subsample_ref(x, p[name + ".coef"], p[name + ".bias"])
    w = p[name + ".weight"]
    return full_ref(x.reshape(x.shape[0], -1), w.reshape(w.shape[0], -1), p[name + ".bias"])


def _layer_backward(name, kind, d, x, p, order, need_dx):
    """(derivative at the input x or None, {parameter name: derivative}) of layer `name`
    from the derivative d at its pre-activation; order 1 or 2 (Gauss-Newton)."""
    if kind == "conv":
        dx, dw, db = conv_backward_ref(d, x, p[name + ".weight"], CONV_TABLES[name], order,
                                       need_dx)
        return dx, {name + ".weight": dw, name + ".bias": db}
    if kind == "subsample":
        dx, dc, db = subsample_backward_ref(d, x, p[name + ".coef"], order)
        return dx, {name + ".coef": dc, name + ".bias": db}
    w = p[name + ".weight"]
    dx, dw, db = full_backward_ref(d, x.reshape(x.shape[0], -1), w.reshape(w.shape[0], -1),
                                   order)
    return dx.reshape(x.shape), {name + ".weight": dw.reshape(w.shape), name + ".bias": db}


def forward_ref(params, images, labels=None, loss="mse", j=MAP_J):
    """Every tensor of the forward pass of images (N,1,32,32) (or (N,32,32), (N,1024)) in
    float64, by name: "input"; per layer L of LAYERS "L.pre", its pre-activation a, and
    "L", its output f(a) (C5's is (N,120): its 5x5 kernels cover its 5x5 input);
    "penalties", "classes". With labels (N,) ints 0..9 also the loss: per pattern
    ("losses"), their mean ("loss"), the misclassified count ("errors") and the mean's
    derivatives in the penalties, "dy" and its Gauss-Newton diagonal "hy"."""
    p = _float64_params(params)
    x = np.asarray(images, dtype=np.float64)
    if x.ndim < 2 or int(np.prod(x.shape[1:])) != 32 * 32:
        raise ValueError(f"images: shape {x.shape}, expected (N,1,32,32)")
    out = {"input": x.reshape(x.shape[0], 1, 32, 32)}
    x = out["input"]
    for name, kind in LAYERS:
        out[name + ".pre"] = _layer_forward(name, kind, x, p)
        x = out[name] = squash_ref(out[name + ".pre"])
    out["penalties"] = rbf_ref(x, RBF_CENTERS)
    out["classes"] = out["penalties"].argmin(axis=1)
    if labels is not None:
        labels = np.asarray(labels)
        losses, dy, hy = loss_ref(out["penalties"], labels, loss, j)
        out.update(labels=labels, losses=losses, loss=losses.mean(), dy=dy, hy=hy,
                   errors=int(np.count_nonzero(out["classes"] != labels)))
    return out


def backward_ref(params, forward, order=1):
    """The derivatives of the mean loss of forward_ref's result `forward` (made with
    labels) in float64 with respect to its tensors "penalties", "F6", "F6.pre", ...,
    "C1.pre" and to every parameter, by name: gradients (order 1) or SDLM's Gauss-Newton
    diagonal (order 2). "L.pre" are the deltas that the kernels keep per image (d1..d6 in
    kernels/train_step.py and kernels/sdlm.py)."""
    if order not in (1, 2):
        raise ValueError(f"backward_ref: order must be 1 or 2, not {order!r}")
    if "dy" not in forward:
        raise ValueError("backward_ref: the forward pass has no loss (give it labels)")
    p = _float64_params(params)
    top = LAYERS[-1][0]
    out = {"penalties": forward["dy"] if order == 1 else forward["hy"],
           top: rbf_backward_ref(forward["dy"], forward[top], RBF_CENTERS, order, forward["hy"])}
    for k in range(len(LAYERS) - 1, -1, -1):
        name, kind = LAYERS[k]
        below = LAYERS[k - 1][0] if k else "input"
        d = out[name + ".pre"] = squash_backward_ref(out[name], forward[name], order)
        dx, grads = _layer_backward(name, kind, d, forward[below], p, order, k > 0)
        out.update(grads)
        if k:
            out[below] = dx
    return out


def sdlm_steps_ref(params, rates, images, labels, order, loss="mse", j=MAP_J):
    """The paper's per-pattern SDLM steps: for n = order[0], order[1], ... in turn, the
    gradient g of pattern n's loss and param -= rates[name] * g, so that each pattern
    sees the parameters its predecessor left (minibatch_steps_ref with batches of one).
    rates: eta / (mu + h) by parameter name.

    Returns (parameters after, stats [sum of the losses, misclassified count], the last
    pattern's forward_ref and backward_ref)."""
    p, _, stats, fwd, bwd = minibatch_steps_ref(params, images, labels,
                                                np.asarray(order).reshape(-1), 1, loss, j,
                                                rates=rates)
    return p, stats, fwd, bwd


def minibatch_steps_ref(params, images, labels, order, batch_size, loss="mse", j=MAP_J,
                        lr=0.0, momentum=0.0, velocity=None, rates=None):
    """Steps on the batches order[0:B], order[B:2B], ... (B = batch_size, the last one
    short): g the gradient of the batch's mean loss, then with rates (by parameter name)
    param -= rates * g, else SGD with momentum: velocity = momentum * velocity - lr * g,
    param += velocity (velocity by name, default zeros).

    Returns (parameters after, velocities after, stats [sum of the losses, misclassified
    count], the last batch's forward_ref and backward_ref)."""
    p = _float64_params(params)
    v = {k: np.zeros_like(a) for k, a in p.items()} if velocity is None \
        else _float64_params(velocity)
    rates = None if rates is None else _float64_params(rates)
    images, labels, order = np.asarray(images), np.asarray(labels), np.asarray(order)
    stats = np.zeros(2)
    fwd = bwd = None
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        fwd = forward_ref(p, images[batch], labels[batch], loss, j)
        bwd = backward_ref(p, fwd)
        stats += fwd["losses"].sum(), fwd["errors"]
        for name in p:
            if rates is not None:
                p[name] = p[name] - rates[name] * bwd[name]
            else:
                v[name] = momentum * v[name] - lr * bwd[name]
                p[name] = p[name] + v[name]
    return p, v, stats, fwd, bwd
