"""Every implementation of LeNet-5 against the float64 whole-network reference, in the style
of llm.c's test_gpt2: the same seeded weights and images through each one, every named
tensor it exposes compared with the reference's tensor of that name (kernels/reference.py
forward_ref and backward_ref) at kernels/tolerance.py's bound for its dtype, and the worst
error of each printed (pytest -s) and named in a failure.

    reference    its gradients against central differences of its own loss
    cpu model    LeNet5(device="cpu") (lenet/ops_cpu.py): forward_all through kernels/cpu.py
                 activations_cpu, gradients and curvature through its mini-batch step,
                 float32 and float64
    cpu sdlm     kernels/cpu.py: the compiled forward and the per-pattern steps
    cpu step     kernels/cpu.py: the compiled mini-batch step, order 1 and 2
    gpu forward  kernels/forward.py: the fused forward kernel
    gpu model    LeNet5(device="gpu"): forward_all (GPUOps.activations), gradients and
                 curvature (the fused step; on a GPU only, as in the simulator the gpu
                 step below runs that step on this case)
    gpu step     kernels/train_step.py through lenet.workspace.Workspace: order 1 and 2
    gpu sdlm     kernels/sdlm.py: the per-pattern steps, recording each pattern's tensors

Names: the reference's ("C1" a layer's output, "C1.pre" its pre-activation, "penalties",
"losses", "dy", "hy"); "grad X" and "curv X" the gradient and the Gauss-Newton curvature
of the mean loss with respect to X (a tensor or a parameter); "step P" what each
per-pattern step changed parameter P by, and "pattern X" tensor X of each of those
patterns, stacked over the patterns. A per-pattern implementation runs one pattern a
launch, each checked from the parameters it started from; one launch of every pattern must
then leave the same parameters bit for bit.

Sizes: 3 images and 2 patterns in the CUDA simulator; 1001 images and 16 patterns on a GPU.
"""

import numpy as np
import pytest
from conftest import SIMULATOR
from numba import cuda

from lenet import LeNet5
from lenet.kernels import reference as ref
from lenet.kernels.architecture import (
    C3_TABLE,
    IN_LEN,
    LOSS_KINDS,
    PARAMETER_AT,
    PARAMETER_SHAPES,
    PARAMETERS_LEN,
    RBF_CENTERS,
)
from lenet.kernels.tolerance import RELATIVE_ERROR, relative_error

N_IMAGES = 3 if SIMULATOR else 1001
N_PATTERNS = 2 if SIMULATOR else 16
LOSSES = ("mse", "map")
LAYERS = [name for name, _ in ref.LAYERS]


# ------------------------------------------------------------------ the common case

@pytest.fixture(scope="module")
def case():
    """Seeded float32 parameters, images, labels, the order of the per-pattern steps, and
    per loss kind its j. MAP's is 2 below the median image's smallest penalty (those of
    an untrained net lie near 150): p reaches about 0.1 there, so dy and hy are far from
    zero, while the float32 penalties' absolute error (about 1e-5, own_loss_derivatives)
    changes dy = onehot - p by a small part of its size."""
    rng = np.random.default_rng(19)
    params = LeNet5(seed=19, init="sqrt-fan-in").parameters()
    x = rng.uniform(-0.1, 1.175, (N_IMAGES, 1, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, N_IMAGES).astype(np.int32)
    order = rng.permutation(N_IMAGES)[:N_PATTERNS].astype(np.int32)
    j = float(np.floor(np.median(ref.forward_ref(params, x)["penalties"].min(axis=1)))) - 2
    return {"params": params, "x": x, "labels": labels, "order": order,
            "j": {"mse": ref.MAP_J, "map": j}}


_EXPECTED = {}


def expected(case, loss):
    """The reference's tensors by the names above for one loss kind (computed once)."""
    if loss not in _EXPECTED:
        p, x, labels, j = case["params"], case["x"], case["labels"], case["j"][loss]
        fwd = ref.forward_ref(p, x, labels, loss, j)
        out = {k: fwd[k] for k in LAYERS + [k + ".pre" for k in LAYERS] +
               ["penalties", "classes", "losses", "loss", "errors", "dy", "hy"]}
        for prefix, order in (("grad", 1), ("curv", 2)):
            out.update({f"{prefix} {k}": v for k, v in ref.backward_ref(p, fwd, order).items()})
        _EXPECTED[loss] = out
    return _EXPECTED[loss]


def sdlm_rates(case, loss):
    """float32 step sizes, one per parameter array, with which one pattern moves each
    array by about a tenth of its size: a large step carries its gradient to float32
    precision (a tiny one would be lost in the parameter's rounding)."""
    p, x, labels, j = case["params"], case["x"], case["labels"], case["j"][loss]
    norms = {k: [] for k in p}
    for n in case["order"]:
        g = ref.backward_ref(p, ref.forward_ref(p, x[n:n + 1], labels[n:n + 1], loss, j))
        for k in p:
            norms[k].append(np.linalg.norm(g[k]))
    return {k: np.full(v.shape, 0.1 * np.linalg.norm(v) / np.mean(norms[k]), np.float32)
            for k, v in p.items()}


def per_pattern(case, loss, rates, launch, read):
    """Drive an implementation's per-pattern SDLM steps one pattern a launch, each checked
    against the reference's step from the parameters the implementation started it with
    (so that float32 rounding does not compound from pattern to pattern: it doubles about
    every 4 patterns, tests/test_gpu_model.py). launch(k): the step of pattern order[k];
    read(): (the parameters, a float32 dict; stats (2,): loss and error sums so far; the
    recorded tensors of the last pattern by reference name, or {}).

    Returns (got, want): "step P" (patterns, *P's shape), "pattern losses", "pattern
    errors" and "pattern X" for every recorded X, stacked over the patterns."""
    x, labels, j = case["x"], case["labels"], case["j"][loss]
    got, want = {}, {}

    def add(name, g, w):
        got.setdefault(name, []).append(g)
        want.setdefault(name, []).append(w)

    before, stats_before, _ = read()
    for k, n in enumerate(case["order"]):
        launch(k)
        after, stats, recorded = read()
        fwd = ref.forward_ref(before, x[n:n + 1], labels[n:n + 1], loss, j)
        bwd = ref.backward_ref(before, fwd)
        for name in PARAMETER_SHAPES:
            add(f"step {name}", after[name].astype(np.float64) - before[name],
                -rates[name].astype(np.float64) * bwd[name])
        add("pattern losses", stats[0] - stats_before[0], fwd["losses"][0])
        add("pattern errors", stats[1] - stats_before[1], fwd["errors"])
        want.setdefault("pattern ties", []).append(fwd["penalties"][0])   # for near_ties
        own = own_loss_derivatives(recorded, labels[n:n + 1], loss, j)
        for name, value in recorded.items():
            add(f"pattern {name}", value, own[name] if name in own else
                fwd[name] if name in fwd else bwd[name[5:]])
        before, stats_before = after, stats
    got = {k: np.stack(v) for k, v in got.items()}
    return got, {k: np.stack(v) for k, v in want.items()}


def own_loss_derivatives(got, labels, loss, j):
    """The reference's dy and hy at the penalties an implementation computed, for the dy
    and hy it exposes: MAP's exponentials turn the float32 penalties' absolute error (about
    1e-5 at penalties near 150, whoever rounds them) into a relative error of that size
    in p, so dy and hy are checked as functions of the implementation's own penalties (which
    are checked on their own)."""
    if "dy" not in got:
        return {}
    y = np.asarray(got["penalties"], np.float64).reshape(-1, 10)
    _, dy, hy = ref.loss_ref(y, labels, loss, j)
    return {"dy": dy, "hy": hy}


def assert_chained(what, launch_all, read, one_by_one):
    """One launch of every pattern leaves what the one-pattern launches left, bit for bit:
    each pattern starts from its predecessor's parameters inside one launch too."""
    launch_all()
    params, stats, _ = read()
    want_params, want_stats = one_by_one
    for name in PARAMETER_SHAPES:
        np.testing.assert_array_equal(params[name], want_params[name],
                                      err_msg=f"{what}: {name} after one launch of all "
                                      "patterns differs from one pattern a launch")
    np.testing.assert_array_equal(stats, want_stats, err_msg=f"{what}: stats")
    print(f"  {what:<18} one launch of {N_PATTERNS} patterns = {N_PATTERNS} launches of one: "
          "bit for bit")


# ------------------------------------------------------------------ the comparison

def check(what, got, want, dtype=np.float32, bound=None):
    """Compare each tensor of `got` with `want`'s tensor of that name at the relative
    error bound of `dtype` (kernels/tolerance.py) unless a bound is given; "classes" and
    counts exactly, but for images whose two smallest penalties tie within the float32
    bound. Prints one line per tensor; fails naming every tensor over its bound."""
    bound = bound or RELATIVE_ERROR[np.dtype(dtype)]
    lines, failed = [], []
    for name, value in got.items():
        w = np.asarray(want[name], dtype=np.float64)
        v = np.asarray(value, dtype=np.float64)
        if v.size != w.size:
            line, ok = f"{name}: {v.size} elements, expected {w.size}", False
        elif name.endswith(("classes", "errors")):
            ties = near_ties(want["pattern ties" if name.startswith("pattern")
                                  else "penalties"])
            wrong = int(np.count_nonzero(v.reshape(w.shape) != w))
            ok = wrong <= ties
            line = f"{name:<22} {wrong} differ ({ties} near ties)"
        else:
            v = v.reshape(w.shape)
            finite = np.all(np.isfinite(v))
            err = relative_error(v, w) if finite else np.inf
            diff = np.abs(v - w) if finite else ~np.isfinite(v)
            at = np.unravel_index(np.argmax(diff), w.shape) if w.ndim else ()
            ok = bool(err <= bound)
            line = (f"{name:<22} relative error {err:.1e}  worst |diff| "
                    f"{float(diff.max()):.1e} at {tuple(int(i) for i in at)}")
        lines.append(f"  {what:<18} {line}{'' if ok else f'  > {bound:.0e} FAIL'}")
        if not ok:
            failed.append(lines[-1])
    print("\n" + "\n".join(lines))
    assert not failed, f"{what}: {len(failed)} of {len(got)} tensors off:\n" + \
        "\n".join(failed)


def near_ties(penalties):
    """Images whose two smallest reference penalties are within the float32 bound of each
    other: there either class is right."""
    low = np.sort(penalties, axis=1)[:, :2]
    return int(np.count_nonzero(low[:, 1] - low[:, 0] <=
                                RELATIVE_ERROR[np.dtype(np.float32)] * np.abs(penalties).max()))


def named_grads(prefix, grads):
    return {f"{prefix} {k}": v for k, v in grads.items()}


def unflat(flat):
    return {name: flat[PARAMETER_AT[name]:PARAMETER_AT[name] + int(np.prod(shape))]
            .reshape(shape) for name, shape in PARAMETER_SHAPES.items()}


def flat(params):
    out = np.empty(PARAMETERS_LEN, np.float32)
    for name, v in params.items():
        out[PARAMETER_AT[name]:PARAMETER_AT[name] + v.size] = v.ravel()
    return out


# ------------------------------------------------------------------ the reference

@pytest.mark.parametrize("loss", LOSSES)
def test_reference(case, loss):
    # the reference has no other implementation to agree with: its gradients are checked
    # against central differences of its own mean loss at 3 seeded entries of every
    # parameter (C3's on the table), in float64, to 1e-6 (the differences' truncation and
    # rounding error is about 1e-8 here; tests/test_reference.py checks more entries)
    p = {k: v.astype(np.float64) for k, v in case["params"].items()}
    x, labels, j = case["x"][:3], case["labels"][:3], case["j"][loss]
    grads = ref.backward_ref(p, ref.forward_ref(p, x, labels, loss, j))
    rng = np.random.default_rng(20)
    got, want, eps = {}, {}, 1e-5
    for name, value in p.items():
        allowed = np.argwhere(np.abs(value) > 0)   # C3's zeros off the table stay zeros
        picks = [tuple(allowed[i]) for i in rng.choice(len(allowed), 3, replace=False)]
        numeric = []
        for i in picks:
            old = value[i]
            value[i] = old + eps
            hi = ref.forward_ref(p, x, labels, loss, j)["loss"]
            value[i] = old - eps
            lo = ref.forward_ref(p, x, labels, loss, j)["loss"]
            value[i] = old
            numeric.append((hi - lo) / (2 * eps))
        got[name], want[name] = np.array([grads[name][i] for i in picks]), np.array(numeric)
    check(f"reference {loss}", got, want, bound=1e-6)


# ------------------------------------------------------------------ the CPU

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", LOSSES)
def test_cpu_model(case, loss, dtype):
    # LeNet5 on the CPU (lenet/ops_cpu.py, kernels/cpu.py): every activation
    # (forward_all), the mean loss and every parameter's gradient (gradients) and
    # curvature (second_derivatives). Deltas stay inside the compiled step: not exposed.
    want = expected(case, loss)
    model = LeNet5(device="cpu", dtype=dtype)
    model.set_parameters({k: v.astype(dtype) for k, v in case["params"].items()})
    x, labels, j = case["x"].astype(dtype), case["labels"], case["j"][loss]
    acts = model.forward_all(model.prepare_images(x))
    got = dict(zip(LAYERS, acts[1:7], strict=True))
    got["penalties"] = acts[7]
    got["classes"] = model.predict(x)
    got["loss"], grads = model.gradients(x, labels, loss, j)
    got.update(named_grads("grad", grads))
    got.update(named_grads("curv", model.second_derivatives(x, labels, loss, j)))
    check(f"cpu model {np.dtype(dtype).name}", got, want, dtype)


def flat_as(params, dtype):
    return np.ascontiguousarray(flat(params), dtype) if dtype == np.float32 else \
        np.concatenate([np.asarray(params[k], dtype).ravel() for k in PARAMETER_SHAPES])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", LOSSES)
def test_cpu_sdlm(case, loss, dtype):
    # kernels/cpu.py: the compiled forward exposes the penalties; the per-pattern
    # steps their effect on every parameter and the loss and error sums. Activations,
    # deltas and gradients live inside the compiled loop: not exposed.
    from lenet.kernels.cpu import penalties_cpu, sdlm_runs_cpu
    start = flat_as(case["params"], dtype)
    centers = np.ascontiguousarray(RBF_CENTERS, dtype)
    x, labels, order, j = case["x"].astype(dtype), case["labels"], case["order"], case["j"][loss]
    kind = np.array([LOSS_KINDS[loss]], np.int32)
    penalties = np.full((len(x), 10), np.nan, dtype)
    penalties_cpu(penalties, x, start, centers, C3_TABLE)
    check(f"cpu sdlm {np.dtype(dtype).name}",
          {"penalties": penalties, "classes": penalties.argmin(axis=1)}, expected(case, loss),
          dtype)

    rates32 = sdlm_rates(case, loss)
    rates = flat_as(rates32, dtype)

    def run(params, stats):
        def launch(k, count=1):     # one run of sdlm_runs_cpu, as lenet's Backend launches
            sdlm_runs_cpu(params.reshape(1, -1), rates.reshape(1, -1), stats.reshape(1, 2),
                          x.reshape(1, len(x), IN_LEN), np.zeros(1, np.int32), labels,
                          order.reshape(1, -1), k, count, kind, np.array([j]), centers,
                          C3_TABLE)
        return launch, lambda: ({k: v.copy() for k, v in unflat(params).items()},
                                stats.copy(), {})

    params, stats = start.copy(), np.zeros(2)
    launch, read = run(params, stats)
    got, want = per_pattern(case, loss, rates32, launch, read)
    check(f"cpu sdlm {np.dtype(dtype).name}", got, want, dtype)
    launch_all, read_all = run(start.copy(), np.zeros(2))
    assert_chained(f"cpu sdlm {np.dtype(dtype).name}", lambda: launch_all(0, len(order)),
                   read_all, (unflat(params), stats))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", LOSSES)
def test_cpu_train_step(case, loss, dtype):
    # kernels/cpu.py's compiled mini-batch step ("store": parameters untouched), order 1
    # then 2: every parameter's gradient and curvature and the batch's loss and errors;
    # activations and deltas live inside the compiled loop: not exposed
    from lenet.kernels.cpu import StepWorkspace, launch_step
    want = expected(case, loss)
    n = N_IMAGES
    params = flat_as(case["params"], dtype)
    ws = StepWorkspace(n, dtype, RBF_CENTERS, C3_TABLE)
    x = case["x"].astype(dtype).reshape(n, IN_LEN)
    got = {}
    for prefix, order in (("grad", 1), ("curv", 2)):
        grads, stats = np.full(PARAMETERS_LEN, np.nan, dtype), np.zeros(2)
        launch_step(ws, params, grads, np.zeros(PARAMETERS_LEN, dtype),
                    np.full(PARAMETERS_LEN, np.nan, dtype), stats, x, case["labels"],
                    np.arange(n, dtype=np.int32), 0, n, loss, case["j"][loss], order,
                    "store", 0.0, 0.0)
        if order == 1:
            got["losses"] = ws.losses(n)
            got["loss"], got["errors"] = stats[0] / n, stats[1]
        got.update(named_grads(prefix, unflat(grads)))
    np.testing.assert_array_equal(params, flat_as(case["params"], dtype))
    check(f"cpu step {loss} {np.dtype(dtype).name}", got, want, dtype)


# ------------------------------------------------------------------ the GPU

@pytest.fixture(scope="module")
def gpu(case):
    """A GPU model with the case's parameters (its flat device buffer is what the fused
    kernels read) and the images and labels on the device."""
    model = LeNet5(device="gpu")
    model.set_parameters(case["params"])
    return {"model": model, "x": cuda.to_device(case["x"].reshape(-1, IN_LEN)),
            "labels": cuda.to_device(case["labels"])}


def nan(shape, dtype=np.float32):
    return cuda.to_device(np.full(shape, -1 if np.dtype(dtype).kind == "i" else np.nan, dtype))


def test_gpu_forward(case, gpu):
    # the fused forward kernel exposes the penalties and classes only; its pieces'
    # activations are the training step's (below), which keeps them
    from lenet.kernels.forward import forward
    table, _, centers = gpu["model"].ops.fused_constants()
    n = N_IMAGES
    penalties, classes = nan((n, 10)), nan(n, np.int32)
    forward(penalties, classes, gpu["x"], gpu["model"].flat_params, table, centers)
    check("gpu forward", {"penalties": penalties.copy_to_host(),
                          "classes": classes.copy_to_host()}, expected(case, "mse"))


def test_gpu_model(case, gpu):
    # LeNet5 on the GPU: every activation (forward_all, GPUOps.activations), and on a GPU
    # the mean loss and every parameter's gradient and curvature through the fused step.
    # In the simulator those are not taken twice: the same fused step on
    # this case at orders 1 and 2 is test_gpu_train_step's, and the model's gradients()
    # and second_derivatives() around it tests/test_gpu_model.py's (MAP, against
    # backward_ref)
    loss = "map"
    model, j = gpu["model"], case["j"][loss]
    x, labels = case["x"], case["labels"]
    acts = [model.ops.to_host(a) for a in model.forward_all(model.prepare_images(x))]
    got = dict(zip(LAYERS, acts[1:7], strict=True))
    got["penalties"] = acts[7]
    got["classes"] = model.predict(x)
    if not SIMULATOR:
        got["loss"], grads = model.gradients(x, labels, loss, j)
        got.update(named_grads("grad", grads))
        got.update(named_grads("curv", model.second_derivatives(x, labels, loss, j)))
    check(f"gpu model {loss}", got, expected(case, loss))


ROWS = {"a1": "C1", "a2": "S2", "a3": "C3", "a4": "S4", "a5": "C5", "a6": "F6",
        "y": "penalties", "dy": "dy", "hy": "hy"}
DELTAS = {f"d{k + 1}": f"{name}.pre" for k, name in enumerate(LAYERS)}


@pytest.mark.parametrize("loss", LOSSES)
def test_gpu_train_step(case, gpu, loss):
    # one fused step over the whole batch ("store" mode: parameters untouched) with order 1
    # then order 2, through the model's Workspace: its rows hold every activation, dE/dy,
    # d2E/dy2, each pattern's loss and miss, and each layer's delta (curvature at order
    # 2); the flat gradient buffer every parameter's gradient (curvature)
    from lenet.kernels.train_step import STORE
    want = expected(case, loss)
    model = gpu["model"]
    n = N_IMAGES
    ws = model.ops.workspace(n)
    index = cuda.to_device(np.arange(n, dtype=np.int32))
    velocity, rates = cuda.to_device(np.zeros(PARAMETERS_LEN, np.float32)), nan(PARAMETERS_LEN)
    got = {}
    for prefix, order in (("grad", 1), ("curv", 2)):
        grads, stats = nan(PARAMETERS_LEN), cuda.to_device(np.zeros(2))
        ws.step(model.flat_params, grads, velocity, rates, stats, gpu["x"], gpu["labels"],
                index, 0, n, np.int32(LOSS_KINDS[loss]), case["j"][loss], np.int32(order),
                np.int32(STORE), 0.0, 0.0)
        rows = {name: ws.rows[name].copy_to_host() for name in ws.rows}
        if order == 1:
            got.update({ROWS[k]: rows[k] for k in ROWS})
            got["losses"] = rows["loss"][:, 0]
            got["errors"] = rows["loss"][:, 1].sum()
            total, errors = stats.copy_to_host()
            got["loss"] = total / n
        got.update({f"{prefix} {v}": rows[k] for k, v in DELTAS.items()})
        got.update(named_grads(prefix, unflat(grads.copy_to_host())))
    np.testing.assert_array_equal(model.flat_params.copy_to_host(), flat(case["params"]))
    check(f"gpu step {loss}", got,
          {**want, **own_loss_derivatives(got, case["labels"], loss, case["j"][loss])})


@pytest.mark.parametrize("loss", LOSSES)
def test_gpu_sdlm(case, gpu, loss):
    # the per-pattern kernel through the GPU backend (GPUOps.sdlm_runs, one run): every
    # parameter's step, the loss and error sums, and (record) every activation, dE/dy,
    # d2E/dy2 and delta of the pattern. Its gradients stay inside the kernel.
    from lenet.kernels import sdlm
    ops = gpu["model"].ops
    rates32 = sdlm_rates(case, loss)
    rates = cuda.to_device(flat(rates32).reshape(1, -1))
    images = gpu["x"].reshape(1, N_IMAGES, IN_LEN)
    order = cuda.to_device(case["order"].reshape(1, -1))
    image_set = cuda.to_device(np.zeros(1, np.int32))
    kinds = cuda.to_device(np.array([LOSS_KINDS[loss]], np.int32))
    js = cuda.to_device(np.array([case["j"][loss]], np.float32))

    def run():
        params = cuda.to_device(flat(case["params"]).reshape(1, -1))
        stats, scratch = cuda.to_device(np.zeros((1, 2))), nan((1, sdlm.SCRATCH_LEN))

        def launch(k, count=1):
            ops.sdlm_runs(params, rates, stats, images, image_set, gpu["labels"], order, k,
                          count, kinds, js, scratch=scratch, record=True)

        def read():
            row = scratch.copy_to_host()[0]
            recorded = {name: row[at:at + size] for name, (at, size) in sdlm.SCRATCH_AT.items()}
            tensors = {v: recorded[k] for k, v in ROWS.items()}
            tensors.update({f"grad {v}": recorded[k] for k, v in DELTAS.items()})
            return (unflat(params.copy_to_host()[0]), stats.copy_to_host()[0],
                    tensors if not np.isnan(row[0]) else {})
        return launch, read

    launch, read = run()
    got, want = per_pattern(case, loss, rates32, launch, read)
    check(f"gpu sdlm {loss}", got, want)
    one_by_one = read()[:2]
    launch_all, read_all = run()
    assert_chained(f"gpu sdlm {loss}", lambda: launch_all(0, N_PATTERNS), read_all, one_by_one)
