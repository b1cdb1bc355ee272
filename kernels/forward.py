"""The whole LeNet-5 forward pass in one launch, built from kernels/forward_pieces.py:
forward_kernel, launched by forward (checked) or by FusedForward (lenet/ops_gpu.py: no
per-call checks or allocation). No activation goes to global memory (layout:
docs/kernels.md). The stage kernels (c1s2, c3s4, dense, rbf, squash) run one piece over a
batch: tests/test_forward_pieces.py checks each piece through them, the census sees each
alone, and lenet/ops_gpu.py's activations() gives every layer's output with them.

Test: pytest -q tests/test_forward.py
"""

import numpy as np
from numba import config, cuda, float32, int32, uint32

from .common import cdiv, check_device_array, check_device_arrays, device_function, kernel
from .forward_pieces import (
    C1_MAPS,
    C1_SIZE,
    C1S2_TASKS,
    C3_MAPS,
    C3_SIZE,
    C3S4_TASKS,
    C5_INPUTS,
    C5_UNITS,
    CONV_PARAMETERS_LEN,
    DENSE_SPLIT,
    DENSE_UNITS,
    F6_UNITS,
    IMAGES,
    IN_LEN,
    N_CLASSES,
    PARAMETERS_LEN,
    S2_LEN,
    S4_LEN,
    TABLE_ROW,
    argmin10,
    c1s2_forward,
    c3_table,
    c3s4_forward,
    conv_views,
    dense_finish,
    dense_partials,
    dense_views,
    rbf_penalty,
    squash,
)
from .inputs import InputCheck

THREADS = 256                      # threads per block
BLOCKS_PER_SM = 3                  # launch bound: registers for 3 resident blocks an SM
LAUNCH_BOUNDS = {"launch_bounds": (THREADS, BLOCKS_PER_SM)}
C1_LEN = C1_MAPS * C1_SIZE * C1_SIZE   # 4704 floats an image
C3_LEN = C3_MAPS * C3_SIZE * C3_SIZE   # 1600
# where a group's row of buffer A keeps each stage (the input is dead once S2 is done)
S4_AT, A5_AT = 0, S4_LEN
A6_AT = A5_AT + C5_UNITS
Y_AT = A6_AT + F6_UNITS
BUF_A_LEN = IMAGES * IN_LEN        # shared buffer A: input, then S4, C5, F6, penalties
BUF_B_LEN = IMAGES * S2_LEN        # shared buffer B: S2, then partial sums
C5_THREADS = DENSE_SPLIT * (C5_UNITS // DENSE_UNITS)    # 240
F6_THREADS = DENSE_SPLIT * (F6_UNITS // DENSE_UNITS)    # 168
assert Y_AT + N_CLASSES <= IN_LEN and DENSE_SPLIT * IMAGES * C5_UNITS <= IMAGES * S2_LEN
assert C5_UNITS % DENSE_UNITS == 0 and F6_UNITS % DENSE_UNITS == 0
assert C5_THREADS <= THREADS and F6_THREADS <= THREADS


# ------------------------------------------------------------------ the fused kernel

@device_function
def image_task(q, here, tasks):
    """(image, task) of work item q of a group of `here` images with `tasks` tasks each.
    A full group interleaves the images (q = IMAGES task + image), so that the lanes of a
    warp share a task's layer map; a partial one (the last) goes image by image. Both
    divide by constants only."""
    if here == uint32(IMAGES):
        return q % uint32(IMAGES), q // uint32(IMAGES)
    return q // uint32(tasks), q % uint32(tasks)


@cuda.jit(device=True)   # not device_function: the simulator must swap in its cuda module
def s2_to_penalties(a2, a2_row, a3, a3_row, a4, a4_row, a5, a5_row, a6, a6_row, y, y_row,
                    part, w3, b3, c4, b4, w5, b5, w6, b6, table, centers, here, t, threads,
                    store):
    """The forward of a group of `here` images from S2 on: C3+S4, C5, F6, the penalties.
    Image g's outputs of a stage start at view[g * row]; `part` holds C5's and F6's
    partial sums; thread t of `threads` takes its share of each stage, a barrier after
    each. store: keep C3's outputs a3 (for a backward pass)."""
    for q in range(t, here * uint32(C3S4_TASKS), uint32(threads)):
        g, task = image_task(q, here, C3S4_TASKS)
        c3s4_forward(a4[g * uint32(a4_row):], a3[g * uint32(a3_row):], a2[g * uint32(a2_row):],
                     w3, b3, c4, b4, table, task, store)
    cuda.syncthreads()  # S4 is complete
    if t < uint32(C5_THREADS):
        dense_partials(part, a4, a4_row, w5, C5_INPUTS, C5_UNITS, t)
    cuda.syncthreads()  # C5's partial sums are complete
    for q in range(t, here * uint32(C5_UNITS), uint32(threads)):
        dense_finish(a5, a5_row, part, b5, C5_UNITS, q // uint32(C5_UNITS), q % uint32(C5_UNITS))
    cuda.syncthreads()  # C5 is complete
    if t < uint32(F6_THREADS):
        dense_partials(part, a5, a5_row, w6, C5_UNITS, F6_UNITS, t)
    cuda.syncthreads()  # F6's partial sums are complete
    for q in range(t, here * uint32(F6_UNITS), uint32(threads)):
        dense_finish(a6, a6_row, part, b6, F6_UNITS, q // uint32(F6_UNITS), q % uint32(F6_UNITS))
    cuda.syncthreads()  # F6 is complete
    for q in range(t, here * uint32(N_CLASSES), uint32(threads)):
        g, i = q // uint32(N_CLASSES), q % uint32(N_CLASSES)
        y[g * uint32(y_row) + i] = rbf_penalty(a6[g * uint32(a6_row):], centers, i)
    cuda.syncthreads()  # the penalties are complete


@kernel("void(float32[:, ::1], int32[::1], float32[:, ::1], float32[::1], int32[::1], "
        "float32[::1])", **LAUNCH_BOUNDS)
def forward_kernel(penalties, classes, x, params, table, centers):
    # one block per group of IMAGES images (striding); threads over each stage's tasks
    buf_a = cuda.shared.array(BUF_A_LEN, float32)
    buf_b = cuda.shared.array(BUF_B_LEN, float32)
    conv = cuda.shared.array(CONV_PARAMETERS_LEN, float32)
    t = uint32(cuda.threadIdx.x)
    n = uint32(x.shape[0])
    for i in range(t, uint32(CONV_PARAMETERS_LEN), uint32(THREADS)):
        conv[i] = params[i]
    w1, b1, c2, b2, w3, b3, c4, b4 = conv_views(conv)
    w5, b5, w6, b6 = dense_views(params)
    groups = (n + uint32(IMAGES - 1)) // uint32(IMAGES)
    for group in range(uint32(cuda.blockIdx.x), groups, uint32(cuda.gridDim.x)):
        n0 = group * uint32(IMAGES)
        here = min(uint32(IMAGES), n - n0)
        for i in range(t, uint32(IMAGES * IN_LEN), uint32(THREADS)):
            g = i // uint32(IN_LEN)   # rows past N get zeros, which the full connections read
            buf_a[i] = x[n0 + g, i % uint32(IN_LEN)] if g < here else float32(0.0)
        cuda.syncthreads()  # the group's inputs (and, the first time, the parameters) are staged
        for q in range(t, here * uint32(C1S2_TASKS), uint32(THREADS)):
            g, task = image_task(q, here, C1S2_TASKS)
            c1s2_forward(buf_b[g * uint32(S2_LEN):], buf_b, buf_a[g * uint32(IN_LEN):],
                         w1, b1, c2, b2, task, False)
        cuda.syncthreads()  # S2 is complete; the inputs are dead
        s2_to_penalties(buf_b, S2_LEN, buf_a, 0, buf_a[S4_AT:], IN_LEN, buf_a[A5_AT:], IN_LEN,
                        buf_a[A6_AT:], IN_LEN, buf_a[Y_AT:], IN_LEN, buf_b, w3, b3, c4, b4, w5,
                        b5, w6, b6, table, centers, here, t, THREADS, False)
        for q in range(t, here * uint32(N_CLASSES), uint32(THREADS)):
            g, i = q // uint32(N_CLASSES), q % uint32(N_CLASSES)
            penalties[n0 + g, i] = buf_a[g * uint32(IN_LEN) + uint32(Y_AT) + i]
        if t < here:
            classes[n0 + t] = int32(argmin10(buf_a[t * uint32(IN_LEN) + uint32(Y_AT):]))
        cuda.syncthreads()  # buffer A is read before the next group's inputs overwrite it


# -------------------------------------------------------------------- stage kernels

@kernel("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[::1])")
def c1s2_kernel(s2, c1, x, params):
    # one block per IMAGES images; threads over (task, image)
    n0 = uint32(cuda.blockIdx.x) * uint32(IMAGES)
    here = min(uint32(IMAGES), uint32(x.shape[0]) - n0)
    w1, b1, c2, b2 = conv_views(params)[:4]
    for q in range(uint32(cuda.threadIdx.x), here * uint32(C1S2_TASKS), uint32(THREADS)):
        n = n0 + q % here
        c1s2_forward(s2[n], c1[n], x[n], w1, b1, c2, b2, q // here, True)


@kernel("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[::1], int32[::1])")
def c3s4_kernel(s4, c3, s2, params, table):
    # one block per IMAGES images; threads over (task, image)
    n0 = uint32(cuda.blockIdx.x) * uint32(IMAGES)
    here = min(uint32(IMAGES), uint32(s2.shape[0]) - n0)
    w3, b3, c4, b4 = conv_views(params)[4:]
    for q in range(uint32(cuda.threadIdx.x), here * uint32(C3S4_TASKS), uint32(THREADS)):
        n = n0 + q % here
        c3s4_forward(s4[n], c3[n], s2[n], w3, b3, c4, b4, table, q // here, True)


DENSE_IN_MAX = C5_INPUTS    # widest full connection dense_kernel takes
DENSE_X_LEN = IMAGES * DENSE_IN_MAX
DENSE_PART_LEN = DENSE_SPLIT * IMAGES * C5_UNITS


@kernel("void(float32[:, ::1], float32[:, ::1], float32[::1], float32[::1])")
def dense_kernel(out, x, w, b):
    # one block per IMAGES images: their inputs staged (zero rows past N), then one thread
    # per (unit group, input lane) for the partial sums and per (image, unit) for the rest
    xs = cuda.shared.array(DENSE_X_LEN, float32)
    part = cuda.shared.array(DENSE_PART_LEN, float32)
    t = uint32(cuda.threadIdx.x)
    n_in, n_out = uint32(x.shape[1]), uint32(out.shape[1])
    n0 = uint32(cuda.blockIdx.x) * uint32(IMAGES)
    here = min(uint32(IMAGES), uint32(x.shape[0]) - n0)
    for i in range(t, uint32(IMAGES) * n_in, uint32(THREADS)):
        g = i // n_in
        xs[i] = x[n0 + g, i % n_in] if g < here else float32(0.0)
    cuda.syncthreads()  # the block's inputs are staged
    if t < uint32(DENSE_SPLIT) * ((n_out + uint32(DENSE_UNITS - 1)) // uint32(DENSE_UNITS)):
        dense_partials(part, xs, n_in, w, n_in, n_out, t)
    cuda.syncthreads()  # the partial sums are complete
    for q in range(t, here * n_out, uint32(THREADS)):
        g, o = q // n_out, q % n_out
        dense_finish(out[n0 + g], 0, part, b, n_out, g, o)


@kernel("void(float32[:, ::1], int32[::1], float32[:, ::1], float32[::1])")
def rbf_kernel(penalties, classes, x6, centers):
    # one thread per image: its 10 penalties, then their argmin
    n = uint32(cuda.grid(1))
    if n < uint32(x6.shape[0]):
        for i in range(N_CLASSES):
            penalties[n, i] = rbf_penalty(x6[n], centers, uint32(i))
        classes[n] = int32(argmin10(penalties[n]))


@kernel("void(float32[::1], float32[::1])")
def squash_kernel(out, a):
    # one thread per element
    i = uint32(cuda.grid(1))
    if i < uint32(a.shape[0]):
        out[i] = squash(a[i])


# ---------------------------------------------------------------------- launchers

def groups(n):
    """Blocks of forward_kernel (and the stage kernels) for n images."""
    return cdiv(n, IMAGES)


def forward(penalties, classes, x, params, table, centers):
    """penalties (N,10) and classes (N,) int32 of images x (N,1024): forward_kernel after
    checking every argument (FusedForward launches it without checks)."""
    n = x.shape[0] if len(getattr(x, "shape", ())) == 2 else None
    check_device_arrays("forward", x=(x, (n, IN_LEN)), penalties=(penalties, (n, N_CLASSES)),
                        classes=(classes, (n,), np.int32), params=(params, (PARAMETERS_LEN,)),
                        table=(table, (C3_MAPS * TABLE_ROW,), np.int32),
                        centers=(centers, (N_CLASSES * F6_UNITS,)))
    if n:
        forward_kernel[groups(n), THREADS](penalties, classes, x, params, table, centers)


def squash_all(a):
    """kernels.forward_pieces.squash of every element of a float32 NumPy array, on the device (in
    the simulator, the plain function element by element: a kernel there is a Python
    thread per element)."""
    a = np.ascontiguousarray(a, np.float32).ravel()
    if config.ENABLE_CUDASIM:
        with np.errstate(over="ignore"):   # the polynomial's a^2 of a huge a, not selected
            return np.array([squash(v) for v in a], np.float32)
    out = cuda.device_array_like(a)
    squash_kernel[max(1, cdiv(a.size, 256)), 256](out, cuda.to_device(a))
    return out.copy_to_host()


def c1s2(s2, c1, x, params):
    n = x.shape[0]
    check_device_arrays("c1s2", s2=(s2, (n, S2_LEN)), c1=(c1, (n, C1_LEN)),
                        x=(x, (n, IN_LEN)), params=(params, (PARAMETERS_LEN,)))
    c1s2_kernel[groups(n), THREADS](s2, c1, x, params)


def c3s4(s4, c3, s2, params, table):
    n = s2.shape[0]
    check_device_arrays("c3s4", s4=(s4, (n, S4_LEN)), c3=(c3, (n, C3_LEN)),
                        s2=(s2, (n, S2_LEN)), params=(params, (PARAMETERS_LEN,)),
                        table=(table, (C3_MAPS * TABLE_ROW,), np.int32))
    c3s4_kernel[groups(n), THREADS](s4, c3, s2, params, table)


def dense(out, x, w, b):
    """out (N,O) = f(x (N,I) @ w (O*I,).T + b (O,)), I <= 400, O <= 120, O % 4 == 0."""
    n, n_in = x.shape
    n_out = b.shape[0]
    if n_in > DENSE_IN_MAX or n_out > C5_UNITS or n_out % DENSE_UNITS:
        raise ValueError(f"dense: {n_in} inputs and {n_out} units; dense_kernel takes at most "
                         f"{DENSE_IN_MAX} and {C5_UNITS}, units a multiple of {DENSE_UNITS}")
    check_device_arrays("dense", out=(out, (n, n_out)), x=(x, (n, n_in)),
                        w=(w, (n_out * n_in,)), b=(b, (n_out,)))
    dense_kernel[groups(n), THREADS](out, x, w, b)


def rbf(penalties, classes, x6, centers):
    n = x6.shape[0]
    check_device_arrays("rbf", penalties=(penalties, (n, N_CLASSES)),
                        classes=(classes, (n,), np.int32), x6=(x6, (n, F6_UNITS)),
                        centers=(centers, (N_CLASSES * F6_UNITS,)))
    rbf_kernel[cdiv(n, 128), 128](penalties, classes, x6, centers)


# ------------------------------------------------------------------- model runner

CHUNK = 16384   # images per host round trip for NumPy input: 64 MB of pinned input


class FusedForward:
    """forward_kernel for a model: the C3 table and the RBF centers on the device, and
    every buffer a call needs allocated once and grown when a larger batch comes, so a
    call checks nothing and allocates only the array it returns (none given `out`).

    device(x, params, want, out=None)
        x (N,1024) device array, read in place -> (y, first): y the penalties (N,10) or
        classes (N,) int32 (want) in `out` or a fresh device array; first the index of
        the first image of x not in the input encoding, or -1 (kernels/inputs.py: the
        check and the forward pass run on one stream, which is waited for once)
    host(x, params, want)    x (N,1024) NumPy, any float dtype -> a fresh NumPy array,
                             through one pinned buffer each way per CHUNK images
    """

    def __init__(self, table, centers):
        """table: the C3 connection table (6, 16) bool; centers: the RBF bitmaps, 840 float32
        on the device."""
        self.table = c3_table(table)
        check_device_array("FusedForward", "centers", centers, (N_CLASSES * F6_UNITS,))
        self.centers = centers
        self.stream = cuda.stream()
        self.check = InputCheck(self.stream)
        self._scratch = {}   # (name, dtype) -> device buffer of at least the largest batch
        self._views = {}     # (name, dtype, n) -> its first n rows (slicing costs microseconds)

    def _grown(self, name, n, width, dtype, alloc):
        """The first n rows of a buffer of at least n rows, kept for the next call."""
        key = (name, np.dtype(dtype).str)
        view = self._views.get(key + (n,))
        if view is not None:
            return view
        buf = self._scratch.get(key)
        if buf is None or buf.shape[0] < n:
            shape = (n, width) if width else (n,)
            buf = self._scratch[key] = alloc(shape, dtype)
            self._views = {k: v for k, v in self._views.items() if k[:2] != key}
        if len(self._views) > 64:
            self._views.clear()
        view = self._views[key + (n,)] = buf if buf.shape[0] == n else buf[:n]
        return view

    def _outputs(self, n, want, fresh):
        """(penalties, classes) device arrays for n images: the wanted one `fresh`ly
        allocated if asked, the other (and both when not) from the kept scratch."""
        pen = self._grown("penalties", n, N_CLASSES, np.float32, cuda.device_array)
        cls = self._grown("classes", n, 0, np.int32, cuda.device_array)
        if fresh and want == "penalties":
            pen = cuda.device_array((n, N_CLASSES), np.float32)
        elif fresh:
            cls = cuda.device_array(n, np.int32)
        return pen, cls

    def device(self, x, params, want, out=None):
        n = x.shape[0]
        pen, cls = self._outputs(n, want, fresh=out is None)
        if out is not None:
            mine = pen if want == "penalties" else cls
            check_device_array("FusedForward", "out", out, mine.shape, mine.dtype)
            pen, cls = (out, cls) if want == "penalties" else (pen, out)
        self.check.launch(x)
        if n:
            forward_kernel[groups(n), THREADS, self.stream](pen, cls, x, params, self.table,
                                                            self.centers)
        return (pen if want == "penalties" else cls), self.check.wait()

    def host(self, x, params, want):
        n = x.shape[0]
        out = np.empty((n, N_CLASSES), np.float32) if want == "penalties" \
            else np.empty(n, np.intp)
        m = min(n, CHUNK)
        if m == 0:
            return out
        x_pin = self._grown("x pinned", m, IN_LEN, np.float32, cuda.pinned_array)
        x_dev = self._grown("x", m, IN_LEN, np.float32, cuda.device_array)
        pen, cls = self._outputs(m, want, fresh=False)
        y_dev = pen if want == "penalties" else cls
        y_pin = self._grown(f"{want} pinned", m, N_CLASSES if want == "penalties" else 0,
                            y_dev.dtype, cuda.pinned_array)
        for start in range(0, n, m):
            k = min(m, n - start)
            if k < m:   # the last, shorter chunk
                x_pin, x_dev, y_pin, y_dev = x_pin[:k], x_dev[:k], y_pin[:k], y_dev[:k]
                pen, cls = pen[:k], cls[:k]
            np.copyto(x_pin, x[start:start + k], casting="same_kind")
            x_dev.copy_to_device(x_pin, stream=self.stream)
            forward_kernel[groups(k), THREADS, self.stream](pen, cls, x_dev, params,
                                                            self.table, self.centers)
            y_dev.copy_to_host(y_pin, stream=self.stream)
            self.stream.synchronize()
            out[start:start + k] = y_pin
        return out
