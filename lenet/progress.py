"""Progress bars: tqdm's (``tqdm.auto``: a widget in Jupyter, one line redrawn on a
terminal), on stderr, drawn as soon as made (so a slow first step, such as compiling CUDA
kernels, shows what runs). To a log file or a pipe they write whole lines, at most one
every LOG_INTERVAL seconds, so that a log reads as a list of lines, not one long line of
carriage returns. A status (training's running loss and error) is computed only when the
bar is drawn, as it may have to wait for the GPU."""

import contextlib
import sys
import threading

from tqdm.auto import tqdm

LOG_INTERVAL = 10.0  # seconds between lines when the stream is not a terminal
SLOW = 2.0           # seconds of silence after which note_if_slow speaks
COMPILING = "compiling the CPU code (10-30 s on a first run; Numba keeps it for the next)..."
NOTEBOOK = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)


class _Lines:
    """A stream for tqdm that writes each redraw ("\\r" + bar) as one whole line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        if text := text.strip("\r\n").rstrip():
            self.stream.write(text + "\n")

    def flush(self):
        self.stream.flush()


class Progress(tqdm):
    """``Progress(total, label, enabled)``: a tqdm bar; ``advance(count, status)`` counts
    `count` more items, `status` a callable returning a short string to show."""

    monitor_interval = 0  # no thread that redraws (and computes the status) on its own

    def __init__(self, total, label, enabled=True, file=None, **options):
        file = file or sys.stderr
        self.terminal = NOTEBOOK or bool(getattr(file, "isatty", lambda: False)())
        self._status = None
        options.setdefault("mininterval", 0.1 if self.terminal else LOG_INTERVAL)
        super().__init__(total=total, desc=label, disable=not enabled, miniters=1,
                         file=file if self.terminal else _Lines(file), **options)

    def advance(self, count, status=None):
        self._status = status or self._status
        self.update(count)

    @property
    def format_dict(self):
        shown = super().format_dict
        if self._status is not None:
            shown["postfix"] = self._status()
        return shown

    def close(self, keep=True):
        """End the bar: on a terminal its final state kept (keep) or erased; in a log the
        final line, unless the last line written already has the final count."""
        self.leave = keep if self.terminal else self.n != getattr(self, "last_print_n", None)
        super().close()


@contextlib.contextmanager
def note_if_slow(message=COMPILING, after=SLOW, file=None):
    """Print `message` on stderr (or `file`) if the block is still running after `after`
    seconds: a wait with nothing on the screen (Numba compiling the CPU code on a first
    run) says why, and a quick block prints nothing."""
    file = file or sys.stderr
    timer = threading.Timer(after, lambda: print(message, file=file, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
