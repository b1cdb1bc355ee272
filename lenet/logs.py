"""The files a training run writes beside its checkpoint: its log, one JSON line per
pass (lenet.train.pass_record's), and the check that `lenet train` and `lenet sweep`
run before a pass, so that a file which is neither a checkpoint nor a log is never
overwritten. Tested by tests/test_user_files.py."""

import contextlib
import json
import os
import signal
import threading

from lenet.checkpoint import is_checkpoint, write_atomically
from lenet.model import is_shipped

LOG_KEYS = ("pass", "running_train_error", "train_loss")  # numbers in every line
# numbers or null: train_error null under `lenet train --fast`, test_error null and
# validation_error present under `--validation` (lenet.train.pass_record)
LOG_OPTIONAL_KEYS = ("test_error", "train_error", "validation_error")


def is_training_log(path):
    """True if `path` is empty or every line of it is a JSON object with LOG_KEYS."""
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    if not isinstance(record, dict) or not set(LOG_KEYS) <= set(record):
                        return False
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return True


def check_outputs(checkpoint, log, made=False):
    """ValueError unless `train` may write these files: a checkpoint path where no file
    or a LeNet-5 checkpoint is, a log path where no file or a training log is, not the
    same file, and each in a directory this process may write. The checkpoint's directory
    must exist, as for LeNet5.save, unless the caller makes it (`made`: a sweep its
    folder); the log's is made if missing."""
    if checkpoint and log and os.path.realpath(checkpoint) == os.path.realpath(log):
        raise ValueError(f"the log and the checkpoint are the same file ({log}); give "
                         "the log another name")
    for path, what, ok, must_exist in (
            (checkpoint, "a LeNet-5 checkpoint", is_checkpoint, not made),
            (log, "a training log (JSON lines)", is_training_log, False)):
        if not path:
            continue
        directory = os.path.dirname(os.path.abspath(path))
        if must_exist and not os.path.exists(directory):
            raise ValueError(f"cannot write {path}: directory {directory} does not exist")
        while not os.path.exists(directory):     # the directory that would be made in
            directory = os.path.dirname(directory)
        if not os.path.isdir(directory):
            raise ValueError(f"cannot write {path}: {directory} is a file, not a directory")
        if not os.access(directory, os.W_OK):
            raise ValueError(f"cannot write {path}: {directory} is not writable")
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path):
            raise ValueError(f"{path} is a directory; give a file name")
        if is_shipped(path):
            raise ValueError(f"{path} is the trained weights shipped with the package; "
                             "refusing to overwrite them (give another name)")
        if not ok(path):
            raise ValueError(f"{path} exists and is not {what}; refusing to overwrite it "
                             "(give another name)")


def save_pass(model, checkpoint, log, record, first):
    """The model to `checkpoint` and `record` to its `log` (either may be None; the log
    replaced on the `first` pass), with Ctrl-C held back until both are written, so that
    an interrupt never leaves the log a pass behind its checkpoint."""
    with _sigint_held():
        if checkpoint:
            model.save(checkpoint)
        if log:
            write_log_line(log, record, replace=first)


@contextlib.contextmanager
def _sigint_held():
    """SIGINT's handler called when the block ends instead of within it (main thread)."""
    handler = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(handler):
        yield   # signals reach the main thread alone; an ignored SIGINT stays ignored
        return
    held = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        if held:
            handler(signal.SIGINT, held[0])


def write_log_line(path, record, replace):
    """Append `record` as a JSON line to `path`; with replace, write it as the whole
    file instead (through a temporary file renamed over it)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    line = json.dumps(record) + "\n"
    if replace:
        write_atomically(path, lambda f: f.write(line.encode()), ".log.tmp")
    else:
        with open(path, "a") as f:
            f.write(line)
