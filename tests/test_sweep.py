"""Sweeps (lenet.train.sweep): many runs of the per-pattern recipe side by side are each
the run `train` makes alone with the same settings, bit for bit: on the CPU (one run after
another) and on the GPU (one block each in one launch of kernels/sdlm.py; in the CUDA
simulator with two tiny runs). The kernel's own check of runs side by side is
tests/test_sdlm_kernel.py's."""

import json

import numpy as np
import pytest
from conftest import SIMULATOR

from lenet import LeNet5
from lenet.train import sweep, sweep_runs, train


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


def test_a_gpu_sweep_is_its_runs(tmp_path):
    # two tiny runs (one distorted, MAP) against each alone; in the simulator a pass
    # over 2 patterns (its curvature estimate on those 2)
    runs = [{"name": "plain", "seed": 1},
            {"name": "other", "seed": 2, "mu": 0.5, "loss": "map", "j": 30.0, "distort": True}]
    check_sweep("gpu", runs, n=2 if SIMULATOR else 300, epochs=1 if SIMULATOR else 2,
                tmp_path=tmp_path)


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
