"""`lenet sweep` end to end on the CPU (MNIST, a few digits): every run's checkpoint and
log, each what `lenet train` writes for the same settings; the user's mistakes as one
line. The GPU's sweep is tests/test_sweep.py's."""

import json

import numpy as np
import pytest

from lenet.model import LeNet5


def run(args, capsys):
    from lenet.cli import main
    try:
        status = main([str(a) for a in args])
    except SystemExit as e:
        status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err


def test_sweep_writes_each_runs_checkpoint_and_log(mnist_dir, tmp_path, capsys):
    common = ("--device", "cpu", "--epochs", 1, "--train-size", 30, "--test-size", 20,
              "--data", mnist_dir, "--no-progress")
    runs = tmp_path / "runs.json"
    runs.write_text(json.dumps({"base": {"mu": 0.5}, "grid": {"seed": [1, 2]}}))
    status, out, err = run(("sweep", runs, "--out", tmp_path / "sweep", *common), capsys)
    assert status == 0, err
    assert "sweep of 2 runs" in out and "seed=2 pass  1:" in out
    for seed in (1, 2):
        status, _, err = run(("train", "--recipe", "lecun", "--mu", 0.5, "--seed", seed,
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
    status, _, err = run(("sweep", runs, "--out", tmp_path, "--device", "cpu"), capsys)
    assert status == 2 and err.count("\n") == 1 and message in err, err
