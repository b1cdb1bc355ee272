"""Two runs of the per-pattern steps side by side (kernels/cpu.py sdlm_runs_cpu, what
lenet sweep runs on the CPU) on one Numba thread and on two: wall and CPU seconds.
Run from the repository root: PYTHONPATH=. python <this file>"""
import time

import numba
import numpy as np

from lenet import LeNet5
from lenet.kernels import cpu
from lenet.kernels.architecture import C3_TABLE, RBF_CENTERS

n, R = 4000, 2
rng = np.random.default_rng(0)
x = rng.uniform(-0.1, 1.175, (1, n, 1024)).astype(np.float32)
labels = rng.integers(0, 10, n).astype(np.int32)
p0 = LeNet5(seed=0, init="lush").flat_params
for th in (1, 2, 1, 2):
    numba.set_num_threads(th)
    params = np.stack([p0] * R)
    rates = np.full_like(params, 1e-4)
    order = np.stack([rng.permutation(n).astype(np.int32) for _ in range(R)])
    args = (params, rates, np.zeros((R, 2)), x, np.zeros(R, np.int32), labels, order, 0, n,
            np.zeros(R, np.int32), np.full(R, 10.0), RBF_CENTERS.astype(np.float32), C3_TABLE)
    cpu.sdlm_runs_cpu(*args)
    w, c = time.perf_counter(), time.process_time()
    cpu.sdlm_runs_cpu(*args)
    w, c = time.perf_counter() - w, time.process_time() - c
    print(f"threads {th}: wall {w:.2f} s, cpu {c:.2f} s, {R * n / w:,.0f} patterns/s")
