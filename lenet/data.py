"""MNIST loading: read, check, download and preprocess the four IDX files.

The MNIST database (LeCun, Cortes, Burges) comes as four IDX files, usually
gzip-compressed: 60,000 training and 10,000 test images of 28x28 uint8 pixels,
each with a uint8 label 0..9. This module

* reads an IDX file, gzipped (``.gz``) or raw, and checks everything it can:
  magic number, dimensions, exact length, label range and, for the four known
  file names, the SHA-256 of the decompressed bytes (``read_idx``);
* downloads missing files from a list of mirrors, verifying each download and
  writing it atomically (``download``);
* puts it together: ``load_mnist("train")`` / ``load_mnist("test")`` return
  ``(images uint8 (N, 28, 28), labels uint8 (N,))`` from a data directory,
  by default ``$LENET_DATA`` or a per-user cache (``default_data_dir``);
* turns images into network input: ``preprocess`` pads them to 32x32 and maps
  pixels so that background is -0.1 and full ink is 1.175 (as in LeNet-5).

Every problem with a file raises ``MNISTError`` with a message that names the
file and the problem. Only the standard library and numpy are used.

Test with ``pytest tests/test_data.py``; set ``LENET_DATA`` to a directory
holding the real files (e.g. ``LENET_DATA=../shared/data/mnist``) to also run
the tests that need them; no test reaches the outside network.
"""

import gzip
import hashlib
import os
import struct
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from http.client import HTTPException

import numpy as np

# (split, kind) -> base name of the IDX file (the downloads are "<name>.gz").
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

SPLITS = ("train", "test")

# Official SHA-256 of each decompressed file.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# Base URLs tried in order; each serves "<name>.gz".
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

IMAGE_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
IMAGE_SIZE = 28

_CHUNK = 1 << 16


class MNISTError(Exception):
    """A problem with an MNIST file: missing, corrupt, wrong content, or not downloadable."""


def default_data_dir():
    """Return the MNIST directory: ``$LENET_DATA`` if set, else a per-user cache directory.

    The cache directory is ``$XDG_CACHE_HOME/lenet/mnist`` when ``XDG_CACHE_HOME`` is
    set, else ``~/.cache/lenet/mnist``. The directory is not created here.
    """
    env = os.environ.get("LENET_DATA")
    if env:
        return os.path.expanduser(env)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "lenet", "mnist")


def _base_name(path):
    """The file's name without directory and without a trailing ``.gz``."""
    name = os.path.basename(path)
    return name.removesuffix(".gz")


def _read_bytes(path):
    """Return the (decompressed, for ``.gz``) content of ``path``, raising MNISTError."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise MNISTError(f"{path}: file not found") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise MNISTError(f"{path}: corrupt gzip file ({e or type(e).__name__})") from e
    except OSError as e:
        raise MNISTError(f"{path}: cannot read file ({e})") from e


def _parse_idx(data, path):
    """Check the IDX header and length of ``data`` and return it as a uint8 array."""
    if len(data) < 4:
        raise MNISTError(f"{path}: truncated file ({len(data)} bytes, no IDX header)")
    (magic,) = struct.unpack(">I", data[:4])
    if magic == IMAGE_MAGIC:
        ndim = 3
    elif magic == LABEL_MAGIC:
        ndim = 1
    else:
        raise MNISTError(
            f"{path}: bad magic number 0x{magic:08x} (expected 0x{IMAGE_MAGIC:08x} for "
            f"images or 0x{LABEL_MAGIC:08x} for labels); not an MNIST IDX file"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTError(f"{path}: truncated file ({len(data)} bytes, header needs {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if ndim == 3 and dims[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise MNISTError(
            f"{path}: wrong dimensions {dims[1]}x{dims[2]} "
            f"(expected {IMAGE_SIZE}x{IMAGE_SIZE} images)"
        )
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) < expected:
        raise MNISTError(
            f"{path}: truncated file (length mismatch: {len(data)} bytes, "
            f"expected {expected} for dimensions {dims})"
        )
    if len(data) > expected:
        raise MNISTError(
            f"{path}: length mismatch ({len(data) - expected} trailing bytes: {len(data)} bytes, "
            f"expected {expected} for dimensions {dims})"
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()
    if ndim == 1 and array.size and array.max() > 9:
        bad = int(np.argmax(array > 9))
        raise MNISTError(
            f"{path}: label out of range 0..9 (label {int(array[bad])} at index {bad})"
        )
    return array


def read_idx(path, verify=True):
    """Read one MNIST IDX file, gzipped (``.gz``) or raw, and check it thoroughly.

    Checks the magic number (2051: images, 3-dim uint8, 28x28; 2049: labels, 1-dim
    uint8), the dimensions, the exact file length and that labels are in 0..9. When
    ``verify`` is true and the file's name (without ``.gz``) is one of the four MNIST
    names in ``SHA256``, the SHA-256 of the decompressed bytes must match too.

    Returns a writable uint8 array of shape (N, 28, 28) for images or (N,) for labels.
    Raises MNISTError naming ``path`` and the problem.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    array = _parse_idx(data, path)
    expected = SHA256.get(_base_name(path)) if verify else None
    if expected is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise MNISTError(
                f"{path}: checksum mismatch (SHA-256 of the decompressed content is {actual}, "
                f"expected {expected}); the file is not the official "
                f"{_base_name(path)}; delete it and download it again"
            )
    return array


def find_file(directory, name):
    """Return the path of ``name`` or ``name + ".gz"`` in ``directory`` (raw first), or None."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(os.fspath(directory), candidate)
        if os.path.isfile(path):
            return path
    return None


def _manual_instructions(directory):
    """Text telling the user where to put the four files by hand."""
    names = "\n".join(f"    {name}.gz" for name in FILES.values())
    return (
        f"Put the four MNIST files (gzipped as below, or decompressed without .gz) "
        f"by hand in\n    {os.path.abspath(directory)}\n{names}\n"
        "or set LENET_DATA to a directory that holds them."
    )


def _size(n):
    """``n`` bytes as a short human-readable string."""
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _fetch(url, dest, timeout, progress, label):
    """Stream ``url`` into the open binary file ``dest``; raise OSError on a short transfer."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        try:
            while chunk := response.read(_CHUNK):
                dest.write(chunk)
                received += len(chunk)
                if progress:
                    if total:
                        done = f"{100 * received // total:3d}% of {_size(total)}"
                    else:
                        done = _size(received)
                    sys.stderr.write(f"\rdownloading {label}: {done}")
                    sys.stderr.flush()
        finally:
            if progress and received:
                sys.stderr.write("\n")
                sys.stderr.flush()
        if total is not None and received != total:
            raise OSError(f"connection closed after {received} of {total} bytes")


def _gzip_sha256(path):
    """SHA-256 hex digest of the decompressed content of the gzip file ``path``."""
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(error):
    """A short description of why a download failed."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        error = error.reason  # "<urlopen error [Errno 111] ...>" -> "[Errno 111] ..."
    return str(error) or type(error).__name__


def download(name, directory, mirrors=MIRRORS, timeout=30, progress=True):
    """Download ``<name>.gz`` into ``directory``, trying each mirror in turn; return its path.

    ``name`` is one of the four MNIST base names (see ``FILES``); the URL is
    ``<mirror><name>.gz``. Each download goes to a temporary file in ``directory``
    and is kept (renamed to ``<name>.gz`` with ``os.replace``) only if the SHA-256
    of its decompressed content matches ``SHA256``; a network error, short transfer,
    corrupt gzip or wrong checksum moves on to the next mirror, and an existing
    ``<name>.gz`` is left untouched unless a verified download replaces it.
    ``progress`` shows a one-line counter on stderr.

    Raises MNISTError, with each mirror's reason and where to put the files by hand,
    when no mirror gives a good file.
    """
    if name not in SHA256:
        raise ValueError(f"unknown MNIST file {name!r}; expected one of {sorted(SHA256)}")
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, name + ".gz")
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name + ".gz"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        try:
            try:
                with os.fdopen(fd, "wb") as dest:
                    _fetch(url, dest, timeout, progress, name + ".gz")
            except (OSError, HTTPException) as e:  # URLError, HTTPError, timeouts: OSErrors
                failures.append(f"{url}: {_reason(e)}")
                continue
            try:
                actual = _gzip_sha256(tmp)
            except (OSError, EOFError, zlib.error) as e:
                failures.append(f"{url}: corrupt gzip file ({_reason(e)})")
                continue
            if actual != SHA256[name]:
                failures.append(f"{url}: checksum mismatch (SHA-256 {actual})")
                continue
            os.replace(tmp, target)
            return target
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    reasons = "\n".join(f"  {failure}" for failure in failures) or "  (no mirrors given)"
    raise MNISTError(
        f"could not download {name}.gz to {target}:\n{reasons}\n"
        f"This machine may be offline. {_manual_instructions(directory)}"
    )


def load_mnist(split="train", directory=None, download_missing=True, mirrors=MIRRORS):
    """Load one MNIST split; return ``(images uint8 (N, 28, 28), labels uint8 (N,))``.

    ``split`` is "train" (60,000 images) or "test" (10,000). ``directory`` defaults to
    ``default_data_dir()``. Files may be raw or gzipped. Missing files are downloaded
    from ``mirrors`` into ``directory`` (created if needed) when ``download_missing``
    is true; otherwise a missing directory or file raises MNISTError. Every file is
    checked by ``read_idx`` (checksums included), and the image and label counts
    must agree.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    directory = default_data_dir() if directory is None else os.fspath(directory)
    if not download_missing and not os.path.isdir(directory):
        raise MNISTError(
            f"MNIST directory {directory} does not exist and downloading is disabled. "
            + _manual_instructions(directory)
        )
    arrays = {}
    for kind in ("images", "labels"):
        name = FILES[(split, kind)]
        path = find_file(directory, name)
        if path is None:
            if not download_missing:
                raise MNISTError(
                    f"{os.path.join(directory, name)}(.gz): file not found and downloading is "
                    f"disabled. {_manual_instructions(directory)}"
                )
            path = download(name, directory, mirrors=mirrors)
        arrays[kind] = read_idx(path)
        expected_ndim = 3 if kind == "images" else 1
        if arrays[kind].ndim != expected_ndim:
            raise MNISTError(f"{path}: holds {arrays[kind].ndim}-dim data, not {kind}")
    images, labels = arrays["images"], arrays["labels"]
    if len(images) != len(labels):
        raise MNISTError(
            f"{directory}: {split} split has {len(images)} images but {len(labels)} labels"
        )
    return images, labels


# Pixel value v (0..255) -> -0.1 + v / 255 * 1.275, computed in float64 and rounded once,
# so that 0 gives exactly float32(-0.1) and 255 exactly float32(1.175).
_PIXEL_LUT = (-0.1 + np.arange(256, dtype=np.float64) / 255.0 * 1.275).astype(np.float32)
_BACKGROUND = _PIXEL_LUT[0]


def preprocess(images_uint8):
    """Turn uint8 MNIST images into LeNet-5 input: float32 (N, 1, 32, 32), C-contiguous.

    Accepts (N, 28, 28) or a single (28, 28) image (returned as N = 1). Each image is
    padded with 2 background pixels on every side to 32x32 and pixel value v in 0..255
    is mapped linearly to ``-0.1 + v / 255 * 1.275``: background (0) -> -0.1, full ink
    (255) -> 1.175. Raises TypeError for a non-uint8 input and ValueError for a wrong
    shape.
    """
    if not isinstance(images_uint8, np.ndarray) or images_uint8.dtype != np.uint8:
        dtype = getattr(images_uint8, "dtype", type(images_uint8).__name__)
        raise TypeError(
            f"preprocess expects a uint8 numpy array of shape (N, 28, 28) or (28, 28), got {dtype}"
        )
    images = images_uint8[np.newaxis] if images_uint8.ndim == 2 else images_uint8
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"preprocess expects shape (N, 28, 28) or (28, 28), got {images_uint8.shape}"
        )
    pad = 2
    size = IMAGE_SIZE + 2 * pad
    out = np.full((images.shape[0], 1, size, size), _BACKGROUND, dtype=np.float32)
    out[:, 0, pad : pad + IMAGE_SIZE, pad : pad + IMAGE_SIZE] = _PIXEL_LUT[images]
    return out
