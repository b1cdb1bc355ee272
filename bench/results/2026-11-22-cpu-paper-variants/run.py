"""The runs of this folder: `lenet train --device cpu --recipe paper` with an init, mu
and loss, as the command line would run them (seed 0 unless a fifth argument
gives another), logging every pass.

    python run.py sqrt-fan-in 0.2 mse out.log.jsonl [SEED] [DATA]   (from this folder)
"""
import sys

from lenet.data import load_mnist, preprocess
from lenet.model import LeNet5
from lenet.train import train

init, mu, loss, log = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
data = sys.argv[6] if len(sys.argv) > 6 else "../shared/data/mnist"
xs, ys = load_mnist("train", data, download_missing=False)
xt, yt = load_mnist("test", data, download_missing=False)
m = LeNet5(device="cpu", seed=seed, init=init)
train(m, (preprocess(xs), ys), (preprocess(xt), yt), recipe="paper", mu=mu, loss=loss,
      log=log, progress=False, checkpoint=log.replace(".log.jsonl", ".npz"))
