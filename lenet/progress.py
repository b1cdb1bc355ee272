"""A one-line progress bar on stderr (no dependency): count, rate, ETA, and a
status string the caller computes only when the line is redrawn. It is drawn as
soon as it is made (so a slow first step, such as compiling CUDA kernels, shows
what is running) and then at most every `interval` seconds."""

import sys
import time


class Progress:
    def __init__(self, total, label, enabled=True, stream=None, interval=0.25, width=24):
        self.total, self.label, self.done = total, label, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interval, self.width = interval, width
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
        self.stream.write(f"\r{line:<{self._drawn}}")
        self._drawn = len(line)
        self.stream.flush()

    def close(self, keep=True):
        """Draw the final state and end the line (keep), or erase the line."""
        if not self.enabled:
            return
        if keep:
            self._draw(time.perf_counter())
            self.stream.write("\n")
        else:
            self.stream.write("\r" + " " * self._drawn + "\r")
        self.stream.flush()
