"""The subsample, full, RBF, loss and training-helper kernels against the CPU reference.

Every launcher (and every version of it) runs on seeded random float32 inputs in the
ranges the network produces; its outputs are poisoned with NaN (ints with -1) first, so
an element a kernel forgot to write fails. The reference runs in float64 on float64
copies of the same inputs, and results are compared with the one float32 tolerance of
kernels.tolerance. Batch sizes come from conftest (1 and 3 in the simulator, up to 4099
on a GPU); layer sizes shrink in the simulator, where every thread is a Python thread.

    pytest -q tests/test_layer_kernels.py
"""

import numpy as np
import pytest
from conftest import BATCHES, SIMULATOR
from numba import cuda

from kernels import full, loss, rbf, subsample, update
from kernels import reference as ref
from kernels.tolerance import assert_close

# (C, H, W) of subsample's input: an awkward small one (3x5 output, not a multiple of
# any block), then LeNet's S2 and S4 on a GPU.
SUBSAMPLE_SHAPES = [(2, 6, 10)] + ([] if SIMULATOR else [(6, 28, 28), (16, 10, 10)])
# (I, O) of full: awkward sizes that are not multiples of the tile, then LeNet's F6.
FULL_SHAPES = [(37, 19)] + ([] if SIMULATOR else [(120, 84)])
# full's batch sizes: in the simulator also 129, three tiles of rows, so that v2's blocks
# cover several tiles of the batch and its loops over the batch take several steps (the
# GPU's large batches do that anyway)
FULL_BATCHES = BATCHES + ((2 * full.BM + 1,) if SIMULATOR else ())
# shapes of the elementwise updates (any shape; viewed flat)
PARAM_SHAPES = [(5,), (3, 1, 5, 7)] if SIMULATOR else [(84, 120), (120, 16, 5, 5)]
N_IMAGES = 9 if SIMULATOR else 10007  # the image set gather takes batches from


def rng(*seed):
    return np.random.default_rng(seed)


def activations(r, shape):
    """Squashed outputs and inputs: in about [-1.7, 1.7], never 0."""
    return r.uniform(-1.7, 1.7, shape).astype(np.float32)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def poisoned(shape, dtype=np.float32):
    """A device array that fails every check until a kernel overwrites it all."""
    fill = -1 if np.issubdtype(np.dtype(dtype), np.integer) else np.nan
    return cuda.to_device(np.full(shape, fill, dtype=dtype))


def f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def check_all(outs, refs, names):
    for out, r, name in zip(outs, refs, names, strict=True):
        assert_close(out.copy_to_host(), r, what=name)


# ---------------------------------------------------------------------- subsample

@pytest.mark.parametrize("shape", SUBSAMPLE_SHAPES)
@pytest.mark.parametrize("n", BATCHES)
def test_subsample_forward(n, shape):
    c, h, w = shape
    r = rng(1, n, c)
    x = activations(r, (n, c, h, w))
    coef, bias = r.uniform(-1, 1, (2, c)).astype(np.float32)
    out = poisoned((n, c, h // 2, w // 2))
    subsample.subsample_forward(out, dev(x), dev(coef), dev(bias))
    x64, coef64, bias64 = f64(x, coef, bias)
    assert_close(out.copy_to_host(), ref.squash_ref(ref.subsample_ref(x64, coef64, bias64)),
                 what="out")


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("shape", SUBSAMPLE_SHAPES)
@pytest.mark.parametrize("n", BATCHES)
def test_subsample_backward(n, shape, order, version):
    c, h, w = shape
    r = rng(2, n, c, order)
    x = activations(r, (n, c, h, w))
    out = activations(r, (n, c, h // 2, w // 2))
    coef = r.uniform(-1, 1, c).astype(np.float32)
    # dout: any sign; hout: a curvature, >= 0
    d = (r.uniform(-1, 1, out.shape) if order == 1 else r.uniform(0, 1, out.shape))
    d = d.astype(np.float32)
    grads = poisoned(x.shape), poisoned((c,)), poisoned((c,))
    launch = subsample.subsample_backward if order == 1 else subsample.subsample_backward2
    launch(*grads, dev(d), dev(out), dev(x), dev(coef), version=version)
    d64, out64, x64, coef64 = f64(d, out, x, coef)
    if order == 1:
        expect = ref.subsample_backward_ref(ref.squash_backward_ref(d64, out64), x64, coef64)
    else:
        expect = ref.subsample_backward2_ref(ref.squash_backward2_ref(d64, out64), x64, coef64)
    check_all(grads, expect, ("dx", "dcoef", "dbias") if order == 1 else ("hx", "hcoef", "hbias"))


@pytest.mark.parametrize("blocks_per_map", [1, 2])
@pytest.mark.parametrize("version", [1, 2])
def test_subsample_backward_loops(version, blocks_per_map, monkeypatch):
    """More output pixels per map (3 x 14 x 14 = 588) than a block has threads, so each
    thread sums several; v2 with at most 1 or 2 blocks per map, so its threads loop."""
    monkeypatch.setattr(subsample, "MAX_BLOCKS_PER_MAP", blocks_per_map)
    r = rng(17, version, blocks_per_map)
    x = activations(r, (3, 1, 28, 28))
    out = activations(r, (3, 1, 14, 14))
    coef = r.uniform(-1, 1, 1).astype(np.float32)
    dout = r.uniform(-1, 1, out.shape).astype(np.float32)
    grads = poisoned(x.shape), poisoned((1,)), poisoned((1,))
    subsample.subsample_backward(*grads, dev(dout), dev(out), dev(x), dev(coef), version=version)
    dout64, out64, x64, coef64 = f64(dout, out, x, coef)
    expect = ref.subsample_backward_ref(ref.squash_backward_ref(dout64, out64), x64, coef64)
    check_all(grads, expect, ("dx", "dcoef", "dbias"))


# --------------------------------------------------------------------------- full

@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("shape", FULL_SHAPES)
@pytest.mark.parametrize("n", FULL_BATCHES)
def test_full_forward(n, shape, version):
    n_in, n_out = shape
    r = rng(3, n, n_in)
    x = activations(r, (n, n_in))
    # weights of the paper's initialisation scale, times 4 so the outputs are not all
    # in tanh's linear part
    weight = r.uniform(-9.6 / n_in, 9.6 / n_in, (n_out, n_in)).astype(np.float32)
    bias = r.uniform(-0.5, 0.5, n_out).astype(np.float32)
    out = poisoned((n, n_out))
    full.full_forward(out, dev(x), dev(weight), dev(bias), version=version)
    x64, w64, b64 = f64(x, weight, bias)
    assert_close(out.copy_to_host(), ref.squash_ref(ref.full_ref(x64, w64, b64)), what="out")


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("shape", FULL_SHAPES)
@pytest.mark.parametrize("n", FULL_BATCHES)
def test_full_backward(n, shape, order, version):
    n_in, n_out = shape
    r = rng(4, n, n_in, order)
    x = activations(r, (n, n_in))
    out = activations(r, (n, n_out))
    weight = r.uniform(-9.6 / n_in, 9.6 / n_in, (n_out, n_in)).astype(np.float32)
    d = (r.uniform(-1, 1, out.shape) if order == 1 else r.uniform(0, 1, out.shape))
    d = d.astype(np.float32)
    grads = poisoned(x.shape), poisoned(weight.shape), poisoned((n_out,))
    launch = full.full_backward if order == 1 else full.full_backward2
    launch(*grads, dev(d), dev(out), dev(x), dev(weight), version=version)
    d64, out64, x64, w64 = f64(d, out, x, weight)
    if order == 1:
        expect = ref.full_backward_ref(ref.squash_backward_ref(d64, out64), x64, w64)
    else:
        expect = ref.full_backward2_ref(ref.squash_backward2_ref(d64, out64), x64, w64)
    check_all(grads, expect, ("dx", "dweight", "dbias") if order == 1 else ("hx", "hw", "hb"))


@pytest.mark.parametrize("order", [1, 2])
def test_full_backward_params_in_batch_slices(order, monkeypatch):
    """v2's parameter gradients over several batch slices of 40 images (the last one
    short; 40 is not a multiple of the KT-row steps), each summed on its own, then added
    up in order by the finishing kernel."""
    monkeypatch.setattr(full, "SPLIT_ROWS", 40)
    n, (n_in, n_out) = 129, FULL_SHAPES[0]
    r = rng(19, order)
    x = activations(r, (n, n_in))
    out = activations(r, (n, n_out))
    weight = r.uniform(-9.6 / n_in, 9.6 / n_in, (n_out, n_in)).astype(np.float32)
    d = (r.uniform(-1, 1, out.shape) if order == 1 else r.uniform(0, 1, out.shape))
    d = d.astype(np.float32)
    grads = poisoned(x.shape), poisoned(weight.shape), poisoned((n_out,))
    launch = full.full_backward if order == 1 else full.full_backward2
    launch(*grads, dev(d), dev(out), dev(x), dev(weight), version=2)
    d64, out64, x64, w64 = f64(d, out, x, weight)
    if order == 1:
        expect = ref.full_backward_ref(ref.squash_backward_ref(d64, out64), x64, w64)
    else:
        expect = ref.full_backward2_ref(ref.squash_backward2_ref(d64, out64), x64, w64)
    check_all(grads, expect, ("dx", "dweight", "dbias") if order == 1 else ("hx", "hw", "hb"))


# ---------------------------------------------------------------------------- rbf

def rbf_inputs(r, n):
    x = activations(r, (n, rbf.N_INPUTS))
    # the centers are +-1 bitmaps
    centers = np.where(r.random((rbf.N_CLASSES, rbf.N_INPUTS)) < 0.3, 1.0, -1.0)
    return x, centers.astype(np.float32)


@pytest.mark.parametrize("n", BATCHES)
def test_rbf_forward(n):
    x, centers = rbf_inputs(rng(5, n), n)
    y = poisoned((n, rbf.N_CLASSES))
    rbf.rbf_forward(y, dev(x), dev(centers))
    assert_close(y.copy_to_host(), ref.rbf_ref(*f64(x, centers)), what="y")


@pytest.mark.parametrize("n", BATCHES)
def test_rbf_backward(n):
    r = rng(6, n)
    x, centers = rbf_inputs(r, n)
    dy = r.uniform(-1, 1, (n, rbf.N_CLASSES)).astype(np.float32)
    dx = poisoned(x.shape)
    rbf.rbf_backward(dx, dev(dy), dev(x), dev(centers))
    assert_close(dx.copy_to_host(), ref.rbf_backward_ref(*f64(dy, x, centers)), what="dx")


@pytest.mark.parametrize("n", BATCHES)
def test_rbf_backward2(n):
    r = rng(7, n)
    x, centers = rbf_inputs(r, n)
    # dy and hy as the MAP loss gives them: dy of either sign, hy >= 0
    dy = r.uniform(-1, 1, (n, rbf.N_CLASSES)).astype(np.float32)
    hy = r.uniform(0, 0.25, (n, rbf.N_CLASSES)).astype(np.float32)
    hx = poisoned(x.shape)
    rbf.rbf_backward2(hx, dev(hy), dev(dy), dev(x), dev(centers))
    assert_close(hx.copy_to_host(), ref.rbf_backward2_ref(*f64(hy, dy, x, centers)), what="hx")


# --------------------------------------------------------------------------- loss

def penalties_typical(r, n, labels):
    return r.uniform(5, 150, (n, 10))


def penalties_huge(r, n, labels):
    """Up to 1e3: every exp(-y) underflows, even in float64, without the max trick."""
    return r.uniform(950, 1000, (n, 10))


def penalties_near_zero(r, n, labels):
    return r.uniform(0, 3, (n, 10))


def penalties_confident(r, n, labels):
    """The correct class far ahead: 1 - p of it is ~1e-4, lost to cancellation if
    computed as 1 - p in float32."""
    y = r.uniform(40, 150, (n, 10))
    y[np.arange(n), labels] = r.uniform(0, 0.5, n)
    return y


LOSS_CASES = {
    "mse": ("mse", penalties_typical, ref.MAP_J),
    "map": ("map", penalties_typical, ref.MAP_J),
    # j = 10 far above every -y: exp(-j - max(-y)) overflows unless -j is in the max
    "map-huge-y": ("map", penalties_huge, ref.MAP_J),
    "map-huge-y-huge-j": ("map", penalties_huge, 2000.0),
    "map-y-near-0-huge-j": ("map", penalties_near_zero, 1000.0),
    "map-confident": ("map", penalties_confident, ref.MAP_J),
}


@pytest.mark.parametrize("case", LOSS_CASES)
@pytest.mark.parametrize("n", BATCHES)
def test_loss_forward_backward(n, case):
    kind, penalties, j = LOSS_CASES[case]
    r = rng(8, n, len(case))
    labels = r.integers(0, 10, n).astype(np.int32)
    y = penalties(r, n, labels).astype(np.float32)
    outs = poisoned((n,)), poisoned((n, 10)), poisoned((n, 10))
    loss.loss_forward_backward(*outs, dev(y), dev(labels), kind, j)
    y64 = np.asarray(y, dtype=np.float64)
    expect = ref.mse_loss_ref(y64, labels) if kind == "mse" else ref.map_loss_ref(y64, labels, j)
    check_all(outs, expect, ("losses", "dy", "hy"))


def test_loss_bad_label_gives_nan():
    y = rng(9).uniform(5, 150, (3, 10)).astype(np.float32)
    labels = np.array([1, 10, 2], dtype=np.int32)
    outs = poisoned((3,)), poisoned((3, 10)), poisoned((3, 10))
    loss.loss_forward_backward(*outs, dev(y), dev(labels), "map", ref.MAP_J)
    losses = outs[0].copy_to_host()
    assert np.isfinite(losses[[0, 2]]).all() and np.isnan(losses[1])


# ------------------------------------------------------------------------ updates

@pytest.mark.parametrize("shape", PARAM_SHAPES)
def test_update_sgd(shape):
    r = rng(10, len(shape))
    param, grad, velocity = r.uniform(-1, 1, (3, *shape)).astype(np.float32)
    p, v = dev(param), dev(velocity)
    update.sgd_update(p, dev(grad), v, 0.01, 0.9)
    param64, grad64, velocity64 = f64(param, grad, velocity)
    velocity64 = 0.9 * velocity64 - 0.01 * grad64
    assert_close(v.copy_to_host(), velocity64, what="velocity")
    assert_close(p.copy_to_host(), param64 + velocity64, what="param")


@pytest.mark.parametrize("shape", PARAM_SHAPES)
def test_update_sdlm(shape):
    r = rng(11, len(shape))
    param, grad = r.uniform(-1, 1, (2, *shape)).astype(np.float32)
    hess = r.uniform(0, 5, shape).astype(np.float32)  # Gauss-Newton estimates are >= 0
    p = dev(param)
    update.sdlm_update(p, dev(grad), dev(hess), 0.0005, 0.02)
    param64, grad64, hess64 = f64(param, grad, hess)
    assert_close(p.copy_to_host(), param64 - 0.0005 / (0.02 + hess64) * grad64, what="param")


@pytest.mark.parametrize("shape", PARAM_SHAPES)
def test_update_scale_add(shape):
    r = rng(12, len(shape))
    acc, x = r.uniform(-1, 1, (2, *shape)).astype(np.float32)
    a = dev(acc)
    update.scale_add(a, dev(x), 0.25)
    acc64, x64 = f64(acc, x)
    assert_close(a.copy_to_host(), acc64 + 0.25 * x64, what="acc")


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
@pytest.mark.parametrize("shape", PARAM_SHAPES)
def test_update_fill(shape, dtype):
    x = poisoned(shape, dtype)
    update.fill(x, 7)
    np.testing.assert_array_equal(x.copy_to_host(), np.full(shape, 7, dtype=dtype))


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("n", BATCHES)
def test_update_gather(n, index_dtype):
    r = rng(13, n)
    images = r.uniform(-0.1, 1.175, (N_IMAGES, 1, 32, 32)).astype(np.float32)
    labels = r.integers(0, 10, N_IMAGES).astype(np.int32)
    index = r.permutation(N_IMAGES)[:n].astype(index_dtype)
    out_images, out_labels = poisoned((n, 1, 32, 32)), poisoned((n,), np.int32)
    update.gather(out_images, out_labels, dev(images), dev(labels), dev(index))
    np.testing.assert_array_equal(out_images.copy_to_host(), images[index])
    np.testing.assert_array_equal(out_labels.copy_to_host(), labels[index])


def test_update_gather_bad_index_gives_nan():
    images = rng(18).uniform(-0.1, 1.175, (4, 1, 32, 32)).astype(np.float32)
    labels = np.arange(4, dtype=np.int32)
    index = np.array([2, 4, -1], dtype=np.int32)
    # finite, not poisoned: here the NaN and the -1 must be written, not left
    out_images = dev(np.full((3, 1, 32, 32), 5.0, np.float32))
    out_labels = dev(np.full(3, 99, np.int32))
    update.gather(out_images, out_labels, dev(images), dev(labels), dev(index))
    got = out_images.copy_to_host()
    np.testing.assert_array_equal(got[0], images[2])
    assert np.isnan(got[1:]).all()
    np.testing.assert_array_equal(out_labels.copy_to_host(), [2, -1, -1])


def penalties_with_ties(r, n):
    """Small integers, so rows often have two equal minima (argmin takes the first)."""
    return r.integers(0, 4, (n, 10)).astype(np.float32)


@pytest.mark.parametrize("n", BATCHES)
def test_update_argmin_rows(n):
    y = penalties_with_ties(rng(14, n), n)
    out = poisoned((n,), np.int32)
    update.argmin_rows(out, dev(y))
    np.testing.assert_array_equal(out.copy_to_host(), y.argmin(axis=1))


@pytest.mark.parametrize("dtype", [np.int32, np.float32, np.float64])
@pytest.mark.parametrize("n", BATCHES)
def test_update_count_errors_accumulates(n, dtype):
    r = rng(15, n)
    y = penalties_with_ties(r, n)
    labels = r.integers(0, 10, n).astype(np.int32)
    labels[0] = y[0].argmin()  # at least one right
    out = dev(np.array([5], dtype=dtype))
    y_d, labels_d = dev(y), dev(labels)
    update.count_errors(out, y_d, labels_d)
    update.count_errors(out, y_d, labels_d)
    errors = int((y.argmin(axis=1) != labels).sum())
    assert out.copy_to_host()[0] == 5 + 2 * errors


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", sorted({*BATCHES, 300}))  # 300: more than one block
def test_update_sum_into_accumulates(n, dtype):
    x = rng(16, n).uniform(0, 150, n).astype(np.float32)  # per-pattern losses
    out = dev(np.array([1.5], dtype=dtype))
    x_d = dev(x)
    update.sum_into(out, x_d)
    update.sum_into(out, x_d)
    assert_close(out.copy_to_host(), [1.5 + 2 * x.astype(np.float64).sum()], what="sum")


# ---------------------------------------------------------------- argument checks

def a(*shape, dtype=np.float32):
    return cuda.to_device(np.ones(shape, dtype=dtype))


def i32(*shape):
    return a(*shape, dtype=np.int32)


# (name, launch, the message its ValueError must contain); arrays are made on the call
BAD_CALLS = [
    ("subsample out shape", lambda: subsample.subsample_forward(
        a(2, 3, 4, 4), a(2, 3, 6, 8), a(3), a(3)),
     r"out has shape \(2, 3, 4, 4\), expected \(2, 3, 3, 4\)"),
    ("subsample odd map", lambda: subsample.subsample_forward(
        a(2, 3, 3, 4), a(2, 3, 6, 7), a(3), a(3)), "must be even"),
    ("subsample coef dtype", lambda: subsample.subsample_forward(
        a(2, 3, 3, 4), a(2, 3, 6, 8), a(3, dtype=np.float64), a(3)), "coef has dtype float64"),
    ("subsample host array", lambda: subsample.subsample_forward(
        a(2, 3, 3, 4), np.ones((2, 3, 6, 8), np.float32), a(3), a(3)), "x is a host array"),
    ("subsample dbias shape", lambda: subsample.subsample_backward(
        a(2, 3, 6, 8), a(3), a(4), a(2, 3, 3, 4), a(2, 3, 3, 4), a(2, 3, 6, 8), a(3)),
     r"dbias has shape \(4,\)"),
    ("subsample version", lambda: subsample.subsample_backward2(
        a(2, 3, 6, 8), a(3), a(3), a(2, 3, 3, 4), a(2, 3, 3, 4), a(2, 3, 6, 8), a(3),
        version=3), "version 3"),
    ("full weight", lambda: full.full_forward(a(2, 5), a(2, 12), a(5, 11), a(5)),
     "weight has shape"),
    ("full out", lambda: full.full_forward(a(3, 5), a(2, 12), a(5, 12), a(5)), "out has shape"),
    ("full dweight", lambda: full.full_backward(
        a(2, 12), a(12, 5), a(5), a(2, 5), a(2, 5), a(2, 12), a(5, 12)), "dweight has shape"),
    ("full hout dtype", lambda: full.full_backward2(
        a(2, 12), a(5, 12), a(5), a(2, 5, dtype=np.float64), a(2, 5), a(2, 12), a(5, 12)),
     "hout has dtype float64"),
    ("full version", lambda: full.full_forward(
        a(2, 5), a(2, 12), a(5, 12), a(5), version=0), "version 0"),
    ("rbf centers", lambda: rbf.rbf_forward(a(2, 10), a(2, 84), a(10, 83)), "centers has shape"),
    ("rbf x width", lambda: rbf.rbf_forward(a(2, 10), a(2, 83), a(10, 84)), "x has shape"),
    ("rbf dy", lambda: rbf.rbf_backward2(a(2, 84), a(2, 10), a(3, 10), a(2, 84), a(10, 84)),
     "dy has shape"),
    ("loss kind", lambda: loss.loss_forward_backward(
        a(2), a(2, 10), a(2, 10), a(2, 10), i32(2), "l2", 1.0), "kind 'l2'"),
    ("loss labels dtype", lambda: loss.loss_forward_backward(
        a(2), a(2, 10), a(2, 10), a(2, 10), a(2, dtype=np.int64), "map", 1.0),
     "labels has dtype int64"),
    ("loss losses shape", lambda: loss.loss_forward_backward(
        a(3), a(2, 10), a(2, 10), a(2, 10), i32(2), "mse", 1.0), "losses has shape"),
    ("sgd shapes", lambda: update.sgd_update(a(4), a(4), a(5), 0.1, 0.9), "velocity has shape"),
    ("sdlm dtype", lambda: update.sdlm_update(a(4), a(4, dtype=np.float64), a(4), 1, 1),
     "grad has dtype float64"),
    ("scale_add shape", lambda: update.scale_add(a(4), a(2, 2), 1.0), "x has shape"),
    ("fill host array", lambda: update.fill(np.ones(3, np.float32), 0), "x is a host array"),
    ("gather index dtype", lambda: update.gather(
        a(1, 1, 4, 4), i32(1), a(3, 1, 4, 4), i32(3), a(1)), "index has dtype float32"),
    ("gather out shape", lambda: update.gather(
        a(2, 1, 4, 4), i32(1), a(3, 1, 4, 4), i32(3), i32(1)), "out_images has shape"),
    ("argmin out dtype", lambda: update.argmin_rows(a(2, dtype=np.int64), a(2, 10)),
     "out has dtype int64"),
    ("count out shape", lambda: update.count_errors(i32(2), a(2, 10), i32(2)),
     r"out has shape \(2,\)"),
    ("sum_into x dtype", lambda: update.sum_into(a(1), a(4, dtype=np.float64)),
     "x has dtype float64"),
]


@pytest.mark.parametrize("name, call, message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_launchers_refuse_bad_arguments(name, call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_launchers_refuse_more_than_32_bit_indices(monkeypatch):
    """Batches whose elements the kernels' unsigned 32-bit indices cannot count (limits
    lowered here: 2^31 floats of device memory are not for a test)."""
    monkeypatch.setattr(subsample, "MAX_ELEMENTS", 2 * 3 * 6 * 8 - 1)
    with pytest.raises(ValueError, match="split the batch"):
        subsample.subsample_forward(a(2, 3, 3, 4), a(2, 3, 6, 8), a(3), a(3))
    monkeypatch.setattr(update, "MAX_GATHER", 2 * 16 - 1)
    with pytest.raises(ValueError, match="split it"):
        update.gather(a(2, 1, 4, 4), i32(2), a(3, 1, 4, 4), i32(3), i32(2))
