"""The `lenet` command end to end: every subcommand through `python -m lenet`.

A tiny checkpoint is trained once per module (2,000 digits, one pass, on the
CPU); the other commands run on it and are checked against the same
computation done here in-process. User mistakes must give one line
`lenet <command>: error: ...` on stderr and exit status 2. Needs MNIST
(LENET_DATA, see conftest.py); about a minute on two cores, most of it training.

    LENET_DATA=../shared/data/mnist python -m pytest -q tests/test_cli.py
"""

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from conftest import lenet_cli, limited_lenet
from PIL import Image

from lenet import images as digit_images
from lenet.data import find_file, load_mnist, preprocess
from lenet.model import LeNet5

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("train", "sweep", "eval", "predict", "show", "export", "demo")
SHOW_MODES = ("maps", "prototypes", "curves", "errors", "distortions")
PLAIN = range(10)     # the first ten MNIST test digits, saved as they are
ALTERED = (0, 1, 2)   # ... of which these are also saved inverted, enlarged and as JPEG


def lenet(*args):
    """Run `python -m lenet ARGS` from the repository root; the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "lenet", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def ok(*args):
    result = lenet(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    """(checkpoint, log, stdout) of `lenet train` on 2,000 digits for one pass."""
    out = tmp_path_factory.mktemp("train") / "ckpt.npz"
    stdout = ok("train", "--device", "cpu", "--data", mnist_dir, "--train-size", 2000,
                "--epochs", 1, "--fast", "--no-progress", "--out", out)
    return out, out.with_name("ckpt.log.jsonl"), stdout


@pytest.fixture(scope="module")
def model(trained):
    return LeNet5.load(trained[0], device="cpu")


@pytest.fixture(scope="module")
def test_set(mnist_dir):
    """uint8 images (10000,28,28) and labels of the MNIST test set."""
    return load_mnist("test", mnist_dir)


@pytest.fixture(scope="module")
def files(tmp_path_factory, test_set):
    """Image files: name -> (path, index of the MNIST test digit drawn in it)."""
    images = test_set[0]
    folder = tmp_path_factory.mktemp("images")
    made = {}

    def save(name, image, k, **options):
        path = folder / name
        image.save(path, **options)
        made[name] = (path, k)

    for k in PLAIN:  # 28x28 grey, light ink on black, as MNIST stores them
        save(f"plain{k}.png", Image.fromarray(images[k]), k)
    for k in ALTERED:
        save(f"inverted{k}.png", Image.fromarray(255 - images[k]), k)
        # dark blue ink on cream paper, 2.5 times larger, off centre in 80x100
        big = np.asarray(Image.fromarray(images[k]).resize((70, 70), Image.Resampling.BICUBIC))
        ink = np.zeros((100, 80), np.float64)
        ink[20:90, 4:74] = big / 255.0
        paper, pen = np.array([250, 245, 230.0]), np.array([30, 30, 120.0])
        rgb = paper + ink[..., None] * (pen - paper)
        colour = Image.fromarray(np.rint(rgb).astype(np.uint8), mode="RGB")
        save(f"enlarged{k}.png", colour, k)
        save(f"enlarged{k}.jpg", colour, k, quality=90)
    save("blank.png", Image.new("L", (40, 50), 255), None)
    (folder / "text.png").write_text("not an image\n")
    made["text.png"] = (folder / "text.png", None)
    return made


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """A data directory whose four MNIST files are corrupt (so nothing is downloaded)."""
    folder = tmp_path_factory.mktemp("bad_data")
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / (name + ".gz")).write_bytes(b"not gzip at all")
    return folder


def idx_file(path, array):
    """Write a uint8 array as an IDX file: images if 3-dim, labels if 1-dim."""
    array = np.asarray(array, np.uint8)
    magic = 2051 if array.ndim == 3 else 2049
    path.write_bytes(struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes())


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory, trained):
    """Files a user may point `lenet` at by mistake, each made here."""
    folder = tmp_path_factory.mktemp("odd")
    made = {"notes": folder / "notes.txt", "log": folder / "old.log.jsonl"}
    made["notes"].write_text("my notes, not a checkpoint\n")
    made["log"].write_text('{"pass": 1, "test_error": 0.5}\n')
    # a checkpoint whose __meta__ is valid JSON but not an object
    with np.load(trained[0]) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["__meta__"] = np.frombuffer(b"[1, 2, 3]", np.uint8)
    np.savez(folder / "meta-list.npz", **arrays)
    made["meta-list"] = folder / "meta-list.npz"
    (folder / "ckpt-dir.npz").mkdir()
    made["ckpt-dir"] = folder / "ckpt-dir.npz"
    # tiny MNIST-format files under MNIST's names: a plain directory, not MNIST itself
    tiny = folder / "tiny"
    tiny.mkdir()
    for prefix in ("train", "t10k"):
        idx_file(tiny / f"{prefix}-images-idx3-ubyte", np.zeros((3, 28, 28)))
        idx_file(tiny / f"{prefix}-labels-idx1-ubyte", [1, 2, 3])
    made["tiny"] = tiny
    empty = folder / "empty"  # well-formed files of no images
    empty.mkdir()
    for prefix in ("train", "t10k"):
        idx_file(empty / f"{prefix}-images-idx3-ubyte", np.zeros((0, 28, 28)))
        idx_file(empty / f"{prefix}-labels-idx1-ubyte", np.zeros(0))
    made["empty"] = empty
    # a directory where an IDX file should be
    hole = folder / "hole"
    hole.mkdir()
    (hole / "train-images-idx3-ubyte").mkdir()
    idx_file(hole / "train-labels-idx1-ubyte", [1, 2, 3])
    made["hole"] = hole
    # PNG headers announcing more pixels than Pillow's limit (1x and 2x: warning, error)
    for side in (10000, 20000):
        made[f"huge{side}"] = folder / f"huge{side}.png"
        made[f"huge{side}"].write_bytes(png_header(side, side))
    return made


def png_header(width, height):
    """A grey PNG of width x height pixels with no pixel data: enough for Pillow's open."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                                              0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


# ------------------------------------------------------------ train, eval

def test_train_prints_passes_and_writes_checkpoint_and_log(trained):
    checkpoint, log, stdout = trained
    assert re.search(r"^pass +1: loss [\d.]+ +train error [\d.]+% +test error [\d.]+%",
                     stdout, re.M), stdout
    assert checkpoint.is_file() and log.is_file()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["pass"] for r in records] == [1]
    assert records[0]["train_error"] is None  # --fast
    for key in ("running_train_error", "test_error", "train_loss"):
        assert np.isfinite(records[0][key])


def test_paper_recipe_on_both_devices(mnist_dir, tmp_path):
    # `lenet train --recipe paper` end to end on each device (the GPU's per-pattern steps
    # are the fused kernel; without a GPU, conftest.py has chosen the CUDA simulator,
    # which this subprocess inherits): the same seed and digits take the same steps.
    # A few digits: float32 rounding over sequential steps differs between the devices
    # and grows (tests/test_gpu_model.py, the fused test)
    from conftest import SIMULATOR

    from lenet.kernels.tolerance import assert_close
    n = 2 if SIMULATOR else 16
    runs = {}
    for device in ("cpu", "gpu"):
        out = tmp_path / f"{device}.npz"
        stdout = ok("train", "--device", device, "--recipe", "paper", "--mu", 1, "--init",
                    "sqrt-fan-in", "--epochs", 1, "--train-size", n, "--test-size", n,
                    "--data", mnist_dir, "--no-progress", "--out", out)
        assert f"training LeNet-5 on {device}: recipe paper" in stdout, stdout
        record, = [json.loads(line) for line in
                   out.with_suffix(".log.jsonl").read_text().splitlines()]
        runs[device] = LeNet5.load(out, device="cpu").parameters(), record
    (p_cpu, r_cpu), (p_gpu, r_gpu) = runs["cpu"], runs["gpu"]
    start = LeNet5(seed=0, init="sqrt-fan-in").parameters()  # the command's seed 0
    for k in p_cpu:
        assert_close(p_gpu[k], p_cpu[k], what=k)
        assert not np.array_equal(p_gpu[k], start[k]), k  # the pass moved it
    assert r_gpu["device"] == "gpu" and r_cpu["device"] == "cpu"
    assert abs(r_gpu["train_loss"] - r_cpu["train_loss"]) <= 1e-5 * r_cpu["train_loss"]
    for key in ("running_train_error", "train_error", "test_error"):
        assert r_gpu[key] == r_cpu[key], key


def test_eval_error_is_one_minus_in_process_accuracy(trained, model, test_set, mnist_dir):
    stdout = ok("eval", "--checkpoint", trained[0], "--data", mnist_dir, "--device", "cpu")
    percent, errors, total = re.search(r"test error: ([\d.]+)% \((\d+) of (\d+)\)",
                                       stdout).groups()
    images, labels = test_set
    accuracy = np.mean(model.predict(preprocess(images)) == labels)
    assert int(total) == len(labels)
    assert int(errors) == round((1 - accuracy) * len(labels))
    assert float(percent) == pytest.approx(100 * (1 - accuracy), abs=0.005)


# ---------------------------------------------------------------- predict

def test_predict_image_files(trained, model, test_set, files):
    names = [n for n in files if n not in ("blank.png", "text.png")]
    out = json.loads(ok("predict", "--checkpoint", trained[0], "--device", "cpu", "--json",
                        *(files[n][0] for n in names)))
    assert [r["file"] for r in out] == [str(files[n][0]) for n in names]
    got = {n: r for n, r in zip(names, out, strict=True)}
    penalties = np.array([r["penalties"] for r in out])
    assert penalties.shape == (len(names), 10) and np.all(np.isfinite(penalties))

    # exactly what the model gives in-process on the same pipeline's pixels
    digits = digit_images.load_digits([files[n][0] for n in names])
    expected = model.forward(preprocess(digits))
    np.testing.assert_array_equal(penalties.astype(np.float32), expected)
    assert [r["digit"] for r in out] == list(expected.argmin(axis=1))

    # plain MNIST digits: the pipeline keeps them (nearly) as they are
    originals = test_set[0][list(PLAIN)]
    direct = model.predict(preprocess(originals))
    agree = sum(got[f"plain{k}.png"]["digit"] == direct[k] for k in PLAIN)
    assert agree >= 9, f"only {agree} of 10 plain digits predicted as on the raw pixels"

    for k in ALTERED:
        # dark ink on white paper is the same digit as light ink on black: the same
        # pixels (the penalties may differ in the last bit, from their place in the batch)
        inverted, plain = got[f"inverted{k}.png"], got[f"plain{k}.png"]
        np.testing.assert_array_equal(digit_images.mnist_digit(files[f"inverted{k}.png"][0]),
                                      digit_images.mnist_digit(files[f"plain{k}.png"][0]))
        assert inverted["digit"] == plain["digit"]
        np.testing.assert_allclose(inverted["penalties"], plain["penalties"], rtol=1e-5)
        # enlarged colour copies (PNG and JPEG) come back close to the original pixels,
        # up to a one-pixel shift (centring rounds the centre of mass to a whole pixel)
        for name in (f"enlarged{k}.png", f"enlarged{k}.jpg"):
            restored = digit_images.mnist_digit(files[name][0]).astype(np.float64)
            correlation = max(np.corrcoef(np.roll(restored, (dy, dx), axis=(0, 1)).ravel(),
                                          originals[k].ravel())[0, 1]
                              for dy in (-1, 0, 1) for dx in (-1, 0, 1))
            assert correlation > 0.9, (name, correlation)


def test_predict_idx_equals_in_process(trained, model, test_set, mnist_dir):
    idx = find_file(mnist_dir, "t10k-images-idx3-ubyte")
    chosen = [0, 7, 4242, 9999]
    out = json.loads(ok("predict", "--checkpoint", trained[0], "--device", "cpu", "--json",
                        "--idx", idx, "--index", *chosen))
    expected = model.forward(preprocess(test_set[0][chosen]))
    assert [(r["file"], r["index"]) for r in out] == [(idx, k) for k in chosen]
    np.testing.assert_array_equal(np.array([r["penalties"] for r in out], np.float32),
                                  expected)
    assert [r["digit"] for r in out] == list(expected.argmin(axis=1))
    # the plain-text table says the same
    table = ok("predict", "--checkpoint", trained[0], "--device", "cpu", "--idx", idx,
               "--index", *chosen).splitlines()[1:]
    assert [int(line.split()[1]) for line in table] == list(expected.argmin(axis=1))


def test_predict_takes_emnist_files_upright(trained, model, test_set, tmp_path):
    # an IDX file under an EMNIST name holds its images transposed: predict turns them
    # back, so the transposed copy of MNIST digits is predicted as the digits
    digits = test_set[0][:3]
    path = tmp_path / "emnist-digits-test-images-idx3-ubyte"
    idx_file(path, digits.transpose(0, 2, 1))
    out = json.loads(ok("predict", "--checkpoint", trained[0], "--device", "cpu", "--json",
                        "--idx", path, "--index", 0, 1, 2))
    np.testing.assert_array_equal(np.array([r["penalties"] for r in out], np.float32),
                                  model.forward(preprocess(digits)))


# ------------------------------------------------------------------- show

def png_size(path):
    with Image.open(path) as image:
        image.load()  # decodes the whole file
        return image.format, image.size


@pytest.mark.parametrize("mode", SHOW_MODES)
def test_show_writes_png_of_stated_size(mode, trained, files, mnist_dir, tmp_path):
    checkpoint, log, _ = trained
    device = ("--device", "cpu")
    args = {"maps": ("--checkpoint", checkpoint, "--index", 0, "--data", mnist_dir, *device),
            "prototypes": (),
            "curves": ("--log", log),
            "errors": ("--checkpoint", checkpoint, "--data", mnist_dir, *device),
            "distortions": ("--data", mnist_dir)}[mode]
    size = {"maps": (1400, 700), "prototypes": (1000, 250), "curves": (1000, 400),
            "errors": (1400, 650), "distortions": (1300, 1150)}[mode]
    stdout = ok("show", mode, *args, "--out", tmp_path / "pictures")
    path = tmp_path / "pictures" / f"{mode}.png"
    assert stdout.strip() == str(path)
    assert png_size(path) == ("PNG", size)
    if mode == "maps":  # the same from an image file
        ok("show", "maps", "--checkpoint", checkpoint, "--image", files["enlarged1.jpg"][0],
           *device, "--out", tmp_path)
        assert png_size(tmp_path / "maps.png") == ("PNG", size)


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures that lenet.show saves during a test, in order (each is
    still written as a PNG)."""
    import lenet.show
    saved, save = [], lenet.show._save
    monkeypatch.setattr(lenet.show, "_save", lambda fig, path: (saved.append(fig),
                                                                 save(fig, path))[1])
    return saved


def labelled(ax):
    """{legend label: (x, y)} of an axis's lines, the hidden ones by their "_" names."""
    return {line.get_label(): (np.asarray(line.get_xdata(), np.float64),
                               np.asarray(line.get_ydata(), np.float64))
            for line in ax.get_lines()}


def curve(ax, name):
    """(x, y) of the one line of `ax` whose legend label starts with `name`."""
    found = [xy for label, xy in labelled(ax).items() if label.startswith(name)]
    assert len(found) == 1, (name, list(labelled(ax)))
    return found[0]


VALIDATION_LOG = os.path.join(ROOT, "bench", "results", "2026-12-06-cpu-validation",
                              "mu1-distort-seed0.log.jsonl")


@pytest.mark.parametrize("source", ["bench", "train"])
def test_show_curves_of_a_validation_run(source, mnist_dir, tmp_path, figures, capsys):
    # `lenet train --validation` logs test_error null and a validation_error per pass:
    # the curves draw the validation error (once refused: "no number test_error")
    if source == "bench":  # the project's own log of such runs
        log = VALIDATION_LOG
    else:
        ok("train", "--device", "cpu", "--data", mnist_dir, "--train-size", 300,
           "--validation", 100, "--epochs", 2, "--fast", "--no-progress",
           "--out", tmp_path / "v.npz")
        log = tmp_path / "v.log.jsonl"
    with open(log) as f:
        records = [json.loads(line) for line in f]
    assert all(r["test_error"] is None for r in records)
    status, out, err = lenet_cli(["show", "curves", "--log", log, "--out", tmp_path], capsys)
    assert (status, err) == (0, ""), err
    assert out.strip() == str(tmp_path / "curves.png")
    assert png_size(tmp_path / "curves.png") == ("PNG", (1000, 400))
    ax_err, ax_loss = figures[-1].axes[:2]
    passes = [r["pass"] for r in records]
    x, y = curve(ax_err, "validation error")
    assert list(x) == passes
    np.testing.assert_allclose(y, [100 * r["validation_error"] for r in records])
    x, y = curve(ax_err, "training error during the pass")
    np.testing.assert_allclose(y, [100 * r["running_train_error"] for r in records])
    assert not any(label.startswith("test error") for label in labelled(ax_err))
    x, y = curve(ax_loss, "training loss")
    np.testing.assert_allclose(y, [r["train_loss"] for r in records])
    final = f"validation error: {100 * records[-1]['validation_error']:.2f}% at the end"
    assert final in [t.get_text() for t in ax_err.get_legend().get_texts()]


def test_show_curves_draws_zeros_off_the_log_scale(tmp_path, figures, capsys):
    # 0% error or zero loss has no place on a log axis (it used to draw a line falling
    # off the bottom): the lines leave zeros out, each zero is a triangle on the bottom
    # edge, explained in the legend; an axis with no value above 0 is linear
    rng = np.random.default_rng(7)
    n = 9
    train_error = np.round(rng.uniform(0.001, 0.2, n), 4)
    train_error[[2, 3, 7]] = 0.0
    running = np.round(rng.uniform(0.001, 0.3, n), 4)
    running[[3, 8]] = 0.0
    test_error = np.round(rng.uniform(0.01, 0.2, n), 4)
    loss = np.round(rng.uniform(0.01, 2, n), 3)
    loss[5] = 0.0
    log = tmp_path / "zeros.log.jsonl"
    log.write_text("".join(json.dumps({
        "pass": p + 1, "train_loss": float(loss[p]), "running_train_error": float(running[p]),
        "train_error": float(train_error[p]), "test_error": float(test_error[p])}) + "\n"
        for p in range(n)))
    status, _, err = lenet_cli(["show", "curves", "--log", log, "--out", tmp_path], capsys)
    assert (status, err) == (0, ""), err
    ax_err, ax_loss = figures[-1].axes[:2]
    passes = np.arange(1, n + 1)
    for ax, name, values in [(ax_err, "training error: ", 100 * train_error),
                             (ax_err, "training error during", 100 * running),
                             (ax_err, "test error", 100 * test_error),
                             (ax_loss, "training loss", loss)]:
        assert ax.get_yscale() == "log"
        x, y = curve(ax, name)
        zero = values == 0
        np.testing.assert_array_equal(x, passes)
        np.testing.assert_array_equal(y, np.where(zero, np.nan, values), err_msg=name)
        lowest = ax.get_ylim()[0]
        assert 0 < lowest <= values[~zero].min(), name  # every drawn point in view
    # the triangles: one per zero, at its pass, on the bottom edge of its axis
    for ax, key, values in [(ax_err, "train_error", train_error),
                            (ax_err, "running_train_error", running),
                            (ax_loss, "train_loss", loss)]:
        triangles, = [line for line in ax.get_lines()
                      if line.get_label() == f"_{key} zeros"]
        assert triangles.get_marker() == "v" and not triangles.get_clip_on()
        np.testing.assert_array_equal(triangles.get_xdata(), passes[values == 0])
        bottom = ax.transAxes.transform((0, 0))[1]
        for x in passes[values == 0]:
            pixel = triangles.get_transform().transform((x, 0))
            assert pixel[1] == pytest.approx(bottom)
            assert pixel[0] == pytest.approx(ax.transData.transform((x, 1))[0])
    assert not [line for line in ax_err.get_lines() if line.get_label() == "_test_error zeros"]
    legends = {ax: [t.get_text() for t in ax.get_legend().get_texts()]
               for ax in (ax_err, ax_loss)}
    assert "0% (off the log scale): on the bottom edge" in legends[ax_err]
    assert "0 (off the log scale): on the bottom edge" in legends[ax_loss]
    # a loss of 0 at every pass: a linear axis that draws the zeros as they are
    log.write_text("".join(json.dumps({"pass": p + 1, "train_loss": 0,
                                       "running_train_error": float(running[p]),
                                       "test_error": None}) + "\n" for p in range(n)))
    status, _, err = lenet_cli(["show", "curves", "--log", log, "--out", tmp_path], capsys)
    assert (status, err) == (0, ""), err
    ax_err, ax_loss = figures[-1].axes[:2]
    assert ax_loss.get_yscale() == "linear" and ax_err.get_yscale() == "log"
    np.testing.assert_array_equal(curve(ax_loss, "training loss")[1], np.zeros(n))
    assert len(ax_loss.get_lines()) == 1


def distortion_rows(fig):
    """The preprocessed images of a distortions figure, in rows of 12 (original first);
    and the texts of the empty rows."""
    images = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    notes = [t.get_text() for ax in fig.axes if not ax.images for t in ax.texts]
    return [np.array(images[k:k + 12]) for k in range(0, len(images), 12)], notes


def test_show_distortions_of_data_lacking_classes(test_set, mnist_dir, tmp_path, figures,
                                                  capsys):
    # training files with only the classes 0..4 (it used to end in an IndexError): the
    # rows of those classes are drawn as from the full data, the others are left empty
    # and named, on stderr too
    images, labels = load_mnist("train", mnist_dir)
    few = np.flatnonzero(labels < 5)[:301]
    small = tmp_path / "small"
    small.mkdir()
    idx_file(small / "train-images-idx3-ubyte", images[few])
    idx_file(small / "train-labels-idx1-ubyte", labels[few])
    status, out, err = lenet_cli(["show", "distortions", "--data", small, "--seed", 3,
                                  "--out", tmp_path / "small-out"], capsys)
    assert status == 0, err
    assert err == "note: the training images hold no 5, 6, 7, 8, 9; their rows are left " \
                  "empty\n"
    assert png_size(tmp_path / "small-out" / "distortions.png") == ("PNG", (1300, 1150))
    rows, notes = distortion_rows(figures[-1])
    assert notes == [f"no training image of class {d} in the data" for d in range(5, 10)]
    assert len(rows) == 5
    for d in range(5):  # the first training image of each class
        first = np.flatnonzero(labels == d)[0]
        np.testing.assert_array_equal(rows[d][0], preprocess(images[first:first + 1])[0, 0])
    status, _, err = lenet_cli(["show", "distortions", "--data", mnist_dir, "--seed", 3,
                                "--out", tmp_path / "full-out"], capsys)
    assert (status, err) == (0, ""), err
    full, notes = distortion_rows(figures[-1])
    assert len(full) == 10 and notes == []
    for d in range(5):  # a class's row does not depend on the classes the data lacks
        np.testing.assert_array_equal(rows[d], full[d])
    assert not np.array_equal(full[0][1:], np.repeat(full[0][:1], 11, axis=0))  # distorted


@pytest.mark.parametrize("what", ["negative seed", "no training images", "empty --out",
                                  "--out's PNG a directory", "--out a file"])
def test_show_mistakes_are_one_line(what, odd_files, mnist_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args, message = {
        "negative seed": (("distortions", "--data", mnist_dir, "--seed", -1, "--out", out),
                          "--seed must be 0 or more, not -1"),
        "no training images": (("distortions", "--data", odd_files["empty"], "--out", out),
                               f"{odd_files['empty']}: the train files hold no images"),
        "empty --out": (("prototypes", "--out", ""),
                        "--out must name a directory, not an empty string"),
        "--out's PNG a directory": (("prototypes", "--out", tmp_path),
                                    f"{tmp_path / 'prototypes.png'} is a directory; "
                                    "refusing to write the picture over it"),
        "--out a file": (("prototypes", "--out", odd_files["notes"]),
                         f"--out {odd_files['notes']}: not a directory"),
    }[what]
    (tmp_path / "prototypes.png").mkdir()
    before = sorted(os.listdir(tmp_path)), odd_files["notes"].read_bytes()
    status, stdout, stderr = lenet_cli(["show", *args], capsys)
    assert (status, stdout, stderr) == (2, "", f"lenet show: error: {message}\n")
    assert (sorted(os.listdir(tmp_path)), odd_files["notes"].read_bytes()) == before
    assert os.listdir(tmp_path / "prototypes.png") == []


def test_show_replaces_only_its_own_pictures_and_whole(tmp_path, capsys):
    from lenet.show import drew
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir(), elsewhere.mkdir()
    picture, notes = out / "prototypes.png", elsewhere / "notes.txt"
    picture.write_text("my notes\n")
    status, stdout, stderr = lenet_cli(["show", "prototypes", "--out", out], capsys)
    assert (status, stdout) == (2, "") and stderr == (
        f"lenet show: error: {picture} exists and is not a picture drawn by lenet show; "
        "refusing to replace it (give --force to replace it, or another --out)\n")
    assert picture.read_text() == "my notes\n"
    assert lenet_cli(["show", "prototypes", "--out", out, "--force"], capsys)[0] == 0
    assert drew(picture) and png_size(picture) == ("PNG", (1000, 250))
    assert lenet_cli(["show", "prototypes", "--out", out], capsys)[0] == 0  # its own
    # a link of that name is replaced, not written through; a link to another file refused
    notes.write_text("my notes\n")
    os.replace(picture, elsewhere / "mine.png")
    picture.symlink_to(elsewhere / "mine.png")
    assert lenet_cli(["show", "prototypes", "--out", out], capsys)[0] == 0
    assert not picture.is_symlink() and drew(picture) and drew(elsewhere / "mine.png")
    picture.unlink()
    picture.symlink_to(notes)
    assert lenet_cli(["show", "prototypes", "--out", out], capsys)[0] == 2
    assert picture.is_symlink() and notes.read_text() == "my notes\n"
    # a write that fails (a full disk) leaves the last picture whole, and no other file
    picture.unlink()
    assert lenet_cli(["show", "prototypes", "--out", out], capsys)[0] == 0
    before = picture.read_bytes()
    result = limited_lenet(["show", "prototypes", "--out", out], len(before) // 2)
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr.startswith("lenet show: error: File too large"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert picture.read_bytes() == before and os.listdir(out) == ["prototypes.png"]


def test_a_log_of_numbers_no_pass_has_is_refused(tmp_path, capsys):
    line = {"pass": 1, "running_train_error": 2.0, "train_loss": 0.5}
    for i, (change, says) in enumerate([
            ({"pass": float("nan")}, "has no number pass"),
            ({"pass": float("inf")}, "has no number pass"),
            ({"pass": 1.5}, "has pass 1.5"), ({"pass": 10 ** 30}, "has pass 100000000000"),
            ({"pass": 0}, "has pass 0"), ({"train_loss": 10 ** 400}, "has no number train_loss"),
            ({"test_error": float("nan")}, "has no number test_error")]):
        log = tmp_path / f"{i}.log.jsonl"
        log.write_text(json.dumps(line) + "\n" + json.dumps({**line, **change}) + "\n")
        status, stdout, stderr = lenet_cli(["show", "curves", "--log", log, "--out",
                                            tmp_path], capsys)
        assert (status, stdout) == (2, ""), stderr
        assert stderr.startswith(f"lenet show: error: {log}: line 2 {says}") and \
            stderr.endswith("not a log of `lenet train`\n") and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "curves.png").exists()


# ---------------------------------------------------------- user mistakes

def mistakes(trained, files, bad_data, mnist_dir, odd):
    checkpoint, log, _ = trained
    text = files["text.png"][0]
    idx = find_file(mnist_dir, "t10k-images-idx3-ubyte")
    cpu = ("--device", "cpu")
    train = ("train", "--data", mnist_dir, *cpu, "--out", text.parent / "x.npz")
    return {
        # numbers that make no sense
        **{f"train: {option} {value}": (*train, option, value) for option, value in [
            ("--lr", -0.01), ("--lr", 0), ("--lr", "nan"), ("--momentum", 1),
            ("--momentum", -0.5), ("--mu", 0), ("--mu", "inf"), ("--epochs", 0),
            ("--batch-size", 0), ("--seed", -1), ("--test-size", 0), ("--train-size", -5)]},
        # files of the user's that training must not overwrite
        "train: --out a text file": ("train", "--data", mnist_dir, *cpu, "--out",
                                     odd["notes"]),
        "train: --log a text file": (*train, "--log", odd["notes"]),
        # options the recipe would ignore
        "train: --momentum with lecun": (*train, "--momentum", 0.5),
        "train: --mu with sgd": (*train, "--recipe", "sgd", "--mu", 0.01),
        "train: --log equal to --out": ("train", "--data", mnist_dir, *cpu, "--out",
                                        checkpoint, "--log", checkpoint),
        "train: --out a directory": ("train", "--data", mnist_dir, *cpu, "--out",
                                     odd["ckpt-dir"]),
        # data
        "train: tiny files named as MNIST": ("train", "--dataset", "mnist", "--data",
                                             odd["tiny"], *cpu, "--out", text.parent / "x"),
        "train: a directory in place of an IDX file": ("train", "--data", odd["hole"], *cpu,
                                                       "--out", text.parent / "x"),
        "eval: plain directory without the files": ("eval", "--checkpoint", checkpoint,
                                                    "--data", text.parent, *cpu),
        "eval: files of no images": ("eval", "--checkpoint", checkpoint, "--data",
                                     odd["empty"], *cpu),
        "train: files of no images": ("train", "--data", odd["empty"], *cpu, "--out",
                                      text.parent / "x"),
        "show: files of no images": ("show", "errors", "--checkpoint", checkpoint, "--data",
                                     odd["empty"], *cpu),
        # checkpoints and images
        "eval: __meta__ not an object": ("eval", "--checkpoint", odd["meta-list"], *cpu),
        "eval: a directory as checkpoint": ("eval", "--checkpoint", odd["ckpt-dir"], *cpu),
        "predict: over Pillow's pixel limit": ("predict", "--checkpoint", checkpoint, *cpu,
                                               odd["huge10000"]),
        "predict: over twice Pillow's pixel limit": ("predict", "--checkpoint", checkpoint,
                                                     *cpu, odd["huge20000"]),
        "train: corrupt data": ("train", "--data", bad_data, *cpu, "--out", text.parent / "x"),
        "eval: corrupt data": ("eval", "--checkpoint", checkpoint, "--data", bad_data, *cpu),
        "eval: text as checkpoint": ("eval", "--checkpoint", text, "--data", mnist_dir),
        "predict: text as checkpoint": ("predict", "--checkpoint", text,
                                        files["plain0.png"][0]),
        "predict: not an image": ("predict", "--checkpoint", checkpoint, *cpu, text),
        "predict: missing image": ("predict", "--checkpoint", checkpoint, *cpu,
                                   text.parent / "no.png"),
        "predict: blank image": ("predict", "--checkpoint", checkpoint, *cpu,
                                 files["blank.png"][0]),
        "predict: index out of range": ("predict", "--checkpoint", checkpoint, *cpu,
                                        "--idx", idx, "--index", 3, 10000),
        "predict: an index of a file of no images": (
            "predict", "--checkpoint", checkpoint, *cpu, "--idx",
            odd["empty"] / "t10k-images-idx3-ubyte", "--index", 0),
        "show: bad log": ("show", "curves", "--log", text, "--out", text.parent),
        "show: text as checkpoint": ("show", "maps", "--checkpoint", text, "--index", 0),
        "show: corrupt data": ("show", "errors", "--checkpoint", checkpoint, "--data",
                               bad_data, *cpu),
        # a mistyped --data must be refused, not created and downloaded into
        "train: no such data directory": ("train", "--data", text.parent / "no-such-dir",
                                          *cpu, "--out", text.parent / "x"),
        "train: train size 0": ("train", "--data", mnist_dir, "--train-size", 0, *cpu,
                                "--out", text.parent / "x"),
        "train: train size too large": ("train", "--data", mnist_dir, "--train-size", 60001,
                                        *cpu, "--out", text.parent / "x"),
        "train: test size too large": ("train", "--data", mnist_dir, "--test-size", 10001,
                                       *cpu, "--out", text.parent / "x"),
        # an SDLM recipe follows the paper's schedule: a step size given to it is refused,
        # not silently ignored
        "train: --lr with sdlm": ("train", "--data", mnist_dir, "--recipe", "paper",
                                  "--lr", 0.01, *cpu, "--out", text.parent / "x"),
    }


# what each mistake's one line must say
MESSAGES = {
    "train: --lr -0.01": "--lr must be a positive number, not -0.01",
    "train: --lr nan": "--lr must be a positive number, not nan",
    "train: --momentum 1": "--momentum must lie in [0, 1), not 1.0",
    "train: --momentum with lecun": "--lr and --momentum are sgd's; the lecun recipe",
    "train: --mu with sgd": "--mu belongs to the SDLM recipes (eta / (mu + h)); sgd takes",
    "train: --mu inf": "--mu must be a positive number, not inf",
    "train: --seed -1": "--seed must be 0 or more, not -1",
    "train: --out a text file": "notes.txt exists and is not a LeNet-5 checkpoint; refusing "
                                "to overwrite it",
    "train: --log a text file": "notes.txt exists and is not a training log",
    "train: --log equal to --out": "the log and the checkpoint are the same file",
    "train: --out a directory": "ckpt-dir.npz is a directory",
    "train: tiny files named as MNIST": "holds 3 images, but MNIST's train split has 60,000",
    "predict: index out of range": "--index 10000 is out of range: ",
    "predict: an index of a file of no images": "t10k-images-idx3-ubyte holds 0 images",
    "train: a directory in place of an IDX file": "train-images-idx3-ubyte: is a directory, "
                                                  "not an IDX file",
    "eval: plain directory without the files": "t10k-images-idx3-ubyte(.gz): file not found",
    "eval: files of no images": "the test files hold no images",
    "train: files of no images": "hold no images",
    "show: files of no images": "the test files hold no images",
    "eval: __meta__ not an object": "corrupt __meta__ record (a JSON list, not an object)",
    "eval: a directory as checkpoint": "ckpt-dir.npz: is a directory, not a checkpoint file",
    "predict: over Pillow's pixel limit": "huge10000.png: too large: more than",
    "predict: over twice Pillow's pixel limit": "huge20000.png: too large: more than",
}


def in_process(args, capsys):
    """(exit status, stderr) of `lenet ARGS` run here through lenet.cli.main (a start of
    Python per mistake would cost more than most mistakes); an exception is a status."""
    from lenet.cli import main
    try:
        status = main([str(a) for a in args])
    except SystemExit as e:
        status = e.code
    except Exception as e:  # a traceback for the user
        status = f"{type(e).__name__}: {e}"
    return status, capsys.readouterr().err


def test_user_mistakes_are_one_line_and_exit_2(trained, files, bad_data, mnist_dir,
                                               odd_files, capsys):
    before = {path: path.read_bytes() for path in (odd_files["notes"], trained[0])}
    failures = []
    for what, args in mistakes(trained, files, bad_data, mnist_dir, odd_files).items():
        status, stderr = in_process(args, capsys)
        if what == "train: no such data directory":
            assert not os.path.exists(args[2]), "the directory was created"
        lines = stderr.splitlines()
        if (status != 2 or len(lines) != 1 or not lines[0].startswith(f"lenet {args[0]}: "
                                                                       "error: ")
                or MESSAGES.get(what, "") not in lines[0]):
            failures.append(f"{what}: exit {status}, stderr {stderr!r}")
    assert not failures, "\n".join(failures)
    # and through `python -m lenet`, one of each command
    for what in ("train: --lr -0.01", "eval: __meta__ not an object",
                 "predict: over Pillow's pixel limit", "show: bad log"):
        args = mistakes(trained, files, bad_data, mnist_dir, odd_files)[what]
        result = lenet(*args)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, \
            (what, result.stderr)
    for path, content in before.items():  # nothing of the user's was touched
        assert path.read_bytes() == content, path
    assert not (files["text.png"][0].parent / "x.npz").exists()


@pytest.mark.parametrize("args, message", [
    (("demo", "--port", "abc"), "lenet demo: error: argument --port: invalid int value: 'abc'"),
    (("demo", "extra"), "lenet demo: error: unrecognized arguments: extra"),
    (("train", "--recipe", "nope"), "lenet train: error: argument --recipe: invalid choice"),
    (("show", "curves", "--log"), "lenet show curves: error: argument --log: expected one"),
    (("bogus",), "lenet: error: argument COMMAND: invalid choice: 'bogus'"),
    ((), "lenet: error: the following arguments are required: COMMAND"),
])
def test_argument_mistakes_are_one_line_too(args, message, capsys):
    # argparse's own refusals, named by the command they were given to
    status, err = in_process(args, capsys)
    assert status == 2 and err.count("\n") == 1 and err.startswith(message), err
    assert err.rstrip().endswith("--help` tells more)"), err


@pytest.mark.parametrize("args", [("export", "--out", "x.onnx"), ("demo", "--port", "0")])
def test_no_shipped_weights_is_one_line(args, monkeypatch, tmp_path, capsys):
    # an installation without lenet/weights: the commands that fall back on the shipped
    # weights say so in one line with status 2 (export used to end in a traceback)
    import lenet.export
    import lenet.model
    monkeypatch.setattr(lenet.model, "PRETRAINED", str(tmp_path / "missing.npz"))
    monkeypatch.setattr(lenet.export, "require_onnx", lambda: None)  # with or without onnx
    monkeypatch.chdir(tmp_path)
    status, _, err = lenet_cli(args, capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert f"lenet {args[0]}: error: no --checkpoint given and no trained weights in this " \
           "installation" in err
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------- help

def test_help_lists_every_command():
    stdout = ok("--help")
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s+\S", stdout, re.M), (command, stdout)


@pytest.mark.parametrize("args", [(c,) for c in COMMANDS]
                         + [("show", m) for m in SHOW_MODES])
def test_each_subcommand_has_help(args):
    stdout = ok(*args, "--help")
    assert stdout.startswith(f"usage: lenet {' '.join(args)}")


def test_ctrl_c_keeps_the_last_complete_checkpoint(mnist_dir, tmp_path):
    # interrupt `lenet train` once its first pass is saved: the checkpoint of that
    # pass must load, nothing half-written may remain, and the exit status is 130
    out, log = tmp_path / "ckpt.npz", tmp_path / "ckpt.log.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "lenet", "train", "--device", "cpu",
                             "--data", str(mnist_dir), "--train-size", "500", "--epochs",
                             "1000", "--fast", "--no-progress", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        # the first pass is complete once its log is written too (just after the
        # checkpoint: a SIGINT between the two would find no log yet)
        while not (out.exists() and log.exists()) and time.monotonic() < deadline \
                and proc.poll() is None:
            time.sleep(0.05)
        assert out.exists() and log.exists(), "no pass completed"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    LeNet5.load(out)  # a complete, valid checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.log.jsonl", "ckpt.npz"]


# ------------------------------------------------- pipes, progress, caches

def test_predict_into_a_closed_pipe_ends_quietly(trained, mnist_dir):
    # `lenet predict --json ... | head -1`: the reader is gone before the output is
    # written; no traceback, the status of a process ended by SIGPIPE
    idx = find_file(mnist_dir, "t10k-images-idx3-ubyte")
    proc = subprocess.Popen([sys.executable, "-m", "lenet", "predict", "--json",
                             "--checkpoint", str(trained[0]), "--device", "cpu",
                             "--idx", idx, "--index", *map(str, range(50))],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and stderr == "", stderr
    # and through a shell pipeline, as a user types it
    shell = subprocess.run(["bash", "-c", f"{sys.executable} -m lenet predict --json "
                            f"--checkpoint {trained[0]} --device cpu --idx {idx} "
                            "--index 0 1 2 | head -1"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert shell.stdout == "[\n" and shell.stderr == ""


def test_eval_shows_progress_and_makes_no_empty_cache(trained, tmp_path):
    # offline (every proxy a closed port), no --data and no LENET_DATA: the download
    # fails in one line, and ~/.cache/lenet/mnist is not left behind empty
    env = {k: v for k, v in os.environ.items()
           if k not in ("LENET_DATA", "XDG_CACHE_HOME", "no_proxy", "NO_PROXY")}
    env.update(HOME=str(tmp_path), http_proxy="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9")
    result = subprocess.run([sys.executable, "-m", "lenet", "eval", "--checkpoint",
                             str(trained[0]), "--device", "cpu"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "could not download" in result.stderr, result.stderr
    assert os.listdir(tmp_path) == []


def test_eval_progress_goes_to_stderr(trained, mnist_dir):
    result = lenet("eval", "--checkpoint", trained[0], "--data", mnist_dir, "--device", "cpu")
    assert result.returncode == 0 and "test error: 100%" in result.stderr
    assert "10000/10000" in result.stderr


# ------------------------------------ Fashion-MNIST from Debian's package

def offline(tmp_path):
    """An environment with an empty cache and no network (every proxy a closed port)."""
    env = {k: v for k, v in os.environ.items() if k not in ("no_proxy", "NO_PROXY")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), http_proxy="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9")
    return env


def test_fashion_mnist_trains_from_debian_offline(debian_fashion, tmp_path):
    fashion = debian_fashion
    # one pass on 6,000 images through `lenet train --dataset fashion-mnist`, found in
    # Debian's directory (the cache is empty and the network closed); seed 0 gave 31.7%
    # test error on 2,000 test images (chance: 90%)
    env = offline(tmp_path)

    def run(*args):
        result = subprocess.run([sys.executable, "-m", "lenet", *map(str, args)], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return result.stdout

    out = tmp_path / "fashion.npz"
    stdout = run("train", "--dataset", "fashion-mnist", "--device", "cpu", "--train-size",
                 6000, "--test-size", 2000, "--epochs", 1, "--fast", "--no-progress",
                 "--out", out)
    assert f"data: Fashion-MNIST from {fashion} (6,000 training, 2,000 test images)" in stdout
    record, = [json.loads(line) for line in
               out.with_suffix(".log.jsonl").read_text().splitlines()]
    assert record["dataset"] == "fashion-mnist"
    assert record["test_error"] < 0.45, record
    model = LeNet5.load(out)
    assert model.dataset == "fashion-mnist" and model.classes[9] == "Ankle boot"
    assert not (tmp_path / "cache").exists()
    # eval takes the checkpoint's data set; read as a plain directory, Debian's files
    # are recognised as Fashion-MNIST by their checksums
    for args in ((), ("--data", fashion)):
        stdout = run("eval", "--checkpoint", out, "--device", "cpu", "--no-progress", *args)
        assert stdout.rstrip().endswith(", cpu, Fashion-MNIST]"), stdout
    # predict names the classes
    idx = os.path.join(fashion, "t10k-images-idx3-ubyte.gz")
    results = json.loads(run("predict", "--checkpoint", out, "--device", "cpu", "--json",
                             "--idx", idx, "--index", 0, 1, 2))
    for r in results:
        assert r["name"] == model.classes[r["class"]] and "digit" not in r
    table = run("predict", "--checkpoint", out, "--device", "cpu", "--idx", idx, "--index",
                0, 1).splitlines()
    assert table[0].split()[1] == "class"
    for line, r in zip(table[1:], results, strict=False):
        assert f"{r['class']:5d} {r['name']}" in line
    # and the pictures too
    run("show", "errors", "--checkpoint", out, "--device", "cpu", "--no-progress", "--out",
        tmp_path)
    assert png_size(tmp_path / "errors.png") == ("PNG", (1400, 650))
