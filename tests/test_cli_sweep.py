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
    (f'[{{"mu": {10 ** 400}}}]', f"sweep: run run0: mu must be a positive number, not {10 ** 400}"),
    ('[{"name": "a", "mu": 1, "mu": 2}]', "the runs give 'mu' twice in one object"),
    ("[1, 2]", "sweep: run 0 must be an object of settings, not 1"),
])
def test_wrong_settings_are_one_line_naming_run_and_setting(runs, message, tmp_path, capsys):
    status, _, err = lenet_cli(("sweep", runs, "--out", tmp_path / "out", *no_data(tmp_path)),
                         capsys)
    assert status == 2 and err.count("\n") == 1 and message in err, err
    assert err.startswith("lenet sweep: error: ")
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]


def test_a_runs_file_not_utf8_or_nested_too_deeply_is_one_line(tmp_path, capsys):
    latin = tmp_path / "latin1.json"     # an editor's Latin-1 "é"
    latin.write_bytes('[{"name": "café", "mu": 1}]'.encode("latin-1"))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    for path, message in ((latin, f"the runs in {latin} are not UTF-8 text (invalid "
                                  "continuation byte at byte 14)"),
                          (deep, "the runs are not valid JSON: nested too deeply")):
        status, _, err = lenet_cli(("sweep", path, "--out", tmp_path / "out",
                                    *no_data(tmp_path)), capsys)
        assert (status, err) == (2, f"lenet sweep: error: {message}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.json", "empty", "latin1.json"]


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


# ------------------------------------------------------- what a user review found

def test_an_empty_out_is_refused(mnist_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (("sweep", "[{}]", "--out", ""), ("train", "--out", "")):
        status, _, err = lenet_cli((*args, "--data", mnist_dir, "--device", "cpu"), capsys)
        assert status == 2 and err.count("\n") == 1 and "must name" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_long_run_name_is_refused_before_training(tmp_path, capsys):
    status, _, err = lenet_cli(("sweep", json.dumps([{"name": "x" * 201}]), "--out",
                                tmp_path / "out", *no_data(tmp_path)), capsys)
    assert status == 2 and "at most 200 bytes" in err, err
    assert not (tmp_path / "out").exists()


def test_a_sweep_that_cannot_start_makes_no_directory(mnist_dir, tmp_path, capsys,
                                                      monkeypatch):
    import lenet.model

    def no_gpu(device, dtype):
        raise NotImplementedError("no CUDA GPU is available")

    monkeypatch.setattr(lenet.model, "_make_ops", no_gpu)
    status, _, err = lenet_cli(("sweep", "[{}]", "--out", tmp_path / "out", "--data",
                                mnist_dir, "--train-size", 30, "--test-size", 10), capsys)
    assert status == 2 and "no CUDA GPU" in err, err
    assert not (tmp_path / "out").exists()


def earlier_sweep(mnist_dir, out, capsys):
    """A sweep's files in `out` (run0's checkpoint and log), and their bytes."""
    status, _, err = lenet_cli(("sweep", '[{"mu": 2}]', "--out", out, "--device", "cpu",
                                "--epochs", 1, "--train-size", 30, "--test-size", 10, "--data",
                                mnist_dir, "--no-progress"), capsys)
    assert status == 0, err
    return {p.name: p.read_bytes() for p in out.iterdir()}


@pytest.mark.parametrize("what", ["interrupted", "diverged"])
def test_a_first_pass_that_ends_early_names_no_old_file_as_its_own(what, mnist_dir, tmp_path,
                                                                   capsys, monkeypatch):
    from lenet import sweep as sweep_module
    out = tmp_path / "out"
    old = earlier_sweep(mnist_dir, out, capsys)
    real = sweep_module._SideBySide.train_pass

    def ends_early(self, bar):
        if what == "interrupted":
            raise KeyboardInterrupt
        return [(float("nan"), error) for _, error in real(self, bar)]

    monkeypatch.setattr(sweep_module._SideBySide, "train_pass", ends_early)
    status, stdout, err = lenet_cli(("sweep", '[{"mu": 0.5}]', "--out", out, "--device", "cpu",
                                     "--epochs", 2, "--train-size", 30, "--test-size", 10,
                                     "--data", mnist_dir, "--no-progress"), capsys)
    if what == "interrupted":
        assert status == 130
        assert f"interrupted; no pass was completed; nothing in {out} was changed" in err
    else:
        assert status == 0, err
        assert "run0: pass 1 diverged: loss nan" in stdout
        assert "diverged: run0 (in pass 1: its files are not from this sweep)" in stdout
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old


def test_logs_and_checkpoints_say_how_each_run_was_made(mnist_dir, tmp_path, capsys):
    out = tmp_path / "out"
    status, _, err = lenet_cli(("sweep", '[{"name": "a", "seed": 3, "init": "sqrt-fan-in", '
                                '"loss": "map", "j": 5, "mu": 0.5}]', "--out", out, "--device",
                                "cpu", "--epochs", 1, "--train-size", 30, "--test-size", 10,
                                "--data", mnist_dir, "--no-progress"), capsys)
    assert status == 0, err
    (record,) = [json.loads(s) for s in (out / "a.log.jsonl").read_text().splitlines()]
    assert (record["seed"], record["init"], record["j"], record["batch_size"]) == \
        (3, "sqrt-fan-in", 5.0, 1)
    made = LeNet5.load(out / "a.npz").provenance
    assert made["start"] == {"init": "sqrt-fan-in", "seed": 3}
    assert (made["recipe"], made["loss"], made["j"], made["mu"], made["seed"], made["passes"],
            made["patterns"], made["dataset"], made["test_size"]) == \
        ("lecun", "map", 5.0, 0.5, 3, 1, 30, "mnist", 10)
    assert made["test_error"] == record["test_error"]
