"""The `python -m bench` command: options, run, write results.

main(argv) parses the options, runs bench.suite and writes results.json,
results.md and throughput.png to --out. Exit status: 0 when every row that ran
passed its check, 1 when some row FAILED or raised (ERROR), 2 when nothing asked
for can run here (for example only GPU rows under the CUDA simulator, or only rows
the implementations asked for do not have) or an option is wrong, 130 when
interrupted (the rows measured so far are written).

Everything is checked before anything is written: the options, --out (an --out
that already holds results is refused unless --force; the default folder moves to
a fresh -2, -3, ... instead, bench/outdir.py) and whether any row can run.

With --out given, results.json is written before the set-up and again after every
row (to a temporary file, then renamed), so an interrupt or a kill at any moment
leaves a valid results.json with every finished row ("complete": false until the
run ends): what bench/gpu_session.sh relies on under its time limits.
"""

import argparse
import math
import os
import shlex
import signal
import sys
import warnings

from bench import flops, impls, machine, outdir, report, suite

QUICK = {"batch_sizes": [1, 64, 1024], "repeats": 1, "min_time": 0.05, "warmup": 1,
         "pass_images": 6000, "pass_repeats": 1, "cpu_peak_matmul": 1024,
         "whats": ["inference", "layers", "train-step"]}


def _ints(text):
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return values


def _choices(allowed):
    def parse(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        if values == ["all"]:
            return list(allowed)
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"{', '.join(bad) or 'nothing'}: choose from "
                                             f"{', '.join(allowed)} (comma-separated) or all")
        return list(dict.fromkeys(values))   # each once, in the order given
    return parse


def build_parser(prog="python -m bench"):
    d = suite.Config()
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark LeNet-5: this project's CUDA kernels (gpu) and compiled CPU model "
        "(cpu) against the same network in PyTorch (torch-cuda, torch-compile, torch-cpu) "
        "and a CuPy "
        "im2col+cuBLAS baseline (cupy). Every row is checked against the float64 CPU "
        "reference before it is timed (a mismatch is FAILED, not timed); GPU rows are "
        "refused under the CUDA simulator. Writes results.json (every sample), results.md "
        "and throughput.png. Progress goes to stderr.",
        epilog="Exit status: 0 all rows passed, 1 some row FAILED or ERROR, 2 nothing can "
        "run or bad options, 130 interrupted. The FLOP counts per layer (bench/flops.py) are "
        "printed in results.md and results.json.")
    p.add_argument("--impl", type=_choices(impls.ORDER), default=list(impls.ORDER),
                   help="implementations, comma-separated (default: all; those that "
                   "cannot run here are skipped with the reason): " + ", ".join(impls.ORDER))
    p.add_argument("--what", type=_choices(suite.WHATS), default=None,
                   help="what to measure, comma-separated (default: all; with --quick "
                   "inference,layers,train-step): inference = whole-network forward; layers "
                   "= each stage's forward alone (gpu: kernels/forward.py's stage kernels; "
                   "gpu, torch-cuda, torch-cpu and cupy, not cpu); "
                   "train-step = forward + backward + SGD "
                   "update (not cupy); train-pass = one SGD pass over --pass-images images "
                   "(not cupy, torch-compile); paper-pass "
                   "= one pass of the paper's recipe (curvature estimate, then an SDLM step "
                   "per pattern) over --pass-images images, gpu and cpu only; pattern-pass = "
                   "its PyTorch counterpart, one SGD pass at batch size 1 over "
                   "--pattern-pass-images images, torch-cuda and torch-cpu only. Rows an "
                   "implementation does not have are named on stderr; none at all is exit "
                   "status 2")
    p.add_argument("--layers", type=_choices(flops.STAGES), default=list(flops.STAGES),
                   help="stages for the layer rows (default: all: " + ",".join(flops.STAGES)
                   + ")")
    p.add_argument("--batch-sizes", type=_ints, default=None,
                   help="batch sizes of the inference, layer and train-step rows (default: "
                   f"{','.join(map(str, d.batch_sizes))}, and for inference "
                   f"{','.join(map(str, d.inference_batch_sizes))}; with --quick "
                   f"{','.join(map(str, QUICK['batch_sizes']))})")
    p.add_argument("--layer-batch-sizes", type=_ints, default=None,
                   help="batch sizes of the layer rows alone (default: --batch-sizes)")
    p.add_argument("--step-batch-sizes", type=_ints, default=None,
                   help="batch sizes of the train-step rows alone (default: --batch-sizes)")
    p.add_argument("--max-cpu-batch", type=int, default=d.max_cpu_batch,
                   help="largest batch the CPU rows (cpu, torch-cpu) run, to keep runs short "
                   f"(default: {d.max_cpu_batch}), training passes included; larger ones "
                   "show as not run")
    p.add_argument("--max-cpu-pass-images", type=int, default=d.max_cpu_pass_images,
                   help="CPU training-pass rows (train-pass, paper-pass, pattern-pass) over "
                   "more than this many images show as not run (default: no limit)")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"at least this many timing samples per row (default: {d.repeats}; "
                   f"--quick {QUICK['repeats']})")
    p.add_argument("--min-time", type=float, default=None,
                   help="and keep sampling until the samples add up to this many seconds "
                   f"(default: {d.min_time}; --quick {QUICK['min_time']})")
    p.add_argument("--warmup", type=int, default=None,
                   help="at most this many untimed calls after the checked one, before "
                   f"the samples (default: {d.warmup}; --quick {QUICK['warmup']}): they stop "
                   "after a call of --min-time or more; with 0, the training passes are not "
                   "warmed up either")
    p.add_argument("--pass-batch-sizes", type=_ints, default=d.pass_batch_sizes,
                   help="batch sizes of the train-pass rows (default: "
                   f"{','.join(map(str, d.pass_batch_sizes))}: the sgd recipe's, then up to "
                   "one step per pass; the CPU rows stop at --max-cpu-batch; a pass at "
                   "batch 1 is the paper-pass row)")
    p.add_argument("--pass-images", type=int, default=None,
                   help=f"images in a training pass, train-pass and paper-pass (default: "
                   f"{d.pass_images:,}, MNIST's training set; --quick {QUICK['pass_images']})")
    p.add_argument("--pattern-pass-images", type=int, default=None,
                   help="images in a pattern-pass row (PyTorch's SGD at batch size 1, the "
                   "paper pass's counterpart; default: --pass-images): images/s is per "
                   "pattern, so a shorter pass measures the same rate sooner")
    p.add_argument("--pass-repeats", type=int, default=None,
                   help=f"timed passes per train-pass, paper-pass and pattern-pass row "
                   f"(default: "
                   f"{d.pass_repeats}; --quick {QUICK['pass_repeats']})")
    p.add_argument("--paper-mu", type=float, default=d.paper_mu,
                   help=f"mu of the paper-pass rows (default: {d.paper_mu:g}). Not the "
                   "paper's 0.02: from the benchmark's parameters (the paper's 2.4/F "
                   "initialisation) mu 0.02 diverges within a pass (README: within 500 MNIST "
                   "patterns), so the timed pass would run a saturated network or end in "
                   "NaN; mu 1 is the README's best setting and keeps the pass finite")
    p.add_argument("--paper-check-patterns", type=int, default=d.paper_check_patterns,
                   help="patterns of the paper-pass rows' checked pass against float64 "
                   f"(default: {d.paper_check_patterns})")
    p.add_argument("--unique-images", type=int, default=d.unique_images,
                   help="distinct random images; larger batches repeat them, which keeps the "
                   f"float64 reference of the checks affordable (default: {d.unique_images})")
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="the GPU's float32 peak in GFLOP/s for the fraction-of-peak "
                   "figures (default: the datasheet value of known devices: H100 SXM and "
                   "H200 67,000, H100 PCIe 51,200)")
    p.add_argument("--cpu-peak-gflops", type=float, default=None,
                   help="the CPU's float32 peak in GFLOP/s (default: measured: the best of "
                   f"{suite.CPU_PEAK_REPEATS} large float32 NumPy matmuls on all BLAS threads "
                   f"before the rows and {suite.CPU_PEAK_REPEATS} after; results.md gives "
                   "their range)")
    p.add_argument("--rtol", type=float, default=d.rtol,
                   help=f"relative error bound of the checks (default: {d.rtol:.0e}, "
                   "kernels/tolerance.py's float32 bound)")
    p.add_argument("--torch-rtol", type=float, default=d.torch_rtol,
                   help=f"the bound for the PyTorch rows (default: {d.torch_rtol:.0e}: TF32 "
                   "is off, so they compute in float32, but cuDNN's autotuned algorithms sum "
                   "in other orders; a C1 weight gradient was 1.9e-5 off on an H100)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the parameters and the random inputs (default: 0)")
    p.add_argument("--quick", action="store_true",
                   help="a short run: batch sizes 1,64,1024, 1 sample of at least 0.05 s, "
                   "no training pass unless --what asks (explicit options win)")
    p.add_argument("--headline-first", action="store_true",
                   help="run the GPU implementations' (gpu, torch-cuda, torch-compile) "
                   "inference rows first, then their training steps, then the per-pattern "
                   "passes, then the rest: the order of bench/gpu_session.sh")
    p.add_argument("--json-only", action="store_true",
                   help="write results.json alone (python -m bench.report --render DIR "
                   "makes results.md and throughput.png from it later)")
    p.add_argument("--rehearse", action="store_true",
                   help="let this project's GPU rows run in the CUDA simulator (for "
                   "bench/gpu_session.sh --rehearse), which must be on: set "
                   "NUMBA_ENABLE_CUDASIM=1 as well (without it gpu needs a GPU, and its "
                   "times are the GPU's). The results say so, and their times "
                   "are the simulator's, not GPU timings")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for the results (default: bench/results/<date>-<device>/, "
                   "or the first of <date>-<device>-2/, -3/, ... that holds no results). An "
                   "--out that already holds results.json, results.md or throughput.png is "
                   "refused, nothing written, unless --force")
    p.add_argument("--force", action="store_true",
                   help="replace the results an --out already holds")
    return p


def config_from(args):
    cfg = suite.Config(impls=args.impl, layers=args.layers, max_cpu_batch=args.max_cpu_batch,
                       layer_batch_sizes=args.layer_batch_sizes,
                       step_batch_sizes=args.step_batch_sizes,
                       max_cpu_pass_images=args.max_cpu_pass_images,
                       pass_batch_sizes=args.pass_batch_sizes, unique_images=args.unique_images,
                       peak_gflops=args.peak_gflops, cpu_peak_gflops=args.cpu_peak_gflops,
                       rtol=args.rtol, torch_rtol=args.torch_rtol, seed=args.seed,
                       paper_mu=args.paper_mu, pattern_pass_images=args.pattern_pass_images,
                       paper_check_patterns=args.paper_check_patterns,
                       headline_first=args.headline_first, rehearse=args.rehearse)
    for key, attr in (("whats", "what"), ("batch_sizes", "batch_sizes"), ("repeats", "repeats"),
                      ("min_time", "min_time"), ("warmup", "warmup"),
                      ("pass_images", "pass_images"), ("pass_repeats", "pass_repeats")):
        value = getattr(args, attr)
        if value is None and args.quick:
            value = QUICK[key]
        if value is not None:
            setattr(cfg, key, value)
    if args.quick:
        cfg.cpu_peak_matmul = QUICK["cpu_peak_matmul"]
    if args.batch_sizes is not None or args.quick:   # one list for every step row
        cfg.inference_batch_sizes = None
    for name in ("repeats", "pass_repeats", "pass_images", "unique_images", "max_cpu_batch",
                 "paper_check_patterns"):
        if getattr(cfg, name) < 1:
            raise suite.SuiteError(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.pattern_pass_images is not None and cfg.pattern_pass_images < 1:
        raise suite.SuiteError("--pattern-pass-images must be at least 1")
    if cfg.max_cpu_pass_images is not None and cfg.max_cpu_pass_images < 0:
        raise suite.SuiteError("--max-cpu-pass-images must not be negative")
    if cfg.seed < 0:
        raise suite.SuiteError(f"--seed must be a whole number of at least 0, not {cfg.seed}")
    for name in ("paper_mu", "rtol", "torch_rtol", "peak_gflops", "cpu_peak_gflops"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise suite.SuiteError(f"--{name.replace('_', '-')} must be a positive number, "
                                   f"not {value}")
    if not (math.isfinite(cfg.min_time) and cfg.min_time >= 0):
        raise suite.SuiteError(f"--min-time must be a number of at least 0, not {cfg.min_time}")
    if cfg.warmup < 0:
        raise suite.SuiteError("--warmup must not be negative")
    return cfg


def log(message):
    print(message, file=sys.stderr, flush=True)


def main(argv=None, prog="python -m bench"):
    """Run the suite with command-line arguments `argv` (default sys.argv[1:]);
    returns the exit status."""
    # a time limit's SIGINT must stop the suite cleanly (results.json kept) even when the
    # parent started it with SIGINT ignored, which Python would keep
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser(prog).parse_args(argv)
    # Numba's advice about small grids at batch size 1: expected here, and noise
    warnings.filterwarnings("ignore", message=".*GPU under-utilization")
    command = f"{prog} " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:   # every option and --out before anything is written
        cfg = config_from(args)
        if args.out is not None:
            outdir.check(args.out, report.FILES, force=args.force)
    except (suite.SuiteError, outdir.OutError) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    runner = suite.Suite(cfg, log)
    out = args.out

    def default_out():
        device = runner.device_name or "cpu-" + machine.cpu_model()
        base = os.path.join(machine.ROOT, "bench", "results",
                            f"{machine.today()}-{machine.slug(device)}")
        return outdir.fresh(base, report.FILES)

    interrupted = False
    try:
        runner.prepare()   # SuiteError here: nothing can run, and nothing was written
        if out is None:
            out = default_out()
        else:   # before the set-up: a kill during it still leaves a results.json
            if not args.json_only:   # --force: an earlier run's pages go, not left beside it
                for name in outdir.held(out, report.FILES):
                    if name != "results.json":
                        os.remove(os.path.join(out, name))
            report.write_json(collect(runner, command, False, False), out)
        runner.setup()
        on_row = (lambda rows: report.write_json(collect(runner, command, False, False),
                                                 out)) if args.out is not None else None
        interrupted = runner.run(on_row=on_row)
    except suite.SuiteError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        log("interrupted during the set-up: writing what there is")
        interrupted = True
    out = out or default_out()
    results = collect(runner, command, interrupted, complete=not interrupted)
    paths = {"results.json": report.write_json(results, out)} if args.json_only \
        else report.write_all(results, out)
    print("results: " + "\n         ".join(paths[k] for k in ("results.md", "results.json",
                                                             "throughput.png") if k in paths))
    if report.unequal_threads(results):
        log(f"note: {report.unequal_threads(results)}: their ratios compare unequal threads")
    stale = [name for name in outdir.held(out, report.FILES) if name not in paths]
    if stale:
        log(f"note: {', '.join(stale)} in {out} are an earlier run's: python -m bench.report "
            f"--render {out} makes them from this run's results.json")
    if interrupted:
        return 130
    return 1 if any(r["status"] in ("FAILED", "ERROR") for r in runner.rows) else 0


def collect(runner, command, interrupted, complete=True):
    """Everything about the run, JSON-ready (also mid-run, or before the set-up ends)."""
    from dataclasses import asdict
    commit, dirty = machine.git_commit()
    gpu_peak, gpu_source = runner.peak["gpu"]
    cpu_peak, cpu_source = runner.peak["cpu"]
    implementations = {name: {"status": "ran", **info} for name, info in runner.info.items()}
    implementations.update({name: {"status": "not run", "kind": impls.KIND[name],
                                   "reason": reason}
                            for name, reason in runner.unavailable.items()})
    return {
        "schema": "lenet5-bench/1",
        "date": machine.now(),
        "command": command,
        "commit": commit,
        "dirty": dirty,
        "machine": machine.describe_machine(),
        "device": {"name": runner.device_name, "peak_gflops": gpu_peak,
                   "peak_source": gpu_source},
        "cpu": {"peak_gflops": cpu_peak, "peak_source": cpu_source,
                "peak_samples_gflops": runner.cpu_peak_samples},
        "versions": machine.versions(),
        "implementations": implementations,
        "settings": asdict(runner.cfg),
        "flops_per_image": {**{layer: flops.flops(layer)
                               for layer in flops.LAYERS + flops.STAGES},
                            "forward": flops.forward_flops(),
                            "train_step": flops.train_flops()},
        "connections_per_image": {layer: flops.connections(layer) for layer in flops.LAYERS},
        "napkin": flops.napkin_lines(),
        "interrupted": interrupted,
        "complete": complete,
        "rehearsal": runner.cfg.rehearse,
        "not_offered": runner.not_offered,
        "method": report.method(asdict(runner.cfg)),
        "rows": runner.rows,
    }
