"""The paper's training loop in one kernel: per-pattern stochastic diagonal
Levenberg-Marquardt steps of the whole of LeNet-5, one pattern after another, for one
run or for many independent runs at once (one block each: a sweep). For each pattern it
does what a mini-batch step of kernels/train_step.py does with a batch of one, built from
the same pieces (kernels/forward_pieces.py, kernels/backward_pieces.py), then steps

    param -= rate * gradient        rate = eta / (mu + h), h the held Gauss-Newton diagonal

so each pattern sees the parameters its predecessor left. sdlm_rates computes the rates
once per pass. The phase order and the memory layout: docs/kernels.md.

CPU twin: kernels/cpu.py; reference: kernels.reference.sdlm_steps_ref.
Test: pytest -q tests/test_sdlm.py (end to end: tests/test_gpu_model.py, test_sweep.py)
"""

import numpy as np
from numba import config, cuda, float32, float64, int32, int64, uint32, void

from .architecture import offsets
from .backward_pieces import (
    C1_GRAD_TASKS,
    C2_DELTA_TASKS,
    C3_GRAD_TASKS,
    C3_PAIRS,
    GRAD_SUMS,
    c1_grad_sums,
    c1_map_sum,
    c3_delta,
    c3_first_pair,
    c3_grad_sums,
    c3_pair,
    c3_pair_sum,
    check_constants,
    dense_delta_step,
    pattern_loss,
    rbf_delta,
    subsample_delta,
    subsample_grads,
)
from .common import cdiv, check_device_arrays, device_function, kernel
from .forward import C1_LEN, C3_LEN, s2_to_penalties
from .forward_pieces import (
    B1_AT,
    B2_AT,
    B3_AT,
    B4_AT,
    B5_AT,
    B6_AT,
    C1_MAPS,
    C1S2_TASKS,
    C2_AT,
    C3_MAPS,
    C4_AT,
    C5_INPUTS,
    C5_UNITS,
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
    TABLE_ROW,
    W1_AT,
    W3_AT,
    K,
    argmin10,
    c1s2_forward,
    conv_views,
    dense_views,
)

THREADS = 512                       # threads of a run's block
LAUNCH_BOUNDS = {"launch_bounds": (THREADS, 1)}
RATES_THREADS = 256
# blocks of the elementwise kernels: one thread per parameter on a GPU; a few blocks in
# the simulator, which runs a Python thread per CUDA thread
RATES_BLOCKS = 4 if config.ENABLE_CUDASIM else cdiv(PARAMETERS_LEN, RATES_THREADS)

# shared memory, one pattern: name -> (offset, length) in floats
_SHARED = (("x", IN_LEN), ("a2", S2_LEN), ("d2", S2_LEN), ("a3", C3_LEN), ("d3", C3_LEN),
           ("a4", S4_LEN), ("d4", S4_LEN), ("a5", C5_UNITS), ("d5", C5_UNITS),
           ("a6", F6_UNITS), ("d6", F6_UNITS), ("y", N_CLASSES), ("dy", N_CLASSES),
           ("hy", N_CLASSES),
           ("part", max(DENSE_SPLIT * IMAGES * C5_UNITS, C3_GRAD_TASKS * GRAD_SUMS,
                        C1_GRAD_TASKS * GRAD_SUMS)))
_AT, SHARED_LEN = offsets(_SHARED)  # SHARED_LEN: 11,654 floats, 46.6 KB
X_AT, A2_AT, D2_AT, A3_AT, D3_AT = (_AT[k] for k in ("x", "a2", "d2", "a3", "d3"))
A4_AT, D4_AT, A5_AT, D5_AT, A6_AT, D6_AT = (_AT[k] for k in ("a4", "d4", "a5", "d5", "a6", "d6"))
Y_AT, DY_AT, HY_AT, PART_AT = (_AT[k] for k in ("y", "dy", "hy", "part"))

# a run's scratch row: C1's output and delta, then the record of the shared buffer
A1_AT, D1_AT, RECORD_AT = 0, C1_LEN, 2 * C1_LEN
SCRATCH_LEN = RECORD_AT + SHARED_LEN
SCRATCH_AT = {"a1": (A1_AT, C1_LEN), "d1": (D1_AT, C1_LEN),
              **{name: (RECORD_AT + _AT[name], n) for name, n in _SHARED if name != "part"}}

assert C5_INPUTS < THREADS and C5_UNITS <= THREADS - 128 and F6_UNITS <= 128
assert C3_GRAD_TASKS <= 128 and 128 + C2_DELTA_TASKS <= THREADS - C3_MAPS


# --------------------------------------------------------- C3's gradient and step

@device_function
def c3_step(w3, b3, r3, part, table, t):
    """Thread t's share of C3's step from c3_grad_sums' sums: the connected weights, pair
    by pair, and the biases (each map's from its first pair's bias sums); r3 the rates of
    C3's weights then biases (W3_AT..C4_AT). Weights off the table are not touched (they
    stay exact zeros)."""
    for s in range(uint32(t), uint32(C3_PAIRS * K * K + C3_MAPS), uint32(THREADS)):
        if s < uint32(C3_PAIRS * K * K):
            pair, q = s // uint32(K * K), s % uint32(K * K)
            m, jj = c3_pair(table, pair)
            c = uint32(table[m * uint32(TABLE_ROW) + uint32(1) + jj])
            k = (m * uint32(C1_MAPS) + c) * uint32(K * K) + q
            w3[k] -= r3[k] * c3_pair_sum(part, pair, q)
        else:
            m = s - uint32(C3_PAIRS * K * K)
            b3[m] -= r3[uint32(B3_AT - W3_AT) + m] * c3_pair_sum(part, c3_first_pair(table, m),
                                                                 uint32(K * K))


# ------------------------------------------------------------------ the kernel

SIGNATURE = void(float32[:, ::1], float32[:, ::1], float64[:, ::1], float32[:, ::1],
                 float32[:, :, ::1], int32[::1], int32[::1], int32[:, ::1], int64, int64,
                 int32[::1], float32[::1], int32, float32[::1], int32[::1], int32[::1])


@kernel(SIGNATURE, allow={"float64": "stats (R, 2) float64: each run's running sums of the "
                          "loss and of the errors, added to once a pattern by one thread"},
        **LAUNCH_BOUNDS)
def sdlm_kernel(params, rates, stats, scratch, images, image_set, labels, order, start,
                count, kinds, js, record, centers, table, out_table):
    # one block per run; within a pattern the threads split each phase's tasks
    sh = cuda.shared.array(SHARED_LEN, float32)
    run = uint32(cuda.blockIdx.x)
    t = uint32(cuda.threadIdx.x)
    p, rt, sc = params[run], rates[run], scratch[run]
    w1, b1, c2, b2, w3, b3, c4, b4 = conv_views(p)
    w5, b5, w6, b6 = dense_views(p)
    x, a2, d2 = sh[X_AT:A2_AT], sh[A2_AT:D2_AT], sh[D2_AT:A3_AT]
    a3, d3, a4, d4 = sh[A3_AT:D3_AT], sh[D3_AT:A4_AT], sh[A4_AT:D4_AT], sh[D4_AT:A5_AT]
    a5, d5, a6, d6 = sh[A5_AT:D5_AT], sh[D5_AT:A6_AT], sh[A6_AT:D6_AT], sh[D6_AT:Y_AT]
    y, dy, hy, part = sh[Y_AT:DY_AT], sh[DY_AT:HY_AT], sh[HY_AT:PART_AT], sh[PART_AT:]
    a1, d1 = sc[A1_AT:D1_AT], sc[D1_AT:RECORD_AT]
    data = images[image_set[run]]
    kind, j = kinds[run], js[run]
    for q in range(start, start + count):
        n = order[run, q]
        for i in range(t, uint32(IN_LEN), uint32(THREADS)):
            x[i] = data[n, i]
        cuda.syncthreads()  # the pattern's image is staged (and the last pattern's steps done)

        # ------------------------------------------------------------ forward
        if t < uint32(C1S2_TASKS):
            c1s2_forward(a2, a1, x, w1, b1, c2, b2, t, True)
        cuda.syncthreads()  # S2 is complete
        s2_to_penalties(a2, 0, a3, 0, a4, 0, a5, 0, a6, 0, y, 0, part, w3, b3, c4, b4, w5, b5,
                        w6, b6, table, centers, uint32(1), t, THREADS, True)
        if t == 0:
            label = labels[n]
            stats[run, 0] += float64(pattern_loss(y, label, kind, j, float32(1.0), dy, hy))
            if int32(argmin10(y)) != label:
                stats[run, 1] += float64(1.0)
        cuda.syncthreads()  # dE/dy is written

        # ----------------------------------------------------------- backward
        rt5, _, rt6, _ = dense_views(rt)
        if t < uint32(F6_UNITS):
            rbf_delta(d6, dy, hy, a6, centers, 1, t)
        cuda.syncthreads()  # F6's delta is complete
        if t < uint32(C5_UNITS):
            dense_delta_step(d5, d6, w6, rt6, a5, C5_UNITS, F6_UNITS, t)
        elif t >= uint32(THREADS - 128) and t - uint32(THREADS - 128) < uint32(F6_UNITS):
            o = t - uint32(THREADS - 128)
            b6[o] -= rt[B6_AT + o] * d6[o]
        cuda.syncthreads()  # C5's delta is complete; F6 has stepped
        if t < uint32(C5_INPUTS):
            dense_delta_step(d4, d5, w5, rt5, a4, C5_INPUTS, C5_UNITS, t)
        else:
            for o in range(t - uint32(C5_INPUTS), uint32(C5_UNITS), uint32(THREADS - C5_INPUTS)):
                b5[o] -= rt[B5_AT + o] * d5[o]
        cuda.syncthreads()  # S4's delta is complete; C5 has stepped
        for k in range(t, uint32(C3_LEN), uint32(THREADS)):
            subsample_delta(d3, d4, a3, c4, C3_MAPS, S4_SIZE, 1, k)
        g_coef = float32(0.0)
        g_bias = float32(0.0)
        s4_thread = t >= uint32(THREADS - C3_MAPS)    # the last 16: S4's gradients
        m = t - uint32(THREADS - C3_MAPS) if s4_thread else uint32(0)
        if s4_thread:
            g_coef, g_bias = subsample_grads(d4, 0, a3, 0, 1, S4_SIZE, 1, m)
        cuda.syncthreads()  # C3's delta is complete (S4's gradients held by their threads)
        if t < uint32(C3_GRAD_TASKS):
            c3_grad_sums(part, d3, a2, table, t, 1, False)
        elif t >= uint32(128) and t - uint32(128) < uint32(C2_DELTA_TASKS):
            c3_delta(d2, d3, w3, a2, out_table, t - uint32(128), 1)
        elif s4_thread:
            c4[m] -= rt[C4_AT + m] * g_coef
            b4[m] -= rt[B4_AT + m] * g_bias
        cuda.syncthreads()  # S2's delta and C3's gradient sums are complete; S4 has stepped
        c3_step(w3, b3, rt[W3_AT:C4_AT], part, table, t)
        for k in range(t, uint32(C1_LEN), uint32(THREADS)):
            subsample_delta(d1, d2, a1, c2, C1_MAPS, S2_SIZE, 1, k)
        s2_thread = t >= uint32(THREADS - C1_MAPS)    # the last 6: S2's gradients
        m = t - uint32(THREADS - C1_MAPS) if s2_thread else uint32(0)
        if s2_thread:
            g_coef, g_bias = subsample_grads(d2, 0, a1, 0, 1, S2_SIZE, 1, m)
        cuda.syncthreads()  # C1's delta is complete; C3 has stepped
        if t < uint32(C1_GRAD_TASKS):
            c1_grad_sums(part, d1, x, t, 1, False)
        elif s2_thread:
            c2[m] -= rt[C2_AT + m] * g_coef
            b2[m] -= rt[B2_AT + m] * g_bias
        cuda.syncthreads()  # C1's gradient sums are complete; S2 has stepped
        if t < uint32(C1_MAPS * GRAD_SUMS):
            mm, s = t // uint32(GRAD_SUMS), t % uint32(GRAD_SUMS)
            g = c1_map_sum(part, mm, s)
            if s < uint32(K * K):
                w1[mm * uint32(K * K) + s] -= rt[W1_AT + mm * uint32(K * K) + s] * g
            else:
                b1[mm] -= rt[B1_AT + mm] * g
        if record:
            cuda.syncthreads()  # every activation and delta of the pattern is final
            for i in range(t, uint32(SHARED_LEN), uint32(THREADS)):
                sc[RECORD_AT + i] = sh[i]
        cuda.syncthreads()  # C1 has stepped; the image may be overwritten


@kernel(void(float32[::1], float32[::1], float32, float32))
def sdlm_rates_kernel(rates, hess, eta, mu):
    # threads stride over the parameters k
    for k in range(uint32(cuda.grid(1)), uint32(rates.shape[0]), uint32(cuda.gridsize(1))):
        rates[k] = eta / (mu + hess[k])


# ---------------------------------------------------------------------- launchers

def sdlm_rates(rates, hess, eta, mu):
    """rates = eta / (mu + hess) (flat (PARAMETERS_LEN,) device arrays, in
    float32)."""
    check_device_arrays("sdlm_rates", rates=(rates, (PARAMETERS_LEN,)),
                        hess=(hess, (PARAMETERS_LEN,)))
    sdlm_rates_kernel[RATES_BLOCKS, RATES_THREADS](rates, hess, np.float32(eta),
                                                    np.float32(mu))


def sdlm_steps(params, rates, stats, scratch, images, image_set, labels, order, start, count,
               kinds, js, centers, table, out_table, record=False):
    """Per-pattern SDLM steps of R runs (block r: run r) for the patterns order[r, start],
    ..., order[r, start + count - 1] in turn, after checking every argument (C-contiguous
    device arrays, float32 unless said):

    params, rates (R, PARAMETERS_LEN)   flat; params updated in place
    stats (R, 2) float64                gains each run's loss sum and misclassified count
    scratch (R, SCRATCH_LEN)            C1's output and delta; with record, the last
                                        pattern's every activation and delta (SCRATCH_AT)
    images (M, N, 1024), image_set (R,) int32   run r reads images[image_set[r]]
    labels (N,) int32, order (R, P) int32, kinds (R,) int32 LOSS_KINDS codes, js (R,) (eq. 9's j)
    centers (840,), table (112,) int32 (c3_table), out_table (102,) int32 (c3_out_table)
    """
    r = params.shape[0] if len(getattr(params, "shape", ())) == 2 else None
    m, n = (images.shape[0], images.shape[1]) if len(getattr(images, "shape", ())) == 3 \
        else (None, None)
    p = order.shape[1] if len(getattr(order, "shape", ())) == 2 else None
    check_device_arrays(
        "sdlm_steps", params=(params, (r, PARAMETERS_LEN)), rates=(rates, (r, PARAMETERS_LEN)),
        stats=(stats, (r, 2), np.float64), scratch=(scratch, (r, SCRATCH_LEN)),
        images=(images, (m, n, IN_LEN)), image_set=(image_set, (r,), np.int32),
        labels=(labels, (n,), np.int32), order=(order, (r, p), np.int32),
        kinds=(kinds, (r,), np.int32), js=(js, (r,)))
    check_constants("sdlm_steps", centers, table, out_table)
    if not 0 <= start <= start + count <= p:
        raise ValueError(f"sdlm_steps: patterns {start}..{start + count} outside the order "
                         f"of {p}")
    if r and count:
        sdlm_kernel[r, THREADS](params, rates, stats, scratch, images, image_set, labels,
                                order, np.int64(start), np.int64(count), kinds, js,
                                np.int32(bool(record)), centers, table, out_table)
