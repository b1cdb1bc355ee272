"""The input check alone, old against new, interleaved on one machine: the NaN/infinity
test LeNet5 ran before e3b79f5 (NumPy isfinite over the batch) against
kernels/cpu.py's first_refused_cpu (the encoding check), then LeNet5.forward(x, out=)
with each of them patched in. Medians of 9 rounds.

    .venv/bin/python bench/results/2026-12-07-cpu-input-check/check_ab.py
"""
import time

import numpy as np

from lenet import LeNet5
from lenet.kernels.cpu import first_refused_cpu
from lenet.kernels.reference import refusal


def old_first(x):
    bad = ~np.isfinite(x.reshape(x.shape[0], 32 * 32)).all(axis=1)
    return int(np.argmax(bad)) if bad.any() else -1


def old_check(self, x):
    x = np.ascontiguousarray(x, self.dtype)
    first = old_first(x)
    if first >= 0:
        raise refusal(x[first], first, self.dtype)
    return x


def median_time(fn, calls, rounds=9):
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t) / calls)
    return float(np.median(times))


rng = np.random.default_rng(0)
m = LeNet5(seed=0)
new_check = LeNet5.check_encoding
print("batch | old check | new check | forward with old | forward with new | forward new/old")
for n, calls in ((1, 3000), (64, 1000), (1024, 200), (10000, 20)):
    x = rng.uniform(-0.1, 1.175, (n, 1, 32, 32)).astype(np.float32)
    out = m.forward(x)
    a = median_time(lambda x=x: old_first(x), calls)
    b = median_time(lambda x=x: first_refused_cpu(x), calls)
    fwd = {}
    for name, check in (("old", old_check), ("new", new_check)):
        LeNet5.check_encoding = check
        fwd[name] = median_time(lambda x=x, out=out: m.forward(x, out=out), max(1, calls // 20))
    LeNet5.check_encoding = new_check
    print(f"{n} | {a * 1e6:.1f} us | {b * 1e6:.1f} us | {fwd['old'] * 1e6:.0f} us | "
          f"{fwd['new'] * 1e6:.0f} us | {fwd['new'] / fwd['old']:.3f}")
