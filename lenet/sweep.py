"""Sweeps (`lenet sweep`): many independent runs of the per-pattern recipes (paper, lecun)
side by side, each bit for bit what `lenet.train.train` does with its settings. sweep_runs
reads and checks the runs' settings; sweep trains them, their parameters, step sizes and
orders in (runs, ...) arrays that one launch a chunk steps together (the backend's
sdlm_runs). What 64 runs cost against one: bench/results/2026-12-02-train-census/.
Tested by tests/test_sweep.py and tests/test_cli_sweep.py.
"""

import os
import time
import warnings

import numpy as np

from lenet.checkpoint import check_description
from lenet.datasets import DIGITS
from lenet.kernels.architecture import IN_LEN, LOSS_KINDS, PARAMETERS_LEN
from lenet.logs import check_outputs, save_pass
from lenet.model import INITS, LOSSES, LeNet5, finite
from lenet.progress import Progress
from lenet.train import (
    FUSED_CHUNK,
    HESSIAN_SAMPLES,
    PER_PATTERN,
    SCHEDULES,
    RecipeInitWarning,
    Trainer,
    check_epochs,
    check_set,
    default_settings,
    divergence,
    pass_line,
    pass_record,
)


class _SideBySide:
    """The per-pattern passes of several Trainers in one launch per chunk: their
    parameters, step sizes, orders and totals side by side in (runs, ...) arrays, their
    training sets (one shared, each distorting run's own) stacked (the backend's
    sdlm_runs: one GPU block, or one CPU core at a time, a run)."""

    def __init__(self, trainers, data):
        self.trainers, ops, n, r = trainers, trainers[0].ops, trainers[0].n, len(trainers)
        self.ops, self.n, self.labels = ops, n, data[1]
        self.params = ops.empty((r, PARAMETERS_LEN))
        self.rates = ops.empty((r, PARAMETERS_LEN))
        self.stats = ops.asarray(np.zeros((r, 2)), dtype=np.float64)
        self.order = ops.asarray(np.zeros((r, n), np.int32), dtype=np.int32)
        distorting = [i for i, t in enumerate(trainers) if t.distort]
        self.sets = ops.empty((1 + len(distorting), n, IN_LEN))  # set 0: the images as they are
        ops.copy(self.sets[0], data[0].reshape(n, IN_LEN))
        image_set = np.zeros(r, np.int32)
        for k, i in enumerate(distorting):
            trainers[i].distorted = self.sets[1 + k].reshape(n, 1, 32, 32)
            image_set[i] = 1 + k
        self.image_set = ops.asarray(image_set, dtype=np.int32)
        self.kinds = ops.asarray([LOSS_KINDS[t.loss] for t in trainers], dtype=np.int32)
        self.js = ops.asarray([t.j for t in trainers])

    def train_pass(self, bar):
        """One pass of every run; returns their (mean loss, running error rate)."""
        ops, model = self.ops, self.trainers[0].model
        for r, t in enumerate(self.trainers):
            _, order, _ = t.begin_pass()
            ops.copy(self.params[r], t.model.flat_params)
            ops.copy(self.rates[r], t.rates.flat)
            ops.copy(self.order[r], order)
        ops.fill(self.stats, 0.0)
        for start in range(0, self.n, FUSED_CHUNK):
            count = min(FUSED_CHUNK, self.n - start)
            ops.sdlm_runs(self.params, self.rates, self.stats, self.sets, self.image_set,
                          self.labels, self.order, start, count, self.kinds, self.js,
                          model.centers, model.tables["C3"])
            bar.advance(count)
        results = []
        for r, t in enumerate(self.trainers):
            ops.copy(t.model.flat_params, self.params[r])
            ops.copy(t.stats, self.stats[r])
            results.append(t.end_pass())
        return results


MAX_NAME = 200   # bytes of a run's name: NAME.log.jsonl within a file system's 255
SWEEP_KEYS = ("name", "recipe", "seed", "init", "mu", "loss", "j", "schedule", "shuffle",
              "hessian_sample", "distort")


def sweep_runs(spec):
    """The runs of a sweep: `spec` is a list of run settings (dicts of SWEEP_KEYS), or
    {"base": settings, "grid": {key: [values, ...], ...}}, every combination of the grid's
    values over the base (named key=value,...). Each run gets a "name" (run0, run1, ... if
    not given). Every setting is checked as `lenet train` checks its option (type and
    range, `sweep_setting_error`): ValueError, one line naming the run and the setting,
    for a wrong one, an unknown key, a duplicate name or an empty sweep."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"base", "grid"})
        if unknown:
            raise ValueError(f"sweep: unknown key {unknown[0]!r} (expected 'base' and 'grid')")
        base, grid = spec.get("base", {}), spec.get("grid", {})
        for key, value in (("base", base), ("grid", grid)):
            if not isinstance(value, dict):
                raise ValueError(f"sweep: {key!r} must be an object of settings, not "
                                 f"{value!r}")
        runs = [dict(base)]
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"sweep: grid {key!r} must be a non-empty list of values")
            runs = [dict(run, **{key: v}) for run in runs for v in values]
        if grid:
            for run in runs:
                run.setdefault("name", ",".join(f"{k}={run[k]}" for k in grid))
    elif isinstance(spec, list):
        bad = [i for i, run in enumerate(spec) if not isinstance(run, dict)]
        if bad:
            raise ValueError(f"sweep: run {bad[0]} must be an object of settings, not "
                             f"{spec[bad[0]]!r}")
        runs = [dict(run) for run in spec]
    else:
        raise ValueError(f"sweep: expected a list of runs or {{'base', 'grid'}}, not "
                         f"{type(spec).__name__}")
    if not runs:
        raise ValueError("sweep: no runs")
    for i, run in enumerate(runs):
        unknown = sorted(set(run) - set(SWEEP_KEYS), key=str)
        if unknown:
            raise ValueError(f"sweep: run {i} has unknown setting {unknown[0]!r} (known: "
                             f"{', '.join(SWEEP_KEYS)})")
        run.setdefault("name", f"run{i}")
        name = run["name"]
        if not isinstance(name, str) or not name or name.startswith(".") or "/" in name \
                or os.sep in name or "\0" in name or len(name.encode()) > MAX_NAME:
            raise ValueError(f"sweep: run name {name!r} cannot be a file name (its checkpoint "
                             f"and log are NAME.npz and NAME.log.jsonl; at most {MAX_NAME} "
                             "bytes)")
        if run.setdefault("recipe", "lecun") not in PER_PATTERN:
            raise ValueError(f"sweep: run {name}: recipe {run['recipe']!r}; a sweep "
                             f"runs the per-pattern recipes {PER_PATTERN}")
        for key in SWEEP_KEYS[2:]:
            error = sweep_setting_error(key, run[key]) if key in run else None
            if error:
                raise ValueError(f"sweep: run {name}: {error}")
    names = [run["name"] for run in runs]
    twice = sorted(name for name in names if names.count(name) > 1)
    if twice:
        raise ValueError(f"sweep: two runs are named {twice[0]!r}")
    return runs


def sweep_setting_error(key, value):
    """What is wrong with a sweep run's setting `key` = `value` (one phrase), or None.
    The rules are lenet train's for its options --seed, --init, --mu, --loss, --schedule,
    --hessian-sample, --ordered and --distort (type, range, the choices from the same
    tables; `lenet sweep` also passes each run through train's own parser) and, for j,
    the MAP loss's constant: a positive number. null (None) means the recipe's default
    where train's option has one (init, mu, loss, schedule)."""

    def number(v):
        return isinstance(v, (int, float, np.integer, np.floating)) \
            and not isinstance(v, (bool, np.bool_))

    if value is None and key in ("init", "mu", "loss", "schedule"):
        return None
    choices = {"init": INITS, "loss": LOSSES, "schedule": tuple(SCHEDULES),
               "hessian_sample": HESSIAN_SAMPLES}
    if key in choices:
        ok, want = isinstance(value, str) and value in choices[key], \
            f"one of {', '.join(choices[key])}"
    elif key == "seed":
        ok = isinstance(value, (int, np.integer)) and number(value) and value >= 0
        want = "a whole number of 0 or more"
    elif key in ("mu", "j"):
        ok = number(value) and finite(value) and value > 0
        want = "a positive number"
    elif key in ("shuffle", "distort"):
        ok, want = isinstance(value, (bool, np.bool_)), "true or false"
    else:
        raise ValueError(f"sweep: no rule for setting {key!r}")
    return None if ok else f"{key} must be {want}, not {value!r}"


def sweep(runs, train_set, test_set, epochs=None, device="auto", out_dir=None, progress=True,
          evaluate_train=True, out=print, classes=None, dataset=None):
    """Train the runs of sweep_runs(runs) side by side, each with its own model, random
    streams, curvature estimate, order and distortions. After each pass every run's
    errors are printed and, with out_dir, its checkpoint NAME.npz and log NAME.log.jsonl
    (lenet train's format) written there; classes and dataset go into the checkpoints;
    device: as LeNet5's. Returns {name: [per-pass records]}."""
    runs = sweep_runs(runs)
    epochs = check_epochs(epochs, runs[0]["recipe"])
    if test_set is None:
        raise ValueError("no test set: a sweep measures every run on one")
    check_description({"classes": DIGITS if classes is None else list(classes),
                       "dataset": dataset})    # what the checkpoints will say, before a pass
    files = {}
    if out_dir:
        for run in runs:
            files[run["name"]] = (os.path.join(out_dir, f"{run['name']}.npz"),
                                  os.path.join(out_dir, f"{run['name']}.log.jsonl"))
            check_outputs(*files[run["name"]], made=True)    # out_dir is made below
    trainers, data = [], None
    for run in runs:
        model = LeNet5(device=device, seed=run.get("seed", 0),
                       init=run.get("init") or default_settings(run["recipe"])["init"])
        model.dataset = dataset
        if classes is not None:
            model.classes = tuple(classes)
        if data is None:   # the training set on the backend once, for every run
            check_set(model, test_set, "test")
            data = (model.prepare_images(train_set[0]),
                    model.prepare_labels(train_set[1], len(train_set[1])))
        # the run's settings are Trainer's arguments (None: the recipe's default); its
        # model has the init it names, or its recipe's
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RecipeInitWarning)
            trainers.append(Trainer(model, *data, **{k: v for k, v in run.items()
                                                     if k not in ("name", "init")}))
    if out_dir:   # once the runs can be made (a GPU asked for may be missing)
        os.makedirs(out_dir, exist_ok=True)
    n, r_count = trainers[0].n, len(trainers)
    side_by_side = _SideBySide(trainers, data)
    out(f"sweep of {r_count} run{'s' if r_count > 1 else ''} of the per-pattern recipe on "
        f"{trainers[0].model.device}, {epochs} passes, {n} patterns")
    records = {run["name"]: [] for run in runs}
    diverged = set()   # runs stopped: their files keep their last finite pass
    for epoch in range(epochs):
        started = time.perf_counter()
        bar = Progress(n, f"pass {epoch + 1}/{epochs}", enabled=progress)
        steps = [t.step_size() for t in trainers]
        results = side_by_side.train_pass(bar)
        bar.close()
        seconds = time.perf_counter() - started
        for run, t, step, result in zip(runs, trainers, steps, results, strict=True):
            name = run["name"]
            if name in diverged:
                continue
            reason = divergence(t, result)
            if reason:
                diverged.add(name)
                out(f"{name}: {reason}; its files keep pass {epoch}" if out_dir and epoch
                    else f"{name}: {reason}")
                continue
            record = pass_record(t, epoch, step, result, seconds, (data[0], train_set[1]),
                                  test_set, progress, evaluate_train)
            record["sweep"] = {"run": name, "runs": r_count}
            records[name].append(record)
            out(pass_line(record, name))
            if out_dir:
                save_pass(t.model, *files[name], record, first=epoch == 0)
    return records
