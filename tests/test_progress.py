"""lenet.progress: tqdm bars that redraw one line on a terminal and write whole lines, at
most one every LOG_INTERVAL seconds, to a log file or pipe; the status shown is computed
only when a line is drawn. A fake clock, no sleeping: instant."""

import io
import re

import pytest
import tqdm.std

from lenet import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clock(monkeypatch):
    """tqdm's clock (tqdm.std.time, read by each bar when made), advanced by hand."""
    now = [0.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])
    return now


def run(stream, clock, keep=True, enabled=True):
    """100 items in 10 steps of 3 s; returns the status calls made."""
    calls = []
    bar = progress.Progress(100, "pass", enabled=enabled, file=stream)
    for step in range(10):
        clock[0] += 3.0
        bar.advance(10, status=lambda step=step: calls.append(step) or f"step {step}")
    bar.close(keep=keep)
    return calls


def counts(text):
    return [int(n) for n in re.findall(r"\| (\d+)/100 \[", text)]


def test_a_terminal_gets_one_line_redrawn(clock):
    stream = _Terminal()
    calls = run(stream, clock)
    text = stream.getvalue()
    # drawn when made, at each step (3 s > tqdm's 0.1 s), and once more when closed
    assert text.count("\r") == 12 and text.endswith("\n") and text.count("\n") == 1
    assert counts(text) == [0] + list(range(10, 101, 10)) + [100]
    assert calls == list(range(10)) + [9]
    assert text.rstrip().endswith("step 9]")


def test_a_log_gets_whole_lines_at_most_one_every_log_interval(clock):
    assert progress.LOG_INTERVAL == 10.0
    stream = io.StringIO()
    calls = run(stream, clock)
    text = stream.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    # the first at once, then at 12 s and 24 s, and the final count when closed
    assert counts(text) == [0, 40, 80, 100] and len(lines) == 4, lines
    assert calls == [3, 7, 9]  # the status only when a line is written
    assert lines[-1].endswith("step 9]")


@pytest.mark.parametrize("steps", [4, 3])
def test_a_log_gets_the_final_count_once(clock, steps):
    # an evaluation bar (closed with keep=False): on a log its final count is still
    # written, once, whether or not the last step drew it
    stream = io.StringIO()
    bar = progress.Progress(steps * 10, "test error", file=stream)
    for _ in range(steps):
        clock[0] += 6.0
        bar.advance(10)
    bar.close(keep=False)
    ends = re.findall(r"\| (\d+)/\d+ \[", stream.getvalue())
    # steps every 6 s: lines at 0 s and 12 s; 4 steps end at 24 s (a line), 3 at 18 s
    assert ends == {4: ["0", "20", "40"], 3: ["0", "20", "30"]}[steps]


def test_a_terminal_bar_closed_without_keep_is_erased(clock):
    stream = _Terminal()
    run(stream, clock, keep=False)
    text = stream.getvalue()
    assert "\n" not in text and text.endswith("\r")
    assert text.rsplit("\r", 2)[1].strip() == ""  # the last thing drawn: blanks


def test_a_disabled_bar_writes_nothing_and_computes_no_status(clock):
    stream = _Terminal()
    assert run(stream, clock, enabled=False) == [] and stream.getvalue() == ""


def test_a_slow_block_says_why_and_a_quick_one_says_nothing():
    import time
    out = io.StringIO()
    with progress.note_if_slow("compiling...", after=0.05, file=out):
        deadline = time.monotonic() + 30    # a slow block: until the note (a busy machine)
        while not out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert out.getvalue() == "compiling...\n"
    quiet = io.StringIO()
    with progress.note_if_slow("compiling...", after=0.2, file=quiet):
        pass
    time.sleep(0.3)   # past `after`: the timer was cancelled
    assert quiet.getvalue() == ""


def test_the_first_prediction_after_installing_says_it_compiles(tmp_path):
    # an empty Numba cache is a fresh installation's: the first `lenet predict` compiles
    # the CPU code for seconds and says so; the next one, cached, says nothing
    import os
    import subprocess
    import sys

    import numpy as np
    from PIL import Image
    digit = np.full((60, 60), 255, np.uint8)
    digit[10:50, 27:33] = 0
    Image.fromarray(digit).save(tmp_path / "one.png")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    for first in (True, False):
        result = subprocess.run([sys.executable, "-m", "lenet", "predict", "--device", "cpu",
                                 str(tmp_path / "one.png")], env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        assert re.search(r"one\.png\s+1\s", result.stdout), result.stdout
        assert (progress.COMPILING in result.stderr) == first, result.stderr
