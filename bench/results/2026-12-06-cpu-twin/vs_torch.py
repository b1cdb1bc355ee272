"""This branch (kernels/cpu.py through LeNet5/Trainer) against bench/torch_lenet.py on the
same rows, alternating A, B, A, B, ... so that both see the same load; median images/s of
each. Run from the repository root: PYTHONPATH=. python <this file> ROUNDS"""
import json
import sys
import time

import numpy as np
import torch

from bench.torch_lenet import TorchImpl
from lenet import LeNet5
from lenet.train import Trainer

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
rng = np.random.default_rng(0)
N = 10000
x = rng.uniform(-0.1, 1.175, (N, 1, 32, 32)).astype(np.float32)
y = rng.integers(0, 10, N)
model = LeNet5(seed=0)
params = model.parameters()
timp = TorchImpl("cpu", params)

def ours_rows():
    rows = {}
    for n in (1, 1024, 10000):
        xs = x[:n]
        reps = 200 if n == 1 else 1
        rows[f"inference {n}"] = (
            lambda xs=xs, reps=reps: [model.forward(xs) for _ in range(reps)], n * reps)
    t = Trainer(model, x[:1024], y[:1024], recipe="sgd", batch_size=1024, shuffle=False)
    _, order, _ = t.begin_pass()
    rows["train-step 1024"] = (lambda: t.step(order, 0, 1024), 1024)
    t32 = Trainer(model, x[:4096], y[:4096], recipe="sgd", batch_size=32)
    rows["sgd pass at 32 (4,096 images)"] = (lambda: t32.train_pass(), 4096)
    return rows

def torch_rows():
    rows = {}
    for n in (1, 1024, 10000):
        f = timp.inference(x[:n])
        reps = 200 if n == 1 else 1
        rows[f"inference {n}"] = (lambda f=f, reps=reps: [f() for _ in range(reps)], n * reps)
    s = timp.train_step(x[:1024], y[:1024], 2e-3, 0.9)
    rows["train-step 1024"] = (s.run, 1024)
    p = timp.train_pass(x[:4096], y[:4096], 32, 2e-3, 0.9)
    rows["sgd pass at 32 (4,096 images)"] = (p.run, 4096)
    return rows

impls = {"ours": ours_rows(), "torch-cpu": torch_rows()}
rates = {k: {r: [] for r in impls["ours"]} for k in impls}
for rows in impls.values():
    for f, _ in rows.values():
        f()   # warm up (compiles)
for _ in range(rounds):
    for row in impls["ours"]:
        for name, rows in impls.items():
            f, n = rows[row]
            t0 = time.perf_counter()
            f()
            rates[name][row].append(n / (time.perf_counter() - t0))
out = {}
for row in impls["ours"]:
    a, b = np.median(rates["ours"][row]), np.median(rates["torch-cpu"][row])
    out[row] = {"ours": round(a), "torch_cpu": round(b), "ratio": round(a / b, 2)}
    print(f"{row:32s} ours {a:10,.0f}  torch-cpu {b:10,.0f}  ratio {a / b:5.2f}")
print(json.dumps({"torch_threads": torch.get_num_threads(), "rounds": rounds, "rows": out,
                  "samples": rates}))
