"""The CPU's vectorised rows (Numba njit): one image's layers forward and backward, and
the inference rows that run images side by side (lanes), from which kernels/cpu.py builds
every CPU path (as kernels/forward_pieces.py and backward_pieces.py are the GPU's pieces).

How: each map is a flat row-major vector with the row stride of the layer's input, so
that a 5x5 convolution is 25 contiguous multiply-adds over whole maps (and its weight
gradient 25 dot products) which the compiler vectorises: C1's output is 28 rows of
stride 32 (columns 28..31 are unused), C3's 10 rows of stride 14; the deltas keep zeros
in the unused columns, so they add nothing. Deltas are dE/da at each layer's
pre-activation a. A layer's "step" subtracts rate * gradient from its destination: the
per-pattern steps pass the parameters and eta / (mu + h); a mini-batch step passes its
sums and rates of -1, which add the gradient exactly. Order 2 runs the same code with
squared weights, squared inputs and f'^2 (kernels/reference.py's backward ops at order 2).

Arithmetic. Sums may be reassociated (fastmath "reassoc", so that dot products
vectorise; "contract" is left out because cached code then rounded differently from
fresh): results differ from the reference by rounding only and repeat bit for bit on the
same machine. Multiply-adds are explicit: fmuladd in the dot products, fma (one rounding,
whatever the compiler) in the loops that are no sums. float32's tanh is a rational
approximation (tanh32) that vectorises.

Test: pytest -q tests/test_cpu_pieces.py (and, through every path, tests/test_cpu.py)
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from .architecture import (
    B1_AT,
    B2_AT,
    B3_AT,
    B4_AT,
    B5_AT,
    B6_AT,
    C2_AT,
    C4_AT,
    SQUASH_A,
    SQUASH_S,
    W1_AT,
    W3_AT,
    W5_AT,
    W6_AT,
    K,
)

# flat map layouts (module docstring): row stride, length of the computed span, buffer size
W0, X0_LEN = 32, 1032   # the input image; C1 reads up to 27*32+27 + 4*32+4 = 1027
L1 = 28 * W0            # C1's output: 28 rows of stride 32
W2, A2_LEN = 14, 200    # S2's output: 14x14; C3 reads up to 9*14+13 + 4*14+4 = 199
L3 = 10 * W2            # C3's output: 10 rows of stride 14

jit = njit(cache=True, fastmath={"reassoc"}, error_model="numpy")
pjit = njit(cache=True, fastmath={"reassoc"}, error_model="numpy", parallel=True)


def constants(dtype, j=0.0):
    """[A, S, S/A, A^2, j, 0, 4] in `dtype`: the squash's constants, MAP's j, the zero that
    sums start from and order 2's 4, so that the compiled code computes in the arrays'
    precision."""
    return np.array([SQUASH_A, SQUASH_S, SQUASH_S / SQUASH_A, SQUASH_A * SQUASH_A, j, 0, 4],
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


@jit
def unpack_conv(p):
    """The named views of C1..S4 in a flat parameter-shaped array (or its first
    CONV_PARAMETERS_LEN): C1 weight (6,1,5,5) and bias, S2 coefficient and bias, C3 weight
    (16,6,5,5) and bias, S4 coefficient and bias."""
    return (p[W1_AT:B1_AT].reshape((6, 1, K, K)), p[B1_AT:C2_AT], p[C2_AT:B2_AT],
            p[B2_AT:W3_AT], p[W3_AT:B3_AT].reshape((16, 6, K, K)), p[B3_AT:C4_AT],
            p[C4_AT:B4_AT], p[B4_AT:W5_AT])


@jit
def unpack_dense(p):
    """C5 weight (120,400) and bias, F6 weight (84,120) and bias of a flat array."""
    return (p[W5_AT:B5_AT].reshape((120, 400)), p[B5_AT:W6_AT],
            p[W6_AT:B6_AT].reshape((84, 120)), p[B6_AT:])


@jit
def unpack(p):
    """The twelve named views of a flat parameter-shaped array, in PARAMETER_AT order."""
    return unpack_conv(p) + unpack_dense(p)


# ------------------------------------------------------------------------ fma

def _multiply_add(llvm_name, fastmath, doc):
    """An intrinsic a * b + s through LLVM's llvm_name (a, b, s one float type)."""
    def typer(typingctx, a, b, s):
        if not (isinstance(a, types.Float) and a == b == s):
            return None

        def codegen(context, builder, signature, args):
            t = args[0].type
            f = builder.module.declare_intrinsic(llvm_name, [t], ir.FunctionType(t, [t, t, t]))
            return builder.call(f, args, fastmath=fastmath)
        return a(a, b, s), codegen
    typer.__name__ = typer.__qualname__ = llvm_name.replace("llvm.", "")
    typer.__doc__ = doc
    return intrinsic(typer)


fma = _multiply_add("llvm.fma", (), """a * b + s rounded once: an explicit fused
multiply-add, so that its rounding does not depend on what the compiler chose (as fastmath
"contract" would); loops over it vectorise.""")
fmuladd = _multiply_add("llvm.fmuladd", ("reassoc",), """a * b + s as a term of a sum (with
"reassoc"): fused on a machine with FMA, and a loop that sums over it vectorises (a
reduction over llvm.fma does not; a separate multiply and add take twice the
instructions).""")


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
def fprime(out, c, order):
    """f'(a) from f(a) = out; its square for order 2."""
    d = c[2] * (c[3] - out * out)
    return d * d if order == 2 else d


# ------------------------------------------------------------ one image, forward

@jit
def full_forward_one(out, x, w, b, c):
    """out (O,) = f(w (O,I) @ x (I,) + b), O a multiple of 4: four rows a pass over x."""
    for o in range(0, out.shape[0], 4):
        w0, w1, w2, w3 = w[o], w[o + 1], w[o + 2], w[o + 3]
        a0 = a1 = a2 = a3 = c[5]
        for i in range(x.shape[0]):
            a0, a1 = fmuladd(w0[i], x[i], a0), fmuladd(w1[i], x[i], a1)
            a2, a3 = fmuladd(w2[i], x[i], a2), fmuladd(w3[i], x[i], a3)
        out[o], out[o + 1], out[o + 2], out[o + 3] = a0 + b[o], a1 + b[o + 1], a2 + b[o + 2], \
            a3 + b[o + 3]
    for o in range(out.shape[0]):               # apart, so that the tanh vectorises
        out[o] = squash(out[o], c)


@jit
def features_one(x0, p, a1, a2, a3, a4, all_six, six, out_maps, out_counts, c):
    """C1..S4 of one image x0 (1, X0_LEN) (the 32x32 image, zero-padded) with the
    parameters p (unpack's views): the flat maps a1 (6, L1), a2 (6, A2_LEN), a3 (16, L3),
    a4 (16, 25)."""
    c1w, c1b, s2c, s2b, c3w, c3b, s4c, s4b = p[:8]
    conv_infer(a1, x0, c1w, c1b, all_six, six, 1, W0, L1, L1, 1, c)
    subsample_lanes(a2, W2, a1, W0, s2c, s2b, 1, c)
    conv_infer(a3, a2, c3w, c3b, out_maps, out_counts, 1, W2, L3, L3, 1, c)
    subsample_lanes(a4, 5, a3, W2, s4c, s4b, 1, c)


@jit
def forward_one(x0, p, a1, a2, a3, a4, a5, a6, y, centers, all_six, six, out_maps,
                out_counts, c):
    """Every layer of one image: features_one's maps, then a5, a6, penalties y (10,)."""
    features_one(x0, p, a1, a2, a3, a4, all_six, six, out_maps, out_counts, c)
    full_forward_one(a5, a4.reshape(a4.size), p[8], p[9], c)
    full_forward_one(a6, a5, p[10], p[11], c)
    rbf(y, a6, centers, c)


@jit
def rbf(y, a6, centers, c):
    """The RBF penalties y (10,) of F6's output a6 (84,): squared distances to centers."""
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
def pattern_loss(y, label, kind, c, dy, hy):
    """The loss of penalties y (10,) for `label`; writes dE/dy into dy and the diagonal of
    d2E/dy2 into hy. kind 0: MSE (paper eq. 8), 1: MAP (eq. 9, j = c[4]), computed
    relative to the largest exponent as kernels/backward_pieces.py's pattern_loss does. A
    label outside 0..9 gives NaN."""
    n = y.shape[0]
    if label < 0 or label >= n:
        dy[:] = np.nan
        hy[:] = np.nan
        return c[5] + np.nan
    if kind == 0:
        dy[:] = 0
        hy[:] = 0
        dy[label] = 1
        return y[label]
    zmax = -c[4]
    for i in range(n):
        zmax = max(zmax, -y[i])
    total = math.exp(-c[4] - zmax)
    for i in range(n):
        total += math.exp(-y[i] - zmax)
    for i in range(n):
        p = math.exp(-y[i] - zmax) / total
        dy[i] = -p
        hy[i] = p - p * p
    dy[label] += 1
    return y[label] + zmax + math.log(total)


# ------------------------------------------------------------ backward, one pattern

@jit
def rbf_delta(d6, a6, dy, hy, centers, c, order):
    """F6's delta (curvature for order 2) at its pre-activation, through the RBF:
    2 sum_k dy_k (a6 - c_k) f', or (sum_k 2 dy_k + 4 hy_k (a6 - c_k)^2) f'^2."""
    for o in range(a6.shape[0]):
        g = c[5]
        if order == 2:
            for k in range(dy.shape[0]):
                t = a6[o] - centers[k, o]
                g += (dy[k] + dy[k]) + c[6] * hy[k] * t * t
            d6[o] = g * fprime(a6[o], c, order)
        else:
            for k in range(dy.shape[0]):
                g += dy[k] * (a6[o] - centers[k, o])
            d6[o] = (g + g) * fprime(a6[o], c, order)


@jit
def subsample_back(d_x, x, x_width, d_out, out_width, e_coef, coef, bias, r_coef, r_bias,
                   c, order):
    """A subsampling layer's backward step in one pass over its input x: the delta d_x at
    x's pre-activation, d_out (at the layer's own) times e_coef (coef; coef^2 for order 2)
    spread over each 2x2 block, times f' (f'^2), in the 2 out_width x 2 out_width used
    entries; then coef -= r_coef * gradient, bias -= r_bias * gradient, the gradient of
    coef the sum of d_out times the 2x2 block sums s of x (s^2 for order 2)."""
    for m in range(d_x.shape[0]):
        dm, xm, om, k = d_x[m], x[m], d_out[m], e_coef[m]
        gc, gb = c[5], c[5]
        for i in range(out_width):
            r0, r1 = 2 * i * x_width, (2 * i + 1) * x_width
            for j in range(out_width):
                p, q, t, u = xm[r0 + 2 * j], xm[r0 + 2 * j + 1], xm[r1 + 2 * j], \
                    xm[r1 + 2 * j + 1]
                s = p + q + t + u
                o = om[i * out_width + j]
                gc += o * (s * s if order == 2 else s)
                gb += o
                v = o * k
                dm[r0 + 2 * j] = v * fprime(p, c, order)
                dm[r0 + 2 * j + 1] = v * fprime(q, c, order)
                dm[r1 + 2 * j] = v * fprime(t, c, order)
                dm[r1 + 2 * j + 1] = v * fprime(u, c, order)
        coef[m] -= r_coef[m] * gc
        bias[m] -= r_bias[m] * gb


@jit
def back_one(o, pad, t, n):
    """o[i] += sum_v t[v] pad[i + K - 1 - v] for i < n: one kernel row t (five weights) of
    a full correlation, a chain of fused multiply-adds."""
    for i in range(n):
        o[i] = fma5(t, pad[i + 4], pad[i + 3], pad[i + 2], pad[i + 1], pad[i], o[i])


@jit
def back_three(o0, o1, o2, pad, t0, t1, t2, n):
    """back_one for three outputs from the same pad: each pad value is loaded once for
    the three."""
    for i in range(n):
        x0, x1, x2, x3, x4 = pad[i + 4], pad[i + 3], pad[i + 2], pad[i + 1], pad[i]
        o0[i] = fma5(t0, x0, x1, x2, x3, x4, o0[i])
        o1[i] = fma5(t1, x0, x1, x2, x3, x4, o1[i])
        o2[i] = fma5(t2, x0, x1, x2, x3, x4, o2[i])


@jit
def conv_delta(d_x, x, d_out, w, in_maps, in_counts, width, span, pad, c, order):
    """The delta at the pre-activation of a convolution's input x: the full correlation
    of its delta d_out (unused columns zero) with the connected weights w (order 2: w^2),
    times f' (f'^2). pad: scratch of span + 2 (K - 1), which holds one map of d_out
    between zeros so that each kernel row is one pass over d_x; the input maps that map m
    reaches go three at a time over each kernel row (each pad value loaded once for the
    three). Each entry of d_x sums in the same order whatever its group: output maps in
    increasing order, then kernel rows, then taps."""
    d_x[:] = 0
    pad[:] = 0
    n = span + K - 1
    for m in range(d_out.shape[0]):
        pad[K - 1:K - 1 + span] = d_out[m, :span]
        for u in range(K):
            lo = u * width
            j = 0
            while j + 3 <= in_counts[m]:
                c0, c1, c2 = in_maps[m, j], in_maps[m, j + 1], in_maps[m, j + 2]
                back_three(d_x[c0, lo:lo + n], d_x[c1, lo:lo + n], d_x[c2, lo:lo + n], pad,
                           row_taps(w, m, c0, u), row_taps(w, m, c1, u),
                           row_taps(w, m, c2, u), n)
                j += 3
            while j < in_counts[m]:
                ch = in_maps[m, j]
                back_one(d_x[ch, lo:lo + n], pad, row_taps(w, m, ch, u), n)
                j += 1
    for ch in range(d_x.shape[0]):
        for i in range(width * width):
            d_x[ch, i] *= fprime(x[ch, i], c, order)


@jit
def shifted_sums(d, x, n, step, c):
    """The K dot products of d[:n] with x shifted by 0, step, .., (K-1) step, each with its
    own partial sum in a vector register: one 5x5 kernel row's gradient."""
    g0 = g1 = g2 = g3 = g4 = c[5]
    for i in range(n):
        x0, x1, x2, x3, x4 = x[i], x[i + step], x[i + 2 * step], x[i + 3 * step], x[i + 4 * step]
        p = d[i]
        g0, g1, g2 = fmuladd(p, x0, g0), fmuladd(p, x1, g1), fmuladd(p, x2, g2)
        g3, g4 = fmuladd(p, x3, g3), fmuladd(p, x4, g4)
    return g0, g1, g2, g3, g4


@jit
def shifted_sums3(da, db, dc, x, n, step, c):
    """shifted_sums of three maps' deltas with the same x: each x is loaded once for the
    fifteen sums."""
    a0 = a1 = a2 = a3 = a4 = b0 = b1 = b2 = b3 = b4 = e0 = e1 = e2 = e3 = e4 = c[5]
    for i in range(n):
        x0, x1, x2, x3, x4 = x[i], x[i + step], x[i + 2 * step], x[i + 3 * step], x[i + 4 * step]
        p, q, r = da[i], db[i], dc[i]
        f = fmuladd
        a0, a1, a2, a3, a4 = f(p, x0, a0), f(p, x1, a1), f(p, x2, a2), f(p, x3, a3), f(p, x4, a4)
        b0, b1, b2, b3, b4 = f(q, x0, b0), f(q, x1, b1), f(q, x2, b2), f(q, x3, b3), f(q, x4, b4)
        e0, e1, e2, e3, e4 = f(r, x0, e0), f(r, x1, e1), f(r, x2, e2), f(r, x3, e3), f(r, x4, e4)
    return (a0, a1, a2, a3, a4), (b0, b1, b2, b3, b4), (e0, e1, e2, e3, e4)


@jit
def take_row(w, r_w, m, ch, u, g):
    """w[m, ch, u, :] -= r_w[m, ch, u, :] * g (g five sums)."""
    for v in range(K):
        w[m, ch, u, v] -= r_w[m, ch, u, v] * g[v]


@jit
def conv_step(w, b, r_w, r_b, x, d, length, out_maps, out_counts, width, step, c):
    """w -= r_w * gradient, b -= r_b * gradient of a convolution's connected weights and
    biases, from its input x (order 2: x^2) and the delta d at its pre-activation, flat
    maps with the row stride `width`, d zero where unused: the gradient of w[m, ch, u, v]
    is the dot product of d[m, :length] with x[ch] shifted by u * width + v * step (x
    reaching that far). step 1: one image; a chunk's images side by side (step of them,
    innermost) make one dot product per weight. The output maps that read input map ch
    (out_maps[ch, :out_counts[ch]]) go three at a time over its rows."""
    for ch in range(out_counts.shape[0]):
        n = out_counts[ch]
        for u in range(K):
            xs = x[ch, u * width:u * width + length + (K - 1) * step]
            j = 0
            while j + 3 <= n:
                m0, m1, m2 = out_maps[ch, j], out_maps[ch, j + 1], out_maps[ch, j + 2]
                g0, g1, g2 = shifted_sums3(d[m0], d[m1], d[m2], xs, length, step, c)
                take_row(w, r_w, m0, ch, u, g0)
                take_row(w, r_w, m1, ch, u, g1)
                take_row(w, r_w, m2, ch, u, g2)
                j += 3
            for jj in range(j, n):
                m = out_maps[ch, jj]
                take_row(w, r_w, m, ch, u, shifted_sums(d[m], xs, length, step, c))
    for m in range(d.shape[0]):
        g = c[5]
        for i in range(length):
            g += d[m, i]
        b[m] -= r_b[m] * g


@jit
def c1_lists():
    """C1's connection lists by input map (out_lists): its one input map to all six."""
    return np.arange(6).astype(np.int32).reshape((1, 6)), np.full(1, 6, np.int32)


@jit
def out_lists(in_maps, in_counts):
    """The connection lists by input map: out_maps (C, M) int32 (the output maps that read
    input map ch are out_maps[ch, :out_counts[ch]], in increasing order), out_counts."""
    out_maps = np.zeros((in_maps.shape[1], in_maps.shape[0]), np.int32)
    out_counts = np.zeros(in_maps.shape[1], np.int32)
    for m in range(in_maps.shape[0]):
        for jj in range(in_counts[m]):
            ch = in_maps[m, jj]
            out_maps[ch, out_counts[ch]] = m
            out_counts[ch] += 1
    return out_maps, out_counts


@jit
def full_delta(d_x, x, d, w, c, order):
    """The delta d_x (I,) at the input's pre-activation of a full connection
    out = f(w (O,I) @ x + b) with delta d (O,): (d @ w) f'(x) (order 2: w^2, f'^2)."""
    d_x[:] = 0
    n_out = d.shape[0]
    o = 0
    while o + 4 <= n_out:   # four rows of w a pass: a quarter of the passes over d_x
        d0, d1, d2, d3 = d[o], d[o + 1], d[o + 2], d[o + 3]
        w0, w1, w2, w3 = w[o], w[o + 1], w[o + 2], w[o + 3]
        for i in range(x.shape[0]):
            d_x[i] = fma(d3, w3[i], fma(d2, w2[i], fma(d1, w1[i], fma(d0, w0[i], d_x[i]))))
        o += 4
    for r in range(o, n_out):
        for i in range(x.shape[0]):
            d_x[i] += d[r] * w[r, i]
    for i in range(x.shape[0]):
        d_x[i] *= fprime(x[i], c, order)


@jit
def full_step(w, b, r_w, r_b, x, d):
    """The per-pattern step of a full connection: w -= r_w * (d outer x), b -= r_b * d."""
    for o in range(d.shape[0]):
        for i in range(x.shape[0]):
            w[o, i] -= r_w[o, i] * (d[o] * x[i])
        b[o] -= r_b[o] * d[o]


@jit
def full_sums(w, b, d, x, count, add, c):
    """w (O,I) += sum_n d[n] outer x[n], b += sum_n d[n] over the first count rows of
    d (B,O) and x (B,I) (= instead of += unless `add`): a full connection's gradient
    summed over a chunk, one row of w at a time, images in order (fused multiply-adds)."""
    row = np.empty(x.shape[1], x.dtype)
    for o in range(d.shape[1]):
        row[:] = 0
        g = c[5]
        n = 0
        while n + 4 <= count:   # four images a pass: a quarter of the stores into row
            d0, d1, d2, d3 = d[n, o], d[n + 1, o], d[n + 2, o], d[n + 3, o]
            x0, x1, x2, x3 = x[n], x[n + 1], x[n + 2], x[n + 3]
            for i in range(x.shape[1]):
                row[i] = fma(d3, x3[i], fma(d2, x2[i], fma(d1, x1[i], fma(d0, x0[i], row[i]))))
            g += d0 + d1 + d2 + d3
            n += 4
        for r in range(n, count):
            dn = d[r, o]
            for i in range(x.shape[1]):
                row[i] = fma(dn, x[r, i], row[i])
            g += dn
        if add:
            for i in range(x.shape[1]):
                w[o, i] += row[i]
            b[o] += g
        else:
            w[o] = row
            b[o] = g



# ------------------------------------------------------------ inference rows

@jit
def row_taps(w, m, ch, u):
    """The five weights of kernel row u of output map m over input map ch, as scalars."""
    return w[m, ch, u, 0], w[m, ch, u, 1], w[m, ch, u, 2], w[m, ch, u, 3], w[m, ch, u, 4]


@jit
def fma5(t, x0, x1, x2, x3, x4, s):
    """s + the kernel row t (five weights) times x0..x4, a chain of fused multiply-adds."""
    return fma(t[4], x4, fma(t[3], x3, fma(t[2], x2, fma(t[1], x1, fma(t[0], x0, s)))))


@jit
def taps_one(o, x, t, rows, x_stride, o_stride, span, step):
    """o[r * o_stride + i] += the kernel row t (five weights) over x[r * x_stride + i +
    step * v], v < 5, for rows r and i < span."""
    for r in range(rows):
        xs = x[r * x_stride:r * x_stride + span + 4 * step]
        os = o[r * o_stride:r * o_stride + span]
        for i in range(span):
            os[i] = fma5(t, xs[i], xs[i + step], xs[i + 2 * step], xs[i + 3 * step],
                         xs[i + 4 * step], os[i])


@jit
def taps_three(o0, o1, o2, x, t0, t1, t2, rows, x_stride, o_stride, span, step):
    """taps_one for three output maps that read the same input map x: each input value
    is loaded once for the three (few enough arrays for the compiler to vectorise)."""
    for r in range(rows):
        xs = x[r * x_stride:r * x_stride + span + 4 * step]
        p0 = o0[r * o_stride:r * o_stride + span]
        p1 = o1[r * o_stride:r * o_stride + span]
        p2 = o2[r * o_stride:r * o_stride + span]
        for i in range(span):
            x0, x1, x2 = xs[i], xs[i + step], xs[i + 2 * step]
            x3, x4 = xs[i + 3 * step], xs[i + 4 * step]
            p0[i] = fma5(t0, x0, x1, x2, x3, x4, p0[i])
            p1[i] = fma5(t1, x0, x1, x2, x3, x4, p1[i])
            p2[i] = fma5(t2, x0, x1, x2, x3, x4, p2[i])


@jit
def conv_infer(out, x, w, b, out_maps, out_counts, rows, x_stride, o_stride, span, step, c):
    """A convolution's squashed output maps out (M, *) from its input maps x (C, *), input
    map by input map: the output maps that read input map ch (out_maps[ch,
    :out_counts[ch]]) go three at a time over each of its kernel rows u, each a taps_*
    pass over `rows` rows (the input from x[ch, u * x_stride:]). Each output's sum runs
    in the same order whatever its group: input maps in increasing order, kernel rows,
    then its taps (fma5). rows 1, step 1: one image's flat maps (module docstring)."""
    for m in range(out.shape[0]):
        out[m, :] = b[m]
    for ch in range(out_counts.shape[0]):
        for u in range(K):
            xs = x[ch, u * x_stride:]
            n = out_counts[ch]
            j = 0
            while j + 3 <= n:
                m0, m1, m2 = out_maps[ch, j], out_maps[ch, j + 1], out_maps[ch, j + 2]
                taps_three(out[m0], out[m1], out[m2], xs, row_taps(w, m0, ch, u),
                           row_taps(w, m1, ch, u), row_taps(w, m2, ch, u), rows, x_stride,
                           o_stride, span, step)
                j += 3
            while j < n:
                m = out_maps[ch, j]
                taps_one(out[m], xs, row_taps(w, m, ch, u), rows, x_stride, o_stride, span,
                         step)
                j += 1
    squash_all(out, c)


@jit
def squash_all(a, c):
    """a = f(a), every entry of a 2-D array (one contiguous pass a row, vectorised)."""
    for m in range(a.shape[0]):
        o = a[m]
        for i in range(o.shape[0]):
            o[i] = squash(o[i], c)


@jit
def subsample_lanes(out, out_width, x, width, coef, bias, lanes, c):
    """A subsampling layer over `lanes` images side by side (lanes innermost; 1: one
    image): out[m, (i * out_width + j) * lanes + k] = f(coef[m] * (2x2 block sum of
    x[m] at (2i, 2j), lane k) + bias[m]) for i, j < out_width, x with rows of `width`
    positions."""
    for m in range(out.shape[0]):
        for i in range(out_width):
            r0, r1 = 2 * i * width * lanes, (2 * i + 1) * width * lanes
            for j in range(out_width):
                o = (i * out_width + j) * lanes
                a, b = r0 + 2 * j * lanes, r1 + 2 * j * lanes
                for k in range(lanes):
                    s = x[m, a + k] + x[m, a + lanes + k] + x[m, b + k] + x[m, b + lanes + k]
                    out[m, o + k] = coef[m] * s + bias[m]
    squash_all(out, c)


@jit
def full_infer_rows(out, x, w, b, count, c):
    """out[g] = f(w (O,I) @ x[g] + b) for the first `count` rows of x (G,I) (G at least
    count rounded up to even): rows in pairs, so that each weight is loaded once for two
    images and each weight row once for the group; every image's sum runs in the same
    order whatever its row."""
    for o in range(w.shape[0]):
        wo = w[o]
        for g in range(0, count, 2):
            xa, xb = x[g], x[g + 1]
            acc_a, acc_b = c[5], c[5]
            for i in range(wo.shape[0]):
                acc_a, acc_b = fmuladd(wo[i], xa[i], acc_a), fmuladd(wo[i], xb[i], acc_b)
            out[g, o] = acc_a + b[o]
            out[g + 1, o] = acc_b + b[o]
    for g in range(count):
        og = out[g]
        for o in range(og.shape[0]):
            og[o] = squash(og[o], c)
