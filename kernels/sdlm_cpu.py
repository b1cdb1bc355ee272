"""The paper's per-pattern SDLM steps on the CPU, compiled with Numba (njit): the CPU twin
of kernels/sdlm.py, and a whole-network forward for evaluation.

    sdlm_steps_cpu(params, hess, stats, images, labels, order, start, count, eta, mu,
                   kind, j, centers, table)
    sdlm_steps_rates_cpu(params, rates, stats, images, labels, order, start, count, kind, j,
                         centers, table)     (rates = eta / (mu + h) given)
    penalties_cpu(out, images, params, centers, table)

sdlm_steps_cpu does, for each pattern n = order[start], ..., order[start + count - 1] in
turn, what lenet/train.py's layer-by-layer loop does with a batch of one: the forward
pass, the loss (kind "mse", paper eq. 8, or "map", eq. 9 with constant j), the gradient
of every parameter and the update param -= eta / (mu + h) * gradient, h the held
Gauss-Newton diagonal. stats (2,) float64 gains the losses (stats[0]) and the
misclassified count (stats[1]). penalties_cpu writes the RBF penalties (N, 10) of a
batch, one image after another through the same one-image functions.

Why: the NumPy loop spends most of each pattern in the overhead of ~40 small array
operations, so one core ran 400-1,000 patterns/s; here one compiled loop does only the
arithmetic (measured: bench/results/2026-12-02-cpu-repro/speed.md). One thread (no
parallel=True): one training run per core.

How: each map is a flat row-major vector with the row stride of the layer's input, so
that a 5x5 convolution is 25 contiguous multiply-adds over whole maps (and its weight
gradient 25 dot products) which the compiler vectorises: C1's output is 28 rows of
stride 32 (columns 28..31 are unused), C3's 10 rows of stride 14; the deltas keep
zeros in the unused columns, so they add nothing. Deltas are dE/da at each layer's
pre-activation a, as in kernels/sdlm.py; each layer's parameters are updated once the
layer below no longer needs them, so every gradient is taken at the pattern's start.

Arrays are float32 or float64 (one compiled version each), C-contiguous NumPy arrays:
params and hess are dicts keyed like lenet.architecture.PARAMETER_SHAPES; images
(N,1,32,32), labels (N,) int32, order (P,) int32, centers (10,84), table the C3
connection table (6,16) bool.

Arithmetic. Sums may be reassociated (fastmath "reassoc", which lets dot products
vectorise): results differ from the NumPy reference by rounding only, and a run repeats
bit for bit on the same machine (also from Numba's on-disk cache; with "contract" too,
the cached code rounded differently from the freshly compiled one). float32 computes tanh
with a rational approximation (tanh32: Eigen's, within 3e-7 of tanh, 6x faster than the
C library's tanhf here, where tanh took 40% of a pattern); float64 uses math.tanh.

Reference: lenet.train.Trainer(..., fused=False) (kernels/reference.py, batch of one).
Test: pytest -q tests/test_sdlm_cpu.py
"""

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from kernels.reference import SQUASH_A, SQUASH_S

K = 5
KINDS = {"mse": 0, "map": 1}
PARAM_NAMES = ("C1.weight", "C1.bias", "S2.coef", "S2.bias", "C3.weight", "C3.bias",
               "S4.coef", "S4.bias", "C5.weight", "C5.bias", "F6.weight", "F6.bias")
# flat map layouts (module docstring): row stride, length of the computed span, buffer size
W0, X0_LEN = 32, 1032   # the input image; C1 reads up to 27*32+27 + 4*32+4 = 1027
L1 = 28 * W0            # C1's output: 28 rows of stride 32
W2, A2_LEN = 14, 200    # S2's output: 14x14; C3 reads up to 9*14+13 + 4*14+4 = 199
L3 = 10 * W2            # C3's output: 10 rows of stride 14

jit = njit(cache=True, fastmath={"reassoc"}, error_model="numpy")


def constants(dtype, j=0.0):
    """[A, S, S/A, A^2, j, 0] in `dtype`: the squash's constants, MAP's j and the zero
    that sums start from, so that the compiled code computes in the arrays' precision."""
    return np.array([SQUASH_A, SQUASH_S, SQUASH_S / SQUASH_A, SQUASH_A * SQUASH_A, j, 0],
                    dtype=dtype)


def connection_lists(table):
    """For a connection table (C,M) bool: in_maps (M,C) int32 (the input maps output map
    m reads are in_maps[m, :in_counts[m]]) and in_counts (M,) int32."""
    table = np.asarray(table, dtype=bool)
    in_maps = np.zeros((table.shape[1], table.shape[0]), np.int32)
    for m in range(table.shape[1]):
        rows = np.flatnonzero(table[:, m])
        in_maps[m, :len(rows)] = rows
    return in_maps, table.sum(axis=0).astype(np.int32)


# ----------------------------------------------------------------------- tanh

def tanh32(x):
    """tanh for float32 as a rational function (Eigen's generic_fast_tanh_float): no
    library call, so loops over it vectorise. NaN stays NaN."""
    c = np.float32(7.90531110763549805)  # tanh(c) rounds to 1 in float32
    if x > c:
        x = c
    elif x < -c:
        x = -c
    x2 = x * x
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = x2 * p + np.float32(-8.60467152213735e-11)
    p = x2 * p + np.float32(5.12229709037114e-08)
    p = x2 * p + np.float32(1.48572235717979e-05)
    p = x2 * p + np.float32(6.37261928875436e-04)
    p = x2 * p + np.float32(4.89352455891786e-03)
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = x2 * q + np.float32(2.26843463243900e-03)
    q = x2 * q + np.float32(4.89352518554385e-03)
    return x * p / q


tanh32_jit = jit(tanh32)


def tanh(x):
    """tanh32 for float32, math.tanh otherwise (compiled code only)."""
    return math.tanh(x)


@overload(tanh)
def _tanh_for(x):
    if x == types.float32:
        return lambda x: tanh32_jit(x)
    return lambda x: math.tanh(x)


@jit
def squash(a, c):
    return c[0] * tanh(c[1] * a)


@jit
def fprime(out, c):
    """f'(a) from f(a) = out."""
    return c[2] * (c[3] - out * out)


# ------------------------------------------------------------ one image, forward

@jit
def conv_forward_one(out, x, w, b, in_maps, in_counts, width, span, c):
    """out[m, i] = f(b[m] + sum over the input maps ch that m reads and u, v of
    w[m, ch, u, v] * x[ch, u * width + v + i]) for i < span; x (C, *), out (M, *) flat
    maps. The five taps of a kernel row go together: one pass over out per row."""
    for m in range(out.shape[0]):
        o = out[m]
        o[:span] = b[m]
        for jj in range(in_counts[m]):
            ch = in_maps[m, jj]
            for u in range(K):
                w0, w1, w2 = w[m, ch, u, 0], w[m, ch, u, 1], w[m, ch, u, 2]
                w3, w4 = w[m, ch, u, 3], w[m, ch, u, 4]
                xs = x[ch, u * width:u * width + span + K - 1]
                for i in range(span):
                    o[i] += (w0 * xs[i] + w1 * xs[i + 1] + w2 * xs[i + 2] + w3 * xs[i + 3]
                             + w4 * xs[i + 4])
        for i in range(span):
            o[i] = squash(o[i], c)


@jit
def subsample_forward_one(out, out_width, x, x_width, coef, bias, c):
    """out[m, i * out_width + j] = f(coef[m] * (2x2 block sum of x at (2i, 2j)) + bias[m])
    for i, j < out_width."""
    for m in range(out.shape[0]):
        for i in range(out_width):
            r0, r1 = 2 * i * x_width, (2 * i + 1) * x_width
            for j in range(out_width):
                s = x[m, r0 + 2 * j] + x[m, r0 + 2 * j + 1] + x[m, r1 + 2 * j] \
                    + x[m, r1 + 2 * j + 1]
                out[m, i * out_width + j] = squash(coef[m] * s + bias[m], c)


@jit
def full_forward_one(out, x, w, b, c):
    """out (O,) = f(w (O,I) @ x (I,) + b)."""
    for o in range(out.shape[0]):
        acc = c[5]
        for i in range(x.shape[0]):
            acc += w[o, i] * x[i]
        out[o] = squash(acc + b[o], c)


@jit
def forward_one(x0, c1w, c1b, s2c, s2b, c3w, c3b, s4c, s4b, c5w, c5b, f6w, f6b,
                a1, a2, a3, a4, a5, a6, y, centers, one_map, one_count, in_maps, in_counts, c):
    """Every layer of one image x0 (1, X0_LEN) (the 32x32 image, zero-padded): the flat
    maps a1 (6, L1), a2 (6, A2_LEN), a3 (16, L3), a4 (16, 25), a5, a6, penalties y (10,)."""
    conv_forward_one(a1, x0, c1w, c1b, one_map, one_count, W0, L1, c)
    subsample_forward_one(a2, W2, a1, W0, s2c, s2b, c)
    conv_forward_one(a3, a2, c3w, c3b, in_maps, in_counts, W2, L3, c)
    subsample_forward_one(a4, 5, a3, W2, s4c, s4b, c)
    full_forward_one(a5, a4.reshape(a4.size), c5w.reshape(c5w.shape[0], a4.size), c5b, c)
    full_forward_one(a6, a5, f6w, f6b, c)
    for k in range(y.shape[0]):
        acc = c[5]
        for i in range(a6.shape[0]):
            d = a6[i] - centers[k, i]
            acc += d * d
        y[k] = acc


@jit
def load_image(x0, image):
    """x0 (1, X0_LEN) = the 32x32 image, flat, then zeros."""
    x0[0, W0 * W0:] = 0
    x0[0, :W0 * W0] = image.reshape(W0 * W0)


# ------------------------------------------------------------ loss, one pattern

@jit
def pattern_loss(y, label, kind, c, dy):
    """The loss of penalties y (10,) for `label`; writes dE/dy into dy. kind 0: MSE
    (paper eq. 8), 1: MAP (eq. 9, j = c[4]), computed relative to the largest exponent
    as kernels/loss.py does. A label outside 0..9 gives NaN."""
    n = y.shape[0]
    if label < 0 or label >= n:
        dy[:] = np.nan
        return c[5] + np.nan
    if kind == 0:
        dy[:] = 0
        dy[label] = 1
        return y[label]
    zmax = -c[4]
    for i in range(n):
        zmax = max(zmax, -y[i])
    total = math.exp(-c[4] - zmax)
    for i in range(n):
        total += math.exp(-y[i] - zmax)
    for i in range(n):
        dy[i] = -math.exp(-y[i] - zmax) / total
    dy[label] += 1
    return y[label] + zmax + math.log(total)


# ------------------------------------------------------------ backward, one pattern

@jit
def subsample_delta(d_x, x, x_width, d_out, out_width, coef, c):
    """dE/da at the pre-activation of a subsampling layer's input x: the delta d_out at
    its own pre-activation times coef, spread over each 2x2 block, times f'. Writes the
    2 out_width x 2 out_width used entries of d_x only."""
    for m in range(d_x.shape[0]):
        for yy in range(2 * out_width):
            for xx in range(2 * out_width):
                k = yy * x_width + xx
                d_x[m, k] = d_out[m, (yy // 2) * out_width + xx // 2] * coef[m] \
                    * fprime(x[m, k], c)


@jit
def subsample_step(coef, bias, r_coef, r_bias, x, x_width, d, out_width, c):
    """SDLM step of a subsampling layer's coefficients and biases, from its input x and
    the delta d at its pre-activation; r_* = eta / (mu + h)."""
    for m in range(d.shape[0]):
        gc, gb = c[5], c[5]
        for i in range(out_width):
            r0, r1 = 2 * i * x_width, (2 * i + 1) * x_width
            for j in range(out_width):
                s = x[m, r0 + 2 * j] + x[m, r0 + 2 * j + 1] + x[m, r1 + 2 * j] \
                    + x[m, r1 + 2 * j + 1]
                gc += d[m, i * out_width + j] * s
                gb += d[m, i * out_width + j]
        coef[m] -= r_coef[m] * gc
        bias[m] -= r_bias[m] * gb


@jit
def conv_delta(d_x, x, d_out, w, in_maps, in_counts, width, span, pad, c):
    """dE/da at the pre-activation of a convolution's input x: the full correlation of
    its delta d_out (unused columns zero) with the connected weights, times f'.
    pad: scratch of span + 2 (K - 1), which holds one map of d_out between zeros so that
    each kernel row is one pass over d_x."""
    d_x[:] = 0
    pad[:] = 0
    for m in range(d_out.shape[0]):
        pad[K - 1:K - 1 + span] = d_out[m, :span]
        for jj in range(in_counts[m]):
            ch = in_maps[m, jj]
            for u in range(K):
                w0, w1, w2 = w[m, ch, u, 0], w[m, ch, u, 1], w[m, ch, u, 2]
                w3, w4 = w[m, ch, u, 3], w[m, ch, u, 4]
                dx = d_x[ch, u * width:u * width + span + K - 1]
                for i in range(span + K - 1):  # dx[i] += sum_v w_v d_out[m, i - v]
                    dx[i] += (w0 * pad[i + 4] + w1 * pad[i + 3] + w2 * pad[i + 2]
                              + w3 * pad[i + 1] + w4 * pad[i])
    for ch in range(d_x.shape[0]):
        for i in range(width * width):
            d_x[ch, i] *= fprime(x[ch, i], c)


@jit
def conv_step(w, b, r_w, r_b, x, d, in_maps, in_counts, width, span, c):
    """SDLM step of a convolution's connected weights and its biases, from its input x
    and the delta d at its pre-activation (unused columns zero): the gradient of
    w[m, ch, u, v] is the dot product of d[m] with x[ch] shifted by u * width + v."""
    for m in range(d.shape[0]):
        dm = d[m, :span]
        for jj in range(in_counts[m]):
            ch = in_maps[m, jj]
            for u in range(K):
                xs = x[ch, u * width:u * width + span + K - 1]
                g0 = g1 = g2 = g3 = g4 = c[5]
                for i in range(span):
                    g0 += dm[i] * xs[i]
                    g1 += dm[i] * xs[i + 1]
                    g2 += dm[i] * xs[i + 2]
                    g3 += dm[i] * xs[i + 3]
                    g4 += dm[i] * xs[i + 4]
                w[m, ch, u, 0] -= r_w[m, ch, u, 0] * g0
                w[m, ch, u, 1] -= r_w[m, ch, u, 1] * g1
                w[m, ch, u, 2] -= r_w[m, ch, u, 2] * g2
                w[m, ch, u, 3] -= r_w[m, ch, u, 3] * g3
                w[m, ch, u, 4] -= r_w[m, ch, u, 4] * g4
        g = c[5]
        for i in range(span):
            g += dm[i]
        b[m] -= r_b[m] * g


@jit
def full_delta_and_step(d_x, x, d, w, b, r_w, r_b, c):
    """For a full connection out = f(w (O,I) @ x + b) with delta d (O,) at its
    pre-activation: d_x (I,) = (d @ w) f'(x) at the input's pre-activation (with w before
    the step), then the step of w and b."""
    d_x[:] = 0
    for o in range(d.shape[0]):
        for i in range(x.shape[0]):
            d_x[i] += d[o] * w[o, i]
    for i in range(x.shape[0]):
        d_x[i] *= fprime(x[i], c)
    for o in range(d.shape[0]):
        for i in range(x.shape[0]):
            w[o, i] -= r_w[o, i] * (d[o] * x[i])
        b[o] -= r_b[o] * d[o]


# ------------------------------------------------------------ per-pattern steps

@jit
def sdlm_steps_kernel(c1w, c1b, s2c, s2b, c3w, c3b, s4c, s4b, c5w, c5b, f6w, f6b,
                      r1w, r1b, r2c, r2b, r3w, r3b, r4c, r4b, r5w, r5b, r6w, r6b,
                      stats, images, labels, order, start, count, kind, centers,
                      in_maps, in_counts, c):
    """Per-pattern steps; r* are the per-parameter rates eta / (mu + h)."""
    dt = images.dtype
    x0 = np.zeros((1, X0_LEN), dt)
    a1, d1 = np.zeros((6, L1), dt), np.zeros((6, L1), dt)
    a2, d2 = np.zeros((6, A2_LEN), dt), np.zeros((6, A2_LEN), dt)
    a3, d3 = np.zeros((16, L3), dt), np.zeros((16, L3), dt)
    a4, d4 = np.zeros((16, 25), dt), np.zeros((16, 25), dt)
    a5, d5 = np.zeros(120, dt), np.zeros(120, dt)
    a6, d6 = np.zeros(84, dt), np.zeros(84, dt)
    y, dy = np.zeros(10, dt), np.zeros(10, dt)
    pad = np.zeros(L3 + 2 * (K - 1), dt)
    one_map, one_count = np.zeros((6, 1), np.int32), np.ones(6, np.int32)
    c5, r5 = c5w.reshape(120, 400), r5w.reshape(120, 400)
    for p in range(start, start + count):
        n = order[p]
        load_image(x0, images[n])
        forward_one(x0, c1w, c1b, s2c, s2b, c3w, c3b, s4c, s4b, c5w, c5b, f6w, f6b,
                    a1, a2, a3, a4, a5, a6, y, centers, one_map, one_count, in_maps,
                    in_counts, c)
        label = labels[n]
        stats[0] += pattern_loss(y, label, kind, c, dy)
        if np.argmin(y) != label:
            stats[1] += 1

        for o in range(84):  # F6's delta: through the RBF and the squash
            g = c[5]
            for k in range(10):
                g += dy[k] * (a6[o] - centers[k, o])
            d6[o] = (g + g) * fprime(a6[o], c)
        full_delta_and_step(d5, a5, d6, f6w, f6b, r6w, r6b, c)  # C5's delta, F6's step
        full_delta_and_step(d4.reshape(400), a4.reshape(400), d5, c5, c5b, r5, r5b, c)
        subsample_delta(d3, a3, W2, d4, 5, s4c, c)               # C3's delta through S4
        subsample_step(s4c, s4b, r4c, r4b, a3, W2, d4, 5, c)
        conv_delta(d2, a2, d3, c3w, in_maps, in_counts, W2, L3, pad, c)  # S2's, through C3
        conv_step(c3w, c3b, r3w, r3b, a2, d3, in_maps, in_counts, W2, L3, c)
        subsample_delta(d1, a1, W0, d2, W2, s2c, c)              # C1's delta through S2
        subsample_step(s2c, s2b, r2c, r2b, a1, W0, d2, W2, c)
        conv_step(c1w, c1b, r1w, r1b, x0, d1, one_map, one_count, W0, L1, c)


@jit
def penalties_kernel(out, images, c1w, c1b, s2c, s2b, c3w, c3b, s4c, s4b, c5w, c5b, f6w,
                     f6b, centers, in_maps, in_counts, c):
    dt = images.dtype
    x0 = np.zeros((1, X0_LEN), dt)
    a1, a2 = np.zeros((6, L1), dt), np.zeros((6, A2_LEN), dt)
    a3, a4 = np.zeros((16, L3), dt), np.zeros((16, 25), dt)
    a5, a6 = np.zeros(120, dt), np.zeros(84, dt)
    one_map, one_count = np.zeros((6, 1), np.int32), np.ones(6, np.int32)
    for n in range(images.shape[0]):
        load_image(x0, images[n])
        forward_one(x0, c1w, c1b, s2c, s2b, c3w, c3b, s4c, s4b, c5w, c5b, f6w, f6b,
                    a1, a2, a3, a4, a5, a6, out[n], centers, one_map, one_count, in_maps,
                    in_counts, c)


# ---------------------------------------------------------------- launchers

def _check(op, params, images, centers, table, extra=()):
    """ValueError naming the first argument that does not fit (shapes, one dtype,
    C-contiguous NumPy arrays)."""
    from lenet.architecture import PARAMETER_SHAPES
    dtype = getattr(images, "dtype", None)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{op}: images are {dtype}, expected float32 or float64")
    arrays = [("images", images, (images.shape[0], 1, W0, W0)), ("centers", centers, (10, 84))]
    arrays += [(name, params[name], PARAMETER_SHAPES[name]) for name in PARAM_NAMES]
    for name, a, shape in arrays + list(extra):
        if not isinstance(a, np.ndarray) or a.shape != tuple(shape) or a.dtype != dtype \
                or not a.flags.c_contiguous:
            raise ValueError(f"{op}: {name} must be a C-contiguous {dtype} array of shape "
                             f"{tuple(shape)}, not {getattr(a, 'dtype', type(a).__name__)} "
                             f"{getattr(a, 'shape', '')}")
    if np.shape(table) != (6, 16):
        raise ValueError(f"{op}: the C3 table has shape {np.shape(table)}, expected (6, 16)")


def sdlm_steps_cpu(params, hess, stats, images, labels, order, start, count, eta, mu, kind,
                   j, centers, table):
    """Per-pattern SDLM steps for patterns order[start:start + count] (module docstring);
    params are updated in place, stats (2,) float64 accumulates loss and errors."""
    from lenet.architecture import PARAMETER_SHAPES
    if kind not in KINDS:
        raise ValueError(f"sdlm_steps_cpu: kind {kind!r}, expected one of {sorted(KINDS)}")
    _check("sdlm_steps_cpu", params, images, centers, table,
           [(f"h {name}", hess[name], PARAMETER_SHAPES[name]) for name in PARAM_NAMES])
    dtype = images.dtype.type
    # eta / (mu + h) as the layer-by-layer loop computes it (lenet.ops_cpu.sdlm_update)
    rates = {name: (eta / (mu + hess[name])).astype(dtype) for name in PARAM_NAMES}
    _steps(params, rates, stats, images, labels, order, start, count, kind, j, centers, table)


def sdlm_steps_rates_cpu(params, rates, stats, images, labels, order, start, count, kind, j,
                         centers, table):
    """sdlm_steps_cpu with the step sizes rates = eta / (mu + h) given (a dict like params),
    computed once per pass by the caller (lenet.ops_cpu.CPUOps.sdlm_rates)."""
    from lenet.architecture import PARAMETER_SHAPES
    if kind not in KINDS:
        raise ValueError(f"sdlm_steps_cpu: kind {kind!r}, expected one of {sorted(KINDS)}")
    _check("sdlm_steps_cpu", params, images, centers, table,
           [(f"rate {name}", rates[name], PARAMETER_SHAPES[name]) for name in PARAM_NAMES])
    _steps(params, rates, stats, images, labels, order, start, count, kind, j, centers, table)


def _steps(params, rates, stats, images, labels, order, start, count, kind, j, centers, table):
    if labels.dtype != np.int32 or labels.shape != images.shape[:1] or \
            order.dtype != np.int32 or order.ndim != 1:
        raise ValueError("sdlm_steps_cpu: labels (N,) and order (P,) must be int32 arrays")
    if stats.dtype != np.float64 or stats.shape != (2,):
        raise ValueError("sdlm_steps_cpu: stats must be a (2,) float64 array")
    if not 0 <= start <= start + count <= order.shape[0]:
        raise ValueError(f"sdlm_steps_cpu: patterns {start}..{start + count} outside the "
                         f"order of {order.shape[0]}")
    chunk = order[start:start + count]
    if chunk.size and (chunk.min() < 0 or chunk.max() >= images.shape[0]):
        raise ValueError(f"sdlm_steps_cpu: order indexes outside the {images.shape[0]} images")
    in_maps, in_counts = connection_lists(table)
    sdlm_steps_kernel(*(params[name] for name in PARAM_NAMES),
                      *(rates[name] for name in PARAM_NAMES), stats, images,
                      labels, order, int(start), int(count), KINDS[kind], centers, in_maps,
                      in_counts, constants(images.dtype.type, j))


def penalties_cpu(out, images, params, centers, table):
    """out (N,10) = the RBF penalties of images (N,1,32,32)."""
    _check("penalties_cpu", params, images, centers, table,
           [("out", out, (images.shape[0], 10))])
    in_maps, in_counts = connection_lists(table)
    penalties_kernel(out, images, *(params[name] for name in PARAM_NAMES), centers, in_maps,
                     in_counts, constants(images.dtype.type))
