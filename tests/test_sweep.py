"""Sweeps (lenet.sweep): many runs of the per-pattern recipe side by side are each
the run `train` makes alone with the same settings, bit for bit: on the CPU (one run per
core at once) and on the GPU (one block each in one launch of kernels/sdlm.py; in the CUDA
simulator with two tiny runs). The kernel's own check of runs side by side is
tests/test_sdlm.py's."""

import json
import re

import numpy as np
import pytest
from conftest import SIMULATOR

from lenet import LeNet5
from lenet.sweep import sweep, sweep_runs
from lenet.train import train


def data(n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(np.float32), rng.integers(0, 10, n)


def strip(record):
    """A log record without what differs between a sweep and a run alone."""
    return {k: v for k, v in record.items() if k not in ("seconds", "patterns_per_second",
                                                          "sweep")}


def alone(run, device, train_set, test_set, epochs, tmp_path):
    model = LeNet5(device=device, seed=run.get("seed", 0), init=run.get("init", "lush"))
    options = {k: v for k, v in run.items() if k not in ("name", "seed", "init")}
    records = train(model, train_set, test_set, epochs=epochs, progress=False,
                    out=lambda s: None, seed=run.get("seed", 0), evaluate_train=not SIMULATOR,
                    **options)
    return model.parameters(), records


def check_sweep(device, runs, n, epochs, tmp_path):
    train_set, test_set = data(n, seed=1), data(2, seed=2)
    out = []
    got = sweep(runs, train_set, test_set, epochs=epochs, device=device, out_dir=tmp_path,
                progress=False, out=out.append, evaluate_train=not SIMULATOR)
    assert out[0].startswith(f"sweep of {len(runs)} runs")
    for run in sweep_runs(runs):
        params, records = alone(run, device, train_set, test_set, epochs, tmp_path)
        name = run["name"]
        swept = LeNet5.load(tmp_path / f"{name}.npz").parameters()
        for k in params:
            np.testing.assert_array_equal(swept[k], params[k], err_msg=f"{name} {k}")
        logged = [json.loads(line) for line in
                  (tmp_path / f"{name}.log.jsonl").read_text().splitlines()]
        assert [strip(r) for r in logged] == [strip(r) for r in records] == \
            [strip(r) for r in got[name]]
        assert logged[0]["sweep"] == {"run": name, "runs": len(runs)}


def test_a_cpu_sweep_is_its_runs(tmp_path):
    runs = [{"name": "a", "recipe": "lecun", "seed": 3},
            {"name": "b", "recipe": "lecun", "seed": 4, "mu": 0.5, "loss": "map", "j": 30.0,
             "shuffle": False, "hessian_sample": "consecutive", "distort": True},
            {"name": "c", "recipe": "paper", "seed": 5, "init": "sqrt-fan-in", "mu": 0.2,
             "schedule": "paper-floor"}]
    check_sweep("cpu", runs, n=30, epochs=2, tmp_path=tmp_path)


def test_a_sweep_runs_where_lenet5_does_unless_told():
    # device="auto" by default, as LeNet5's: the GPU when one is present (not the
    # simulator), else the CPU; a sweep without a GPU must not ask for one
    from lenet.model import gpu_available
    records = sweep([{"seed": 0}], data(3, seed=1), data(2, seed=2), epochs=1,
                    progress=False, out=lambda s: None, evaluate_train=False)
    assert records["run0"][0]["device"] == ("gpu" if gpu_available() else "cpu")


def test_a_gpu_sweep_is_its_runs(tmp_path, monkeypatch):
    # two tiny runs (one distorted, MAP) against each alone; in the simulator a pass over
    # 2 patterns with the curvature estimated on 1 of them (a sweep and a run alone take
    # the same SDLM_HESSIAN_PATTERNS): the seeds then draw different curvature patterns
    # (0 and 1) and orders ([0, 1] and [1, 0]; with both patterns, both orders were
    # [1, 0]), so a run given another's draws fails too. One fused step fewer per pass.
    if SIMULATOR:
        monkeypatch.setattr("lenet.train.SDLM_HESSIAN_PATTERNS", 1)
    runs = [{"name": "plain", "seed": 1},
            {"name": "other", "seed": 2, "mu": 0.5, "loss": "map", "j": 30.0, "distort": True}]
    check_sweep("gpu", runs, n=2 if SIMULATOR else 300, epochs=1 if SIMULATOR else 2,
                tmp_path=tmp_path)


def test_a_sweep_checks_its_sets_and_names_before_a_pass(tmp_path):
    runs, train_set, said = [{"name": "a", "mu": 1.0}], data(3, seed=1), []
    cases = [((data(2, seed=2)[0], [1, 2, 3]), {}, "the test set: labels must have shape"),
             (None, {}, "no test set: a sweep measures every run on one"),
             (data(2, seed=2), {"classes": ("cat", "dog")}, "are not ten strings"),
             (data(2, seed=2), {"dataset": 123}, "data set 123 is not a name")]
    for test_set, options, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            sweep(runs, train_set, test_set, epochs=1, device="cpu", out_dir=tmp_path / "o",
                  progress=False, out=said.append, **options)
    assert said == [] and not (tmp_path / "o").exists()


def test_sweep_runs_from_a_grid():
    runs = sweep_runs({"base": {"mu": 0.5}, "grid": {"seed": [0, 1], "loss": ["mse", "map"]}})
    assert [r["name"] for r in runs] == ["seed=0,loss=mse", "seed=0,loss=map",
                                         "seed=1,loss=mse", "seed=1,loss=map"]
    assert all(r["mu"] == 0.5 and r["recipe"] == "lecun" for r in runs)


@pytest.mark.parametrize("spec, message", [
    ([{"sede": 1}], "run 0 has unknown setting 'sede'"),
    ([{"recipe": "sgd"}], "recipe 'sgd'; a sweep runs the per-pattern recipes"),
    ([{"name": "x"}, {"name": "x"}], "two runs are named 'x'"),
    ([], "no runs"),
    ({"grid": {"mu": []}}, "grid 'mu' must be a non-empty list"),
])
def test_sweep_mistakes_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        sweep_runs(spec)


# each setting as lenet train checks its option: type and range, one line naming the run
BAD_SETTINGS = [
    ("seed", -1, "seed must be a whole number of 0 or more, not -1"),
    ("seed", 1.5, "seed must be a whole number of 0 or more, not 1.5"),
    ("seed", "3", "seed must be a whole number of 0 or more, not '3'"),
    ("seed", True, "seed must be a whole number of 0 or more, not True"),
    ("mu", 0, "mu must be a positive number, not 0"),
    ("mu", -0.5, "mu must be a positive number, not -0.5"),
    ("mu", float("inf"), "mu must be a positive number, not inf"),
    ("mu", "0.5", "mu must be a positive number, not '0.5'"),
    ("j", float("nan"), "j must be a positive number, not nan"),
    ("j", -10, "j must be a positive number, not -10"),
    ("init", "xavier", "init must be one of fan-in, sqrt-fan-in, lush, not 'xavier'"),
    ("loss", "MAP", "loss must be one of mse, map, not 'MAP'"),
    ("schedule", "cosine", "schedule must be one of paper, paper-floor, not 'cosine'"),
    ("hessian_sample", None, "hessian_sample must be one of random, consecutive, not None"),
    ("shuffle", "false", "shuffle must be true or false, not 'false'"),
    ("distort", 1, "distort must be true or false, not 1"),
]


GOOD = {"seed": 0, "mu": 0.5, "j": 10.0, "init": "lush", "loss": "mse", "schedule": "paper",
        "hessian_sample": "random", "shuffle": True, "distort": False}


@pytest.mark.parametrize("key, value, message", BAD_SETTINGS)
def test_a_wrong_setting_is_named_with_its_run(key, value, message):
    runs = [{"name": "fine", "seed": 1, "mu": 0.5}, {"name": "odd", key: value}]
    with pytest.raises(ValueError, match=f"^sweep: run odd: {re.escape(message)}$"):
        sweep_runs(runs)
    with pytest.raises(ValueError, match=f"^sweep: run {re.escape(key)}=.*: "
                       f"{re.escape(message)}$"):
        sweep_runs({"base": {"recipe": "lecun"}, "grid": {key: [GOOD[key], value]}})


@pytest.mark.parametrize("key", ["mu", "j"])
def test_a_whole_number_past_floats_range_is_refused_not_overflowed(key):
    with pytest.raises(ValueError, match=f"^sweep: run odd: {key} must be a positive number, "
                       f"not {10 ** 400}$"):
        sweep_runs([{"name": "odd", key: 10 ** 400}])


def test_right_settings_of_every_kind_are_taken():
    run = {"name": "all", "recipe": "paper", "seed": np.int64(7), "init": "sqrt-fan-in",
           "mu": np.float32(0.25), "loss": "map", "j": 5, "schedule": "paper-floor",
           "shuffle": False, "hessian_sample": "consecutive", "distort": np.bool_(True)}
    assert sweep_runs([run]) == [run]
    defaults = {"name": "d", "init": None, "mu": None, "loss": None, "schedule": None}
    assert sweep_runs([defaults]) == [dict(defaults, recipe="lecun")]


@pytest.mark.parametrize("spec, message", [
    ([{"mu": 1}, 5], "run 1 must be an object of settings, not 5"),
    ({"base": [], "grid": {}}, "'base' must be an object of settings, not []"),
    ({"grid": [["mu", 1]]}, "'grid' must be an object of settings"),
])
def test_a_sweep_that_is_not_objects_is_refused(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sweep_runs(spec)
