"""Training helpers on the GPU: parameter updates, filling, batch gathering, and counting
errors and losses on the device so the training loop need not read back every batch.

All elementwise launchers take C-contiguous device arrays of any (matching) shape, view
them flat, and run one thread per element. Scalars are converted to the arrays' dtype.

    sgd_update(param, grad, velocity, lr, momentum)   velocity = momentum velocity - lr grad;
                                                      param += velocity          (in place)
    sdlm_update(param, grad, hess, eta, mu)           param -= eta / (mu + hess) grad
    scale_add(acc, x, scale)                          acc += scale x
    fill(x, value)                                    x[...] = value  (float32/64, int32/64, uint8)
    gather(out_images, out_labels, images, labels, index)
                                                      out_images[b] = images[index[b]],
                                                      out_labels[b] = labels[index[b]]
    argmin_rows(out, y)                               out[n] = argmin_i y[n, i] (first on ties)
    count_errors(out, y, labels)                      out[0] += #{n: argmin y[n] != labels[n]}
    sum_into(out, x)                                  out[0] += sum x

The parameter arrays are float32 (velocity, hess, acc likewise); images (N_all, ...) of
any image shape, float32; labels int32; index int32 or int64 (a value outside 0..N_all-1
gives a NaN image and label -1, as the kernel cannot raise);
count_errors' out int32, int64, float32 or float64 of shape (1,); sum_into's out float32
or float64 of shape (1,) (float64 spares a long running total float32's rounding; each
block's partial sum is still a float32 one).
count_errors and sum_into ACCUMULATE; the others overwrite or update in place.
gather, argmin_rows and count_errors index with unsigned 32-bit integers (gather refuses
more than MAX_GATHER output elements with a ValueError) and walk a row with a while loop
(numba's range over a runtime bound adds a step-sign counter to every trip).
count_errors does one atomic add per wrong row; sum_into sums each block's elements in
shared memory and does one atomic add per block.

Test: pytest -q tests/test_layer_kernels.py -k update
"""

import math

import numpy as np
from numba import cuda, float32, float64, int32, int64, uint8, void

from kernels.common import device_function, kernel, u32

BLOCK = 256  # threads per block (a power of two: sum_into reduces a block as a tree)
MAX_GATHER = 2**32 - BLOCK   # gather's output elements at most (unsigned 32-bit indices)

# Kernel argument types: C-contiguous device arrays (the launchers pass flat views)
F1, F2, I1 = float32[::1], float32[:, ::1], int32[::1]
FILL_TYPES = (float32, float64, int32, int64, uint8)   # fill's dtypes
COUNT_TYPES = (int32, int64, float32, float64)         # count_errors' counter dtypes
SUM_TYPES = (float32, float64)                         # sum_into's total dtypes
FLOAT64_TOTAL = {"float64": "the float64 signature: a running total that spares float32 rounding"}


# -------------------------------------------------------------------- kernels

@kernel(void(F1, F1, F1, float32, float32))
def sgd_update_kernel(param, grad, velocity, lr, momentum):
    # one thread per element k
    k = cuda.grid(1)
    if k < param.size:
        v = momentum * velocity[k] - lr * grad[k]
        velocity[k] = v
        param[k] += v


@kernel(void(F1, F1, F1, float32, float32))
def sdlm_update_kernel(param, grad, hess, eta, mu):
    # one thread per element k
    k = cuda.grid(1)
    if k < param.size:
        param[k] -= eta / (mu + hess[k]) * grad[k]


@kernel(void(F1, F1, float32))
def scale_add_kernel(acc, x, scale):
    # one thread per element k
    k = cuda.grid(1)
    if k < acc.size:
        acc[k] += scale * x[k]


@kernel(*(void(t[::1], t) for t in FILL_TYPES))
def fill_kernel(x, value):
    # one thread per element k
    k = cuda.grid(1)
    if k < x.size:
        x[k] = value


@kernel(void(F2, I1, F2, I1, I1), void(F2, I1, F2, I1, int64[::1]))
def gather_kernel(out_images, out_labels, images, labels, index):
    # one thread per output pixel (b, p) of the flattened (B, P) out_images; p = 0 also
    # copies the label
    k = u32(cuda.grid(1))
    n_pixels = u32(out_images.shape[1])
    if k >= u32(out_images.shape[0]) * n_pixels:
        return
    b = k // n_pixels
    p = k - b * n_pixels
    src = index[b]
    if src < 0 or src >= images.shape[0]:
        out_images[b, p] = math.nan
        if p == 0:
            out_labels[b] = -1
        return
    out_images[b, p] = images[src, p]
    if p == 0:
        out_labels[b] = labels[src]


@device_function
def argmin_row(y, n):
    """The first i with the smallest y[n, i]."""
    best = u32(0)
    low = y[n, 0]
    i = u32(1)
    while i < u32(y.shape[1]):   # a while loop: numba's range adds a step-sign counter
        if y[n, i] < low:
            low = y[n, i]
            best = i
        i = u32(i + u32(1))
    return best


@kernel(void(I1, F2))
def argmin_rows_kernel(out, y):
    # one thread per row n
    n = u32(cuda.grid(1))
    if n < u32(y.shape[0]):
        out[n] = argmin_row(y, n)


@kernel(*(void(t[::1], F2, I1, t) for t in COUNT_TYPES), allow=FLOAT64_TOTAL)
def count_errors_kernel(out, y, labels, one):
    # one thread per row n; an atomic add of 1 per wrong row
    n = u32(cuda.grid(1))
    if n < u32(y.shape[0]) and argmin_row(y, n) != labels[n]:
        cuda.atomic.add(out, 0, one)


@kernel(*(void(t[::1], F1) for t in SUM_TYPES), allow=FLOAT64_TOTAL)
def sum_into_kernel(out, x):
    # one thread per element k; the block's sum is reduced in shared memory and added to
    # out[0] with one atomic per block
    buf = cuda.shared.array(BLOCK, float32)
    t = cuda.threadIdx.x
    k = cuda.grid(1)
    buf[t] = x[k] if k < x.size else float32(0)
    cuda.syncthreads()  # every thread's element is in buf
    stride = BLOCK // 2
    while stride > 0:
        if t < stride:
            buf[t] += buf[t + stride]
        cuda.syncthreads()  # this level's sums are stored before the next level reads them
        stride //= 2
    if t == 0:
        cuda.atomic.add(out, 0, buf[0])


# ------------------------------------------------------------------ launchers

def _device(name, a, dtypes):
    """ValueError unless `a` is a C-contiguous device array with a dtype in `dtypes`."""
    if isinstance(a, np.ndarray):
        raise ValueError(f"update: {name} is a host array; pass a device array")
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise ValueError(f"update: {name} is a {type(a).__name__}, not a device array")
    if np.dtype(a.dtype) not in [np.dtype(d) for d in dtypes]:
        names = " or ".join(np.dtype(d).name for d in dtypes)
        raise ValueError(f"update: {name} has dtype {a.dtype}, expected {names}")
    if not (a.is_c_contiguous() if hasattr(a, "is_c_contiguous") else a.flags.c_contiguous):
        raise ValueError(f"update: {name} must be C-contiguous")


def _same_shape(first, *others):
    name0, a0 = first
    for name, a in others:
        if tuple(a.shape) != tuple(a0.shape):
            raise ValueError(f"update: {name} has shape {tuple(a.shape)}, expected "
                             f"{tuple(a0.shape)} like {name0}")


def _shape(name, a, shape):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"update: {name} has shape {tuple(a.shape)}, expected {tuple(shape)}")


def _flat(a):
    return a.reshape(a.size)


def _blocks(threads):
    return max(1, math.ceil(threads / BLOCK))


def _elementwise(named, *scalars, kernel):
    """Checks the float32 arrays in `named` (name, array) for one shape and launches
    `kernel` one thread per element on their flat views, then the float32 scalars."""
    for name, a in named:
        _device(name, a, (np.float32,))
    _same_shape(*named)
    size = named[0][1].size
    if size:
        kernel[_blocks(size), BLOCK](*[_flat(a) for _, a in named],
                                     *[np.float32(s) for s in scalars])


def sgd_update(param, grad, velocity, lr, momentum):
    """velocity = momentum * velocity - lr * grad; param += velocity (in place)."""
    _elementwise((("param", param), ("grad", grad), ("velocity", velocity)), lr, momentum,
                 kernel=sgd_update_kernel)


def sdlm_update(param, grad, hess, eta, mu):
    """param -= eta / (mu + hess) * grad (one step size per parameter, in place)."""
    _elementwise((("param", param), ("grad", grad), ("hess", hess)), eta, mu,
                 kernel=sdlm_update_kernel)


def scale_add(acc, x, scale):
    """acc += scale * x (in place)."""
    _elementwise((("acc", acc), ("x", x)), scale, kernel=scale_add_kernel)


def fill(x, value):
    """x[...] = value, converted to x's dtype."""
    _device("x", x, (np.float32, np.float64, np.int32, np.int64, np.uint8))
    if x.size:
        fill_kernel[_blocks(x.size), BLOCK](_flat(x), np.dtype(x.dtype).type(value))


def gather(out_images, out_labels, images, labels, index):
    """out_images (B,...) = images (N_all,...)[index], out_labels (B,) = labels[index];
    index (B,) int32 or int64."""
    _device("images", images, (np.float32,))
    _device("labels", labels, (np.int32,))
    _device("index", index, (np.int32, np.int64))
    _device("out_images", out_images, (np.float32,))
    _device("out_labels", out_labels, (np.int32,))
    if len(images.shape) < 1:
        raise ValueError("update: images must have a leading image axis")
    n_all = images.shape[0]
    if len(index.shape) != 1:
        raise ValueError(f"update: index has shape {tuple(index.shape)}, expected (B,)")
    n_batch = index.shape[0]
    _shape("labels", labels, (n_all,))
    _shape("out_images", out_images, (n_batch, *images.shape[1:]))
    _shape("out_labels", out_labels, (n_batch,))
    n_pixels = math.prod(images.shape[1:])
    if n_batch * n_pixels > MAX_GATHER:
        raise ValueError(f"update: a gather of {n_batch * n_pixels} elements is more than "
                         f"the kernel's unsigned 32-bit indices allow ({MAX_GATHER}); split it")
    if n_batch * n_pixels:
        gather_kernel[_blocks(n_batch * n_pixels), BLOCK](
            out_images.reshape(n_batch, n_pixels), out_labels,
            images.reshape(n_all, n_pixels), labels, index)


def _check_rows(y):
    _device("y", y, (np.float32,))
    if len(y.shape) != 2 or y.shape[1] < 1:
        raise ValueError(f"update: y has shape {tuple(y.shape)}, expected (N, classes)")
    return y.shape[0]


def argmin_rows(out, y):
    """out (N,) int32 = the first index of the smallest element of each row of y (N,C)."""
    n_rows = _check_rows(y)
    _device("out", out, (np.int32,))
    _shape("out", out, (n_rows,))
    if n_rows:
        argmin_rows_kernel[_blocks(n_rows), BLOCK](out, y)


def count_errors(out, y, labels):
    """out[0] += the number of rows n with argmin y[n] != labels[n] (accumulates)."""
    n_rows = _check_rows(y)
    _device("labels", labels, (np.int32,))
    _shape("labels", labels, (n_rows,))
    _device("out", out, (np.int32, np.int64, np.float32, np.float64))
    _shape("out", out, (1,))
    if n_rows:
        count_errors_kernel[_blocks(n_rows), BLOCK](out, y, labels, np.dtype(out.dtype).type(1))


def sum_into(out, x):
    """out[0] += sum of x (N,) (accumulates)."""
    _device("x", x, (np.float32,))
    if len(x.shape) != 1:
        raise ValueError(f"update: x has shape {tuple(x.shape)}, expected (N,)")
    _device("out", out, (np.float32, np.float64))
    _shape("out", out, (1,))
    if x.size:
        sum_into_kernel[_blocks(x.size), BLOCK](out, x)
