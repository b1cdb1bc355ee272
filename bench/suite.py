"""The benchmark suite: plan the rows, check each against the reference, time it.

A row is one implementation doing one thing at one batch size:

    inference    whole-network forward, images -> penalties
    layer        one layer's forward on its own (C1, S2, C3, S4, C5, F6, RBF)
    train-step   forward, MSE loss, backward, SGD-with-momentum update
    train-pass   one pass of SGD over --pass-images images at a batch size
    paper-pass   one pass of the paper's recipe over --pass-images images: the
                 curvature estimate, then one SDLM step per pattern (batch size
                 1); this project's gpu and cpu only (PyTorch, CuPy: no SDLM)
    pattern-pass PyTorch's counterpart of paper-pass: one SGD pass at batch size 1
                 over --pattern-pass-images images (torch-cpu, torch-cuda), the
                 per-pattern row the paper pass is compared with

Each row is first run once on the benchmark's inputs and compared with the
float64 CPU reference (kernels.tolerance): a mismatch marks it FAILED and it is
not timed; an exception marks it ERROR. Then it is warmed up and timed
(bench.timing). A train-pass row is checked as a train-step at its batch size,
warmed up on a pass over two batches, and timed over whole passes. A paper-pass
row is checked by a pass over PAPER_CHECK_PATTERNS patterns against the same
pass in float64 (every parameter afterwards, the pass's loss and running error),
warmed up on a pass over 2 patterns, and timed over whole passes like train-pass.
A pattern-pass row is checked, warmed up and timed like a train-pass row at batch 1.

The plan runs one implementation after the other; with headline_first (the GPU
session's benchmark) the rows a short session must not lose come first: the GPU
implementations' inference rows, then their training steps, then the per-pattern
passes (see plan). Run(on_row=...) is told after every row, so that the caller can
write the results as they grow.

prepare() creates the implementations and plans the rows before the caller writes
anything: SuiteError when none can run, or no row asked for can (the rows an
implementation lacks are named). setup() then measures the peaks and makes the inputs.
"""

import traceback
from dataclasses import dataclass, field

import numpy as np

from bench import capability, flops, impls, machine, timing
from bench.workload import Workload
from lenet.kernels.tolerance import RELATIVE_ERROR, assert_close, relative_error

WHATS = ("inference", "layers", "train-step", "train-pass", "paper-pass", "pattern-pass")
STEP_WHATS = ("inference", "layers", "train-step")
PASS_WHATS = ("train-pass", "paper-pass", "pattern-pass")
PER_PATTERN = ("paper-pass", "pattern-pass")   # passes at batch size 1
ROW_KIND = {"layers": "layer"}   # --what's name -> the rows' (and impl.whats') kind
ROW_KIND.update({what: what for what in WHATS if what != "layers"})
LAST = ("torch-compile",)   # planned after every other row (see plan)
# headline_first: these implementations' rows of these kinds, in this order, first
HEADLINE_IMPLS = ("gpu", "torch-cuda", "torch-compile")
HEADLINE_WHATS = ("inference", "train-step", "paper-pass", "pattern-pass")   # see plan
PAPER_BATCH = 1     # the paper's recipe steps after every pattern
PAPER_LOSS = "mse"
# A paper-pass row's check is a pass over this many patterns: float32 rounding over
# the sequential per-pattern steps grows, roughly doubling every 4 patterns, so a
# short pass keeps it well under the tolerance.
PAPER_CHECK_PATTERNS = 8
CPU_PEAK_REPEATS = 5   # matmuls that measure the CPU's peak, before and again after the rows


class SuiteError(Exception):
    """Nothing can be run as asked: printed as one line, exit status 2."""


@dataclass
class Config:
    impls: list = field(default_factory=lambda: list(impls.ORDER))
    whats: list = field(default_factory=lambda: list(WHATS))
    layers: list = field(default_factory=lambda: list(flops.STAGES))
    batch_sizes: list = field(default_factory=lambda: [1, 64, 1024, 10000, 60000])
    # inference rows also at a million images (the unique images repeated); None:
    # batch_sizes (as with --batch-sizes or --quick)
    inference_batch_sizes: list = field(
        default_factory=lambda: [1, 64, 1024, 10000, 60000, 1000000])
    layer_batch_sizes: list = None   # the layer rows' batch sizes (None: batch_sizes)
    step_batch_sizes: list = None    # the train-step rows' (None: batch_sizes)
    max_cpu_batch: int = 10000
    max_cpu_pass_images: int = None  # CPU pass rows over more images show as not run
    repeats: int = 3
    min_time: float = 0.5
    warmup: int = 2
    # sgd's batch, then larger ones up to one step per pass; the batch-of-one pass is
    # the paper-pass row
    pass_batch_sizes: list = field(default_factory=lambda: [32, 1024, 60000])
    pass_images: int = 60000
    pattern_pass_images: int = None   # pattern-pass rows' images (None: pass_images)
    pass_repeats: int = 2
    paper_check_patterns: int = PAPER_CHECK_PATTERNS
    headline_first: bool = False      # the GPU session's order (see Suite.plan)
    rehearse: bool = False            # GPU rows in the CUDA simulator (not GPU timings)
    # mu of the paper-pass rows: 1, the README's best setting, keeps the pass finite;
    # the paper's 0.02 diverges from the benchmark's parameters (the paper's 2.4/F
    # init) within a pass (lenet/train.py, README), which would make the timed pass
    # run a saturated network or produce NaN
    paper_mu: float = 1.0
    unique_images: int = 10000
    lr: float = 2e-3
    momentum: float = 0.9
    seed: int = 0
    rtol: float = float(RELATIVE_ERROR[np.dtype(np.float32)])
    # cuDNN's autotuned algorithms (cudnn.benchmark) sum in other orders than a
    # direct float32 sum: a C1 weight gradient was 1.9e-5 off on an H100, TF32 off
    torch_rtol: float = 1e-4
    peak_gflops: float = None
    cpu_peak_gflops: float = None
    cpu_peak_matmul: int = machine.CPU_PEAK_MATMUL


class CheckFailed(Exception):
    """A result that does not match the reference; `error` is its relative error."""

    def __init__(self, message, error=None):
        super().__init__(message)
        self.error = error


def check_close(out, ref, rtol, what):
    """Relative error of out against ref; CheckFailed when over rtol (the shared
    float32 tolerance goes through kernels.tolerance.assert_close itself)."""
    try:
        if rtol == RELATIVE_ERROR[np.dtype(np.float32)]:
            return float(assert_close(out, ref, np.float32, what=what))
        out, ref = np.asarray(out), np.asarray(ref)
        if out.shape != ref.shape:
            raise AssertionError(f"{what}: shape {out.shape}, expected {ref.shape}")
        if not np.all(np.isfinite(out)):
            raise AssertionError(f"{what}: non-finite elements")
        err = relative_error(out, ref)
        if not err <= rtol:
            raise AssertionError(f"{what}: relative error {err:.2e} > {rtol:.0e}")
        return float(err)
    except AssertionError as e:
        out, ref = np.asarray(out), np.asarray(ref)
        err = float(relative_error(out, ref)) if out.shape == ref.shape else None
        raise CheckFailed(str(e), err if err is not None and np.isfinite(err) else None) \
            from None


def expected_step(ref, key, lr):
    """Reference of one output of a training step (see bench.impls)."""
    kind, _, name = key.partition(".")
    if kind == "velocity":
        return -lr * ref[f"grad.{name}"]
    if kind == "momentum":
        return ref[f"grad.{name}"]
    return ref[key]


class Suite:
    def __init__(self, cfg, log):
        self.cfg, self.log = cfg, log
        self.impls, self.unavailable, self.info = {}, {}, {}
        self.rows = []
        self.device_name = None    # until setup has found the GPU
        self.prepared, self.not_offered = False, {}
        self.cpu_peak_samples = []  # GFLOP/s of each matmul that measured the CPU's peak
        self.peak = {"gpu": (None, "setup did not finish"), "cpu": (None, "setup did not finish")}

    # ----------------------------------------------------------------- setup
    def prepare(self):
        """Create the implementations asked for and plan the rows; SuiteError (before
        anything is written or measured) when none of them can run here, or when no
        row asked for can run. Says which rows asked for an implementation lacks."""
        from lenet.model import LeNet5
        self.params = LeNet5(device="cpu", seed=self.cfg.seed).parameters()
        for name in impls.ORDER:
            if name not in self.cfg.impls:
                continue
            self.log(f"setting up {name}")
            try:
                impl = impls.create(name, self.params, rehearse=self.cfg.rehearse)
            except capability.Unavailable as e:
                self.unavailable[name] = str(e)
                self.log(f"{name}: not run: {e}")
                continue
            self.impls[name] = impl
            self.info[name] = {"kind": impl.kind, **impl.info()}
        if not self.impls:
            reasons = "; ".join(f"{k}: {v}" for k, v in self.unavailable.items())
            raise SuiteError(f"none of the implementations asked for can run here ({reasons})")
        self.not_offered = {name: [w for w in self.cfg.whats if ROW_KIND[w] not in impl.whats]
                            for name, impl in self.impls.items()}
        self.not_offered = {k: v for k, v in self.not_offered.items() if v}
        lacking = "; ".join(f"{name} has no {', '.join(whats)} rows"
                            for name, whats in self.not_offered.items())
        if lacking:
            self.log(f"not run: {lacking}")
        plan = self.plan()
        if not plan:
            raise SuiteError(f"nothing to run: {lacking} (--what's help says which "
                             "implementation has which rows)")
        skipped = {self.skip_reason(self.impls[name].kind, what, n) for what, _, n, name in plan}
        if None not in skipped:
            raise SuiteError("nothing to run: every row asked for is a CPU row with a "
                             + " or a ".join(sorted(skipped)))
        names = [v.get("device") for v in self.info.values() if v["kind"] == "gpu"]
        self.device_name = next((d for d in names if d), None)
        self.prepared = True

    def setup(self):
        """prepare() (unless done), then the peaks and the inputs and their references."""
        if not self.prepared:
            self.prepare()
        sizes = [n for what in STEP_WHATS for n in self.batch_sizes(what)]
        if "train-pass" in self.cfg.whats:
            sizes += list(self.cfg.pass_batch_sizes)
        if any(what in self.cfg.whats for what in PASS_WHATS):
            sizes += [self.cfg.pass_images, self.pass_images("pattern-pass")]
        self.peaks()
        self.workload = Workload(self.params, min(self.cfg.unique_images, max(sizes)),
                                 seed=self.cfg.seed, log=self.log)

    def pass_images(self, what):
        """Images in a pass row of `what`."""
        if what == "pattern-pass" and self.cfg.pattern_pass_images is not None:
            return self.cfg.pattern_pass_images
        return self.cfg.pass_images

    def batch_sizes(self, what):
        """The batch sizes of the inference, layers or train-step rows."""
        cfg = self.cfg
        own = {"inference": cfg.inference_batch_sizes, "layers": cfg.layer_batch_sizes,
               "train-step": cfg.step_batch_sizes}.get(what)
        return list(own or cfg.batch_sizes)

    def plan(self):
        """(what, layer, batch, implementation) of every row, one implementation
        after the other (so that one library's threads or caches do not disturb the
        next one's rows), smaller batches first, training passes last, torch.compile's
        rows after every other row (each new batch size costs a compile). With
        headline_first, the HEADLINE_IMPLS' rows of the HEADLINE_WHATS come before
        all others, by kind (every implementation's inference, then training steps,
        then per-pattern passes), torch.compile's last among them (its compiles take
        tens of seconds): a session cut short keeps what matters most."""
        cfg, rows = self.cfg, []
        sizes = {what: self.batch_sizes(what) for what in STEP_WHATS if what in cfg.whats}
        for name, impl in self.impls.items():
            for n in sorted({n for s in sizes.values() for n in s}):
                for what in STEP_WHATS:
                    if what not in sizes or n not in sizes[what]:
                        continue
                    targets = [("layer", layer) for layer in cfg.layers] \
                        if what == "layers" else [(what, None)]
                    rows += [(kind, layer, n, name) for kind, layer in targets
                             if kind in impl.whats]
        # the per-pattern passes first: a run cut short (a device call's time limit) keeps them
        for what in ("paper-pass", "pattern-pass", "train-pass"):
            if what not in cfg.whats:
                continue
            # a batch above the pass's images runs as the whole pass: labelled so, once
            sizes = sorted({min(b, self.pass_images(what)) for b in cfg.pass_batch_sizes}) \
                if what == "train-pass" else [PAPER_BATCH]
            for name, impl in self.impls.items():
                rows += [(what, None, bs, name) for bs in sizes if what in impl.whats]
        rows = [r for r in rows if r[3] not in LAST] + [r for r in rows if r[3] in LAST]
        if not cfg.headline_first:
            return rows

        group = {"inference": 0, "train-step": 1, "paper-pass": 2, "pattern-pass": 2}

        def rank(row):   # torch.compile's headline rows after the eager ones (LAST)
            what, _, _, name = row
            if name in HEADLINE_IMPLS and what in HEADLINE_WHATS:
                return (name in LAST, group[what], HEADLINE_IMPLS.index(name))
            return (2, 0, 0)
        return sorted(rows, key=rank)   # stable: the order above within a rank

    # ------------------------------------------------------------------- run
    def run(self, on_row=None):
        """Run the plan; on_row(rows) after each row. True if interrupted (Ctrl-C, or
        the SIGINT of a time limit): the rows measured so far stand."""
        plan = self.plan()
        self.log(f"{len(plan)} rows to run")
        last, interrupted = None, False
        try:
            for i, (what, layer, n, name) in enumerate(plan, 1):
                if last is not None and (n, name) != last:
                    self.impls[last[1]].release()
                last = (n, name)
                label = f"[{i}/{len(plan)}] {name:<10} {layer or what:<12} N={n:<6}"
                row = self.run_row(self.impls[name], what, layer, n, label)
                self.rows.append(row)
                derive(self.rows, self.peak)
                if on_row is not None:
                    on_row(self.rows)
        except KeyboardInterrupt:
            self.log("interrupted: writing the rows measured so far")
            interrupted = True
        if not interrupted and self.cpu_peak_samples:   # measured: again, after the rows
            try:
                self.peak["cpu"] = self.measure_cpu_peak("after the rows")
            except KeyboardInterrupt:
                self.log("interrupted: writing the rows measured so far")
                interrupted = True
        derive(self.rows, self.peak)
        return interrupted

    def peaks(self):
        """The GPU's float32 peak (given, or a known device's datasheet figure) and the
        CPU's (given, or measured: see measure_cpu_peak)."""
        cfg = self.cfg
        if cfg.peak_gflops is not None:
            gpu = (cfg.peak_gflops, "given with --peak-gflops")
        elif self.device_name:
            gpu = machine.known_gpu_peak(self.device_name)
        else:
            gpu = (None, "no GPU row ran")
        if cfg.cpu_peak_gflops is not None:
            cpu = (cfg.cpu_peak_gflops, "given with --cpu-peak-gflops")
        elif any(v["kind"] == "cpu" for v in self.info.values()):
            cpu = self.measure_cpu_peak("before the rows")
        else:
            cpu = (None, "no CPU row ran")
        self.peak = {"gpu": gpu, "cpu": cpu}
        return self.peak

    def measure_cpu_peak(self, when):
        """(GFLOP/s, how) of the CPU, from every matmul measured so far: the best of
        them. Measured twice, before and after the rows, so that a shared machine's
        other load at one moment does not set the figure; how says the range."""
        n, k = self.cfg.cpu_peak_matmul, CPU_PEAK_REPEATS
        self.log(f"measuring the CPU's float32 peak ({k} {n}^2 matmuls, {when})")
        self.cpu_peak_samples += machine.cpu_matmul_gflops(n, k)
        s = self.cpu_peak_samples
        return max(s), (f"measured: the best of {len(s)} {n}x{n} float32 NumPy matmuls, "
                        f"{k} before the rows{f' and {k} after' if len(s) > k else ''}"
                        f"; they ranged {min(s):,.0f}-{max(s):,.0f} GFLOP/s: other load "
                        "on the machine lowers them")

    def skip_reason(self, kind, what, n):
        """Why a row of an implementation of `kind` is not run (a CPU row over the
        --max-cpu-* limits), or None."""
        cfg = self.cfg
        if kind != "cpu":
            return None
        if what != "paper-pass" and n > cfg.max_cpu_batch:
            return f"batch above --max-cpu-batch {cfg.max_cpu_batch}"
        if what in PASS_WHATS and cfg.max_cpu_pass_images is not None \
                and self.pass_images(what) > cfg.max_cpu_pass_images:
            return f"pass above --max-cpu-pass-images {cfg.max_cpu_pass_images}"
        return None

    def run_row(self, impl, what, layer, n, label):
        cfg = self.cfg
        row = {"impl": impl.name, "kind": impl.kind, "what": what, "layer": layer,
               "batch": n, "images": self.pass_images(what) if what in PASS_WHATS else n,
               "status": "ok", "reason": None, "check_error": None, "samples": []}
        if what == "paper-pass":
            row["mu"] = cfg.paper_mu
        skip = self.skip_reason(impl.kind, what, n)
        if skip:
            row.update(status="skipped", reason=skip)
            return row
        self.log(f"{label} checking")
        rtol = cfg.torch_rtol if impl.name.startswith("torch") else cfg.rtol
        row["rtol"] = rtol
        try:
            impl.reset()
            run, row["check_error"] = self.checked(impl, what, layer, n, rtol)
            if what in PASS_WHATS:
                run.warm_up(run_pass=cfg.warmup > 0)
                last = {}

                def run_pass(p=run):
                    last["result"] = p.run()
                measured = timing.measure(run_pass, impl.sync, cfg.pass_repeats, 0.0, warmup=0)
                loss, error = last["result"]
                row["pass_loss"], row["pass_running_error"] = float(loss), float(error)
                if not np.isfinite(loss):
                    raise CheckFailed(f"the pass's mean loss is {loss}")
            else:
                measured = timing.measure(run, impl.sync, cfg.repeats, cfg.min_time, cfg.warmup)
            row.update(measured)
        except CheckFailed as e:
            row.update(status="FAILED", reason=str(e), samples=[], check_error=e.error)
        except Exception as e:  # an implementation that raises: report, go on
            row.update(status="ERROR", reason=f"{type(e).__name__}: {e}", samples=[])
            self.log(traceback.format_exc().rstrip())
        self.log(f"{label} {describe(row, what)}")
        return row

    def checked(self, impl, what, layer, n, rtol):
        """(the callable to time, largest relative error), after one checked run."""
        w = self.workload
        if what == "paper-pass":
            return self.checked_paper_pass(impl, rtol)
        if what in ("inference", "layer"):
            if what == "layer":
                x = w.layer_input(layer, n)
            else:   # a GPU's batch is repeated on the device, not built on the host
                x = w.device_images(n) if impl.kind == "gpu" else w.images(n)[0]
            run = impl.inference(x) if what == "inference" else impl.layer(layer, x)
            y = run()
            impl.sync()
            ref = w.inference_ref(n) if what == "inference" else w.layer_ref(layer, n)
            return run, check_close(impl.to_host(y), ref, rtol, what=layer or "penalties")
        x, labels = w.images(n)   # train-pass, pattern-pass: checked as a step at their batch
        step = impl.train_step(x, labels, self.cfg.lr, self.cfg.momentum)
        step.run()
        impl.sync()
        outputs, ref = step.outputs(), w.step_ref(n)
        missing = sorted(k for k in ref if k not in outputs)
        if missing:
            raise CheckFailed(f"the step gives no {', '.join(missing)}")
        err = max(check_close(out, expected_step(ref, key, self.cfg.lr), rtol, what=key)
                  for key, out in outputs.items())
        if what == "train-step":
            return step.run, err
        impl.reset()
        images, labels = w.images(self.pass_images(what))
        return impl.train_pass(images, labels, n, self.cfg.lr, self.cfg.momentum,
                               seed=self.cfg.seed), err

    def checked_paper_pass(self, impl, rtol):
        """(the paper pass to time, largest relative error) after a pass of the recipe
        over cfg.paper_check_patterns patterns from the starting parameters, compared
        with the same pass (seed, mu, patterns) in float64: every parameter after
        it, the pass's mean loss and its running error. The model is reset after
        the check, so that the timed passes start from the starting parameters."""
        cfg, w = self.cfg, self.workload
        images, labels = w.images(cfg.pass_images)
        run = impl.paper_pass(images, labels, cfg.paper_mu, seed=cfg.seed, loss=PAPER_LOSS)
        (loss, error), params = run.checked(*w.images(cfg.paper_check_patterns))
        ref = w.paper_ref(cfg.paper_check_patterns, cfg.paper_mu, cfg.seed, PAPER_LOSS)
        missing = sorted(k for k in ref["params"] if k not in params)
        if missing:
            raise CheckFailed(f"the pass gives no {', '.join(missing)}")
        err = max(check_close(params[name], p, rtol, what=name)
                  for name, p in ref["params"].items())
        err = max(err, check_close(np.array([loss]), np.array([ref["loss"]]), rtol,
                                   what="the pass's mean loss"))
        if float(error) != ref["error"]:
            raise CheckFailed(f"the pass's running error is {float(error):.4g}, the "
                              f"reference's {ref['error']:.4g}", err)
        impl.reset()
        return run, err


def describe(row, what):
    if row["status"] != "ok":
        return f"{row['status']}: {row['reason']}"
    s = timing.summarize(row["samples"])
    rate = row["images"] / s["median_s"]
    head = f"{s['median_s']:.3f} s per pass, " if what in PASS_WHATS else ""
    return (f"check ok (rel. err {row['check_error']:.1e}); {head}{rate:,.0f} images/s "
            f"[{row['images'] / s['max_s']:,.0f} - {row['images'] / s['min_s']:,.0f}], "
            f"{s['n_samples']} samples x {row['calls_per_sample']} calls")


def derive(rows, peak):
    """Add median/spread, images/s, GFLOP/s, fraction of peak and speed-ups to the rows."""
    for row in rows:
        if row["status"] != "ok":
            continue
        row.update(timing.summarize(row["samples"]))
        per_image = flops.flops_per_image(row["what"], row["layer"])
        row["flops_per_image"] = per_image
        row["images_per_s"] = row["images"] / row["median_s"]
        row["gflops"] = row["images_per_s"] * per_image / 1e9
        device_peak = peak[row["kind"]][0]
        row["peak_fraction"] = row["gflops"] / device_peak if device_peak else None
    by_key = {(r["what"], r["layer"], r["batch"], r["impl"]): r for r in rows
              if r["status"] == "ok"}
    for row in rows:
        if row["status"] != "ok" or row["kind"] != "gpu":
            continue
        row["speedup"] = {}
        for other in ("cpu", "torch-cpu"):
            base = by_key.get((row["what"], row["layer"], row["batch"], other))
            if base is not None:
                row["speedup"][other] = base["median_s"] / row["median_s"]
    # the paper's pass against PyTorch's per-pattern SGD pass, pattern for pattern
    for row in rows:
        if row["status"] != "ok" or row["what"] != "paper-pass":
            continue
        row["vs_pattern_pass"] = {
            name: row["images_per_s"] / other["images_per_s"]
            for (what, _, _, name), other in by_key.items() if what == "pattern-pass"}
