"""Writing a run's results: results.json (everything, every sample),
results.md (tables, columns per implementation) and throughput.png."""

import json
import os
import sys

from bench import flops, suite
from bench.impls import ORDER, PAPER_WARMUP_PATTERNS, RETIRED

FILES = ("results.json", "results.md", "throughput.png")   # what a run writes
# the columns of every result, earlier ones' retired implementations after gpu
COLUMNS = ORDER[:1] + tuple(RETIRED) + ORDER[1:]
COLORS = {"gpu": "tab:blue", "gpu-layers": "tab:cyan", "torch-cuda": "tab:orange",
          "torch-compile": "tab:brown", "cupy": "tab:green", "cpu": "tab:red",
          "torch-cpu": "tab:purple"}
SECTIONS = (("inference", "Inference (whole network, forward)"),
            ("layer", "Layers (forward of each stage, or layer, on its own)"),
            ("train-step", "Training step (forward, MSE loss, backward, SGD-momentum update)"),
            ("train-pass", "Training pass (one SGD pass of lenet.train.Trainer, or the same loop "
                           "in PyTorch)"),
            ("paper-pass", "Training pass, the paper's recipe (curvature estimate, then one SDLM "
                           "step per pattern; this project only)"),
            ("pattern-pass", "Training pass per pattern in PyTorch (SGD at batch size 1, the "
                             "paper pass's counterpart)"))


def load(directory):
    """The results.json of a run's folder; ValueError, in one line, where there is none
    or it is not a run's."""
    if not directory:
        raise ValueError("--render must name a directory, not an empty string")
    if not os.path.isdir(directory):
        raise ValueError(f"--render {directory}: " + ("not a directory" if
                         os.path.exists(directory) else "no such directory"))
    path = os.path.join(directory, "results.json")
    try:
        with open(path) as f:
            results = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"--render {directory}: no results.json in it") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(results, dict) or "rows" not in results or "settings" not in results:
        raise ValueError(f"{path}: not the results.json of python -m bench")
    return results


def write_json(results, out_dir):
    """out_dir/results.json, through a temporary file and a rename: an interrupt or a
    kill never leaves half a file. Returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return path


def write_all(results, out_dir):
    return {"results.json": write_json(results, out_dir), **render(results, out_dir)}


def render(results, out_dir, text=None):
    """results.md (`text`, or made here) and throughput.png from a run's results (as in
    results.json)."""
    paths = {name: os.path.join(out_dir, name) for name in ("results.md", "throughput.png")}
    text = markdown(results) if text is None else text   # before results.md is opened
    with open(paths["results.md"], "w") as f:
        f.write(text)
    plot(results, paths["throughput.png"])
    return paths


# ------------------------------------------------------------------ formatting

def _layer_order(name):
    """Where a layer row goes: in the network's order, a stage (C1+S2, now) before its
    first layer alone (earlier results' rows)."""
    return flops.LAYERS.index(name.split("+")[0]), "+" not in name


def _worst_errors(results):
    worst = {}
    for r in results["rows"]:
        if r["status"] == "ok" and r.get("check_error") is not None:
            worst[r["impl"]] = max(worst.get(r["impl"], 0.0), r["check_error"])
    return ", ".join(f"{n} {worst[n]:.1e}" for n in COLUMNS if n in worst) or "none"


def si(x):
    """1234567 -> '1.23M'."""
    if x is None:
        return "-"
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.3g}"


def _cell(row, metric, cap):
    if row is None:
        return "n/a"
    if row["status"] == "skipped":
        reason = row["reason"] or ""
        if "max-cpu-batch" in reason:
            return f"not run (N > {cap})"
        return "not run (pass too long)" if "max-cpu-pass-images" in reason else "not run"
    if row["status"] != "ok":
        return f"**{row['status']}**"
    if metric == "rate":
        n = row["images"]
        return f"{si(row['images_per_s'])} [{si(n / row['max_s'])}-{si(n / row['min_s'])}]"
    if metric == "seconds":
        return f"{row['median_s']:.3g} [{row['min_s']:.3g}-{row['max_s']:.3g}]"
    frac = row["peak_fraction"]
    return f"{row['gflops']:.3g}" + (f" ({100 * frac:.2g}%)" if frac is not None else "")


def _microseconds(row, cap):
    if row is None or row["status"] != "ok":
        return _cell(row, "rate", cap)
    return f"{1e6 * row['median_s']:.3g} [{1e6 * row['min_s']:.3g}-{1e6 * row['max_s']:.3g}]"


def unequal_threads(results):
    """"torch-cpu ran on A threads, cpu on B" where a run's two CPU sides differ, else None
    (the benchmark compares them on the same threads; a threading layer set otherwise
    may split them)."""
    i = results.get("implementations", {})
    torch, ours = i.get("torch-cpu", {}), i.get("cpu", {})
    if "threads" in torch and str(ours.get("threads_source")).startswith("numba") and \
            ours.get("threads") != torch["threads"]:
        return f"torch-cpu ran on {torch['threads']} threads, cpu on {ours['threads']}"
    return None


def _table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in line) + " |" for line in lines]
    return out


def _section(results, what, impls):
    rows = [r for r in results["rows"] if r["what"] == what]
    if not rows:
        return []
    out = []
    if what in suite.PER_PATTERN:
        # PyTorch has no SDLM, this project no pattern-pass rows: n/a columns left out
        impls = [n for n in impls if any(r["impl"] == n for r in rows)]
    if what == "pattern-pass":
        out += ["PyTorch's training loop (the train-pass rows') at batch size 1, SGD with "
                f"momentum {results['settings'].get('momentum', '?')}: one step per pattern, "
                "the per-pattern row the paper's pass is compared with. Checked as a "
                "training step at batch size 1.", ""]
    if what == "paper-pass":
        out += [f"mu {results['settings'].get('paper_mu', '?')} (--paper-mu), batch size 1. "
                "The time of a pass includes its curvature estimate on min(500, N) patterns; "
                "GFLOP/s count a training step's FLOPs per pattern, not the curvature "
                "estimate or the SDLM update.", ""]
    cap = results["settings"]["max_cpu_batch"]
    keys = sorted({(r["layer"] or "", r["batch"]) for r in rows},
                  key=lambda k: (_layer_order(k[0]) if k[0] else (0, False), k[1]))
    index = {(r["layer"] or "", r["batch"], r["impl"]): r for r in rows}
    lead = (["layer"] if what == "layer" else []) + ["batch"]

    def lines(metric):
        return [([layer] if what == "layer" else []) + [f"{batch:,}"] +
                [_cell(index.get((layer, batch, name)), metric, cap) for name in impls]
                for layer, batch in keys]

    if what in suite.PASS_WHATS:
        images = rows[0]["images"]
        out += [f"Seconds per pass over {images:,} images, median [min-max]:", ""]
        out += _table(lead + list(impls), lines("seconds")) + [""]
    if what == "inference" and any((index.get(("", 1, n)) or {}).get("status") == "ok"
                                   for n in impls):
        out += ["Latency at batch 1, microseconds per call, median [min-max]:", ""]
        out += _table(list(impls), [[_microseconds(index.get(("", 1, n)), cap)
                                     for n in impls]]) + [""]
    unit = "Images (patterns)" if what == "paper-pass" else "Images"
    out += [f"{unit} per second, median [min-max of the samples]:", ""]
    out += _table(lead + list(impls), lines("rate")) + [""]
    out += ["GFLOP/s at the median (fraction of the device's float32 peak):", ""]
    out += _table(lead + list(impls), lines("gflops")) + [""]
    gpus = [n for n in impls if results["implementations"][n]["kind"] == "gpu"]
    cpus = [n for n in impls if results["implementations"][n]["kind"] == "cpu"]
    pairs = [(g, c) for g in gpus for c in cpus]
    if pairs:
        speed = []
        for layer, batch in keys:
            cells = []
            for g, c in pairs:
                s = (index.get((layer, batch, g)) or {}).get("speedup", {}).get(c)
                cells.append(f"{s:,.3g}x" if s else "-")
            speed.append(([layer] if what == "layer" else []) + [f"{batch:,}"] + cells)
        out += ["Speed-up of each GPU row over each CPU row at the same batch size:", ""]
        out += _table(lead + [f"{g} / {c}" for g, c in pairs], speed) + [""]
    if what == "paper-pass":
        ratios = [f"{r['impl']} / {name} {ratio:,.3g}x" for r in rows if r["status"] == "ok"
                  for name, ratio in sorted((r.get("vs_pattern_pass") or {}).items())]
        if ratios:
            out += ["Patterns per second against PyTorch's per-pattern SGD pass (the "
                    "pattern-pass rows below): " + ", ".join(ratios) + ".", ""]
        ends = [f"{r['impl']} {r['pass_loss']:.4g} / {100 * r['pass_running_error']:.1f}%"
                for r in rows if r["status"] == "ok" and "pass_loss" in r]
        if ends:
            out += ["Mean loss / running error of the last timed pass (random labels, so "
                    "only a sign that the pass stays finite): " + ", ".join(ends) + ".", ""]
    return out


def method(s):
    """How a run with settings `s` (suite.Config as a dict) measures, in lines: what
    results.json records, so that rendering it later describes that run's method."""
    lines = [
        "Each row first runs once on the benchmark's own inputs and is compared with the "
        "float64 CPU reference (`kernels/reference.py`) with `kernels/tolerance.py`'s "
        f"relative error bound ({s['rtol']:.0e}; PyTorch rows {s['torch_rtol']:.0e}: TF32 "
        "is off, but cuDNN's autotuned algorithms sum in other orders): outputs, or for "
        "training every gradient, the momentum state and the per-pattern losses. A row "
        "that fails is **FAILED** and not timed.",
        "Then warm-up (JIT compilation and cuDNN autotuning excluded), then samples, "
        "each a loop of calls between two device synchronisations.",
        "Inputs are random in the preprocessed range [-0.1, 1.175] with random labels, "
        f"resident on the device; batches above {s['unique_images']:,} images repeat "
        f"the first {s['unique_images']:,} (every output is still checked).",
        "A training pass is `lenet.train.Trainer(recipe='sgd').train_pass()` for this "
        "project's models and the same loop in PyTorch; it is checked as a training "
        "step at its batch size and warmed up on a pass over two batches. The model is "
        "reset to the starting parameters after the check, not between passes: the "
        "warm-up and each timed pass go on from the parameters the one before left. "
        "This project's CPU model runs the compiled step of `kernels/cpu.py` on "
        "Numba's threads (images in fixed chunks, the same bits on any number of "
        "threads).",
        "The CPU's float32 peak, for its fraction-of-peak figures, is given with "
        "--cpu-peak-gflops or measured by float32 NumPy matmuls before and after the "
        "rows, the best of them counting: on a machine shared with other work the "
        "measurements vary (the CPU row of the table above gives their range)."]
    if "paper-pass" in s["whats"]:
        lines.append(
            "A paper pass is the paper's recipe, `lenet.train.Trainer(recipe='paper', "
            f"mu={s['paper_mu']:g}, loss='mse').train_pass()` over {s['pass_images']:,} "
            "images: the Gauss-Newton curvature estimate on min(500, N) patterns "
            "(included in the pass's time), then one SDLM step per pattern (batch size "
            "1). mu is --paper-mu: the paper's 0.02 diverges from these parameters (the "
            "paper's 2.4/F initialisation). On the GPU the per-pattern steps run in one "
            "fused kernel (`kernels/sdlm.py`), on the CPU in `kernels/cpu.py`'s compiled "
            "loop; PyTorch has no SDLM: its per-pattern counterpart is the pattern-pass "
            "rows (SGD at batch size 1). It is checked by a pass over "
            f"{s['paper_check_patterns']} patterns from the starting parameters against "
            "the same pass in float64 (every parameter afterwards, the pass's mean loss "
            f"and running error), then warmed up on a pass over {PAPER_WARMUP_PATTERNS} "
            "patterns and timed like a training pass (reset after the check, not between "
            "passes). Its GFLOP/s count a training step's FLOPs per pattern, not the "
            "curvature estimate.")
    return lines


def markdown(results):
    m, dev, v = results["machine"], results["device"], results["versions"]
    impls = [n for n in COLUMNS if n in results["implementations"]
             and results["implementations"][n]["status"] == "ran"]
    s = results["settings"]
    commit = results["commit"] + (" (with uncommitted changes)" if results.get("dirty") else "")
    cpu_peak = results["cpu"]["peak_gflops"]
    gpu_peak = dev["peak_gflops"]
    out = [f"# LeNet-5 benchmarks: {dev['name'] or 'no GPU'}, {m['cpu_model']}", "",
           f"{results['date']} on `{m['hostname']}`, commit `{commit}`.", "",
           f"Command: `{results['command']}`", ""]
    if results.get("rehearsal") and any(r.get("kind") == "gpu" for r in results["rows"]):
        out += ["**A rehearsal (`--rehearse`): the GPU rows ran in the CUDA simulator; "
                "their times are the simulator's, not GPU timings.**", ""]
    if not results.get("complete", True) and not results.get("interrupted"):
        out += ["**Written mid-run (the run did not end): rows are missing.**", ""]
    threads = unequal_threads(results)
    if threads:
        out += [f"**{threads}: their ratios compare unequal threads.**", ""]
    facts = [("GPU", f"{dev['name'] or 'none'}; float32 peak "
              f"{f'{gpu_peak:,.0f} GFLOP/s' if gpu_peak else 'unknown'} ({dev['peak_source']})"),
             ("CPU", f"{m['cpu_model']}, {m['cpu_cores']} logical cores ({m['usable_cores']} "
              f"usable); NumPy BLAS threads: {m['numpy_blas_threads']}"
              + "".join(f"; {n} threads: {i['threads']}"
                        for n, i in results["implementations"].items()
                        if n == "torch-cpu" and "threads" in i)
              # earlier runs recorded NumPy's BLAS threads for cpu: not what its model ran on
              + "".join(f"; {n} (Numba) threads: {i['threads']}"
                        for n, i in results["implementations"].items()
                        if n == "cpu" and str(i.get("threads_source")).startswith("numba"))
              + f"; float32 peak {f'{cpu_peak:,.0f} GFLOP/s' if cpu_peak else 'unknown'} "
              f"({results['cpu']['peak_source']})"),
             ("versions", ", ".join(f"{k} {val}" for k, val in v.items() if val)),
             ("timing", f"after a checked run and at most {s['warmup']} warm-up call(s) (none "
              f"after one of {s['min_time']} s or more): samples until "
              f"at least {s['repeats']} and {s['min_time']} s (passes: {s['pass_repeats']}); "
              "median and [min-max] of the samples"),
             ("CPU rows", f"batches up to --max-cpu-batch {s['max_cpu_batch']:,} images")]
    for name, whats in (results.get("not_offered") or {}).items():
        facts.append((name, f"has no {', '.join(whats)} rows (asked for)"))
    for name, info in results["implementations"].items():
        if info["status"] != "ran":
            facts.append((f"{name}", f"not run: {info['reason']}"))
    out += _table(["", ""], facts) + [""]
    out += ["## How it was measured", ""]
    if results.get("method"):   # the method as the run described it
        out += [f"- {line}" for line in results["method"]]
    else:
        out += ["- This results.json does not record its method (written before the "
                "benchmark recorded it): bench/suite.py and bench/impls.py at its commit "
                "describe it. Each row was checked against the float64 CPU reference before "
                f"it was timed, with the relative error bound {s['rtol']:.0e} (PyTorch rows "
                f"{s['torch_rtol']:.0e})."]
    out += ["- Largest relative error of the rows that passed their check: "
            + _worst_errors(results) + "."]
    out += [""]
    out += ["## FLOPs per image (napkin maths)", ""]
    out += _table(["layer", "connections", "FLOPs", "counted as"],
                  [(layer, f"{c:,}" if c is not None else "", f"{f:,}", formula)
                   for layer, formula, c, f in flops.napkin_rows()])
    out += ["", "A connection is one multiply-add (2 FLOPs); tanh is not counted; a training "
            "step counts 3x the forward.", ""]
    for what, title in SECTIONS:
        section = _section(results, what, impls)
        if section:
            out += [f"## {title}", ""] + section
    bad = [r for r in results["rows"] if r["status"] in ("FAILED", "ERROR")]
    if bad:
        out += ["## Rows that failed", ""]
        out += [f"- {r['impl']} {r['layer'] or r['what']} N={r['batch']}: {r['status']}: "
                f"{r['reason']}" for r in bad] + [""]
    if results.get("interrupted"):
        out += ["**The run was interrupted: rows are missing.**", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------ plot

def plot(results, path):
    """images/s against batch size, log-log, one line per implementation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [(w, t) for w, t in (("inference", "inference"), ("train-step", "training step"))
              if any(r["what"] == w and r["status"] == "ok" for r in results["rows"])]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 4.5),
                             squeeze=False)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no inference or training-step rows", ha="center")
        axes[0][0].set_axis_off()
    for ax, (what, title) in zip(axes[0], panels, strict=False):
        for name in COLUMNS:
            rows = sorted((r for r in results["rows"] if r["what"] == what and
                           r["impl"] == name and r["status"] == "ok"), key=lambda r: r["batch"])
            if rows:
                ax.plot([r["batch"] for r in rows], [r["images_per_s"] for r in rows],
                        marker="o", label=name, color=COLORS[name])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("batch size (images)")
        ax.set_ylabel("images / s (median)")
        ax.set_title(f"LeNet-5 {title}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"{results['device']['name'] or 'CPU only'} / {results['machine']['cpu_model']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ command line

def main(argv=None):
    """python -m bench.report --readme [--check] | --render DIR."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m bench.report",
                                description="Regenerate the README's results from the "
                                "committed JSON and logs under bench/results/ (--readme), or "
                                "a run's results.md and throughput.png from its results.json "
                                "(--render DIR).")
    p.add_argument("--readme", action="store_true",
                   help="rewrite README.md's generated blocks (bench/readme.py)")
    p.add_argument("--check", action="store_true",
                   help="with --readme: exit 1 if they are out of date, change nothing")
    p.add_argument("--render", metavar="DIR", help="write DIR/results.md and "
                   "DIR/throughput.png from DIR/results.json")
    args = p.parse_args(argv)
    if args.render is not None:
        try:
            results = load(args.render)
            text = markdown(results)
        except ValueError as e:
            print(f"bench.report: error: {e}", file=sys.stderr)
            return 2
        except (KeyError, TypeError, AttributeError) as e:   # a results.json cut or edited
            print(f"bench.report: error: {os.path.join(args.render, 'results.json')}: not the "
                  f"results.json of python -m bench ({type(e).__name__}: {e})",
                  file=sys.stderr)
            return 2
        render(results, args.render, text)
        return 0
    if args.readme:
        from bench import readme
        return readme.main(check=args.check)
    p.error("nothing to do: --readme or --render DIR")


if __name__ == "__main__":
    sys.exit(main())
