"""LeNet-5 checkpoints: the parameters and a description in one .npz, never pickled.

The description (the "__meta__" array: JSON bytes) names the format and its version, the
dtype, the shapes, the C3 table and a digest of the RBF bitmaps, so that a file made for
another network is refused, and carries the data set, the class names and, for the
shipped weights, their provenance. Saves are atomic (a temporary file renamed over the
checkpoint). Tested by tests/test_checkpoint.py.
"""

import hashlib
import json
import os
import secrets
import time
import zipfile
import zlib

import numpy as np

from lenet.datasets import DIGITS
from lenet.kernels.architecture import C3_TABLE, PARAMETER_SHAPES, RBF_CENTERS

FORMAT = "lenet5-checkpoint"
FORMAT_VERSION = 1
# A save writes ".lenet-<pid>-<random><suffix>" beside its file and renames it; one left
# by a killed save (a checkpoint, a log, an ONNX file, a picture) is removed by the next save there.
TMP_PREFIX, TMP_SUFFIXES = ".lenet-", (".npz.tmp", ".log.tmp", ".onnx.tmp", ".png.tmp")
TMP_MAX_AGE = 3600  # seconds: older temporary files are leftovers whatever their pid


class CheckpointError(ValueError):
    """A file that is not a valid LeNet-5 checkpoint."""


def check_parameters(params):
    """Raise ValueError saying exactly what is wrong with a parameter dict."""
    if not isinstance(params, dict):
        raise TypeError(f"parameters must be a dict of arrays, not {type(params).__name__}")
    missing = sorted(set(PARAMETER_SHAPES) - set(params))
    unknown = sorted(set(params) - set(PARAMETER_SHAPES))
    if missing or unknown:
        raise ValueError(f"parameter names do not match LeNet-5: missing {missing}, "
                         f"unknown {unknown}")
    for name, shape in PARAMETER_SHAPES.items():
        value = np.asarray(params[name])
        if value.shape != shape:
            raise ValueError(f"{name} has shape {value.shape}, expected {shape}")
        if value.dtype not in (np.float32, np.float64):
            raise ValueError(f"{name} has dtype {value.dtype}, expected float32 or float64")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} contains NaN or infinite values")
    c3 = np.asarray(params["C3.weight"])
    stray = np.abs(c3).sum(axis=(2, 3)) * ~C3_TABLE.T
    if stray.any():
        o, i = np.argwhere(stray)[0]
        raise ValueError(f"C3.weight connects S2 map {i} to C3 map {o}, which the "
                         "connection table leaves out: those weights must be exactly 0")


def write_checkpoint(path, params, dtype, dataset=None, classes=DIGITS, provenance=None):
    """Write `params` (name -> NumPy array, as LeNet5.parameters gives them) and their
    description to `path` (.npz), atomically: a temporary file beside it, renamed over
    it. The file gets the usual mode (0666 less the umask). Temporary files that killed
    saves left in that directory are removed first. Refuses what read_checkpoint would
    (check_parameters, check_description), and to replace a file that is not a LeNet-5
    checkpoint."""
    check_parameters(params)
    if os.path.lexists(path) and not os.path.isdir(path) and not is_checkpoint(path):
        raise FileExistsError(f"{path} exists and is not a LeNet-5 checkpoint; refusing to "
                              "overwrite it (give another name)")
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "dtype": np.dtype(dtype).name,
            "shapes": {k: list(v) for k, v in PARAMETER_SHAPES.items()},
            "c3_table": C3_TABLE.astype(int).tolist(),
            "rbf_centers_sha256": _centers_digest(),
            "dataset": dataset, "classes": list(classes)}
    if provenance is not None:
        meta["provenance"] = provenance
    check_description(meta)
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise ValueError(f"the provenance cannot be written as JSON ({e})") from None
    arrays = dict(params)
    arrays["__meta__"] = np.frombuffer(text.encode(), dtype=np.uint8)
    write_atomically(path, lambda f: np.savez(f, **arrays))


def write_atomically(path, write, suffix=TMP_SUFFIXES[0]):
    """Call write(f) on a new binary file beside `path` (mode 0666 less the umask), synced,
    then rename it over `path`: a write that fails or is killed leaves the old file whole
    (and no temporary file, unless killed: the next save removes it). suffix: one of
    TMP_SUFFIXES."""
    if suffix not in TMP_SUFFIXES:
        raise ValueError(f"write_atomically: suffix {suffix!r}, expected one of {TMP_SUFFIXES}")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a directory; give a file name")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path}: directory {directory} does not exist")
    remove_leftovers(directory)
    tmp = os.path.join(directory, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    try:
        try:
            f = open(tmp, "xb")
        except OSError as e:   # named after the file asked for, not the temporary one
            raise type(e)(e.errno, f"cannot write {path}: {e.strerror}") from None
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _centers_digest():
    return hashlib.sha256(RBF_CENTERS.astype("<f8").tobytes()).hexdigest()


def _running(pid):
    """True if a process `pid` exists (of any user)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # none, or no pid can be that large
        return False
    except PermissionError:  # another user's
        return True
    return True


def remove_leftovers(directory):
    """Remove the temporary files of saves that were killed before renaming them
    (kill -9, a crash): those of processes that no longer run, and any older than
    TMP_MAX_AGE. Those of running saves are left alone."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for name in names:
        if not (name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIXES)):
            continue
        path = os.path.join(directory, name)
        pid = name[len(TMP_PREFIX):].split("-")[0]
        try:
            stale = (not pid.isdigit() or not _running(int(pid))
                     or now - os.lstat(path).st_mtime > TMP_MAX_AGE)
            if stale and not os.path.isdir(path):
                os.unlink(path)
        except OSError:  # gone meanwhile, or not ours to remove
            pass


def is_checkpoint(path):
    """True if `path` is a file written by LeNet5.save (any version of the format)."""
    try:
        if not os.path.isfile(path) or not zipfile.is_zipfile(path):
            return False
        with np.load(path, allow_pickle=False) as f:
            if "__meta__" not in f.files:
                return False
            meta = json.loads(f["__meta__"].tobytes().decode())
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def read_checkpoint(path):
    """(parameters, description) of a checkpoint; CheckpointError if it is not one."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a .npz checkpoint (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as e:
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({e})") from e
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path}: not a LeNet-5 checkpoint (no __meta__ record)")
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt __meta__ record ({e})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt __meta__ record (a JSON "
                              f"{type(meta).__name__}, not an object)")
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} version "
                              f"{meta.get('version')!r}, expected {FORMAT!r} {FORMAT_VERSION}")
    if meta.get("c3_table") != C3_TABLE.astype(int).tolist():
        raise CheckpointError(f"{path}: made with another C3 connection table")
    if meta.get("rbf_centers_sha256") != _centers_digest():
        raise CheckpointError(f"{path}: made with other RBF bitmaps than this version's")
    if meta.get("dtype") not in ("float32", "float64"):
        raise CheckpointError(f"{path}: unknown dtype {meta.get('dtype')!r}")
    try:
        check_description(meta)
        check_parameters(arrays)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    return arrays, meta


def check_description(meta):
    """ValueError unless a checkpoint's class names, data set and provenance are what
    read_checkpoint takes back: ten strings, a name or None, a dict or None."""
    classes = meta.get("classes", DIGITS)
    if (not isinstance(classes, (list, tuple)) or len(classes) != 10
            or not all(isinstance(c, str) for c in classes)):
        raise ValueError(f"class names {classes!r} are not ten strings")
    if not isinstance(meta.get("dataset"), (str, type(None))):
        raise ValueError(f"data set {meta.get('dataset')!r} is not a name")
    if not isinstance(meta.get("provenance"), (dict, type(None))):
        raise ValueError(f"provenance {meta.get('provenance')!r} is not a JSON object")
