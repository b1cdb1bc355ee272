"""lenet/export.py and `lenet export`: the ONNX graph of a briefly trained LeNet-5, run in
ONNX Runtime, gives the project's own penalties (LeNet5(device="cpu"), to the float32
tolerance of kernels/tolerance.py) and the same classes on all 10,000 MNIST test digits,
for any batch size; the command writes a checkpoint's graph, never over a file unless
told, and says every mistake in one line.

Needs MNIST (LENET_DATA) and the onnx extra (onnx, onnxruntime: pip install
'lenet5-cuda[onnx]'; where they are missing the tests skip, except in CI where they
fail). About half a minute on two cores, most of it the short training.

    LENET_DATA=../shared/data/mnist python -m pytest -q tests/test_export.py
"""

import os
import shutil
import sys

import numpy as np
import pytest
from conftest import CI, lenet_cli, limited_lenet

from lenet.data import load_mnist, preprocess
from lenet.kernels.architecture import C3_TABLE, PARAMETER_SHAPES, RBF_CENTERS
from lenet.kernels.tolerance import assert_close, relative_error
from lenet.model import LeNet5
from lenet.train import train

try:
    import onnx
    import onnxruntime
except ImportError as e:
    if CI:
        raise ImportError(f"CI installs the test extra, which has onnx and onnxruntime: {e}") \
            from e
    pytest.skip(f"onnx or onnxruntime missing (pip install 'lenet5-cuda[onnx]'): {e}",
                allow_module_level=True)

from lenet.export import onnx_model, to_onnx  # noqa: E402

TRAIN_PATTERNS = 2000  # one pass of the lecun recipe: about 17% test error, weights far
                       # from their initial values, in a few seconds




def session(source):
    """An ONNX Runtime session (on one thread: the tests share a small machine) of an
    ONNX file or an onnx.ModelProto."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    source = os.fspath(source) if isinstance(source, (str, os.PathLike)) \
        else source.SerializeToString()
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def test_images(mnist_dir):
    images, labels = load_mnist("test", mnist_dir)
    return preprocess(images), labels.astype(np.int64)


@pytest.fixture(scope="module")
def trained(mnist_dir, test_images):
    """A LeNet5 after one lecun pass over the first TRAIN_PATTERNS training digits."""
    images, labels = load_mnist("train", mnist_dir)
    model = LeNet5(device="cpu", seed=0, init="lush")
    x = preprocess(images[:TRAIN_PATTERNS])
    train(model, (x, labels[:TRAIN_PATTERNS].astype(np.int64)),
          (test_images[0][:10], test_images[1][:10]), recipe="lecun", epochs=1,
          progress=False, evaluate_train=False, out=lambda line: None)
    start = LeNet5(device="cpu", seed=0, init="lush").parameters()
    moved = min(relative_error(model.parameters()[k], start[k]) for k in start)
    assert moved > 0.01, f"training barely moved the weights ({moved:.2e})"
    return model


def check_same_answers(penalties, classes, model, images, what):
    """ONNX Runtime's penalties and classes against the model's: penalties to the float32
    tolerance, the class the same wherever the model's two smallest penalties are not
    tied within that tolerance (there the ONNX class must be one of the tied ones)."""
    expected = model.forward(images)
    assert_close(penalties, expected, np.float32, what=f"{what} penalties")
    assert classes.dtype == np.int64 and classes.shape == (len(images),)
    np.testing.assert_array_equal(classes, penalties.argmin(axis=1))
    best = expected.argmin(axis=1)
    sorted_penalties = np.sort(expected.astype(np.float64), axis=1)
    tied = sorted_penalties[:, 1] - sorted_penalties[:, 0] <= 1e-5 * sorted_penalties[:, 1]
    assert np.array_equal(classes[~tied], best[~tied]), \
        f"{what}: {np.sum(classes[~tied] != best[~tied])} classes differ"
    rows = np.flatnonzero(tied)
    assert np.all(expected[rows, classes[rows]] <= sorted_penalties[rows, 0] * (1 + 1e-5))
    return tied.sum()


def test_onnx_runtime_gives_the_models_answers_on_the_mnist_test_set(trained, test_images):
    images, labels = test_images
    run = session(onnx_model(trained))
    penalties, classes = run.run(["penalties", "class"], {"images": images})
    assert len(images) == 10_000
    ties = check_same_answers(penalties, classes, trained, images, "10,000 test digits")
    assert ties <= 2, f"{ties} near-tied images: the trained model should separate them"
    error = np.mean(classes != labels)
    assert 0.05 < error < 0.4, f"test error {error:.2%}: not the briefly trained model"
    # the batch dimension is free: a single image and an awkward batch give the same
    for chunk in (images[4242:4243], images[17:24]):
        y, c = run.run(None, {"images": chunk})
        check_same_answers(y, c, trained, chunk, f"batch of {len(chunk)}")


def test_float64_model_exports_float32_with_the_same_answers(trained, test_images):
    images = test_images[0][:501]
    model = LeNet5(device="cpu", dtype=np.float64)
    model.set_parameters({k: v.astype(np.float64) for k, v in trained.parameters().items()})
    penalties, classes = session(onnx_model(model)).run(None, {"images": images})
    assert penalties.dtype == np.float32
    check_same_answers(penalties, classes, model, images, "float64 model")


def test_graph_is_the_paper_s_network(trained):
    proto = onnx_model(trained)
    graph = proto.graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["penalties", "class"]
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*graph.input, *graph.output)]
    assert dims == [["N", 1, 32, 32], ["N", 10], ["N"]]
    ops = [n.op_type for n in graph.node]
    assert ops.count("Conv") == 3 and ops.count("AveragePool") == 2
    assert ops.count("Tanh") == 6 and ops[-2:] == ["ReduceSum", "ArgMin"]
    init = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    params = trained.parameters()
    for name, shape in PARAMETER_SHAPES.items():  # every parameter, under its own name
        np.testing.assert_array_equal(init[name].reshape(shape), params[name], err_msg=name)
    np.testing.assert_array_equal(init["C3.connections"][:, :, 0, 0], C3_TABLE.T)
    np.testing.assert_array_equal(init["rbf.centers"], RBF_CENTERS)
    assert init["squash.A"] == np.float32(1.7159) and init["squash.S"] == np.float32(2 / 3)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["classes"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'


def test_c3_table_is_kept_by_the_mask(trained, test_images):
    # weights put off the table in the ONNX file (as a tool retraining the graph could)
    # change nothing: the graph multiplies C3's weights by the table
    proto = onnx_model(trained)
    (c3,) = [t for t in proto.graph.initializer if t.name == "C3.weight"]
    weight = onnx.numpy_helper.to_array(c3).copy()
    off = ~C3_TABLE.T
    weight[off] = np.random.default_rng(5).uniform(-1, 1, weight[off].shape)
    c3.CopyFrom(onnx.numpy_helper.from_array(weight, "C3.weight"))
    images = test_images[0][:33]
    penalties, classes = session(proto).run(None, {"images": images})
    check_same_answers(penalties, classes, trained, images, "off-table C3 weights")


def test_python_api_writes_and_never_overwrites(trained, test_images, tmp_path):
    path = tmp_path / "m.onnx"
    assert to_onnx(trained, path) == str(path)
    images = test_images[0][:20]
    check_same_answers(*session(path).run(None, {"images": images}), trained, images, "file")
    mine = tmp_path / "mine.onnx"
    mine.write_text("my file\n")
    with pytest.raises(FileExistsError, match="exists; refusing to overwrite"):
        to_onnx(trained, mine)
    assert mine.read_text() == "my file\n"
    with pytest.raises(IsADirectoryError):
        to_onnx(trained, tmp_path, overwrite=True)
    to_onnx(trained, mine, overwrite=True)
    assert mine.read_bytes() == path.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "mine.onnx"]  # no temporary file left


def test_export_command_writes_a_checkpoint_s_graph(trained, test_images, tmp_path, capsys):
    checkpoint = tmp_path / "ckpt.npz"
    trained.save(checkpoint)
    status, out, err = lenet_cli(("export", "--format", "onnx", "--checkpoint", checkpoint),
                           capsys)
    assert status == 0, err
    written = tmp_path / "ckpt.onnx"  # beside the checkpoint by default
    assert out.startswith(f"{written}: ONNX")
    images = test_images[0][100:300]
    check_same_answers(*session(written).run(None, {"images": images}), trained, images,
                       "lenet export")
    # an existing file is kept unless --force; --force replaces it
    other = tmp_path / "other.onnx"
    other.write_text("keep me\n")
    status, _, err = lenet_cli(("export", "--checkpoint", checkpoint, "--out", other), capsys)
    assert status == 2 and err.count("\n") == 1 and "refusing to overwrite" in err, err
    assert "--force" in err and other.read_text() == "keep me\n"
    status, _, err = lenet_cli(("export", "--checkpoint", checkpoint, "--out", other, "--force"),
                         capsys)
    assert status == 0, err
    assert other.read_bytes() == written.read_bytes()


def test_export_mistakes_are_one_line(trained, tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / "ckpt.npz"
    trained.save(checkpoint)
    notes = tmp_path / "notes.txt"
    notes.write_text("notes\n")
    cases = [
        (("--format", "tflite", "--checkpoint", checkpoint), "unknown format 'tflite'"),
        (("--checkpoint", notes, "--out", tmp_path / "n.onnx"), "not a .npz checkpoint"),
        (("--checkpoint", checkpoint, "--out", checkpoint, "--force"),
         "is the checkpoint itself"),
        (("--checkpoint", checkpoint, "--out", tmp_path), "is a directory"),
        (("--checkpoint", checkpoint, "--out", ""), "--out must name a file, not an empty"),
        (("--checkpoint", checkpoint, "--out", tmp_path / "no" / "m.onnx"),
         "does not exist"),
    ]
    for args, message in cases:
        status, out, err = lenet_cli(("export", *args), capsys)
        assert status == 2 and err.count("\n") == 1 and message in err, (args, err)
        assert err.startswith("lenet export: error: ") and out == ""
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed
    status, _, err = lenet_cli(("export", "--checkpoint", checkpoint, "--out",
                          tmp_path / "x.onnx"), capsys)
    assert status == 2 and err.count("\n") == 1 and "lenet5-cuda[onnx]" in err, err
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz", "notes.txt"]
    assert checkpoint.stat().st_size > 0 and notes.read_text() == "notes\n"


def test_export_without_checkpoint_takes_the_shipped_weights(test_images, tmp_path, capsys):
    out = tmp_path / "shipped.onnx"
    status, _, err = lenet_cli(("export", "--out", out), capsys)
    if not hasattr(LeNet5, "pretrained"):  # this version ships no weights: say so
        assert status == 2 and err.count("\n") == 1 and "give --checkpoint" in err, err
        assert not out.exists()
        return
    assert status == 0, err
    images = test_images[0][:50]
    check_same_answers(*session(out).run(None, {"images": images}), LeNet5.pretrained(),
                       images, "shipped weights")


def test_export_never_writes_over_the_shipped_weights(tmp_path, capsys, monkeypatch):
    import lenet.model
    shipped = tmp_path / "lenet5-mnist.npz"   # a copy stands for the package's file
    shutil.copy(lenet.model.PRETRAINED, shipped)
    monkeypatch.setattr(lenet.model, "PRETRAINED", str(shipped))
    before = shipped.read_bytes()
    status, out, err = lenet_cli(("export", "--out", shipped, "--force"), capsys)
    assert (status, out, err) == (2, "", f"lenet export: error: --out {shipped} is the "
                                  "checkpoint itself; give another name\n")
    other = tmp_path / "other.npz"   # exporting another checkpoint over them: refused too
    LeNet5(seed=0).save(other)
    status, out, err = lenet_cli(("export", "--checkpoint", other, "--out", shipped,
                                  "--force"), capsys)
    assert (status, out, err) == (2, "", f"lenet export: error: --out {shipped} is the "
                                  "trained weights shipped with the package; give another "
                                  "name\n")
    assert shipped.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [shipped.name, "other.npz"]


def test_a_write_the_machine_refuses_is_one_line_and_exit_1(trained, tmp_path):
    checkpoint, out = tmp_path / "ckpt.npz", tmp_path / "m.onnx"
    trained.save(checkpoint)
    result = limited_lenet(("export", "--checkpoint", checkpoint, "--out", out),
                           checkpoint.stat().st_size // 2)   # the graph is larger
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr == f"lenet export: error: File too large: {out}\n"
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]
