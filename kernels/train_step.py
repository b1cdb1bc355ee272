"""A fused mini-batch training step of LeNet-5 in three launches, built from the pieces of
kernels/forward_pieces.py and kernels/backward_pieces.py: batch_kernel (forward, loss,
backward, C1..S4's gradient sums per block), dense_grads_kernel (C5's and F6's gradients
as split-batch products) and finish_kernel (each gradient's partial sums in a fixed order:
a step repeats bit for bit; then the update). order 1 gives the gradients of the batch's
mean loss, 2 its Gauss-Newton curvature (the SDLM recipes).

launch_step checks every argument, then launch launches the three; lenet/workspace.py
allocates the activation buffer (ACT_ROWS) once per batch size and calls launch unchecked.
Grid and memory layout: docs/kernels.md. Test: pytest -q tests/test_train_step.py;
through the Trainer: tests/test_gpu_model.py.
"""

import numpy as np
from numba import config, cuda, float32, float64, int32, int64, uint32, void

from .architecture import LOSS_KINDS, STEP_MODES, offsets
from .backward_pieces import (
    C1_GRAD_TASKS,
    C2_DELTA_TASKS,
    C3_GRAD_TASKS,
    GRAD_SUMS,
    c1_grad_sums,
    c1_map_sum,
    c3_delta,
    c3_first_pair,
    c3_grad_sums,
    c3_pair_sum,
    c3_weight_sum,
    check_constants,
    dense_delta,
    pattern_loss,
    rbf_delta,
    subsample_delta,
    subsample_grads,
)
from .common import cdiv, check_device_arrays, device_function, kernel
from .forward import C1_LEN, C3_LEN, C5_THREADS, image_task, s2_to_penalties
from .forward_pieces import (
    B1_AT,
    B3_AT,
    B5_AT,
    B6_AT,
    C1_MAPS,
    C1S2_TASKS,
    C2_AT,
    C3_MAPS,
    C4_AT,
    C5_INPUTS,
    C5_UNITS,
    CONV_PARAMETERS_LEN,
    DENSE_SPLIT,
    F6_UNITS,
    IMAGES,
    IN_LEN,
    N_CLASSES,
    PARAMETERS_LEN,
    S2_LEN,
    S2_SIZE,
    S4_LEN,
    S4_SIZE,
    W3_AT,
    W5_AT,
    W6_AT,
    K,
    argmin10,
    c1s2_forward,
    conv_views,
    dense_views,
)

THREADS = 256
BLOCKS_PER_SM = 2                    # launch bound: up to 128 registers a thread
LAUNCH_BOUNDS = {"launch_bounds": (THREADS, BLOCKS_PER_SM)}
DENSE_LEN = PARAMETERS_LEN - W5_AT               # C5's and F6's parameters: 58,284
CONV_LEN = CONV_PARAMETERS_LEN                   # C1..S4's: 2,616
# shared sums of the subsampling layers: S2 coefficients, S2 biases, S4 ..., S4 ...
SUB_C2, SUB_B2, SUB_C4, SUB_B4 = 0, C1_MAPS, 2 * C1_MAPS, 2 * C1_MAPS + C3_MAPS
SUB_LEN = 2 * (C1_MAPS + C3_MAPS)
# the rest of batch_kernel's shared memory (47.2 KB in all): C1's and C3's task sums,
# the full connections' partial sums
C1_SUMS_LEN = C1_GRAD_TASKS * GRAD_SUMS
C3_SUMS_LEN = C3_GRAD_TASKS * GRAD_SUMS
PART_LEN = DENSE_SPLIT * IMAGES * C5_UNITS

# the finish kernel's modes
MODES = STEP_MODES
STORE, SGD, SDLM = MODES["store"], MODES["sgd"], MODES["sdlm"]

# per-image rows of the activation buffer, in order: outputs of each layer, the
# penalties y, dE/dy, d2E/dy2, (loss, misclassified), then the deltas (dE/da at each
# layer's pre-activation; curvature with order 2)
ACT_ROWS = (("a1", C1_LEN), ("a2", S2_LEN), ("a3", C3_LEN), ("a4", S4_LEN),
            ("a5", C5_UNITS), ("a6", F6_UNITS), ("y", N_CLASSES), ("dy", N_CLASSES),
            ("hy", N_CLASSES), ("loss", 2), ("d1", C1_LEN), ("d2", S2_LEN), ("d3", C3_LEN),
            ("d4", S4_LEN), ("d5", C5_UNITS), ("d6", F6_UNITS))
ACT_AT, ROW_LEN = offsets(ACT_ROWS)              # ROW_LEN: floats an image, 16,200
ACT_LEN = dict(ACT_ROWS)
A1, A2, A3, A4, A5, A6 = (ACT_AT[k] for k in ("a1", "a2", "a3", "a4", "a5", "a6"))
Y, DY, HY, LOSS = ACT_AT["y"], ACT_AT["dy"], ACT_AT["hy"], ACT_AT["loss"]
D1, D2, D3, D4, D5, D6 = (ACT_AT[k] for k in ("d1", "d2", "d3", "d4", "d5", "d6"))

# dense_grads_kernel's tiles: all of a layer's units (C5's 120, F6's 84) x 64 inputs
# (the bias as input n_in, x = 1); thread (ty, tx) of 16 x 16 owns units ty + 16 a, a < 8,
# and inputs tx + 16 b, b < 4
TILE_O, TILE_I, SIDE, SLAB = 128, 64, 16, 16     # SLAB images staged at a time
TO, TI = TILE_O // SIDE, TILE_I // SIDE          # 8 x 4 sums a thread
C5_TILES = cdiv(C5_INPUTS + 1, TILE_I)           # 7
DENSE_TILES = C5_TILES + cdiv(C5_UNITS + 1, TILE_I)   # 9
SPLIT_IMAGES = 64     # fewest images a split of dense_grads_kernel takes
# the largest batch: every index into the activation rows (bp * ROW_LEN floats) is 32-bit
MAX_BATCH = (2**32 - 1) // ROW_LEN // IMAGES * IMAGES
FINISH_THREADS = 256
# the finish kernel's blocks: one thread per parameter on a GPU; a few in the simulator
FINISH_BLOCKS = 4 if config.ENABLE_CUDASIM else cdiv(PARAMETERS_LEN, FINISH_THREADS)

assert C5_THREADS <= THREADS and C3_GRAD_TASKS <= THREADS - C3_MAPS
assert C1_GRAD_TASKS <= THREADS - C1_MAPS


# ------------------------------------------------------------------ batch kernel

@device_function
def conv_grad(c1sum, c3sum, sub, table, k):
    """The block's gradient sum of parameter k < CONV_LEN (flat order) from its shared
    sums: C1's task sums, S2's and S4's, C3's pair sums (0 off the table)."""
    k = uint32(k)
    if k < uint32(B1_AT):
        return c1_map_sum(c1sum, k // uint32(K * K), k % uint32(K * K))
    if k < uint32(C2_AT):
        return c1_map_sum(c1sum, k - uint32(B1_AT), K * K)
    if k < uint32(W3_AT):
        return sub[SUB_C2 + (k - uint32(C2_AT))]           # S2 coefficients, then biases
    if k < uint32(B3_AT):
        r = k - uint32(W3_AT)
        return c3_weight_sum(c3sum, table, r // uint32(C1_MAPS * K * K),
                             (r // uint32(K * K)) % uint32(C1_MAPS), r % uint32(K * K))
    if k < uint32(C4_AT):
        return c3_pair_sum(c3sum, c3_first_pair(table, k - uint32(B3_AT)), K * K)
    return sub[SUB_C4 + (k - uint32(C4_AT))]                # S4 coefficients, then biases


SIGNATURE = void(float32[::1], int32, float32[::1], float32[:, ::1], int32[::1], int32[::1],
                 int64, int32, int32, float32, float32, int32, float32[:, ::1],
                 float32[:, ::1], float32[::1], int32[::1], int32[::1])


@kernel(SIGNATURE, **LAUNCH_BOUNDS)
def batch_kernel(acts, bp, params, images, labels, index, start, count, kind, j, scale,
                 order, conv_part, stats_part, centers, table, out_table):
    # blocks stride over groups of IMAGES images; threads over each stage's (image, task)
    conv = cuda.shared.array(CONV_PARAMETERS_LEN, float32)
    c1sum = cuda.shared.array(C1_SUMS_LEN, float32)
    c3sum = cuda.shared.array(C3_SUMS_LEN, float32)
    sub = cuda.shared.array(SUB_LEN, float32)
    part = cuda.shared.array(PART_LEN, float32)
    t = uint32(cuda.threadIdx.x)
    for i in range(t, uint32(CONV_PARAMETERS_LEN), uint32(THREADS)):
        conv[i] = params[i]
    if t < uint32(SUB_LEN):
        sub[t] = float32(0.0)
    w1, b1, c2, b2, w3, b3, c4, b4 = conv_views(conv)
    w5, b5, w6, b6 = dense_views(params)
    rows = uint32(bp)
    a1, a2, a3 = acts[rows * uint32(A1):], acts[rows * uint32(A2):], acts[rows * uint32(A3):]
    a4, a5, a6 = acts[rows * uint32(A4):], acts[rows * uint32(A5):], acts[rows * uint32(A6):]
    y, dy, hy = acts[rows * uint32(Y):], acts[rows * uint32(DY):], acts[rows * uint32(HY):]
    loss = acts[rows * uint32(LOSS):]
    d1, d2, d3 = acts[rows * uint32(D1):], acts[rows * uint32(D2):], acts[rows * uint32(D3):]
    d4, d5, d6 = acts[rows * uint32(D4):], acts[rows * uint32(D5):], acts[rows * uint32(D6):]
    n_img = uint32(count)
    loss_sum = float32(0.0)
    wrong_sum = float32(0.0)
    first = True          # the first group overwrites the task sums, the others add
    s4_thread = t >= uint32(THREADS - C3_MAPS)
    s2_thread = t >= uint32(THREADS - C1_MAPS)
    groups = (n_img + uint32(IMAGES - 1)) // uint32(IMAGES)
    cuda.syncthreads()  # C1..S4's parameters are staged, the sums zeroed
    for group in range(uint32(cuda.blockIdx.x), groups, uint32(cuda.gridDim.x)):
        n0 = group * uint32(IMAGES)
        here = min(uint32(IMAGES), n_img - n0)

        # ------------------------------------------------------------ forward
        for q in range(t, here * uint32(C1S2_TASKS), uint32(THREADS)):
            g, task = image_task(q, here, C1S2_TASKS)
            n = n0 + g
            c1s2_forward(a2[n * uint32(S2_LEN):], a1[n * uint32(C1_LEN):],
                         images[index[start + n]], w1, b1, c2, b2, task, True)
        cuda.syncthreads()  # S2 is complete
        s2_to_penalties(a2[n0 * uint32(S2_LEN):], S2_LEN, a3[n0 * uint32(C3_LEN):], C3_LEN,
                        a4[n0 * uint32(S4_LEN):], S4_LEN, a5[n0 * uint32(C5_UNITS):], C5_UNITS,
                        a6[n0 * uint32(F6_UNITS):], F6_UNITS, y[n0 * uint32(N_CLASSES):],
                        N_CLASSES, part, w3, b3, c4, b4, w5, b5, w6, b6, table, centers, here,
                        t, THREADS, True)
        if t < here:
            n = n0 + t
            label = labels[index[start + n]]
            yn = y[n * uint32(N_CLASSES):]
            loss[n * uint32(2)] = pattern_loss(yn, label, kind, j, scale,
                                               dy[n * uint32(N_CLASSES):],
                                               hy[n * uint32(N_CLASSES):])
            loss[n * uint32(2) + uint32(1)] = float32(1.0) if int32(argmin10(yn)) != label \
                else float32(0.0)
        cuda.syncthreads()  # the losses, dE/dy and d2E/dy2 are written
        if t == 0:
            for g in range(here):   # the block's totals, image by image
                loss_sum += loss[(n0 + g) * uint32(2)]
                wrong_sum += loss[(n0 + g) * uint32(2) + uint32(1)]

        # ----------------------------------------------------------- backward
        for q in range(t, here * uint32(F6_UNITS), uint32(THREADS)):
            n, i = n0 + q // uint32(F6_UNITS), q % uint32(F6_UNITS)
            rbf_delta(d6[n * uint32(F6_UNITS):], dy[n * uint32(N_CLASSES):],
                      hy[n * uint32(N_CLASSES):], a6[n * uint32(F6_UNITS):], centers, order, i)
        cuda.syncthreads()  # F6's delta is complete
        for q in range(t, here * uint32(C5_UNITS), uint32(THREADS)):
            n, i = n0 + q // uint32(C5_UNITS), q % uint32(C5_UNITS)
            dense_delta(d5[n * uint32(C5_UNITS):], d6[n * uint32(F6_UNITS):], w6,
                        a5[n * uint32(C5_UNITS):], C5_UNITS, F6_UNITS, order, i)
        cuda.syncthreads()  # C5's delta is complete
        for q in range(t, here * uint32(S4_LEN), uint32(THREADS)):
            n, i = n0 + q // uint32(S4_LEN), q % uint32(S4_LEN)
            dense_delta(d4[n * uint32(S4_LEN):], d5[n * uint32(C5_UNITS):], w5,
                        a4[n * uint32(S4_LEN):], C5_INPUTS, C5_UNITS, order, i)
        cuda.syncthreads()  # S4's delta is complete
        for q in range(t, here * uint32(C3_LEN), uint32(THREADS)):
            n, k = n0 + q // uint32(C3_LEN), q % uint32(C3_LEN)
            subsample_delta(d3[n * uint32(C3_LEN):], d4[n * uint32(S4_LEN):],
                            a3[n * uint32(C3_LEN):], c4, C3_MAPS, S4_SIZE, order, k)
        if s4_thread:     # the last 16 threads: S4's sums, each its map's in group order
            m = t - uint32(THREADS - C3_MAPS)
            gc, gb = subsample_grads(d4[n0 * uint32(S4_LEN):], S4_LEN, a3[n0 * uint32(C3_LEN):],
                                     C3_LEN, here, S4_SIZE, order, m)
            sub[SUB_C4 + m] += gc
            sub[SUB_B4 + m] += gb
        cuda.syncthreads()  # C3's delta is complete
        for q in range(t, uint32(C3_GRAD_TASKS) + here * uint32(C2_DELTA_TASKS), uint32(THREADS)):
            if q < uint32(C3_GRAD_TASKS):     # thread q sums task q: always the same thread
                for g in range(here):
                    n = n0 + g
                    c3_grad_sums(c3sum, d3[n * uint32(C3_LEN):], a2[n * uint32(S2_LEN):],
                                 table, q, order, not first or g > 0)
            else:
                g, task = image_task(q - uint32(C3_GRAD_TASKS), here, C2_DELTA_TASKS)
                n = n0 + g
                c3_delta(d2[n * uint32(S2_LEN):], d3[n * uint32(C3_LEN):], w3,
                         a2[n * uint32(S2_LEN):], out_table, task, order)
        cuda.syncthreads()  # S2's delta is complete
        for q in range(t, here * uint32(C1_LEN), uint32(THREADS)):
            n, k = n0 + q // uint32(C1_LEN), q % uint32(C1_LEN)
            subsample_delta(d1[n * uint32(C1_LEN):], d2[n * uint32(S2_LEN):],
                            a1[n * uint32(C1_LEN):], c2, C1_MAPS, S2_SIZE, order, k)
        if s2_thread:     # the last 6 threads: S2's sums
            m = t - uint32(THREADS - C1_MAPS)
            gc, gb = subsample_grads(d2[n0 * uint32(S2_LEN):], S2_LEN, a1[n0 * uint32(C1_LEN):],
                                     C1_LEN, here, S2_SIZE, order, m)
            sub[SUB_C2 + m] += gc
            sub[SUB_B2 + m] += gb
        cuda.syncthreads()  # C1's delta is complete
        if t < uint32(C1_GRAD_TASKS):
            for g in range(here):
                n = n0 + g
                c1_grad_sums(c1sum, d1[n * uint32(C1_LEN):], images[index[start + n]], t,
                             order, not first or g > 0)
        first = False
        # no barrier: the next group's first stages touch neither the sums nor this
        # group's rows, and its C5 stage waits behind two barriers
    cuda.syncthreads()  # the block's sums are complete
    out = conv_part[cuda.blockIdx.x]
    for k in range(t, uint32(CONV_LEN), uint32(THREADS)):
        out[k] = conv_grad(c1sum, c3sum, sub, table, k)
    if t == 0:
        stats_part[cuda.blockIdx.x, 0] = loss_sum
        stats_part[cuda.blockIdx.x, 1] = wrong_sum


# -------------------------------------------------------------- C5's and F6's sums

@device_function
def slab_row(acc, ds, xs, kk, ty, tx):
    """acc[a, b] += ds[kk, ty + 16 a] xs[kk, tx + 16 b]: one staged image's 32 products."""
    for b in range(TI):
        xv = xs[kk, tx + uint32(SIDE * b)]
        for a in range(TO):
            acc[a, b] += ds[kk, ty + uint32(SIDE * a)] * xv


@kernel("void(float32[:, ::1], float32[::1], int32, int32, int32)")
def dense_grads_kernel(dense_part, acts, bp, count, order):
    # block (tile, split): a layer's unit x 64-input tile of sums over the split's images;
    # thread (ty, tx) owns units ty + 16 a (a < 8) and inputs tx + 16 b (b < 4)
    ds = cuda.shared.array((SLAB, TILE_O), float32)
    xs = cuda.shared.array((SLAB, TILE_I), float32)
    acc = cuda.local.array((TO, TI), float32)
    t = uint32(cuda.threadIdx.x)
    ty, tx = t // uint32(SIDE), t % uint32(SIDE)
    tile, split, splits = uint32(cuda.blockIdx.x), uint32(cuda.blockIdx.y), uint32(cuda.gridDim.y)
    rows = uint32(bp)
    if tile < uint32(C5_TILES):
        n_out, n_in, i0 = uint32(C5_UNITS), uint32(C5_INPUTS), tile * uint32(TILE_I)
        d, x = acts[rows * uint32(D5):], acts[rows * uint32(A4):]
        w_at, b_at = uint32(0), uint32(B5_AT - W5_AT)
    else:
        n_out, n_in = uint32(F6_UNITS), uint32(C5_UNITS)
        i0 = (tile - uint32(C5_TILES)) * uint32(TILE_I)
        d, x = acts[rows * uint32(D6):], acts[rows * uint32(A5):]
        w_at, b_at = uint32(W6_AT - W5_AT), uint32(B6_AT - W5_AT)
    for a in range(TO):
        for b in range(TI):
            acc[a, b] = float32(0.0)
    chunk = (uint32(count) + splits - uint32(1)) // splits
    begin = min(split * chunk, uint32(count))
    end = min(begin + chunk, uint32(count))
    for n in range(begin, end, uint32(SLAB)):
        for e in range(t, uint32(SLAB * TILE_O), uint32(THREADS)):
            kk, o = e // uint32(TILE_O), e % uint32(TILE_O)
            ds[kk, o] = d[(n + kk) * n_out + o] if n + kk < end and o < n_out else float32(0.0)
        for e in range(t, uint32(SLAB * TILE_I), uint32(THREADS)):
            kk, c = e // uint32(TILE_I), e % uint32(TILE_I)
            i = i0 + c
            xv = float32(0.0)
            if n + kk < end and i < n_in:
                xv = x[(n + kk) * n_in + i]
            elif n + kk < end and i == n_in:
                xv = float32(1.0)                     # the bias's input
            xs[kk, c] = xv * xv if order == 2 else xv
        cuda.syncthreads()  # the slab is staged
        if end - n >= uint32(SLAB):       # a whole slab: constant trip count, unrolled
            for kk in range(SLAB):
                slab_row(acc, ds, xs, kk, ty, tx)
        else:                             # the last images of the split
            for kk in range(end - n):
                slab_row(acc, ds, xs, kk, ty, tx)
        cuda.syncthreads()  # the slab is read before the next overwrites it
    out = dense_part[split]
    for a in range(TO):
        o = ty + uint32(SIDE * a)
        for b in range(TI):
            i = i0 + tx + uint32(SIDE * b)
            if o < n_out and i < n_in:
                out[w_at + o * n_in + i] = acc[a, b]
            elif o < n_out and i == n_in:
                out[b_at + o] = acc[a, b]


# ------------------------------------------------------------------ finish and update

@kernel(void(float32[::1], float32[::1], float32[::1], float32[::1], float32[:, ::1],
             float32[:, ::1], int32, int32, float32[:, ::1], float64[::1], int32, float32,
             float32),
        allow={"float64": "stats (2,) float64: the pass's running loss and error totals, "
               "added to once a step by one thread"})
def finish_kernel(params, grads, velocity, rates, conv_part, dense_part, n_blocks, n_splits,
                  stats_part, stats, mode, lr, momentum):
    # threads stride over the parameters k; thread 0 also adds the blocks' stats
    for k in range(uint32(cuda.grid(1)), uint32(PARAMETERS_LEN), uint32(cuda.gridsize(1))):
        g = float32(0.0)
        if k < uint32(CONV_LEN):
            for b in range(uint32(n_blocks)):
                g += conv_part[b, k]
        else:
            for s in range(uint32(n_splits)):
                g += dense_part[s, k - uint32(CONV_LEN)]
        grads[k] = g
        if mode == SGD:
            v = momentum * velocity[k] - lr * g
            velocity[k] = v
            params[k] += v
        elif mode == SDLM:
            params[k] -= rates[k] * g
    if cuda.grid(1) == 0:      # the step's totals in float32, the pass's in float64
        total, wrong = float32(0.0), float32(0.0)
        for b in range(n_blocks):
            total += stats_part[b, 0]
            wrong += stats_part[b, 1]
        stats[0] += float64(total)
        stats[1] += float64(wrong)


# ---------------------------------------------------------------------- launchers

def padded(batch):
    """Rows of the activation buffer for a batch: whole groups of IMAGES."""
    return cdiv(batch, IMAGES) * IMAGES


def persistent_grid(sms, batch_resident, dense_resident):
    """(blocks, splits): batch_kernel's blocks and dense_grads_kernel's splits (of
    DENSE_TILES blocks each) that fill one wave of `sms` SMs, each holding batch_resident
    and dense_resident blocks of them (kernels/occupancy.py)."""
    return max(1, batch_resident * sms), max(1, dense_resident * sms // DENSE_TILES)


def grid(count, blocks, splits, split_images=SPLIT_IMAGES):
    """(batch_kernel's blocks, dense_grads_kernel's splits) for `count` images: at most
    `blocks` blocks and `splits` splits, each split at least split_images images."""
    return max(1, min(blocks, cdiv(count, IMAGES))), max(1, min(splits, cdiv(count, split_images)))


def launch_step(acts, bp, params, grads, velocity, rates, images, labels, index, start, count,
                kind, j, order, mode, lr, momentum, conv_part, dense_part, stats_part, stats,
                centers, table, out_table, split_images=SPLIT_IMAGES):
    """One step over images index[start:start+count] after checking every argument
    (lenet/workspace.py calls launch without checks). mode "store"
    (gradients, or curvature with order 2, into grads), "sgd" or "sdlm"; kind "mse" or
    "map". conv_part (blocks, CONV_LEN) and dense_part (splits, DENSE_LEN) decide the
    grid: their row counts are the most blocks and splits used."""
    if kind not in LOSS_KINDS or mode not in MODES or order not in (1, 2):
        raise ValueError(f"step: kind {kind!r}, mode {mode!r}, order {order!r}; expected "
                         f"one of {sorted(LOSS_KINDS)}, {sorted(MODES)}, 1 or 2")
    n_all = images.shape[0] if len(getattr(images, "shape", ())) == 2 else None
    if bp > MAX_BATCH:
        raise ValueError(f"step: {bp} rows; the most is {MAX_BATCH} (32-bit indices)")
    if not 0 < count <= bp or bp % IMAGES:
        raise ValueError(f"step: {count} images for {bp} rows (a multiple of {IMAGES})")
    if not 0 <= start <= start + count <= index.shape[0]:
        raise ValueError(f"step: images {start}..{start + count} outside the index of "
                         f"{index.shape[0]}")
    check_device_arrays(
        "step", acts=(acts, (bp * ROW_LEN,)), params=(params, (PARAMETERS_LEN,)),
        grads=(grads, (PARAMETERS_LEN,)), velocity=(velocity, (PARAMETERS_LEN,)),
        rates=(rates, (PARAMETERS_LEN,)), images=(images, (n_all, IN_LEN)),
        labels=(labels, (n_all,), np.int32), index=(index, (index.shape[0],), np.int32),
        conv_part=(conv_part, (conv_part.shape[0], CONV_LEN)),
        dense_part=(dense_part, (dense_part.shape[0], DENSE_LEN)),
        stats_part=(stats_part, (conv_part.shape[0], 2)), stats=(stats, (2,), np.float64))
    check_constants("step", centers, table, out_table)
    launch(acts, bp, params, grads, velocity, rates, images, labels, index, start, count,
           LOSS_KINDS[kind], j, order, MODES[mode], lr, momentum, conv_part, dense_part,
           stats_part, stats, centers, table, out_table, split_images)


def launch(acts, bp, params, grads, velocity, rates, images, labels, index, start, count,
           kind, j, order, mode, lr, momentum, conv_part, dense_part, stats_part, stats,
           centers, table, out_table, split_images=SPLIT_IMAGES):
    """launch_step's three launches without its checks (lenet's Workspace checked its
    buffers when it made them): kind and mode the kernels' codes (LOSS_KINDS, MODES)."""
    blocks, splits = grid(count, conv_part.shape[0], dense_part.shape[0], split_images)
    batch_kernel[blocks, THREADS](acts, np.int32(bp), params, images, labels, index,
                                  np.int64(start), np.int32(count), np.int32(kind),
                                  np.float32(j), np.float32(1.0 / count), np.int32(order),
                                  conv_part, stats_part, centers, table, out_table)
    dense_grads_kernel[(DENSE_TILES, splits), THREADS](dense_part, acts, np.int32(bp),
                                                       np.int32(count), np.int32(order))
    finish_kernel[FINISH_BLOCKS, FINISH_THREADS](params, grads, velocity, rates, conv_part,
                                                 dense_part, np.int32(blocks), np.int32(splits),
                                                 stats_part, stats, np.int32(mode),
                                                 np.float32(lr), np.float32(momentum))
