"""Write the final run's checkpoint as the package's trained weights,
lenet/weights/lenet5-mnist.npz, with its provenance in the checkpoint's metadata (read
back by LeNet5.pretrained().provenance):

    python ship.py [--chosen-on N]   after `python run.py final` and `run.py summary`

--chosen-on N: the final run's setting was chosen on the first N seeds of each setting
(here 1: the choice had to be made before the other seeds could run); the provenance
records that, and the validation errors of every seed runs.json holds.

The provenance: the recipe and its settings, the command, the seed, the commit the run
ran from, the validation protocol with the chosen setting's validation errors (each
seed's and their mean) and the final run's test error after its last pass.
"""

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, ROOT)

from lenet.model import PRETRAINED, LeNet5  # noqa: E402
from lenet.train import default_settings  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chosen-on", type=int, help="seeds per setting the choice was made "
                   "on (default: all in runs.json)")
    args = p.parse_args()
    with open(os.path.join(HERE, "runs.json")) as f:
        runs = json.load(f)
    with open(os.path.join(HERE, "final.json")) as f:
        final = json.load(f)
    with open(os.path.join(HERE, "final.log.jsonl")) as f:
        log = [json.loads(line) for line in f if line.strip()]
    last = log[-1]
    chosen, = [r for r in runs["settings"] if r["setting"] == runs["chosen"]]
    on = args.chosen_on or len(chosen["seeds"])
    by_first = {r["setting"]: statistics.mean(r["validation_error"][:on])
                for r in runs["settings"]}
    if min(by_first, key=by_first.get) != runs["chosen"]:
        raise SystemExit(f"on the first {on} seeds the choice would be "
                         f"{min(by_first, key=by_first.get)}, not {runs['chosen']}")
    settings = dict(default_settings(last["recipe"]), epochs=len(log), mu=last["mu"],
                    loss=last["loss"], schedule=last["schedule"], shuffle=last["shuffle"],
                    hessian_sample=last["hessian_sample"], distort=last["distort"])
    seed = int(final["command"][final["command"].index("--seed") + 1])
    model = LeNet5.load(os.path.join(HERE, "final.npz"), device="cpu")
    model.provenance = {
        "recipe": last["recipe"], "settings": settings, "seed": seed,
        "command": " ".join(c for c in final["command"] if c != "--no-progress"),
        "commit": final["commit"], "dataset": last["dataset"], "training_images": 60000,
        "validation_error": chosen["mean"],
        "validation": {"setting": chosen["setting"], "held_out": "the last 10,000 of "
                       "MNIST's 60,000 training images, trained on the first 50,000",
                       "passes": runs["passes"], "seeds": chosen["seeds"],
                       "chosen_on_seeds": chosen["seeds"][:on],
                       "errors": chosen["validation_error"], "mean": chosen["mean"],
                       "settings_compared": [r["setting"] for r in runs["settings"]]},
        "test_error": last["test_error"], "train_error": last["train_error"],
        "protocol": "bench/results/2026-12-06-cpu-validation/README.md",
    }
    os.makedirs(os.path.dirname(PRETRAINED), exist_ok=True)
    model.save(PRETRAINED)
    print(json.dumps(model.provenance, indent=1))
    print(f"wrote {PRETRAINED} ({os.path.getsize(PRETRAINED):,} bytes)")


if __name__ == "__main__":
    main()
