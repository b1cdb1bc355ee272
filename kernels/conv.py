"""Table-driven 5x5 convolution of LeNet-5 with the squashing function fused in:
forward, backward and Gauss-Newton backward, float32, batched over N images.

What it computes (N images, C input maps, M output maps, K = 5, f(a) = A tanh(S a)
with A = 1.7159, S = 2/3, and f'(a) = S/A (A^2 - f(a)^2) taken from the output):

    conv_forward    out (N,M,Ho,Wo) = f(bias[m] + sum over connected c, u, v of
                    weight[m,c,u,v] * x[n,c,y+u,x+v])
    conv_backward   da = dout * f'(a);  dweight (M,C,K,K) = sum over n, y, x of
                    da * x-window (exact 0 where the table has no connection),
                    dbias = sum da,  dx (optional) = full correlation of da with weight
    conv_backward2  Gauss-Newton: the same with ha = hout * f'(a)^2, x^2 and weight^2

The connection table (C, M) bool becomes index lists on the device once, through
conv_table(); every kernel iterates those lists, so a pair the table leaves out
costs nothing and its weights are never read. CPU reference: kernels/reference.py
(conv_ref, conv_backward_ref, conv_backward2_ref composed with squash_*).

Versions, launched by name through version= (default 2, the fast one):

    forward  v1  one thread per output pixel (n, m, y, x); all reads from global memory
             v2  one block per (group of images, group of output maps): the images'
                 input maps and the maps' connected weights are staged in shared memory
                 with coalesced loads; then one thread per 2x4 tile of output pixels,
                 striding: per connected input map it loads the 6x8 input window under
                 its tile and the 25 weights once, and each weight feeds 8 FMAs
    weights  v1  one thread per weight (m, c, u, v) and one per bias m, each summing
                 over all images and pixels (per image, then over images)
             v2  one block per (group of output maps, chunk of images), one thread per
                 (connected pair (m, c), slice of the chunk's output rows). The block
                 walks its chunk a piece at a time: the piece's da and x go to shared
                 memory (rows padded with zeros to whole strips of 5 columns), then each
                 thread adds, strip by strip, all 25 weights' terms (and m's bias) in
                 registers: per strip 5 da and 5x9 x values feed 125 FMAs. At the end the
                 slices are added in a fixed order; each chunk writes its sums to a
                 partial buffer that a second kernel (one thread per weight or bias) adds
                 up, or, when there is one chunk, writes the outputs directly. No
                 atomics: deterministic
    inputs   v1  one thread per input pixel (n, c, y, x), recomputing da at every use
             v2  one block per group of images: their da is computed once into shared
                 memory with zero borders around every map, so that dx, a full
                 correlation, reads windows without bounds checks; then one thread per
                 2x4 tile of input pixels, striding, as the forward (weights flipped)

The v2 kernels take flat views of the arrays and index them with unsigned 32-bit
integers (64-bit only for offsets into a whole batch), so that Numba adds no sign checks
and no 64-bit division; their register tiles have constant shapes and their inner loops
constant trip counts, so NVVM unrolls them (compile census:
bench/results/2026-12-02-layers-census/). Their squashing function is kernels/layers.py's
(the fused path's); v1 keeps libdevice's tanh.

Launchers check shapes and dtypes (ValueError), pick the grid and launch; outputs come
first, are preallocated float32 C-contiguous device arrays, and are overwritten. The v2
kernels need one image's maps (and, in the forward, one output map's weights) to fit
their shared-memory tiles, which LeNet-5's C1, C3 and C5 do; other shapes get a
ValueError that points to version=1. Block sizes and tile sizes are first guesses for an
H100 (module constants below), not yet tuned on one.

Test: pytest -q tests/test_conv_kernels.py (uses the CUDA simulator when there is no GPU).
"""


import numpy as np
from numba import cuda, float32, int32, int64, uint32, void

from kernels.common import device_function, kernel, squash, through_squash, u32, u64
from kernels.layers import squash as fast_squash

K = 5                       # kernel size of every LeNet-5 convolution
KK = K * K

# Shared-memory tiles (float32 elements): each kernel's stay under the 48 KiB of static
# shared memory a block may have.
X_SHARED = 4160    # forward v2: input maps of a block's images (C1 1024, C3 1176, C5 400 each)
W_SHARED = 6000    # forward v2: connected weights of a block's output maps (max_in*K*K each)
GPAD_SHARED = 8192  # inputs v2: zero-bordered da of a block's images (C1 6,276, C3 3,196 each)
PIECE_SHARED = 6144  # weights v2: da and x of a piece of images (C1 6,128, C3 2,776 each)

TILE_H, TILE_W = 2, 4   # forward and inputs v2: a thread's register tile of outputs
WIN_H, WIN_W = TILE_H + K - 1, TILE_W + K - 1   # the input window under it, 6x8
PAD = K - 1             # inputs v2: zero rows and columns around each map of da

THREADS = 128       # block size of the one-thread-per-element kernels, and of weights v2
RED_SHARED = THREADS * (KK + 1)   # weights v2: every thread's 25 weight sums and bias sum
STRIP = 5           # weights v2: output columns a thread takes at a time
STRIP_IN = STRIP + K - 1   # the input columns under them
MIN_BLOCKS = 264    # launchers shrink the images per block to get this many (2 per H100 SM)
MIN_CHUNK_PIXELS = 256  # weights v2: a chunk sums at least this many pixels (when N allows)

# Kernel argument types: C-contiguous device arrays of float32 (F1..F5: 1-D to 5-D) and
# int32 (I1, I2: the table's index lists); sizes and flags are int64 (Python ints).
F1, F2, F4, F5 = float32[::1], float32[:, ::1], float32[:, :, :, ::1], float32[:, :, :, :, ::1]
I1, I2 = int32[::1], int32[:, ::1]
U = uint32          # the v2 kernels' sizes: unsigned, so that no index needs a sign check


# -------------------------------------------------------------------- table

class ConvTable:
    """A connection table (C, M) bool as index lists on the device.

    in_maps (M, max_in) int32, in_counts (M,) int32: the input maps connected to
        each output map, padded with -1 (forward)
    out_maps (C, max_out) int32, out_counts (C,) int32: the output maps each input
        map feeds, padded with -1 (input gradients)
    slot (C, M) int32: position of c in in_maps[m], -1 where c and m are not connected
        (weight gradients, which write every (m, c) pair, 0 off the table)
    pair_start (M+1,) int32, pair_maps (P,) int32: the P connected pairs numbered map by
        map (pair pair_start[m] + j is (m, in_maps[m, j])), and each pair's map
        (weight gradients v2: one thread per pair)
    Host copies: table, in_maps_host, in_counts_host, out_maps_host, out_counts_host,
    slot_host, pair_start_host, pair_maps_host; sizes c_in, n_maps, max_in, max_out.
    """

    def __init__(self, table):
        table = np.asarray(table)
        if table.ndim != 2 or table.dtype != np.bool_:
            raise ValueError(f"conv_table: table must be a 2-D bool array (C, M), "
                             f"got {table.dtype} {table.shape}")
        self.c_in, self.n_maps = table.shape
        counts = table.sum(axis=0)
        if self.c_in == 0 or self.n_maps == 0 or counts.min() == 0:
            raise ValueError("conv_table: every output map needs at least one input map")
        self.table = table.copy()
        self.in_maps_host, self.in_counts_host = _index_lists(table.T)
        self.out_maps_host, self.out_counts_host = _index_lists(table)
        self.max_in = self.in_maps_host.shape[1]
        self.max_out = self.out_maps_host.shape[1]
        slot = np.full((self.c_in, self.n_maps), -1, dtype=np.int32)
        for m in range(self.n_maps):
            for j in range(self.in_counts_host[m]):
                slot[self.in_maps_host[m, j], m] = j
        self.slot_host = slot
        self.pair_start_host = np.concatenate([[0], np.cumsum(self.in_counts_host)]).astype(
            np.int32)
        self.pair_maps_host = np.repeat(np.arange(self.n_maps), self.in_counts_host).astype(
            np.int32)
        self.in_maps = cuda.to_device(self.in_maps_host)
        self.in_counts = cuda.to_device(self.in_counts_host)
        self.out_maps = cuda.to_device(self.out_maps_host)
        self.out_counts = cuda.to_device(self.out_counts_host)
        self.slot = cuda.to_device(slot)
        self.pair_start = cuda.to_device(self.pair_start_host)
        self.pair_maps = cuda.to_device(self.pair_maps_host)

    def __repr__(self):
        return f"ConvTable(C={self.c_in}, M={self.n_maps}, connections={int(self.table.sum())})"


def _index_lists(rows):
    """rows (R, S) bool -> (R, max) int32 column indices padded with -1, counts (R,)."""
    counts = rows.sum(axis=1).astype(np.int32)
    lists = np.full((rows.shape[0], max(1, int(counts.max()))), -1, dtype=np.int32)
    for r in range(rows.shape[0]):
        cols = np.flatnonzero(rows[r])
        lists[r, :len(cols)] = cols
    return lists, counts


def conv_table(table):
    """Host bool table (C input maps, M output maps) -> ConvTable on the device."""
    return ConvTable(table)


# ------------------------------------------------------------------ kernels

@device_function
def strided_sum(a, at, stride, count):
    """a[at] + a[at + stride] + ... (count terms), added in that order, in float32."""
    total = float32(0.0)
    k = u32(0)
    while k < count:     # a while loop: numba's range adds a step-sign counter
        total += a[at]
        at += stride
        k = u32(k + u32(1))
    return total


@kernel(void(F4, F4, F4, F1, I2, I1))
def conv_forward_kernel_v1(out, x, weight, bias, in_maps, in_counts):
    # one thread per output pixel (n, m, y, x)
    i = cuda.grid(1)
    n_img, n_maps, ho, wo = out.shape
    if i >= n_img * n_maps * ho * wo:
        return
    xx = i % wo
    yy = (i // wo) % ho
    m = (i // (wo * ho)) % n_maps
    n = i // (wo * ho * n_maps)
    acc = bias[m]
    for j in range(in_counts[m]):
        c = in_maps[m, j]
        for u in range(K):
            for v in range(K):
                acc += weight[m, c, u, v] * x[n, c, yy + u, xx + v]
    out[n, m, yy, xx] = squash(acc)


@kernel(void(F1, F1, F1, F1, I2, I1, U, U, U, U, U, U))
def conv_forward_kernel_v2(out, x, weight, bias, in_maps, in_counts, n_img, c_in, h, w,
                           imgs, maps):
    # one block per (`imgs` images, `maps` output maps); one thread per TILE_H x TILE_W
    # tile of one output map of one image, striding (consecutive threads -> consecutive
    # tiles along x); out, x and weight are the flat (C-ordered) arrays
    x_sh = cuda.shared.array(X_SHARED, float32)
    w_sh = cuda.shared.array(W_SHARED, float32)
    n_maps, max_in = u32(in_maps.shape[0]), u32(in_maps.shape[1])
    ho, wo = u32(h - u32(K - 1)), u32(w - u32(K - 1))
    tid, step = u32(cuda.threadIdx.x), u32(cuda.blockDim.x)
    n0 = u32(cuda.blockIdx.x) * imgs
    m0 = u32(cuda.blockIdx.y) * maps
    n_here = min(imgs, n_img - n0)
    m_here = min(maps, n_maps - m0)

    # The block's images are one contiguous run of x: consecutive threads load
    # consecutive floats. Tiles that hang over a map's edge read up to `slack` floats
    # past them: zeros, not garbage.
    staged = u32(n_here * c_in * h * w)
    first = u64(n0) * u64(c_in * h * w)
    i = tid
    while i < staged:
        x_sh[i] = x[first + i]
        i = u32(i + step)
    i = staged + tid
    while i < staged + u32(TILE_H - 1) * w + u32(TILE_W):
        x_sh[i] = float32(0.0)
        i = u32(i + step)
    # The connected weights only, as w_sh[(ml * max_in + j) * KK + t], t = u * K + v.
    pair = tid
    while pair < u32(m_here * max_in):
        ml = pair // max_in
        j = pair - ml * max_in
        if j < u32(in_counts[m0 + ml]):
            src = ((m0 + ml) * c_in + u32(in_maps[m0 + ml, j])) * u32(KK)
            for t in range(u32(KK)):
                w_sh[pair * u32(KK) + t] = weight[src + t]
        pair = u32(pair + step)
    cuda.syncthreads()  # wait until the block's input maps and weights are in shared memory

    tiles_x = u32((wo + u32(TILE_W - 1)) // u32(TILE_W))
    tiles = u32((ho + u32(TILE_H - 1)) // u32(TILE_H) * tiles_x)
    per_img = u32(m_here * tiles)
    acc = cuda.local.array((TILE_H, TILE_W), float32)
    win = cuda.local.array((WIN_H, WIN_W), float32)
    i = tid
    while i < u32(n_here * per_img):
        ni = i // per_img
        ml = u32(i - ni * per_img) // tiles
        tile = u32(i - ni * per_img - ml * tiles)
        ty = tile // tiles_x
        y0 = ty * u32(TILE_H)
        x0 = (tile - ty * tiles_x) * u32(TILE_W)
        m = m0 + ml
        b = bias[m]
        for p in range(TILE_H):
            for q in range(TILE_W):
                acc[p, q] = b
        for j in range(u64(in_counts[m])):
            xb = ((ni * c_in + u32(in_maps[m, j])) * h + y0) * w + x0
            wb = (ml * max_in + j) * u32(KK)
            for r in range(u32(WIN_H)):
                for c in range(u32(WIN_W)):
                    win[r, c] = x_sh[xb + r * w + c]
            for u in range(u32(K)):
                for v in range(u32(K)):
                    wv = w_sh[wb + u * u32(K) + v]
                    for p in range(TILE_H):
                        for q in range(TILE_W):
                            acc[p, q] += wv * win[p + u, q + v]
        base = (u64(n0 + ni) * u64(n_maps) + u64(m)) * u64(ho * wo)
        for p in range(u32(TILE_H)):
            for q in range(u32(TILE_W)):
                if y0 + p < ho and x0 + q < wo:
                    out[base + (y0 + p) * wo + x0 + q] = fast_squash(acc[p, q])
        i = u32(i + step)


@kernel(void(F4, F1, F4, F4, F4, I2, int64))
def conv_backward_weight_kernel_v1(dweight, dbias, dout, out, x, slot, second):
    # one thread per weight (m, c, u, v), then one per bias m
    i = cuda.grid(1)
    n_maps, c_in = dweight.shape[0], dweight.shape[1]
    n_img, _, ho, wo = dout.shape
    n_weights = n_maps * c_in * KK
    if i < n_weights:
        v = i % K
        u = (i // K) % K
        c = (i // KK) % c_in
        m = i // (KK * c_in)
        total = float32(0.0)
        if slot[c, m] >= 0:  # pairs off the table get an exact 0
            for n in range(n_img):
                image = float32(0.0)  # sum per image, then over images: less rounding
                for yy in range(ho):
                    for xx in range(wo):
                        xv = x[n, c, yy + u, xx + v]
                        if second:
                            xv *= xv
                        image += through_squash(dout[n, m, yy, xx], out[n, m, yy, xx],
                                                1 + second) * xv
                total += image
        dweight[m, c, u, v] = total
    elif i < n_weights + n_maps:
        m = i - n_weights
        total = float32(0.0)
        for n in range(n_img):
            image = float32(0.0)
            for yy in range(ho):
                for xx in range(wo):
                    image += through_squash(dout[n, m, yy, xx], out[n, m, yy, xx], 1 + second)
            total += image
        dbias[m] = total


@kernel(void(F1, F1, F1, F1, F1, I2, I1, I1, I2, U, U, U, U, U, U, U, int64))
def conv_backward_weight_kernel_v2(dweight_part, dbias_part, dout, out, x, in_maps, pair_start,
                                   pair_maps, slot, n_img, c_in, h, w, maps, imgs, piece, second):
    # one block per (`maps` output maps, chunk of `imgs` images); one thread per (connected
    # pair (m, c) of those maps, slice s): the slice's share of the chunk's output rows,
    # STRIP columns at a time, summed into the pair's 25 weights (and m's bias) in
    # registers; then the slices are added in a fixed order into dweight_part[chunk] and
    # dbias_part[chunk] (flat). No atomics: deterministic.
    gx_sh = cuda.shared.array(PIECE_SHARED, float32)   # a piece's da, then its x
    red_sh = cuda.shared.array(RED_SHARED, float32)    # every thread's sums, at the end
    n_maps = u32(slot.shape[1])
    ho, wo = u32(h - u32(K - 1)), u32(w - u32(K - 1))
    tid, step = u32(cuda.threadIdx.x), u32(cuda.blockDim.x)
    m0 = u32(cuda.blockIdx.x) * maps
    chunk = u32(cuda.blockIdx.y)
    m_here = min(maps, n_maps - m0)
    n_end = min(n_img, (chunk + u32(1)) * imgs)
    p0 = u32(pair_start[m0])
    pairs = u32(u32(pair_start[m0 + m_here]) - p0)   # at most step (the launcher)
    slices = u32(step // pairs)
    strips = u32((wo + u32(STRIP - 1)) // u32(STRIP))
    g_row = u32(strips * u32(STRIP))      # da rows padded with zeros to whole strips
    x_row = u32(g_row + u32(K - 1))       # x rows padded with zeros to match

    active = tid < u32(slices * pairs)
    s = u32(tid // pairs)
    ml = u32(0)
    c = u32(0)
    if active:
        m = u32(pair_maps[p0 + tid - s * pairs])
        ml = u32(m - m0)
        c = u32(in_maps[m, p0 + tid - s * pairs - u32(pair_start[m])])
    acc = cuda.local.array((K, K), float32)
    gv = cuda.local.array(STRIP, float32)
    xv = cuda.local.array(STRIP_IN, float32)
    for u in range(K):
        for v in range(K):
            acc[u, v] = float32(0.0)
    acc_bias = float32(0.0)

    n0 = u32(chunk * imgs)
    while n0 < n_end:
        n_piece = min(piece, n_end - n0)
        g_len = u32(m_here * n_piece * ho * g_row)
        cuda.syncthreads()  # wait until every thread is done with the previous piece
        # da (or ha) of the piece, map by map: gx_sh[((ml * n_piece + ni) * ho + y) * g_row + q]
        one_map = u32(ho * g_row)
        map_ = u32(0)
        while map_ < u32(m_here * n_piece):
            ml_ = map_ // n_piece
            src = (u64(n0 + map_ - ml_ * n_piece) * u64(n_maps) + u64(m0 + ml_)) \
                * u64(ho * wo)
            i = tid
            while i < one_map:
                y = i // g_row
                g = float32(0.0)
                if i - y * g_row < wo:
                    at = src + u64(i - y * (g_row - wo))
                    g = through_squash(dout[at], out[at], 1 + second)
                gx_sh[map_ * one_map + i] = g
                i = u32(i + step)
            map_ = u32(map_ + u32(1))
        # x (or x^2) of the piece after it: gx_sh[g_len + ((ni * C + c) * h + y) * x_row + q]
        first = u64(n0) * u64(c_in * h * w)
        i = tid
        while i < u32(n_piece * c_in * h * x_row):
            row = i // x_row
            q = u32(i - row * x_row)
            xq = float32(0.0)
            if q < w:
                xq = x[first + u64(row * w + q)]
                if second:
                    xq *= xq
            gx_sh[g_len + i] = xq
            i = u32(i + step)
        cuda.syncthreads()  # wait until the piece's da and x are in shared memory
        if active:
            unit = u32(s)        # units (ni, y, strip) s, s + slices, ...
            while unit < u32(n_piece * ho * strips):
                row = unit // strips                    # ni * ho + y
                ni = row // ho
                gb = (ml * n_piece * ho + row) * g_row + (unit - row * strips) * u32(STRIP)
                for t in range(u32(STRIP)):
                    gv[t] = gx_sh[gb + t]
                    acc_bias += gv[t]
                xb = g_len + ((ni * c_in + c) * h + row - ni * ho) * x_row \
                    + (unit - row * strips) * u32(STRIP)
                for u in range(u32(K)):
                    for t in range(u32(STRIP_IN)):
                        xv[t] = gx_sh[xb + u * x_row + t]
                    for v in range(K):
                        for t in range(STRIP):
                            acc[u, v] += gv[t] * xv[t + v]
                unit = u32(unit + slices)
        n0 = u32(n0 + piece)

    if active:
        for u in range(u32(K)):
            for v in range(u32(K)):
                red_sh[tid * u32(KK + 1) + u * u32(K) + v] = acc[u, v]
        red_sh[tid * u32(KK + 1) + u32(KK)] = acc_bias
    cuda.syncthreads()  # wait until every slice's sums are in red_sh
    per_map = u32(c_in * u32(KK) + u32(1))     # m's weights, then its bias
    i = tid
    while i < u32(m_here * per_map):
        mo = i // per_map                           # the parameter's map is m0 + mo
        r = u32(i - mo * per_map)
        first_pair = u32(pair_start[m0 + mo]) - p0  # the map's first pair in this block
        total = float32(0.0)
        if r == per_map - u32(1):                   # every pair of the map sums the same da
            total = strided_sum(red_sh, first_pair * u32(KK + 1) + u32(KK),
                                pairs * u32(KK + 1), slices)
            dbias_part[chunk * n_maps + m0 + mo] = total
        else:
            j = slot[r // u32(KK), m0 + mo]
            if j >= 0:                              # pairs off the table get an exact 0
                total = strided_sum(red_sh, (first_pair + u32(j)) * u32(KK + 1) + r
                                    - r // u32(KK) * u32(KK), pairs * u32(KK + 1),
                                    slices)
            dweight_part[u64(chunk * n_maps + m0 + mo) * u64(per_map - u32(1)) + r] = total
        i = u32(i + step)


@kernel(void(F1, F1, F1, F1, U))
def conv_backward_weight_finish_kernel(dweight, dbias, dweight_part, dbias_part, chunks):
    # one thread per weight k (flat), then one per bias: adds up the chunks in order
    k = u32(cuda.grid(1))
    n_weights, n_maps = u32(dweight.shape[0]), u32(dbias.shape[0])
    if k < n_weights:
        dweight[k] = strided_sum(dweight_part, u64(k), n_weights, chunks)
    elif k < n_weights + n_maps:
        dbias[k - n_weights] = strided_sum(dbias_part, u64(k - n_weights), n_maps, chunks)


@kernel(void(F4, F4, F4, F4, I2, I1, int64))
def conv_backward_input_kernel_v1(dx, dout, out, weight, out_maps, out_counts, second):
    # one thread per input pixel (n, c, y, x)
    i = cuda.grid(1)
    n_img, c_in, h, w = dx.shape
    if i >= n_img * c_in * h * w:
        return
    xx = i % w
    yy = (i // w) % h
    c = (i // (w * h)) % c_in
    n = i // (w * h * c_in)
    ho, wo = dout.shape[2], dout.shape[3]
    acc = float32(0.0)
    for k in range(out_counts[c]):
        m = out_maps[c, k]
        for u in range(max(0, yy - ho + 1), min(K, yy + 1)):  # 0 <= yy - u < ho
            for v in range(max(0, xx - wo + 1), min(K, xx + 1)):
                wv = weight[m, c, u, v]
                if second:
                    wv *= wv
                g = through_squash(dout[n, m, yy - u, xx - v], out[n, m, yy - u, xx - v],
                                   1 + second)
                acc += g * wv
    dx[n, c, yy, xx] = acc


@kernel(void(F1, F1, F1, F1, I2, I1, U, U, U, U, U, int64))
def conv_backward_input_kernel_v2(dx, dout, out, weight, out_maps, out_counts, n_img, n_maps,
                                  h, w, imgs, second):
    # one block per `imgs` images; one thread per TILE_H x TILE_W tile of one input map of
    # one image, striding; dx, dout, out and weight are the flat (C-ordered) arrays
    g_sh = cuda.shared.array(GPAD_SHARED, float32)
    c_in = u32(out_maps.shape[0])
    ho, wo = u32(h - u32(K - 1)), u32(w - u32(K - 1))
    tid, step = u32(cuda.threadIdx.x), u32(cuda.blockDim.x)
    n0 = u32(cuda.blockIdx.x) * imgs
    n_here = min(imgs, n_img - n0)

    # da (or ha) of the block's images, computed once, with zero borders so that the full
    # correlation below needs no bounds: map mm's pixel (r, q) of image ni is at
    # g_sh[ni * g_img + (mm * g_rows + PAD + r) * g_row + PAD + q]: PAD = K - 1 zero rows
    # above each map (and after the last), PAD zero columns left of each row (and after the
    # last row); a window that runs off a row's right end reads the next row's zeros.
    g_row = wo + u32(PAD)
    g_rows = ho + u32(PAD)
    g_img = u32((n_maps * g_rows + u32(PAD)) * g_row + u32(PAD))
    i = tid
    while i < u32(n_here * g_img + u32(TILE_H - 1) * g_row + u32(TILE_W)):
        g_sh[i] = float32(0.0)
        i = u32(i + step)
    cuda.syncthreads()  # wait until the zeros are written before values replace some
    one_map = u32(ho * wo)
    map_ = u32(0)                    # ni * n_maps + mm, one map at a time
    while map_ < u32(n_here * n_maps):
        ni = map_ // n_maps
        src = (u64(n0) * u64(n_maps) + u64(map_)) * u64(one_map)
        dst = ni * g_img + ((map_ - ni * n_maps) * g_rows + u32(PAD)) * g_row + u32(PAD)
        i = tid
        while i < one_map:
            y = i // wo
            g_sh[dst + i + y * u32(PAD)] = through_squash(dout[src + i], out[src + i],
                                                             1 + second)
            i = u32(i + step)
        map_ = u32(map_ + u32(1))
    cuda.syncthreads()  # wait until the block's da is in shared memory

    tiles_x = u32((w + u32(TILE_W - 1)) // u32(TILE_W))
    tiles = u32((h + u32(TILE_H - 1)) // u32(TILE_H) * tiles_x)
    per_img = u32(c_in * tiles)
    acc = cuda.local.array((TILE_H, TILE_W), float32)
    win = cuda.local.array((WIN_H, WIN_W), float32)
    i = tid
    while i < u32(n_here * per_img):
        ni = i // per_img
        c = u32(i - ni * per_img) // tiles
        tile = u32(i - ni * per_img - c * tiles)
        ty = tile // tiles_x
        y0 = ty * u32(TILE_H)
        x0 = (tile - ty * tiles_x) * u32(TILE_W)
        for p in range(TILE_H):
            for q in range(TILE_W):
                acc[p, q] = float32(0.0)
        for k in range(u64(out_counts[c])):
            mm = u32(out_maps[c, k])
            gb = ni * g_img + (mm * g_rows + y0) * g_row + x0
            # the window's (p + u, q + v) meets weight (K-1-u, K-1-v): at wb - (u * K + v)
            wb = (mm * c_in + c) * u32(KK) + u32(KK - 1)
            for r in range(u32(WIN_H)):
                for cc in range(u32(WIN_W)):
                    win[r, cc] = g_sh[gb + r * g_row + cc]
            for u in range(u32(K)):
                for v in range(u32(K)):
                    wv = weight[wb - u * u32(K) - v]
                    if second:
                        wv *= wv
                    for p in range(TILE_H):
                        for q in range(TILE_W):
                            acc[p, q] += wv * win[p + u, q + v]
        base = (u64(n0 + ni) * u64(c_in) + u64(c)) * u64(h * w)
        for p in range(u32(TILE_H)):
            for q in range(u32(TILE_W)):
                if y0 + p < h and x0 + q < w:
                    dx[base + (y0 + p) * w + x0 + q] = acc[p, q]
        i = u32(i + step)


# ---------------------------------------------------------------- launchers

def _cdiv(a, b):
    return -(-a // b)


def _flat(a):
    """A C-contiguous device array as its 1-D view."""
    return a.reshape(a.size)


def _warps(count):
    """Threads for `count` work items: a multiple of 32, at most THREADS."""
    return min(THREADS, 32 * _cdiv(count, 32))


def _check(name, arr, shape):
    if not cuda.devicearray.is_cuda_ndarray(arr):
        raise ValueError(f"conv: {name} must be a device array (cuda.to_device), "
                         f"got {type(arr).__name__}")
    if np.dtype(arr.dtype) != np.float32:
        raise ValueError(f"conv: {name} must be float32, got {arr.dtype}")
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"conv: {name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
    if not arr.is_c_contiguous():
        raise ValueError(f"conv: {name} must be C-contiguous")


def _check_conv(x, weight, table):
    """Checks x (N,C,H,W), weight (M,C,K,K), table; returns N, C, H, W, M, Ho, Wo."""
    if not isinstance(table, ConvTable):
        raise ValueError(f"conv: table must be a ConvTable from conv_table(), "
                         f"got {type(table).__name__}")
    if not cuda.devicearray.is_cuda_ndarray(x) or x.ndim != 4:
        raise ValueError(f"conv: x must be a 4-D device array (N,C,H,W), got "
                         f"{type(x).__name__} of shape {getattr(x, 'shape', None)}")
    n, c, h, w = x.shape
    m = table.n_maps
    if c != table.c_in:
        raise ValueError(f"conv: x has {c} input maps but the table has {table.c_in}")
    if n < 1 or h < K or w < K:
        raise ValueError(f"conv: x {tuple(x.shape)} needs N >= 1 and maps of at least {K}x{K}")
    _check("x", x, (n, c, h, w))
    _check("weight", weight, (m, c, K, K))
    return n, c, h, w, m, h - K + 1, w - K + 1


def conv_forward(out, x, weight, bias, table, version=2):
    """out (N,M,Ho,Wo) = f(conv(x (N,C,H,W), weight (M,C,K,K), bias (M,), table))."""
    n, c, h, w, m, ho, wo = _check_conv(x, weight, table)
    _check("bias", bias, (m,))
    _check("out", out, (n, m, ho, wo))
    if version == 1:
        total = n * m * ho * wo
        conv_forward_kernel_v1[_cdiv(total, THREADS), THREADS](
            out, x, weight, bias, table.in_maps, table.in_counts)
    elif version == 2:
        slack = (TILE_H - 1) * w + TILE_W    # read past the last image by edge tiles
        if c * h * w + slack > X_SHARED or table.max_in * KK > W_SHARED:
            raise ValueError(f"conv_forward v2: one image ({c}x{h}x{w}) or one map's weights "
                             f"({table.max_in}x{K}x{K}) does not fit shared memory; use version=1")
        imgs = min((X_SHARED - slack) // (c * h * w), _cdiv(n, MIN_BLOCKS))
        maps = min(m, W_SHARED // (table.max_in * KK))
        tiles = _cdiv(ho, TILE_H) * _cdiv(wo, TILE_W)
        grid = (_cdiv(n, imgs), _cdiv(m, maps))
        conv_forward_kernel_v2[grid, _warps(imgs * maps * tiles)](
            _flat(out), _flat(x), _flat(weight), bias, table.in_maps, table.in_counts,
            n, c, h, w, imgs, maps)
    else:
        raise ValueError(f"conv_forward: unknown version {version!r} (1 or 2)")


def conv_backward(dx, dweight, dbias, dout, out, x, weight, table, version=2):
    """Gradients through out = f(conv(x, weight, bias)) given dout = dE/d(out):
    dx (N,C,H,W) or None, dweight (M,C,K,K), dbias (M,)."""
    _backward(("dx", "dweight", "dbias", "dout"), dx, dweight, dbias, dout, out, x, weight,
              table, version, 0)


def conv_backward2(hx, hweight, hbias, hout, out, x, weight, table, version=2):
    """Gauss-Newton second derivatives given hout = d2E/d(out)2:
    hx (N,C,H,W) or None, hweight (M,C,K,K), hbias (M,)."""
    _backward(("hx", "hweight", "hbias", "hout"), hx, hweight, hbias, hout, out, x, weight,
              table, version, 1)


def _padded_da(m, ho, wo):
    """Floats of one image's zero-bordered da in the inputs v2 kernel, and the floats
    read past the last image by tiles that hang over an edge."""
    row = wo + PAD
    return (m * (ho + PAD) + PAD) * row + PAD, (TILE_H - 1) * row + TILE_W


def _weights_v2_plan(n, c, m, h, w, max_in):
    """Blocking of the weights v2 kernel: (output maps per block, images per chunk,
    images per piece). Maps: as many as leave every connected pair a thread (THREADS //
    max_in), balanced over the groups. Chunks: enough for MIN_BLOCKS blocks, each summing
    at least MIN_CHUNK_PIXELS pixels. A block walks its chunk in pieces of the images
    whose da and x fit PIECE_SHARED (0 when not even one does)."""
    ho, wo = h - K + 1, w - K + 1
    groups = _cdiv(m, max(1, THREADS // max_in))
    maps = _cdiv(m, groups)
    chunks = max(1, min(_cdiv(MIN_BLOCKS, groups), n * ho * wo // MIN_CHUNK_PIXELS))
    g_row = _cdiv(wo, STRIP) * STRIP
    per_image = maps * ho * g_row + c * h * (g_row + K - 1)
    return maps, _cdiv(n, chunks), PIECE_SHARED // per_image


_partials = {}  # shape -> device scratch for the weights v2 partial sums, reused


def _partial_buffer(shape):
    if shape not in _partials:
        _partials[shape] = cuda.device_array(shape, dtype=np.float32)
    return _partials[shape]


def _backward(names, dx, dweight, dbias, dout, out, x, weight, table, version, second):
    n, c, h, w, m, ho, wo = _check_conv(x, weight, table)
    _check(names[1], dweight, (m, c, K, K))
    _check(names[2], dbias, (m,))
    _check(names[3], dout, (n, m, ho, wo))
    _check("out", out, (n, m, ho, wo))
    if dx is not None:
        _check(names[0], dx, (n, c, h, w))
    if version not in (1, 2):
        raise ValueError(f"conv_backward: unknown version {version!r} (1 or 2)")
    plan = _weights_v2_plan(n, c, m, h, w, table.max_in) if version == 2 else None
    if version == 2 and (table.max_in > THREADS or plan[2] < 1 or (
            dx is not None and sum(_padded_da(m, ho, wo)) > GPAD_SHARED)):
        raise ValueError(f"conv_backward v2: one image's {m}x{ho}x{wo} output and its "
                         f"{c}x{h}x{w} input do not fit shared memory; use version=1")
    n_params = m * c * KK + m

    if version == 1:
        conv_backward_weight_kernel_v1[_cdiv(n_params, THREADS), THREADS](
            dweight, dbias, dout, out, x, table.slot, second)
    else:
        maps, imgs, piece = plan
        groups, chunks = _cdiv(m, maps), _cdiv(n, imgs)
        if chunks == 1:
            dweight_part, dbias_part = _flat(dweight), dbias
        else:
            dweight_part = _partial_buffer((chunks * m * c * KK,))
            dbias_part = _partial_buffer((chunks * m,))
        conv_backward_weight_kernel_v2[(groups, chunks), THREADS](
            dweight_part, dbias_part, _flat(dout), _flat(out), _flat(x), table.in_maps,
            table.pair_start, table.pair_maps, table.slot, n, c, h, w, maps, imgs, piece,
            second)
        if chunks > 1:
            conv_backward_weight_finish_kernel[_cdiv(n_params, THREADS), THREADS](
                _flat(dweight), dbias, dweight_part, dbias_part, chunks)

    if dx is None:
        return
    if version == 1:
        conv_backward_input_kernel_v1[_cdiv(n * c * h * w, THREADS), THREADS](
            dx, dout, out, weight, table.out_maps, table.out_counts, second)
    else:
        g_img, slack = _padded_da(m, ho, wo)
        imgs = min((GPAD_SHARED - slack) // g_img, _cdiv(n, MIN_BLOCKS))
        tiles = _cdiv(h, TILE_H) * _cdiv(w, TILE_W)
        conv_backward_input_kernel_v2[_cdiv(n, imgs), _warps(imgs * c * tiles)](
            _flat(dx), _flat(dout), _flat(out), _flat(weight), table.out_maps,
            table.out_counts, n, m, h, w, imgs, second)
