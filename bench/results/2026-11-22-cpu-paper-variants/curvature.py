"""The Gauss-Newton curvature h that SDLM divides by, per layer, on 500 training
digits: at the initial point of either initialisation, or of a checkpoint; then,
optionally, the first per-pattern steps of the paper's recipe with a given mu
(error on 1,000 digits and the largest |parameter| of each tensor every 500).

    python bench/results/2026-11-22-cpu-paper-variants/curvature.py fan-in --mu 0.02 --steps 1000
    python bench/results/2026-11-22-cpu-paper-variants/curvature.py trained.npz
"""
import argparse

import numpy as np

from lenet.data import load_mnist, preprocess
from lenet.model import LeNet5
from lenet.train import Trainer

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("start", help="fan-in, sqrt-fan-in, or a checkpoint .npz")
p.add_argument("--mu", type=float, default=0.02)
p.add_argument("--steps", type=int, default=0, help="per-pattern steps to take (default 0)")
p.add_argument("--data", default="../shared/data/mnist")
args = p.parse_args()

images, labels = load_mnist("train", args.data, download_missing=False)
x, y = preprocess(images[:6000]), labels[:6000].astype(np.int64)
m = (LeNet5.load(args.start) if args.start.endswith(".npz")
     else LeNet5(device="cpu", seed=0, init=args.start))
index = np.random.default_rng(0).choice(60000, 500, replace=False)
h = m.second_derivatives(preprocess(images[index]), labels[index].astype(np.int64))
for k, v in h.items():
    q = np.quantile(v, [0.01, 0.5, 0.99])
    print(f"{k:10s} h 1% {q[0]:.2e}  median {q[1]:.2e}  99% {q[2]:.2e}  "
          f"mean {v.mean():.2e}  below mu {np.mean(v < args.mu):.2f}")
if args.steps:
    t = Trainer(m, x, y, recipe="paper", mu=args.mu, fused=False)
    t.estimate_hessian()
    for i in range(args.steps):
        acts = m.forward_all(x[i:i + 1])
        _, dy, _ = t.ops.loss(acts[-1], t.labels[i:i + 1], "mse", 10)
        for name, g in m.backward(acts, dy).items():
            t.ops.sdlm_update(m.params[name], g, t.hessian[name], t.step_size(), t.mu)
        if (i + 1) % 500 == 0:
            err = np.mean(m.predict(x[:1000]) != y[:1000])
            big = " ".join(f"{k}:{np.abs(v).max():.2f}" for k, v in m.parameters().items())
            print(f"{i + 1} patterns: error {100 * err:.1f}%  max |param| {big}")
