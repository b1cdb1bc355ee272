"""F6 of LeNet-5 on the GPU: a full connection fused with the squashing function.

    out = f(x @ weight.T + bias),  f(a) = A tanh(S a)
    x (N,I), weight (O,I), bias (O,) -> out (N,O);  F6: I = 120, O = 84

Launchers (outputs first, preallocated and overwritten; every argument a C-contiguous
float32 device array; any I and O, not only F6's):

    full_forward(out, x, weight, bias, version=2)
    full_backward(dx, dweight, dbias, dout, out, x, weight, version=2)
    full_backward2(hx, hweight, hbias, hout, out, x, weight, version=2)

They match kernels.reference: full_ref composed with squash_ref, and full_backward(2)_ref
composed with squash_backward(2)_ref. One set of backward kernels serves both passes
through `order` (1: gradients, 2: Gauss-Newton curvature), with f'(a) = S/A (A^2 - out^2)
taken from the forward output and g computed on the fly (never stored):

    order 1:  g = dout f'(a),    dx = g @ weight,    dweight = g.T @ x,    dbias = sum_n g
    order 2:  g = hout f'(a)^2,  hx = g @ weight^2,  hweight = g.T @ x^2,  hbias = sum_n g

Versions (forward and backward alike):

    v1  one thread per output element, reading its row and column from global memory
        (dweight and dbias together: the bias is the weight of a constant input 1; a
        float64 accumulator over the batch)
    v2  blocks of 128 threads, each thread a 4x4 register tile of outputs (a block 64 x 32
        of them); the block stages KT = 16 terms of both operands in shared memory at a
        time, and each value a thread loads feeds 4 FMAs. dweight and dbias (the weight
        of a constant input 1) are summed in float32 per slice of SPLIT_ROWS = 512
        images (grid z), then a second kernel adds the slices in order: deterministic,
        no atomics, no float64. Emulated in NumPy at the test sizes (4,099 images, F6 and
        C5 shapes) that order is 2.0e-7 to 4.2e-7 off float64, and 4.6e-7 at 60,000
        images, where one float32 sum over the batch would be 1.5e-5
        (bench/results/2026-12-02-layers-census/). Indices are unsigned 32-bit; the
        squashing function is kernels/layers.py's.

Test: pytest -q tests/test_layer_kernels.py -k full
"""

import math

import numpy as np
from numba import cuda, float32, float64, int64, uint32, void

from kernels.common import (
    check_device_array,
    device_function,
    kernel,
    squash,
    through_squash,
    u32,
    u64,
)
from kernels.conv import strided_sum
from kernels.layers import registers
from kernels.layers import squash as fast_squash

BLOCK = 128  # v1: threads per block
TM, TN = 4, 4          # v2: a thread's register tile of outputs, TM rows x TN columns
TY, TX = 16, 8         # v2: threads per block along the rows and the columns
THREADS = TY * TX      # 128
BM, BN = TY * TM, TX * TN    # v2: a block's tile of outputs, 64 rows x 32 columns
KT = 16                # v2: the sums advance KT terms per pair of shared tiles
BM_PAD, BN_PAD = 65, 33      # shared tile rows plus one padding column (literals: shared
                             # shapes must be): staging stores of one warp hit distinct banks
SPLIT_ROWS = 512       # params v2: images per batch slice, each slice summed in float32

# Kernel argument types: C-contiguous float32 device arrays; order (1 or 2) is an int64
F1, F2 = float32[::1], float32[:, ::1]
U = uint32   # v2's sizes: unsigned, so that no index needs a sign check
FLOAT64_SUMS = {"float64": "the parameter gradients sum over the whole batch (10^4+ terms) "
                           "in a float64 accumulator"}


@device_function
def power(v, order):
    """v for order 1, v^2 for order 2."""
    return v * v if order == 2 else v


@device_function
def zero_tile(acc):
    """acc (TM, TN) = 0."""
    for r in range(TM):
        for c in range(TN):
            acc[r, c] = float32(0)


@device_function
def tile_products(acc, a_s, b_s, ty, tx):
    """v2's inner loop: acc[r, c] += sum over k < KT of a_s[k, ty + TY r] b_s[k, tx + TX c],
    a thread's TM x TN tile (each value loaded feeds TN or TM FMAs)."""
    a = registers.local.array(TM, float32)
    b = registers.local.array(TN, float32)
    k = u32(0)
    while k < u32(KT):
        for r in range(u32(TM)):
            a[r] = a_s[k, ty + u32(TY) * r]
        for c in range(u32(TN)):
            b[c] = b_s[k, tx + u32(TX) * c]
        for r in range(TM):
            for c in range(TN):
                acc[r, c] += a[r] * b[c]
        k = u32(k + u32(1))


# ------------------------------------------------------------------------ forward

@kernel(void(F2, F2, F2, F1))
def full_forward_kernel_v1(out, x, weight, bias):
    # one thread per output element (n, o)
    k = cuda.grid(1)
    n_img, n_out = out.shape
    if k >= n_img * n_out:
        return
    o = k % n_out
    n = k // n_out
    acc = bias[o]
    for i in range(x.shape[1]):
        acc += x[n, i] * weight[o, i]
    out[n, o] = squash(acc)


@kernel(void(F2, F2, F2, F1))
def full_forward_kernel_v2(out, x, weight, bias):
    # one thread per TM x TN tile of out: rows n = n0 + ty + TY r, columns
    # o = o0 + tx + TX c (r < TM, c < TN), (n0, o0) the block's BM x BN tile
    a_s = cuda.shared.array((KT, BM_PAD), float32)   # a_s[k, row] = x[n0 + row, i0 + k]
    b_s = cuda.shared.array((KT, BN_PAD), float32)   # b_s[k, col] = weight[o0 + col, i0 + k]
    t = u32(cuda.threadIdx.x)
    tx, ty = t % u32(TX), t // u32(TX)
    n_img, n_in, n_out = u32(x.shape[0]), u32(x.shape[1]), u32(weight.shape[0])
    n0, o0 = u32(cuda.blockIdx.y) * u32(BM), u32(cuda.blockIdx.x) * u32(BN)
    acc = registers.local.array((TM, TN), float32)
    zero_tile(acc)
    i0 = u32(0)
    while i0 < n_in:
        for q in range(u32(BM * KT // THREADS)):   # consecutive threads: consecutive i
            e = t + q * u32(THREADS)
            row, k = e // u32(KT), e % u32(KT)
            n, i = n0 + row, i0 + k
            a_s[k, row] = x[n, i] if n < n_img and i < n_in else float32(0)
        for q in range(u32(BN * KT // THREADS)):
            e = t + q * u32(THREADS)
            col, k = e // u32(KT), e % u32(KT)
            o, i = o0 + col, i0 + k
            b_s[k, col] = weight[o, i] if o < n_out and i < n_in else float32(0)
        cuda.syncthreads()  # both tiles are staged before any thread reads them
        tile_products(acc, a_s, b_s, ty, tx)
        cuda.syncthreads()  # all reads are done before the next step overwrites the tiles
        i0 = u32(i0 + u32(KT))
    for r in range(u32(TM)):
        for c in range(u32(TN)):
            n, o = n0 + ty + u32(TY) * r, o0 + tx + u32(TX) * c
            if n < n_img and o < n_out:
                out[n, o] = fast_squash(acc[r, c] + bias[o])


# ----------------------------------------------------------------------- backward

@kernel(void(F2, F2, F2, F2, int64))
def full_backward_dx_kernel_v1(dx, dout, out, weight, order):
    # one thread per input element (n, i)
    k = cuda.grid(1)
    n_img, n_in = dx.shape
    if k >= n_img * n_in:
        return
    i = k % n_in
    n = k // n_in
    acc = float32(0)
    for o in range(weight.shape[0]):
        acc += through_squash(dout[n, o], out[n, o], order) * power(weight[o, i], order)
    dx[n, i] = acc


@kernel(void(F2, F1, F2, F2, F2, int64), allow=FLOAT64_SUMS)
def full_backward_params_kernel_v1(dweight, dbias, dout, out, x, order):
    # one thread per parameter (o, i), i = I meaning the bias, summing over the batch
    k = cuda.grid(1)
    n_out, n_in = dweight.shape
    if k >= n_out * (n_in + 1):
        return
    i = k % (n_in + 1)
    o = k // (n_in + 1)
    acc = float64(0)  # float64: a sum over the whole batch (10^4+ terms)
    for n in range(x.shape[0]):
        xv = power(x[n, i], order) if i < n_in else float32(1)
        acc += through_squash(dout[n, o], out[n, o], order) * xv
    if i < n_in:
        dweight[o, i] = float32(acc)
    else:
        dbias[o] = float32(acc)


@kernel(void(F2, F2, F2, F2, int64))
def full_backward_dx_kernel_v2(dx, dout, out, weight, order):
    # one thread per TM x TN tile of dx: rows n = n0 + ty + TY r, columns
    # i = i0 + tx + TX c, (n0, i0) the block's BM x BN tile
    a_s = cuda.shared.array((KT, BM_PAD), float32)   # a_s[k, row] = g[n0 + row, o0 + k]
    b_s = cuda.shared.array((KT, BN_PAD), float32)   # b_s[k, col] = weight[o0 + k, i0 + col]^order
    t = u32(cuda.threadIdx.x)
    tx, ty = t % u32(TX), t // u32(TX)
    n_img, n_in, n_out = u32(dx.shape[0]), u32(dx.shape[1]), u32(weight.shape[0])
    n0, i0 = u32(cuda.blockIdx.y) * u32(BM), u32(cuda.blockIdx.x) * u32(BN)
    acc = registers.local.array((TM, TN), float32)
    zero_tile(acc)
    o0 = u32(0)
    while o0 < n_out:
        for q in range(u32(BM * KT // THREADS)):   # consecutive threads: consecutive o
            e = t + q * u32(THREADS)
            row, k = e // u32(KT), e % u32(KT)
            n, o = n0 + row, o0 + k
            a_s[k, row] = (through_squash(dout[n, o], out[n, o], order)
                           if n < n_img and o < n_out else float32(0))
        for q in range(u32(BN * KT // THREADS)):   # consecutive threads: consecutive i
            e = t + q * u32(THREADS)
            k, col = e // u32(BN), e % u32(BN)
            o, i = o0 + k, i0 + col
            b_s[k, col] = power(weight[o, i], order) if o < n_out and i < n_in else float32(0)
        cuda.syncthreads()  # both tiles are staged before any thread reads them
        tile_products(acc, a_s, b_s, ty, tx)
        cuda.syncthreads()  # all reads are done before the next step overwrites the tiles
        o0 = u32(o0 + u32(KT))
    for r in range(u32(TM)):
        for c in range(u32(TN)):
            n, i = n0 + ty + u32(TY) * r, i0 + tx + u32(TX) * c
            if n < n_img and i < n_in:
                dx[n, i] = acc[r, c]


@kernel(void(F1, F1, F2, F2, F2, int64, U))
def full_backward_params_kernel_v2(dweight_part, dbias_part, dout, out, x, order, rows):
    # one thread per TM x TN tile of the parameters: inputs i = i0 + ty + TY r (i = I is
    # the bias, the weight of a constant input 1), units o = o0 + tx + TX c, (i0, o0) the
    # block's BM x BN tile, summed in float32 over the batch slice z = blockIdx.z (images
    # z rows ... (z + 1) rows - 1) into dweight_part[z] (O, I) and dbias_part[z] (O,), flat
    a_s = cuda.shared.array((KT, BM_PAD), float32)   # a_s[k, row] = x[n0 + k, i0 + row]^order
    b_s = cuda.shared.array((KT, BN_PAD), float32)   # b_s[k, col] = g[n0 + k, o0 + col]
    t = u32(cuda.threadIdx.x)
    tx, ty = t % u32(TX), t // u32(TX)
    n_img, n_in, n_out = u32(x.shape[0]), u32(x.shape[1]), u32(dout.shape[1])
    i0, o0 = u32(cuda.blockIdx.y) * u32(BM), u32(cuda.blockIdx.x) * u32(BN)
    z = u32(cuda.blockIdx.z)
    n_end = min(n_img, (z + u32(1)) * rows)
    acc = registers.local.array((TM, TN), float32)
    zero_tile(acc)
    n0 = z * rows
    while n0 < n_end:
        for q in range(u32(BM * KT // THREADS)):   # consecutive threads: consecutive i
            e = t + q * u32(THREADS)
            k, row = e // u32(BM), e % u32(BM)
            n, i = n0 + k, i0 + row
            xv = float32(0)
            if n < n_end and i < n_in:
                xv = power(x[n, i], order)
            elif n < n_end and i == n_in:
                xv = float32(1)
            a_s[k, row] = xv
        for q in range(u32(BN * KT // THREADS)):   # consecutive threads: consecutive o
            e = t + q * u32(THREADS)
            k, col = e // u32(BN), e % u32(BN)
            n, o = n0 + k, o0 + col
            b_s[k, col] = (through_squash(dout[n, o], out[n, o], order)
                           if n < n_end and o < n_out else float32(0))
        cuda.syncthreads()  # both tiles are staged before any thread reads them
        tile_products(acc, a_s, b_s, ty, tx)
        cuda.syncthreads()  # all reads are done before the next step overwrites the tiles
        n0 = u32(n0 + u32(KT))
    for r in range(u32(TM)):
        for c in range(u32(TN)):
            i, o = i0 + ty + u32(TY) * r, o0 + tx + u32(TX) * c
            if o < n_out and i < n_in:
                dweight_part[u64(z * n_out + o) * u64(n_in) + i] = acc[r, c]
            elif o < n_out and i == n_in:
                dbias_part[z * n_out + o] = acc[r, c]


@kernel(void(F1, F1, F1, F1, U))
def full_backward_params_finish_kernel(dweight, dbias, dweight_part, dbias_part, slices):
    # one thread per weight k (flat), then one per bias: adds up the batch slices in order
    k = u32(cuda.grid(1))
    n_weights, n_out = u32(dweight.shape[0]), u32(dbias.shape[0])
    if k < n_weights:
        dweight[k] = strided_sum(dweight_part, u64(k), n_weights, slices)
    elif k < n_weights + n_out:
        dbias[k - n_weights] = strided_sum(dbias_part, u64(k - n_weights), n_out, slices)


# ---------------------------------------------------------------------- launchers

def _check(name, a, shape):
    check_device_array("full", name, a, shape)


def _check_layer(x, weight, batch_out=(), batch_in=(), params=(), per_out=()):
    """Checks x (N,I) and weight (O,I), then the named arrays of shape (N,O) in
    `batch_out`, (N,I) in `batch_in`, (O,I) in `params`, (O,) in `per_out`."""
    for name, a in (("x", x), ("weight", weight)):
        if len(getattr(a, "shape", ())) != 2:
            raise ValueError(f"full: {name} must be 2-d, got shape {getattr(a, 'shape', None)}")
    n_img, n_in = x.shape
    n_out = weight.shape[0]
    _check("x", x, x.shape)
    _check("weight", weight, (n_out, n_in))
    for group, shape in ((batch_out, (n_img, n_out)), (batch_in, (n_img, n_in)),
                         (params, (n_out, n_in)), (per_out, (n_out,))):
        for name, a in group:
            _check(name, a, shape)
    return n_img, n_in, n_out


def _tiles(rows, cols):
    """The v2 grid: (column tiles, row tiles) of BM x BN outputs, each at least 1."""
    return (max(1, math.ceil(cols / BN)), max(1, math.ceil(rows / BM)))


_partials = {}  # size -> device scratch for params v2's per-slice sums, reused


def _partial_buffer(size):
    if size not in _partials:
        _partials[size] = cuda.device_array(size, dtype=np.float32)
    return _partials[size]


def full_forward(out, x, weight, bias, version=2):
    """out (N,O) = f(x (N,I) @ weight (O,I).T + bias (O,))."""
    n_img, n_in, n_out = _check_layer(x, weight, batch_out=(("out", out),),
                                      per_out=(("bias", bias),))
    if version == 1:
        full_forward_kernel_v1[max(1, math.ceil(out.size / BLOCK)), BLOCK](out, x, weight, bias)
    elif version == 2:
        full_forward_kernel_v2[_tiles(n_img, n_out), THREADS](out, x, weight, bias)
    else:
        raise ValueError(f"full: version {version!r}, expected 1 or 2")


def _order_backward(order, dx, dweight, dbias, d, out, x, weight, version):
    names = ("dx", "dweight", "dbias", "dout") if order == 1 else ("hx", "hweight", "hbias", "hout")
    n_img, n_in, n_out = _check_layer(
        x, weight, batch_out=((names[3], d), ("out", out)), batch_in=((names[0], dx),),
        params=((names[1], dweight),), per_out=((names[2], dbias),))
    if version == 1:
        full_backward_dx_kernel_v1[max(1, math.ceil(dx.size / BLOCK)), BLOCK](
            dx, d, out, weight, order)
        full_backward_params_kernel_v1[max(1, math.ceil(n_out * (n_in + 1) / BLOCK)), BLOCK](
            dweight, dbias, d, out, x, order)
    elif version == 2:
        full_backward_dx_kernel_v2[_tiles(n_img, n_in), THREADS](dx, d, out, weight, order)
        slices = max(1, math.ceil(n_img / SPLIT_ROWS))
        if slices == 1:
            dweight_part, dbias_part = dweight.reshape(dweight.size), dbias
        else:
            dweight_part = _partial_buffer(slices * n_out * n_in)
            dbias_part = _partial_buffer(slices * n_out)
        full_backward_params_kernel_v2[(*_tiles(n_in + 1, n_out), slices), THREADS](
            dweight_part, dbias_part, d, out, x, order, SPLIT_ROWS)
        if slices > 1:
            full_backward_params_finish_kernel[
                max(1, math.ceil(n_out * (n_in + 1) / BLOCK)), BLOCK](
                dweight.reshape(dweight.size), dbias, dweight_part, dbias_part, slices)
    else:
        raise ValueError(f"full: version {version!r}, expected 1 or 2")


def full_backward(dx, dweight, dbias, dout, out, x, weight, version=2):
    """Gradients from dout = dE/d(out) (N,O): dx (N,I), dweight (O,I), dbias (O,)."""
    _order_backward(1, dx, dweight, dbias, dout, out, x, weight, version)


def full_backward2(hx, hweight, hbias, hout, out, x, weight, version=2):
    """Gauss-Newton curvature from hout (N,O): hx (N,I), hweight (O,I), hbias (O,)."""
    _order_backward(2, hx, hweight, hbias, hout, out, x, weight, version)
