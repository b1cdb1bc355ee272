"""The loss piece of LeNet-5's GPU kernels: one pattern's loss with its first and second
derivatives, a device function that the fused training step (kernels/train_step.py) and
the per-pattern SDLM kernel (kernels/sdlm.py) call per pattern.

    pattern_loss(y, label, kind, j, scale, dy, hy) -> loss

y (10,) float32 RBF penalties, label 0..9, kind a code of KINDS (kernels.architecture.
LOSS_KINDS), j eq. 9's constant; dy and hy (10,) get dE/dy and d2E/dy2 times `scale`
(1/N for the mean over a batch of N), exactly as kernels/reference.py's mse_loss_ref and
map_loss_ref give them:

    mse  (paper eq. 8):  loss = y_D,   dy = onehot,   hy = 0
    map  (paper eq. 9):  loss = y_D + log(exp(-j) + sum_i exp(-y_i)),
                         p_i = exp(-y_i) / (exp(-j) + sum_k exp(-y_k)),
                         dy = onehot - p,   hy = p (1 - p)

MAP is computed stably: every exponent is taken relative to the largest one, zmax =
max(-j, -y_0, ..., -y_9), so the largest term is exactly 1 and nothing overflows or
underflows to a zero total. The sum r of the other terms is kept separately, giving
log(total) = zmax + log1p(r) and 1 - p = r / total for the largest term without the
cancellation of 1 - p (which matters when a pattern is classified with confidence).
A label outside 0..9 makes the pattern's loss, dy and hy NaN.

Test: pytest -q tests/test_backward.py -k loss (kernels/backward.py's loss_kernel runs it
over a batch).
"""

import math

from numba import float32

from .architecture import LOSS_KINDS, N_CLASSES
from .common import device_function

KINDS = LOSS_KINDS
KIND_MSE, KIND_MAP = LOSS_KINDS["mse"], LOSS_KINDS["map"]


@device_function
def pattern_loss(y, label, kind, j, scale, dy, hy):
    """One pattern's loss from its penalties y (10,), writing dE/dy * scale into dy (10,)
    and the Gauss-Newton d2E/dy2 * scale into hy (10,). A label outside 0..9 gives NaN
    for all three."""
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
