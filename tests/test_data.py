"""Tests for lenet.data: IDX checks, downloads from a local HTTP server, preprocessing.

Tests that need the real MNIST files find them through the LENET_DATA environment
variable (e.g. ``LENET_DATA=../shared/data/mnist pytest tests/test_data.py``) and
are skipped, with the reason shown, when it is not set. No test uses the outside
network: downloads come from an HTTP server on 127.0.0.1 started by the tests.
"""

import gzip
import hashlib
import http.server
import io
import os
import pathlib
import socket
import struct
import threading
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from conftest import missing

from lenet import data, datasets
from lenet.data import MNISTError

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

TEST_LABELS = "t10k-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"


# ---------------------------------------------------------------------------
# helpers


def idx_bytes(array, magic=None):
    """Encode a uint8 array as an IDX file (images if 3-dim, labels if 1-dim)."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 2051 if array.ndim == 3 else 2049
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write(path, content):
    """Write bytes to ``path`` and return it."""
    path.write_bytes(content)
    return path


def tiny_images(n=3):
    return np.arange(n * 28 * 28, dtype=np.int64).reshape(n, 28, 28).astype(np.uint8)


def tiny_labels(n=3):
    return (np.arange(n) % 10).astype(np.uint8)


def real_data_dir():
    """The directory in LENET_DATA, or skip the test when it is not available (fail in
    CI)."""
    directory = os.environ.get("LENET_DATA")
    if not directory:
        missing("LENET_DATA is not set; set it to the real MNIST directory to run this test")
    if not os.path.isdir(directory):
        missing(f"LENET_DATA={directory} is not a directory")
    return directory


def real_gz(name):
    """The gzipped bytes of the real MNIST file ``name`` from LENET_DATA (or skip)."""
    path = data.find_file(real_data_dir(), name)
    if path is None:
        missing(f"{name}(.gz) is not in LENET_DATA")
    with open(path, "rb") as f:
        content = f.read()
    return content if path.endswith(".gz") else gzip.compress(content)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (mode, body)``; 404 for anything else. Each path
    asked for is appended to ``server.requests``.

    mode "ok" sends body; "drop" announces len(body) bytes, sends half and closes.
    """

    def do_GET(self):
        self.server.requests.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        mode, body = route
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """An HTTP server on 127.0.0.1 (any free port); tests fill ``server.routes``."""
    for var in ("no_proxy", "NO_PROXY"):  # never send 127.0.0.1 requests through a proxy
        monkeypatch.setenv(var, "*")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.routes, srv.requests = {}, []
    srv.mirror = lambda prefix: f"http://127.0.0.1:{srv.server_address[1]}/{prefix}/"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


# ---------------------------------------------------------------------------
# real data


@pytest.fixture(scope="module")
def real_train():
    return data.load_mnist("train", directory=real_data_dir(), download_missing=False)


@pytest.fixture(scope="module")
def real_test():
    return data.load_mnist("test", directory=real_data_dir(), download_missing=False)


def test_real_train_split(real_train):
    images, labels = real_train
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == TRAIN_COUNTS


def test_real_test_split(real_test):
    images, labels = real_test
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == TEST_COUNTS


def test_real_test_preprocessed(real_test):
    x = data.preprocess(real_test[0])
    assert x.shape == (10000, 1, 32, 32) and x.dtype == np.float32
    assert x.min() == np.float32(-0.1) and x.max() == np.float32(1.175)


# ---------------------------------------------------------------------------
# preprocess


def test_preprocess_shape_dtype_and_border():
    images = np.full((4, 28, 28), 255, dtype=np.uint8)
    x = data.preprocess(images)
    assert x.shape == (4, 1, 32, 32)
    assert x.dtype == np.float32
    assert x.flags.c_contiguous
    border = np.ones((32, 32), dtype=bool)
    border[2:30, 2:30] = False
    assert np.all(x[:, 0][:, border] == np.float32(-0.1))
    assert np.all(x[:, 0, 2:30, 2:30] == np.float32(1.175))


def test_preprocess_background_maps_to_minus_point_one():
    x = data.preprocess(np.zeros((2, 28, 28), dtype=np.uint8))
    assert np.all(x == np.float32(-0.1))


def test_preprocess_is_linear_and_keeps_position():
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28).astype(np.uint8)  # wraps at 256
    x = data.preprocess(images)
    expected = -0.1 + images.astype(np.float64) / 255 * 1.275
    np.testing.assert_allclose(x[:, 0, 2:30, 2:30], expected, rtol=0, atol=1e-6)


def test_preprocess_rounds_every_pixel_value_once():
    # v -> -0.1 + v / 255 * 1.275 in exact arithmetic, then to float32 (via float64: no
    # float32 lies between); v = 20 is exactly 0
    from fractions import Fraction
    images = np.zeros((1, 28, 28), np.uint8)
    images.flat[:256] = np.arange(256)
    x = data.preprocess(images)[0, 0, 2:30, 2:30].ravel()[:256]
    want = np.array([float(Fraction(-1, 10) + Fraction(v, 255) * Fraction(1275, 1000))
                     for v in range(256)]).astype(np.float32)
    np.testing.assert_array_equal(x, want)
    assert x[20] == 0


def test_preprocess_single_image():
    image = np.zeros((28, 28), dtype=np.uint8)
    image[0, 0] = 255
    x = data.preprocess(image)
    assert x.shape == (1, 1, 32, 32)
    assert x[0, 0, 2, 2] == np.float32(1.175)
    assert x[0, 0, 2, 3] == np.float32(-0.1)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 28, 28), dtype=np.float32),
        np.zeros((2, 28, 28), dtype=np.int64),
        [[0] * 28] * 28,
    ],
    ids=["float32", "int64", "list"],
)
def test_preprocess_rejects_wrong_dtype(bad):
    with pytest.raises(TypeError, match="uint8"):
        data.preprocess(bad)


@pytest.mark.parametrize("shape", [(2, 32, 32), (2, 1, 28, 28), (28,), (28, 27), (784,)])
def test_preprocess_rejects_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        data.preprocess(np.zeros(shape, dtype=np.uint8))


# ---------------------------------------------------------------------------
# read_idx on small synthetic files


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_read_idx_round_trip(tmp_path, gz):
    images, labels = tiny_images(), tiny_labels()
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else bytes
    img_path = write(tmp_path / f"tiny-images-idx3-ubyte{suffix}", pack(idx_bytes(images)))
    lbl_path = write(tmp_path / f"tiny-labels-idx1-ubyte{suffix}", pack(idx_bytes(labels)))
    got_images = data.read_idx(img_path)
    got_labels = data.read_idx(str(lbl_path))
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.uint8
    assert got_images.flags.writeable


def test_read_idx_empty_label_file(tmp_path):
    path = write(tmp_path / "tiny-labels-idx1-ubyte", idx_bytes(np.zeros(0, np.uint8)))
    assert data.read_idx(path).shape == (0,)


def _bad_files():
    """(file name, content, expected words in the message) for each kind of bad file."""
    good_images = idx_bytes(tiny_images())
    good_labels = idx_bytes(tiny_labels())
    corrupt = bytearray(gzip.compress(good_images))
    corrupt[len(corrupt) // 2 : len(corrupt) // 2 + 8] = b"\xff" * 8
    return {
        "bad magic": ("tiny-images-idx3-ubyte", b"\x00\x00\x08\x02" + good_images[4:], "magic"),
        "labels as 3-dim": ("tiny-labels-idx1-ubyte", idx_bytes(tiny_labels(), 2051), "trunc"),
        "wrong dims": (
            "tiny-images-idx3-ubyte",
            idx_bytes(np.zeros((2, 27, 28), np.uint8)),
            "dimensions",
        ),
        "empty": ("tiny-images-idx3-ubyte", b"", "truncated"),
        "short header": ("tiny-images-idx3-ubyte", good_images[:10], "truncated"),
        "truncated images": ("tiny-images-idx3-ubyte", good_images[:-1], "truncated"),
        "truncated labels": ("tiny-labels-idx1-ubyte", good_labels[:-1], "truncated"),
        "trailing bytes": ("tiny-images-idx3-ubyte", good_images + b"\x00\x00", "trailing"),
        # (2^32 - 1)^2 label rows: the length past int64 (once "trailing bytes", negative)
        "huge dimensions": ("tiny-labels-idx1-ubyte", struct.pack(">IIIII", 3074, 2 ** 32 - 1,
                                                                  2 ** 32 - 1, 0, 0),
                            "truncated file (length mismatch: 20 bytes, expected "
                            f"{12 + 4 * (2 ** 32 - 1) ** 2} for"),
        "label 10": (
            "tiny-labels-idx1-ubyte",
            idx_bytes(np.array([0, 9, 10, 3], np.uint8)),
            "out of range",
        ),
        "label 255": ("tiny-labels-idx1-ubyte", idx_bytes(np.array([255], np.uint8)), "range"),
        "corrupt gzip": ("tiny-images-idx3-ubyte.gz", bytes(corrupt), "gzip"),
        "truncated gzip": ("tiny-images-idx3-ubyte.gz", gzip.compress(good_images)[:-20], "gzip"),
        "not gzip": ("tiny-images-idx3-ubyte.gz", good_images, "gzip"),
    }


@pytest.mark.parametrize("case", list(_bad_files()))
def test_read_idx_rejects_bad_file(tmp_path, case):
    name, content, words = _bad_files()[case]
    path = write(tmp_path / name, content)
    with pytest.raises(MNISTError) as excinfo:
        data.read_idx(path)
    message = str(excinfo.value)
    assert name in message
    assert words in message.lower()


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(MNISTError, match="nothere-idx1-ubyte.*not found"):
        data.read_idx(tmp_path / "nothere-idx1-ubyte")


def test_find_file(tmp_path):
    assert data.find_file(tmp_path, "x-idx1-ubyte") is None
    write(tmp_path / "x-idx1-ubyte.gz", b"")
    assert data.find_file(tmp_path, "x-idx1-ubyte") == str(tmp_path / "x-idx1-ubyte.gz")
    write(tmp_path / "x-idx1-ubyte", b"")
    assert data.find_file(str(tmp_path), "x-idx1-ubyte") == str(tmp_path / "x-idx1-ubyte")


# ---------------------------------------------------------------------------
# load_mnist without network


def test_load_mnist_rejects_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="train.*test"):
        data.load_mnist("validation", directory=tmp_path)


def test_load_mnist_missing_directory_offline(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(MNISTError, match="does not exist") as excinfo:
        data.load_mnist("test", directory=missing, download_missing=False)
    assert str(missing) in str(excinfo.value)
    assert not missing.exists()


def test_load_mnist_missing_file_offline(tmp_path):
    with pytest.raises(MNISTError, match="not found") as excinfo:
        data.load_mnist("test", directory=tmp_path, download_missing=False)
    assert TEST_IMAGES in str(excinfo.value)


def test_load_mnist_counts_come_before_checksums(tmp_path, monkeypatch):
    # tiny files under MNIST's names: the image/label count mismatch is reported first,
    # then that MNIST's test split has 10,000, never a checksum
    monkeypatch.setenv("LENET_DATA", str(tmp_path))
    write(tmp_path / (TEST_IMAGES + ".gz"), gzip.compress(idx_bytes(tiny_images(3))))
    write(tmp_path / TEST_LABELS, idx_bytes(tiny_labels(4)))
    with pytest.raises(MNISTError, match="3 images but 4 labels"):
        data.load_mnist("test", download_missing=False)
    write(tmp_path / TEST_LABELS, idx_bytes(tiny_labels(3)))
    with pytest.raises(MNISTError, match="holds 3 images, but MNIST's test split has 10,000"):
        data.load_mnist("test", download_missing=False)
    # the same files are fine as a plain directory
    images, labels = data.load_directory(tmp_path, "test")
    assert images.shape == (3, 28, 28) and labels.shape == (3,)


def test_load_mnist_rejects_labels_in_images_slot(tmp_path):
    write(tmp_path / TEST_IMAGES, idx_bytes(tiny_labels(3)))
    write(tmp_path / TEST_LABELS, idx_bytes(tiny_labels(3)))
    with pytest.raises(MNISTError, match=TEST_IMAGES + ": holds labels, not images"):
        data.load_mnist("test", directory=tmp_path, download_missing=False)
    with pytest.raises(MNISTError, match=TEST_IMAGES + ": holds labels, not images"):
        data.load_directory(tmp_path, "test")


# ---------------------------------------------------------------------------
# default_root


def test_default_root_honours_lenet_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_DATA", str(tmp_path / "mnist"))
    assert data.default_root() == str(tmp_path / "mnist")


def test_default_root_falls_back_to_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("LENET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.default_root() == os.path.join(tmp_path, "cache", "lenet", "mnist")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_root() == os.path.join(tmp_path, "home", ".cache", "lenet", "mnist")


# ---------------------------------------------------------------------------
# download, from an HTTP server on 127.0.0.1


def as_official(monkeypatch, contents, name="mnist"):
    """Make ``contents`` ({(split, kind): published .gz bytes}) data set ``name``'s
    official files: their size and SHA-256 in lenet/datasets.py's table (the shared MNIST
    copy is recompressed, so its bytes are not the published ones)."""
    ds = datasets.DATASETS[name]
    files = dict(ds.files)
    for key, gz in contents.items():
        files[key] = replace(files[key], size=len(gz), sha256=hashlib.sha256(gz).hexdigest(),
                             raw_sha256=hashlib.sha256(gzip.decompress(gz)).hexdigest())
    monkeypatch.setitem(datasets.DATASETS, name, replace(ds, files=files))


# 37 labels, made here: the "official" t10k-labels of the download tests
LABELS = np.random.default_rng(7).integers(0, 10, 37).astype(np.uint8)
GOOD = gzip.compress(idx_bytes(LABELS))
NAME = TEST_LABELS + ".gz"


@pytest.fixture
def official(monkeypatch):
    as_official(monkeypatch, {("test", "labels"): GOOD})


def test_download_from_good_mirror(server, tmp_path, official, capsys):
    server.routes[f"/good/{NAME}"] = ("ok", GOOD)
    path = data.download(TEST_LABELS, tmp_path, mirrors=[server.mirror("good")], timeout=5)
    assert path == str(tmp_path / NAME) and (tmp_path / NAME).read_bytes() == GOOD
    np.testing.assert_array_equal(data.read_idx(path), LABELS)
    assert os.listdir(tmp_path) == [NAME]  # no temporary file left
    err = capsys.readouterr().err
    assert f"downloading {NAME}" in err and "100%" in err, err


@pytest.mark.parametrize("first", ["corrupt gzip", "wrong content", "404", "dropped"])
def test_download_falls_back_to_second_mirror(server, tmp_path, official, first):
    bad = bytearray(GOOD)
    bad[len(bad) // 2] ^= 0xFF
    wrong = gzip.compress(idx_bytes(LABELS[::-1]))  # well-formed, not the official file
    if first != "404":
        server.routes[f"/bad/{NAME}"] = {"corrupt gzip": ("ok", bytes(bad)),
                                         "wrong content": ("ok", wrong),
                                         "dropped": ("drop", GOOD)}[first]
    server.routes[f"/good/{NAME}"] = ("ok", GOOD)
    mirrors = [server.mirror("bad"), server.mirror("good")]
    path = data.download(TEST_LABELS, tmp_path, mirrors=mirrors, timeout=5, progress=False)
    assert server.requests == [f"/bad/{NAME}", f"/good/{NAME}"]
    np.testing.assert_array_equal(data.read_idx(path), LABELS)
    assert os.listdir(tmp_path) == [NAME]


def test_download_refuses_what_is_not_the_official_file(server, tmp_path, official):
    # every mirror fails in its own way: one error naming each, the directory made for
    # the download removed again, nothing kept
    server.routes[f"/wrong/{NAME}"] = ("ok", gzip.compress(idx_bytes(LABELS[::-1])))
    server.routes[f"/drop/{NAME}"] = ("drop", GOOD)
    mirrors = [server.mirror(p) for p in ("wrong", "drop", "missing")] + [closed_port_url()]
    directory = tmp_path / "new" / "mnist"
    with pytest.raises(MNISTError) as excinfo:
        data.download(TEST_LABELS, directory, mirrors=mirrors, timeout=5, progress=False)
    message = str(excinfo.value)
    assert message.startswith(f"could not download {NAME} to {directory}:\n")
    for mirror, reason in zip(mirrors, [f"checksum mismatch (not the official {NAME})",
                                        f"connection closed after {len(GOOD) // 2} of "
                                        f"{len(GOOD)} bytes", "HTTP error 404 Not Found",
                                        "[Errno 111] Connection refused"], strict=True):
        assert f"\n  {mirror}{NAME}: {reason}\n" in message, message
    # some mirrors answered: no "offline" hint, but where to put the files by hand
    assert "offline" not in message and str(directory) in message
    for name in data.FILES.values():  # ... and which files
        assert name + ".gz" in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mine", [NAME, TEST_LABELS])
def test_download_keeps_a_file_already_there_and_needs_no_network(server, tmp_path, mine):
    # whatever the user put there (even not the official file) is returned untouched;
    # no mirror is asked (loading then checks the file)
    write(tmp_path / mine, b"the user's own file")
    path = data.download(TEST_LABELS, tmp_path, mirrors=[server.mirror("good")])
    assert path == str(tmp_path / mine) and server.requests == []
    assert os.listdir(tmp_path) == [mine]
    assert (tmp_path / mine).read_bytes() == b"the user's own file"


def test_download_rejects_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="unknown MNIST file"):
        data.download("tiny-labels-idx1-ubyte", tmp_path, mirrors=[])


def test_load_mnist_downloads_missing_test_files(server, tmp_path, monkeypatch):
    published = {(split, kind): real_gz(name) for (split, kind), name in data.FILES.items()
                 if split == "test"}
    as_official(monkeypatch, published)
    for (split, kind), content in published.items():
        server.routes[f"/mnist/{data.FILES[split, kind]}.gz"] = ("ok", content)
    directory = tmp_path / "fresh" / "dir"  # created by load_mnist
    images, labels = data.load_mnist("test", directory=directory, mirrors=[server.mirror("mnist")])
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == TEST_COUNTS
    assert sorted(os.listdir(directory)) == sorted([TEST_IMAGES + ".gz", TEST_LABELS + ".gz"])
    # offline, a second load finds the files and needs no mirror
    images2, _ = data.load_mnist("test", directory=directory, mirrors=[closed_port_url()])
    np.testing.assert_array_equal(images, images2)
    assert len(server.requests) == 2


# ---------------------------------------------------------------------------
# named data sets, plain directories and their checks (small files made here)


def int_labels_bytes(rows):
    """QMNIST's label format: magic 0x00000c02, int32 rows (N, K), class in column 0."""
    rows = np.asarray(rows, dtype=np.int64)
    return struct.pack(">I2I", 0x0C02, *rows.shape) + rows.astype(">i4").tobytes()


def fake_dataset(monkeypatch, name, counts, contents=None):
    """Register data set `name` as a copy of lenet/datasets.py's with small counts and,
    for each (split, kind) in `contents`, the checksum of the given file's content."""
    ds = datasets.DATASETS[name]
    files = dict(ds.files)
    for (split, kind), content in (contents or {}).items():
        files[(split, kind)] = replace(files[(split, kind)], size=None, sha256=None,
                                       raw_sha256=hashlib.sha256(content).hexdigest())
    fake = replace(ds, counts=counts, files=files)
    monkeypatch.setitem(datasets.DATASETS, name, fake)
    return fake


def test_qmnist_int32_labels_take_the_first_column(tmp_path):
    rows = np.array([[3, 10, 500, 1, 51, 7, 0, 0], [9, 4, 2, 0, 57, 8, 0, 0]])
    path = write(tmp_path / "qmnist-test-labels-idx2-int", int_labels_bytes(rows))
    labels = data.read_idx(path)
    assert labels.tolist() == [3, 9] and labels.dtype == np.uint8
    for bad, words in [([[3, 0], [10, 0]], "label 10 at index 1"),
                       ([[-1, 0]], "label -1 at index 0")]:
        write(path, int_labels_bytes(bad))
        with pytest.raises(MNISTError, match=words):
            data.read_idx(path)
    write(path, int_labels_bytes(rows)[:-1])
    with pytest.raises(MNISTError, match="truncated"):
        data.read_idx(path)


def test_qmnist_by_name(tmp_path, monkeypatch):
    images = tiny_images(2)
    labels = int_labels_bytes([[4, 1, 2, 3, 4, 5, 6, 7], [8, 1, 2, 3, 4, 5, 6, 7]])
    write(tmp_path / "qmnist-test-images-idx3-ubyte.gz", gzip.compress(idx_bytes(images)))
    write(tmp_path / "qmnist-test-labels-idx2-int.gz", gzip.compress(labels))
    fake_dataset(monkeypatch, "qmnist", {"train": 2, "test": 2})
    # the labels' decompressed checksum is QMNIST's official one: these are not those
    with pytest.raises(MNISTError, match="not QMNIST's official qmnist-test-labels-idx2-int"):
        data.load_dataset("qmnist", "test", tmp_path, download=False)
    fake_dataset(monkeypatch, "qmnist", {"train": 2, "test": 2},
                 {("test", "labels"): labels})
    got_images, got_labels = data.load_dataset("qmnist", "test", tmp_path, download=False)
    np.testing.assert_array_equal(got_images, images)  # QMNIST's images are not transposed
    assert got_labels.tolist() == [4, 8]


def test_emnist_digits_are_transposed_back(tmp_path, monkeypatch):
    upright = np.zeros((2, 28, 28), np.uint8)
    upright[:, 3:25, 13:15] = 255  # a vertical bar (a "1")
    upright[1, 3:5, 5:15] = 255    # ... with a flag at the top left
    stored = upright.transpose(0, 2, 1)  # EMNIST stores images column by column
    write(tmp_path / "emnist-digits-test-images-idx3-ubyte.gz",
          gzip.compress(idx_bytes(stored)))
    write(tmp_path / "emnist-digits-test-labels-idx1-ubyte.gz",
          gzip.compress(idx_bytes(np.array([1, 7], np.uint8))))
    fake_dataset(monkeypatch, "emnist-digits", {"train": 2, "test": 2})
    images, labels = data.load_dataset("emnist-digits", "test", tmp_path, download=False)
    np.testing.assert_array_equal(images, upright)
    assert images.flags.c_contiguous and labels.tolist() == [1, 7]


def test_emnist_digits_download_from_the_archive(server, tmp_path, monkeypatch):
    # EMNIST is published as one zip of every split: it is downloaded, checked by its
    # size and SHA-256, the four Digits files are taken out, and the zip is not kept
    members = {}
    for split, n in (("train", 3), ("test", 2)):
        members[f"gzip/emnist-digits-{split}-images-idx3-ubyte.gz"] = \
            gzip.compress(idx_bytes(tiny_images(n)))
        members[f"gzip/emnist-digits-{split}-labels-idx1-ubyte.gz"] = \
            gzip.compress(idx_bytes(tiny_labels(n)))
    members["gzip/emnist-letters-test-labels-idx1-ubyte.gz"] = b"not wanted"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    archive = buffer.getvalue()
    ds = fake_dataset(monkeypatch, "emnist-digits", {"train": 3, "test": 2})
    official = replace(ds.archive, size=len(archive),
                       sha256=hashlib.sha256(archive).hexdigest())
    monkeypatch.setitem(datasets.DATASETS, "emnist-digits", replace(ds, archive=official))
    server.routes["/good/gzip.zip"] = ("ok", archive)
    server.routes["/bad/gzip.zip"] = ("ok", archive[:-1] + b"x")
    root = tmp_path / "emnist"
    images, labels = data.load_dataset("emnist-digits", "test", root,
                                       mirrors=[server.mirror("bad") + "gzip.zip",
                                                server.mirror("good") + "gzip.zip"])
    np.testing.assert_array_equal(images, tiny_images(2).transpose(0, 2, 1))
    assert labels.tolist() == tiny_labels(2).tolist()
    assert sorted(os.listdir(root)) == sorted(n.removeprefix("gzip/") for n in members
                                              if "digits" in n)
    # a bad archive only: nothing is kept, and the directory made for it is removed again
    other = tmp_path / "new" / "emnist"
    with pytest.raises(MNISTError, match="bad/gzip.zip: checksum mismatch"):
        data.load_dataset("emnist-digits", "test", other,
                          mirrors=[server.mirror("bad") + "gzip.zip"])
    assert not (tmp_path / "new").exists()


def test_named_data_set_mismatch_says_what_the_file_is_not(tmp_path, monkeypatch):
    # a file that is not the official one: an error naming the data set it is not, and
    # the one it is when its checksum is known; nothing is deleted or replaced
    good, other = idx_bytes(tiny_images(2)), idx_bytes(tiny_images(2)[::-1])
    labels = idx_bytes(tiny_labels(2))
    write(tmp_path / TEST_IMAGES, other)
    write(tmp_path / (TEST_LABELS + ".gz"), gzip.compress(labels))
    counts = {"train": 2, "test": 2}
    fake_dataset(monkeypatch, "mnist", counts,
                 {("test", "images"): good, ("test", "labels"): labels})
    with pytest.raises(MNISTError) as e:
        data.load_dataset("mnist", "test", tmp_path, mirrors=[closed_port_url()])
    message = str(e.value)
    assert message.startswith(f"{tmp_path / TEST_IMAGES}: not MNIST's official {TEST_IMAGES}")
    assert hashlib.sha256(other).hexdigest() in message and "--data DIR alone" in message
    assert "delete" not in message and "download" not in message
    fake_dataset(monkeypatch, "kmnist", counts, {("test", "images"): other})
    with pytest.raises(MNISTError, match=f"it is Kuzushiji-MNIST's {TEST_IMAGES}: name "
                       "that data set \\(--dataset kmnist"):
        data.load_dataset("mnist", "test", tmp_path, download=False)
    assert (tmp_path / TEST_IMAGES).read_bytes() == other  # untouched
    assert sorted(os.listdir(tmp_path)) == [TEST_IMAGES, TEST_LABELS + ".gz"]
    # as a plain directory the same files load, and are recognised as KMNIST's only
    # when both files are
    split = data.read_split("test", None, tmp_path)
    assert split.dataset is None and split.classes == tuple("0123456789")
    fake_dataset(monkeypatch, "kmnist", counts,
                 {("test", "images"): other, ("test", "labels"): labels})
    split = data.read_split("test", None, tmp_path)
    assert split.dataset.name == "kmnist" and split.classes[:2] == ("o", "ki")


def test_unverifiable_files_are_checked_by_what_we_know(tmp_path, monkeypatch):
    # KMNIST publishes only the SHA-256 of its .gz files: a decompressed copy cannot be
    # verified and loads on its structure and counts, unless we know it as another
    # data set's file
    images, labels = idx_bytes(tiny_images(2)), idx_bytes(tiny_labels(2))
    write(tmp_path / TEST_IMAGES, images)
    write(tmp_path / TEST_LABELS, labels)
    counts = {"train": 2, "test": 2}
    fake_dataset(monkeypatch, "kmnist", counts)
    got, _ = data.load_dataset("kmnist", "test", tmp_path, download=False)
    np.testing.assert_array_equal(got, tiny_images(2))
    fake_dataset(monkeypatch, "mnist", counts, {("test", "images"): images})
    with pytest.raises(MNISTError, match=f"not Kuzushiji-MNIST's official {TEST_IMAGES}; "
                       f"it is MNIST's {TEST_IMAGES}: name that data set"):
        data.load_dataset("kmnist", "test", tmp_path, download=False)


def test_structure_comes_before_checksums(tmp_path, monkeypatch):
    write(tmp_path / TEST_IMAGES, idx_bytes(tiny_images(2))[:-5])
    write(tmp_path / TEST_LABELS, idx_bytes(tiny_labels(2)))
    fake_dataset(monkeypatch, "mnist", {"train": 2, "test": 2})
    with pytest.raises(MNISTError, match=f"{TEST_IMAGES}: truncated"):
        data.load_dataset("mnist", "test", tmp_path, download=False)


def test_a_directory_in_place_of_a_file_is_an_error_not_a_download(tmp_path):
    (tmp_path / TEST_IMAGES).mkdir()
    write(tmp_path / TEST_LABELS, idx_bytes(tiny_labels(2)))
    for load in (lambda: data.load_dataset("mnist", "test", tmp_path,
                                           mirrors=[closed_port_url()]),
                 lambda: data.load_directory(tmp_path, "test")):
        with pytest.raises(MNISTError, match=f"{TEST_IMAGES}: is a directory, not an IDX"):
            load()
    assert sorted(os.listdir(tmp_path)) == [TEST_IMAGES, TEST_LABELS]


def test_plain_directory_names_the_files_it_needs(tmp_path):
    with pytest.raises(MNISTError, match=f"{TEST_IMAGES}\\(.gz\\): file not found.*"
                       "--dataset mnist --data DIR"):
        data.load_directory(tmp_path, "test")
    write(tmp_path / "qmnist-test-images-idx3-ubyte.gz", b"")
    with pytest.raises(MNISTError, match="holds QMNIST's files: name that data set "
                       "\\(--dataset qmnist --data DIR"):
        data.load_directory(tmp_path, "test")
    with pytest.raises(MNISTError, match="no such directory"):
        data.load_directory(tmp_path / "nothere", "test")


def test_unknown_data_set_name(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'cifar10'; known: mnist, "
                       "fashion-mnist, kmnist, emnist-digits, qmnist"):
        data.load_dataset("cifar10", "test", tmp_path)


def test_failed_download_leaves_no_empty_directory(tmp_path, monkeypatch):
    # `lenet eval` offline must not leave an empty ~/.cache/lenet/mnist behind
    monkeypatch.delenv("LENET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "*")
    with pytest.raises(MNISTError, match="could not download"):
        data.load_dataset("mnist", "test", mirrors=[closed_port_url()])
    assert os.listdir(tmp_path) == []


def test_default_root_finds_operating_system_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    system = tmp_path / "usr-share"
    system.mkdir()
    ds = datasets.DATASETS["kmnist"]
    monkeypatch.setitem(datasets.DATASETS, "kmnist", replace(ds, system_dirs=(str(system),)))
    cache = os.path.join(tmp_path, "cache", "lenet", "kmnist")
    assert data.default_root("kmnist") == cache  # the package has not all the files
    for f in ds.files.values():
        write(system / f.name, b"")
    assert data.default_root("kmnist") == str(system)
    os.makedirs(cache)
    write(tmp_path / "cache" / "lenet" / "kmnist" / TEST_LABELS, b"")
    assert data.default_root("kmnist") == cache  # a cache with files wins


# ---------------------------------------------------------------------------
# Debian's dataset-fashion-mnist (installed by .ci/run)

# The gzip time stamps of the published Fashion-MNIST files (their headers, as
# https://github.com/zalandoresearch/fashion-mnist serves them).
FASHION_MTIMES = {"train": 0x59A7E9DE, "t10k": 0x59A7E9F3}


def test_debian_fashion_mnist_files_are_the_published_ones(debian_fashion):
    # Debian ships the published .gz files with the gzip header's file name left out and
    # a new time stamp: put back, every file is byte for byte the one whose size and
    # SHA-256 lenet/datasets.py has from TFDS, and its content has the decompressed
    # SHA-256 there
    directory = debian_fashion
    for official in datasets.FASHION_MNIST.files.values():
        stored = (pathlib.Path(directory) / official.name).read_bytes()
        assert stored[:4] == b"\x1f\x8b\x08\x00", official.name  # deflate, no name field
        mtime = FASHION_MTIMES[official.name.split("-")[0]]
        published = (stored[:3] + b"\x08" + struct.pack("<I", mtime) + stored[8:10]
                     + official.name.removesuffix(".gz").encode() + b"\x00" + stored[10:])
        assert len(published) == official.size, official.name
        assert hashlib.sha256(published).hexdigest() == official.sha256, official.name
        content = gzip.decompress(stored)
        assert hashlib.sha256(content).hexdigest() == official.raw_sha256, official.name


def test_fashion_mnist_loads_by_name_from_debian(debian_fashion, tmp_path, monkeypatch):
    directory = debian_fashion
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # an empty cache: use Debian's
    split = data.read_split("test", "fashion-mnist", download_missing=False)
    assert split.directory == directory and split.dataset is datasets.FASHION_MNIST
    assert np.bincount(split.labels, minlength=10).tolist() == [1000] * 10
    assert split.classes[9] == "Ankle boot"
    # read as a plain directory it is recognised by its checksums
    assert data.read_split("test", None, directory).dataset is datasets.FASHION_MNIST
    # and it is not MNIST
    with pytest.raises(MNISTError, match="not MNIST's official .* it is Fashion-MNIST's"):
        data.load_dataset("mnist", "test", directory, download=False)


def test_a_file_given_as_the_data_directory_is_refused_in_one_line(tmp_path, monkeypatch,
                                                                   capsys):
    from lenet import cli
    notes = tmp_path / "README.md"
    notes.write_text("not a directory\n")
    monkeypatch.setenv("LENET_DATA", str(notes))
    with pytest.raises(MNISTError, match="README.md is not a directory"):
        data.load_mnist("test")
    with pytest.raises(MNISTError, match="README.md is not a directory"):
        data.load_dataset("fashion-mnist", "test", notes)
    with pytest.raises(MNISTError, match="README.md: not a directory"):
        data.load_directory(notes)
    assert cli.main(["eval", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lenet eval: error: ") and "README.md is not a directory" in err
    assert err.count("\n") == 1
    assert notes.read_text() == "not a directory\n"


# ----------------------------------------------- downloads: what a user review found

@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_a_downloaded_file_s_mode_follows_the_umask(server, tmp_path, official, umask):
    # pooch writes a 0600 temporary file: others could not read a shared data directory
    server.routes[f"/good/{NAME}"] = ("ok", GOOD)
    old = os.umask(umask)
    try:
        path = data.download(TEST_LABELS, tmp_path, mirrors=[server.mirror("good")],
                             timeout=5, progress=False)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_only_unanswered_mirrors_suggest_the_machine_is_offline(tmp_path, official):
    with pytest.raises(MNISTError, match="This machine may be offline"):
        data.download(TEST_LABELS, tmp_path / "d", mirrors=[closed_port_url()], timeout=5,
                      progress=False)


def test_a_directory_that_cannot_take_the_files_is_said_so(server, tmp_path, official,
                                                           monkeypatch):
    server.routes[f"/good/{NAME}"] = ("ok", GOOD)
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory\n")
    with pytest.raises(MNISTError, match=f"cannot make the data directory {blocker}/mnist "
                                         r"\(.*\): give a directory"):
        data.download(TEST_LABELS, blocker / "mnist", mirrors=[server.mirror("good")],
                      timeout=5, progress=False)
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro)
                        and mode == os.W_OK else real(p, mode))   # as for a non-root user
    with pytest.raises(MNISTError, match=f"cannot download {NAME} into {ro}: the directory "
                                         "is not writable"):
        data.download(TEST_LABELS, ro, mirrors=[server.mirror("good")], timeout=5,
                      progress=False)
    assert server.requests == []                  # no mirror was asked
    import pooch
    monkeypatch.setattr(os, "access", real)

    def refused(*args, **kwargs):   # pooch cannot write its temporary file there
        raise PermissionError(13, "Permission denied", str(ro / "tmpabc"))

    monkeypatch.setattr(pooch, "retrieve", refused)
    with pytest.raises(MNISTError, match=f"cannot write {NAME} into {ro}: .*Permission denied"):
        data.download(TEST_LABELS, ro, mirrors=[server.mirror("good"), server.mirror("good")],
                      timeout=5, progress=False)
    assert os.listdir(ro) == []

