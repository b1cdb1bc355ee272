"""The trained weights shipped with the package, and the holdout they were chosen on.

LeNet5.pretrained() must load lenet/weights/lenet5-mnist.npz and classify the MNIST
test set with exactly the test error its provenance records (recomputed here from the
labels), its provenance must agree with the committed logs of the choice
(bench/results/2026-12-06-cpu-validation/: the chosen setting has the lowest mean
validation error), and `lenet eval`, `predict` and `show` must use it when no
--checkpoint is given. `lenet train --validation N` must hold out exactly the last N
training images: the run trains as one on the others alone would, bit for bit, records
the error on the N held out, and never reads the test set.

    LENET_DATA=../shared/data/mnist python -m pytest -q tests/test_pretrained.py
"""

import configparser
import glob
import json
import os
import re
import statistics
import subprocess
import sys

import numpy as np
import pytest

from lenet import cli
from lenet import model as lenet_model
from lenet.data import find_file, load_mnist, preprocess
from lenet.model import PRETRAINED, LeNet5
from lenet.train import default_settings, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results", "2026-12-06-cpu-validation")


def lenet(*args):
    """`python -m lenet ARGS` from the repository root: (status, stdout, stderr)."""
    result = subprocess.run([sys.executable, "-m", "lenet", *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def shipped():
    return LeNet5.pretrained(device="cpu")


@pytest.fixture(scope="module")
def test_set(mnist_dir):
    return load_mnist("test", mnist_dir)


# ------------------------------------------------------------- the weights

def test_pretrained_has_the_recorded_test_error(shipped, test_set):
    images, labels = test_set
    errors = int(np.sum(shipped.predict(preprocess(images)) != labels))
    recorded = shipped.provenance["test_error"]
    assert errors / len(labels) == recorded, (errors, recorded)
    assert errors < 130  # the paper's neighbourhood (0.95%), not an untrained network
    assert shipped.classes == tuple("0123456789") and shipped.dataset == "mnist"


def test_provenance_agrees_with_the_committed_logs(shipped):
    p = shipped.provenance
    assert p["recipe"] == "lecun" and isinstance(p["seed"], int)
    assert re.fullmatch(r"[0-9a-f]{40}", p["commit"])
    assert {"mu", "loss", "distort", "schedule", "init", "epochs"} <= set(p["settings"])
    # the validation logs: every setting's errors after pass 20, per seed
    means = {}
    for path in sorted(glob.glob(os.path.join(RESULTS, "*-seed*.log.jsonl"))):
        setting = os.path.basename(path).rsplit("-seed", 1)[0]
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        assert all(r["test_error"] is None for r in records)  # the test set unread
        if len(records) == 20:
            means.setdefault(setting, []).append(records[-1]["validation_error"])
    seeds = len(p["validation"]["seeds"])  # compared on the first `seeds` of each setting
    compared = {s: e[:seeds] for s, e in means.items() if len(e) >= seeds}
    assert set(p["validation"]["settings_compared"]) == set(compared)
    best = min(compared, key=lambda s: statistics.mean(compared[s]))
    assert p["validation"]["setting"] == best
    on = len(p["validation"]["chosen_on_seeds"])  # the seeds the choice was made on
    assert p["validation"]["setting"] == min(compared,
                                             key=lambda s: statistics.mean(compared[s][:on]))
    assert p["validation_error"] == pytest.approx(statistics.mean(compared[best]), rel=1e-12)
    # the final run's log: the shipped parameters are its last pass's
    with open(os.path.join(RESULTS, "final.log.jsonl")) as f:
        final = [json.loads(line) for line in f if line.strip()]
    assert len(final) == p["settings"]["epochs"] and final[-1]["test_error"] == p["test_error"]
    assert final[-1]["mu"] == p["settings"]["mu"] and final[-1]["distort"] == \
        p["settings"]["distort"]


def test_pretrained_without_weights_says_so(monkeypatch, tmp_path, capsys):
    missing = str(tmp_path / "weights" / "lenet5-mnist.npz")
    monkeypatch.setattr(lenet_model, "PRETRAINED", missing)
    with pytest.raises(FileNotFoundError, match="no trained weights in this installation"):
        LeNet5.pretrained()
    assert cli.main(["eval", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no --checkpoint given and no trained weights" in err


def test_the_weights_are_package_data():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    assert "weights/*.npz" in config["options.package_data"]["lenet"].split()
    assert os.path.getsize(PRETRAINED) < 300_000
    ignored = subprocess.run(["git", "check-ignore", "-q", PRETRAINED], cwd=ROOT)
    assert ignored.returncode == 1  # git does not ignore it (*.npz is ignored elsewhere)


# ----------------------------------------------------- the commands without it

def test_eval_predict_show_default_to_the_shipped_weights(shipped, test_set, mnist_dir,
                                                          tmp_path):
    status, stdout, stderr = lenet("eval", "--device", "cpu", "--data", mnist_dir,
                                   "--no-progress")
    assert status == 0, stderr
    errors = re.search(r"test error: [\d.]+% \((\d+) of 10000\) \[(.+?),", stdout)
    assert int(errors[1]) == round(10000 * shipped.provenance["test_error"])
    assert os.path.samefile(errors[2], PRETRAINED)

    chosen = [0, 1, 2, 4242, 9999]
    idx = find_file(mnist_dir, "t10k-images-idx3-ubyte")
    status, stdout, stderr = lenet("predict", "--device", "cpu", "--json", "--idx", idx,
                                   "--index", *chosen)
    assert status == 0, stderr
    expected = shipped.forward(preprocess(test_set[0][chosen]))
    out = json.loads(stdout)
    np.testing.assert_array_equal(np.array([r["penalties"] for r in out], np.float32),
                                  expected)
    assert [r["digit"] for r in out] == list(expected.argmin(axis=1))

    status, stdout, stderr = lenet("show", "maps", "--device", "cpu", "--index", 3,
                                   "--data", mnist_dir, "--out", tmp_path)
    assert status == 0, stderr
    assert (tmp_path / "maps.png").is_file()

    for command in (["eval"], ["predict"], ["show", "maps"], ["show", "errors"]):
        status, stdout, _ = lenet(*command, "--help")
        assert status == 0 and "lenet/weights/lenet5-mnist.npz" in stdout, command


# -------------------------------------------------------------- the holdout

def test_validation_holds_out_exactly_the_last_n(mnist_dir, tmp_path):
    # only the training files: the held-out run must not read the test set
    plain = tmp_path / "train-only"
    plain.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        found = find_file(mnist_dir, name)
        os.symlink(os.path.abspath(found), plain / os.path.basename(found))
    common = ("--device", "cpu", "--epochs", 2, "--fast", "--no-progress", "--seed", 3)
    status, stdout, stderr = lenet("train", "--data", plain, "--train-size", 300,
                                   "--validation", 100, *common, "--out", tmp_path / "a.npz")
    assert status == 0, stderr
    assert "(200 training, the last 100 held out for validation; the test set is not " \
           "read)" in stdout
    assert "recipe lecun, loss map, 2 passes" in stdout  # no --recipe: the paper's
    assert re.search(r"^pass  2: .* validation error [\d.]+%  \(", stdout, re.M), stdout
    # the same run on the first 200 alone: the same parameters, bit for bit
    status, _, stderr = lenet("train", "--data", mnist_dir, "--train-size", 200,
                              "--test-size", 10, *common, "--out", tmp_path / "b.npz")
    assert status == 0, stderr
    held_out, alone = LeNet5.load(tmp_path / "a.npz"), LeNet5.load(tmp_path / "b.npz")
    for name, values in alone.parameters().items():
        np.testing.assert_array_equal(held_out.parameters()[name], values, err_msg=name)
    # its log: the error on training images 200..299, recomputed here; no test error
    with open(tmp_path / "a.log.jsonl") as f:
        records = [json.loads(line) for line in f]
    images, labels = load_mnist("train", mnist_dir)
    wrong = held_out.predict(preprocess(images[200:300])) != labels[200:300]
    assert records[-1]["validation_error"] == np.mean(wrong)
    assert [r["validation_size"] for r in records] == [100, 100]
    assert [r["test_error"] for r in records] == [None, None]


def test_validation_sizes_that_leave_nothing_are_refused(mnist_dir, tmp_path):
    for n, message in ((300, "--validation 300 would hold out all 300 training images"),
                       (0, "--validation must be at least 1, not 0")):
        status, stdout, stderr = lenet("train", "--data", mnist_dir, "--train-size", 300,
                                       "--validation", n, "--device", "cpu",
                                       "--out", tmp_path / "x.npz")
        assert status == 2 and stderr.count("\n") == 1 and message in stderr, stderr
    assert not os.listdir(tmp_path)


def test_the_default_recipe_is_the_papers_for_20_passes():
    args = cli.build_parser().parse_args(["train"])
    assert args.recipe == "lecun" and args.epochs is None
    assert default_settings("lecun")["epochs"] == 20


def test_train_needs_a_set_to_evaluate():
    x = np.zeros((4, 1, 32, 32), np.float32)
    with pytest.raises(ValueError, match="no test set and no validation set"):
        train(LeNet5(seed=0), (x, np.zeros(4, np.int64)), None, epochs=1,
              progress=False, out=lambda line: None)
