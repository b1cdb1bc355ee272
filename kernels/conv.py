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
                 with coalesced loads, then the threads stride over the block's output
                 pixels (consecutive threads -> consecutive x: coalesced stores)
    weights  v1  one thread per weight (m, c, u, v) and one per bias m, each summing
                 over all images and pixels (per image, then over images)
             v2  one block per (group of output maps, chunk of images). The block walks
                 its chunk a piece at a time: it computes the piece's da once into
                 shared memory, then one thread per parameter (m, c, u, v) or (m, bias)
                 of the group, striding, adds its sum over the piece to a shared
                 accumulator. Each chunk writes its sums to a partial buffer that a
                 second kernel (one thread per weight or bias) adds up, or, when there
                 is one chunk, writes the outputs directly. No atomics: deterministic
    inputs   v1  one thread per input pixel (n, c, y, x), recomputing da at every use
             v2  one block per group of images: their da is computed once into shared
                 memory, then the threads stride over the block's input pixels

Launchers check shapes and dtypes (ValueError), pick the grid and launch; outputs come
first, are preallocated float32 C-contiguous device arrays, and are overwritten. The v2
kernels need one image's maps (and, in the forward, one output map's weights) to fit
their shared-memory tiles, which LeNet-5's C1, C3 and C5 do; other shapes get a
ValueError that points to version=1. Block sizes and tile sizes are first guesses for an
H100 (module constants below), not yet tuned on one.

Test: pytest -q tests/test_conv_kernels.py (uses the CUDA simulator when there is no GPU).
"""


import numpy as np
from numba import cuda, float32, int32, int64, void

from kernels.common import kernel, squash, through_squash

K = 5                       # kernel size of every LeNet-5 convolution
KK = K * K

# Shared-memory tiles (float32 elements): each kernel's stay under the 48 KiB of static
# shared memory a block may have.
X_SHARED = 4096    # forward v2: input maps of a block's images (C1 1024, C3 1176, C5 400 each)
W_SHARED = 6000    # forward v2: connected weights of a block's output maps (max_in*K*K each)
G_SHARED = 4800    # backward v2: da of a block's images (C1 6*28*28 = 4704 for dx)
ACC_SHARED = 4096  # weights v2: sums of a block's parameters (C*K*K + 1 per output map)

THREADS = 128       # block size of the one-thread-per-element kernels
MIN_BLOCKS = 264    # launchers shrink the images per block to get this many (2 per H100 SM)
MIN_CHUNK_PIXELS = 256  # weights v2: a chunk sums at least this many pixels (when N allows)

# Kernel argument types: C-contiguous device arrays of float32 (F1..F5: 1-D to 5-D) and
# int32 (I1, I2: the table's index lists); sizes and flags are int64 (Python ints).
F1, F2, F4, F5 = float32[::1], float32[:, ::1], float32[:, :, :, ::1], float32[:, :, :, :, ::1]
I1, I2 = int32[::1], int32[:, ::1]


# -------------------------------------------------------------------- table

class ConvTable:
    """A connection table (C, M) bool as index lists on the device.

    in_maps (M, max_in) int32, in_counts (M,) int32: the input maps connected to
        each output map, padded with -1 (forward)
    out_maps (C, max_out) int32, out_counts (C,) int32: the output maps each input
        map feeds, padded with -1 (input gradients)
    slot (C, M) int32: position of c in in_maps[m], -1 where c and m are not connected
        (weight gradients, which write every (m, c) pair, 0 off the table)
    Host copies: table, in_maps_host, in_counts_host, out_maps_host, out_counts_host,
    slot_host; sizes c_in, n_maps, max_in, max_out.
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
        self.in_maps = cuda.to_device(self.in_maps_host)
        self.in_counts = cuda.to_device(self.in_counts_host)
        self.out_maps = cuda.to_device(self.out_maps_host)
        self.out_counts = cuda.to_device(self.out_counts_host)
        self.slot = cuda.to_device(slot)

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


@kernel(void(F4, F4, F4, F1, I2, I1, int64, int64))
def conv_forward_kernel_v2(out, x, weight, bias, in_maps, in_counts, imgs, maps):
    # one block per (`imgs` images, `maps` output maps); one thread per output pixel, striding
    x_sh = cuda.shared.array(X_SHARED, float32)
    w_sh = cuda.shared.array(W_SHARED, float32)
    n_img, c_in, h, w = x.shape
    n_maps, ho, wo = out.shape[1], out.shape[2], out.shape[3]
    max_in = in_maps.shape[1]
    tid = cuda.threadIdx.x
    step = cuda.blockDim.x
    n0 = cuda.blockIdx.x * imgs
    m0 = cuda.blockIdx.y * maps
    n_here = min(imgs, n_img - n0)
    m_here = min(maps, n_maps - m0)

    # The block's images are one contiguous run of x: consecutive threads load
    # consecutive floats.
    image = c_in * h * w
    for i in range(tid, n_here * image, step):
        ni = i // image
        c = (i // (h * w)) % c_in
        x_sh[i] = x[n0 + ni, c, (i // w) % h, i % w]
    # Weights of the connected pairs only, as w_sh[(ml * max_in + j) * KK + u * K + v].
    for i in range(tid, m_here * max_in * KK, step):
        ml = i // (max_in * KK)
        j = (i // KK) % max_in
        if j < in_counts[m0 + ml]:
            t = i % KK
            w_sh[i] = weight[m0 + ml, in_maps[m0 + ml, j], t // K, t % K]
    cuda.syncthreads()  # wait until the block's input maps and weights are in shared memory

    per_img = m_here * ho * wo
    for i in range(tid, n_here * per_img, step):
        ni = i // per_img
        ml = (i // (ho * wo)) % m_here
        yy = (i // wo) % ho
        xx = i % wo
        m = m0 + ml
        acc = bias[m]
        for j in range(in_counts[m]):
            xb = ((ni * c_in + in_maps[m, j]) * h + yy) * w + xx
            wb = (ml * max_in + j) * KK
            for u in range(K):
                for v in range(K):
                    acc += w_sh[wb + u * K + v] * x_sh[xb + u * w + v]
        out[n0 + ni, m, yy, xx] = squash(acc)


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


@kernel(void(F5, F2, F4, F4, F4, I2, int64, int64, int64, int64))
def conv_backward_weight_kernel_v2(dweight_part, dbias_part, dout, out, x, slot,
                                   maps, imgs, piece, second):
    # one block per (`maps` output maps, chunk of `imgs` images); one thread per parameter
    # (m, c, u, v) or (m, bias) of those maps, striding, summing over the chunk's pixels
    # into dweight_part[chunk] and dbias_part[chunk]
    g_sh = cuda.shared.array(G_SHARED, float32)
    acc_sh = cuda.shared.array(ACC_SHARED, float32)
    tid = cuda.threadIdx.x
    step = cuda.blockDim.x
    n_img, n_maps, ho, wo = dout.shape
    c_in = x.shape[1]
    m0 = cuda.blockIdx.x * maps
    chunk = cuda.blockIdx.y
    m_here = min(maps, n_maps - m0)
    n_end = min(n_img, (chunk + 1) * imgs)
    pixels = ho * wo
    per_map = c_in * KK + 1  # parameters of one output map: its weights, then its bias
    params = m_here * per_map

    # Parameter s is always handled by thread s % step: acc_sh needs no barrier of its own.
    for s in range(tid, params, step):
        acc_sh[s] = float32(0.0)
    for n0 in range(chunk * imgs, n_end, piece):
        n_piece = min(piece, n_end - n0)
        cuda.syncthreads()  # wait until every thread is done with the previous piece
        # da (or ha) of the piece, computed once: g_sh[((ml * n_piece + ni) * ho + y) * wo + x].
        for p in range(tid, m_here * n_piece * pixels, step):
            ml = p // (n_piece * pixels)
            n = n0 + (p // pixels) % n_piece
            yy = (p // wo) % ho
            xx = p % wo
            g_sh[p] = through_squash(dout[n, m0 + ml, yy, xx], out[n, m0 + ml, yy, xx], 1 + second)
        cuda.syncthreads()  # wait until the piece's da is in shared memory
        for s in range(tid, params, step):
            ml = s // per_map
            r = s % per_map
            g0 = ml * n_piece * pixels
            acc = float32(0.0)
            if r == per_map - 1:  # the bias
                for p in range(n_piece * pixels):
                    acc += g_sh[g0 + p]
            else:
                c = r // KK
                u = (r // K) % K
                v = r % K
                if slot[c, m0 + ml] >= 0:  # pairs off the table get an exact 0
                    q = g0
                    for ni in range(n_piece):
                        for yy in range(ho):
                            for xx in range(wo):
                                xv = x[n0 + ni, c, yy + u, xx + v]
                                if second:
                                    xv *= xv
                                acc += g_sh[q] * xv
                                q += 1
            acc_sh[s] += acc
    for s in range(tid, params, step):
        ml = s // per_map
        r = s % per_map
        if r == per_map - 1:
            dbias_part[chunk, m0 + ml] = acc_sh[s]
        else:
            dweight_part[chunk, m0 + ml, r // KK, (r // K) % K, r % K] = acc_sh[s]


@kernel(void(F4, F1, F5, F2))
def conv_backward_weight_finish_kernel(dweight, dbias, dweight_part, dbias_part):
    # one thread per weight (m, c, u, v), then one per bias m: adds up the chunks
    i = cuda.grid(1)
    n_maps, c_in = dweight.shape[0], dweight.shape[1]
    n_weights = n_maps * c_in * KK
    total = float32(0.0)
    if i < n_weights:
        m = i // (c_in * KK)
        c = (i // KK) % c_in
        u = (i // K) % K
        v = i % K
        for chunk in range(dweight_part.shape[0]):
            total += dweight_part[chunk, m, c, u, v]
        dweight[m, c, u, v] = total
    elif i < n_weights + n_maps:
        for chunk in range(dbias_part.shape[0]):
            total += dbias_part[chunk, i - n_weights]
        dbias[i - n_weights] = total


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


@kernel(void(F4, F4, F4, F4, I2, I1, int64, int64))
def conv_backward_input_kernel_v2(dx, dout, out, weight, out_maps, out_counts, imgs, second):
    # one block per `imgs` images; one thread per input pixel (n, c, y, x) of them, striding
    g_sh = cuda.shared.array(G_SHARED, float32)
    n_img, c_in, h, w = dx.shape
    n_maps, ho, wo = dout.shape[1], dout.shape[2], dout.shape[3]
    tid = cuda.threadIdx.x
    step = cuda.blockDim.x
    n0 = cuda.blockIdx.x * imgs
    n_here = min(imgs, n_img - n0)

    # da (or ha) of the block's images, computed once: g_sh[((ni * M + m) * ho + y) * wo + x].
    per_img = n_maps * ho * wo
    for p in range(tid, n_here * per_img, step):
        n = n0 + p // per_img
        m = (p // (ho * wo)) % n_maps
        g_sh[p] = through_squash(dout[n, m, (p // wo) % ho, p % wo],
                                 out[n, m, (p // wo) % ho, p % wo], 1 + second)
    cuda.syncthreads()  # wait until the block's da is in shared memory

    image = c_in * h * w
    for i in range(tid, n_here * image, step):
        ni = i // image
        c = (i // (h * w)) % c_in
        yy = (i // w) % h
        xx = i % w
        acc = float32(0.0)
        for k in range(out_counts[c]):
            m = out_maps[c, k]
            base = (ni * n_maps + m) * ho * wo
            for u in range(max(0, yy - ho + 1), min(K, yy + 1)):  # 0 <= yy - u < ho
                for v in range(max(0, xx - wo + 1), min(K, xx + 1)):
                    wv = weight[m, c, u, v]
                    if second:
                        wv *= wv
                    acc += g_sh[base + (yy - u) * wo + xx - v] * wv
        dx[n0 + ni, c, yy, xx] = acc


# ---------------------------------------------------------------- launchers

def _cdiv(a, b):
    return -(-a // b)


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
        if c * h * w > X_SHARED or table.max_in * KK > W_SHARED:
            raise ValueError(f"conv_forward v2: one image ({c}x{h}x{w}) or one map's weights "
                             f"({table.max_in}x{K}x{K}) does not fit shared memory; use version=1")
        imgs = min(X_SHARED // (c * h * w), _cdiv(n, MIN_BLOCKS))
        maps = min(m, W_SHARED // (table.max_in * KK))
        grid = (_cdiv(n, imgs), _cdiv(m, maps))
        conv_forward_kernel_v2[grid, _warps(imgs * maps * ho * wo)](
            out, x, weight, bias, table.in_maps, table.in_counts, imgs, maps)
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


def _weights_v2_plan(n, c, m, pixels):
    """Blocking of the weights v2 kernel: (output maps per block, images per chunk,
    images per piece). Maps: as many as ACC_SHARED holds and one image of each fits
    G_SHARED, balanced over the groups. Chunks: enough for MIN_BLOCKS blocks, each
    summing at least MIN_CHUNK_PIXELS pixels. A block walks its chunk in pieces of the
    images whose da fits G_SHARED."""
    groups = _cdiv(m, min(ACC_SHARED // (c * KK + 1), G_SHARED // pixels))
    maps = _cdiv(m, groups)
    chunks = max(1, min(_cdiv(MIN_BLOCKS, groups), n * pixels // MIN_CHUNK_PIXELS))
    return maps, _cdiv(n, chunks), G_SHARED // (maps * pixels)


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
    if version == 2 and (m * ho * wo > G_SHARED or c * KK + 1 > ACC_SHARED):
        raise ValueError(f"conv_backward v2: one image's {m}x{ho}x{wo} output or one map's "
                         f"{c}x{K}x{K} weights do not fit shared memory; use version=1")
    n_params = m * c * KK + m

    if version == 1:
        conv_backward_weight_kernel_v1[_cdiv(n_params, THREADS), THREADS](
            dweight, dbias, dout, out, x, table.slot, second)
    else:
        maps, imgs, piece = _weights_v2_plan(n, c, m, ho * wo)
        groups, chunks = _cdiv(m, maps), _cdiv(n, imgs)
        if chunks == 1:
            dweight_part, dbias_part = dweight.reshape((1, m, c, K, K)), dbias.reshape((1, m))
        else:
            dweight_part = _partial_buffer((chunks, m, c, K, K))
            dbias_part = _partial_buffer((chunks, m))
        conv_backward_weight_kernel_v2[(groups, chunks), _warps(maps * (c * KK + 1))](
            dweight_part, dbias_part, dout, out, x, table.slot, maps, imgs, piece, second)
        if chunks > 1:
            conv_backward_weight_finish_kernel[_cdiv(n_params, THREADS), THREADS](
                dweight, dbias, dweight_part, dbias_part)

    if dx is None:
        return
    if version == 1:
        conv_backward_input_kernel_v1[_cdiv(n * c * h * w, THREADS), THREADS](
            dx, dout, out, weight, table.out_maps, table.out_counts, second)
    else:
        imgs = min(G_SHARED // (m * ho * wo), _cdiv(n, MIN_BLOCKS))
        conv_backward_input_kernel_v2[_cdiv(n, imgs), _warps(imgs * c * h * w)](
            dx, dout, out, weight, table.out_maps, table.out_counts, imgs, second)
