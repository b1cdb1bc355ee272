"""The compiled CPU paths (kernels/cpu.py) against the float64 reference (kernels/reference.py's
forward_ref, backward_ref, sdlm_steps_ref, minibatch_steps_ref; whole Trainer passes through
tests/trainer_ref.py): inference, every activation, the mini-batch step (gradients and
curvature, MSE and MAP, store, SGD and SDLM), the paper's per-pattern steps; bit for bit on
one thread and on two; and the pieces no path isolates (fma, fmuladd, tanh32, one
pattern's loss) against exact arithmetic and loss_ref."""

import math
import os

import numba
import numpy as np
import pytest
from conftest import missing
from loss_cases import LOSS_CASES
from trainer_ref import trainer_pass_ref

from lenet import LeNet5
from lenet.kernels import cpu
from lenet.kernels import reference as ref
from lenet.kernels.architecture import C3_TABLE, LOSS_KINDS, PARAMETERS_LEN, RBF_CENTERS
from lenet.kernels.tolerance import assert_close, relative_error
from lenet.train import Trainer
from lenet.workspace import FlatBuffer

J_SOFT = 400.0   # MAP's j above every penalty: p is a plain softmax, far from MSE's one-hot


def images(n, seed=0):
    return np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(np.float32)


def labels_of(n, seed=1):
    return np.random.default_rng(seed).integers(0, 10, n).astype(np.int32)


def start_pair(dtype, seed=4, init="lush"):
    """Float32 parameters as float64 (the reference's) and the model under test in
    `dtype` holding them."""
    start = {k: v.astype(np.float64) for k, v in
             LeNet5(seed=seed, init=init).parameters().items()}
    fast = LeNet5(dtype=dtype)
    fast.set_parameters({k: v.astype(dtype) for k, v in start.items()})
    return start, fast


def buffer(dtype, fill=np.nan):
    return FlatBuffer(np.full(PARAMETERS_LEN, fill, dtype))


TOL = {np.float64: 1e-12, np.float32: 1e-5}


# ------------------------------------------------------------------ inference

@pytest.mark.parametrize("n", [1, 17, 37])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_penalties_match_the_reference(dtype, n):
    # 1: one block on the calling thread; 17, 37: blocks of 16 over the threads, the last
    # one short
    start, fast = start_pair(dtype, seed=6, init="sqrt-fan-in")
    x = images(n, seed=2)
    out = np.full((n, 10), np.nan, dtype)
    cpu.penalties_cpu(out, x.astype(dtype), fast.flat_params, RBF_CENTERS.astype(dtype),
                      C3_TABLE)
    assert_close(out, ref.forward_ref(start, x)["penalties"], dtype=dtype, what="penalties")
    np.testing.assert_array_equal(fast.forward(x), out)       # the model's path
    np.testing.assert_array_equal(fast.predict(x), out.argmin(axis=1))


@pytest.mark.parametrize("n", [1, 17, 37])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activations_match_the_reference(dtype, n):
    # every layer's output, named as forward_ref names them; 17 and 37 over the threads
    start, fast = start_pair(dtype, seed=7, init="sqrt-fan-in")
    x = images(n, seed=5).astype(dtype)
    expected = ref.forward_ref(start, x)
    out = cpu.activations_cpu(x, fast.flat_params, RBF_CENTERS.astype(dtype), C3_TABLE)
    names = ("C1", "S2", "C3", "S4", "C5", "F6", "penalties")
    assert len(out) == len(names)
    for name, a in zip(names, out, strict=True):
        assert a.dtype == dtype and a.shape == expected[name].shape, name
        assert_close(a, expected[name], dtype=dtype, what=name)
    # the model's forward_all: the input first, then the same arrays; its penalties are
    # forward's to rounding (forward runs the grouped inference code, forward_all the
    # training step's per-image forward, with fused multiply-adds) and its classes forward's
    acts = fast.forward_all(fast.prepare_images(x))
    assert len(acts) == 8
    np.testing.assert_array_equal(acts[0], x)
    for a, b in zip(acts[1:], out, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(acts[-1], fast.forward(x), rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_array_equal(acts[-1].argmin(axis=1), fast.predict(x))


def test_activations_refuse_what_does_not_fit():
    x = images(2)
    with pytest.raises(ValueError, match="activations_cpu: centers"):
        cpu.activations_cpu(x, np.zeros(PARAMETERS_LEN, np.float32), RBF_CENTERS, C3_TABLE)
    with pytest.raises(ValueError, match="activations_cpu: the C3 table"):
        cpu.activations_cpu(x, np.zeros(PARAMETERS_LEN, np.float32),
                            RBF_CENTERS.astype(np.float32), C3_TABLE[:5])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_first_refused_matches_the_reference(dtype):
    # the input check of the CPU paths, in one block and over threads, each kind of
    # refused image planted alone and after another
    r = np.random.default_rng(6)
    planted = [(np.nan, None), (np.inf, None), (-0.3, None), (255.0, None), (1.4, None),
               (None, (0.0, 1.0)), (None, (-0.04, 1.175))]
    for n in (1, 16, cpu.CHECK_ALONE + 1, 300):
        x = r.uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(dtype)
        x[:, 0, 0, 0] = -0.1
        assert cpu.first_refused_cpu(x) == ref.first_refused_ref(x) == -1
        for value, span in planted:
            for k in sorted({n - 1, n // 2}):
                y = x.copy()
                if span is None:
                    y[k, 0, r.integers(32), r.integers(32)] = value
                else:     # every value in range, none near the background
                    y[k] = r.uniform(*span, (1, 32, 32))
                assert cpu.first_refused_cpu(y) == ref.first_refused_ref(y) == k, (n, value)
                y[n // 3] = np.nan
                assert cpu.first_refused_cpu(y) == min(k, n // 3)


# ------------------------------------------------------------------ mini-batch step

def reference_step(params, x, labels, kind, j):
    """float64 losses, penalties, gradients and curvature (by parameter name) of the
    batch's mean loss."""
    fwd = ref.forward_ref(params, x, labels, kind, j)
    grads, curvature = (ref.backward_ref(params, fwd, order) for order in (1, 2))
    return fwd["losses"], fwd["penalties"], *({k: d[k] for k in ref.PARAMETER_SHAPES}
                                              for d in (grads, curvature))


@pytest.mark.parametrize("n", [1, 37])
@pytest.mark.parametrize("kind, j", [("mse", 10.0), ("map", J_SOFT)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_step_matches_the_reference(dtype, kind, j, n):
    # 37 images: three chunks of 16, 16 and 5 in three slots
    start, fast = start_pair(dtype)
    x, labels = images(n, seed=3), labels_of(n, seed=5)
    losses, y, grads, curvature = reference_step(start, x, labels, kind, j)
    ws = cpu.StepWorkspace(n + 2, dtype, RBF_CENTERS, C3_TABLE)   # a partial batch
    flat = x.astype(dtype).reshape(n, -1)
    index = np.arange(n, dtype=np.int32)[::-1].copy()
    params = fast.flat_params.copy()
    for order, expected in ((1, grads), (2, curvature)):
        out, stats = buffer(dtype), np.zeros(2)
        cpu.launch_step(ws, params, out.flat, buffer(dtype, 0).flat, buffer(dtype, 0).flat,
                        stats, flat, labels, index, 0, n, kind, j, order, "store", 0.0, 0.0)
        np.testing.assert_array_equal(params, fast.flat_params)   # store: no update
        for name, g in expected.items():
            assert np.abs(g).max() > 0, name
            assert_close(out.views[name], g, dtype=dtype, what=f"order {order} {name}")
        assert_close(ws.losses(n), losses[::-1], dtype=dtype, what="losses")
        assert abs(stats[0] - losses.sum()) <= TOL[dtype] * abs(losses.sum())
        assert stats[1] == np.count_nonzero(y.argmin(axis=1) != labels)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_step_updates_sgd_and_sdlm(dtype):
    n, lr, momentum = 21, 0.01, 0.9
    start, fast = start_pair(dtype, seed=8)
    x, labels = images(n, seed=4), labels_of(n, seed=6)
    _, _, grads, _ = reference_step(start, x, labels, "mse", 10.0)
    ws = cpu.StepWorkspace(n, dtype, RBF_CENTERS, C3_TABLE)
    flat, index = x.astype(dtype).reshape(n, -1), np.arange(n, dtype=np.int32)
    rng = np.random.default_rng(7)
    velocity, rates = buffer(dtype, 0), buffer(dtype, 0)
    velocity.flat[:] = rng.uniform(-1e-3, 1e-3, PARAMETERS_LEN)
    rates.flat[:] = rng.uniform(0, 1e-2, PARAMETERS_LEN)
    v0, p0 = velocity.flat.astype(np.float64), fast.flat_params.astype(np.float64)
    params = fast.flat_params.copy()
    cpu.launch_step(ws, params, buffer(dtype).flat, velocity.flat, rates.flat, np.zeros(2),
                    flat, labels, index, 0, n, "mse", 10.0, 1, "sgd", lr, momentum)
    g = FlatBuffer(np.zeros(PARAMETERS_LEN))
    for name, value in grads.items():
        g.views[name][...] = value
    assert_close(velocity.flat, momentum * v0 - lr * g.flat, dtype=dtype, what="velocity")
    assert_close(params - p0, velocity.flat, dtype=dtype, what="sgd step")
    params = fast.flat_params.copy()
    cpu.launch_step(ws, params, buffer(dtype).flat, velocity.flat, rates.flat, np.zeros(2),
                    flat, labels, index, 0, n, "mse", 10.0, 1, "sdlm", lr, momentum)
    assert_close(params - p0, -rates.flat * g.flat, dtype=dtype, what="sdlm step")



# ------------------------------------------------------------------ the Trainer

@pytest.mark.parametrize("recipe, batch", [("sgd", 7), ("sdlm-batch", 5)])
def test_trainer_passes_match_the_reference(recipe, batch):
    # a compiled pass (and, for sdlm-batch, its curvature estimate) against the float64
    # reference's steps over the same order
    n = 23
    x, labels = images(n, seed=9), labels_of(n, seed=10)
    start, fast = start_pair(np.float64, seed=2, init="sqrt-fan-in")
    settings = dict(recipe=recipe, batch_size=batch, seed=3,
                    **({"mu": 0.3} if recipe == "sdlm-batch" else {}))
    expected, out = trainer_pass_ref(start, x, labels, **settings)
    trainer = Trainer(fast, x, labels, **settings)
    assert trainer.workspace is not None
    loss, err = trainer.train_pass()
    assert abs(loss - out["loss"]) <= 1e-12 * abs(out["loss"]) and err == out["error"]
    if recipe == "sdlm-batch":
        for name, h in out["hessian"].items():
            assert_close(trainer.hessian.views[name], h, dtype=np.float64, what=f"h {name}")
    after = fast.parameters()
    for k in expected:
        assert np.abs(expected[k] - start[k]).max() > 0, k    # every parameter moved
        assert_close(after[k], expected[k], dtype=np.float64, what=k)


def test_threads_do_not_change_a_bit():
    # inference, a step's gradients and curvature, and a whole SGD pass at batch 50 (four
    # chunks in four slots) on one thread and on two
    if numba.config.NUMBA_NUM_THREADS < 2:     # one thread against one proves nothing
        missing("two Numba threads (NUMBA_NUM_THREADS is 1: one core, or set so)")
    x, labels = images(120, seed=11), labels_of(120, seed=12)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            model = LeNet5(seed=5)
            out = {"penalties": model.forward(x)}
            trainer = Trainer(model, x, labels, recipe="sdlm-batch", batch_size=50, seed=1)
            trainer.train_pass()
            out["hessian"] = trainer.hessian.flat.copy()
            out["params"] = model.flat_params.copy()
            results.append(out)
    finally:
        numba.set_num_threads(before)
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)


# ------------------------------------------------------------------ per-pattern steps

@pytest.mark.parametrize("loss", ["mse", "map"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_per_pattern_steps_match_the_reference(dtype, loss):
    # one pass of per-pattern steps, same curvature patterns and order; float64 agrees
    # to rounding; float32 to the project tolerance, its rounding growing over
    # sequential steps (about 2x every 4 patterns, tests/test_gpu_model.py), so 12
    n = 6 if dtype == np.float64 else 12
    x, labels = images(n, seed=8), np.random.default_rng(9).integers(0, 10, n)
    start, fast = start_pair(dtype)
    settings = dict(recipe="paper", seed=2, mu=0.3, loss=loss, j=20)
    pa, out = trainer_pass_ref(start, x, labels, **settings)
    loss_b, err_b = Trainer(fast, x, labels, **settings).train_pass()
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    assert abs(loss_b - out["loss"]) <= tolerance * abs(out["loss"])
    assert err_b == out["error"]
    pb = fast.parameters()
    for k in pa:
        assert_close(pb[k], pa[k], dtype=dtype, what=k)
        step_a, step_b = pa[k] - start[k], pb[k] - start[k]
        assert np.abs(step_a).max() > 0, k  # every parameter moved
        # the step itself, a small difference of float32 numbers: a looser bound there
        assert relative_error(step_b, step_a) < (1e-9 if dtype == np.float64 else 1e-3), k


def test_per_pattern_steps_repeat_bit_for_bit():
    x, labels = images(20, seed=3), np.random.default_rng(4).integers(0, 10, 20)
    runs = []
    for _ in range(2):
        model = LeNet5(seed=1, init="lush")
        Trainer(model, x, labels, recipe="paper", seed=5, mu=0.5).train_pass()
        runs.append(model.parameters())
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k], err_msg=k)


fma_jit = numba.njit(lambda a, b, s: cpu.fma(a, b, s))     # intrinsics: compiled code only
fmuladd_jit = numba.njit(lambda a, b, s: cpu.fmuladd(a, b, s))


def test_fma_rounds_once_and_fmuladd_is_a_multiply_add():
    # float32 products are exact in float64, and the float64 sum v rounds to float32 as
    # a * b + s itself does unless v falls on a float32 halfway point (none does here)
    rng = np.random.default_rng(0)
    a, b, s = (rng.uniform(-1, 1, 2000).astype(np.float32) for _ in range(3))
    v = a.astype(np.float64) * b + s
    once = v.astype(np.float32)
    beside = np.nextafter(once, np.where(v > once, np.inf, -np.inf).astype(np.float32))
    assert not np.any(v == (once.astype(np.float64) + beside) / 2)
    fma = np.array([fma_jit(x, y, z) for x, y, z in zip(a, b, s, strict=True)], np.float32)
    np.testing.assert_array_equal(fma, once)
    # a case a separate multiply and add get wrong: (1 + e)(1 - e) - 1 = -e^2
    e = np.float32(2.0 ** -13)
    one = np.float32(1)
    assert fma_jit(one + e, one - e, -one) == -e * e
    assert (one + e) * (one - e) - one == 0       # two roundings lose it
    # fmuladd: the fused result or the separate multiply and add
    fmuladd = np.array([fmuladd_jit(x, y, z) for x, y, z in zip(a, b, s, strict=True)], np.float32)
    twice = a * b + s
    assert np.all((fmuladd == once) | (fmuladd == twice))


def test_tanh32_is_within_4e7_of_tanh():
    x = np.concatenate([np.linspace(-12, 12, 200_001), [0.0, -0.0, 1e-30, 7.9, 8.0, 1e30],
                        10.0 ** np.linspace(-20, 1.3, 2001)]).astype(np.float32)
    out = np.array([cpu.tanh32_jit(v) for v in x[::7]] +
                   [cpu.tanh32_jit(v) for v in x[-2001:]], np.float32)
    xs = np.concatenate([x[::7], x[-2001:]]).astype(np.float64)
    exact = np.tanh(xs)
    rel = np.abs(out - exact) / np.maximum(np.abs(exact), 1e-300)
    assert rel.max() < 4e-7, (rel.max(), xs[rel.argmax()])
    assert math.isnan(cpu.tanh32_jit(np.float32("nan")))
    assert cpu.tanh32_jit(np.float32("inf")) == 1.0
    assert cpu.tanh32_jit(np.float32("-inf")) == -1.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", LOSS_CASES)
def test_pattern_loss_matches_the_reference(dtype, case):
    kind, penalties, j = LOSS_CASES[case]
    rng = np.random.default_rng([3, len(case)])
    labels = rng.integers(0, 10, 25)
    y = penalties(rng, len(labels), labels).astype(dtype)
    losses, dy, hy = ref.loss_ref(y.astype(np.float64), labels, kind, j)
    c = cpu.constants(dtype, j)
    got = np.full(len(y), np.nan)
    g_dy, g_hy = np.full(y.shape, np.nan, dtype), np.full(y.shape, np.nan, dtype)
    for n in range(len(y)):
        got[n] = cpu.pattern_loss(y[n], labels[n], LOSS_KINDS[kind], c, g_dy[n], g_hy[n])
    assert_close(got, losses, dtype=dtype, what="losses")
    # loss_ref's derivatives are of the mean: the pieces' are one pattern's
    assert_close(g_dy, dy * len(y), dtype=dtype, what="dy")
    if kind == "map":
        assert_close(g_hy, hy * len(y), dtype=dtype, what="hy")
    else:
        assert not g_hy.any()


# ------------------------------------------------------------------ bad input

def _args(n=3):
    """sdlm_runs_cpu's arguments for one run over n images."""
    params = LeNet5(seed=0, init="lush").flat_params.copy().reshape(1, -1)
    return [params, np.zeros_like(params), np.zeros((1, 2)), images(n).reshape(1, n, -1),
            np.zeros(1, np.int32), np.arange(n, dtype=np.int32) % 10,
            np.arange(n, dtype=np.int32).reshape(1, n), 0, n, np.zeros(1, np.int32),
            np.array([10.0]), RBF_CENTERS.astype(np.float32), C3_TABLE]


def test_a_label_outside_the_classes_makes_the_loss_nan():
    args = _args()
    args[5] = np.array([0, 11, 2], np.int32)
    cpu.sdlm_runs_cpu(*args)
    assert math.isnan(args[2][0, 0])


@pytest.mark.parametrize("change, message", [
    (lambda a: a.__setitem__(0, np.zeros((1, PARAMETERS_LEN - 1), np.float32)),
     r"params must be a C-contiguous float32 array of shape \(60900,\)"),
    (lambda a: a.__setitem__(1, np.zeros((1, PARAMETERS_LEN), np.float64)), "rates must be"),
    (lambda a: a.__setitem__(6, np.array([[0, 1, 3]], np.int32)), "order entries outside"),
    (lambda a: a.__setitem__(8, 4), r"patterns 0..4 outside the order of 3"),
    (lambda a: a.__setitem__(9, np.array([2], np.int32)), "loss kind out of range"),
    (lambda a: a.__setitem__(4, np.array([1], np.int32)), "image set or loss kind out of"),
    (lambda a: a.__setitem__(2, np.zeros((1, 2), np.float32)), "stats must be"),
    (lambda a: a.__setitem__(12, np.ones((16, 6), bool)), r"C3 table has shape \(16, 6\)"),
    (lambda a: a.__setitem__(10, np.array([10.0, 1.0])), r"js must be one j per run, shape"),
])
def test_steps_refuse_what_does_not_fit(change, message):
    args = _args()
    change(args)
    with pytest.raises(ValueError, match=message):
        cpu.sdlm_runs_cpu(*args)


def test_backend_steps_take_either_image_shape_as_a_view_and_refuse_a_kind_name():
    # lenet's Backend.sdlm_steps: one run of sdlm_runs_cpu on a (1, N, 1024) view of the
    # images, the same bits from (N,1,32,32) and (N,1024); an unknown kind named
    n = 5
    x, labels, order = images(n, seed=3), labels_of(n), np.arange(n, dtype=np.int32)[::-1]
    order = np.ascontiguousarray(order)
    ends, seen = [], []
    for shaped in (x, x.reshape(n, -1)):
        model = LeNet5(seed=2, init="lush")
        ops, params, rates = model.ops, model.parameter_buffer, buffer(np.float32, 0.01)
        runs = ops.sdlm_runs
        ops.sdlm_runs = lambda *a, runs=runs: (seen.append(a[3]), runs(*a))
        stats = np.zeros(2)
        ops.sdlm_steps(params, rates, stats, shaped, labels, order, 0, n, "map", J_SOFT,
                       model.centers, model.tables["C3"])
        ends.append((params.flat.copy(), stats))
        with pytest.raises(ValueError, match=r"^sdlm_steps: kind 'hinge', expected one of "
                                             r"\['map', 'mse'\]$"):
            ops.sdlm_steps(params, rates, stats, shaped, labels, order, 0, n, "hinge", 1.0,
                           model.centers, model.tables["C3"])
    assert all(s.shape == (1, n, 1024) and np.shares_memory(s, x) for s in seen)
    np.testing.assert_array_equal(ends[0][0], ends[1][0])
    np.testing.assert_array_equal(ends[0][1], ends[1][1])
    assert np.isfinite(ends[0][1]).all() and ends[0][1][0] > 0
    assert not np.array_equal(ends[0][0], LeNet5(seed=2, init="lush").flat_params)


@pytest.mark.parametrize("change, message", [
    (dict(count=5), "5 images in a workspace for 4"),
    (dict(kind="hinge"), "kind 'hinge'"),
    (dict(mode="adam"), "mode 'adam'"),
    (dict(index=np.array([0, 1, 9, 2], np.int32)), "index entries outside the 4 images"),
    (dict(grads=np.zeros(10, np.float32)), r"grads must be a C-contiguous float32"),
])
def test_launch_step_refuses_what_does_not_fit(change, message):
    ws = cpu.StepWorkspace(4, np.float32, RBF_CENTERS, C3_TABLE)
    params = LeNet5(seed=0).flat_params.copy()
    args = dict(params=params, grads=np.zeros_like(params), velocity=np.zeros_like(params),
                rates=np.zeros_like(params), stats=np.zeros(2), images=images(4),
                labels=labels_of(4), index=np.arange(4, dtype=np.int32), start=0, count=4,
                kind="mse", j=10.0, order=1, mode="sgd", lr=0.1, momentum=0.0)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        cpu.launch_step(ws, **args)
    with pytest.raises(ValueError, match="batch must be a positive"):
        cpu.StepWorkspace(0, np.float32, RBF_CENTERS, C3_TABLE)


# ----------------------------------------------- inference in groups of cpu.LANES
# penalties_cpu takes groups of cpu.LANES images side by side and the images left over one
# at a time: each image's penalties match the reference whichever way, batch, position or
# thread count computed them

def inference_setup(dtype, n, seed):
    start = LeNet5(seed=seed, init="sqrt-fan-in").parameters()
    fast = LeNet5(dtype=dtype)
    fast.set_parameters({k: v.astype(dtype) for k, v in start.items()})
    x = np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32))
    return start, fast.flat_params, x.astype(np.float32)


def lanes_penalties(x, params, dtype):
    out = np.full((x.shape[0], 10), np.nan, dtype)
    cpu.penalties_cpu(out, x.astype(dtype), params, RBF_CENTERS.astype(dtype), C3_TABLE)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_image_gets_the_same_bits_in_any_batch(dtype):
    # 53 = 3 blocks of 16 (two groups of 8 each) + 5 left over one at a time; the slices
    # move every image between a group's lanes and the one-at-a-time path
    n = 53
    start, params, x = inference_setup(dtype, n, seed=21)
    whole = lanes_penalties(x, params, dtype)
    assert_close(whole, ref.forward_ref(start, x)["penalties"], dtype=dtype, what="penalties")
    for lo, hi in [(0, 1), (52, 53), (3, 10), (5, 13), (7, 31), (1, 53), (45, 53)]:
        np.testing.assert_array_equal(lanes_penalties(x[lo:hi], params, dtype), whole[lo:hi],
                                      err_msg=f"images {lo}..{hi}")
    flat = np.full((n, 10), np.nan, dtype)    # (N, 1024) images: the same
    cpu.penalties_cpu(flat, x.reshape(n, 1024).astype(dtype), params,
                      RBF_CENTERS.astype(dtype), C3_TABLE)
    np.testing.assert_array_equal(flat, whole)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(lanes_penalties(x, params, dtype), whole, err_msg="1 thread")
    finally:
        numba.set_num_threads(before)


def test_a_group_of_extreme_images_leaves_its_neighbours_alone():
    # saturating images (every pixel +-1e4) in one group's lanes next to ordinary ones:
    # lanes never mix, so the ordinary images' penalties are those they get alone
    start, params, x = inference_setup(np.float32, 2 * cpu.LANES, seed=22)
    x[1::2] = np.where(np.arange(1024).reshape(1, 32, 32) % 3 == 0, 1e4, -1e4)
    out = lanes_penalties(x, params, np.float32)
    assert_close(out, ref.forward_ref(start, x)["penalties"], what="penalties")
    for i in range(0, 2 * cpu.LANES, 2):
        np.testing.assert_array_equal(lanes_penalties(x[i:i + 1], params, np.float32), out[i:i + 1])


def test_without_a_place_for_numba_s_cache_the_cpu_code_still_runs():
    # no writable __pycache__ and no writable home (a read-only install, `docker run
    # --user`): Numba finds no cache locator, which made every import of kernels/cpu.py
    # fail; now the module imports with caching off, says so once, and its code runs
    import subprocess
    import sys
    code = ("import math, numpy as np; from lenet.kernels import cpu, distort; "
            "assert cpu.CACHE is False; "
            "assert abs(cpu.tanh32_jit(np.float32(0.5)) - math.tanh(0.5)) < 1e-7; "
            "print('ran')")
    env = dict(os.environ, NUMBA_CACHE_LOCATOR_CLASSES="ZipCacheLocator")  # none applies
    env.pop("NUMBA_CACHE_DIR", None)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and result.stdout == "ran\n", result.stderr
    assert result.stderr.count("Numba cannot keep compiled code on disk here") == 1, \
        result.stderr
    assert "NUMBA_CACHE_DIR" in result.stderr


def test_a_cache_compiled_for_other_architecture_numbers_is_dropped(tmp_path):
    # Numba's cache checks cpu.py's own source, not architecture.py: a copy of the
    # two files caches unpack, then a tensor of 8 floats goes in front of C1's weight in
    # architecture.py (every offset moves by 8); the next import must warn once, clear the
    # cache and slice at the new offsets (the stale code sliced at the old ones), and the
    # import after it find the new cache consistent
    import shutil
    import subprocess
    import sys
    package = tmp_path / "stale_cache_copy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("architecture.py", "cpu.py"):
        shutil.copy(os.path.join(os.path.dirname(cpu.__file__), name), package / name)
    code = ("import numpy as np; from stale_cache_copy import cpu, architecture as a; "
            "p = cpu.unpack(np.arange(a.PARAMETERS_LEN, dtype=np.float64)); "
            "print(int(p[0].flat[0]), int(p[11][0]))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path),
                                                       os.environ.get("PYTHONPATH", "")]))
    env.pop("NUMBA_CACHE_DIR", None)     # the cache in the copy's __pycache__

    def run():
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return result.stdout.split(), result.stderr.count("compiled for another")

    from lenet.kernels.architecture import B6_AT, W1_AT
    assert run() == ([str(W1_AT), str(B6_AT)], 0)
    other = package / "__pycache__" / "distort.distort_cpu_loop-105.py311.nbi"
    other.write_bytes(b"")     # distort.py's cached code holds the architecture too
    source = (package / "architecture.py").read_text()
    first = "PARAMETER_SHAPES = {\n"
    assert source.count(first) == 1
    (package / "architecture.py").write_text(source.replace(first, first + '    "pad": (8,),\n'))
    assert run() == ([str(W1_AT + 8), str(B6_AT + 8)], 1)
    assert not other.exists()
    assert run() == ([str(W1_AT + 8), str(B6_AT + 8)], 0)
    assert len(list((package / "__pycache__").glob("cpu.*.nbi"))) >= 2   # cached again
