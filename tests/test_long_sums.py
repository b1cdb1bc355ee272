"""Long float32 sums at the GPU's sizes, here: each parameter-gradient reduction of the
stage kernels (kernels/backward.py) and of the fused step (kernels/train_step.py),
emulated in NumPy float32 in the kernel's own order at the batch sizes the GPU tests run
(1,001 and 4,099 images; the fused step also at 60,000), against a float64 sum of the
same float32 terms, at kernels/tolerance.py's bound.

The simulator runs the kernels at 1 and 3 images only, where no sum is long: a kernel
that adds 803,404 terms in one float32 running sum passes there and fails on a GPU. The
emulations take their shapes from the kernels' constants (threads, images a group,
the grid for an H100), so a change of order there changes them here. Products are
rounded before each add; the GPU's fused multiply-add rounds once, which only helps.
"""

import numpy as np
import pytest

from lenet import LeNet5
from lenet.kernels import backward as bw
from lenet.kernels import reference as ref
from lenet.kernels import train_step as ts
from lenet.kernels.architecture import C3_TABLE, CONV_TABLES
from lenet.kernels.occupancy import HOPPER, resident_blocks
from lenet.kernels.tolerance import RELATIVE_ERROR, relative_error

F32 = np.float32
BOUND = RELATIVE_ERROR[np.dtype(F32)]
GPU_BATCHES = (1001, 4099)
H100_SMS = 132
# batch_kernel's and dense_grads_kernel's resident blocks on sm_90 at the registers and
# shared memory of the compile census (tests/test_occupancy.py checks these figures)
BATCH_RESIDENT = resident_blocks(128, ts.THREADS, 48_000, HOPPER)
DENSE_RESIDENT = resident_blocks(112, ts.THREADS, 12_288, HOPPER)


def seq(a, axis=-1):
    """A float32 running sum along `axis`, term by term in order (one thread's loop)."""
    return np.cumsum(a.astype(F32), axis=axis, dtype=F32).take(-1, axis=axis)


def tree(a):
    """The shared-memory tree over the last axis (a power of two): s[t] += s[t + half]
    for half = T/2, T/4, ..., 1."""
    a = a.astype(F32)
    half = a.shape[-1] // 2
    while half:
        a = a[..., :half] + a[..., half:2 * half]
        half //= 2
    return a[..., 0]


def strided(per_image, threads):
    """(..., threads, k): image n of the last axis goes to thread n % threads, in order;
    zero-padded (adding 0.0 is exact)."""
    n = per_image.shape[-1]
    k = -(-n // threads)
    padded = np.zeros(per_image.shape[:-1] + (k * threads,), F32)
    padded[..., :n] = per_image
    return np.swapaxes(padded.reshape(per_image.shape[:-1] + (k, threads)), -1, -2)


@pytest.fixture(scope="module")
def acts():
    """The reference network's float32 activations on 256 seeded images; batches repeat
    them (each repeat with its own deltas)."""
    params = {k: v.astype(np.float64)
              for k, v in LeNet5(device="cpu", seed=5).parameters().items()}
    x = np.random.default_rng(0).uniform(-0.1, 1.175, (256, 1, 32, 32))
    p = params
    a1 = ref.squash_ref(ref.conv_ref(x, p["C1.weight"], p["C1.bias"], CONV_TABLES["C1"]))
    a2 = ref.squash_ref(ref.subsample_ref(a1, p["S2.coef"], p["S2.bias"]))
    a3 = ref.squash_ref(ref.conv_ref(a2, p["C3.weight"], p["C3.bias"], C3_TABLE))
    a4 = ref.squash_ref(ref.subsample_ref(a3, p["S4.coef"], p["S4.bias"]))
    a5 = ref.squash_ref(ref.full_ref(a4.reshape(256, -1), p["C5.weight"].reshape(120, -1),
                                     p["C5.bias"]))
    return {k: a.astype(F32) for k, a in (("x", x), ("a1", a1), ("a2", a2), ("a3", a3),
                                          ("a4", a4), ("a5", a5))}


def batch(a, n):
    return np.resize(a, (n,) + a.shape[1:])


def deltas(shape, order, seed):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, shape) if order == 1 else rng.uniform(0, 1, shape)).astype(F32)


def subsample_terms(acts, layer, n, order, maps=None):
    """(maps, n, size^2) float32 terms d s (order 2: h s^2) of S2's or S4's coefficient
    gradient (the first `maps` maps, default all), and their float64 sums per map."""
    x = batch(acts["a1" if layer == "S2" else "a3"][:, :maps], n)
    s = (x[:, :, 0::2, 0::2] + x[:, :, 0::2, 1::2]) + (x[:, :, 1::2, 0::2] + x[:, :, 1::2, 1::2])
    s = s * s if order == 2 else s
    d = deltas(s.shape, order, seed=n + order)
    terms = (d * s).reshape(n, s.shape[1], -1).transpose(1, 0, 2)
    return terms, terms.astype(np.float64).sum(axis=(1, 2))


def dense_terms(acts, layer, n, order, units=24):
    """(n, units, in) float32 terms d x (order 2: h x^2) of the first `units` units of C5's
    or F6's weight gradient (each weight's sum is on its own: a few units tell)."""
    x = batch(acts["a4"].reshape(256, -1) if layer == "C5" else acts["a5"], n)
    x = x * x if order == 2 else x
    d = deltas((n, units), order, seed=n + order)
    return d[:, :, None] * x[:, None, :]


# ---------------------------------------------------- the stage kernels (backward.py)

def subsample_grads_kernel_order(terms):
    """bw.subsample_grads_kernel: a block per map; thread t sums images t, t + THREADS,
    ..., each image's terms first; then the block's tree."""
    per_image = seq(terms)                                     # (maps, n)
    return tree(seq(strided(per_image, bw.THREADS)))


@pytest.mark.parametrize("order", (1, 2))
@pytest.mark.parametrize("layer", ("S2", "S4"))
@pytest.mark.parametrize("n", GPU_BATCHES)
def test_subsample_grads_kernel(acts, n, layer, order):
    terms, want = subsample_terms(acts, layer, n, order)
    err = relative_error(subsample_grads_kernel_order(terms), want)
    assert err <= BOUND, f"{layer} coefficients, order {order}, {n} images: {err:.2e}"


def test_one_running_sum_a_map_would_fail(acts):
    """The emulation sees what a GPU would: the order before the mend (one thread a map,
    one running sum over every image and pixel) misses the bound at 4,099 images."""
    terms, want = subsample_terms(acts, "S2", 4099, 2)
    assert relative_error(seq(terms.reshape(terms.shape[0], -1)), want) > BOUND
    assert relative_error(subsample_grads_kernel_order(terms), want) <= BOUND


@pytest.mark.parametrize("order", (1, 2))
@pytest.mark.parametrize("layer", ("C5", "F6"))
@pytest.mark.parametrize("n", GPU_BATCHES)
def test_dense_grads_kernel(acts, n, layer, order):
    """ts.dense_grads_kernel in one split (tests/test_backward_pieces.py's harness): one
    running sum a weight over the images (an order written here, not read from the kernel:
    a change of the kernel's order needs one here; the GPU session runs the kernel itself
    at these sizes)."""
    terms = dense_terms(acts, layer, n, order)
    err = relative_error(seq(terms, axis=0), terms.astype(np.float64).sum(axis=0))
    assert err <= BOUND, f"{layer} weights, order {order}, {n} images: {err:.2e}"


@pytest.mark.parametrize("order", (1, 2))
@pytest.mark.parametrize("n", GPU_BATCHES)
def test_c1_grads_kernel(acts, n, order):
    """bw.c1_grads_kernel: a task (map, band of 4 rows, half row) sums each image's 56
    products in registers, adds them to its running sum image by image; then each weight
    adds its map's 14 tasks in order. Weight (0, 0)'s sums, every map."""
    x = batch(acts["x"].astype(F32), n)[:, 0, :28, :28]          # x[y + u, x + v], u = v = 0
    x = x * x if order == 2 else x
    d = deltas((n, 6, 28, 28), order, seed=n + order)
    terms = d * x[:, None]                                       # (n, map, 28, 28)
    bands = terms.reshape(n, 6, 7, 4, 2, 14).transpose(1, 2, 4, 0, 3, 5)
    per_image = seq(bands.reshape(6, 7, 2, n, 56))               # (map, band, half, n)
    tasks = seq(per_image).reshape(6, 14)
    err = relative_error(seq(tasks), terms.astype(np.float64).sum(axis=(0, 2, 3)))
    assert err <= BOUND, f"C1 weights, order {order}, {n} images: {err:.2e}"


# --------------------------------------------- the fused step (train_step.py), one wave

def fused_subsample_order(terms, blocks):
    """ts.batch_kernel + ts.finish_kernel: block b takes groups b, b + blocks, ... of
    IMAGES images; a group adds its images' sums (each image's first) to the block's
    shared sum; finish adds the blocks' sums in block order."""
    maps, n, _ = terms.shape
    per_image = seq(terms)                                       # (maps, n)
    groups = -(-n // ts.IMAGES)
    padded = np.zeros((maps, groups * ts.IMAGES), F32)
    padded[:, :n] = per_image
    per_group = seq(padded.reshape(maps, groups, ts.IMAGES))     # (maps, groups)
    return seq(seq(strided(per_group, blocks)))


def fused_dense_order(terms, splits):
    """ts.dense_grads_kernel + finish: split s sums its chunk of images in one running
    sum a weight; finish adds the splits' sums in order."""
    n = terms.shape[0]
    chunk = -(-n // splits)
    parts = [seq(terms[s * chunk:(s + 1) * chunk], axis=0)
             for s in range(splits) if s * chunk < n]
    return seq(np.stack(parts), axis=0)


@pytest.mark.parametrize("n", GPU_BATCHES + (60000,))
def test_fused_step_sums_on_an_h100(acts, n):
    blocks, splits = ts.persistent_grid(H100_SMS, BATCH_RESIDENT, DENSE_RESIDENT)
    blocks, splits = ts.grid(n, blocks, splits)
    for layer in ("S2", "S4"):
        for order in (1, 2):     # at 60,000 images two maps' sums (1.1 GB of C1 rows)
            terms, want = subsample_terms(acts, layer, n, order, None if n < 60000 else 2)
            err = relative_error(fused_subsample_order(terms, blocks), want)
            assert err <= BOUND, f"{layer}, order {order}, {n} images: {err:.2e}"
    if n <= 4099:      # 60,000 images' terms would take 0.5 GB a unit
        for order in (1, 2):
            terms = dense_terms(acts, "F6", n, order)
            err = relative_error(fused_dense_order(terms, splits),
                                 terms.astype(np.float64).sum(axis=0))
            assert err <= BOUND, f"F6 weights, order {order}, {n} images: {err:.2e}"
