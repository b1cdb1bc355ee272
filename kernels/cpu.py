"""LeNet-5 on the CPU, compiled with Numba (njit): every CPU path of the model, the CPU's
own implementation beside the GPU's kernels, held to the float64 reference
(kernels/reference.py).

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

One file on purpose: Numba's cache (cache=True) does not notice a change in another file's
functions, so the pieces stay beside the paths whose cached code inlines them. Nor does it
notice new numbers in kernels/architecture.py: at import, drop_stale_cache compares them
with those the cached code holds and clears the cache where they differ.

Test: pytest -q tests/test_cpu.py
"""

import math
import warnings
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import get_parallel_chunksize, njit, prange, set_parallel_chunksize, types
from numba.extending import intrinsic, overload

from .architecture import (
    B1_AT,
    B2_AT,
    B3_AT,
    B4_AT,
    B5_AT,
    B6_AT,
    C1_MAPS,
    C1_SIZE,
    C2_AT,
    C3_MAPS,
    C3_SIZE,
    C4_AT,
    C5_INPUTS,
    C5_UNITS,
    CONV_PARAMETERS_LEN,
    F6_UNITS,
    IN_LEN,
    IN_SIZE,
    INPUT_ACCEPTED,
    INPUT_NEAR,
    LOSS_KINDS,
    N_CLASSES,
    PARAMETERS_LEN,
    S2_SIZE,
    S4_SIZE,
    SQUASH_A,
    SQUASH_S,
    STEP_MODES,
    W1_AT,
    W3_AT,
    W5_AT,
    W6_AT,
    K,
)

KINDS, MODES = LOSS_KINDS, STEP_MODES
MSE = KINDS["mse"]
STORE, SGD, SDLM = MODES["store"], MODES["sgd"], MODES["sdlm"]
C1_AREA, S2_AREA = C1_SIZE * C1_SIZE, S2_SIZE * S2_SIZE    # one map: 784, 196
C3_AREA, S4_AREA = C3_SIZE * C3_SIZE, S4_SIZE * S4_SIZE    # 100, 25
C3_TABLE_SHAPE = (C1_MAPS, C3_MAPS)                         # S2 maps x C3 maps
# flat map layouts (module docstring): row stride, length of the computed span, buffer size.
# A convolution computes its whole span (the unused columns too), each entry reading K - 1
# rows and K - 1 columns further: C1 reads x0 up to (27*32+31) + (4*32+4) = 1027, 1028
# floats, which X0_LEN rounds up to whole 8-float vectors (1032: the last 4 stay zero and
# unread); C3 reads S2's maps up to (9*14+13) + (4*14+4) = 199, so A2_LEN = 200.
W0 = IN_SIZE                                       # the input image: rows of stride 32
L1 = C1_SIZE * W0                                  # C1's output: 28 rows of stride 32
X0_LEN = -(-(L1 + (K - 1) * (W0 + 1)) // 8) * 8
W2 = S2_SIZE                                       # S2's output: 14 rows of stride 14
L3 = C3_SIZE * W2                                  # C3's output: 10 rows of stride 14
A2_LEN = L3 + (K - 1) * (W2 + 1)
CHUNK = 16              # images a mini-batch step sums before adding them to their slot
SLOTS = 16              # most partial sums of a step (the most threads it keeps busy)
INFER_BLOCK = 16        # images per task of the parallel inference
LANES = 8               # images side by side in inference (a 256-bit float32 vector)
FINISH_BLOCK = 4096     # parameters per task of a step's finish
CHECK_ALONE = 192       # images the input check takes on one thread (threads cost more)
# written out for these sizes: a kernel row's five taps (row_taps, fma5 and the functions
# that call it, shifted_sums*), four output rows a pass (full_forward_one)
assert K == 5, f"kernels/cpu.py unrolls 5x5 kernels (fma5, row_taps), not {K}x{K}"
assert C5_UNITS % 4 == 0 and F6_UNITS % 4 == 0, "full_forward_one takes 4 rows a pass"


def _probe():
    return 0


def can_cache():
    """Whether Numba can keep this package's compiled code on disk (a writable __pycache__
    beside it, NUMBA_CACHE_DIR, or the user's cache directory). Where it cannot (no
    writable home, a read-only install), the code compiles on every run, with a warning,
    rather than every import failing."""
    try:
        njit(cache=True)(_probe)    # the cache's place is found here; nothing compiles
        return True
    except RuntimeError:
        warnings.warn("Numba cannot keep compiled code on disk here (no writable __pycache__ "
                      "beside lenet, no writable cache directory): every run compiles the "
                      "CPU code again (10-30 s); set NUMBA_CACHE_DIR to a writable "
                      "directory to keep it", RuntimeWarning, stacklevel=2)
        return False


CACHE = can_cache()
jit = njit(cache=CACHE, fastmath={"reassoc"}, error_model="numpy")
pjit = njit(cache=CACHE, fastmath={"reassoc"}, error_model="numpy", parallel=True)

# Every number the compiled code takes from kernels/architecture.py. Numba freezes globals
# into the code it compiles, and its cache checks this file's source alone: after an edit
# of architecture.py it would load code that still holds the old numbers.
LAYOUT = (PARAMETERS_LEN, CONV_PARAMETERS_LEN, W1_AT, B1_AT, C2_AT, B2_AT, W3_AT, B3_AT,
          C4_AT, B4_AT, W5_AT, B5_AT, W6_AT, B6_AT, K, IN_SIZE, IN_LEN, C1_MAPS, C1_SIZE,
          S2_SIZE, C3_MAPS, C3_SIZE, S4_SIZE, C5_UNITS, C5_INPUTS, F6_UNITS, N_CLASSES, MSE,
          STORE, SGD, SDLM)


@jit
def compiled_layout():
    """LAYOUT as the compiled code holds it (from the cache if it holds this function)."""
    return LAYOUT


def drop_stale_cache():
    """Remove the package's cached code (the index .nbi and data .nbc files of this module
    and of distort.py, which compiles with CACHE too) if it was compiled with other
    architecture numbers than LAYOUT's, with a warning: every function then compiles
    again. Called at import, before any other function loads its code."""
    if not CACHE or compiled_layout() == LAYOUT:
        return
    folder = Path(compiled_layout._cache.cache_path)
    stale = list(folder.glob("*.nb[ic]"))     # this folder holds kernels/'s only
    for f in stale:
        f.unlink(missing_ok=True)   # another process may have removed it first
    warnings.warn(f"kernels/cpu.py: Numba's cached code was compiled for another "
                  f"kernels/architecture.py; removed {len(stale)} cached files from {folder}, "
                  f"compiling again", RuntimeWarning, stacklevel=2)


drop_stale_cache()


def constants(dtype, j=0.0):
    """[A, S, S/A, A^2, j, 0, 4, 1] in `dtype`: the squash's constants, MAP's j, the zero
    that sums start from, order 2's 4 and a one, so that the compiled code computes in the
    arrays' precision."""
    return np.array([SQUASH_A, SQUASH_S, SQUASH_S / SQUASH_A, SQUASH_A * SQUASH_A, j, 0, 4, 1],
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
    return (p[W1_AT:B1_AT].reshape((C1_MAPS, 1, K, K)), p[B1_AT:C2_AT], p[C2_AT:B2_AT],
            p[B2_AT:W3_AT], p[W3_AT:B3_AT].reshape((C3_MAPS, C1_MAPS, K, K)), p[B3_AT:C4_AT],
            p[C4_AT:B4_AT], p[B4_AT:W5_AT])


@jit
def unpack_dense(p):
    """C5 weight (120,400) and bias, F6 weight (84,120) and bias of a flat array."""
    return (p[W5_AT:B5_AT].reshape((C5_UNITS, C5_INPUTS)), p[B5_AT:W6_AT],
            p[W6_AT:B6_AT].reshape((F6_UNITS, C5_UNITS)), p[B6_AT:])


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
    subsample_lanes(a4, S4_SIZE, a3, W2, s4c, s4b, 1, c)


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
    x0[0, IN_LEN:] = 0
    x0[0, :IN_LEN] = image.reshape(IN_LEN)


# ------------------------------------------------------------ loss, one pattern

@jit
def pattern_loss(y, label, kind, c, dy, hy):
    """The loss of penalties y (10,) for `label`; writes dE/dy into dy and the diagonal of
    d2E/dy2 into hy. kind 0: MSE (paper eq. 8), 1: MAP (eq. 9, j = c[4]), computed as
    kernels/backward_pieces.py's pattern_loss does: relative to the largest exponent, and
    1 - p and log(total) from r, the sum of the other terms (no cancellation for a pattern
    classified with confidence). A label outside 0..9 gives NaN."""
    n = y.shape[0]
    if label < 0 or label >= n:
        dy[:] = np.nan
        hy[:] = np.nan
        return c[5] + np.nan
    if kind == MSE:
        dy[:] = 0
        hy[:] = 0
        dy[label] = 1
        return y[label]
    zmax, imax = -c[4], -1     # the largest exponent: -j (imax -1) or -y[imax]
    for i in range(n):
        if -y[i] > zmax:
            zmax, imax = -y[i], i
    r = c[5] if imax == -1 else math.exp(-c[4] - zmax)   # every term but the largest, 1
    for i in range(n):
        if i != imax:
            r += math.exp(-y[i] - zmax)
    total = c[7] + r
    for i in range(n):
        e = math.exp(-y[i] - zmax)
        p = e / total
        q = (r if i == imax else total - e) / total   # 1 - p
        dy[i] = q if i == label else -p
        hy[i] = p * q
    return y[label] + zmax + math.log1p(r)


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
    return (np.arange(C1_MAPS).astype(np.int32).reshape((1, C1_MAPS)),
            np.full(1, C1_MAPS, np.int32))


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
    a1, d1 = np.zeros((C1_MAPS, L1), dt), np.zeros((C1_MAPS, L1), dt)
    a2, d2 = np.zeros((C1_MAPS, A2_LEN), dt), np.zeros((C1_MAPS, A2_LEN), dt)
    a3, d3 = np.zeros((C3_MAPS, L3), dt), np.zeros((C3_MAPS, L3), dt)
    a4, d4 = np.zeros((C3_MAPS, S4_AREA), dt), np.zeros((C3_MAPS, S4_AREA), dt)
    a5, d5 = np.zeros(C5_UNITS, dt), np.zeros(C5_UNITS, dt)
    a6, d6 = np.zeros(F6_UNITS, dt), np.zeros(F6_UNITS, dt)
    y, dy, hy = np.zeros(N_CLASSES, dt), np.zeros(N_CLASSES, dt), np.zeros(N_CLASSES, dt)
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
        full_delta(d4.reshape(C5_INPUTS), a4.reshape(C5_INPUTS), d5, c5w, c, 1)
        full_step(c5w, c5b, r5w, r5b, a4.reshape(C5_INPUTS), d5)
        # S4's step, C3's delta
        subsample_back(d3, a3, W2, d4, S4_SIZE, s4c, s4c, s4b, r4c, r4b, c, 1)
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


# ------------------------------------------------------------ inference

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
        xs = x[r * x_stride:r * x_stride + span + (K - 1) * step]
        os = o[r * o_stride:r * o_stride + span]
        for i in range(span):
            os[i] = fma5(t, xs[i], xs[i + step], xs[i + 2 * step], xs[i + 3 * step],
                         xs[i + 4 * step], os[i])


@jit
def taps_three(o0, o1, o2, x, t0, t1, t2, rows, x_stride, o_stride, span, step):
    """taps_one for three output maps that read the same input map x: each input value
    is loaded once for the three (few enough arrays for the compiler to vectorise)."""
    for r in range(rows):
        xs = x[r * x_stride:r * x_stride + span + (K - 1) * step]
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
    x0 = np.zeros((1, max(IN_LEN * lanes, X0_LEN)), dt)
    a1 = np.zeros((C1_MAPS, max(C1_AREA * lanes, L1)), dt)
    a2 = np.zeros((C1_MAPS, max(S2_AREA * lanes, A2_LEN)), dt)
    a3 = np.zeros((C3_MAPS, max(C3_AREA * lanes, L3)), dt)
    a4 = np.zeros((C3_MAPS, S4_AREA * lanes), dt)
    # S4's, C5's and F6's outputs, a row per image of the group (pairs: at least two)
    x4 = np.zeros((max(lanes, 2), C5_INPUTS), dt)
    a5, a6 = np.zeros((max(lanes, 2), C5_UNITS), dt), np.zeros((max(lanes, 2), F6_UNITS), dt)
    first = lo
    while first < hi:
        if first + LANES <= hi:
            count = LANES
            for g in range(count):
                image = images[first + g].reshape(IN_LEN)
                for q in range(IN_LEN):
                    x0[0, q * LANES + g] = image[q]
            conv_infer(a1, x0, c1w, c1b, all_six, six, C1_SIZE, W0 * LANES, C1_SIZE * LANES,
                       C1_SIZE * LANES, LANES, c)
            subsample_lanes(a2, W2, a1, C1_SIZE, s2c, s2b, LANES, c)
            conv_infer(a3, a2, c3w, c3b, out_maps, out_counts, C3_SIZE, W2 * LANES,
                       C3_SIZE * LANES, C3_SIZE * LANES, LANES, c)
            subsample_lanes(a4, S4_SIZE, a3, C3_SIZE, s4c, s4b, LANES, c)
            for g in range(count):
                for m in range(C3_MAPS):
                    for q in range(S4_AREA):
                        x4[g, m * S4_AREA + q] = a4[m, q * LANES + g]
        else:
            count = 1
            load_image(x0, images[first])
            features_one(x0, p, a1, a2, a3, a4, all_six, six, out_maps, out_counts, c)
            for m in range(C3_MAPS):
                x4[0, m * S4_AREA:m * S4_AREA + S4_AREA] = a4[m, :S4_AREA]
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


# ------------------------------------------------------------ the input's check

@jit
def refused_block(refused, x, bounds, lo, hi):
    """refused[n] = whether image x[n] (a row) is outside the input encoding, for
    lo <= n < hi: a value outside [bounds[0], bounds[1]] (NaN too), or none at most
    bounds[2] (kernels/reference.py's first_refused_ref)."""
    low, high, near = bounds[0], bounds[1], bounds[2]
    for n in range(lo, hi):
        inside, close = True, False
        row = x[n]
        for i in range(row.shape[0]):   # bitwise: no branch, so the loop vectorises
            inside &= (row[i] >= low) & (row[i] <= high)
            close |= row[i] <= near
        refused[n] = not (inside and close)


@pjit
def refused_kernel(refused, x, bounds):
    """refused_block over blocks of INFER_BLOCK images, in parallel."""
    n = x.shape[0]
    for b in prange((n + INFER_BLOCK - 1) // INFER_BLOCK):
        lo = np.int64(b) * INFER_BLOCK
        refused_block(refused, x, bounds, lo, min(n, lo + INFER_BLOCK))


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
    a1, d1 = np.zeros((C1_MAPS, L1), dt), np.zeros((C1_MAPS, L1), dt)
    d2, a3 = np.zeros((C1_MAPS, A2_LEN), dt), np.zeros((C3_MAPS, L3), dt)
    a4, d4 = np.zeros((C3_MAPS, S4_AREA), dt), np.zeros((C3_MAPS, S4_AREA), dt)
    a5, a6 = np.zeros(C5_UNITS, dt), np.zeros(F6_UNITS, dt)
    y, dy, hy = np.zeros(N_CLASSES, dt), np.zeros(N_CLASSES, dt), np.zeros(N_CLASSES, dt)
    pad = np.zeros(L3 + 2 * (K - 1), dt)
    all_six, six = c1_lists()
    out_maps, out_counts = out_lists(in_maps, in_counts)
    # C5's and F6's inputs (squared for order 2) and deltas, a row per image of a chunk
    x4, d5 = np.zeros((CHUNK, C5_INPUTS), dt), np.zeros((CHUNK, C5_UNITS), dt)
    x5, d6 = np.zeros((CHUNK, C5_UNITS), dt), np.zeros((CHUNK, F6_UNITS), dt)
    # S2's output (squared: q2s, order 2) and C3's delta of each image of a chunk, and
    # C3's input and delta of a chunk's images side by side (conv_step): image k's at k,
    # k + CHUNK, ...; the deltas' columns 10..13 stay zero
    a2s = np.zeros((CHUNK, C1_MAPS, A2_LEN), dt)
    q2s = np.zeros((CHUNK, C1_MAPS, A2_LEN), dt)
    d3s = np.zeros((CHUNK, C3_MAPS, L3), dt)
    c3_x = np.zeros((C1_MAPS, A2_LEN * CHUNK), dt)
    c3_d = np.zeros((C3_MAPS, L3 * CHUNK), dt)
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
            for t in range(N_CLASSES):
                dy[t] *= scale
                hy[t] *= scale
            rbf_delta(d6[k], a6, dy, hy, centers, c, order)
            full_delta(d5[k], a5, d6[k], e[10], c, order)
            full_delta(d4.reshape(C5_INPUTS), a4.reshape(C5_INPUTS), d5[k], e[8], c, order)
            if order == 2:
                square_into(x5[k], a5)
                square_into(x4[k], a4)
                square_into(q2s[k], a2)
                square_into(q0, x0)
            else:
                x5[k] = a5
                x4[k] = a4.reshape(C5_INPUTS)
            subsample_back(d3, a3, W2, d4, S4_SIZE, e[6], g4c, g4b, r4c, r4b, c, order)
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
    arrays = [("images", images, (n, 1, IN_SIZE, IN_SIZE) if images.ndim == 4 else (n, IN_LEN)),
              ("centers", centers, (N_CLASSES, F6_UNITS)), ("params", params, (PARAMETERS_LEN,))]
    for name, a, shape in arrays + list(extra):
        if not isinstance(a, np.ndarray) or a.shape != tuple(shape) or a.dtype != dtype \
                or not a.flags.c_contiguous:
            raise ValueError(f"{op}: {name} must be a C-contiguous {dtype} array of shape "
                             f"{tuple(shape)}, not {getattr(a, 'dtype', type(a).__name__)} "
                             f"{getattr(a, 'shape', '')}")
    return (images.reshape(n, IN_LEN),
            centers if centers.flags.writeable else centers.copy())


def _check_table(op, table):
    if np.shape(table) != C3_TABLE_SHAPE:
        raise ValueError(f"{op}: the C3 table has shape {np.shape(table)}, expected "
                         f"{C3_TABLE_SHAPE}")
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
    if np.shape(js) != (r,):
        raise ValueError(f"sdlm_runs_cpu: js must be one j per run, shape {(r,)}, not "
                         f"{np.shape(js)}")
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
    connection lists are made once and kept: making them costs more than one image's
    forward (bench/results/2026-12-07-cpu-inference)."""
    images, centers = _check("penalties_cpu", params, images, centers,
                             [("out", out, (images.shape[0], N_CLASSES))])
    key = np.asarray(table, dtype=bool).tobytes() if np.shape(table) == C3_TABLE_SHAPE else None
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


_BOUNDS = {t: np.array(INPUT_ACCEPTED + (INPUT_NEAR,), t) for t in (np.float32, np.float64)}


def first_refused_cpu(x):
    """Index of the first image of x (N,1,32,32) or (N,1024), a C-contiguous float32 or
    float64 NumPy array, not in the input encoding (INPUT_ACCEPTED, INPUT_NEAR), or -1:
    first_refused_ref's answer, on every thread."""
    rows = x.reshape(x.shape[0], IN_LEN)
    bounds = _BOUNDS[x.dtype.type]
    refused = np.zeros(rows.shape[0], np.bool_)
    if rows.shape[0] <= CHECK_ALONE:
        refused_block(refused, rows, bounds, 0, rows.shape[0])
    else:
        one_at_a_time(refused_kernel, refused, rows, bounds)
    return int(np.argmax(refused)) if refused.any() else -1


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
        if self.centers.shape != (N_CLASSES, F6_UNITS):
            raise ValueError(f"StepWorkspace: centers {self.centers.shape}, expected "
                             f"{(N_CLASSES, F6_UNITS)}")
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
    if kind not in KINDS or mode not in MODES or order not in (1, 2):   # as the GPU's
        raise ValueError(f"step: kind {kind!r}, mode {mode!r}, order {order!r}; expected "
                         f"one of {sorted(KINDS)}, {sorted(MODES)}, 1 or 2")
    if images.ndim == 4:
        images = images.reshape(images.shape[0], IN_LEN)
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
                   KINDS[kind], j, order, MODES[mode], lr, momentum)


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
    a1, a2 = np.zeros((C1_MAPS, L1), dt), np.zeros((C1_MAPS, A2_LEN), dt)
    a3, a4 = np.zeros((C3_MAPS, L3), dt), np.zeros((C3_MAPS, S4_AREA), dt)
    all_six, six = c1_lists()
    out_maps, out_counts = out_lists(in_maps, in_counts)
    for n in range(lo, hi):
        load_image(x0, images[n])
        forward_one(x0, p, a1, a2, a3, a4, a_5[n], a_6[n], y[n], centers, all_six, six,
                    out_maps, out_counts, c)
        for m in range(C1_MAPS):
            a_1[n, m] = a1[m].reshape((C1_SIZE, W0))[:, :C1_SIZE]
            a_2[n, m] = a2[m, :S2_AREA].reshape((S2_SIZE, S2_SIZE))
        for m in range(C3_MAPS):
            a_3[n, m] = a3[m].reshape((C3_SIZE, W2))[:, :C3_SIZE]
            a_4[n, m] = a4[m].reshape((S4_SIZE, S4_SIZE))


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
           ((C1_MAPS, C1_SIZE, C1_SIZE), (C1_MAPS, S2_SIZE, S2_SIZE), (C3_MAPS, C3_SIZE, C3_SIZE),
            (C3_MAPS, S4_SIZE, S4_SIZE), (C5_UNITS,), (F6_UNITS,), (N_CLASSES,))]
    args = (images, params, centers, in_maps, in_counts, constants(dt.type), *out)
    if n <= INFER_BLOCK:   # one block: no threads to start
        activations_block(*args, 0, n)
    else:
        one_at_a_time(activations_kernel, *args)
    return out
