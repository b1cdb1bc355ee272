"""MNIST-format data: read and check IDX files, load data sets, download, preprocess.

    read_idx(path)                 one IDX file (raw or .gz), its structure checked
    load_dataset(name, split)      a data set of lenet/datasets.py by name: its official
                                   files, downloaded through pooch if missing, checked by
                                   structure, counts, then SHA-256
    load_directory(dir, split)     any directory of files under MNIST's names, structure only
    preprocess(images)             uint8 (N,28,28) -> LeNet-5 input float32 (N,1,32,32)

Every problem with a file is an ``MNISTError`` naming the file; nothing the user put in a
directory is deleted or replaced. Tested by tests/test_data.py (``LENET_DATA`` set to the
real MNIST files runs the tests that need them; none reaches the network).
"""

import gzip
import hashlib
import math
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from lenet.datasets import DATASETS, DIGITS, Dataset
from lenet.kernels.architecture import IN_SIZE, INPUT_BACKGROUND, INPUT_INK, INPUT_PAD

SPLITS = ("train", "test")
KINDS = ("images", "labels")

# (split, kind) -> file name (without .gz) in a plain directory of MNIST-format files
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

IMAGE_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension
INT_LABEL_MAGIC = 3074  # 0x00000c02: int32, 2 dimensions (QMNIST: class in column 0)
# magic number -> (what the file holds, the dtype of its numbers)
MAGICS = {IMAGE_MAGIC: ("images", np.dtype(np.uint8)), LABEL_MAGIC: ("labels", np.dtype(np.uint8)),
          INT_LABEL_MAGIC: ("labels", np.dtype(">i4"))}
IMAGE_SIZE = 28
assert IMAGE_SIZE + 2 * INPUT_PAD == IN_SIZE   # preprocess pads a digit to LeNet-5's input


class MNISTError(Exception):
    """A problem with an MNIST-format file: missing, corrupt, not the official one, or not
    downloadable."""


@dataclass
class Split:
    """One split as loaded: uint8 images (N, 28, 28), uint8 labels (N,), the named data
    set the files are (None for a directory whose files we do not recognise), the class
    names, and the directory read."""
    images: np.ndarray
    labels: np.ndarray
    dataset: Dataset | None
    directory: str

    @property
    def classes(self):
        return self.dataset.classes if self.dataset else DIGITS

    @property
    def title(self):
        """The data set's name, or the directory's for unrecognised files."""
        if self.dataset:
            return self.dataset.title
        return os.path.basename(os.path.normpath(os.path.abspath(self.directory)))


def _base(name):
    """A file's name without directory and without a trailing ``.gz``."""
    return os.path.basename(name).removesuffix(".gz")


def dataset(name):
    """The Dataset called ``name`` (lenet/datasets.py); ValueError for an unknown name."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def default_root(name="mnist"):
    """The directory of the data set ``name``: for mnist ``$LENET_DATA`` when set; else
    ``$XDG_CACHE_HOME/lenet/NAME`` (``~/.cache/lenet/NAME``), unless that holds none of
    its files and an operating-system package has installed all of them (Debian's
    dataset-fashion-mnist: /usr/share/datasets/fashion-mnist). Nothing is created."""
    ds = dataset(name)
    env = os.environ.get("LENET_DATA")
    if name == "mnist" and env:
        return os.path.expanduser(env)
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME")
                         or os.path.join(os.path.expanduser("~"), ".cache"), "lenet", name)
    bases = [_base(f.name) for f in ds.files.values()]
    if not any(find_file(cache, b) for b in bases):
        for directory in ds.system_dirs:
            if all(find_file(directory, b) for b in bases):
                return directory
    return cache


# ------------------------------------------------------------------ reading

class _IdxFile:
    """The bytes of one file as stored, its decompressed content, and their SHA-256."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                self.stored = f.read()
        except FileNotFoundError:
            raise MNISTError(f"{self.path}: file not found") from None
        except IsADirectoryError:
            raise MNISTError(f"{self.path}: is a directory, not an IDX file") from None
        except OSError as e:
            raise MNISTError(f"{self.path}: cannot read file ({e.strerror or e})") from e
        self.data = self.stored
        if self.path.endswith(".gz"):
            try:
                self.data = gzip.decompress(self.stored)
            except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
                raise MNISTError(f"{self.path}: corrupt gzip file "
                                 f"({e or type(e).__name__})") from e
        self._digests = {}

    def sha256(self, which):
        """SHA-256 of the "stored" bytes or of the decompressed "data"."""
        if which not in self._digests:
            self._digests[which] = hashlib.sha256(getattr(self, which)).hexdigest()
        return self._digests[which]


def _parse_idx(data, path, kind=None):
    """Check the IDX header, length and labels of ``data``; return uint8 images
    (N, 28, 28) or uint8 labels (N,). ``kind`` None: whichever the header says."""
    if len(data) < 4:
        raise MNISTError(f"{path}: truncated file ({len(data)} bytes, no IDX header)")
    (magic,) = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    if magic not in MAGICS:
        raise MNISTError(
            f"{path}: bad magic number 0x{magic:08x} (expected 0x{IMAGE_MAGIC:08x} for "
            f"images, 0x{LABEL_MAGIC:08x} or 0x{INT_LABEL_MAGIC:08x} for labels); not an "
            "MNIST-format IDX file"
        )
    found, dtype = MAGICS[magic]
    if kind is not None and found != kind:
        raise MNISTError(f"{path}: holds {found}, not {kind} (magic number 0x{magic:08x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTError(f"{path}: truncated file ({len(data)} bytes, header needs {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if found == "images" and dims[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise MNISTError(f"{path}: wrong dimensions {dims[1]}x{dims[2]} "
                         f"(expected {IMAGE_SIZE}x{IMAGE_SIZE} images)")
    if ndim == 2 and dims[1] < 1:
        raise MNISTError(f"{path}: label rows of {dims[1]} numbers (expected at least 1)")
    expected = header + math.prod(dims) * dtype.itemsize   # Python ints: no overflow
    if len(data) < expected:
        raise MNISTError(f"{path}: truncated file (length mismatch: {len(data)} bytes, "
                         f"expected {expected} for dimensions {dims})")
    if len(data) > expected:
        raise MNISTError(f"{path}: length mismatch ({len(data) - expected} trailing bytes: "
                         f"{len(data)} bytes, expected {expected} for dimensions {dims})")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    if found == "labels":
        labels = array if ndim == 1 else array[:, 0]
        bad = np.flatnonzero((labels < 0) | (labels > 9))
        if bad.size:
            raise MNISTError(f"{path}: label out of range 0..9 (label {int(labels[bad[0]])} "
                             f"at index {bad[0]})")
        return labels.astype(np.uint8)
    return array.copy()


def read_idx(path, kind=None):
    """A writable uint8 array, images (N, 28, 28) or labels (N,), of one IDX file, gzipped
    (``.gz``) or raw, after checking its magic number, dimensions, exact length and labels
    (0..9; QMNIST's int32 label rows give their first column); ``kind`` "images" or
    "labels" also requires that kind. MNISTError naming ``path`` and the problem."""
    if kind not in (None, *KINDS):
        raise ValueError(f"kind must be 'images', 'labels' or None, not {kind!r}")
    idx = _IdxFile(path)
    return _parse_idx(idx.data, idx.path, kind)


def find_file(directory, name):
    """The path of ``name`` or ``name + ".gz"`` in ``directory`` (raw first), or None.
    Whatever is there counts, a directory too (reading it is then an error)."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(os.fspath(directory), candidate)
        if os.path.lexists(path):
            return path
    return None


# ---------------------------------------------------------------- checksums

def _matches(idx, official):
    """True if the file is the official one (byte for byte, or by decompressed content),
    False if it is not, None if we cannot tell (no decompressed checksum is known)."""
    if official.sha256 and idx.sha256("stored") == official.sha256:
        return True
    if official.raw_sha256:
        return idx.sha256("data") == official.raw_sha256
    return None


def identify(idx):
    """(data set, file) that an _IdxFile is, by checksum, or None."""
    # SHA-256 -> (data set, file) for every published file and decompressed content
    known = {digest: (ds, f) for ds in DATASETS.values() for f in ds.files.values()
             for digest in (f.sha256, f.raw_sha256) if digest}
    return known.get(idx.sha256("stored")) or known.get(idx.sha256("data"))


def _not_official(idx, ds, official, found):
    """The error for a file of data set ds that is not its official file `official`;
    `found`: the (data set, file) it is by checksum, or None."""
    digests = (f" (SHA-256 of its content {idx.sha256('data')}, expected "
               f"{official.raw_sha256})" if official.raw_sha256 else "")
    if found and found[0] is not ds:
        hint = (f"; it is {found[0].title}'s {_base(found[1].name)}: name that data set "
                f"(--dataset {found[0].name}; load_dataset({found[0].name!r}))")
    elif found:
        hint = f"; it is {ds.title}'s {_base(found[1].name)}"
    else:
        hint = ("; to use other MNIST-format files, read their directory without naming a "
                "data set (--data DIR alone; load_directory), which compares no checksums")
    return MNISTError(f"{idx.path}: not {ds.title}'s official {_base(official.name)}"
                      f"{digests}{hint}")


# ---------------------------------------------------------------- downloads

def _manual_instructions(ds, directory):
    """Text telling the user where to put the files by hand."""
    names = "\n".join(f"    {f.name}" for f in ds.files.values())
    where = (f" (they are in {ds.archive.name}, {' or '.join(ds.archive.urls)})"
             if ds.archive else "")
    extra = " or set LENET_DATA to a directory that holds them." if ds.name == "mnist" else ""
    return (f"Put the four {ds.title} files{where} (gzipped as below, or decompressed "
            f"without .gz) by hand in\n    {os.path.abspath(directory)}\n{names}\n{extra}")


def download(name, directory, mirrors=None, timeout=30, progress=True, dataset_name="mnist"):
    """The path of the official file ``name`` (with or without ``.gz``) of a data set in
    ``directory``: a copy already there (checked when loaded), else the first mirror's
    that pooch finds to have the official SHA-256 (EMNIST: taken out of its archive, which
    is not kept). A directory made for it is removed again if nothing came; MNISTError,
    with each mirror's reason and where to put the files by hand, if no mirror served."""
    ds = dataset(dataset_name)
    official = next((f for f in ds.files.values() if _base(f.name) == _base(name)), None)
    if official is None:
        raise ValueError(f"unknown {ds.title} file {name!r}; expected one of "
                         f"{sorted(_base(f.name) for f in ds.files.values())}")
    directory = os.fspath(directory)
    found = find_file(directory, _base(official.name))
    if found:
        return found
    mirrors = [mirrors] if isinstance(mirrors, str) else mirrors
    try:
        created = _make_dirs(directory)
    except OSError as e:
        raise MNISTError(f"cannot make the data directory {os.path.abspath(directory)} "
                         f"({e.strerror}): give a directory that holds or may receive "
                         f"{ds.title}'s files (--data DIR; LENET_DATA for MNIST)") from None
    if not os.access(directory, os.W_OK):
        raise MNISTError(f"cannot download {official.name} into {os.path.abspath(directory)}"
                         f": the directory is not writable. "
                         f"{_manual_instructions(ds, directory)}")
    try:
        if ds.archive is None:
            urls = [m.rstrip("/") + "/" + official.name
                    for m in (ds.mirrors if mirrors is None else mirrors)]
            return _fetch(ds, urls, official, directory, directory, timeout, progress)
        urls = ds.archive.urls if mirrors is None else mirrors
        with tempfile.TemporaryDirectory(prefix=".download-", dir=directory) as tmp:
            archive = _fetch(ds, urls, ds.archive, tmp, directory, timeout, progress)
            _extract(ds, archive, directory)
        return os.path.join(directory, official.name)
    except BaseException:
        _remove_empty(created)
        raise


def _fetch(ds, urls, official, into, directory, timeout, progress):
    """Download ``official`` (a File or Archive) from the first of ``urls`` that gives it
    into the directory ``into``, through pooch (kept only if its SHA-256 is the official
    one); its path. The error names ``directory``, the data set's."""
    import pooch

    from lenet.progress import Progress
    failures, logger, offline = [], pooch.get_logger(), True
    level = logger.level
    logger.setLevel("WARNING")  # no "Downloading data from ..." line through the bar's
    try:
        for url in urls:
            # total: the official size (pooch sets it again from the Content-Length)
            bar = Progress(official.size or 0, f"downloading {official.name}",
                           enabled=progress, unit="B", unit_scale=True, unit_divisor=1024)
            try:
                pooch.retrieve(url, f"sha256:{official.sha256}", official.name, into,
                               downloader=pooch.HTTPDownloader(
                                   progressbar=bar, timeout=timeout, chunk_size=1 << 16))
                path = os.path.join(into, official.name)
                os.chmod(path, 0o666 & ~_umask())  # pooch's temporary file was 0600
                return path
            except ValueError:  # pooch: the SHA-256 is not the official one
                failures.append(f"{url}: checksum mismatch (not the official {official.name})")
                offline = False
            except OSError as e:  # requests' errors (connection, HTTP status, timeout)
                if getattr(e, "response", None) is None and not _network(e):
                    raise MNISTError(f"cannot write {official.name} into "
                                     f"{os.path.abspath(into)}: {e}") from e
                failures.append(f"{url}: {_reason(e)}")
                offline = offline and getattr(e, "response", None) is None
            finally:
                bar.close(keep=False)
    finally:
        logger.setLevel(level)
    reasons = "\n".join(f"  {failure}" for failure in failures) or "  (no mirrors given)"
    hint = "This machine may be offline. " if failures and offline else ""
    raise MNISTError(f"could not download {official.name} to {os.path.abspath(directory)}:"
                     f"\n{reasons}\n{hint}{_manual_instructions(ds, directory)}")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _network(error):
    """Whether an OSError from a download is the network's (requests' errors, a socket's)
    rather than the local file system's."""
    import requests
    return isinstance(error, (requests.RequestException, ConnectionError, TimeoutError)) \
        or error.errno is None


def _reason(error):
    """Why a download failed, in a few words: the HTTP status, or the innermost cause
    (requests wraps it in several long messages)."""
    response = getattr(error, "response", None)
    if response is not None:
        return f"HTTP error {response.status_code} {response.reason}"
    while error.__cause__ or error.__context__:
        error = error.__cause__ or error.__context__
    if type(error).__name__ == "IncompleteRead":
        return f"connection closed after {error.partial} of {error.partial + error.expected} bytes"
    return str(error) or type(error).__name__


def _extract(ds, path, directory):
    """Copy each of ds's files out of the zip archive ``path`` into ``directory``,
    atomically; a file already there is left as it is."""
    try:
        with zipfile.ZipFile(path) as z:
            for name, member in ds.archive.members.items():
                target = os.path.join(directory, name)
                if os.path.lexists(target):
                    continue
                part = os.path.join(os.path.dirname(path), name)
                with open(part, "wb") as dest, z.open(member) as source:
                    shutil.copyfileobj(source, dest, 1 << 16)
                os.replace(part, target)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise MNISTError(f"{ds.archive.name}: cannot extract {ds.title}'s files ({e})") from e


def _make_dirs(directory):
    """os.makedirs(directory); returns the directories it created, deepest first."""
    created, path = [], os.path.abspath(directory)
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    return created


def _remove_empty(created):
    for path in created:
        try:
            os.rmdir(path)
        except OSError:
            return


# ------------------------------------------------------------------ loading

def _parse_pair(files, directory, split):
    """(images, labels) of a split's two _IdxFiles, structure checked, one per image."""
    images, labels = (_parse_idx(files[kind].data, files[kind].path, kind) for kind in KINDS)
    if len(images) != len(labels):
        raise MNISTError(f"{directory}: {split} split has {len(images)} images but "
                         f"{len(labels)} labels")
    return images, labels


def read_split(split="train", name=None, directory=None, download_missing=True, mirrors=None):
    """One split as a ``Split``. With ``name``: that data set's official files from
    ``directory`` (default ``default_root(name)``), missing ones downloaded if
    ``download_missing``. Without: the MNIST-named files of ``directory``, structure only,
    never downloading (``dataset``: the data set they are by checksum, if any)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if name is None:
        if directory is None:
            raise ValueError("read_split needs a data set name or a directory")
        return _read_directory(split, os.fspath(directory))
    ds = dataset(name)
    directory = default_root(name) if directory is None else os.fspath(directory)
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise MNISTError(f"{directory} is not a directory: give the directory that holds "
                         f"{ds.title}'s files (LENET_DATA, --data, root)")
    if not download_missing and not os.path.isdir(directory):
        raise MNISTError(f"{ds.title} directory {directory} does not exist and downloading "
                         "is disabled. " + _manual_instructions(ds, directory))
    files = {}
    for kind in KINDS:
        official = ds.files[(split, kind)]
        path = find_file(directory, _base(official.name))
        if path is None:
            if not download_missing:
                raise MNISTError(f"{os.path.join(directory, _base(official.name))}(.gz): file "
                                 f"not found and downloading is disabled. "
                                 f"{_manual_instructions(ds, directory)}")
            path = download(official.name, directory, mirrors=mirrors, dataset_name=name)
        files[kind] = _IdxFile(path)
    images, labels = _parse_pair(files, directory, split)
    if len(images) != ds.counts[split]:   # _parse_pair found as many labels
        raise MNISTError(f"{files['images'].path}: holds {len(images):,} images, but "
                         f"{ds.title}'s {split} split has {ds.counts[split]:,}; not "
                         f"{ds.title}'s official file")
    for kind in KINDS:
        # the official file, or one we cannot tell (no published checksum of its content)
        # unless we know it as another file
        official = ds.files[(split, kind)]
        status = _matches(files[kind], official)
        found = identify(files[kind]) if status is not True else None
        if status is False or found:
            raise _not_official(files[kind], ds, official, found)
    if ds.transposed:
        images = np.ascontiguousarray(images.transpose(0, 2, 1))
    return Split(images, labels, ds, directory)


def _read_directory(split, directory):
    if not os.path.isdir(directory):
        raise MNISTError(f"{directory}: " + ("not a directory" if os.path.lexists(directory)
                                             else "no such directory"))
    files = {}
    for kind in KINDS:
        name = FILES[(split, kind)]
        path = find_file(directory, name)
        if path is None:
            raise MNISTError(f"{os.path.join(directory, name)}(.gz): file not found. "
                             + (_other_names_hint(directory) or "To download MNIST into "
                                "this directory, name the data set (--dataset mnist --data "
                                "DIR; load_dataset)."))
        files[kind] = _IdxFile(path)
    images, labels = _parse_pair(files, directory, split)
    found = [identify(files[kind]) for kind in KINDS]
    same = found[0] and found[1] and found[0][0] is found[1][0] and not found[0][0].transposed
    return Split(images, labels, found[0][0] if same else None, directory)


def _other_names_hint(directory):
    """A sentence naming the data set whose file names the directory holds, if any."""
    for ds in DATASETS.values():
        names = [_base(f.name) for f in ds.files.values()]
        if names != [FILES[k] for k in ds.files] and any(find_file(directory, n)
                                                         for n in names):
            return (f"The directory holds {ds.title}'s files: name that data set "
                    f"(--dataset {ds.name} --data DIR; load_dataset).")
    return ""


def load_dataset(name, split="train", root=None, download=True, mirrors=None):
    """``(images uint8 (N, 28, 28), labels uint8 (N,))`` of one split ("train" or "test")
    of a data set of lenet/datasets.py, read as ``read_split`` reads it from ``root``."""
    s = read_split(split, name, root, download, mirrors)
    return s.images, s.labels


def load_directory(directory, split="train"):
    """Load one split of any directory of MNIST-format files under MNIST's names
    (``train-images-idx3-ubyte`` ...; raw or ``.gz``): ``(images, labels)``, after the
    structural checks only."""
    s = read_split(split, None, directory)
    return s.images, s.labels


def load_mnist(split="train", directory=None, download_missing=True, mirrors=None):
    """``load_dataset("mnist", split, directory)``; ``directory`` defaults to
    ``$LENET_DATA`` or the per-user cache."""
    return load_dataset("mnist", split, directory, download_missing, mirrors)


# --------------------------------------------------------------- preprocess

# Pixel value v (0..255) -> INPUT_BACKGROUND + v / 255 * (INPUT_INK - INPUT_BACKGROUND),
# computed in float64 and rounded once, so that 0 gives exactly float32(-0.1) and 255
# exactly float32(1.175) (kernels/architecture.py's input encoding).
_PIXEL_LUT = (INPUT_BACKGROUND + np.arange(256, dtype=np.float64) / 255.0
              * (INPUT_INK - INPUT_BACKGROUND)).astype(np.float32)
_BACKGROUND = _PIXEL_LUT[0]


def preprocess(images_uint8):
    """LeNet-5 input float32 (N, 1, 32, 32) of uint8 images (N, 28, 28) or one (28, 28):
    padded with 2 background pixels a side, pixel v mapped to ``-0.1 + v / 255 * 1.275``
    (background -0.1, full ink 1.175, as in the paper). TypeError for a non-uint8 input,
    ValueError for a wrong shape."""
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
    pad = INPUT_PAD
    out = np.full((images.shape[0], 1, IN_SIZE, IN_SIZE), _BACKGROUND, dtype=np.float32)
    out[:, 0, pad : pad + IMAGE_SIZE, pad : pad + IMAGE_SIZE] = _PIXEL_LUT[images]
    return out
