"""Timing one benchmark row: warm-up, synchronised samples, median and spread.

A sample times `calls` back-to-back calls between two synchronisations of the
device and records the seconds per call; `calls` is chosen after the warm-up so
that one sample lasts about SAMPLE_FRACTION of --min-time (at least 1 call), so
calls of a few microseconds are not lost in the timer and launch-bound GPU work
is measured as it runs in a loop. Samples are taken until there are at least
`repeats` of them and they add up to at least `min_time` seconds.
"""

import time

import numpy as np

SAMPLE_FRACTION = 1 / 20   # a sample lasts min_time / 20 ...
MIN_SAMPLE_S = 1e-3        # ... but at least 1 ms,
MAX_CALLS = 10_000         # with at most this many calls


def measure(run, sync, repeats, min_time, warmup=1):
    """Time `run()` and return {"samples": seconds per call, "calls_per_sample",
    "warmup_calls"}. `sync()` waits for the device. Warm-up stops early after a
    call of min_time or more (the caller's checked call has compiled everything
    already); with warmup=0 (a caller that warmed up itself) a sample is one call."""
    call_s, done = None, 0
    while done < warmup and (call_s is None or call_s < min_time):
        sync()
        start = time.perf_counter()
        run()
        sync()
        call_s = time.perf_counter() - start
        done += 1
    calls = 1
    if call_s is not None:
        target = max(min_time * SAMPLE_FRACTION, MIN_SAMPLE_S)
        calls = int(min(MAX_CALLS, max(1, target // max(call_s, 1e-9))))
    samples, total = [], 0.0
    while len(samples) < repeats or total < min_time:
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            run()
        sync()
        elapsed = time.perf_counter() - start
        samples.append(elapsed / calls)
        total += elapsed
    return {"samples": samples, "calls_per_sample": calls, "warmup_calls": done}


def summarize(samples):
    """Median and spread (min, quartiles, max) of seconds per call."""
    s = np.asarray(samples, dtype=np.float64)
    q1, median, q3 = np.percentile(s, [25, 50, 75])
    return {"median_s": float(median), "min_s": float(s.min()), "max_s": float(s.max()),
            "q1_s": float(q1), "q3_s": float(q3), "n_samples": int(s.size)}
