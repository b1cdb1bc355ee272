"""One-image backward pieces of LeNet-5, device functions: the loss, the deltas (dE/da at a
layer's pre-activation a) and the parameter-gradient sums that kernels/train_step.py and
kernels/sdlm.py are assembled from. order 1 gives gradients, order 2 the Gauss-Newton
second derivatives of the SDLM recipe (as kernels.reference's order 2), f'(a) taken from
the layer's output (kernels.common.through_squash). Arrays are 1-D per image, as in
kernels/forward_pieces.py; a piece that sums over images reads image g at g * stride, so
a block of images and one image (SDLM) call the same code. Sums are in a fixed order (no
atomics); the caller adds or steps with them.

Test: pytest -q tests/test_backward_pieces.py (each piece through kernels/backward.py)
"""

import math

import numpy as np
from numba import cuda, float32, uint32

from .architecture import C3_PAIRS, LOSS_KINDS
from .common import check_device_arrays, device_function, through_squash
from .forward_pieces import (
    C1_MAPS,
    C1_SIZE,
    C3_MAPS,
    C3_SIZE,
    F6_UNITS,
    IN_SIZE,
    N_CLASSES,
    S2_SIZE,
    TABLE_ROW,
    K,
    registers,
)

# the whole-layer weight-gradient tasks, each a register tile of weight_grads. C1: (map,
# band of C1_BAND_ROWS rows, half row); C3: (connected pair, band of C3_BAND_ROWS rows),
# the C3_PAIRS (60) pairs of kernels.architecture.C3_TABLE numbered map by map
C1_BAND_ROWS = 4
C1_GRAD_COLS = C1_SIZE // 2                 # half a row of C1
C1_GRAD_WIN = C1_GRAD_COLS + K - 1
C1_BANDS = C1_SIZE // C1_BAND_ROWS          # 7 a map
C1_MAP_TASKS = 2 * C1_BANDS                 # 14 a map: (band, half row)
C1_GRAD_TASKS = C1_MAPS * C1_MAP_TASKS      # 84
C3_BAND_ROWS = 5
C3_BANDS = C3_SIZE // C3_BAND_ROWS          # 2 a pair (c3_pair_sum adds the two)
C3_GRAD_WIN = C3_SIZE + K - 1
C3_GRAD_TASKS = C3_PAIRS * C3_BANDS         # 120
C2_DELTA_TASKS = C1_MAPS * (S2_SIZE // 2)   # c3_delta's tasks an image: (S2 map, row pair)
OUT_TABLE_ROW = 1 + C3_MAPS     # c3_out_table row: count, then up to 16 C3 maps
GRAD_SUMS = K * K + 1           # a weight-gradient task's sums: 25 weights and the bias
KIND_MSE = LOSS_KINDS["mse"]

# the tasks tile their layers exactly, and the pieces' code is written for these counts
assert C1_BANDS * C1_BAND_ROWS == C1_SIZE and 2 * C1_GRAD_COLS == C1_SIZE
assert C3_BANDS * C3_BAND_ROWS == C3_SIZE
assert C3_BANDS == 2, "c3_pair_sum adds a pair's 2 bands by hand: change it too"
assert S2_SIZE % 2 == 0                                         # c3_delta's row pairs


# -------------------------------------------------------------------------- loss
@device_function
def pattern_loss(y, label, kind, j, scale, dy, hy):
    """One pattern's loss from its penalties y (10,), writing dE/dy * scale into dy (10,)
    and the Gauss-Newton d2E/dy2 * scale into hy (10,) (scale 1/N: the mean over a batch of
    N), as kernels/reference.py's loss_ref gives them. label 0..9 (any
    other: NaN for all three), kind a code of kernels.architecture.LOSS_KINDS, j eq. 9's
    constant:

        mse  (paper eq. 8):  loss = y_D,   dy = onehot,   hy = 0
        map  (paper eq. 9):  loss = y_D + log(exp(-j) + sum_i exp(-y_i)),
                             p_i = exp(-y_i) / (exp(-j) + sum_k exp(-y_k)),
                             dy = onehot - p,   hy = p (1 - p)

    MAP is computed stably: every exponent relative to the largest, zmax = max(-j, -y_0,
    ..., -y_9), so the largest term is exactly 1 and nothing overflows or underflows to a
    zero total; the sum r of the other terms gives log(total) = zmax + log1p(r) and 1 - p =
    r / total for the largest term, without the cancellation of 1 - p (which matters when
    a pattern is classified with confidence)."""
    if label < 0 or label >= N_CLASSES:
        for i in range(N_CLASSES):
            dy[i] = math.nan
            hy[i] = math.nan
        return float32(math.nan)

    if kind == KIND_MSE:
        for i in range(N_CLASSES):
            dy[i] = scale if i == label else float32(0)
            hy[i] = float32(0)
        return y[label]

    # MAP: the exponents are z = (-j, -y_0, ..., -y_9); imax = -1 stands for -j
    zmax = -j
    imax = -1
    for i in range(N_CLASSES):
        if -y[i] > zmax:
            zmax = -y[i]
            imax = i
    # r = the sum of every term exp(z - zmax) but the largest, which is exactly 1
    r = float32(0) if imax == -1 else math.exp(-j - zmax)
    for i in range(N_CLASSES):
        if i != imax:
            r += math.exp(-y[i] - zmax)
    total = float32(1) + r
    for i in range(N_CLASSES):
        e = math.exp(-y[i] - zmax)
        p = e / total
        q = (r if i == imax else total - e) / total  # 1 - p, without cancellation
        dy[i] = (q if i == label else -p) * scale
        hy[i] = p * q * scale
    return (y[label] + zmax) + math.log1p(r)


# --------------------------------------------------------------------------- RBF

@device_function
def rbf_delta(d6, dy, hy, x6, centers, order, j):
    """F6 unit j of one image. order 1: d6[j] = f'(a6_j) sum_i dy_i 2 (x6_j - c_ij);
    order 2: f'(a6_j)^2 sum_i (2 dy_i + 4 hy_i (x6_j - c_ij)^2) (y's own curvature kept:
    kernels.reference.rbf_backward_ref). dy, hy (10,); x6 (84,) F6's output."""
    xj = x6[j]
    g = float32(0.0)
    for i in range(uint32(N_CLASSES)):
        diff = xj - centers[i * uint32(F6_UNITS) + uint32(j)]
        if order == 2:
            g += float32(2.0) * dy[i] + float32(4.0) * hy[i] * diff * diff
        else:
            g += float32(2.0) * dy[i] * diff
    d6[j] = through_squash(g, xj, order)


# ------------------------------------------------------------ full connections

@device_function
def dense_delta(dx, d, w, x, n_in, n_out, order, i):
    """Input unit i below a full connection of one image: dx[i] = f'(x_i) sum_o d[o]
    w[o, i] (order 2: f'(x_i)^2 sum_o d[o] w[o, i]^2). d (n_out,) the delta above, w
    (n_out * n_in,) row-major, x (n_in,) the input (a layer's output). Threads with
    consecutive i read consecutive weights."""
    g = float32(0.0)
    at = uint32(i)
    o = uint32(0)
    while o < uint32(n_out):   # not range(): see dense_delta_step
        wv = w[at]
        if order == 2:
            wv = wv * wv
        g += d[o] * wv
        at += uint32(n_in)
        o += uint32(1)
    dx[i] = through_squash(g, x[i], order)


@device_function
def dense_delta_step(dx, d, w, rate, x, n_in, n_out, i):
    """dense_delta (order 1) of input unit i of one image, and the step of the weights it
    read: w[o, i] -= rate[o, i] d[o] x[i] (the weight's gradient is d[o] x[i]), each weight
    read once and written once. The delta uses the weights before the step. rate
    (n_out * n_in,) the per-weight step sizes (SDLM's eta / (mu + h))."""
    g = float32(0.0)
    xi = x[i]
    at = uint32(i)
    end = uint32(i) + uint32(n_out) * uint32(n_in)
    while at < end:      # a while loop: numba's range over unsigned bounds costs ~8 more
        wv = w[at]       # instructions a trip here
        do = d[(at - uint32(i)) // uint32(n_in)]
        g += do * wv
        w[at] = wv - rate[at] * (do * xi)
        at += uint32(n_in)
    dx[i] = through_squash(g, xi, 1)


# ------------------------------------------------------------------ subsampling

@device_function
def subsample_delta(dx, d, x, coef, maps, size, order, k):
    """Input pixel k (map m, row y, column x) below a subsampling layer with `maps` maps
    of size x size outputs, one image: dx[k] = f'(x_k) coef[m] d[m, y/2, x/2] (order 2:
    f'^2 coef^2 d). x (maps * (2 size)^2,) is the layer's input (C1's or C3's output)."""
    w = uint32(2 * size)
    m = uint32(k) // (w * w)
    r = uint32(k) % (w * w)
    g = coef[m]
    if order == 2:
        g = g * g
    g *= d[(m * uint32(size) + (r // w) // uint32(2)) * uint32(size) + (r % w) // uint32(2)]
    dx[k] = through_squash(g, x[k], order)


@device_function
def subsample_grads(d, d_stride, x, x_stride, images, size, order, m):
    """(sum of d s, sum of d) over map m's size x size outputs and `images` images: the
    coefficient's and the bias's gradient contributions (order 2: sum h s^2, sum h),
    s = the 2x2 input block sums; d the delta at the layer's pre-activation, x its input.
    Each image is summed on its own, then the images' sums: no float32 sum runs past
    size^2 terms (tests/test_long_sums.py)."""
    gc = float32(0.0)
    gb = float32(0.0)
    w = uint32(2 * size)
    for n in range(uint32(images)):
        d0 = n * uint32(d_stride) + uint32(m) * uint32(size * size)
        x0 = n * uint32(x_stride) + uint32(m) * w * w
        ic = float32(0.0)
        ib = float32(0.0)
        for i in range(uint32(size)):
            for j in range(uint32(size)):
                at = x0 + uint32(2) * i * w + uint32(2) * j
                s = (x[at] + x[at + uint32(1)]) + (x[at + w] + x[at + w + uint32(1)])
                dv = d[d0 + i * uint32(size) + j]
                ic += dv * (s * s if order == 2 else s)
                ib += dv
        gc += ic
        gb += ib
    return gc, gb


# ------------------------------------------------------------------ convolutions

@device_function
def weight_grads(out, d, d_width, x, x_width, y0, x0, rows, cols, win, order, accumulate):
    """One (output map, input map) pair's 25 weight sums and the output map's bias sum over
    the output rows y0 .. y0 + rows - 1 and columns x0 .. x0 + cols - 1 of one image, into
    out (26,) (added to it if accumulate): out[5 u + v] = sum d[y, x] x[y + u, x + v] (x^2
    for order 2), out[25] = sum d. d: the output map's delta in rows of d_width; x: the
    input map in rows of x_width; rows, cols and win = cols + 4 constants (register tiles)."""
    acc = registers.local.array(GRAD_SUMS, float32)
    row = registers.local.array(win, float32)
    dr = registers.local.array(cols, float32)
    for q in range(GRAD_SUMS):
        acc[q] = float32(0.0)
    for y in range(uint32(y0), uint32(y0) + uint32(rows)):
        for c in range(uint32(cols)):
            dr[c] = d[y * uint32(d_width) + uint32(x0) + c]
            acc[K * K] += dr[c]
        for u in range(uint32(K)):
            at = (y + u) * uint32(x_width) + uint32(x0)
            for c in range(uint32(win)):
                xv = x[at + c]
                row[c] = xv * xv if order == 2 else xv
            for v in range(K):
                for c in range(cols):
                    acc[u * uint32(K) + v] += dr[c] * row[c + v]
    for q in range(uint32(GRAD_SUMS)):
        out[q] = (out[q] if accumulate else float32(0.0)) + acc[q]


@device_function
def c3_delta(d2, d3, w3, x2, out_table, task, order):
    """S2 map c's rows 2r and 2r + 1 of one image's delta below C3, task = 7 c + r:
    d2[c, y, x] = f'(x2) sum over C3 maps m that read c, u, v of d3[m, y - u, x - v]
    w3[m, c, u, v] (order 2: f'^2, w^2). d3 (16*10*10,), w3 (16*6*25,), x2 (6*14*14,)
    S2's output; out_table c3_out_table()'s rows. Per C3 map, 25 weights and 5 pairs of
    10-delta rows feed a 2x14 register tile."""
    c = uint32(task) // uint32(S2_SIZE // 2)
    r = uint32(task) % uint32(S2_SIZE // 2)
    acc = registers.local.array((2, S2_SIZE), float32)
    for p in range(2):
        for q in range(S2_SIZE):
            acc[p, q] = float32(0.0)
    top = registers.local.array(C3_SIZE, float32)
    bottom = registers.local.array(C3_SIZE, float32)
    row0 = c * uint32(OUT_TABLE_ROW)
    for jj in range(uint32(out_table[row0])):
        m = uint32(out_table[row0 + uint32(1) + jj])
        w_at = (m * uint32(C1_MAPS) + c) * uint32(K * K)
        for u in range(uint32(K)):
            # S2 rows 2r, 2r + 1 read C3 rows 2r - u and 2r + 1 - u, zero outside 0..9;
            # an invalid row is read at row 0 (a valid address) and replaced by zeros
            y = uint32(2) * r
            ok_top = y >= u and y - u < uint32(C3_SIZE)
            ok_bottom = y + uint32(1) >= u and y + uint32(1) - u < uint32(C3_SIZE)
            at_top = (m * uint32(C3_SIZE) + (y - u if ok_top else uint32(0))) * uint32(C3_SIZE)
            at_bottom = (m * uint32(C3_SIZE) + (y + uint32(1) - u if ok_bottom else uint32(0))) \
                * uint32(C3_SIZE)
            for q in range(uint32(C3_SIZE)):
                top[q] = d3[at_top + q] if ok_top else float32(0.0)
                bottom[q] = d3[at_bottom + q] if ok_bottom else float32(0.0)
            for v in range(K):
                wv = w3[w_at + u * uint32(K) + uint32(v)]
                if order == 2:
                    wv = wv * wv
                for q in range(C3_SIZE):          # S2 column q + v reads C3 column q
                    acc[0, q + v] += wv * top[q]
                    acc[1, q + v] += wv * bottom[q]
    for p in range(uint32(2)):
        for q in range(uint32(S2_SIZE)):
            at = (c * uint32(S2_SIZE) + uint32(2) * r + p) * uint32(S2_SIZE) + q
            d2[at] = through_squash(acc[p, q], x2[at], order)


# ------------------------------------------------- whole-layer weight-gradient tasks

@device_function
def c1_grad_sums(part, d1, x, task, order, accumulate):
    """C1 task `task` = 14 m + 2 band + half of one image into part[task * 26:]:
    weight_grads over rows 4 band .. 4 band + 3, columns 14 half .. 14 half + 13 of map
    m. d1 (6*28*28,) C1's delta, x (32*32,) the image."""
    m, band = task // uint32(C1_MAP_TASKS), (task // uint32(2)) % uint32(C1_BANDS)
    half = task % uint32(2)
    weight_grads(part[uint32(task) * uint32(GRAD_SUMS):], d1[m * uint32(C1_SIZE * C1_SIZE):],
                 C1_SIZE, x, IN_SIZE, uint32(C1_BAND_ROWS) * band, uint32(C1_GRAD_COLS) * half,
                 C1_BAND_ROWS, C1_GRAD_COLS, C1_GRAD_WIN, order, accumulate)


@device_function
def c1_map_sum(part, m, s):
    """Sum s (weight 5u + v, or 25: the bias) of C1 map m: its 14 tasks' sums in order."""
    g = float32(0.0)
    for task in range(uint32(m) * uint32(C1_MAP_TASKS),
                      (uint32(m) + uint32(1)) * uint32(C1_MAP_TASKS)):
        g += part[task * uint32(GRAD_SUMS) + uint32(s)]
    return g


@device_function
def c3_pair(table, pair):
    """(C3 map m, slot jj in m's input list) of connected pair number `pair` (0..59), the
    pairs numbered map by map in the table's order. table: c3_table()'s rows."""
    m = uint32(0)
    left = uint32(pair)
    while left >= uint32(table[m * uint32(TABLE_ROW)]):
        left -= uint32(table[m * uint32(TABLE_ROW)])
        m += uint32(1)
    return m, left


@device_function
def c3_first_pair(table, m):
    """The number of C3 map m's first connected pair: the pairs of the maps before it."""
    first = uint32(0)
    for mm in range(uint32(m)):
        first += uint32(table[mm * uint32(TABLE_ROW)])
    return first


@device_function
def c3_grad_sums(part, d3, a2, table, task, order, accumulate):
    """C3 task `task` = 2 pair + band of one image into part[task * 26:]: weight_grads
    of connected pair `pair` (C3 map m, S2 map c) over C3 rows 5 band .. 5 band + 4. d3
    (16*10*10,) C3's delta, a2 (6*14*14,) S2's output."""
    m, jj = c3_pair(table, uint32(task) // uint32(C3_BANDS))
    c = uint32(table[m * uint32(TABLE_ROW) + uint32(1) + jj])
    weight_grads(part[uint32(task) * uint32(GRAD_SUMS):], d3[m * uint32(C3_SIZE * C3_SIZE):],
                 C3_SIZE, a2[c * uint32(S2_SIZE * S2_SIZE):], S2_SIZE,
                 uint32(C3_BAND_ROWS) * (uint32(task) % uint32(C3_BANDS)), 0, C3_BAND_ROWS,
                 C3_SIZE, C3_GRAD_WIN, order, accumulate)


@device_function
def c3_pair_sum(part, pair, s):
    """Sum s (weight 5u + v, or 25: the bias of the pair's C3 map) of a connected pair:
    its two bands' sums."""
    at = uint32(pair) * uint32(C3_BANDS * GRAD_SUMS) + uint32(s)
    return part[at] + part[at + uint32(GRAD_SUMS)]


@device_function
def c3_weight_sum(part, table, m, c, q):
    """Weight q (5u + v) of C3 map m from S2 map c: its pair's sum, 0 off the table."""
    row = m * uint32(TABLE_ROW)
    pair = c3_first_pair(table, m)
    g = float32(0.0)
    for jj in range(uint32(table[row])):
        if uint32(table[row + uint32(1) + jj]) == c:
            g = c3_pair_sum(part, pair + jj, q)
    return g


def c3_out_table(table):
    """The (6*17,) int32 device array that c3_delta reads, from a C3 connection table
    (6 S2 maps, 16 C3 maps) bool: row c = (number of C3 maps that read S2 map c, those
    maps, -1 padding)."""
    table = np.asarray(table)
    if table.shape != (C1_MAPS, C3_MAPS) or table.dtype != np.bool_:
        raise ValueError(f"c3_out_table: the table is {table.dtype} {table.shape}, expected "
                         f"bool ({C1_MAPS}, {C3_MAPS})")
    rows = np.full((C1_MAPS, OUT_TABLE_ROW), -1, np.int32)
    for c in range(C1_MAPS):
        maps = np.flatnonzero(table[c])
        rows[c, 0], rows[c, 1:1 + len(maps)] = len(maps), maps
    return cuda.to_device(rows.reshape(-1))


_CHECKED = [None]   # the last table that passed (held, so that its id is not reused)


def check_c3_pairs(op, table):
    """ValueError, prefixed with `op`, unless the c3_table() device array `table` connects
    C3_PAIRS (C3 map, S2 map) pairs: the fused kernels' C3 gradient tasks and sums are
    sized for Table I's (the stage kernels take any table). The table a backend passes at
    every launch is read back once, not at each (a copy that waits for the device)."""
    if table is _CHECKED[0]:
        return
    pairs = int(table.copy_to_host()[::TABLE_ROW].sum())
    if pairs != C3_PAIRS:
        raise ValueError(f"{op}: the C3 table connects {pairs} (C3 map, S2 map) pairs; the "
                         f"fused kernels take Table I's {C3_PAIRS}")
    _CHECKED[0] = table


def check_constants(op, centers, table, out_table):
    """check_device_arrays of the fused training kernels' constants (the RBF centers,
    c3_table's and c3_out_table's rows), then check_c3_pairs."""
    check_device_arrays(op, centers=(centers, (N_CLASSES * F6_UNITS,)),
                        table=(table, (C3_MAPS * TABLE_ROW,), np.int32),
                        out_table=(out_table, (C1_MAPS * OUT_TABLE_ROW,), np.int32))
    check_c3_pairs(op, table)
