"""One-image forward pieces of LeNet-5, device functions that the fused kernels
(kernels/forward.py, train_step.py, sdlm.py) are assembled from. A piece computes one task
(a small part of one layer for one image); the caller maps threads to (image, task).
Arrays are 1-D, one image's maps flattened (x[(c * H + y) * W + x]), in shared or global
memory alike. Shapes are module constants, loops have constant bounds and indices are
unsigned, so NVVM unrolls the inner loops and keeps the register tiles in registers.
Under the CUDA simulator the pieces are plain Python (kernels.common.device_function).

Test: pytest -q tests/test_forward_pieces.py (each piece through kernels/forward.py's
stage kernels); census: bench/results/2026-12-02-fused-census/.
"""

import math

import numpy as np
from numba import config, cuda, float32, uint32

from .architecture import (  # noqa: F401 -- the kernels take shapes from here too
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
    C3_MAX_IN,
    C3_SIZE,
    C4_AT,
    C5_INPUTS,
    C5_UNITS,
    CONV_PARAMETERS_LEN,
    F6_UNITS,
    IN_LEN,
    IN_SIZE,
    N_CLASSES,
    PARAMETER_AT,
    PARAMETER_SHAPES,
    PARAMETERS_LEN,
    S2_LEN,
    S2_SIZE,
    S4_LEN,
    S4_SIZE,
    SQUASH_A,
    SQUASH_S,
    W1_AT,
    W3_AT,
    W5_AT,
    W6_AT,
    K,
)
from .common import device_function

# LeNet-5's shapes and the flat parameter layout: kernels/architecture.py
C1S2_COLS = 2                              # S2 pixels per task, side by side
C1S2_TILE_W = 2 * C1S2_COLS                # C1 columns per task
C1S2_WIN_H, C1S2_WIN_W = K + 1, C1S2_TILE_W + K - 1   # its input window, 6x8
C1S2_TASKS = S2_SIZE * (S2_SIZE // C1S2_COLS)   # 98 an image
C3S4_TASKS = C3_MAPS * S4_SIZE                  # 80 an image

assert CONV_PARAMETERS_LEN == W5_AT   # C1 to S4: 2,616 floats, small enough for shared

# C3's connection lists as one int32 array: row m = (count, S2 maps..., padded with -1)
TABLE_ROW = 1 + C3_MAX_IN

IMAGES = 4           # most images one dense_partials call handles (its register tile)
DENSE_UNITS = 4      # units per thread in dense_partials (its code names 4 rows)
DENSE_SPLIT = 8      # threads sharing one unit group's inputs
assert DENSE_UNITS == 4, "dense_partials writes its 4 weight rows out by hand: change it too"


# ------------------------------------------------------------------ parameters

@device_function
def conv_views(p):
    """C1..S4's parameters, views of the flat buffer (or of its first CONV_PARAMETERS_LEN
    floats staged in shared memory): w1, b1, c2, b2, w3, b3, c4, b4."""
    return (p[W1_AT:B1_AT], p[B1_AT:C2_AT], p[C2_AT:B2_AT], p[B2_AT:W3_AT],
            p[W3_AT:B3_AT], p[B3_AT:C4_AT], p[C4_AT:B4_AT], p[B4_AT:W5_AT])


@device_function
def dense_views(p):
    """C5's and F6's parameters, views of the flat buffer: w5, b5, w6, b6."""
    return p[W5_AT:B5_AT], p[B5_AT:W6_AT], p[W6_AT:B6_AT], p[B6_AT:PARAMETERS_LEN]


# ------------------------------------------------------------- hardware intrinsics

def _unary_ptx(instruction):
    """A float32 -> float32 device function that is one PTX instruction."""
    from llvmlite import ir
    from numba.cuda import types
    from numba.cuda.extending import intrinsic
    from numba.cuda.typing import signature

    @intrinsic
    def op(typingctx, x):
        if x != types.float32:
            return None

        def codegen(context, builder, sig, args):
            fnty = ir.FunctionType(ir.FloatType(), [ir.FloatType()])
            return builder.call(ir.InlineAsm(fnty, instruction + " $0, $1;", "=f,f"), args)
        return signature(types.float32, types.float32), codegen
    return op


if config.ENABLE_CUDASIM:
    from numba.cuda.simulator.kernelapi import FakeCUDALocal

    class registers:  # noqa: N801 -- stands in for numba.cuda: registers.local.array
        local = FakeCUDALocal()

    def ex2(x):
        return float32(2.0 ** min(float(x), 127.0))   # (math.exp2: Python 3.11 on)

    def rcp(x):
        return float32(1.0 / float(x)) if x != 0 else float32(math.inf)
else:
    registers = cuda   # the pieces' register tiles: registers.local.array(shape, float32)
    ex2 = _unary_ptx("ex2.approx.ftz.f32")   # 2^x, 2 ulp (PTX ISA)
    rcp = _unary_ptx("rcp.approx.ftz.f32")   # 1/x, 1 ulp


# ------------------------------------------------------------------------ squash

SQUASH_POLY_BELOW = float32(1.0)  # |a| below: the polynomial; above: the exp form
_Q0 = float32(SQUASH_A * SQUASH_S)
# P(z) fitted for relative error on |a| < 1 (bench/results/2026-12-02-squash-accuracy/)
_Q1, _Q2, _Q3, _Q4 = (float32(-0.16946355), float32(0.030048281), float32(-0.005167642),
                      float32(0.0006470556))
_EXP_SCALE = float32(2.0 * SQUASH_S / math.log(2.0))
_A = float32(SQUASH_A)
_MINUS_2A = float32(-2.0 * SQUASH_A)


@device_function
def squash(a):
    """f(a) = A tanh(S a), branch-free and cheaper than libdevice's tanhf (its cost and
    accuracy: docs/kernels.md): A S a + a z P(z), z = a^2, for |a| < 1, else copysign(A -
    2A / (1 + 2^(|a| 2S log2 e)), a) with the hardware's ex2.approx and rcp.approx (exp2
    and a division in the simulator)."""
    z = a * a
    p = ((_Q4 * z + _Q3) * z + _Q2) * z + _Q1
    small = (a * z) * p + _Q0 * a
    big = math.copysign(_MINUS_2A * rcp(float32(1.0) + ex2(abs(a) * _EXP_SCALE)) + _A, a)
    return small if abs(a) < SQUASH_POLY_BELOW else big


# -------------------------------------------------------------------- C1 and S2

@device_function
def c1s2_forward(s2, c1, x, w1, b1, c2, b2, task, keep):
    """S2 pixels (i, 2j) and (i, 2j + 1) of all 6 maps of one image, task = 7 i + j.

    s2 (6*14*14,) out; c1 (6*28*28,) out, written only if keep; x (32*32,) the input;
    w1 (6*25,) C1's weights, b1 (6,) its biases; c2, b2 (6,) S2's coefficients and biases.
    The 6x8 input window under the task's 2x4 C1 pixels is loaded once; each weight then
    feeds 8 FMAs."""
    i = uint32(task) // uint32(S2_SIZE // C1S2_COLS)
    j = uint32(task) % uint32(S2_SIZE // C1S2_COLS)
    y0 = uint32(2) * i                      # first C1 row (and input row)
    x0 = uint32(2 * C1S2_COLS) * j          # first C1 column (and input column)
    win = registers.local.array((C1S2_WIN_H, C1S2_WIN_W), float32)
    for r in range(uint32(C1S2_WIN_H)):
        for c in range(uint32(C1S2_WIN_W)):
            win[r, c] = x[(y0 + r) * uint32(IN_SIZE) + x0 + c]
    acc = registers.local.array((2, C1S2_TILE_W), float32)
    for m in range(uint32(C1_MAPS)):
        bias = b1[m]
        for p in range(2):
            for q in range(C1S2_TILE_W):
                acc[p, q] = bias
        for u in range(uint32(K)):
            for v in range(uint32(K)):
                w = w1[m * uint32(K * K) + u * uint32(K) + v]
                for p in range(2):
                    for q in range(C1S2_TILE_W):
                        acc[p, q] += w * win[p + u, q + v]
        for p in range(uint32(2)):
            for q in range(uint32(C1S2_TILE_W)):
                acc[p, q] = squash(acc[p, q])
                if keep:
                    c1[(m * uint32(C1_SIZE) + y0 + p) * uint32(C1_SIZE) + x0 + q] = acc[p, q]
        for q in range(uint32(C1S2_COLS)):
            block = (acc[0, 2 * q] + acc[0, 2 * q + 1]) + (acc[1, 2 * q] + acc[1, 2 * q + 1])
            at = (m * uint32(S2_SIZE) + i) * uint32(S2_SIZE) + uint32(C1S2_COLS) * j + q
            s2[at] = squash(c2[m] * block + b2[m])


# -------------------------------------------------------------------- C3 and S4

@device_function
def c3s4_forward(s4, c3, s2, w3, b3, c4, b4, table, task, keep):
    """S4 row r of C3 map m for one image, task = 5 m + r.

    s4 (16*5*5,) out; c3 (16*10*10,) out, written only if keep; s2 (6*14*14,) the input;
    w3 (16*6*25,) C3's weights (the (16,6,5,5) array flattened), b3 (16,); c4, b4 (16,);
    table (16*7,) int32: the S2 maps each C3 map reads (c3_table()). The task's 2x10 C3
    pixels stay in registers; per S2 map read, 25 weights and 10 rows of 14 inputs (the
    inner rows twice) feed 500 FMAs."""
    m = uint32(task) // uint32(S4_SIZE)
    r = uint32(task) % uint32(S4_SIZE)
    acc = registers.local.array((2, C3_SIZE), float32)
    bias = b3[m]
    for p in range(2):
        for q in range(C3_SIZE):
            acc[p, q] = bias
    top = registers.local.array(S2_SIZE, float32)
    bottom = registers.local.array(S2_SIZE, float32)
    row0 = m * uint32(TABLE_ROW)
    for jj in range(uint32(table[row0])):
        c = uint32(table[row0 + uint32(1) + jj])
        w_at = (m * uint32(C1_MAPS) + c) * uint32(K * K)
        x_at = (c * uint32(S2_SIZE) + uint32(2) * r) * uint32(S2_SIZE)
        for u in range(uint32(K)):          # C3 rows 2r, 2r + 1 read S2 rows 2r + u, 2r + u + 1
            at = x_at + u * uint32(S2_SIZE)
            for k in range(uint32(S2_SIZE)):
                top[k] = s2[at + k]
                bottom[k] = s2[at + uint32(S2_SIZE) + k]
            for v in range(uint32(K)):
                wv = w3[w_at + u * uint32(K) + v]
                for q in range(C3_SIZE):
                    acc[0, q] += wv * top[q + v]
                    acc[1, q] += wv * bottom[q + v]
    for p in range(uint32(2)):
        for q in range(uint32(C3_SIZE)):
            acc[p, q] = squash(acc[p, q])
            if keep:
                c3[(m * uint32(C3_SIZE) + uint32(2) * r + p) * uint32(C3_SIZE) + q] = acc[p, q]
    for q in range(uint32(S4_SIZE)):
        block = (acc[0, 2 * q] + acc[0, 2 * q + 1]) + (acc[1, 2 * q] + acc[1, 2 * q + 1])
        s4[(m * uint32(S4_SIZE) + r) * uint32(S4_SIZE) + q] = squash(c4[m] * block + b4[m])


# ---------------------------------------------------------- C5 and F6 (full connection)

@device_function
def dense_partials(part, x, x_stride, w, n_in, n_out, t):
    """Thread t's partial sums of a full connection out = f(w x + b) over IMAGES images.

    part (DENSE_SPLIT * IMAGES * n_out,) out: part[(s * IMAGES + g) * n_out + o];
    x: image g's inputs at x[g * x_stride + k], k < n_in (x_stride = 0 reads one image
    IMAGES times); w (n_out * n_in,) row-major. Thread t < DENSE_SPLIT * ceil(n_out /
    DENSE_UNITS) takes the unit group t // DENSE_SPLIT (units o = group + n_groups * j,
    j < DENSE_UNITS) and the inputs k = s, s + DENSE_SPLIT, ... (s = t % DENSE_SPLIT):
    each weight it loads feeds IMAGES FMAs, each input DENSE_UNITS; the DENSE_SPLIT
    threads of a group read consecutive weights (one 32-byte sector)."""
    n_groups = (uint32(n_out) + uint32(DENSE_UNITS - 1)) // uint32(DENSE_UNITS)
    group = uint32(t) // uint32(DENSE_SPLIT)
    s = uint32(t) % uint32(DENSE_SPLIT)
    # the group's DENSE_UNITS = 4 weight rows (row 0 stands in for units past n_out)
    o0, o1 = group, group + n_groups
    o2, o3 = group + uint32(2) * n_groups, group + uint32(3) * n_groups
    w0 = w[(o0 if o0 < uint32(n_out) else uint32(0)) * uint32(n_in):]
    w1 = w[(o1 if o1 < uint32(n_out) else uint32(0)) * uint32(n_in):]
    w2 = w[(o2 if o2 < uint32(n_out) else uint32(0)) * uint32(n_in):]
    w3 = w[(o3 if o3 < uint32(n_out) else uint32(0)) * uint32(n_in):]
    acc = registers.local.array((DENSE_UNITS, IMAGES), float32)
    xs = registers.local.array(IMAGES, float32)
    for j in range(DENSE_UNITS):
        for g in range(IMAGES):
            acc[j, g] = float32(0.0)
    k = s
    while k < uint32(n_in):
        for g in range(uint32(IMAGES)):
            xs[g] = x[g * uint32(x_stride) + k]
        a, b, c, d = w0[k], w1[k], w2[k], w3[k]
        for g in range(IMAGES):
            acc[0, g] += a * xs[g]
            acc[1, g] += b * xs[g]
            acc[2, g] += c * xs[g]
            acc[3, g] += d * xs[g]
        k += uint32(DENSE_SPLIT)
    for j in range(uint32(DENSE_UNITS)):
        o = group + n_groups * j
        if o < uint32(n_out):
            for g in range(uint32(IMAGES)):
                part[(s * uint32(IMAGES) + g) * uint32(n_out) + o] = acc[j, g]


@device_function
def dense_finish(out, out_stride, part, b, n_out, g, o):
    """Unit o of image g: out[g * out_stride + o] = f(b[o] + the DENSE_SPLIT partial sums
    of dense_partials, added in a fixed order)."""
    total = b[o]
    for s in range(uint32(DENSE_SPLIT)):
        total += part[(s * uint32(IMAGES) + uint32(g)) * uint32(n_out) + uint32(o)]
    out[uint32(g) * uint32(out_stride) + uint32(o)] = squash(total)


# ------------------------------------------------------------------ RBF and argmin

@device_function
def rbf_penalty(x6, centers, i):
    """sum_j (x6[j] - centers[i, j])^2 of one image, x6 (84,), centers (10*84,)."""
    acc = float32(0.0)
    base = uint32(i) * uint32(F6_UNITS)
    for j in range(uint32(F6_UNITS)):
        d = x6[j] - centers[base + j]
        acc += d * d
    return acc


@device_function
def argmin10(y):
    """The first index of the smallest of y[0..9] (NumPy's argmin for finite y)."""
    best = uint32(0)
    low = y[0]
    for i in range(1, N_CLASSES):
        if y[i] < low:
            low = y[i]
            best = uint32(i)
    return best


def c3_table(table):
    """The (16*7,) int32 device array that c3s4_forward reads, from a C3 connection table
    (6 S2 maps, 16 C3 maps) bool (kernels.architecture.C3_TABLE): row m = (number of S2
    maps C3 map m reads, those maps, -1 padding)."""
    table = np.asarray(table)
    if table.shape != (C1_MAPS, C3_MAPS) or table.dtype != np.bool_:
        raise ValueError(f"c3_table: the table is {table.dtype} {table.shape}, expected "
                         f"bool ({C1_MAPS}, {C3_MAPS})")
    counts = table.sum(axis=0)
    if counts.min() < 1 or counts.max() > C3_MAX_IN:
        raise ValueError(f"c3_table: every C3 map must read 1 to {C3_MAX_IN} S2 maps, "
                         f"not {counts.min()} to {counts.max()}")
    rows = np.full((C3_MAPS, TABLE_ROW), -1, np.int32)
    for m in range(C3_MAPS):
        maps = np.flatnonzero(table[:, m])
        rows[m, 0], rows[m, 1:1 + len(maps)] = len(maps), maps
    return cuda.to_device(rows.reshape(-1))
