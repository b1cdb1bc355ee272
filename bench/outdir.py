"""Where a benchmark tool may write its results, decided before it writes anything.

An --out that already holds results of an earlier run (any of the tool's own files)
is refused unless --force: a committed GPU result cannot be repeated here, so one
typo must not replace it. The default folder, bench/results/<date>-<name>/, is never
refused: where it already holds results, the run takes <date>-<name>-2/, -3/, ...
(the first that holds none), as the committed folders are named.
"""

import os


class OutError(ValueError):
    """An --out the tool cannot or must not write into; the message is one line."""


def held(path, files):
    """The files among `files` that directory `path` already holds."""
    return [name for name in files if os.path.lexists(os.path.join(path, name))]


def check(path, files, force=False, option="--out"):
    """`path` if the tool may write `files` into it (creating it where it is missing);
    OutError otherwise: an empty string, a file, a place that cannot be created, or
    (without force) a directory that already holds any of `files`."""
    if not path:
        raise OutError(f"{option} must name a directory, not an empty string")
    if os.path.islink(path) and not os.path.exists(path):
        raise OutError(f"{option} {path}: a link to nothing ({os.readlink(path)})")
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutError(f"{option} {path}: not a directory")
    if os.path.isdir(path):
        there = held(path, files)
        if there and not force:
            raise OutError(f"{option} {path} already holds {', '.join(there)} of an earlier "
                           f"run: give another {option}, or --force to replace them")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutError(f"{option} {path}: not writable")
        return path
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutError(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutError(f"{option} {path}: cannot create it ({parent} is not writable)")
    return path


def fresh(base, files):
    """`base`, or the first of base-2, base-3, ... that holds none of `files`."""
    path, n = base, 1
    while os.path.lexists(path) and (not os.path.isdir(path) or held(path, files)):
        n += 1
        path = f"{base}-{n}"
    return path
