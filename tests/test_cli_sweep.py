"""`lenet sweep` end to end on the CPU (MNIST, a few digits): every run's checkpoint and
log, each what `lenet train` writes for the same settings; the user's mistakes as one
line. The GPU's sweep is tests/test_sweep.py's."""

import json

import numpy as np
import pytest
from conftest import lenet_cli

from lenet.model import LeNet5


def test_sweep_writes_each_runs_checkpoint_and_log(mnist_dir, tmp_path, capsys):
    common = ("--device", "cpu", "--epochs", 1, "--train-size", 30, "--test-size", 20,
              "--data", mnist_dir, "--no-progress")
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps({"base": {"mu": 0.5}, "grid": {"seed": [1, 2]}}))
    status, out, err = lenet_cli(("sweep", runs, "--out", tmp_path / "sweep", *common), capsys)
    assert status == 0, err
    assert "sweep of 2 runs" in out and "seed=2 pass  1:" in out
    for seed in (1, 2):
        status, _, err = lenet_cli(("train", "--recipe", "lecun", "--mu", 0.5, "--seed", seed,
                              "--out", tmp_path / f"alone{seed}.npz", *common), capsys)
        assert status == 0, err
        swept = LeNet5.load(tmp_path / "sweep" / f"seed={seed}.npz")
        alone = LeNet5.load(tmp_path / f"alone{seed}.npz")
        assert swept.dataset == alone.dataset == "mnist"
        for k, v in alone.parameters().items():
            np.testing.assert_array_equal(swept.parameters()[k], v, err_msg=k)
        (a,) = [json.loads(s) for s in (tmp_path / f"alone{seed}.log.jsonl").read_text()
                .splitlines()]
        (b,) = [json.loads(s) for s in (tmp_path / "sweep" / f"seed={seed}.log.jsonl")
                .read_text().splitlines()]
        for key in ("train_loss", "train_error", "test_error", "mu", "step_size", "recipe"):
            assert a[key] == b[key], key


@pytest.mark.parametrize("runs, message", [
    ('[{"mu": 1, "sede": 2}]', "run 0 has unknown setting 'sede'"),
    ("[{", "the runs are not valid JSON"),
    ("no-such-file.json", "cannot read the runs from no-such-file.json"),
    ('[{"name": "../x"}]', "run name '../x' cannot be a file name"),
])
def test_sweep_mistakes_are_one_line(runs, message, tmp_path, capsys):
    status, _, err = lenet_cli(("sweep", runs, "--out", tmp_path, "--device", "cpu"), capsys)
    assert status == 2 and err.count("\n") == 1 and message in err, err


def no_data(tmp_path):
    """Options for a sweep that must be refused before it reads data: an empty data
    directory (a run wrongly taken fails at once instead of training on MNIST)."""
    (tmp_path / "empty").mkdir(exist_ok=True)
    return ("--data", tmp_path / "empty", "--device", "cpu", "--epochs", 1)


@pytest.mark.parametrize("runs, message", [
    ('[{"name": "a", "seed": "1"}]', "sweep: run a: seed must be a whole number of 0 or "
     "more, not '1'"),
    ('{"grid": {"mu": [0.5, -1]}}', "sweep: run mu=-1: mu must be a positive number"),
    ('[{"shuffle": "no"}]', "sweep: run run0: shuffle must be true or false, not 'no'"),
    ('[{"mu": NaN}]', "sweep: run run0: mu must be a positive number, not nan"),
    ('[{"name": "a", "mu": 1, "mu": 2}]', "the runs give 'mu' twice in one object"),
    ("[1, 2]", "sweep: run 0 must be an object of settings, not 1"),
])
def test_wrong_settings_are_one_line_naming_run_and_setting(runs, message, tmp_path, capsys):
    status, _, err = lenet_cli(("sweep", runs, "--out", tmp_path / "out", *no_data(tmp_path)),
                         capsys)
    assert status == 2 and err.count("\n") == 1 and message in err, err
    assert err.startswith("lenet sweep: error: ")
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]


# (lenet train's option, the sweep's setting, a value train refuses)
REFUSED_BY_TRAIN = [("--seed", "seed", -3), ("--mu", "mu", 0), ("--mu", "mu", -1e-3),
                    ("--mu", "mu", "inf"), ("--init", "init", "xavier"),
                    ("--loss", "loss", "MAP"), ("--schedule", "schedule", "cosine"),
                    ("--hessian-sample", "hessian_sample", "all")]


@pytest.mark.parametrize("option, key, value", REFUSED_BY_TRAIN)
def test_a_sweep_refuses_what_train_refuses(option, key, value, tmp_path, capsys):
    # train refuses the option (before reading any data) ...
    status, _, err = lenet_cli(("train", "--recipe", "lecun", f"{option}={value}",
                          "--out", tmp_path / "t.npz", *no_data(tmp_path)), capsys)
    assert status == 2 and option in err, err
    # ... and a sweep the same setting, naming the run and the setting
    setting = float(value) if value == "inf" else value
    runs = json.dumps([{"name": "x", key: setting}], allow_nan=True)
    status, _, err = lenet_cli(("sweep", runs, "--out", tmp_path / "s", *no_data(tmp_path)),
                         capsys)
    assert status == 2 and err.count("\n") == 1 and f"run x: {key}" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]


@pytest.mark.parametrize("key, value, message", [
    ("mu", -1, "--mu must be a positive number, not -1"),
    ("seed", -2, "--seed must be 0 or more, not -2"),
    ("loss", "MAP", "argument --loss: invalid choice: 'MAP'"),
])
def test_lenet_sweep_checks_each_run_with_train_s_own_parser(key, value, message, tmp_path,
                                                             capsys, monkeypatch):
    # with lenet.sweep's checks of settings switched off, `lenet sweep` still refuses the
    # run: through `lenet train`'s parser and checks, in their words
    import lenet.sweep
    monkeypatch.setattr(lenet.sweep, "sweep_setting_error", lambda key, value: None)
    assert lenet.sweep.sweep_runs([{key: value}])[0][key] == value
    runs = json.dumps([{"name": "y", key: value}])
    status, _, err = lenet_cli(("sweep", runs, "--out", tmp_path / "out", *no_data(tmp_path)),
                         capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert f"sweep: run y: {message}" in err, err
