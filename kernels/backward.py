"""Stage kernels that run each backward piece of kernels/backward_pieces.py over a batch,
in both orders (gradients and Gauss-Newton curvature). Through them
tests/test_backward_pieces.py checks every piece against kernels/reference.py, and the
compile census sees each piece alone; C5's and F6's gradients have no piece (that test
runs train_step's dense_grads_kernel).
Parameter gradients are summed over the batch in a fixed order, none in a float32 running
sum long enough to miss kernels/tolerance.py at the GPU tests' batch sizes
(tests/test_long_sums.py).

Test: pytest -q tests/test_backward.py (the stage kernels as such)
"""

from numba import config, cuda, float32, int32, uint32

from .architecture import LOSS_KINDS
from .backward_pieces import (
    C1_GRAD_TASKS,
    C2_DELTA_TASKS,
    C3_BANDS,
    GRAD_SUMS,
    c1_grad_sums,
    c1_map_sum,
    c3_delta,
    c3_first_pair,
    c3_grad_sums,
    c3_pair_sum,
    c3_weight_sum,
    dense_delta,
    pattern_loss,
    rbf_delta,
    subsample_delta,
    subsample_grads,
)
from .common import cdiv, kernel
from .forward_pieces import C1_MAPS, C3_MAPS, C3_MAX_IN, IMAGES, K

THREADS = 128
# the one-thread-per-element kernels stride over their elements with at most this many
# blocks: a harness needs no more, and the simulator creates a Python thread per thread
MAX_BLOCKS = 8 if config.ENABLE_CUDASIM else 1024
C1_PART_LEN = C1_GRAD_TASKS * GRAD_SUMS
C3_PART_LEN = C3_MAPS * C3_MAX_IN * C3_BANDS * GRAD_SUMS   # any table: up to 96 pairs


@kernel("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[:, ::1], "
        "float32[::1], int32)")
def rbf_delta_kernel(d6, dy, hy, x6, centers, order):
    # threads stride over (image n, F6 unit j)
    for i in range(uint32(cuda.grid(1)), uint32(d6.shape[0]) * uint32(d6.shape[1]),
                   uint32(cuda.gridsize(1))):
        n, j = i // uint32(d6.shape[1]), i % uint32(d6.shape[1])
        rbf_delta(d6[n], dy[n], hy[n], x6[n], centers, order, j)


@kernel("void(float32[:, ::1], float32[:, ::1], float32[::1], float32[:, ::1], int32)")
def dense_delta_kernel(dx, d, w, x, order):
    # threads stride over (image n, input unit i)
    n_in = uint32(dx.shape[1])
    for t in range(uint32(cuda.grid(1)), uint32(dx.shape[0]) * n_in, uint32(cuda.gridsize(1))):
        n, i = t // n_in, t % n_in
        dense_delta(dx[n], d[n], w, x[n], n_in, uint32(d.shape[1]), order, i)


@kernel("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[::1], int32, int32)")
def subsample_delta_kernel(dx, d, x, coef, size, order):
    # threads stride over (image n, input pixel k); the output size at run time
    per = uint32(dx.shape[1])
    for t in range(uint32(cuda.grid(1)), uint32(dx.shape[0]) * per, uint32(cuda.gridsize(1))):
        n, k = t // per, t % per
        subsample_delta(dx[n], d[n], x[n], coef, uint32(coef.shape[0]), uint32(size), order, k)


@kernel("void(float32[::1], float32[::1], float32[::1], float32[::1], int32, int32)")
def subsample_grads_kernel(dcoef, dbias, d, x, size, order):
    # one block per map m; thread t sums images t, t + THREADS, ... (each image's sum
    # first), then the block adds its threads' sums in a fixed tree: 803,404 terms for S2
    # at 4,099 images in one running float32 sum lost too many digits
    sums = cuda.shared.array((2, THREADS), float32)
    m = uint32(cuda.blockIdx.x)
    t = uint32(cuda.threadIdx.x)
    per = uint32(dcoef.shape[0]) * uint32(size) * uint32(size)
    gc = float32(0.0)
    gb = float32(0.0)
    for n in range(t, uint32(d.shape[0]) // per, uint32(THREADS)):
        c, b = subsample_grads(d[n * per:], per, x[n * uint32(4) * per:], uint32(4) * per, 1,
                               uint32(size), order, m)
        gc += c
        gb += b
    sums[0, t] = gc
    sums[1, t] = gb
    half = uint32(THREADS // 2)
    while half > uint32(0):
        cuda.syncthreads()  # the previous level's sums are written
        if t < half:
            sums[0, t] += sums[0, t + half]
            sums[1, t] += sums[1, t + half]
        half = half // uint32(2)
    if t == uint32(0):
        dcoef[m] = sums[0, 0]
        dbias[m] = sums[1, 0]


@kernel("void(float32[:, :, :, ::1], float32[::1], float32[:, ::1], float32[:, ::1], int32)")
def c1_grads_kernel(dw, db, d, x, order):
    # one block; one thread per c1_grad_sums task (map, band of 4 rows, half row) summing
    # over the batch into shared partial sums, then one per (map, weight or bias)
    part = cuda.shared.array(C1_PART_LEN, float32)
    t = uint32(cuda.threadIdx.x)
    n_img = uint32(d.shape[0])
    for task in range(t, uint32(C1_GRAD_TASKS), uint32(THREADS)):
        for n in range(n_img):
            c1_grad_sums(part, d[n], x[n], task, order, n > 0)
        if n_img == 0:
            for q in range(GRAD_SUMS):
                part[task * uint32(GRAD_SUMS) + q] = float32(0.0)
    cuda.syncthreads()  # every task's sums are in shared memory
    for s in range(t, uint32(C1_MAPS * GRAD_SUMS), uint32(THREADS)):
        m, q = s // uint32(GRAD_SUMS), s % uint32(GRAD_SUMS)
        total = c1_map_sum(part, m, q)
        if q < uint32(K * K):
            dw[m, 0, q // uint32(K), q % uint32(K)] = total
        else:
            db[m] = total


@kernel("void(float32[:, :, :, ::1], float32[::1], float32[:, ::1], float32[:, ::1], "
        "int32[::1], int32)")
def c3_grads_kernel(dw, db, d, x, table, order):
    # one block; one thread per c3_grad_sums task (connected pair, band of 5 rows: 120 for
    # the paper's table) summing over the batch into shared partial sums, then one per
    # (C3 map, S2 map, weight) or bias; pairs off the table get exact zeros
    part = cuda.shared.array(C3_PART_LEN, float32)
    t = uint32(cuda.threadIdx.x)
    n_img = uint32(d.shape[0])
    for task in range(t, uint32(C3_BANDS) * c3_first_pair(table, C3_MAPS), uint32(THREADS)):
        for n in range(n_img):
            c3_grad_sums(part, d[n], x[n], table, task, order, n > 0)
        if n_img == 0:
            for q in range(GRAD_SUMS):
                part[task * uint32(GRAD_SUMS) + q] = float32(0.0)
    cuda.syncthreads()  # every task's sums are in shared memory
    for s in range(t, uint32(C3_MAPS * C1_MAPS * K * K + C3_MAPS), uint32(THREADS)):
        if s < uint32(C3_MAPS * C1_MAPS * K * K):
            m, c, q = s // uint32(C1_MAPS * K * K), (s // uint32(K * K)) % uint32(C1_MAPS), \
                s % uint32(K * K)
            dw[m, c, q // uint32(K), q % uint32(K)] = c3_weight_sum(part, table, m, c, q)
        else:   # every pair of map m sums the same delta: take its first pair's
            m = s - uint32(C3_MAPS * C1_MAPS * K * K)
            db[m] = c3_pair_sum(part, c3_first_pair(table, m), uint32(K * K))


@kernel("void(float32[:, ::1], float32[:, ::1], float32[::1], float32[:, ::1], int32[::1], "
        "int32)")
def c3_delta_kernel(d2, d3, w3, x2, out_table, order):
    # one block per IMAGES images; threads over (task, image), C2_DELTA_TASKS an image
    n0 = uint32(cuda.blockIdx.x) * uint32(IMAGES)
    here = min(uint32(IMAGES), uint32(d2.shape[0]) - n0)
    for q in range(uint32(cuda.threadIdx.x), here * uint32(C2_DELTA_TASKS), uint32(THREADS)):
        n = n0 + q % here
        c3_delta(d2[n], d3[n], w3, x2[n], out_table, q // here, order)


@kernel("void(float32[::1], float32[:, ::1], float32[:, ::1], float32[:, ::1], int32[::1], "
        "int32, float32, float32)")
def loss_kernel(losses, dy, hy, y, labels, kind, j, scale):
    # threads stride over the images
    for n in range(uint32(cuda.grid(1)), uint32(y.shape[0]), uint32(cuda.gridsize(1))):
        losses[n] = pattern_loss(y[n], labels[n], kind, j, scale, dy[n], hy[n])


# ---------------------------------------------------------------------- launchers

def _order(order):
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (gradients) or 2 (Gauss-Newton), not {order!r}")
    return int32(order)


def _blocks(count):
    return max(1, min(MAX_BLOCKS, cdiv(count, THREADS)))


def rbf_delta_all(d6, dy, hy, x6, centers, order):
    rbf_delta_kernel[_blocks(d6.size), THREADS](d6, dy, hy, x6, centers, _order(order))


def dense_delta_all(dx, d, w, x, order):
    dense_delta_kernel[_blocks(dx.size), THREADS](dx, d, w, x, _order(order))


def _size(d, maps):
    return int(round((d.shape[1] // maps) ** 0.5))


def subsample_delta_all(dx, d, x, coef, order):
    subsample_delta_kernel[_blocks(dx.size), THREADS](
        dx, d, x, coef, _size(d, coef.shape[0]), _order(order))


def subsample_grads_all(dcoef, dbias, d, x, order):
    subsample_grads_kernel[dcoef.shape[0], THREADS](
        dcoef, dbias, d.reshape(d.size), x.reshape(x.size), _size(d, dcoef.shape[0]),
        _order(order))


def c1_grads_all(dw, db, d, x, order):
    c1_grads_kernel[1, THREADS](dw, db, d, x, _order(order))


def c3_grads_all(dw, db, d, x, table, order):
    c3_grads_kernel[1, THREADS](dw, db, d, x, table, _order(order))


def c3_delta_all(d2, d3, w3, x2, out_table, order):
    n = d2.shape[0]
    if n:
        c3_delta_kernel[cdiv(n, IMAGES), THREADS](d2, d3, w3, x2, out_table, _order(order))


def loss_all(losses, dy, hy, y, labels, kind, j):
    """Per-pattern losses (N,) and dy, hy (N,10) of their mean (scale 1/N, as
    kernels/reference.py's losses give them), kind "mse" or "map"."""
    n = y.shape[0]
    loss_kernel[_blocks(n), THREADS](losses, dy, hy, y, labels, int32(LOSS_KINDS[kind]),
                                     float32(j), float32(1.0 / max(n, 1)))
