"""Downloads of the official files of the data sets in lenet/datasets.py.

``download(name, directory)`` fetches one file from the data set's mirrors (or, for a
data set published as one archive, EMNIST, the archive, whose four files it takes
out), into a temporary file beside the target, and keeps it (``os.replace``) only
when it is the official file by size and SHA-256. A file already there is never
replaced, a failed download leaves no temporary file and no directory it created, and
a counter on stderr shows the progress. lenet/data.py calls it for missing files.

Test: pytest -q tests/test_data.py -k download (a local HTTP server; no outside network)
"""

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from http.client import HTTPException

from lenet.data import MNISTError, _base, _IdxFile, _manual_instructions, _matches, dataset

_CHUNK = 1 << 16


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


def _reason(error):
    """A short description of why a download failed."""
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        error = error.reason  # "<urlopen error [Errno 111] ...>" -> "[Errno 111] ..."
    return str(error) or type(error).__name__


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


def _official_file(ds, name):
    for f in ds.files.values():
        if _base(f.name) == _base(name):
            return f
    raise ValueError(f"unknown {ds.title} file {name!r}; expected one of "
                     f"{sorted(_base(f.name) for f in ds.files.values())}")


def download(name, directory, mirrors=None, timeout=30, progress=True, dataset_name="mnist"):
    """Download the official file ``name`` of a data set into ``directory``; its path.

    ``name`` is one of the data set's file names (with or without ``.gz``). Each mirror
    (default: the data set's) serves ``<mirror><name>.gz``; each download goes to a
    temporary file in ``directory`` and is kept (renamed with ``os.replace``) only if it
    is the official file (size and SHA-256, or the SHA-256 of its decompressed content);
    otherwise the next mirror is tried. A data set published as one archive (EMNIST)
    downloads and checks the archive and takes the four files out of it. ``directory``
    is created if needed and removed again if nothing could be downloaded.

    Raises MNISTError, with each mirror's reason and where to put the files by hand,
    when no mirror gives a good file.
    """
    ds = dataset(dataset_name)
    official = _official_file(ds, name)
    directory = os.fspath(directory)
    created = _make_dirs(directory)
    try:
        if ds.archive is not None:
            _download_archive(ds, directory, mirrors, timeout, progress)
            return os.path.join(directory, official.name)
        return _download_file(ds, official, directory, mirrors, timeout, progress)
    except BaseException:
        _remove_empty(created)
        raise


def _download_file(ds, official, directory, mirrors, timeout, progress):
    mirrors = ds.mirrors if mirrors is None else mirrors
    if isinstance(mirrors, str):
        mirrors = [mirrors]
    target = os.path.join(directory, official.name)
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + official.name
        fd, tmp = tempfile.mkstemp(prefix=f".{official.name}.", suffix=".part", dir=directory)
        try:
            try:
                with os.fdopen(fd, "wb") as dest:
                    _fetch(url, dest, timeout, progress, official.name)
            except (OSError, HTTPException) as e:  # URLError, HTTPError, timeouts: OSErrors
                failures.append(f"{url}: {_reason(e)}")
                continue
            try:
                ok = _matches(_IdxFile(tmp, gz=True), official)
            except MNISTError as e:
                failures.append(f"{url}: {str(e).removeprefix(tmp + ': ')}")
                continue
            if not ok:
                failures.append(f"{url}: checksum mismatch (not the official {official.name})")
                continue
            os.replace(tmp, target)
            return target
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    _download_failed(ds, directory, official.name, target, failures)


def _download_archive(ds, directory, urls, timeout, progress):
    """Fetch ds.archive, check its size and SHA-256, and extract ds's files from it."""
    archive = ds.archive
    urls = archive.urls if urls is None else ([urls] if isinstance(urls, str) else urls)
    failures = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", suffix=".part", dir=directory)
        try:
            try:
                with os.fdopen(fd, "wb") as dest:
                    _fetch(url, dest, timeout, progress, archive.name)
            except (OSError, HTTPException) as e:
                failures.append(f"{url}: {_reason(e)}")
                continue
            digest = hashlib.sha256()
            with open(tmp, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            if os.path.getsize(tmp) != archive.size or digest.hexdigest() != archive.sha256:
                failures.append(f"{url}: checksum mismatch (not the official {archive.name})")
                continue
            try:
                _extract(tmp, archive, directory)
            except (zipfile.BadZipFile, KeyError, OSError) as e:
                failures.append(f"{url}: cannot extract {ds.title}'s files ({_reason(e)})")
                continue
            return
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    _download_failed(ds, directory, archive.name, directory, failures)


def _extract(path, archive, directory):
    """Copy each member of the zip ``path`` to ``directory`` under our name, atomically;
    an existing file is left as it is."""
    with zipfile.ZipFile(path) as z:
        for name, member in archive.members.items():
            target = os.path.join(directory, name)
            if os.path.lexists(target):
                continue
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
            try:
                with os.fdopen(fd, "wb") as dest, z.open(member) as source:
                    shutil.copyfileobj(source, dest, _CHUNK)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)


def _download_failed(ds, directory, name, target, failures):
    reasons = "\n".join(f"  {failure}" for failure in failures) or "  (no mirrors given)"
    raise MNISTError(f"could not download {name} to {target}:\n{reasons}\n"
                     f"This machine may be offline. {_manual_instructions(ds, directory)}")
