"""LeNet-5 on the CPU, compiled with Numba (njit): every CPU path of the model, the CPU's
own implementation beside the GPU's kernels, built from the vectorised rows of
kernels/cpu_pieces.py and held to the float64 reference (kernels/reference.py).

    penalties_cpu(out, images, params, centers, table)     inference, on every thread
    activations_cpu(images, params, centers, table)        every layer's output (forward_all)
    StepWorkspace(batch, dtype, centers, table).step(...)  a mini-batch step: gradients or
        Gauss-Newton curvature of the batch's mean loss, then "store", "sgd" or "sdlm"
        (the interface of the GPU's lenet.workspace.Workspace; launch_step checks it)
    sdlm_runs_cpu(...)                                     the paper's per-pattern steps
        of R runs side by side, one per thread (lenet's Backend.sdlm_steps: one run)

params, grads, velocity and rates are flat (PARAMETERS_LEN,) arrays in kernels.architecture's
PARAMETER_AT layout; images (N,1,32,32) or (N,1024), labels and index int32; float32 or
float64 (one compiled version each), C-contiguous NumPy arrays.

Threads. A step splits its images into chunks of CHUNK; chunk k is summed, image after
image, into slot k mod S (S = min(SLOTS, chunks)); the slots run in parallel (prange), and
their sums are added in slot order in float64. Every sum's order is fixed by the batch
size alone, so a seed repeats a run bit for bit on any number of threads. Inference needs
no sums: each image's penalties are the same whichever thread computes them.

Test: pytest -q tests/test_cpu.py
"""

import numpy as np
from numba import get_parallel_chunksize, prange, set_parallel_chunksize

from .architecture import CONV_PARAMETERS_LEN, LOSS_KINDS, PARAMETERS_LEN, STEP_MODES, K
from .cpu_pieces import (
    A2_LEN,
    L1,
    L3,
    W0,
    W2,
    X0_LEN,
    c1_lists,
    connection_lists,
    constants,
    conv_delta,
    conv_infer,
    conv_step,
    features_one,
    forward_one,
    full_delta,
    full_infer_rows,
    full_step,
    full_sums,
    jit,
    load_image,
    out_lists,
    pattern_loss,
    pjit,
    rbf,
    rbf_delta,
    subsample_back,
    subsample_lanes,
    unpack,
    unpack_conv,
    unpack_dense,
)

KINDS, MODES = LOSS_KINDS, STEP_MODES
STORE, SGD, SDLM = MODES["store"], MODES["sgd"], MODES["sdlm"]
CHUNK = 16              # images a mini-batch step sums before adding them to their slot
SLOTS = 16              # most partial sums of a step (the most threads it keeps busy)
INFER_BLOCK = 16        # images per task of the parallel inference
LANES = 8               # images side by side in inference (a 256-bit float32 vector)
FINISH_BLOCK = 4096     # parameters per task of a step's finish


@jit
def side_by_side(out, maps, count):
    """out[m, t * CHUNK + k] = maps[k, m, t] for the first count images k of a chunk."""
    for m in range(out.shape[0]):
        om = out[m]
        for k in range(count):
            src = maps[k, m]
            for t in range(src.shape[0]):
                om[t * CHUNK + k] = src[t]


@jit
def square_into(q, a):
    """q = a * a (same shapes, flat loop)."""
    qf, af = q.reshape(q.size), a.reshape(a.size)
    for i in range(af.shape[0]):
        qf[i] = af[i] * af[i]


# ------------------------------------------------------------ per-pattern steps

@jit
def sdlm_steps_kernel(params, rates, stats, images, labels, order, start, count, kind,
                      centers, in_maps, in_counts, c):
    """Per-pattern steps, params -= rates * gradient after each pattern (flat arrays)."""
    dt = images.dtype
    p = unpack(params)
    c1w, c1b, s2c, s2b, c3w, c3b, s4c, s4b, c5w, c5b, f6w, f6b = p
    r1w, r1b, r2c, r2b, r3w, r3b, r4c, r4b, r5w, r5b, r6w, r6b = unpack(rates)
    x0 = np.zeros((1, X0_LEN), dt)
    a1, d1 = np.zeros((6, L1), dt), np.zeros((6, L1), dt)
    a2, d2 = np.zeros((6, A2_LEN), dt), np.zeros((6, A2_LEN), dt)
    a3, d3 = np.zeros((16, L3), dt), np.zeros((16, L3), dt)
    a4, d4 = np.zeros((16, 25), dt), np.zeros((16, 25), dt)
    a5, d5 = np.zeros(120, dt), np.zeros(120, dt)
    a6, d6 = np.zeros(84, dt), np.zeros(84, dt)
    y, dy, hy = np.zeros(10, dt), np.zeros(10, dt), np.zeros(10, dt)
    pad = np.zeros(L3 + 2 * (K - 1), dt)
    all_six, six = c1_lists()
    out_maps, out_counts = out_lists(in_maps, in_counts)
    for q in range(start, start + count):
        n = order[q]
        load_image(x0, images[n])
        forward_one(x0, p, a1, a2, a3, a4, a5, a6, y, centers, all_six, six, out_maps,
                    out_counts, c)
        label = labels[n]
        stats[0] += pattern_loss(y, label, kind, c, dy, hy)
        if np.argmin(y) != label:
            stats[1] += 1
        # each layer steps once the layer below no longer needs its parameters, so that
        # every gradient is taken at the pattern's start
        rbf_delta(d6, a6, dy, hy, centers, c, 1)
        full_delta(d5, a5, d6, f6w, c, 1)                      # C5's delta, F6's step
        full_step(f6w, f6b, r6w, r6b, a5, d6)
        full_delta(d4.reshape(400), a4.reshape(400), d5, c5w, c, 1)
        full_step(c5w, c5b, r5w, r5b, a4.reshape(400), d5)
        subsample_back(d3, a3, W2, d4, 5, s4c, s4c, s4b, r4c, r4b, c, 1)  # S4, C3's delta
        conv_delta(d2, a2, d3, c3w, in_maps, in_counts, W2, L3, pad, c, 1)  # S2's
        conv_step(c3w, c3b, r3w, r3b, a2, d3, L3, out_maps, out_counts, W2, 1, c)
        subsample_back(d1, a1, W0, d2, W2, s2c, s2c, s2b, r2c, r2b, c, 1)  # S2, C1's
        conv_step(c1w, c1b, r1w, r1b, x0, d1, L1, all_six, six, W0, 1, c)


@pjit
def sdlm_runs_kernel(params, rates, stats, sets, image_set, labels, order, start, count,
                     kinds, centers, in_maps, in_counts, c):
    """sdlm_steps_kernel of R independent runs side by side, one run per thread at once:
    run r steps params[r] with rates[r] through the patterns order[r] of
    sets[image_set[r]], its totals into stats[r], its loss kinds[r] and constants c[r]."""
    for r in prange(params.shape[0]):
        sdlm_steps_kernel(params[r], rates[r], stats[r], sets[image_set[r]], labels,
                          order[r], start, count, np.int64(kinds[r]), centers, in_maps,
                          in_counts, c[r])



@jit
def penalties_block(out, images, params, centers, in_maps, in_counts, c, lo, hi):
    """out[n] = the penalties of images[n] for lo <= n < hi. Groups of LANES images go
    side by side (lanes innermost) through C1..S4: no unused columns, every pass
    contiguous and as long as a row; the images left over go one at a time, each map
    flat with its input's row stride (the module docstring). C5 and F6 take a group's
    rows together. The two ways compute the same arithmetic for every image, so its
    penalties do not depend on its batch, group or thread."""
    dt = images.dtype
    p = unpack(params)
    c1w, c1b, s2c, s2b, c3w, c3b, s4c, s4b, c5w, c5b, f6w, f6b = p
    # the output maps of each input map: C1's one to all six, C3's from its table
    all_six, six = c1_lists()
    out_maps, out_counts = out_lists(in_maps, in_counts)
    groups = (hi - lo) // LANES
    lanes = LANES if groups > 0 else 1
    # the images and C1's (28x28), S2's (14x14), C3's (10x10) and S4's (5x5) outputs of
    # a group, side by side, or of one image, flat (large enough for both)
    x0 = np.zeros((1, max(1024 * lanes, X0_LEN)), dt)
    a1, a2 = np.zeros((6, max(784 * lanes, L1)), dt), np.zeros((6, max(196 * lanes, A2_LEN)), dt)
    a3, a4 = np.zeros((16, max(100 * lanes, L3)), dt), np.zeros((16, 25 * lanes), dt)
    # S4's, C5's and F6's outputs, a row per image of the group (pairs: at least two)
    x4, a5, a6 = np.zeros((max(lanes, 2), 400), dt), np.zeros((max(lanes, 2), 120), dt), \
        np.zeros((max(lanes, 2), 84), dt)
    first = lo
    while first < hi:
        if first + LANES <= hi:
            count = LANES
            for g in range(count):
                image = images[first + g].reshape(W0 * W0)
                for q in range(W0 * W0):
                    x0[0, q * LANES + g] = image[q]
            conv_infer(a1, x0, c1w, c1b, all_six, six, 28, W0 * LANES, 28 * LANES,
                       28 * LANES, LANES, c)
            subsample_lanes(a2, W2, a1, 28, s2c, s2b, LANES, c)
            conv_infer(a3, a2, c3w, c3b, out_maps, out_counts, 10, W2 * LANES, 10 * LANES,
                       10 * LANES, LANES, c)
            subsample_lanes(a4, 5, a3, 10, s4c, s4b, LANES, c)
            for g in range(count):
                for m in range(16):
                    for q in range(25):
                        x4[g, m * 25 + q] = a4[m, q * LANES + g]
        else:
            count = 1
            load_image(x0, images[first])
            features_one(x0, p, a1, a2, a3, a4, all_six, six, out_maps, out_counts, c)
            for m in range(16):
                x4[0, m * 25:m * 25 + 25] = a4[m, :25]
        full_infer_rows(a5, x4, c5w, c5b, count, c)
        full_infer_rows(a6, a5, f6w, f6b, count, c)
        for g in range(count):
            rbf(out[first + g], a6[g], centers, c)
        first += count


@pjit
def penalties_kernel(out, images, params, centers, in_maps, in_counts, c):
    """penalties_block over blocks of INFER_BLOCK images, in parallel."""
    n = images.shape[0]
    for b in prange((n + INFER_BLOCK - 1) // INFER_BLOCK):
        lo = np.int64(b) * INFER_BLOCK
        penalties_block(out, images, params, centers, in_maps, in_counts, c, lo,
                        min(n, lo + INFER_BLOCK))


# ------------------------------------------------------------ mini-batch step

@jit
def slot_sums(slot, losses, wrong, params, squares, neg, images, labels, index, start,
              count, kind, order, scale, first, stride, centers, in_maps, in_counts, c):
    """Slot `first`'s share of a step: chunks first, first + stride, ... of CHUNK images
    of images[index[start:start + count]], each image's gradient (order 1) or curvature
    (order 2) of the mean loss summed into a chunk sum, each chunk sum added into slot
    (PARAMETERS_LEN,). squares: the parameters squared (order 2; else the parameters);
    neg: -1s (CONV_PARAMETERS_LEN,), the rates with which the layers' steps add their
    gradients. losses[n], wrong[n]: image n's loss and whether it was misclassified."""
    dt = images.dtype
    p = unpack(params)
    e = unpack(squares if order == 2 else params)   # what deltas go back through
    part = np.zeros(CONV_PARAMETERS_LEN, dt)        # C1..S4's sums over a chunk
    g1w, g1b, g2c, g2b, g3w, g3b, g4c, g4b = unpack_conv(part)
    r1w, r1b, r2c, r2b, r3w, r3b, r4c, r4b = unpack_conv(neg)
    s5w, s5b, s6w, s6b = unpack_dense(slot)
    x0, q0 = np.zeros((1, X0_LEN), dt), np.zeros((1, X0_LEN), dt)
    a1, d1 = np.zeros((6, L1), dt), np.zeros((6, L1), dt)
    d2, a3 = np.zeros((6, A2_LEN), dt), np.zeros((16, L3), dt)
    a4, d4 = np.zeros((16, 25), dt), np.zeros((16, 25), dt)
    a5, a6 = np.zeros(120, dt), np.zeros(84, dt)
    y, dy, hy = np.zeros(10, dt), np.zeros(10, dt), np.zeros(10, dt)
    pad = np.zeros(L3 + 2 * (K - 1), dt)
    all_six, six = c1_lists()
    out_maps, out_counts = out_lists(in_maps, in_counts)
    # C5's and F6's inputs (squared for order 2) and deltas, a row per image of a chunk
    x4, d5 = np.zeros((CHUNK, 400), dt), np.zeros((CHUNK, 120), dt)
    x5, d6 = np.zeros((CHUNK, 120), dt), np.zeros((CHUNK, 84), dt)
    # S2's output (squared: q2s, order 2) and C3's delta of each image of a chunk, and
    # C3's input and delta of a chunk's images side by side (conv_step): image k's at k,
    # k + CHUNK, ...; the deltas' columns 10..13 stay zero
    a2s, q2s = np.zeros((CHUNK, 6, A2_LEN), dt), np.zeros((CHUNK, 6, A2_LEN), dt)
    d3s = np.zeros((CHUNK, 16, L3), dt)
    c3_x, c3_d = np.zeros((6, A2_LEN * CHUNK), dt), np.zeros((16, L3 * CHUNK), dt)
    for chunk in range(first, (count + CHUNK - 1) // CHUNK, stride):
        add = chunk != first                      # the slot's first chunk writes it
        part[:] = 0
        lo = chunk * CHUNK
        hi = min(count, lo + CHUNK)
        if hi - lo < CHUNK:                       # no sums from the lanes left over
            c3_x[:] = 0
            c3_d[:] = 0
        for n in range(lo, hi):
            k = n - lo
            i = index[start + n]
            a2, d3 = a2s[k], d3s[k]
            load_image(x0, images[i])
            forward_one(x0, p, a1, a2, a3, a4, a5, a6, y, centers, all_six, six, out_maps,
                        out_counts, c)
            label = labels[i]
            losses[n] = pattern_loss(y, label, kind, c, dy, hy)
            wrong[n] = np.argmin(y) != label
            for t in range(10):
                dy[t] *= scale
                hy[t] *= scale
            rbf_delta(d6[k], a6, dy, hy, centers, c, order)
            full_delta(d5[k], a5, d6[k], e[10], c, order)
            full_delta(d4.reshape(400), a4.reshape(400), d5[k], e[8], c, order)
            if order == 2:
                square_into(x5[k], a5)
                square_into(x4[k], a4)
                square_into(q2s[k], a2)
                square_into(q0, x0)
            else:
                x5[k] = a5
                x4[k] = a4.reshape(400)
            subsample_back(d3, a3, W2, d4, 5, e[6], g4c, g4b, r4c, r4b, c, order)
            conv_delta(d2, a2, d3, e[4], in_maps, in_counts, W2, L3, pad, c, order)
            subsample_back(d1, a1, W0, d2, W2, e[2], g2c, g2b, r2c, r2b, c, order)
            conv_step(g1w, g1b, r1w, r1b, q0 if order == 2 else x0, d1, L1, all_six, six,
                      W0, 1, c)
        side_by_side(c3_x, q2s if order == 2 else a2s, hi - lo)
        side_by_side(c3_d, d3s, hi - lo)
        conv_step(g3w, g3b, r3w, r3b, c3_x, c3_d, L3 * CHUNK, out_maps, out_counts,
                  W2 * CHUNK, CHUNK, c)
        full_sums(s5w, s5b, d5, x4, hi - lo, add, c)
        full_sums(s6w, s6b, d6, x5, hi - lo, add, c)
        for t in range(CONV_PARAMETERS_LEN):
            slot[t] = slot[t] + part[t] if add else part[t]


@pjit
def slots_kernel(slots, n_slots, losses, wrong, params, squares, neg, images, labels, index,
                 start, count, kind, order, scale, centers, in_maps, in_counts, c):
    """slot_sums of every slot, in parallel."""
    for s in prange(n_slots):
        slot_sums(slots[s], losses, wrong, params, squares, neg, images, labels, index,
                  start, count, kind, order, scale, np.int64(s), n_slots, centers, in_maps,
                  in_counts, c)


@pjit
def finish_kernel(params, grads, velocity, rates, slots, n_slots, mode, lr, momentum):
    """grads = the slots' sums added in slot order in float64; then the update of mode."""
    for b in prange((PARAMETERS_LEN + FINISH_BLOCK - 1) // FINISH_BLOCK):
        for k in range(b * FINISH_BLOCK, min(PARAMETERS_LEN, (b + 1) * FINISH_BLOCK)):
            g = 0.0
            for s in range(n_slots):
                g += slots[s, k]
            grads[k] = g
            if mode == SGD:
                v = momentum * velocity[k] - lr * grads[k]
                velocity[k] = v
                params[k] += v
            elif mode == SDLM:
                params[k] -= rates[k] * grads[k]


@jit
def add_stats(stats, losses, wrong, count):
    """stats[0] += the losses, stats[1] += the misclassified, in image order."""
    total, errors = 0.0, 0
    for n in range(count):
        total += losses[n]
        errors += wrong[n]
    stats[0] += total
    stats[1] += errors


# ---------------------------------------------------------------- launchers

def one_at_a_time(kernel, *args):
    """kernel(*args) with its prange iterations handed out one at a time (numba's
    parallel chunk size 1, set here: code that sets it cannot be cached), so that a busy
    core does not hold up the others; which thread takes an iteration changes no result."""
    old = get_parallel_chunksize()
    set_parallel_chunksize(1)
    try:
        kernel(*args)
    finally:
        set_parallel_chunksize(old)


def _check(op, params, images, centers, extra=()):
    """ValueError naming the first argument that does not fit (shapes, one dtype,
    C-contiguous NumPy arrays); else the images as (N, 1024) rows and the centers
    writable, as every kernel takes them (another shape or a read-only array would be
    another compile of every function it reaches)."""
    dtype = getattr(images, "dtype", None)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{op}: images are {dtype}, expected float32 or float64")
    n = images.shape[0]
    arrays = [("images", images, (n, 1, W0, W0) if images.ndim == 4 else (n, W0 * W0)),
              ("centers", centers, (10, 84)), ("params", params, (PARAMETERS_LEN,))]
    for name, a, shape in arrays + list(extra):
        if not isinstance(a, np.ndarray) or a.shape != tuple(shape) or a.dtype != dtype \
                or not a.flags.c_contiguous:
            raise ValueError(f"{op}: {name} must be a C-contiguous {dtype} array of shape "
                             f"{tuple(shape)}, not {getattr(a, 'dtype', type(a).__name__)} "
                             f"{getattr(a, 'shape', '')}")
    return (images.reshape(n, W0 * W0),
            centers if centers.flags.writeable else centers.copy())


def _check_table(op, table):
    if np.shape(table) != (6, 16):
        raise ValueError(f"{op}: the C3 table has shape {np.shape(table)}, expected (6, 16)")
    return connection_lists(table)


def _check_picks(op, order, start, count, n, items="patterns", what="order"):
    """ValueError unless order[..., start:start + count] exists and picks among n images."""
    if not 0 <= start <= start + count <= order.shape[-1]:
        raise ValueError(f"{op}: {items} {start}..{start + count} outside the {what} of "
                         f"{order.shape[-1]}")
    chosen = order[..., start:start + count]
    if chosen.size and (chosen.min() < 0 or chosen.max() >= n):
        raise ValueError(f"{op}: {what} entries outside the {n} images")


def _check_stats(op, stats, shape):
    if stats.dtype != np.float64 or stats.shape != shape:
        raise ValueError(f"{op}: stats must be a {shape} float64 array")


def _check_kind(op, kind):
    if kind not in KINDS:
        raise ValueError(f"{op}: kind {kind!r}, expected one of {sorted(KINDS)}")
    return KINDS[kind]


def sdlm_runs_cpu(params, rates, stats, sets, image_set, labels, order, start, count, kinds,
                  js, centers, table):
    """The per-pattern steps of R runs side by side (the CPU's kernels/sdlm.py sdlm_steps,
    lenet.sweep.sweep): params, rates (R, PARAMETERS_LEN), stats (R, 2) float64, sets
    (M, N, 1024) image sets, image_set (R,) int32, labels (N,) int32, order (R, P) int32,
    kinds (R,) int32 codes of KINDS, js (R,) MAP's constants. A run's parameters end
    bit for bit the same whichever runs go beside it."""
    r = params.shape[0]
    _, centers = _check("sdlm_runs_cpu", params[0], sets[0], centers,
           [("rates", rates, (r, PARAMETERS_LEN)), ("params", params, (r, PARAMETERS_LEN))])
    _check_stats("sdlm_runs_cpu", stats, (r, 2))
    for name, a, shape in (("image_set", image_set, (r,)), ("labels", labels, sets.shape[1:2]),
                           ("order", order, (r, order.shape[-1])), ("kinds", kinds, (r,))):
        if a.dtype != np.int32 or a.shape != shape:
            raise ValueError(f"sdlm_runs_cpu: {name} must be an int32 array of shape {shape}")
    _check_picks("sdlm_runs_cpu", order, start, count, sets.shape[1])
    if image_set.min() < 0 or image_set.max() >= sets.shape[0] or \
            kinds.min() < 0 or kinds.max() >= len(KINDS):
        raise ValueError("sdlm_runs_cpu: an image set or loss kind out of range")
    in_maps, in_counts = _check_table("sdlm_runs_cpu", table)
    c = np.stack([constants(params.dtype.type, j) for j in np.asarray(js, np.float64)])
    if r == 1:      # on this thread: a parallel launch's other threads would only wait
        sdlm_steps_kernel(params[0], rates[0], stats[0], sets[image_set[0]], labels, order[0],
                          int(start), int(count), np.int64(kinds[0]), centers, in_maps,
                          in_counts, c[0])
        return
    one_at_a_time(sdlm_runs_kernel, params, rates, stats, sets, image_set, labels, order,
                  int(start), int(count), kinds, centers, in_maps, in_counts, c)


_INFER_TABLES = {}   # a C3 table's bytes -> its connection lists (penalties_cpu's)


def penalties_cpu(out, images, params, centers, table):
    """out (N,10) = the RBF penalties of images (N,1,32,32), on every thread. A table's
    connection lists are made once (45 us, more than one image's forward)."""
    images, centers = _check("penalties_cpu", params, images, centers,
                             [("out", out, (images.shape[0], 10))])
    key = np.asarray(table, dtype=bool).tobytes() if np.shape(table) == (6, 16) else None
    lists = _INFER_TABLES.get(key)
    if lists is None:
        lists = _check_table("penalties_cpu", table)
        _INFER_TABLES[key] = lists
    in_maps, in_counts = lists
    c = constants(images.dtype.type)
    if images.shape[0] <= INFER_BLOCK:   # one block: no threads to start
        penalties_block(out, images, params, centers, in_maps, in_counts, c, 0,
                        images.shape[0])
    else:
        one_at_a_time(penalties_kernel, out, images, params, centers, in_maps, in_counts, c)


class StepWorkspace:
    """The buffers of mini-batch steps of up to `batch` images in `dtype`, allocated once
    (the CPU's lenet.workspace.Workspace): the slots' partial sums, per-image losses and
    errors, the squared parameters of order 2. step() checks nothing: the caller's arrays
    are checked when it makes them (the Trainer), or by launch_step."""

    def __init__(self, batch, dtype, centers, table):
        if not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"StepWorkspace: batch must be a positive whole number, not "
                             f"{batch!r}")
        self.batch, self.dtype = int(batch), np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"StepWorkspace: dtype {self.dtype}, expected float32 or float64")
        self.centers = np.array(centers, self.dtype)   # a writable copy (see _check)
        if self.centers.shape != (10, 84):
            raise ValueError(f"StepWorkspace: centers {self.centers.shape}, expected (10, 84)")
        self.in_maps, self.in_counts = _check_table("StepWorkspace", table)
        slots = min(SLOTS, -(-self.batch // CHUNK))
        self.slots = np.zeros((slots, PARAMETERS_LEN), self.dtype)
        self.loss_of = np.zeros(self.batch, self.dtype)
        self.wrong = np.zeros(self.batch, np.int32)
        self.squares = np.zeros(PARAMETERS_LEN, self.dtype)
        self.neg = np.full(CONV_PARAMETERS_LEN, -1, self.dtype)
        self.scratch_stats = np.zeros(2)      # for steps that count nothing
        self._constants = {}

    def step(self, params, grads, velocity, rates, stats, images, labels, index, start, count,
             kind, j, order, mode, lr, momentum):
        """One step over images[index[start:start + count]] (module docstring): kind,
        order, mode the codes of KINDS, 1 or 2, MODES."""
        c = self._constants.get(j)
        if c is None:
            c = self._constants[j] = constants(self.dtype, j)
        count, order = int(count), int(order)
        n_slots = min(self.slots.shape[0], -(-count // CHUNK))
        if order == 2:
            np.multiply(params, params, out=self.squares)
        t = self.dtype.type
        one_at_a_time(slots_kernel, self.slots, n_slots, self.loss_of, self.wrong, params,
                      self.squares, self.neg, images, labels, index, int(start), count,
                      int(kind), order, t(1.0 / count), self.centers, self.in_maps,
                      self.in_counts, c)
        finish_kernel(params, grads, velocity, rates, self.slots, n_slots, int(mode), t(lr),
                      t(momentum))
        add_stats(stats, self.loss_of, self.wrong, count)

    def losses(self, count):
        """The per-pattern losses of the last step's `count` images."""
        return self.loss_of[:count].copy()


def launch_step(workspace, params, grads, velocity, rates, stats, images, labels, index,
                start, count, kind, j, order, mode, lr, momentum):
    """workspace.step after checking every argument; kind and mode by name ("mse",
    "sgd", ...)."""
    kind_code = _check_kind("step", kind)
    if mode not in MODES or order not in (1, 2):
        raise ValueError(f"step: mode {mode!r}, order {order!r}; expected one of "
                         f"{sorted(MODES)}, 1 or 2")
    if images.ndim == 4:
        images = images.reshape(images.shape[0], W0 * W0)
    _check("step", params, images, workspace.centers,
           [(name, a, (PARAMETERS_LEN,)) for name, a in
            (("grads", grads), ("velocity", velocity), ("rates", rates))])
    if params.dtype != workspace.dtype:
        raise ValueError(f"step: {params.dtype} arrays in a {workspace.dtype} workspace")
    if not 0 < count <= workspace.batch:
        raise ValueError(f"step: {count} images in a workspace for {workspace.batch}")
    if labels.dtype != np.int32 or index.dtype != np.int32 or labels.shape != images.shape[:1]:
        raise ValueError("step: labels (N,) and index must be int32 arrays")
    _check_picks("step", index, start, count, images.shape[0], "images", "index")
    _check_stats("step", stats, (2,))
    workspace.step(params, grads, velocity, rates, stats, images, labels, index, start, count,
                   kind_code, j, order, MODES[mode], lr, momentum)


# ------------------------------------------------------------ every activation

@jit
def activations_block(images, params, centers, in_maps, in_counts, c, a_1, a_2, a_3, a_4,
                      a_5, a_6, y, lo, hi):
    """Every layer's output of images[n] for lo <= n < hi (forward_one), copied out of the
    flat maps into a_1 (N,6,28,28), a_2 (N,6,14,14), a_3 (N,16,10,10), a_4 (N,16,5,5),
    a_5 (N,120), a_6 (N,84), y (N,10)."""
    dt = images.dtype
    p = unpack(params)
    x0 = np.zeros((1, X0_LEN), dt)
    a1, a2 = np.zeros((6, L1), dt), np.zeros((6, A2_LEN), dt)
    a3, a4 = np.zeros((16, L3), dt), np.zeros((16, 25), dt)
    all_six, six = c1_lists()
    out_maps, out_counts = out_lists(in_maps, in_counts)
    for n in range(lo, hi):
        load_image(x0, images[n])
        forward_one(x0, p, a1, a2, a3, a4, a_5[n], a_6[n], y[n], centers, all_six, six,
                    out_maps, out_counts, c)
        for m in range(6):
            a_1[n, m] = a1[m].reshape((28, W0))[:, :28]
            a_2[n, m] = a2[m, :196].reshape((14, 14))
        for m in range(16):
            a_3[n, m] = a3[m].reshape((10, W2))[:, :10]
            a_4[n, m] = a4[m].reshape((5, 5))


@pjit
def activations_kernel(images, params, centers, in_maps, in_counts, c, a_1, a_2, a_3, a_4,
                       a_5, a_6, y):
    """activations_block over blocks of INFER_BLOCK images, in parallel."""
    n = images.shape[0]
    for b in prange((n + INFER_BLOCK - 1) // INFER_BLOCK):
        lo = np.int64(b) * INFER_BLOCK
        activations_block(images, params, centers, in_maps, in_counts, c, a_1, a_2, a_3, a_4,
                          a_5, a_6, y, lo, min(n, lo + INFER_BLOCK))


def activations_cpu(images, params, centers, table):
    """[C1 (N,6,28,28), S2 (N,6,14,14), C3 (N,16,10,10), S4 (N,16,5,5), C5 (N,120),
    F6 (N,84), penalties (N,10)] of images (N,1,32,32), in their dtype, on every thread:
    each image's row is what the other paths compute for it, whichever thread runs it."""
    images, centers = _check("activations_cpu", params, images, centers)
    in_maps, in_counts = _check_table("activations_cpu", table)
    n, dt = images.shape[0], images.dtype
    out = [np.empty((n,) + shape, dt) for shape in
           ((6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120,), (84,), (10,))]
    args = (images, params, centers, in_maps, in_counts, constants(dt.type), *out)
    if n <= INFER_BLOCK:   # one block: no threads to start
        activations_block(*args, 0, n)
    else:
        one_at_a_time(activations_kernel, *args)
    return out
