"""Training recipes for LeNet-5, on whichever backend the model runs on.

    paper       stochastic diagonal Levenberg-Marquardt as the paper gives it: before
                each pass the Gauss-Newton diagonal h_kk is estimated on 500 patterns;
                each parameter steps by eta / (mu + h_kk) times its gradient after every
                pattern, mu = 0.02, eta on the paper's schedule over 20 passes
    lecun       the same from LeCun's own code's initialisation ("lush"), with the MAP
                loss (paper eq. 9) and mu = LECUN_MU: our choices, which reproduced the
                paper's figures (docs/reproduction.md)
    sdlm-batch  the same on mini-batches of B (ours): SDLM_BATCH_SCALE * sqrt(B) times
                the paper's steps, on the batch's mean loss (why: docs/recipes.md)
    sgd         mini-batch SGD with momentum on the batch's mean loss

Trainer runs the passes on the backend's fused kernels (per-pattern steps: one launch a
chunk; mini-batch steps and the curvature: the fused step of ops.workspace), with the
training set held on the backend and only the printed figures read back; `train` runs a
whole training, writing the checkpoint and a JSON line of the log after every pass.
Tested against tests/trainer_ref.py (float64) by tests/test_train.py, test_cpu.py and
test_gpu_model.py.
"""

import math
import numbers
import os
import sys
import time
import warnings

import numpy as np

from lenet.kernels.architecture import LOSS_KINDS, MAP_J, STEP_MODES
from lenet.logs import check_outputs, save_pass
from lenet.model import check_loss, check_seed, finite
from lenet.progress import Progress

PER_PATTERN = ("paper", "lecun")  # the recipes that update after every pattern
SDLM_MU = 0.02
LECUN_MU = 2.0  # lecun's mu, schedule and loss: docs/reproduction.md
LECUN_SCHEDULE = "paper"
LECUN_LOSS = "map"
SDLM_HESSIAN_PATTERNS = 500
SDLM_BATCH_SCALE = 0.1
FUSED_CHUNK = 2000  # patterns per launch of the fused paper-recipe kernel


# eta of the SDLM recipes per pass: (passes before which it holds, eta), in order.
# "paper" is the paper's; "paper-floor" keeps its 5e-5 from pass 9 on instead of
# dropping to 1e-5 at pass 13 (late steps 5x larger; docs/reproduction.md).
SCHEDULES = {
    "paper": ((2, 5e-4), (5, 2e-4), (8, 1e-4), (12, 5e-5), (None, 1e-5)),
    "paper-floor": ((2, 5e-4), (5, 2e-4), (8, 1e-4), (None, 5e-5)),
}
# which patterns the curvature is estimated on before each pass: 500 drawn at random,
# or the 500 the pass shows first (as Lush's compute-diaghessian reads the next ones)
HESSIAN_SAMPLES = ("random", "consecutive")


def paper_eta(pass_index, schedule="paper"):
    """The global step size eta for pass `pass_index` (0-based) under `schedule`
    (SCHEDULES; "paper" is the paper's)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {tuple(SCHEDULES)}, not {schedule!r}")
    for last_pass, eta in SCHEDULES[schedule]:
        if last_pass is None or pass_index < last_pass:
            return eta


# What each recipe uses unless told (init: lenet.model.init_parameters's).
SETTINGS = ("epochs", "batch_size", "lr", "mu", "schedule", "init", "loss")
DEFAULTS = {recipe: dict(zip(SETTINGS, row, strict=True)) for recipe, row in {
    "paper":      (20, 1, None, SDLM_MU, "paper", "fan-in", "mse"),
    "lecun":      (20, 1, None, LECUN_MU, LECUN_SCHEDULE, "lush", LECUN_LOSS),
    "sdlm-batch": (20, 16, None, SDLM_MU, "paper", "fan-in", "mse"),
    "sgd":        (10, 32, 2e-3, None, None, "fan-in", "mse"),
}.items()}
RECIPES = tuple(DEFAULTS)
SGD_MOMENTUM = 0.9      # sgd's unless told


def default_settings(recipe):
    """A copy of DEFAULTS[recipe]: epochs, batch size, step size, mu, eta schedule,
    initialisation and loss; ValueError for an unknown recipe."""
    if recipe not in DEFAULTS:
        raise ValueError(f"recipe must be one of {RECIPES}, not {recipe!r}")
    return dict(DEFAULTS[recipe])


class RecipeInitWarning(UserWarning):
    """A new model made with another initialisation than its recipe's (DEFAULTS)."""


def _callers_stacklevel():
    """warnings.warn's stacklevel, for its caller, of the first frame outside lenet/: a
    warning names the user's line, through train() or Trainer alike."""
    package, frame, level = os.path.dirname(__file__), sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


class Trainer:
    """Runs passes of one recipe over a training set held on the model's backend.

    velocity, hessian, grads and rates are FlatBuffers (named views of one flat array);
    the parameters are the model's. A pass is begin_pass(), steps (step() for
    mini-batches), end_pass(); train_pass() does all three.
    """

    def __init__(self, model, images, labels, recipe="sgd", batch_size=None, lr=None,
                 momentum=None, loss=None, j=MAP_J, seed=0, mu=None, schedule=None,
                 shuffle=True, hessian_sample="random", distort=False):
        settings = default_settings(recipe)
        made = model.provenance or {}
        if set(made) == {"init", "seed"} and made["init"] != settings["init"]:
            warnings.warn(f"the {recipe} recipe starts from init {settings['init']!r}, this "
                          f"model from {made['init']!r}: make it with "
                          f"LeNet5(init={settings['init']!r}) for the recipe as documented",
                          RecipeInitWarning, stacklevel=_callers_stacklevel())
        self.model, self.ops = model, model.ops
        loss = settings["loss"] if loss is None else loss
        self.recipe, self.loss, self.j = recipe, loss, j
        self.batch_size = settings["batch_size"] if batch_size is None else batch_size
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch size must be a whole number of at least 1, not "
                             f"{self.batch_size}")
        self.batch_size = int(self.batch_size)
        if recipe in PER_PATTERN and self.batch_size != 1:
            raise ValueError("the paper's recipe updates after every pattern (batch size 1); "
                             "use the sdlm-batch recipe (--recipe sdlm-batch) for mini-batches")
        if lr is not None and recipe != "sgd":
            raise ValueError(f"lr is sgd's step size; the {recipe} recipe follows the "
                             "paper's schedule of eta (schedule, mu)")
        if momentum is not None and recipe != "sgd":
            raise ValueError(f"momentum is sgd's; the {recipe} recipe takes none")
        if mu is not None and recipe == "sgd":
            raise ValueError("mu belongs to the SDLM recipes (eta / (mu + h)); sgd takes a "
                             "step size lr")
        self.lr = settings["lr"] if lr is None else lr
        self.momentum = momentum = SGD_MOMENTUM if momentum is None else momentum
        mu = settings["mu"] if mu is None else mu
        for name, value in (("lr", self.lr), ("momentum", momentum), ("mu", mu)):
            if value is not None and not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number, not {type(value).__name__}")
        if recipe == "sgd" and not (finite(self.lr) and self.lr > 0):
            raise ValueError(f"the step size lr must be a positive number, not {self.lr}")
        if not (finite(momentum) and 0 <= momentum < 1):
            raise ValueError(f"momentum must lie in [0, 1), not {momentum}")
        if mu is not None and not (finite(mu) and mu > 0):
            raise ValueError(f"mu must be a positive number, not {mu}")
        # plain Python numbers, so that logs and checkpoints write them (not NumPy's)
        self.lr, self.momentum = None if self.lr is None else float(self.lr), float(momentum)
        self.mu = None if mu is None else float(mu)
        if recipe == "sgd" and (schedule is not None or hessian_sample != "random"):
            raise ValueError("schedule and hessian_sample belong to the SDLM recipes, not sgd")
        for name, value in (("shuffle", shuffle), ("distort", distort)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, not {value!r}")
        shuffle, distort = bool(shuffle), bool(distort)
        schedule = settings["schedule"] if schedule is None else schedule
        if recipe != "sgd":
            paper_eta(0, schedule)  # refuses an unknown schedule
        if hessian_sample not in HESSIAN_SAMPLES:
            raise ValueError(f"hessian_sample must be one of {HESSIAN_SAMPLES}, not "
                             f"{hessian_sample!r}")
        self.schedule, self.shuffle, self.hessian_sample = schedule, shuffle, hessian_sample
        check_loss(loss, j)
        self.j = float(j)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = model.prepare_images(images)
        self.n = self.images.shape[0]
        if self.n == 0:
            raise ValueError("no training images: the training set is empty")
        self.batch_size = min(self.batch_size, self.n)   # what each update averages
        # paper: eta itself, per pattern; sdlm-batch: see the module docstring
        self.sdlm_factor = 1.0 if recipe in PER_PATTERN else \
            SDLM_BATCH_SCALE * float(np.sqrt(self.batch_size))
        self.labels = model.prepare_labels(labels, self.n)
        self.seed = None if check_seed(seed) is None else int(seed)
        self.rng = np.random.default_rng(seed)
        # distortions draw from their own stream: runs without them stay as they were
        self.distort = distort
        self.distort_rng = np.random.default_rng(None if seed is None else [seed, 1]) \
            if distort else None
        self.distorted = None       # the distorted training set, allocated on first use
        ops = self.ops
        self.velocity, self.hessian = ops.parameter_buffer(), ops.parameter_buffer()
        self.grads, self.rates = ops.parameter_buffer(), ops.parameter_buffer()
        self.stats = ops.asarray(np.zeros(2, np.float64), dtype=np.float64)
        self.pass_index = 0
        self.start = model.provenance    # what the parameters were before this training
        self.workspace = None if recipe in PER_PATTERN else ops.workspace(self.batch_size)
        # the fused step's int32 codes, made once
        self._codes = {"kind": np.int32(LOSS_KINDS[loss]),
                       "store": np.int32(STEP_MODES["store"]),
                       "update": np.int32(STEP_MODES["sgd" if recipe == "sgd" else "sdlm"]),
                       1: np.int32(1), 2: np.int32(2)}
        self._pass = None       # (the pass's images as (N, 1024), step size, order): step()
        self._last = 0          # the last step's image count

    def step_size(self):
        """The global step of the coming pass: sgd's lr, or the paper's eta for
        this pass times the recipe's factor (1 for paper, 0.1 sqrt(B) for sdlm-batch)."""
        if self.recipe == "sgd":
            return self.lr
        return paper_eta(self.pass_index, self.schedule) * self.sdlm_factor

    def estimate_hessian(self, index=None, images=None):
        """h_kk: the Gauss-Newton diagonal averaged over the patterns `index` (indices of
        the training set, default: 500 drawn at random) of `images` (default: the training
        set), into self.hessian."""
        if index is None:
            index = self.rng.choice(self.n, min(SDLM_HESSIAN_PATTERNS, self.n), replace=False)
        else:
            index = np.asarray(index)
            if index.ndim != 1 or not len(index) or index.dtype.kind not in "iu" or \
                    index.min() < 0 or index.max() >= self.n:
                raise ValueError(f"index must hold 1 or more whole numbers in "
                                 f"0..{self.n - 1} (training patterns)")
        images = self.images if images is None else images
        index = self.ops.asarray(index, dtype=np.int32)
        c = self._codes
        ws = self.ops.workspace(index.shape[0])
        ws.step(self.model.flat_params, self.hessian.flat, self.velocity.flat,
                self.rates.flat, ws.scratch_stats, images.reshape(self.n, -1), self.labels,
                index, 0, index.shape[0], c["kind"], self.j, c[2], c["store"], 0.0, 0.0)

    def train_pass(self, progress=None):
        """One pass over the training set; returns (mean loss, running error rate). The
        paper's per-pattern steps run through the backend's fused kernel in chunks of
        FUSED_CHUNK patterns between progress updates, mini-batches one step each."""
        images, order, _ = self.begin_pass()
        per_pattern = self.recipe in PER_PATTERN
        chunk = FUSED_CHUNK if per_pattern else self.batch_size
        for start in range(0, self.n, chunk):
            count = min(chunk, self.n - start)
            if per_pattern:
                self.ops.sdlm_steps(self.model.parameter_buffer, self.rates, self.stats,
                                    images, self.labels, order, start, count, self.loss,
                                    self.j, self.model.centers, self.model.tables["C3"])
            else:
                self._step(order, start, count)
            if progress is not None:
                seen = start + count
                progress.advance(count, lambda seen=seen: self._running(seen))
        return self.end_pass()

    def begin_pass(self):
        """Everything a pass needs before its first step: the pass's images (distorted
        anew if asked), for the SDLM recipes the curvature estimate and the step sizes,
        the order of the patterns (on the backend), the running totals zeroed. Returns
        (images, order, step size)."""
        ops = self.ops
        if self.pass_index == 0:   # (set_parameters may have come since)
            self.start = self.model.provenance
        self.model.provenance = self.provenance()
        images = self._pass_images()
        sdlm = self.recipe != "sgd"
        if sdlm and self.hessian_sample == "random":
            self.estimate_hessian(images=images)
        step = self.step_size()
        order = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        if sdlm and self.hessian_sample == "consecutive":
            self.estimate_hessian(order[:SDLM_HESSIAN_PATTERNS], images)
        order = ops.asarray(order, dtype=np.int32)
        ops.fill(self.stats, 0.0)
        if sdlm:       # eta / (mu + h) once per pass
            ops.sdlm_rates(self.rates, self.hessian, step, self.mu)
        self._pass = (images.reshape(self.n, -1), step, order)
        return images, order, step

    def step(self, order, start, count):
        """One mini-batch step on the patterns order[start:start + count] of this pass's
        images, through the fused step: after begin_pass, whose order it takes."""
        if self._pass is None or self.workspace is None:
            raise ValueError("step: begin_pass first (and a recipe of mini-batches)")
        if order is not self._pass[2]:
            raise ValueError("step: order must be the one begin_pass returned")
        if not 0 < count <= self.workspace.batch or not 0 <= start <= self.n - count:
            raise ValueError(f"step: patterns {start}..{start + count} are not a batch of at "
                             f"most {self.workspace.batch} among the pass's {self.n}")
        self._step(order, start, count)

    def _step(self, order, start, count):
        flat_images, step, _ = self._pass
        c = self._codes
        self.workspace.step(self.model.flat_params, self.grads.flat, self.velocity.flat,
                            self.rates.flat, self.stats, flat_images, self.labels, order,
                            start, count, c["kind"], self.j, c[1], c["update"], step,
                            self.momentum)
        self._last = count

    def step_outputs(self):
        """The last step's per-pattern losses ("loss"), gradients ("grad.<name>") and
        velocities ("velocity.<name>"), on the host (bench/ checks a step with them)."""
        to_host = self.ops.to_host
        out = {"loss": self.workspace.losses(self._last)}
        out.update({f"grad.{k}": to_host(g) for k, g in self.grads.views.items()})
        out.update({f"velocity.{k}": to_host(v) for k, v in self.velocity.views.items()})
        return out

    def provenance(self):
        """How this training has made the model's parameters (a JSON object): the
        settings, the passes done, the patterns, and what it started from."""
        sdlm = self.recipe != "sgd"
        return {"start": self.start, "recipe": self.recipe, "loss": self.loss,
                "j": float(self.j) if self.loss == "map" else None,
                "batch_size": self.batch_size,
                "lr": None if sdlm else float(self.lr),
                "momentum": None if sdlm else float(self.momentum),
                "mu": float(self.mu) if sdlm else None,
                "schedule": self.schedule if sdlm else None,
                "hessian_sample": self.hessian_sample if sdlm else None,
                "shuffle": self.shuffle, "distort": self.distort,
                "seed": None if self.seed is None else int(self.seed),
                "patterns": self.n, "passes": self.pass_index, "device": self.model.device}

    def end_pass(self):
        """(mean loss, running error rate) of the pass just done."""
        self.pass_index += 1
        self.model.provenance = self.provenance()
        loss_sum, errors = self.ops.to_host(self.stats)
        return loss_sum / self.n, errors / self.n

    def _pass_images(self):
        """The training images of the coming pass: with distortions, every pattern
        distorted anew (kernels/distort.py) into a buffer on the backend."""
        if not self.distort:
            return self.images
        from lenet.kernels.distort import draw_distortions
        if self.distorted is None:
            self.distorted = self.ops.empty(self.images.shape)
        params = self.ops.asarray(draw_distortions(self.distort_rng, self.n))
        self.ops.distort(self.distorted, self.images, params)
        return self.distorted

    def _running(self, seen):
        loss_sum, errors = self.ops.to_host(self.stats)
        return f"loss {loss_sum / seen:.3f} err {100 * errors / seen:.2f}%"


class Diverged(ArithmeticError):
    """A pass ended with a loss or parameters that are not finite: training cannot go on."""


def divergence(trainer, result):
    """The one-line reason why the pass just done (its `result`) diverged, or None."""
    loss = result[0]
    finite = bool(np.isfinite(trainer.ops.to_host(trainer.model.flat_params)).all())
    if math.isfinite(loss) and finite:
        return None
    hint = "a smaller lr" if trainer.recipe == "sgd" else "a larger mu"
    what = "" if finite else ", parameters no longer all finite"
    return f"pass {trainer.pass_index} diverged: loss {loss}{what}; try {hint}"


def check_set(model, pair, what):
    """ValueError or TypeError naming the `what` set unless its (images, labels) fit."""
    images, labels = pair
    try:
        model.host_labels(labels, len(model.check_encoding(model.check_images(images))))
    except (ValueError, TypeError) as e:
        raise type(e)(f"the {what} set: {e}") from None
    if len(labels) == 0:
        raise ValueError(f"no {what} images: the {what} set is empty")


def penalties(model, images, progress=None):
    """Penalties (N,10) of `images` on the host, from model.forward on chunks of
    model.max_batch images (the chunks forward makes itself, so the figures are the
    same as one call's), advancing the Progress `progress` after each chunk."""
    n = len(images)
    out = np.empty((n, 10), model.dtype)
    for start in range(0, n, model.max_batch):
        chunk = images[start:start + model.max_batch]
        out[start:start + len(chunk)] = model.ops.to_host(model.forward(chunk))
        if progress is not None:
            progress.advance(len(chunk))
    return out


def error_rate(model, images, labels, progress=None):
    """Fraction of images whose predicted class differs from the label."""
    if len(images) == 0:
        raise ValueError("no images to evaluate: the set is empty")
    labels = model.host_labels(labels, len(images))
    return float(np.mean(penalties(model, images, progress).argmin(axis=1) != labels))


def evaluate(model, images, labels, what, enabled=True):
    """error_rate with a progress bar "`what` error" (shown if `enabled`), erased after."""
    bar = Progress(len(labels), f"{what} error", enabled=enabled)
    try:
        return error_rate(model, images, labels, bar)
    finally:
        bar.close(keep=False)


def train(model, train_set, test_set, recipe="sgd", epochs=None, checkpoint=None, log=None,
          progress=True, evaluate_train=True, out=print, validation_set=None, **options):
    """Train `model` in place for `epochs` passes of a Trainer made with `recipe` and
    `options` (its other keyword arguments: batch_size, lr, momentum, loss, j, seed, mu,
    schedule, shuffle, hessian_sample, distort); after each pass print the
    train and test error, save `checkpoint` and write a JSON line to `log` (which
    replaces an older log when the first pass has completed, and is appended to
    after the later ones).

    train_set, test_set and validation_set are (preprocessed images, labels) pairs.
    With validation_set (images held out of the training set, to choose settings on)
    each pass also records "validation_error"; test_set may then be None, so that the
    test set is not looked at (its "test_error" is None). Every set is checked before the
    first pass. A pass that ends with a non-finite loss or parameters (diverged) raises
    Diverged before anything of it is saved; a finite run to 90% error does not. Make the
    model with its recipe's initialisation (default_settings(recipe)["init"]; a new model
    made otherwise gets a RecipeInitWarning). Returns the per-pass records."""
    epochs = check_epochs(epochs, recipe)
    if test_set is None and validation_set is None:
        raise ValueError("no test set and no validation set: nothing to evaluate")
    for what, pair in (("test", test_set), ("validation", validation_set)):
        if pair is not None:
            check_set(model, pair, what)
    check_outputs(checkpoint, log)
    trainer = Trainer(model, *train_set, recipe=recipe, **options)
    out(f"training LeNet-5 on {model.device}: recipe {recipe}, loss {trainer.loss}, "
        f"{epochs} passes, batch size {trainer.batch_size}, {trainer.n} patterns")
    records = []
    for epoch in range(epochs):
        started = time.perf_counter()
        step = trainer.step_size()
        bar = Progress(trainer.n, f"pass {epoch + 1}/{epochs}", enabled=progress)
        result = trainer.train_pass(bar)
        bar.close()
        reason = divergence(trainer, result)
        if reason:
            kept = "" if not checkpoint else f"; {checkpoint} keeps pass {epoch}" if epoch \
                else "; no checkpoint was written"
            raise Diverged(reason + kept)
        seconds = time.perf_counter() - started
        record = pass_record(trainer, epoch, step, result, seconds, train_set, test_set,
                              progress, evaluate_train, validation_set)
        records.append(record)
        out(pass_line(record))
        save_pass(model, checkpoint, log, record, first=epoch == 0)
    return records


def check_epochs(epochs, recipe):
    """`epochs`, or the recipe's default when None; ValueError unless a whole number >= 1."""
    epochs = default_settings(recipe)["epochs"] if epochs is None else epochs
    if not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a whole number of at least 1, not {epochs}")
    return epochs


def pass_record(trainer, epoch, step, result, seconds, train_set, test_set, progress,
                 evaluate_train, validation_set=None):
    """The JSON line of one pass of `trainer` (lenet train's log format); test_set None:
    "test_error" None; with validation_set also "validation_error". The model's
    provenance gets the pass's errors and data set too."""
    model, recipe = trainer.model, trainer.recipe
    train_loss, running_error = result
    record = {"pass": epoch + 1, "recipe": recipe, "loss": trainer.loss, "step_size": step,
              "mu": None if recipe == "sgd" else trainer.mu,
              "train_loss": train_loss, "running_train_error": running_error,
              "train_error": evaluate(model, *train_set, "training", progress)
              if evaluate_train else None,
              "test_error": None if test_set is None
              else evaluate(model, *test_set, "test", progress),
              "test_size": None if test_set is None else len(test_set[1]),
              "seconds": seconds, "patterns_per_second": trainer.n / seconds,
              "device": model.device, "dataset": model.dataset}
    if validation_set is not None:
        record["validation_error"] = evaluate(model, *validation_set, "validation", progress)
        record["validation_size"] = len(validation_set[1])
    if recipe != "sgd":  # the SDLM choices that docs/reproduction.md compares
        record.update(schedule=trainer.schedule, shuffle=trainer.shuffle,
                      hessian_sample=trainer.hessian_sample, distort=trainer.distort)
    start = trainer.start if isinstance(trainer.start, dict) else {}
    record.update(seed=trainer.seed, init=start.get("init"), j=trainer.j
                  if trainer.loss == "map" else None, batch_size=trainer.batch_size)
    model.provenance.update({k: record.get(k) for k in (
        "dataset", "train_error", "test_error", "test_size", "validation_error",
        "validation_size")})
    return record


def pass_line(record, name=None):
    train_err = record["train_error"]
    shown = train_err if train_err is not None else record["running_train_error"]
    return (f"{name + ' ' if name else ''}pass {record['pass']:2d}: loss "
            f"{record['train_loss']:.4f}  train error {100 * shown:.2f}%  "
            + "".join(f"{what} error {100 * record[key]:.2f}%  " for what, key in
                      (("validation", "validation_error"), ("test", "test_error"))
                      if record.get(key) is not None)
            + f"({record['seconds']:.1f} s, {record['patterns_per_second']:.0f} patterns/s)")
