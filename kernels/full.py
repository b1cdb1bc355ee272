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
        (dweight and dbias together: the bias is the weight of a constant input 1)
    v2  TILE x TILE blocks of threads, one per output element, that stage TILE-wide slices
        of both operands in shared memory and take each element from there TILE times
        (dweight's blocks loop over the batch; dbias comes from the first column of blocks)

Test: pytest -q tests/test_layer_kernels.py -k full
"""

import math

from numba import cuda, float32, float64, int64, void

from kernels.common import check_device_array, device_function, kernel, squash, through_squash

BLOCK = 128  # v1: threads per block
TILE = 16    # v2: blocks of TILE x TILE threads, shared tiles of TILE x TILE floats
TILE_PAD = TILE + 1  # a tile row plus one padding column (a literal: shared shapes must be)

# Kernel argument types: C-contiguous float32 device arrays; order (1 or 2) is an int64
F1, F2 = float32[::1], float32[:, ::1]
FLOAT64_SUMS = {"float64": "the parameter gradients sum over the whole batch (10^4+ terms) "
                           "in a float64 accumulator"}


@device_function
def power(v, order):
    """v for order 1, v^2 for order 2."""
    return v * v if order == 2 else v


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
    # one thread per output element (n, o) = (tile row + ty, tile column + tx)
    xs = cuda.shared.array((TILE, TILE), float32)      # xs[ty, k] = x[n0 + ty, i0 + k]
    ws = cuda.shared.array((TILE, TILE_PAD), float32)  # ws[r, k] = weight[o0 + r, i0 + k];
    # the padding column puts ws[tx, k] of the 16 tx in 16 different banks
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    n_img, n_in = x.shape
    n_out = weight.shape[0]
    n = cuda.blockIdx.y * TILE + ty
    o = cuda.blockIdx.x * TILE + tx
    o_row = cuda.blockIdx.x * TILE + ty  # the weight row this thread stages
    acc = float32(0)
    for i0 in range(0, n_in, TILE):
        i = i0 + tx
        xs[ty, tx] = x[n, i] if n < n_img and i < n_in else float32(0)
        ws[ty, tx] = weight[o_row, i] if o_row < n_out and i < n_in else float32(0)
        cuda.syncthreads()  # both tiles are staged before any thread reads them
        for k in range(TILE):
            acc += xs[ty, k] * ws[tx, k]
        cuda.syncthreads()  # all reads are done before the next step overwrites the tiles
    if n < n_img and o < n_out:
        out[n, o] = squash(acc + bias[o])


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
    # one thread per input element (n, i) = (tile row + ty, tile column + tx)
    gs = cuda.shared.array((TILE, TILE), float32)  # gs[ty, k] = g[n0 + ty, o0 + k]
    ws = cuda.shared.array((TILE, TILE), float32)  # ws[k, tx] = weight[o0 + k, i0 + tx]^order
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    n_img, n_in = dx.shape
    n_out = weight.shape[0]
    n = cuda.blockIdx.y * TILE + ty
    i = cuda.blockIdx.x * TILE + tx
    acc = float32(0)
    for o0 in range(0, n_out, TILE):
        o = o0 + tx  # the column of g this thread stages
        gs[ty, tx] = (through_squash(dout[n, o], out[n, o], order)
                      if n < n_img and o < n_out else float32(0))
        o = o0 + ty  # the row of weight this thread stages
        ws[ty, tx] = power(weight[o, i], order) if o < n_out and i < n_in else float32(0)
        cuda.syncthreads()  # both tiles are staged before any thread reads them
        for k in range(TILE):
            acc += gs[ty, k] * ws[k, tx]
        cuda.syncthreads()  # all reads are done before the next step overwrites the tiles
    if n < n_img and i < n_in:
        dx[n, i] = acc


@kernel(void(F2, F1, F2, F2, F2, int64), allow=FLOAT64_SUMS)
def full_backward_params_kernel_v2(dweight, dbias, dout, out, x, order):
    # one thread per weight (o, i) = (tile row + ty, tile column + tx), looping over the
    # batch in TILE-row steps; the threads tx = 0 of the first column of blocks also
    # write dbias[o]
    gs = cuda.shared.array((TILE, TILE), float32)  # gs[k, ty] = g[n0 + k, o0 + ty]
    xs = cuda.shared.array((TILE, TILE), float32)  # xs[k, tx] = x[n0 + k, i0 + tx]^order
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    n_out, n_in = dweight.shape
    n_img = x.shape[0]
    o0 = cuda.blockIdx.y * TILE
    o = o0 + ty
    i = cuda.blockIdx.x * TILE + tx
    acc = float64(0)  # float64: sums over the whole batch (10^4+ terms)
    acc_bias = float64(0)
    for n0 in range(0, n_img, TILE):
        n = n0 + ty  # the batch row this thread stages
        go = o0 + tx
        gs[ty, tx] = (through_squash(dout[n, go], out[n, go], order)
                      if n < n_img and go < n_out else float32(0))
        xs[ty, tx] = power(x[n, i], order) if n < n_img and i < n_in else float32(0)
        cuda.syncthreads()  # both tiles are staged before any thread reads them
        for k in range(TILE):
            g = gs[k, ty]
            acc += g * xs[k, tx]
            acc_bias += g
        cuda.syncthreads()  # all reads are done before the next step overwrites the tiles
    if o < n_out and i < n_in:
        dweight[o, i] = float32(acc)
    if cuda.blockIdx.x == 0 and tx == 0 and o < n_out:
        dbias[o] = float32(acc_bias)


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
    """The v2 grid: (column tiles, row tiles), each at least 1."""
    return (max(1, math.ceil(cols / TILE)), max(1, math.ceil(rows / TILE)))


def full_forward(out, x, weight, bias, version=2):
    """out (N,O) = f(x (N,I) @ weight (O,I).T + bias (O,))."""
    n_img, n_in, n_out = _check_layer(x, weight, batch_out=(("out", out),),
                                      per_out=(("bias", bias),))
    if version == 1:
        full_forward_kernel_v1[max(1, math.ceil(out.size / BLOCK)), BLOCK](out, x, weight, bias)
    elif version == 2:
        full_forward_kernel_v2[_tiles(n_img, n_out), (TILE, TILE)](out, x, weight, bias)
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
        full_backward_dx_kernel_v2[_tiles(n_img, n_in), (TILE, TILE)](dx, d, out, weight, order)
        full_backward_params_kernel_v2[_tiles(n_out, n_in), (TILE, TILE)](
            dweight, dbias, d, out, x, order)
    else:
        raise ValueError(f"full: version {version!r}, expected 1 or 2")


def full_backward(dx, dweight, dbias, dout, out, x, weight, version=2):
    """Gradients from dout = dE/d(out) (N,O): dx (N,I), dweight (O,I), dbias (O,)."""
    _order_backward(1, dx, dweight, dbias, dout, out, x, weight, version)


def full_backward2(hx, hweight, hbias, hout, out, x, weight, version=2):
    """Gauss-Newton curvature from hout (N,O): hx (N,I), hweight (O,I), hbias (O,)."""
    _order_backward(2, hx, hweight, hbias, hout, out, x, weight, version)
