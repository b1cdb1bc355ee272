"""The reproduction's command-line options end to end (`python -m lenet`, a few hundred
digits on the CPU): --recipe lecun, --init lush, --schedule, --ordered,
--hessian-sample, --distort and `lenet show distortions`. Each training run is checked
against the same run done in-process through lenet.train.train, bit for bit, and its
log against the options. Needs MNIST (LENET_DATA).

    LENET_DATA=../shared/data/mnist python -m pytest -q tests/test_reproduction.py
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lenet.data import load_mnist, preprocess
from lenet.model import LeNet5
from lenet.train import paper_eta, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRAIN, N_TEST, PASSES = 200, 100, 2


def lenet(*args):
    return subprocess.run([sys.executable, "-m", "lenet", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def data(mnist_dir):
    xs, ys = load_mnist("train", mnist_dir)
    xt, yt = load_mnist("test", mnist_dir)
    return ((preprocess(xs[:N_TRAIN]), ys[:N_TRAIN].astype(np.int64)),
            (preprocess(xt[:N_TEST]), yt[:N_TEST].astype(np.int64)))


# (command-line options, what lenet.train.train and the model get for them; "loss" is
# what the log must say, left to train()'s default for the recipe)
RUNS = {
    "lecun": (["--recipe", "lecun"],
              dict(init="lush", recipe="lecun", mu=2.0, schedule="paper", loss="map")),
    "paper-lush-options": (["--recipe", "paper", "--init", "lush", "--mu", 0.5, "--schedule",
                            "paper-floor", "--ordered", "--hessian-sample", "consecutive"],
                           dict(init="lush", recipe="paper", mu=0.5, schedule="paper-floor",
                                shuffle=False, hessian_sample="consecutive", loss="mse")),
    "lecun-distort": (["--recipe", "lecun", "--distort", "--seed", 3],
                      dict(init="lush", recipe="lecun", mu=2.0, schedule="paper",
                           distort=True, seed=3, loss="map")),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_train_options_reach_the_trainer(name, data, mnist_dir, tmp_path):
    options, expect = RUNS[name]
    out = tmp_path / "m.npz"
    result = lenet("train", "--device", "cpu", "--data", mnist_dir, "--train-size", N_TRAIN,
                   "--test-size", N_TEST, "--epochs", PASSES, "--no-progress", "--out", out,
                   *options)
    assert result.returncode == 0, result.stderr
    log = [json.loads(line) for line in out.with_suffix(".log.jsonl").read_text().splitlines()]
    kwargs = {k: v for k, v in expect.items() if k not in ("init", "loss")}
    seed = kwargs.pop("seed", 0)
    assert [r["recipe"] for r in log] == [expect["recipe"]] * PASSES
    assert [r["step_size"] for r in log] == [paper_eta(p, expect["schedule"])
                                             for p in range(PASSES)]
    for key, value in [("mu", expect["mu"]), ("schedule", expect["schedule"]),
                       ("loss", expect["loss"]),
                       ("shuffle", expect.get("shuffle", True)),
                       ("hessian_sample", expect.get("hessian_sample", "random")),
                       ("distort", expect.get("distort", False))]:
        assert all(r[key] == value for r in log), key
    # the same run in-process: the same parameters, bit for bit, and the same errors
    model = LeNet5(device="cpu", seed=seed, init=expect["init"])
    records = train(model, *data, epochs=PASSES, seed=seed, progress=False,
                    out=lambda s: None, **kwargs)
    back = LeNet5.load(out)
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(back.parameters()[k], v, err_msg=k)
    assert [r["test_error"] for r in records] == [r["test_error"] for r in log]
    assert [r["train_error"] for r in records] == [r["train_error"] for r in log]


def test_lush_init_is_lecuns(data):
    # weights within 1/sqrt(F) (C3 per map from its table), biases 0, coefficients 0.5
    from lenet.kernels.architecture import CONV_TABLES, fan_in
    p = LeNet5(seed=5, init="lush").parameters()
    for name, v in p.items():
        layer, kind = name.split(".")
        if kind == "bias":
            assert np.all(v == 0), name
        elif kind == "coef":
            assert np.all(v == 0.5), name
        else:
            f = np.asarray(fan_in(layer), np.float64).reshape((-1,) + (1,) * (v.ndim - 1))
            scaled = v / (1 / np.sqrt(f))
            assert np.abs(scaled).max() <= 1 and np.abs(scaled).max() > 0.98, name
            if layer in CONV_TABLES:
                off = ~np.broadcast_to(CONV_TABLES[layer].T[:, :, None, None], v.shape)
                assert np.all(v[off] == 0), name


def test_show_distortions_writes_its_png(mnist_dir, tmp_path):
    from PIL import Image
    result = lenet("show", "distortions", "--data", mnist_dir, "--out", tmp_path, "--seed", 2)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "distortions.png")
    assert Image.open(tmp_path / "distortions.png").size == (1300, 1150)


@pytest.mark.parametrize("options, message", [
    (["--recipe", "sgd", "--schedule", "paper"], "--schedule and --hessian-sample belong"),
    (["--recipe", "sgd", "--hessian-sample", "consecutive"], "belong to the SDLM recipes"),
    (["--recipe", "lecun", "--batch-size", 4], "the lecun recipe updates after every pattern"),
    (["--recipe", "lecun", "--mu", 0], "--mu must be a positive number"),
])
def test_option_mistakes_are_one_line(options, message, mnist_dir, tmp_path):
    result = lenet("train", "--device", "cpu", "--data", mnist_dir, "--out",
                   tmp_path / "m.npz", *options)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lenet train: error: "), result.stderr
    assert message in lines[0]


def test_train_help_documents_the_options():
    text = lenet("train", "--help").stdout
    for word in ("lecun", "lush", "--schedule", "paper-floor", "--ordered",
                 "--hessian-sample", "consecutive", "--distort"):
        assert word in text, word


def test_lecun_is_the_paper_recipe_with_its_settings(data):
    # what docs/reproduction.md measured as `paper` with these options (MAP, mu = 2, the
    # paper's schedule, Lush's initialisation) is `lecun`
    runs = []
    for recipe, options in (("lecun", {}), ("paper", dict(loss="map", mu=2.0,
                                                          schedule="paper"))):
        model = LeNet5(seed=4, init="lush")
        train(model, *data, recipe=recipe, epochs=1, seed=4, progress=False,
              out=lambda s: None, **options)
        runs.append(model.parameters())
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k], err_msg=k)
