"""A one-line progress bar on stderr (no dependency): count, rate, ETA, and a
status string the caller computes only when the line is redrawn. It is drawn as
soon as it is made (so a slow first step, such as compiling CUDA kernels, shows
what is running) and then at most every `interval` seconds. To a terminal it redraws
one line; to anything else (a log file, a pipe) it writes whole lines, at most one every
LOG_INTERVAL seconds, so a log reads as a list of timestamps rather than one long line
of carriage returns."""

import sys
import time

LOG_INTERVAL = 10.0  # seconds between lines when the stream is not a terminal


class Progress:
    def __init__(self, total, label, enabled=True, stream=None, interval=0.25, width=24):
        self.total, self.label, self.done = total, label, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = bool(isatty and isatty())
        self.interval = interval if self.terminal else max(interval, LOG_INTERVAL)
        self.width = width
        self._written = None  # the count of the last line written (not on a terminal)
        self.started = self.last = time.perf_counter()
        self.status = ""
        self._drawn = 0  # length of the line on screen
        if self.enabled:
            self._draw(self.started)

    def advance(self, count, status=None):
        """Count `count` more items; `status` is a callable returning a short string."""
        self.done += count
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.interval or self.done >= self.total):
            self.last = now
            if status is not None:
                self.status = status()
            self._draw(now)

    def _draw(self, now):
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = f"{(self.total - self.done) / rate:4.0f}s" if rate > 0 else "   ?"
        filled = int(self.width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        line = (f"{self.label} [{bar}] {self.done}/{self.total} {rate:,.0f}/s ETA {left} "
                f"{self.status}")
        if self.terminal:
            self.stream.write(f"\r{line:<{self._drawn}}")
            self._drawn = len(line)
        elif self._written != self.done:
            self.stream.write(line.rstrip() + "\n")
            self._written = self.done
        self.stream.flush()

    def close(self, keep=True):
        """Draw the final state and end the line (keep), or erase the line."""
        if not self.enabled:
            return
        if keep:
            self._draw(time.perf_counter())
            if self.terminal:
                self.stream.write("\n")
        elif self.terminal:
            self.stream.write("\r" + " " * self._drawn + "\r")
        self.stream.flush()
