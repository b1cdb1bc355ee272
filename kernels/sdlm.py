"""The paper's training loop fused into one kernel: per-pattern stochastic diagonal
Levenberg-Marquardt steps of the whole of LeNet-5, one pattern after another.

    sdlm_steps(params, hess, scratch, stats, images, labels, order, start, count,
               eta, mu, kind, j, table)

For each of the `count` patterns n = order[start], ..., order[start + count - 1], in
that order, it does exactly what the layer-by-layer loop of lenet/train.py does with a
batch of one: the forward pass, the loss (kind "mse", paper eq. 8, or "map", eq. 9 with
constant j), the gradient of every parameter, and the update

    param -= eta / (mu + h) * gradient          (h: the held Gauss-Newton diagonal)

so each pattern sees the parameters its predecessor left. stats (2,) float64 gains the
patterns' losses (stats[0]) and misclassifications (stats[1]). The loss and dE/dy come
from kernels.loss.pattern_loss, as in the batched loss kernel; a label outside 0..9
(which the launcher cannot see without a copy) makes them NaN, and so the pass's loss
and every parameter it updates after that pattern.

Why one kernel: per-pattern updates are sequential by nature, and the layer-by-layer
loop launches about 40 small kernels per pattern. Each launch costs more than its work,
so that loop ran 294 patterns per second on an H100 (bench/results/2026-11-22-h100,
train step at batch 1), slower than NumPy on one CPU core; twenty passes would take
over an hour. Here one block of BLOCK threads runs the patterns and nothing waits for
the host between them. Within a pattern the threads split each layer's outputs, and
parameters are updated as soon as the layer below no longer needs them:

    forward   C1 | S2 | C3 | S4 | C5 | F6 | RBF | loss, dE/dy          (| = syncthreads)
    backward  F6 delta | C5 delta | F6 update + S4 delta | C5 update + C3 delta
              | S4 update + S2 delta | C3 update + C1 delta | S2 and C1 updates

("delta": dE/da at a layer's pre-activation a.) syncthreads also makes each phase's
global-memory writes visible to the whole block, which is all the ordering a single
block needs. Parameters and activations stay in global memory (L1/L2-resident: the
parameters are 240 KB, one pattern's activations 37 KB).

Arrays (float32, C-contiguous, on the device):
    params, hess   12 arrays each, in lenet.architecture.PARAMETER_SHAPES order:
                   C1.weight (6,1,5,5), C1.bias, S2.coef, S2.bias, C3.weight (16,6,5,5),
                   C3.bias, S4.coef, S4.bias, C5.weight (120,16,5,5), C5.bias,
                   F6.weight (84,120), F6.bias; params are updated in place
    scratch        a Scratch (activations and deltas of one pattern), make_scratch()
    images (N,1,32,32), labels (N,) int32, order (P,) int32, centers via scratch

One version. CPU reference: lenet.train.Trainer with recipe "paper" on the CPU model
(kernels/reference.py, batch size 1). Test: pytest -q tests/test_gpu_model.py -k fused
"""

import numpy as np
from numba import cuda, float32, float64, int32, int64, void

from kernels.common import check_device_array, device_function, kernel, squash, through_squash
from kernels.loss import KINDS, N_CLASSES, pattern_loss

BLOCK = 256  # threads of the one block
K = 5
KK = K * K

# layer sizes of LeNet-5
C1_MAPS, C1_SIZE = 6, 28
S2_SIZE = 14
C3_MAPS, C3_SIZE = 16, 10
S4_SIZE = 5
C5_UNITS = 120
F6_UNITS = 84

PARAM_SHAPES = {  # the kernel's argument order
    "C1.weight": (C1_MAPS, 1, K, K), "C1.bias": (C1_MAPS,),
    "S2.coef": (C1_MAPS,), "S2.bias": (C1_MAPS,),
    "C3.weight": (C3_MAPS, C1_MAPS, K, K), "C3.bias": (C3_MAPS,),
    "S4.coef": (C3_MAPS,), "S4.bias": (C3_MAPS,),
    "C5.weight": (C5_UNITS, C3_MAPS, K, K), "C5.bias": (C5_UNITS,),
    "F6.weight": (F6_UNITS, C5_UNITS), "F6.bias": (F6_UNITS,),
}

SCRATCH_SHAPES = {  # name: shape; a* outputs of each layer, d* deltas, dy dE/dy
    "a1": (C1_MAPS, C1_SIZE, C1_SIZE), "a2": (C1_MAPS, S2_SIZE, S2_SIZE),
    "a3": (C3_MAPS, C3_SIZE, C3_SIZE), "a4": (C3_MAPS, S4_SIZE, S4_SIZE),
    "a5": (C5_UNITS,), "a6": (F6_UNITS,), "y": (N_CLASSES,), "dy": (N_CLASSES,),
    "hy": (N_CLASSES,),  # d2E/dy2, which kernels.loss.pattern_loss writes; unused here
    "d1": (C1_MAPS, C1_SIZE, C1_SIZE), "d2": (C1_MAPS, S2_SIZE, S2_SIZE),
    "d3": (C3_MAPS, C3_SIZE, C3_SIZE), "d4": (C3_MAPS, S4_SIZE, S4_SIZE),
    "d5": (C5_UNITS,), "d6": (F6_UNITS,),
}


def make_scratch(centers):
    """Device buffers for one pattern's activations and deltas, plus the RBF centers
    (10,84), as a dict the launcher takes."""
    scratch = {name: cuda.device_array(shape, np.float32)
               for name, shape in SCRATCH_SHAPES.items()}
    scratch["centers"] = centers
    return scratch


# ------------------------------------------- subsampling (S2, S4) for one image

@device_function
def pool_sum(x, m, i, j):
    """The sum of x[m]'s 2x2 block (i, j): kernels.subsample.block_sum for one image."""
    return (x[m, 2 * i, 2 * j] + x[m, 2 * i, 2 * j + 1]
            + x[m, 2 * i + 1, 2 * j] + x[m, 2 * i + 1, 2 * j + 1])


@device_function
def subsample_forward_at(out, x, coef, bias, k, size):
    """Output pixel k of out (maps, size, size) = f(coef * pool_sum(x) + bias)."""
    m, r = k // (size * size), k % (size * size)
    i, j = r // size, r % size
    out[m, i, j] = squash(coef[m] * pool_sum(x, m, i, j) + bias[m])


@device_function
def subsample_delta_at(d_x, d_out, x, coef, k, size):
    """Delta at input pixel k of a subsampling layer whose output is (maps, size, size):
    d_out spread over the 2x2 block times coef, through the squash that made x."""
    w = 2 * size
    m, r = k // (w * w), k % (w * w)
    yy, xx = r // w, r % w
    d_x[m, yy, xx] = through_squash(d_out[m, yy // 2, xx // 2] * coef[m], x[m, yy, xx], 1)


@device_function
def subsample_step(coef, bias, h_coef, h_bias, x, d, k, n_maps, size, eta, mu):
    """The SDLM step of one subsampling parameter: map k's coefficient for k < n_maps,
    map k - n_maps's bias otherwise. x is the layer's input (n_maps, 2 size, 2 size),
    d the delta at its output (n_maps, size, size)."""
    m = k % n_maps
    g = float32(0.0)
    for r in range(size * size):
        i, j = r // size, r % size
        g += d[m, i, j] * (pool_sum(x, m, i, j) if k < n_maps else float32(1.0))
    if k < n_maps:
        coef[m] -= eta / (mu + h_coef[m]) * g
    else:
        bias[m] -= eta / (mu + h_bias[m]) * g


# ------------------------------------------------------------------ the kernel

# The kernel's arguments: params and hess (PARAM_SHAPES order), scratch (SCRATCH_SHAPES
# order), centers, stats, images, labels, order, start, count, eta, mu, kind, j, and the
# C3 table's index lists; arrays C-contiguous
F = {1: float32[::1], 2: float32[:, ::1], 3: float32[:, :, ::1], 4: float32[:, :, :, ::1]}
_PARAMS = [F[len(shape)] for shape in PARAM_SHAPES.values()]
SIGNATURE = void(*_PARAMS, *_PARAMS, *(F[len(shape)] for shape in SCRATCH_SHAPES.values()),
                 float32[:, ::1], float64[::1], float32[:, :, :, ::1], int32[::1], int32[::1],
                 int64, int64, float32, float32, int64, float32,
                 int32[:, ::1], int32[::1], int32[:, ::1], int32[::1])


@kernel(SIGNATURE, allow={"float64": "stats (2,) float64: the pass's running sums of the loss "
                          "and of the errors, added to once a pattern by one thread"})
def sdlm_steps_kernel(c1w, c1b, s2c, s2b, c3w, c3b, s4c, s4b, c5w, c5b, f6w, f6b,
                      h1w, h1b, h2c, h2b, h3w, h3b, h4c, h4b, h5w, h5b, h6w, h6b,
                      a1, a2, a3, a4, a5, a6, y, dy, hy, d1, d2, d3, d4, d5, d6, centers,
                      stats, images, labels, order, start, count, eta, mu, kind, j,
                      in_maps, in_counts, out_maps, out_counts):
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for p in range(start, start + count):
        n = order[p]

        # ---------------------------------------------------------- forward
        for i in range(t, C1_MAPS * C1_SIZE * C1_SIZE, nt):
            m, r = i // (C1_SIZE * C1_SIZE), i % (C1_SIZE * C1_SIZE)
            yy, xx = r // C1_SIZE, r % C1_SIZE
            acc = c1b[m]
            for u in range(K):
                for v in range(K):
                    acc += c1w[m, 0, u, v] * images[n, 0, yy + u, xx + v]
            a1[m, yy, xx] = squash(acc)
        cuda.syncthreads()
        for k in range(t, C1_MAPS * S2_SIZE * S2_SIZE, nt):
            subsample_forward_at(a2, a1, s2c, s2b, k, S2_SIZE)
        cuda.syncthreads()
        for i in range(t, C3_MAPS * C3_SIZE * C3_SIZE, nt):
            m, r = i // (C3_SIZE * C3_SIZE), i % (C3_SIZE * C3_SIZE)
            yy, xx = r // C3_SIZE, r % C3_SIZE
            acc = c3b[m]
            for jj in range(in_counts[m]):
                c = in_maps[m, jj]
                for u in range(K):
                    for v in range(K):
                        acc += c3w[m, c, u, v] * a2[c, yy + u, xx + v]
            a3[m, yy, xx] = squash(acc)
        cuda.syncthreads()
        for k in range(t, C3_MAPS * S4_SIZE * S4_SIZE, nt):
            subsample_forward_at(a4, a3, s4c, s4b, k, S4_SIZE)
        cuda.syncthreads()
        for m in range(t, C5_UNITS, nt):
            acc = c5b[m]
            for c in range(C3_MAPS):
                for u in range(K):
                    for v in range(K):
                        acc += c5w[m, c, u, v] * a4[c, u, v]
            a5[m] = squash(acc)
        cuda.syncthreads()
        for o in range(t, F6_UNITS, nt):
            acc = f6b[o]
            for i in range(C5_UNITS):
                acc += f6w[o, i] * a5[i]
            a6[o] = squash(acc)
        cuda.syncthreads()
        for k in range(t, N_CLASSES, nt):
            acc = float32(0.0)
            for i in range(F6_UNITS):
                diff = a6[i] - centers[k, i]
                acc += diff * diff
            y[k] = acc
        cuda.syncthreads()

        # ------------------------------------------ loss and dE/dy (one thread)
        if t == 0:
            label = labels[n]
            best = 0
            for k in range(1, N_CLASSES):
                if y[k] < y[best]:
                    best = k
            loss = pattern_loss(y, label, kind, j, float32(1.0), dy, hy)
            stats[0] += loss
            if best != label:
                stats[1] += 1.0
        cuda.syncthreads()

        # --------------------------------------------------------- backward
        for o in range(t, F6_UNITS, nt):  # F6 delta: through the RBF and the squash
            g = float32(0.0)
            for k in range(N_CLASSES):
                g += dy[k] * float32(2.0) * (a6[o] - centers[k, o])
            d6[o] = through_squash(g, a6[o], 1)
        cuda.syncthreads()
        for i in range(t, C5_UNITS, nt):  # C5 delta (reads F6's weights before their update)
            g = float32(0.0)
            for o in range(F6_UNITS):
                g += d6[o] * f6w[o, i]
            d5[i] = through_squash(g, a5[i], 1)
        cuda.syncthreads()
        for i in range(t, F6_UNITS * (C5_UNITS + 1), nt):  # F6 update
            o, q = i // (C5_UNITS + 1), i % (C5_UNITS + 1)
            if q < C5_UNITS:
                f6w[o, q] -= eta / (mu + h6w[o, q]) * (d6[o] * a5[q])
            else:
                f6b[o] -= eta / (mu + h6b[o]) * d6[o]
        for i in range(t, C3_MAPS * S4_SIZE * S4_SIZE, nt):  # S4 delta
            c, r = i // (S4_SIZE * S4_SIZE), i % (S4_SIZE * S4_SIZE)
            u, v = r // S4_SIZE, r % S4_SIZE
            g = float32(0.0)
            for m in range(C5_UNITS):
                g += d5[m] * c5w[m, c, u, v]
            d4[c, u, v] = through_squash(g, a4[c, u, v], 1)
        cuda.syncthreads()
        for i in range(t, C5_UNITS * (C3_MAPS * KK + 1), nt):  # C5 update
            m, q = i // (C3_MAPS * KK + 1), i % (C3_MAPS * KK + 1)
            if q < C3_MAPS * KK:
                c, u, v = q // KK, (q // K) % K, q % K
                c5w[m, c, u, v] -= eta / (mu + h5w[m, c, u, v]) * (d5[m] * a4[c, u, v])
            else:
                c5b[m] -= eta / (mu + h5b[m]) * d5[m]
        for k in range(t, C3_MAPS * C3_SIZE * C3_SIZE, nt):  # C3 delta, through S4
            subsample_delta_at(d3, d4, a3, s4c, k, S4_SIZE)
        cuda.syncthreads()
        for k in range(t, 2 * C3_MAPS, nt):  # S4 update
            subsample_step(s4c, s4b, h4c, h4b, a3, d4, k, C3_MAPS, S4_SIZE, eta, mu)
        for i in range(t, C1_MAPS * S2_SIZE * S2_SIZE, nt):  # S2 delta, through C3's table
            c, r = i // (S2_SIZE * S2_SIZE), i % (S2_SIZE * S2_SIZE)
            yy, xx = r // S2_SIZE, r % S2_SIZE
            g = float32(0.0)
            for jj in range(out_counts[c]):
                m = out_maps[c, jj]
                for u in range(K):
                    for v in range(K):
                        oy, ox = yy - u, xx - v
                        if oy >= 0 and oy < C3_SIZE and ox >= 0 and ox < C3_SIZE:
                            g += d3[m, oy, ox] * c3w[m, c, u, v]
            d2[c, yy, xx] = through_squash(g, a2[c, yy, xx], 1)
        cuda.syncthreads()
        for i in range(t, C3_MAPS * (6 * KK + 1), nt):  # C3 update, connected pairs only
            m, q = i // (6 * KK + 1), i % (6 * KK + 1)
            if q < 6 * KK:
                jj = q // KK
                if jj < in_counts[m]:
                    c, u, v = in_maps[m, jj], (q // K) % K, q % K
                    g = float32(0.0)
                    for r in range(C3_SIZE * C3_SIZE):
                        yy, xx = r // C3_SIZE, r % C3_SIZE
                        g += d3[m, yy, xx] * a2[c, yy + u, xx + v]
                    c3w[m, c, u, v] -= eta / (mu + h3w[m, c, u, v]) * g
            else:
                g = float32(0.0)
                for r in range(C3_SIZE * C3_SIZE):
                    g += d3[m, r // C3_SIZE, r % C3_SIZE]
                c3b[m] -= eta / (mu + h3b[m]) * g
        for k in range(t, C1_MAPS * C1_SIZE * C1_SIZE, nt):  # C1 delta, through S2
            subsample_delta_at(d1, d2, a1, s2c, k, S2_SIZE)
        cuda.syncthreads()
        for k in range(t, 2 * C1_MAPS, nt):  # S2 update
            subsample_step(s2c, s2b, h2c, h2b, a1, d2, k, C1_MAPS, S2_SIZE, eta, mu)
        for i in range(t, C1_MAPS * (KK + 1), nt):  # C1 update
            m, q = i // (KK + 1), i % (KK + 1)
            g = float32(0.0)
            for r in range(C1_SIZE * C1_SIZE):
                yy, xx = r // C1_SIZE, r % C1_SIZE
                if q < KK:
                    g += d1[m, yy, xx] * images[n, 0, yy + q // K, xx + q % K]
                else:
                    g += d1[m, yy, xx]
            if q < KK:
                c1w[m, 0, q // K, q % K] -= eta / (mu + h1w[m, 0, q // K, q % K]) * g
            else:
                c1b[m] -= eta / (mu + h1b[m]) * g
        cuda.syncthreads()  # the next pattern's forward reads the updated parameters


def sdlm_steps(params, hess, scratch, stats, images, labels, order, start, count, eta, mu,
               kind, j, table):
    """Per-pattern SDLM steps for patterns order[start:start + count] (see the module
    docstring). params and hess: dicts keyed like PARAM_SHAPES; table: the C3
    kernels.conv.ConvTable; stats (2,) float64."""
    if kind not in KINDS:
        raise ValueError(f"sdlm_steps: kind {kind!r}, expected one of {sorted(KINDS)}")
    n_img = images.shape[0] if len(getattr(images, "shape", ())) == 4 else None
    check_device_array("sdlm_steps", "images", images, (n_img, 1, 32, 32))
    check_device_array("sdlm_steps", "labels", labels, (n_img,), np.int32)
    check_device_array("sdlm_steps", "order", order, (order.shape[0],), np.int32)
    check_device_array("sdlm_steps", "stats", stats, (2,), np.float64)
    if not 0 <= start <= start + count <= order.shape[0]:
        raise ValueError(f"sdlm_steps: patterns {start}..{start + count} outside the "
                         f"order of {order.shape[0]}")
    for name, shape in PARAM_SHAPES.items():
        check_device_array("sdlm_steps", name, params[name], shape)
        check_device_array("sdlm_steps", f"h {name}", hess[name], shape)
    for name, shape in SCRATCH_SHAPES.items():
        check_device_array("sdlm_steps", f"scratch {name}", scratch[name], shape)
    check_device_array("sdlm_steps", "centers", scratch["centers"], (N_CLASSES, F6_UNITS))
    if (table.c_in, table.n_maps) != (C1_MAPS, C3_MAPS):
        raise ValueError(f"sdlm_steps: the C3 table links {table.c_in} maps to "
                         f"{table.n_maps}, expected {C1_MAPS} to {C3_MAPS}")
    if count == 0:
        return
    sdlm_steps_kernel[1, BLOCK](
        *(params[name] for name in PARAM_SHAPES), *(hess[name] for name in PARAM_SHAPES),
        *(scratch[name] for name in SCRATCH_SHAPES), scratch["centers"], stats, images,
        labels, order, start, count, np.float32(eta), np.float32(mu), KINDS[kind],
        np.float32(j), table.in_maps, table.in_counts, table.out_maps, table.out_counts)
