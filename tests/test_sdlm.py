"""The per-pattern SDLM kernel (kernels/sdlm.py) phase by phase against kernels/reference.py:
after one pattern, every activation, delta and parameter step it wrote equals the float64
reference's; a sweep of two runs in one launch equals the two runs launched alone, bit
for bit; a C3 table of another number of pairs is refused. In the CUDA simulator one
pattern takes seconds; the end-to-end check against the layer-by-layer Trainer is
tests/test_gpu_model.py's."""

import numpy as np
import pytest
from c3_tables import table_of
from numba import cuda

from lenet import LeNet5
from lenet.kernels import forward_pieces as L
from lenet.kernels import reference as ref
from lenet.kernels import sdlm
from lenet.kernels.architecture import C3_TABLE, LOSS_KINDS, PARAMETER_SHAPES, RBF_CENTERS
from lenet.kernels.backward_pieces import c3_out_table
from lenet.kernels.tolerance import assert_close

# what the kernel records (kernels/sdlm.py's names) in the order it makes them, and the
# names of forward_ref's tensors (activations a1..a6, penalties y, dy, hy) and of
# backward_ref's (deltas d6..d1) that it must equal
LAYERS = [name for name, _ in ref.LAYERS]
FORWARD = {**{f"a{i}": name for i, name in enumerate(LAYERS, 1)},
           "y": "penalties", "dy": "dy", "hy": "hy"}
DELTAS = {f"d{i}": name + ".pre" for i, name in reversed(list(enumerate(LAYERS, 1)))}


def flat(params):
    return np.concatenate([params[name].ravel() for name in L.PARAMETER_SHAPES])


def unflat(buffer):
    return {name: buffer[L.PARAMETER_AT[name]:L.PARAMETER_AT[name] + int(np.prod(shape))]
            .reshape(shape) for name, shape in L.PARAMETER_SHAPES.items()}


class Runs:
    """Device buffers for R runs of sdlm_steps over a few images."""

    def __init__(self, params, rates, images, labels, orders, kinds, js, image_set=None):
        r = len(params)
        self.params = cuda.to_device(np.stack([flat(p) for p in params]).astype(np.float32))
        self.rates = cuda.to_device(np.stack(rates).astype(np.float32))
        self.stats = cuda.to_device(np.zeros((r, 2)))
        self.scratch = cuda.to_device(np.full((r, sdlm.SCRATCH_LEN), np.nan, np.float32))
        self.images = cuda.to_device(images.reshape(-1, len(labels), L.IN_LEN))
        self.image_set = cuda.to_device(np.zeros(r, np.int32) if image_set is None
                                        else np.asarray(image_set, np.int32))
        self.labels = cuda.to_device(np.asarray(labels, np.int32))
        self.order = cuda.to_device(np.asarray(orders, np.int32))
        self.kinds = cuda.to_device(np.array([LOSS_KINDS[k] for k in kinds], np.int32))
        self.js = cuda.to_device(np.asarray(js, np.float32))
        table = C3_TABLE
        self.table, self.out_table = L.c3_table(table), c3_out_table(table)
        self.centers = cuda.to_device(RBF_CENTERS.astype(np.float32).ravel())

    def steps(self, start, count, record=False):
        sdlm.sdlm_steps(self.params, self.rates, self.stats, self.scratch, self.images,
                        self.image_set, self.labels, self.order, start, count, self.kinds,
                        self.js, self.centers, self.table, self.out_table, record)

    def recorded(self, run, name):
        at, n = sdlm.SCRATCH_AT[name]
        return self.scratch.copy_to_host()[run, at:at + n]


def images(n, seed):
    return np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(np.float32)


def start_params(seed):
    return LeNet5(seed=seed, init="sqrt-fan-in").parameters()


def test_one_pattern_phase_by_phase():
    # MAP with j near the smallest penalty: dy and hy both non-trivial. One rate per
    # parameter array, chosen so that its step is about a tenth of it: the step then
    # carries the gradient to float32 precision (a tiny step is lost in rounding)
    params, x = start_params(3), images(2, seed=4)
    j = float(np.floor(ref.forward_ref(params, x[1:])["penalties"].min()))
    fwd = ref.forward_ref(params, x[1:], [7], "map", j)
    bwd = ref.backward_ref(params, fwd)
    assert fwd["hy"].max() > 0.01 and np.abs(fwd["dy"]).max() > 0.01
    rates = flat({k: np.full(shape, 0.1 * np.linalg.norm(params[k]) / np.linalg.norm(bwd[k]),
                             np.float32) for k, shape in PARAMETER_SHAPES.items()})
    runs = Runs([params], [rates], x, [3, 7], [[1, 0]], ["map"], [j])
    runs.steps(0, 1, record=True)
    for tensors, names in ((fwd, FORWARD), (bwd, DELTAS)):
        for name, want in names.items():
            assert_close(runs.recorded(0, name), tensors[want].ravel(), what=f"{name} ({want})")
    assert_close(runs.recorded(0, "x"), x[1].ravel(), what="staged image")
    after = unflat(runs.params.copy_to_host()[0])
    for name in PARAMETER_SHAPES:
        step = after[name].astype(np.float64) - params[name]
        want = -unflat(rates)[name].astype(np.float64) * bwd[name]
        assert_close(step, want, what=f"{name} step")
    assert np.all(after["C3.weight"][~C3_TABLE.T] == 0)    # off the table: untouched zeros
    loss, errors = runs.stats.copy_to_host()[0]
    assert abs(loss - fwd["loss"]) <= 1e-5 * abs(fwd["loss"])
    assert errors == fwd["errors"]


def test_rates():
    hess = np.random.default_rng(0).uniform(0, 3, L.PARAMETERS_LEN).astype(np.float32)
    rates = cuda.to_device(np.full(L.PARAMETERS_LEN, np.nan, np.float32))
    sdlm.sdlm_rates(rates, cuda.to_device(hess), 5e-4, 0.02)
    want = np.float32(5e-4) / (np.float32(0.02) + hess)
    np.testing.assert_array_equal(rates.copy_to_host(), want)


def test_a_sweep_is_its_runs_side_by_side():
    # two runs with their own parameters, rates, loss, order and image set (the second a
    # "distorted" copy) in one launch give exactly what each gives launched alone
    x = images(3, seed=5)
    sets = np.stack([x, x[:, :, ::-1].copy()])     # image set 1: the images flipped
    labels = [2, 9, 4]
    rng = np.random.default_rng(6)
    params = [start_params(1), start_params(2)]
    rates = [rng.uniform(1e-3, 1e-2, L.PARAMETERS_LEN) for _ in params]
    orders, kinds, js, image_set = [[2, 0], [1, 2]], ["mse", "map"], [10.0, 5.0], [0, 1]
    both = Runs(params, rates, sets, labels, orders, kinds, js, image_set)
    both.steps(1, 1)       # one pattern (the second of each order): the sequence of
    for r in range(2):     # patterns is the end-to-end test's (tests/test_gpu_model.py)
        alone = Runs([params[r]], [rates[r]], sets, labels, [orders[r]], [kinds[r]], [js[r]],
                     [image_set[r]])
        alone.steps(1, 1)
        np.testing.assert_array_equal(both.params.copy_to_host()[r],
                                      alone.params.copy_to_host()[0])
        np.testing.assert_array_equal(both.stats.copy_to_host()[r], alone.stats.copy_to_host()[0])
    assert not np.array_equal(both.params.copy_to_host()[0], flat(params[0]))


def test_wrong_shapes_are_refused_by_name():
    runs = Runs([start_params(1)], [np.ones(L.PARAMETERS_LEN)], images(2, 0), [1, 2], [[0, 1]],
                ["mse"], [10.0])
    runs.order = cuda.to_device(np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match=r"sdlm_steps: order has shape \(2, 2\), expected "
                                         r"\(1, 2\)"):
        runs.steps(0, 1)
    runs.order = cuda.to_device(np.zeros((1, 2), np.int32))
    with pytest.raises(ValueError, match=r"patterns 1\.\.3 outside the order of 2"):
        runs.steps(1, 2)


@pytest.mark.parametrize("pairs", [61, 59])
def test_a_table_of_other_pairs_is_refused(pairs):
    # the C3 gradient tasks and step loop are sized for Table I's 60 pairs
    runs = Runs([start_params(1)], [np.ones(L.PARAMETERS_LEN)], images(2, 0), [1, 2], [[0, 1]],
                ["mse"], [10.0])
    table = table_of(pairs)
    runs.table, runs.out_table = L.c3_table(table), c3_out_table(table)
    with pytest.raises(ValueError, match=f"^sdlm_steps: the C3 table connects {pairs} .* "
                                         "pairs; the fused kernels take Table I's 60$"):
        runs.steps(0, 2)
    np.testing.assert_array_equal(runs.params.copy_to_host()[0], flat(start_params(1)))
    assert np.isnan(runs.scratch.copy_to_host()).all()
