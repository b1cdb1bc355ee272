"""One lecun pass (per-pattern SDLM, MAP) over 10,000 MNIST digits, four times (the first
compiles). Run from a worktree with PYTHONPATH=<worktree>: python time_lecun.py NAME"""
import sys
import time

import numpy as np

import lenet
from lenet.data import load_mnist, preprocess
from lenet.model import LeNet5
from lenet.train import Trainer

print(lenet.__file__, file=sys.stderr)   # which checkout was imported
x, y = load_mnist("train", directory="/work/shared/data/mnist", download_missing=False)[:2]
x, y = preprocess(x[:10000]), np.asarray(y[:10000])
times = []
for _ in range(4):
    t = Trainer(LeNet5(seed=0, init="lush"), x, y, recipe="lecun", seed=0)
    start = time.perf_counter()
    loss, err = t.train_pass()
    times.append(time.perf_counter() - start)
print(sys.argv[1], "loss", loss, "seconds", [round(v, 3) for v in times[1:]])
