"""The losses of LeNet-5 on the GPU, per pattern, with their first and second derivatives.

    loss_forward_backward(losses, dy, hy, y, labels, kind, j)

y (N,10) float32 RBF penalties, labels (N,) int32 -> losses (N,), dy (N,10), hy (N,10),
all float32 device arrays, overwritten. kind is "mse" or "map"; j the MAP constant
(kernels.reference.MAP_J by default in the model). losses are per pattern; dy and hy are
the derivatives of their MEAN (so already divided by N), exactly as mse_loss_ref and
map_loss_ref return them:

    mse  (paper eq. 8):  loss = y_D,   dy = onehot / N,   hy = 0
    map  (paper eq. 9):  loss = y_D + log(exp(-j) + sum_i exp(-y_i)),
                         p_i = exp(-y_i) / (exp(-j) + sum_k exp(-y_k)),
                         dy = (onehot - p) / N,   hy = p (1 - p) / N

MAP is computed stably: every exponent is taken relative to the largest one, zmax =
max(-j, -y_0, ..., -y_9), so the largest term is exactly 1 and nothing overflows or
underflows to a zero total. The sum r of the other terms is kept separately, giving
log(total) = zmax + log1p(r) and 1 - p = r / total for the largest term without the
cancellation of 1 - p (which matters when a pattern is classified with confidence).
A label outside 0..9 (which the launcher cannot see without a copy) makes that row NaN.

One thread per pattern; one version.

Test: pytest -q tests/test_layer_kernels.py -k loss
"""

import math

import numpy as np
from numba import cuda, float32, int32, int64, void

from kernels.architecture import LOSS_KINDS, N_CLASSES
from kernels.common import check_device_array, device_function, kernel

BLOCK = 128  # threads per block
KINDS = LOSS_KINDS
KIND_MSE, KIND_MAP = LOSS_KINDS["mse"], LOSS_KINDS["map"]


@device_function
def pattern_loss(y, label, kind, j, scale, dy, hy):
    """One pattern's loss from its penalties y (10,), writing dE/dy * scale into dy (10,)
    and the Gauss-Newton d2E/dy2 * scale into hy (10,). A label outside 0..9 gives NaN
    for all three. Shared by this module's kernel and kernels/sdlm.py."""
    if label < 0 or label >= N_CLASSES:
        for i in range(N_CLASSES):
            dy[i] = math.nan
            hy[i] = math.nan
        return float32(math.nan)

    if kind == KIND_MSE:
        for i in range(N_CLASSES):
            dy[i] = scale if i == label else float32(0)
            hy[i] = float32(0)
        return y[label]

    # MAP: the exponents are z = (-j, -y_0, ..., -y_9); imax = -1 stands for -j
    zmax = -j
    imax = -1
    for i in range(N_CLASSES):
        if -y[i] > zmax:
            zmax = -y[i]
            imax = i
    # r = the sum of every term exp(z - zmax) but the largest, which is exactly 1
    r = float32(0) if imax == -1 else math.exp(-j - zmax)
    for i in range(N_CLASSES):
        if i != imax:
            r += math.exp(-y[i] - zmax)
    total = float32(1) + r
    for i in range(N_CLASSES):
        e = math.exp(-y[i] - zmax)
        p = e / total
        q = (r if i == imax else total - e) / total  # 1 - p, without cancellation
        dy[i] = (q if i == label else -p) * scale
        hy[i] = p * q * scale
    return (y[label] + zmax) + math.log1p(r)


@kernel(void(float32[::1], float32[:, ::1], float32[:, ::1], float32[:, ::1], int32[::1],
             int64, float32, float32))
def loss_forward_backward_kernel(losses, dy, hy, y, labels, kind, j, inv_n):
    # one thread per pattern n
    n = cuda.grid(1)
    if n < y.shape[0]:
        losses[n] = pattern_loss(y[n], labels[n], kind, j, inv_n, dy[n], hy[n])


def loss_forward_backward(losses, dy, hy, y, labels, kind, j):
    """Per-pattern losses (N,) and dy, hy (N,10) of their mean, from y (N,10) and
    labels (N,) int32; kind "mse" or "map", j the MAP constant (unused by mse)."""
    if kind not in KINDS:
        raise ValueError(f"loss: kind {kind!r}, expected one of {sorted(KINDS)}")
    if len(getattr(y, "shape", ())) != 2:
        raise ValueError(f"loss: y must be (N,{N_CLASSES}), got shape {getattr(y, 'shape', None)}")
    n_img = y.shape[0]
    check_device_array("loss", "y", y, (n_img, N_CLASSES), np.float32)
    check_device_array("loss", "labels", labels, (n_img,), np.int32)
    check_device_array("loss", "losses", losses, (n_img,), np.float32)
    check_device_array("loss", "dy", dy, (n_img, N_CLASSES), np.float32)
    check_device_array("loss", "hy", hy, (n_img, N_CLASSES), np.float32)
    if not math.isfinite(j):
        raise ValueError(f"loss: j must be finite, got {j!r}")
    inv_n = np.float32(1.0 / n_img) if n_img else np.float32(0)
    loss_forward_backward_kernel[max(1, math.ceil(n_img / BLOCK)), BLOCK](
        losses, dy, hy, y, labels, KINDS[kind], np.float32(j), inv_n)
