"""The first image of a device array holding a NaN or an infinity, found on the device:
first_nonfinite(x) on the default stream, or NonfiniteCheck ordered on a stream among
other work (the fused inference path checks its input this way, one wait for the check
and the forward pass). Only the 4-byte answer comes back to the host, through a mapped
int32 made once per check: a call allocates nothing and launches once. CPU reference:
first_nonfinite_ref.

Test: pytest -q tests/test_inputs.py; pytest -q tests/test_model.py -k nonfinite
"""

import functools
import math
import threading

import numpy as np
from numba import cuda

from .common import check_device_array, kernel

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


class NonfiniteCheck:
    """first_nonfinite_kernel on one stream, with its own mapped answer: launch(x), then
    wait(). Not for two threads at once: each caller keeps its own."""

    def __init__(self, stream=None):
        self.stream = stream or cuda.default_stream()
        self.out = cuda.mapped_array(1, np.int32)
        self.n = 0

    def launch(self, x):
        """Check x (N, ...) float32, C-contiguous, after the stream's earlier work."""
        n = int(x.shape[0])
        if n >= 2**31 - 1:
            raise ValueError(f"first_nonfinite: {n} images do not fit an int32 index")
        pixels = int(np.prod(x.shape[1:], dtype=np.int64))
        flat = x.reshape(n, pixels)
        check_device_array("first_nonfinite", "x", flat, (n, pixels))
        self.n = n
        self.out[0] = n   # a host write: the array lives in host memory
        if n * pixels:
            blocks = (n * pixels + BLOCK * ITEMS - 1) // (BLOCK * ITEMS)
            first_nonfinite_kernel[blocks, BLOCK, self.stream](self.out, flat)

    def wait(self):
        """Synchronize the stream; the launched check's answer (first_nonfinite's)."""
        self.stream.synchronize()
        first = int(self.out[0])   # the mapped answer, readable once the stream is done
        return -1 if first == self.n else first


@functools.cache
def _default_check():
    """first_nonfinite's check on the default stream, made on first use."""
    return NonfiniteCheck()


def first_nonfinite(x):
    """Index of the first image of the float32 device array x (N, ...) holding a NaN
    or an infinite value, or -1; waits for the default stream only, not the whole device."""
    with _answer_lock:
        check = _default_check()
        check.launch(x)
        return check.wait()


def nonfinite_error(index, dtype=np.float32):
    """The error for image `index` holding a NaN or an infinity (as `dtype`)."""
    return ValueError(f"image {index} contains NaN or infinite values (as "
                      f"{np.dtype(dtype).name}); images must be finite")


def first_nonfinite_ref(x):
    """CPU reference: the same answer for a NumPy array."""
    x = np.asarray(x)
    bad = ~np.isfinite(x.reshape(len(x), int(np.prod(x.shape[1:])))).all(axis=1)
    return int(np.argmax(bad)) if bad.any() else -1
