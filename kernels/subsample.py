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

Test: pytest -q tests/test_layer_kernels.py -k subsample
"""

import math

from numba import cuda, float32, int64, void

from kernels.common import check_device_array, device_function, kernel, squash, through_squash

BLOCK = 256          # threads per block of the one-thread-per-pixel kernels
REDUCE_BLOCK = 256   # threads per block of the reducing kernels (a power of two)
MAX_BLOCKS_PER_MAP = 64  # v2: at most this many blocks per map; threads loop over the rest

# Kernel argument types: C-contiguous float32 device arrays; order (1 or 2) is an int64
F1, F4 = float32[::1], float32[:, :, :, ::1]


# ---------------------------------------------------------------- device helpers

@device_function
def block_sum(x, n, c, i, j):
    """The sum of x[n, c]'s 2x2 block (i, j)."""
    return (x[n, c, 2 * i, 2 * j] + x[n, c, 2 * i, 2 * j + 1]
            + x[n, c, 2 * i + 1, 2 * j] + x[n, c, 2 * i + 1, 2 * j + 1])


@cuda.jit(device=True)
def reduce_pair(buf, t):
    """Tree-sum both rows of buf (2, REDUCE_BLOCK) into buf[:, 0]. Every thread of the
    block calls it after writing buf[:, t] and a syncthreads."""
    stride = REDUCE_BLOCK // 2
    while stride > 0:
        if t < stride:
            buf[0, t] += buf[0, t + stride]
            buf[1, t] += buf[1, t + stride]
        cuda.syncthreads()  # this level's sums are stored before the next level reads them
        stride //= 2


# ----------------------------------------------------------------------- kernels

@kernel(void(F4, F4, F1, F1))
def subsample_forward_kernel(out, x, coef, bias):
    # one thread per output pixel (n, c, i, j)
    k = cuda.grid(1)
    n_img, n_maps, h, w = out.shape
    if k >= n_img * n_maps * h * w:
        return
    j = k % w
    i = (k // w) % h
    c = (k // (w * h)) % n_maps
    n = k // (w * h * n_maps)
    out[n, c, i, j] = squash(coef[c] * block_sum(x, n, c, i, j) + bias[c])


@kernel(void(F4, F4, F4, F1, int64))
def subsample_backward_dx_kernel_v1(dx, dout, out, coef, order):
    # one thread per input pixel (n, c, y, x)
    k = cuda.grid(1)
    n_img, n_maps, h, w = dx.shape
    if k >= n_img * n_maps * h * w:
        return
    xx = k % w
    y = (k // w) % h
    c = (k // (w * h)) % n_maps
    n = k // (w * h * n_maps)
    g = through_squash(dout[n, c, y // 2, xx // 2], out[n, c, y // 2, xx // 2], order)
    cf = coef[c]
    if order == 2:
        cf = cf * cf
    dx[n, c, y, xx] = cf * g


@kernel(void(F1, F1, F4, F4, F4, int64))
def subsample_backward_params_kernel_v1(dcoef, dbias, dout, out, x, order):
    # one block per map c; its threads stride over the map's output pixels (n, i, j)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    n_img, n_maps, h, w = out.shape
    acc_coef = float32(0)
    acc_bias = float32(0)
    for k in range(t, n_img * h * w, REDUCE_BLOCK):
        j = k % w
        i = (k // w) % h
        n = k // (w * h)
        g = through_squash(dout[n, c, i, j], out[n, c, i, j], order)
        s = block_sum(x, n, c, i, j)
        if order == 2:
            s = s * s
        acc_coef += g * s
        acc_bias += g
    buf = cuda.shared.array((2, REDUCE_BLOCK), float32)
    buf[0, t] = acc_coef
    buf[1, t] = acc_bias
    cuda.syncthreads()  # every thread's partial sums are in buf
    reduce_pair(buf, t)
    if t == 0:
        dcoef[c] = buf[0, 0]
        dbias[c] = buf[1, 0]


@kernel(void(F4, F1, F1, F4, F4, F4, F1, int64))
def subsample_backward_kernel_v2(dx, dcoef, dbias, dout, out, x, coef, order):
    # one thread per output pixel (n, i, j) of map c = blockIdx.y, looping with a stride
    # of the grid's x extent; it writes dx's 2x2 block and one atomic per block and map
    # adds the block's partial sums to dcoef[c], dbias[c] (zeroed by the launcher)
    c = cuda.blockIdx.y
    t = cuda.threadIdx.x
    n_img, n_maps, h, w = out.shape
    cf = coef[c]
    if order == 2:
        cf = cf * cf
    acc_coef = float32(0)
    acc_bias = float32(0)
    start = cuda.blockIdx.x * REDUCE_BLOCK + t
    for k in range(start, n_img * h * w, cuda.gridDim.x * REDUCE_BLOCK):
        j = k % w
        i = (k // w) % h
        n = k // (w * h)
        g = through_squash(dout[n, c, i, j], out[n, c, i, j], order)
        d = cf * g
        dx[n, c, 2 * i, 2 * j] = d
        dx[n, c, 2 * i, 2 * j + 1] = d
        dx[n, c, 2 * i + 1, 2 * j] = d
        dx[n, c, 2 * i + 1, 2 * j + 1] = d
        s = block_sum(x, n, c, i, j)
        if order == 2:
            s = s * s
        acc_coef += g * s
        acc_bias += g
    buf = cuda.shared.array((2, REDUCE_BLOCK), float32)
    buf[0, t] = acc_coef
    buf[1, t] = acc_bias
    cuda.syncthreads()  # every thread's partial sums are in buf
    reduce_pair(buf, t)
    if t == 0:
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
