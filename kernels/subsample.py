"""S2 / S4 of LeNet-5 on the GPU: 2x2 subsampling with a coefficient and a bias per map,
fused with the squashing function f(a) = A tanh(S a).

    out[n,c,i,j] = f(coef[c] * s[n,c,i,j] + bias[c]),  s = the sum of x's 2x2 block (i, j)
    x (N,C,H,W) -> out (N,C,H/2,W/2);  S2: (N,6,28,28) -> (N,6,14,14),
                                       S4: (N,16,10,10) -> (N,16,5,5)

Launchers (outputs first, preallocated and overwritten; every argument a C-contiguous
float32 device array):

    subsample_forward(out, x, coef, bias)
    subsample_backward(dx, dcoef, dbias, dout, out, x, coef, version=2)
    subsample_backward2(hx, hcoef, hbias, hout, out, x, coef, version=2)

They match kernels.reference: subsample_ref composed with squash_ref, and
subsample_backward(2)_ref composed with squash_backward(2)_ref. One kernel serves both
backward passes through `order` (1: gradients, 2: Gauss-Newton curvature), with
f'(a) = S/A (A^2 - out^2) taken from the forward output:

    order 1:  g = dout f'(a),    dx = coef g,    dcoef = sum g s,    dbias = sum g
    order 2:  g = hout f'(a)^2,  hx = coef^2 g,  hcoef = sum g s^2,  hbias = sum g

(sums over n, i, j: parameter gradients are sums over the batch).

Versions of the backward:

    v1  two kernels: dx with one thread per input pixel, then coef/bias with one block
        per map reducing over the whole batch. Deterministic, but only C blocks.
    v2  one fused kernel: one thread per output pixel writes its 2x2 block of dx and adds
        its coef/bias terms to per-block partial sums in shared memory; one atomic add
        per block and map (after a launch that zeroes dcoef, dbias). Float atomics make
        the last bits of dcoef/dbias depend on the order the blocks finish in. Default.

Every kernel indexes with unsigned 32-bit integers (x of at most 2^31 elements; larger
batches get a ValueError), split into (n, c, i, j) with 32-bit divisions, and squashes with
kernels/layers.py's function (the fused path's).

Test: pytest -q tests/test_layer_kernels.py -k subsample
"""

import math

from numba import cuda, float32, int64, void

from kernels.common import check_device_array, device_function, kernel, through_squash, u32
from kernels.layers import squash as fast_squash

BLOCK = 256          # threads per block of the one-thread-per-pixel kernels
REDUCE_BLOCK = 256   # threads per block of the reducing kernels (a power of two)
MAX_BLOCKS_PER_MAP = 64  # v2: at most this many blocks per map; threads loop over the rest
MAX_ELEMENTS = 2**31     # x's elements at most: indices are unsigned 32-bit (and their
                         # strided loops must not wrap)

# Kernel argument types: C-contiguous float32 device arrays; order (1 or 2) is an int64
F1, F4 = float32[::1], float32[:, :, :, ::1]


# ---------------------------------------------------------------- device helpers

@device_function
def block_sum(x, n, c, i, j):
    """The sum of x[n, c]'s 2x2 block (i, j) (unsigned indices)."""
    y, xx = u32(2) * i, u32(2) * j
    return (x[n, c, y, xx] + x[n, c, y, xx + u32(1)]
            + x[n, c, y + u32(1), xx] + x[n, c, y + u32(1), xx + u32(1)])


@device_function
def pixel(k, n_maps, h, w):
    """(n, c, i, j) of element k of a C-ordered (N, n_maps, h, w) array: 32-bit divisions."""
    row = u32(k) // u32(w)                 # (n * n_maps + c) * h + i
    nc = row // u32(h)                        # n * n_maps + c
    n = nc // u32(n_maps)
    return n, u32(nc - n * n_maps), u32(row - nc * h), u32(k - row * w)


@cuda.jit(device=True)
def reduce_pair(buf, t):
    """Tree-sum both rows of buf (2, REDUCE_BLOCK) into buf[:, 0]. Every thread of the
    block calls it after writing buf[:, t] and a syncthreads."""
    stride = u32(REDUCE_BLOCK // 2)
    while stride > u32(0):
        if t < stride:
            buf[0, t] += buf[0, t + stride]
            buf[1, t] += buf[1, t + stride]
        cuda.syncthreads()  # this level's sums are stored before the next level reads them
        stride = u32(stride // u32(2))


# ----------------------------------------------------------------------- kernels

@kernel(void(F4, F4, F1, F1))
def subsample_forward_kernel(out, x, coef, bias):
    # one thread per output pixel (n, c, i, j)
    k = u32(cuda.grid(1))
    if k >= u32(out.size):
        return
    n, c, i, j = pixel(k, out.shape[1], out.shape[2], out.shape[3])
    out[n, c, i, j] = fast_squash(coef[c] * block_sum(x, n, c, i, j) + bias[c])


@kernel(void(F4, F4, F4, F1, int64))
def subsample_backward_dx_kernel_v1(dx, dout, out, coef, order):
    # one thread per input pixel (n, c, y, x)
    k = u32(cuda.grid(1))
    if k >= u32(dx.size):
        return
    n, c, y, xx = pixel(k, dx.shape[1], dx.shape[2], dx.shape[3])
    i, j = y // u32(2), xx // u32(2)
    g = through_squash(dout[n, c, i, j], out[n, c, i, j], order)
    cf = coef[c]
    if order == 2:
        cf = cf * cf
    dx[n, c, y, xx] = cf * g


@kernel(void(F1, F1, F4, F4, F4, int64))
def subsample_backward_params_kernel_v1(dcoef, dbias, dout, out, x, order):
    # one block per map c; its threads stride over the map's output pixels (n, i, j)
    c = u32(cuda.blockIdx.x)
    t = u32(cuda.threadIdx.x)
    h, w = u32(out.shape[2]), u32(out.shape[3])
    acc_coef = float32(0)
    acc_bias = float32(0)
    k = t
    while k < u32(out.shape[0] * h * w):
        n, _, i, j = pixel(k, 1, h, w)
        g = through_squash(dout[n, c, i, j], out[n, c, i, j], order)
        s = block_sum(x, n, c, i, j)
        if order == 2:
            s = s * s
        acc_coef += g * s
        acc_bias += g
        k = u32(k + u32(REDUCE_BLOCK))
    buf = cuda.shared.array((2, REDUCE_BLOCK), float32)
    buf[0, t] = acc_coef
    buf[1, t] = acc_bias
    cuda.syncthreads()  # every thread's partial sums are in buf
    reduce_pair(buf, t)
    if t == u32(0):
        dcoef[c] = buf[0, 0]
        dbias[c] = buf[1, 0]


@kernel(void(F4, F1, F1, F4, F4, F4, F1, int64))
def subsample_backward_kernel_v2(dx, dcoef, dbias, dout, out, x, coef, order):
    # one thread per output pixel (n, i, j) of map c = blockIdx.y, looping with a stride
    # of the grid's x extent; it writes dx's 2x2 block and one atomic per block and map
    # adds the block's partial sums to dcoef[c], dbias[c] (zeroed by the launcher)
    c = u32(cuda.blockIdx.y)
    t = u32(cuda.threadIdx.x)
    h, w = u32(out.shape[2]), u32(out.shape[3])
    cf = coef[c]
    if order == 2:
        cf = cf * cf
    acc_coef = float32(0)
    acc_bias = float32(0)
    k = u32(cuda.blockIdx.x) * u32(REDUCE_BLOCK) + t
    while k < u32(out.shape[0] * h * w):
        n, _, i, j = pixel(k, 1, h, w)
        g = through_squash(dout[n, c, i, j], out[n, c, i, j], order)
        d = cf * g
        y, xx = u32(2) * i, u32(2) * j
        dx[n, c, y, xx] = d
        dx[n, c, y, xx + u32(1)] = d
        dx[n, c, y + u32(1), xx] = d
        dx[n, c, y + u32(1), xx + u32(1)] = d
        s = block_sum(x, n, c, i, j)
        if order == 2:
            s = s * s
        acc_coef += g * s
        acc_bias += g
        k = u32(k + u32(cuda.gridDim.x) * u32(REDUCE_BLOCK))
    buf = cuda.shared.array((2, REDUCE_BLOCK), float32)
    buf[0, t] = acc_coef
    buf[1, t] = acc_bias
    cuda.syncthreads()  # every thread's partial sums are in buf
    reduce_pair(buf, t)
    if t == u32(0):
        cuda.atomic.add(dcoef, c, buf[0, 0])
        cuda.atomic.add(dbias, c, buf[1, 0])


@kernel(void(F1, F1))
def zero_pair_kernel(a, b):
    # one thread per element of a and of b (same length)
    k = cuda.grid(1)
    if k < a.size:
        a[k] = float32(0)
        b[k] = float32(0)


# --------------------------------------------------------------------- launchers

def _check(name, a, shape):
    check_device_array("subsample", name, a, shape)


def _check_layer(x, pooled, grad_x, coef, more=()):
    """Checks x (N,C,H,W) with H, W even, then the arrays of shape (N,C,H/2,W/2) in
    `pooled`, (N,C,H,W) in `grad_x`, (C,) in `coef`; returns (N, C, H/2, W/2)."""
    if len(getattr(x, "shape", ())) != 4:
        raise ValueError(f"subsample: x must be (N,C,H,W), got shape {getattr(x, 'shape', None)}")
    n_img, n_maps, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"subsample: x's map size {h}x{w} must be even")
    if x.size > MAX_ELEMENTS:
        raise ValueError(f"subsample: x has {x.size} elements, more than the kernels' "
                         f"unsigned 32-bit indices allow ({MAX_ELEMENTS}); split the batch")
    _check("x", x, x.shape)
    small = (n_img, n_maps, h // 2, w // 2)
    for name, a in pooled:
        _check(name, a, small)
    for name, a in grad_x:
        _check(name, a, x.shape)
    for name, a in coef:
        _check(name, a, (n_maps,))
    return small


def _order_backward(order, da, dcoef, dbias, d, out, x, coef, version):
    names = ("dx", "dcoef", "dbias", "dout") if order == 1 else ("hx", "hcoef", "hbias", "hout")
    n_img, n_maps, h, w = _check_layer(
        x, pooled=((names[3], d), ("out", out)), grad_x=((names[0], da),),
        coef=((names[1], dcoef), (names[2], dbias), ("coef", coef)))
    pixels = n_img * h * w  # output pixels per map
    if version == 1:
        blocks = max(1, math.ceil(da.size / BLOCK))
        subsample_backward_dx_kernel_v1[blocks, BLOCK](da, d, out, coef, order)
        subsample_backward_params_kernel_v1[n_maps, REDUCE_BLOCK](dcoef, dbias, d, out, x, order)
    elif version == 2:
        zero_pair_kernel[max(1, math.ceil(n_maps / BLOCK)), BLOCK](dcoef, dbias)
        per_map = min(MAX_BLOCKS_PER_MAP, max(1, math.ceil(pixels / REDUCE_BLOCK)))
        subsample_backward_kernel_v2[(per_map, n_maps), REDUCE_BLOCK](
            da, dcoef, dbias, d, out, x, coef, order)
    else:
        raise ValueError(f"subsample: version {version!r}, expected 1 or 2")


def subsample_forward(out, x, coef, bias):
    """out (N,C,H/2,W/2) = f(coef * 2x2 block sums of x (N,C,H,W) + bias); coef, bias (C,)."""
    _check_layer(x, pooled=(("out", out),), grad_x=(), coef=(("coef", coef), ("bias", bias)))
    blocks = max(1, math.ceil(out.size / BLOCK))
    subsample_forward_kernel[blocks, BLOCK](out, x, coef, bias)


def subsample_backward(dx, dcoef, dbias, dout, out, x, coef, version=2):
    """Gradients from dout = dE/d(out): dx (N,C,H,W), dcoef (C,), dbias (C,) (batch sums)."""
    _order_backward(1, dx, dcoef, dbias, dout, out, x, coef, version)


def subsample_backward2(hx, hcoef, hbias, hout, out, x, coef, version=2):
    """Gauss-Newton curvature from hout = d2E/d(out)^2: hx, hcoef, hbias as in backward."""
    _order_backward(2, hx, hcoef, hbias, hout, out, x, coef, version)
