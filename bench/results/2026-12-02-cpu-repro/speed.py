"""Patterns per second of the paper's per-pattern recipe on one CPU core: the NumPy
layer-by-layer loop (Trainer(fused=False)) against the compiled steps of
kernels/sdlm_cpu.py, and the evaluation forward (NumPy model.forward against
CPUOps.penalties), and the CPU distortions; appends one JSON line to speed.jsonl.

    python speed.py [--data DIR] [--label TEXT]     (BLAS limited to one thread)

Each figure is the median of 3 timings after a warm-up (which compiles); the loop's
timing covers 2,000 patterns, the compiled steps a full pass of 60,000 (with the
curvature estimate on 500, as in training), the forwards the 10,000 test digits. The
load average before and after says how busy the 2 shared cores were.
"""

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from lenet.data import load_mnist, preprocess
from lenet.kernels.distort import distort_cpu, draw_distortions
from lenet.model import LeNet5
from lenet.train import Trainer

HERE = os.path.dirname(os.path.abspath(__file__))


def median_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=os.path.join(HERE, "../../../../shared/data/mnist"))
    p.add_argument("--label", default="")
    args = p.parse_args()
    xs, ys = load_mnist("train", args.data, download_missing=False)
    xt, _ = load_mnist("test", args.data, download_missing=False)
    x, y, xt = preprocess(xs), ys.astype(np.int64), preprocess(xt)
    load_before = os.getloadavg()
    result = {"label": args.label, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "cpu": platform.processor() or next(
                  (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name")), ""),
              "load_average_before": load_before}
    with threadpool_limits(limits=1, user_api="blas"):
        model = LeNet5(seed=0, init="lush", path="layers")  # forward: the NumPy layers
        # warm-ups: the compiled code, the NumPy paths' first calls
        Trainer(model, x[:50], y[:50], recipe="paper", mu=1.0).train_pass()
        Trainer(model, x[:50], y[:50], recipe="paper", mu=1.0, fused=False).train_pass()
        n_loop = 2000
        t_loop, times = median_time(lambda: Trainer(model, x[:n_loop], y[:n_loop],
                                                    recipe="paper", mu=1.0,
                                                    fused=False).train_pass())
        result["numpy_loop_patterns_per_s"] = n_loop / t_loop
        result["numpy_loop_seconds"] = times
        t_fused, times = median_time(lambda: Trainer(model, x, y, recipe="paper",
                                                     mu=1.0).train_pass())
        result["compiled_patterns_per_s"] = len(x) / t_fused
        result["compiled_pass_seconds"] = times
        model.forward(xt[:100])
        t_fwd, _ = median_time(lambda: model.forward(xt))
        result["numpy_forward_images_per_s"] = len(xt) / t_fwd
        ops = model.ops
        t_pen, _ = median_time(lambda: ops.infer(xt, xt.shape, model.parameter_buffer,
                                                 model.tables["C3"], model.centers,
                                                 "penalties"))
        result["compiled_forward_images_per_s"] = len(xt) / t_pen
        params = draw_distortions(np.random.default_rng(0), len(x))
        out = np.empty_like(x)
        distort_cpu(out[:10], x[:10], params[:10])
        t_dis, _ = median_time(lambda: distort_cpu(out, x, params))
        result["distort_images_per_s"] = len(x) / t_dis
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    with open(os.path.join(HERE, "speed.jsonl"), "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
