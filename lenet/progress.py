"""A one-line progress bar on stderr (no dependency): count, rate, ETA, and a
status string the caller computes only when the line is redrawn."""

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
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        filled = int(self.width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} "
                          f"{rate:,.0f}/s ETA {left:4.0f}s {self.status}   ")
        self.stream.flush()

    def close(self):
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
