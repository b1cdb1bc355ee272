"""The runs of this folder: settings x seeds of the paper's per-pattern SDLM recipe on
the CPU, each as `lenet.train.train` runs it for `lenet train --device cpu`, one
process per run (one thread each), at most --jobs at a time, under `nice -n 10`.

    python run.py SETTING [SETTING ...] --seeds 0 1 2 [--jobs 2] [--data DIR] [--out DIR]
    python run.py --list          the settings and what they change
    python run.py --summary       rebuild runs.json and print the table from the logs

Each run writes, beside this file, SETTING-seedS.log.jsonl (one JSON line per pass,
the project's log), SETTING-seedS.out.txt (what it printed, first the check of its
first-pass effective learning rates against the paper's "approximately 7e-5 to
0.016") and SETTING-seedS.json (the run's description: setting, rates, wall time,
commit, machine); its checkpoint SETTING-seedS.npz is not committed. The runs of
this folder ran from a copy of the commit (`git archive`, PYTHONPATH pointing at it,
--out here), so that editing the worktree could not change a queued run. A run whose log
already has all its passes is skipped. runs.json gathers every run: setting, seed,
final and best test error, training error, passes, wall time, device, files.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = HERE  # --out
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
PASSES = 20
BASE = {"init": "lush", "mu": 1.0, "loss": "mse", "schedule": "paper", "shuffle": True,
        "hessian_sample": "random", "distort": False, "j": 10.0}
# name: what differs from BASE (Lush's initialisation, mu 1 in our units, MSE, the
# paper's schedule, shuffled patterns, curvature on 500 random patterns, no
# distortions; j = 10 is MAP's constant, kernels.reference.MAP_J)
SETTINGS = {
    "lush-mu0.02": {"mu": 0.02},          # the paper's mu in our units
    "lush-mu0.04": {"mu": 0.04},          # the paper's mu = 0.02 in Lush's units
    "lush-mu0.04-map": {"mu": 0.04, "loss": "map"},
    "lush-mu0.1": {"mu": 0.1},
    "lush-mu0.2": {"mu": 0.2},
    "lush-mu0.5": {"mu": 0.5},
    "lush-mu1": {},
    "lush-mu2": {"mu": 2.0},
    "lush-mu1-floor": {"schedule": "paper-floor"},
    "lush-mu0.5-floor": {"mu": 0.5, "schedule": "paper-floor"},
    "lush-mu1-map": {"loss": "map"},
    "lush-mu0.5-map": {"mu": 0.5, "loss": "map"},
    "lush-mu1-ordered": {"shuffle": False},
    "lush-mu1-consecutive": {"hessian_sample": "consecutive"},
    "lush-mu1-ordered-consecutive": {"shuffle": False, "hessian_sample": "consecutive"},
    "lush-mu0.3": {"mu": 0.3},
    "lush-mu0.5-ordered": {"mu": 0.5, "shuffle": False},
    "lush-mu0.5-consecutive": {"mu": 0.5, "hessian_sample": "consecutive"},
    "lush-mu0.5-ordered-consecutive": {"mu": 0.5, "shuffle": False,
                                       "hessian_sample": "consecutive"},
    "lush-mu0.2-map": {"mu": 0.2, "loss": "map"},
    "lush-mu0.5-map-floor": {"mu": 0.5, "loss": "map", "schedule": "paper-floor"},
    "lush-mu0.5-map-distort": {"mu": 0.5, "loss": "map", "distort": True},
    "lush-mu1-map-distort": {"loss": "map", "distort": True},
    "lush-mu2-map": {"mu": 2.0, "loss": "map"},
    "lush-mu2-map-distort": {"mu": 2.0, "loss": "map", "distort": True},
    "lush-mu0.5-map-j5": {"mu": 0.5, "loss": "map", "j": 5.0},
    "lush-mu0.5-map-j20": {"mu": 0.5, "loss": "map", "j": 20.0},
    "lush-mu1-distort": {"distort": True},
    "lush-mu0.5-distort": {"mu": 0.5, "distort": True},
    "sqrt-mu1": {"init": "sqrt-fan-in"},  # the earlier best setting, for comparison
}
PAPER_RATES = (7e-5, 0.016)


def setting(name):
    if name not in SETTINGS:
        raise SystemExit(f"unknown setting {name!r}; python run.py --list")
    return dict(BASE, **SETTINGS[name])


def stem(name, seed):
    return os.path.join(OUT, f"{name}-seed{seed}")


def machine():
    load = os.getloadavg()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_at_start": load[0]}


def commit():
    if os.environ.get("REPRO_COMMIT"):  # a copy made by git archive has no .git
        return os.environ["REPRO_COMMIT"]

    def git(*args):
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True,
                               text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain",
                                                                   "--", "lenet", "kernels")
                                                  else "")


def first_pass_rates(model, images, labels, settings, seed):
    """eta / (mu + h) over the trainable parameters at the initial point, h the
    Gauss-Newton diagonal on 500 random training patterns (the first pass's curvature
    up to which 500): overall and per tensor, in our units and in Lush's (whose loss
    is half ours, so its h and mu are half ours: 2 eta / (mu + h))."""
    import numpy as np

    from lenet.kernels.architecture import CONV_TABLES
    from lenet.train import SDLM_HESSIAN_PATTERNS, paper_eta
    rng = np.random.default_rng([seed, 2])
    index = rng.choice(len(labels), SDLM_HESSIAN_PATTERNS, replace=False)
    h = model.second_derivatives(images[index], labels[index], loss=settings["loss"])
    eta, mu = paper_eta(0, settings["schedule"]), settings["mu"]
    per = {}
    for name, v in h.items():
        layer = name.split(".")[0]
        if name.endswith(".weight") and layer in CONV_TABLES:  # C3's zeros are no parameters
            v = v[np.broadcast_to(CONV_TABLES[layer].T[:, :, None, None], v.shape)]
        rate = eta / (mu + v.astype(np.float64).ravel())
        per[name] = [float(rate.min()), float(rate.max())]
    lo, hi = min(r[0] for r in per.values()), max(r[1] for r in per.values())
    return {"eta": eta, "mu": mu, "min": lo, "max": hi, "lush_units": [2 * lo, 2 * hi],
            "per_tensor": per}


def run_one(name, seed, data):
    """One run, in this process (the child of `python run.py SETTING`)."""
    import numpy as np

    from lenet.data import load_mnist, preprocess
    from lenet.model import LeNet5
    from lenet.train import train
    s = setting(name)
    started = time.time()
    out_path = stem(name, seed) + ".out.txt"
    log = stem(name, seed) + ".log.jsonl"
    if os.path.exists(log):
        os.remove(log)
    out = open(out_path, "w", buffering=1)

    def say(text):
        print(text, file=out)

    xs, ys = load_mnist("train", data, download_missing=False)
    xt, yt = load_mnist("test", data, download_missing=False)
    train_set = (preprocess(xs), ys.astype(np.int64))
    test_set = (preprocess(xt), yt.astype(np.int64))
    model = LeNet5(device="cpu", seed=seed, init=s["init"])
    rates = first_pass_rates(model, *train_set, s, seed)
    say(f"setting {name} seed {seed}: {json.dumps(s)}")
    say(f"first-pass effective rates eta/(mu+h): {rates['min']:.3g} to {rates['max']:.3g} "
        f"(Lush's units, 2 eta/(mu+h): {rates['lush_units'][0]:.3g} to "
        f"{rates['lush_units'][1]:.3g}; the paper: approximately {PAPER_RATES[0]:g} to "
        f"{PAPER_RATES[1]:g})")
    for tensor, (lo, hi) in rates["per_tensor"].items():
        say(f"    {tensor:10s} {lo:.3g} .. {hi:.3g}")
    desc = {"setting": name, "seed": seed, **s, "first_pass_rates": rates,
            "commit": commit(), "machine": machine(), "device": "cpu",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))}
    train(model, train_set, test_set, recipe="paper", epochs=PASSES, loss=s["loss"], j=s["j"],
          seed=seed, mu=s["mu"], schedule=s["schedule"], shuffle=s["shuffle"],
          hessian_sample=s["hessian_sample"], distort=s["distort"], log=log,
          checkpoint=stem(name, seed) + ".npz", progress=False, out=say)
    desc["wall_seconds"] = time.time() - started
    desc["load_average_at_end"] = os.getloadavg()[0]
    with open(stem(name, seed) + ".json", "w") as f:
        json.dump(desc, f, indent=1)
    say(f"wall time {desc['wall_seconds']:.0f} s")


def passes_done(name, seed):
    try:
        with open(stem(name, seed) + ".log.jsonl") as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def summary():
    """runs.json from every run's log and description; prints a table per setting."""
    import numpy as np
    runs = []
    for name in SETTINGS:
        for seed in range(100):
            if not os.path.exists(stem(name, seed) + ".log.jsonl"):
                continue
            with open(stem(name, seed) + ".log.jsonl") as f:
                recs = [json.loads(line) for line in f if line.strip()]
            desc = {}
            if os.path.exists(stem(name, seed) + ".json"):
                with open(stem(name, seed) + ".json") as f:
                    desc = json.load(f)
            best = min(recs, key=lambda r: (r["test_error"], r["pass"]))
            runs.append({
                "setting": name, "seed": seed, **setting(name), "passes": len(recs),
                "complete": len(recs) == PASSES and bool(desc),
                "test_error": recs[-1]["test_error"], "train_error": recs[-1]["train_error"],
                "best_test_error": best["test_error"], "best_pass": best["pass"],
                "test_error_per_pass": [r["test_error"] for r in recs],
                "train_error_per_pass": [r["train_error"] for r in recs],
                "training_seconds": sum(r["seconds"] for r in recs),
                "wall_seconds": desc.get("wall_seconds"), "device": "cpu",
                "machine": desc.get("machine"), "commit": desc.get("commit"),
                "first_pass_rates": {k: v for k, v in desc.get("first_pass_rates", {}).items()
                                     if k != "per_tensor"},
                "log": os.path.basename(stem(name, seed)) + ".log.jsonl",
                "out": os.path.basename(stem(name, seed)) + ".out.txt"})
    with open(os.path.join(OUT, "runs.json"), "w") as f:
        json.dump(runs, f, indent=1)
    print(f"{'setting':30s} {'seeds':>6s} {'test % (mean, min-max)':>24s} "
          f"{'train % (mean)':>14s}  passes")
    for name in SETTINGS:
        rs = [r for r in runs if r["setting"] == name and r["complete"]]
        if not rs:  # runs still going, or cut short, are in runs.json but not here
            continue
        test = np.array([r["test_error"] for r in rs]) * 100
        train = np.array([r["train_error"] for r in rs]) * 100
        print(f"{name:30s} {len(rs):6d} {test.mean():8.3f} ({test.min():.2f}-{test.max():.2f})"
              f"{'':6s} {train.mean():10.3f}      {','.join(str(r['passes']) for r in rs)}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("settings", nargs="*")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "mnist"))
    p.add_argument("--out", default=HERE, help="directory for logs (default: here)")
    p.add_argument("--list", action="store_true")
    p.add_argument("--summary", action="store_true")
    p.add_argument("--one", nargs=2, metavar=("SETTING", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    global OUT
    OUT = os.path.abspath(args.out)
    if args.list:
        for name in SETTINGS:
            print(f"{name:30s} {json.dumps(setting(name))}")
        return
    if args.summary:
        summary()
        return
    if args.one:
        run_one(args.one[0], int(args.one[1]), args.data)
        return
    queue = [(name, seed) for seed in args.seeds for name in args.settings
             if setting(name) and passes_done(name, seed) < PASSES]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    running = []
    while queue or running:
        while queue and len(running) < args.jobs:
            name, seed = queue.pop(0)
            print(f"start {name} seed {seed}", flush=True)
            cmd = ["nice", "-n", "10", sys.executable, __file__, "--one", name, str(seed),
                   "--data", args.data, "--out", OUT]
            running.append((name, seed, subprocess.Popen(cmd, env=env)))
        time.sleep(5)
        for item in list(running):
            if item[2].poll() is not None:
                running.remove(item)
                print(f"done {item[0]} seed {item[1]}: exit {item[2].returncode}", flush=True)
    summary()


if __name__ == "__main__":
    main()
