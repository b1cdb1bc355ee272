"""The device check of a batch of images against the paper's input encoding (background
-0.1, ink 1.175; kernels.architecture, lenet.data.preprocess). It finds the first image
with a value outside INPUT_ACCEPTED (a NaN, an infinity, 0..255 pixels, standardised
ones) or none near the background (0..1 pixels): first_refused(x) on the default stream,
or InputCheck on a stream among other work (the fused inference path checks its input
this way, one wait for the check and the forward pass). Only the 4-byte answer comes back
to the host, through a mapped int32 made once per check: a call allocates nothing and
launches once. CPU reference and the error: kernels.reference's first_refused_ref,
refusal.

Test: pytest -q tests/test_inputs.py; pytest -q tests/test_model.py -k refuse
"""

import functools
import threading

import numpy as np
from numba import cuda, float32

from .architecture import INPUT_ACCEPTED, INPUT_NEAR
from .common import check_device_array, kernel

LOW, HIGH, NEAR = float32(INPUT_ACCEPTED[0]), float32(INPUT_ACCEPTED[1]), float32(INPUT_NEAR)
LANES = 32   # threads (one warp) per image: 128 contiguous bytes of it a step
_answer_lock = threading.Lock()  # two threads' checks must not share the answer at once


@kernel("void(int32[::1], float32[:, ::1])")
def first_refused_kernel(out, x):
    # block n checks image n, thread t its pixels t, t + LANES, ...; an image with a value
    # outside [LOW, HIGH] (NaN too) or none at most NEAR lowers out[0] (N on entry) to
    # n, so out[0] ends as the first refused image
    n = cuda.blockIdx.x
    outside, near = 0, 0
    i = cuda.threadIdx.x
    while i < x.shape[1]:
        v = x[n, i]
        if not (v >= LOW and v <= HIGH):
            outside = 1
        if v <= NEAR:
            near = 1
        i += LANES
    outside = cuda.syncthreads_or(outside)   # any thread's, for the whole image
    near = cuda.syncthreads_or(near)
    if cuda.threadIdx.x == 0 and (outside or not near):
        cuda.atomic.min(out, 0, n)


class InputCheck:
    """first_refused_kernel on one stream, with its own mapped answer: launch(x), then
    wait(). Not for two threads at once: each caller keeps its own."""

    def __init__(self, stream=None):
        self.stream = stream or cuda.default_stream()
        self.out = cuda.mapped_array(1, np.int32)
        self.n = 0

    def launch(self, x):
        """Check x (N, ...) float32, C-contiguous, after the stream's earlier work."""
        n = int(x.shape[0])
        if n >= 2**31 - 1:
            raise ValueError(f"first_refused: {n} images do not fit an int32 index")
        pixels = int(np.prod(x.shape[1:], dtype=np.int64))
        flat = x.reshape(n, pixels)
        check_device_array("first_refused", "x", flat, (n, pixels))
        self.n = n
        self.out[0] = n   # a host write: the array lives in host memory
        if n:
            first_refused_kernel[n, LANES, self.stream](self.out, flat)

    def wait(self):
        """Synchronize the stream; the launched check's answer (first_refused's)."""
        self.stream.synchronize()
        first = int(self.out[0])   # the mapped answer, readable once the stream is done
        return -1 if first == self.n else first


@functools.cache
def _default_check():
    """first_refused's check on the default stream, made on first use."""
    return InputCheck()


def first_refused(x):
    """Index of the first image of the float32 device array x (N, ...) that is not in the
    encoding, or -1; waits for the default stream only, not the whole device."""
    with _answer_lock:
        check = _default_check()
        check.launch(x)
        return check.wait()
