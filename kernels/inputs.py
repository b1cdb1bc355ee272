"""Checks of a user's input on the device: the first image holding a NaN or an infinity.

    first_nonfinite(x)   index of the first image of x (N, ...) with a NaN or infinite
                         value, or -1 if every value is finite

x is a C-contiguous float32 device array of any image shape, viewed as (N, P). Only
the 4-byte answer comes back to the host, through one mapped (host-visible) int32
made once: a call allocates nothing, launches once and waits for that launch. The
model refuses bad device input (lenet/model.py) without copying the images. Its CPU
reference is `first_nonfinite_ref`.

Test: pytest -q tests/test_model.py -k nonfinite
"""

import functools
import math
import threading

import numpy as np
from numba import cuda

from kernels.common import check_device_array, kernel

BLOCK = 256  # threads per block
ITEMS = 8    # elements per thread (fewer threads: the CUDA simulator runs each as one)
_answer_lock = threading.Lock()  # two threads' checks must not share the answer at once


@kernel("void(int32[::1], float32[:, ::1])")
def first_nonfinite_kernel(out, x):
    # grid-stride: thread t of T checks the flat elements t, t + T, t + 2T, ... of x
    # (adjacent threads read adjacent elements); one that finds a NaN or an infinity in
    # image n lowers out[0] (N on entry) to n, so out[0] ends as the first such image
    p = x.shape[1]
    total = x.shape[0] * p
    k = cuda.grid(1)
    step = cuda.gridsize(1)
    while k < total:
        n = k // p
        v = x[n, k - n * p]
        if math.isnan(v) or math.isinf(v):
            cuda.atomic.min(out, 0, n)
        k += step


@functools.cache
def _answer():
    """The mapped int32 the kernel writes its answer to, made on first use."""
    return cuda.mapped_array(1, np.int32)


def first_nonfinite(x):
    """Index of the first image of the float32 device array x (N, ...) holding a NaN
    or an infinite value, or -1."""
    n = int(x.shape[0])
    if n >= 2**31 - 1:
        raise ValueError(f"first_nonfinite: {n} images do not fit an int32 index")
    pixels = int(np.prod(x.shape[1:], dtype=np.int64))
    flat = x.reshape(n, pixels)
    check_device_array("first_nonfinite", "x", flat, (n, pixels))
    if not n * pixels:
        return -1
    blocks = (n * pixels + BLOCK * ITEMS - 1) // (BLOCK * ITEMS)
    with _answer_lock:
        out = _answer()
        out[0] = n                   # a host write: the array lives in host memory
        first_nonfinite_kernel[blocks, BLOCK](out, flat)
        cuda.synchronize()
        first = int(out[0])
    return -1 if first == n else first


def first_nonfinite_ref(x):
    """CPU reference: the same answer for a NumPy array."""
    x = np.asarray(x)
    bad = ~np.isfinite(x.reshape(len(x), int(np.prod(x.shape[1:])))).all(axis=1)
    return int(np.argmax(bad)) if bad.any() else -1
