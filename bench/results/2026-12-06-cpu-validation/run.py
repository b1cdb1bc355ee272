"""The runs of this folder: a choice of the lecun recipe's settings on a validation set
held out of MNIST's training set, then the chosen setting trained on all 60,000 and
tested once. Every run is `lenet train` on the CPU, one at a time, one thread (at the
usual priority, on a 2-core machine shared with ~9 other sessions: load average 15 to
100), from a copy of the commit it names (`git archive`, PYTHONPATH pointing at it) so
that editing the worktree cannot change a queued run.

    python run.py grid [--seeds 0 1 2] [--settings NAME ...]   validation runs
    python run.py final [--seed 0]    the setting with the lowest mean validation error
                                      after 20 passes, trained on all 60,000 digits
    python run.py summary             runs.json and the table, from the logs
    (--min-seeds N: compare the first N seeds of each setting; default 3)

A validation run is `lenet train --device cpu --validation 10000 --fast --seed S
[setting's options]`: it trains on the first 50,000 training digits, records the error
on the last 10,000 after every pass, and never reads the test set. Each run writes
beside this file NAME.log.jsonl (the log), NAME.out.txt (what it printed) and NAME.json
(command, commit, wall time, load average); its checkpoint NAME.npz is not committed
(except the final one, shipped as lenet/weights/lenet5-mnist.npz). A run whose log
already has its 20 passes is skipped.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PASSES = 20
VALIDATION = 10000
# name: the options of `lenet train` beside the default recipe (lecun: Lush's
# initialisation, MAP loss, mu 2, the paper's schedule, no distortions)
SETTINGS = {
    "mu2": [],
    "mu1": ["--mu", "1"],
    "mu2-distort": ["--distort"],
    "mu1-distort": ["--mu", "1", "--distort"],
    "mu2-mse": ["--loss", "mse"],
    "mu1-mse": ["--mu", "1", "--loss", "mse"],
}
GRID = ("mu2", "mu1", "mu2-distort", "mu1-distort")   # the plan (README.md)
ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "NUMBA_NUM_THREADS": "1"}


def read_log(name):
    path = os.path.join(HERE, f"{name}.log.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run(name, options, code):
    """One `lenet train` run of the copy at `code`; skipped if its log is complete."""
    if len(read_log(name)) >= PASSES:
        print(f"{name}: done already")
        return
    command = [sys.executable, "-m", "lenet", "train", "--device", "cpu",
               "--no-progress", *options, "--out", f"{name}.npz"]
    env = dict(os.environ, PYTHONPATH=code, **ENV)
    commit = open(os.path.join(code, ".commit")).read().strip()
    print(f"{name}: {' '.join(command[2:])}", flush=True)
    started, load = time.time(), os.getloadavg()
    with open(os.path.join(HERE, f"{name}.out.txt"), "w") as out:
        rc = subprocess.call(command, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.time() - started
    with open(os.path.join(HERE, f"{name}.json"), "w") as f:
        json.dump({"name": name, "command": command[2:], "commit": commit,
                   "returncode": rc, "wall_seconds": round(seconds, 1),
                   "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                   "load_average_at_start": load, "load_average_at_end": os.getloadavg(),
                   "threads": ENV}, f, indent=1)
    print(f"{name}: exit {rc}, {seconds:.0f} s", flush=True)


def grid_results():
    """{setting: {seed: validation error after pass 20}} of the complete validation runs."""
    results = {}
    for setting in SETTINGS:
        for seed in range(100):
            log = read_log(f"{setting}-seed{seed}")
            if len(log) >= PASSES:
                results.setdefault(setting, {})[seed] = log[PASSES - 1]["validation_error"]
    return results


def chosen(results, seeds=3):
    """The setting with the lowest mean validation error over its first `seeds` seeds,
    among the settings run from at least that many (`seeds`: --min-seeds)."""
    means = {s: statistics.mean(sorted(r.items())[i][1] for i in range(seeds))
             for s, r in results.items() if len(r) >= seeds}
    return min(means, key=means.get)


def summary(seeds=3):
    results = {s: dict(sorted(r.items())[:seeds]) for s, r in grid_results().items()
               if len(r) >= seeds}
    rows = []
    for setting, by_seed in results.items():
        errors = [by_seed[s] for s in sorted(by_seed)]
        times = [json.load(open(os.path.join(HERE, f"{setting}-seed{s}.json")))["wall_seconds"]
                 for s in sorted(by_seed)]
        rows.append({"setting": setting, "options": SETTINGS[setting], "seeds": sorted(by_seed),
                     "validation_error": errors, "mean": statistics.mean(errors),
                     "min": min(errors), "max": max(errors), "wall_seconds": times})
    best = chosen(results, seeds) if results else None
    final = read_log("final")
    report = {"validation_size": VALIDATION, "passes": PASSES, "seeds_per_setting": seeds,
              "settings": rows,
              "chosen": best, "final": final[-1] if len(final) >= PASSES else None}
    with open(os.path.join(HERE, "runs.json"), "w") as f:
        json.dump(report, f, indent=1)
    print("| setting | options | seeds | validation error after 20 passes: mean (min-max) "
          "| per seed | wall time per run |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r["mean"]):
        mark = " (chosen)" if r["setting"] == best else ""
        print(f"| {r['setting']}{mark} | `{' '.join(r['options']) or '(none)'}` | "
              f"{len(r['seeds'])} | **{100 * r['mean']:.2f}%** ({100 * r['min']:.2f}-"
              f"{100 * r['max']:.2f}%) | "
              + ", ".join(f"{100 * e:.2f}%" for e in r["validation_error"])
              + f" | {min(r['wall_seconds']) / 60:.1f}-{max(r['wall_seconds']) / 60:.1f} min |")
    if report["final"]:
        print(f"final ({best}, all 60,000): test error {100 * report['final']['test_error']:.2f}%")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["grid", "final", "summary"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--settings", nargs="+", default=list(GRID), choices=list(SETTINGS))
    p.add_argument("--min-seeds", type=int, default=3, help="seeds per setting compared (the "
                   "first N of each setting run from at least N)")
    p.add_argument("--code", help="the copy of the project to run (with a .commit file)")
    args = p.parse_args()
    if args.what == "summary":
        return summary(args.min_seeds)
    if args.what == "grid":
        for seed in args.seeds:   # seed by seed, so that every setting has as many
            for setting in args.settings:
                run(f"{setting}-seed{seed}", ["--validation", str(VALIDATION), "--fast",
                                              "--seed", str(seed), *SETTINGS[setting]],
                    args.code)
    else:
        best = chosen(grid_results(), args.min_seeds)
        print(f"chosen on validation: {best}")
        run("final", ["--seed", str(args.seed), "--fast", *SETTINGS[best]], args.code)


if __name__ == "__main__":
    main()
