"""The output layer of LeNet-5 on the GPU: 10 Euclidean RBF units over F6's 84 outputs.

    y[n,i] = sum_j (x[n,j] - centers[i,j])^2,   x (N,84), centers (10,84) -> y (N,10)

Launchers (outputs first, preallocated and overwritten; every argument a C-contiguous
float32 device array; centers must be exactly (10,84), the shape of the shared tile):

    rbf_forward(y, x, centers)
    rbf_backward(dx, dy, x, centers)          dx[n,j] = 2 sum_i dy[n,i] (x[n,j] - c[i,j])
    rbf_backward2(hx, hy, dy, x, centers)     hx[n,j] = sum_i 2 dy[n,i]
                                                        + 4 hy[n,i] (x[n,j] - c[i,j])^2

They match kernels.reference rbf_ref, rbf_backward_ref and rbf_backward2_ref (see there
why the 2 dy term of the curvature is kept). Every block first stages all 840 centers
in shared memory; each thread then reads its x row from global memory. One version each.

Test: pytest -q tests/test_layer_kernels.py -k rbf
"""

import math

from numba import cuda, float32, void

from kernels.common import check_device_array, kernel, u32

N_CLASSES = 10   # RBF units
N_INPUTS = 84    # F6 outputs, 7 x 12 bitmap pixels
BLOCK = 128      # threads per block
F2 = float32[:, ::1]  # every argument: a C-contiguous float32 device array


@cuda.jit(device=True)
def stage_centers(cs, centers):
    """Copies centers (N_CLASSES, N_INPUTS) into the shared cs, the block's threads
    striding over it; the caller syncs before reading cs."""
    k = u32(cuda.threadIdx.x)
    while k < u32(N_CLASSES * N_INPUTS):
        i, j = k // u32(N_INPUTS), k % u32(N_INPUTS)
        cs[i, j] = centers[i, j]
        k = u32(k + u32(BLOCK))


@kernel(void(F2, F2, F2))
def rbf_forward_kernel(y, x, centers):
    # one thread per output (n, i)
    cs = cuda.shared.array((N_CLASSES, N_INPUTS), float32)
    stage_centers(cs, centers)
    cuda.syncthreads()  # all centers are staged before any thread reads them
    k = u32(cuda.grid(1))
    if k >= u32(y.shape[0]) * u32(N_CLASSES):
        return
    n, i = k // u32(N_CLASSES), k % u32(N_CLASSES)
    acc = float32(0)
    j = u32(0)
    while j < u32(N_INPUTS):   # a while loop: numba's range adds a step-sign counter
        d = x[n, j] - cs[i, j]
        acc += d * d
        j = u32(j + u32(1))
    y[n, i] = acc


@kernel(void(F2, F2, F2, F2))
def rbf_backward_kernel(dx, dy, x, centers):
    # one thread per input element (n, j)
    cs = cuda.shared.array((N_CLASSES, N_INPUTS), float32)
    stage_centers(cs, centers)
    cuda.syncthreads()  # all centers are staged before any thread reads them
    k = u32(cuda.grid(1))
    if k >= u32(dx.shape[0]) * u32(N_INPUTS):
        return
    n, j = k // u32(N_INPUTS), k % u32(N_INPUTS)
    xv = x[n, j]
    acc = float32(0)
    for i in range(u32(N_CLASSES)):
        acc += dy[n, i] * (xv - cs[i, j])
    dx[n, j] = float32(2) * acc


@kernel(void(F2, F2, F2, F2, F2))
def rbf_backward2_kernel(hx, hy, dy, x, centers):
    # one thread per input element (n, j)
    cs = cuda.shared.array((N_CLASSES, N_INPUTS), float32)
    stage_centers(cs, centers)
    cuda.syncthreads()  # all centers are staged before any thread reads them
    k = u32(cuda.grid(1))
    if k >= u32(hx.shape[0]) * u32(N_INPUTS):
        return
    n, j = k // u32(N_INPUTS), k % u32(N_INPUTS)
    xv = x[n, j]
    acc_dy = float32(0)
    acc_hy = float32(0)
    for i in range(u32(N_CLASSES)):
        d = xv - cs[i, j]
        acc_dy += dy[n, i]
        acc_hy += hy[n, i] * d * d
    hx[n, j] = float32(2) * acc_dy + float32(4) * acc_hy


# ---------------------------------------------------------------------- launchers

def _check(name, a, shape):
    check_device_array("rbf", name, a, shape)


def _check_layer(x, centers, per_input=(), per_class=()):
    """Checks x (N,84) and centers (10,84), then the named arrays of shape (N,84) in
    `per_input` and (N,10) in `per_class`; returns N."""
    if len(getattr(x, "shape", ())) != 2:
        raise ValueError(f"rbf: x must be (N,{N_INPUTS}), got shape {getattr(x, 'shape', None)}")
    n_img = x.shape[0]
    _check("x", x, (n_img, N_INPUTS))
    _check("centers", centers, (N_CLASSES, N_INPUTS))
    for name, a in per_input:
        _check(name, a, (n_img, N_INPUTS))
    for name, a in per_class:
        _check(name, a, (n_img, N_CLASSES))
    return n_img


def _blocks(threads):
    return max(1, math.ceil(threads / BLOCK))


def rbf_forward(y, x, centers):
    """y (N,10) = squared distances of x (N,84) to each of centers (10,84)."""
    n_img = _check_layer(x, centers, per_class=(("y", y),))
    rbf_forward_kernel[_blocks(n_img * N_CLASSES), BLOCK](y, x, centers)


def rbf_backward(dx, dy, x, centers):
    """dx (N,84) from dy = dE/dy (N,10)."""
    n_img = _check_layer(x, centers, per_input=(("dx", dx),), per_class=(("dy", dy),))
    rbf_backward_kernel[_blocks(n_img * N_INPUTS), BLOCK](dx, dy, x, centers)


def rbf_backward2(hx, hy, dy, x, centers):
    """hx (N,84) from hy = diagonal of d2E/dy2 and dy = dE/dy (both (N,10))."""
    n_img = _check_layer(x, centers, per_input=(("hx", hx),),
                         per_class=(("hy", hy), ("dy", dy)))
    rbf_backward2_kernel[_blocks(n_img * N_INPUTS), BLOCK](hx, hy, dy, x, centers)
