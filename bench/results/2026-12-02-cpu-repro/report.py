"""Markdown tables from runs.json (run.py --summary writes it): per setting the final
test error over its seeds (mean, spread), best, training error, wall time; then, for
each setting named, the test / training error per pass of every seed.

    python report.py                      the summary table
    python report.py SETTING [SETTING]    and the per-pass tables of those settings
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


def main():
    with open(os.path.join(HERE, "runs.json")) as f:
        runs = json.load(f)
    print(summary(runs))
    for name in sys.argv[1:]:
        print()
        print(per_pass(runs, name))


if __name__ == "__main__":
    main()
