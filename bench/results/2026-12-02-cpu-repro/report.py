"""Markdown tables from runs.json (run.py --summary writes it): per setting the final
test error over its seeds (mean, spread), best, training error, wall time; then, for
each setting named, the test / training error per pass of every seed.

    python report.py                      the summary table
    python report.py SETTING [SETTING]    and the per-pass tables of those settings
    python report.py --paired             differences between settings run from the
                                          same seeds (same initial weights and order)
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def pct(v):
    return f"{100 * v:.2f}%"


def summary(runs):
    lines = ["| setting | what it is | seeds | test error after 20 passes: mean, sd "
             "(min-max) | per seed | best during training | training error (mean) | "
             "first-pass eta/(mu+h) | wall time per run |",
             "|---|---|---|---|---|---|---|---|---|"]
    by = {}
    for r in runs:
        if r["complete"]:
            by.setdefault(r["setting"], []).append(r)
    for name, rs in by.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        test = np.array([r["test_error"] for r in rs])
        train = np.array([r["train_error"] for r in rs])
        best = min(rs, key=lambda r: r["best_test_error"])
        rates = rs[0]["first_pass_rates"]
        wall = np.array([r["wall_seconds"] for r in rs]) / 60
        r0 = rs[0]
        what = [f"init {r0['init']}", f"mu {r0['mu']:g}", r0["loss"].upper()]
        what += [f"j {r0['j']:g}"] if r0["loss"] == "map" and r0["j"] != 10 else []
        what += [f"schedule {r0['schedule']}"] if r0["schedule"] != "paper" else []
        what += ["ordered"] if not r0["shuffle"] else []
        what += [f"{r0['hessian_sample']} curvature patterns"] \
            if r0["hessian_sample"] != "random" else []
        what += ["distortions"] if r0["distort"] else []
        what = ", ".join(what)
        lines.append(
            f"| {name} | {what} | {len(rs)} | **{pct(test.mean())}**, "
            f"{100 * test.std(ddof=1) if len(test) > 1 else float('nan'):.2f} "
            f"({pct(test.min())}-{pct(test.max())}) | {', '.join(pct(v) for v in test)} | "
            f"{pct(best['best_test_error'])} (seed {best['seed']}, pass {best['best_pass']}) | "
            f"{pct(train.mean())} | {rates.get('min', float('nan')):.2g}-"
            f"{rates.get('max', float('nan')):.2g} | {wall.min():.0f}-{wall.max():.0f} min |")
    return "\n".join(lines)


def per_pass(runs, name):
    rs = sorted((r for r in runs if r["setting"] == name), key=lambda r: r["seed"])
    head = "| pass | " + " | ".join(f"seed {r['seed']} test | seed {r['seed']} train"
                                    for r in rs) + " |"
    lines = [f"**{name}**", "", head, "|---|" + "---|---|" * len(rs)]
    for p in range(max(r["passes"] for r in rs)):
        cells = []
        for r in rs:
            if p < r["passes"]:
                cells += [pct(r["test_error_per_pass"][p]), pct(r["train_error_per_pass"][p])]
            else:
                cells += ["", ""]
        lines.append(f"| {p + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


PAIRS = [("lush-mu0.5", "lush-mu0.5-map"), ("lush-mu1", "lush-mu1-map"),
         ("lush-mu0.5-map", "lush-mu1-map"), ("lush-mu1-map", "lush-mu2-map"),
         ("lush-mu0.5", "lush-mu1"), ("lush-mu0.5", "lush-mu0.3"), ("lush-mu0.5", "lush-mu0.2"),
         ("lush-mu0.5", "lush-mu0.5-floor"), ("lush-mu0.5-map", "lush-mu0.5-map-floor"),
         ("lush-mu0.5", "lush-mu0.5-ordered"), ("lush-mu0.5", "lush-mu0.5-consecutive"),
         ("lush-mu0.5-map", "lush-mu0.5-map-j5"), ("lush-mu0.5-map", "lush-mu0.5-map-j20"),
         ("lush-mu0.5", "lush-mu0.5-distort"), ("lush-mu0.5-map", "lush-mu0.5-map-distort"),
         ("lush-mu1-map", "lush-mu1-map-distort"), ("lush-mu2-map", "lush-mu2-map-distort")]


def paired(runs):
    """B - A in test error (points) over the seeds both ran: mean, standard error."""
    lines = ["| A | B | seeds | B - A, test error (points): mean +- standard error | per seed |"
             " B - A, training error |", "|---|---|---|---|---|---|"]
    by = {}
    for r in runs:
        if r["complete"]:
            by.setdefault(r["setting"], {})[r["seed"]] = r
    for a, b in PAIRS:
        seeds = sorted(set(by.get(a, {})) & set(by.get(b, {})))
        if len(seeds) < 2:
            continue
        d = np.array([by[b][s]["test_error"] - by[a][s]["test_error"] for s in seeds]) * 100
        t = np.array([by[b][s]["train_error"] - by[a][s]["train_error"] for s in seeds]) * 100
        lines.append(f"| {a} | {b} | {','.join(map(str, seeds))} | {d.mean():+.3f} +- "
                     f"{d.std(ddof=1) / np.sqrt(len(d)):.3f} | "
                     f"{', '.join(f'{v:+.2f}' for v in d)} | {t.mean():+.3f} |")
    return "\n".join(lines)


def main():
    with open(os.path.join(HERE, "runs.json")) as f:
        runs = json.load(f)
    if sys.argv[1:] == ["--paired"]:
        print(paired(runs))
        return
    print(summary(runs))
    for name in sys.argv[1:]:
        print()
        print(per_pass(runs, name))


if __name__ == "__main__":
    main()
