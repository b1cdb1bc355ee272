"""lenet.checkpoint: LeNet5.save and LeNet5.load round trips, atomic saves, what a
load refuses (one line naming the file), the description that travels with the
parameters, and the leftovers of killed saves."""

import json
import os

import numpy as np
import pytest

from lenet import CheckpointError, LeNet5
from lenet.checkpoint import is_checkpoint, read_checkpoint


def images(n, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(dtype)


def test_save_load_round_trip(tmp_path):
    m = LeNet5(seed=4)
    path = tmp_path / "model.npz"
    m.save(path)
    back = LeNet5.load(path)
    for k, v in m.parameters().items():
        np.testing.assert_array_equal(back.parameters()[k], v)
    x = images(2, dtype=np.float32)
    np.testing.assert_array_equal(back.forward(x), m.forward(x))
    assert os.listdir(tmp_path) == ["model.npz"]


def test_load_rejects_bad_files(tmp_path):
    good = tmp_path / "good.npz"
    LeNet5(seed=0).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.npz").write_text("not a checkpoint")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    np.savez(tmp_path / "pickled.npz", a=np.array([{"x": 1}], dtype=object))
    params, meta = read_checkpoint(good)
    params["C5.bias"] = params["C5.bias"][:100]
    np.savez(tmp_path / "shape.npz", **params,
             __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    for name, message in [("truncated.npz", "not a .npz"), ("text.npz", "not a .npz"),
                          ("other.npz", "no __meta__"), ("pickled.npz", "not a readable"),
                          ("shape.npz", "C5.bias has shape"), ("missing.npz", "no such")]:
        with pytest.raises(CheckpointError, match=message) as e:
            LeNet5.load(tmp_path / name)
        assert name in str(e.value)


def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    old = LeNet5(seed=1)
    old.save(path)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        LeNet5(seed=2).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]


def _save_with_meta(path, params, meta):
    np.savez(path, **params,
             __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))


def test_checkpoint_meta_must_be_an_object(tmp_path):
    good = tmp_path / "good.npz"
    LeNet5(seed=0).save(good)
    params, meta = read_checkpoint(good)
    for name, value, message in [("list.npz", [meta], "a JSON list, not an object"),
                                 ("number.npz", 3, "a JSON int, not an object"),
                                 ("classes.npz", {**meta, "classes": ["a"] * 9},
                                  "are not ten strings"),
                                 ("dataset.npz", {**meta, "dataset": 3}, "is not a name")]:
        _save_with_meta(tmp_path / name, params, value)
        with pytest.raises(CheckpointError, match=message):
            LeNet5.load(tmp_path / name)
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(CheckpointError, match="dir.npz: is a directory, not a checkpoint"):
        LeNet5.load(tmp_path / "dir.npz")


def test_classes_and_data_set_travel_with_the_checkpoint(tmp_path):
    m = LeNet5(seed=0)
    assert m.classes == tuple("0123456789") and m.dataset is None
    m.save(tmp_path / "digits.npz")
    back = LeNet5.load(tmp_path / "digits.npz")
    assert back.classes == tuple("0123456789") and back.dataset is None
    m.classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot")
    m.dataset = "fashion-mnist"
    m.save(tmp_path / "fashion.npz")
    back = LeNet5.load(tmp_path / "fashion.npz")
    assert back.classes == m.classes and back.dataset == "fashion-mnist"
    assert LeNet5().classes == tuple("0123456789")  # set on that model only
    # a checkpoint of before class names were saved loads with the digits
    params, meta = read_checkpoint(tmp_path / "digits.npz")
    del meta["classes"], meta["dataset"]
    _save_with_meta(tmp_path / "old.npz", params, meta)
    assert LeNet5.load(tmp_path / "old.npz").classes == tuple("0123456789")


def _corrupt_compressed(path, member, params, meta):
    """A compressed checkpoint whose member's deflate stream is broken mid-way (the zip's
    structure whole): numpy's lazy read raises zlib.error, neither OSError nor ValueError."""
    import zipfile
    np.savez_compressed(path, **params, __meta__=np.frombuffer(json.dumps(meta).encode(),
                                                               np.uint8))
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    for i in range(start + 2, start + info.compress_size - 2):
        data[i] ^= 0x55
    path.write_bytes(bytes(data))


def test_a_broken_compressed_checkpoint_is_refused_in_one_line(tmp_path):
    import zlib
    LeNet5(seed=0).save(tmp_path / "good.npz")
    params, meta = read_checkpoint(tmp_path / "good.npz")
    for member in ("__meta__.npy", "C3.weight.npy"):
        path = tmp_path / f"broken-{member}.npz"
        _corrupt_compressed(path, member, params, meta)
        with pytest.raises((zlib.error, ValueError)):   # what numpy raises, as set up
            with np.load(path) as f:
                f[member[:-4]]
        with pytest.raises(CheckpointError, match="not a readable .npz checkpoint") as e:
            LeNet5.load(path)
        assert str(path) in str(e.value)
        assert is_checkpoint(path) is (member != "__meta__.npy")  # the meta is read


def test_is_checkpoint(tmp_path):
    LeNet5(seed=0).save(tmp_path / "m.npz")
    (tmp_path / "notes.txt").write_text("my notes")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    params, meta = read_checkpoint(tmp_path / "m.npz")
    _save_with_meta(tmp_path / "v2.npz", params, {**meta, "version": 2})
    assert is_checkpoint(tmp_path / "m.npz") and is_checkpoint(tmp_path / "v2.npz")
    for name in ("notes.txt", "other.npz", "missing.npz", "."):
        assert not is_checkpoint(tmp_path / name), name


def _write_log(path):
    from lenet.logs import write_log_line
    write_log_line(path, {"pass": 1}, replace=True)


def _export(path):
    from lenet.export import to_onnx
    to_onnx(LeNet5(seed=0), path)


@pytest.mark.parametrize("save", [lambda p: LeNet5(seed=0).save(p), _write_log, _export],
                         ids=["checkpoint", "log", "onnx"])
def test_saves_remove_leftovers_of_killed_saves(tmp_path, save):
    import subprocess
    import sys
    import time
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    names = {f".lenet-{dead}-0a1b2c3d.npz.tmp": False,   # its process is gone: removed
             f".lenet-{dead}-0a1b2c3d.log.tmp": False,   # a killed log's
             f".lenet-{dead}-0a1b2c3d.onnx.tmp": False,  # a killed export's
             ".lenet-k3j2h1g0.npz.tmp": False,           # an older version's: removed
             f".lenet-{os.getpid()}-old.log.tmp": False,  # alive, but an hour old
             f".lenet-{os.getpid()}-0a1b2c3d.npz.tmp": True,  # a save running now: kept
             f".lenet-{dead}-0a1b2c3d.txt.tmp": True,    # not a suffix of ours: kept
             ".lenet-notes.txt": True, "other.npz.tmp": True}
    for name in names:
        (tmp_path / name).write_bytes(b"partial")
    hour_ago = time.time() - 3700
    os.utime(tmp_path / f".lenet-{os.getpid()}-old.log.tmp", (hour_ago, hour_ago))
    save(tmp_path / "out")
    kept = sorted(n for n, keep in names.items() if keep)
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["out"])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoint_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        LeNet5(seed=0).save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o666 & ~umask
