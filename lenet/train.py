"""Training recipes for LeNet-5, on whichever backend the model runs on.

    paper       stochastic diagonal Levenberg-Marquardt as the paper gives it:
                before each pass the Gauss-Newton diagonal h_kk is estimated on
                500 training patterns and held for the pass; each parameter
                steps by eta / (mu + h_kk) times its gradient, mu = 0.02, after
                every pattern (batch size 1); eta follows the paper's schedule
                over 20 passes. mu is an argument. Measured on MNIST (CPU, README):
                from the paper's initialisation (2.4/F) mu = 0.02 diverges within
                the first 500 patterns (90% error): the low layers' curvature at
                the initial point is 1e-5..1e-4, far below mu, so they step by
                eta/mu times their gradient. From init="sqrt-fan-in" (2.4/sqrt(F))
                mu = 0.02 survives one pass (2.6% test error) and blows up in the
                second (16%), when saturated C5 units' curvature falls to ~5e-5.
                mu = 0.2 trains from either: 1.50% and 1.39% after 20 passes; from
                sqrt-fan-in, mu = 0.5 and 1 reach 1.21% and 1.14%.
    lecun       the paper's recipe as LeCun's own code starts it, with the choices
                that reproduced the paper's figures here (docs/reproduction.md):
                Lush's initialisation (init "lush": lenet.model.init_parameters),
                the MAP loss (LECUN_LOSS, paper eq. 9), mu = LECUN_MU (in our units;
                the paper's diagnostic points to 0.02, which trains worse and
                unstably here) and the paper's eta schedule.
    sdlm-batch  the same on mini-batches of B patterns (ours, not the paper's):
                the step is SDLM_BATCH_SCALE * sqrt(B) * eta / (mu + h_kk) times
                the gradient of the batch's mean loss, eta on the paper's
                schedule. Measured on 3,000 MNIST digits, 2 passes (CPU): the
                paper's eta per pattern diverges (89% test error) while 0.1 eta
                reaches 6%; multiplying by B (B per-pattern steps from one point)
                diverges at B = 16, while 0.1 sqrt(B) eta reaches 13.6% there.
    sgd         mini-batch SGD with momentum on the batch's mean loss.

The per-pattern recipes run their steps in one fused kernel where the backend has one:
on the GPU kernels/sdlm.py instead of ~40 launches a pattern, on the CPU the compiled
loop of kernels/sdlm_cpu.py instead of ~40 NumPy operations (Trainer(fused=False) keeps
the layer-by-layer loop, the reference); everything else goes layer by layer through
the backend's ops. Options of the SDLM recipes: the eta schedule (SCHEDULES), patterns
shuffled or in order, the curvature's patterns (HESSIAN_SAMPLES), and the paper's
random affine distortions drawn anew for every pattern of every pass
(kernels/distort.py; with 10% of patterns left as they are).

On the CPU, passes over batches of up to 64 run with BLAS on one thread
(lenet.ops_cpu.SINGLE_THREAD_BATCH: within 8% of two threads on an idle 2-core
machine, 2.2x faster with its other core busy).

The training set lives on the backend (on the GPU: uploaded once). Each pass
shuffles with a seeded host permutation (one index array per pass is the only
upload), gathers batches with the backend's gather op, and accumulates loss and
error counts on the backend; the host reads back only the figures it prints.
"""

import json
import os
import time

import numpy as np

from kernels.reference import MAP_J
from lenet.progress import Progress

RECIPES = ("paper", "lecun", "sdlm-batch", "sgd")
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


def default_settings(recipe):
    """Epochs, batch size, step size, mu, eta schedule and initialisation (the model's:
    lenet.model.init_parameters) that each recipe uses unless told."""
    sdlm = {"lr": None, "mu": SDLM_MU, "schedule": "paper", "init": "fan-in", "loss": "mse"}
    if recipe == "paper":
        return {"epochs": 20, "batch_size": 1, **sdlm}
    if recipe == "lecun":
        return {"epochs": 20, "batch_size": 1, "lr": None, "mu": LECUN_MU,
                "schedule": LECUN_SCHEDULE, "init": "lush", "loss": LECUN_LOSS}
    if recipe == "sdlm-batch":
        return {"epochs": 20, "batch_size": 16, **sdlm}
    if recipe == "sgd":
        return {"epochs": 10, "batch_size": 32, "lr": 2e-3, "mu": None, "schedule": None,
                "init": "fan-in", "loss": "mse"}
    raise ValueError(f"recipe must be one of {RECIPES}, not {recipe!r}")


class Trainer:
    """Runs passes of one recipe over a training set held on the model's backend."""

    def __init__(self, model, images, labels, recipe="sgd", batch_size=None, lr=None,
                 momentum=0.9, loss=None, j=MAP_J, seed=0, mu=None, fused=True,
                 schedule=None, shuffle=True, hessian_sample="random", distort=False):
        settings = default_settings(recipe)
        self.model, self.ops = model, model.ops
        loss = settings["loss"] if loss is None else loss
        self.recipe, self.loss, self.j = recipe, loss, j
        self.batch_size = int(settings["batch_size"] if batch_size is None else batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, not {self.batch_size}")
        if recipe in PER_PATTERN and self.batch_size != 1:
            raise ValueError("the paper's recipe updates after every pattern (batch size 1); "
                             "use --recipe sdlm-batch for mini-batches")
        self.lr = settings["lr"] if lr is None else lr
        self.momentum = momentum
        mu = settings["mu"] if mu is None else mu
        if recipe != "sgd" and not mu > 0:
            raise ValueError(f"mu must be positive, not {mu}")
        self.mu = mu
        schedule = settings["schedule"] if schedule is None else schedule
        if recipe != "sgd":
            paper_eta(0, schedule)  # refuses an unknown schedule
        if hessian_sample not in HESSIAN_SAMPLES:
            raise ValueError(f"hessian_sample must be one of {HESSIAN_SAMPLES}, not "
                             f"{hessian_sample!r}")
        self.schedule, self.shuffle, self.hessian_sample = schedule, shuffle, hessian_sample
        # paper: eta itself, per pattern; sdlm-batch: see the module docstring
        self.sdlm_factor = 1.0 if recipe in PER_PATTERN else \
            SDLM_BATCH_SCALE * float(np.sqrt(self.batch_size))
        model._check_loss(loss)
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = model._input(images)
        self.n = self.images.shape[0]
        self.labels = model._labels(labels, self.n)
        self.rng = np.random.default_rng(seed)
        # distortions draw from their own stream: runs without them stay as they were
        self.distort = distort
        self.distort_rng = np.random.default_rng([seed, 1]) if distort else None
        self.distorted = self.ops.empty(self.images.shape) if distort else None
        params = model._params
        zeros = {k: np.zeros(v.shape, model.dtype) for k, v in model.parameters().items()}
        self.velocity = {k: self.ops.asarray(z) for k, z in zeros.items()}
        self.hessian = {k: self.ops.asarray(z) for k, z in zeros.items()}
        self.stats = self.ops.asarray(np.zeros(2, np.float64), dtype=np.float64)
        self._params = params
        self.pass_index = 0
        # the paper's batch-of-one steps in one kernel where the backend has it (GPU);
        # fused=False keeps the layer-by-layer loop, which the tests compare it with
        self.fused = fused and hasattr(self.ops, "sdlm_steps")

    def step_size(self):
        """The global step of the coming pass: sgd's lr, or the paper's eta for
        this pass times the recipe's factor (1 for paper, 0.1 sqrt(B) for sdlm-batch)."""
        if self.recipe == "sgd":
            return self.lr
        return paper_eta(self.pass_index, self.schedule) * self.sdlm_factor

    def estimate_hessian(self, index=None, images=None):
        """h_kk: the Gauss-Newton diagonal averaged over the patterns `index` of
        `images` (default: 500 drawn at random from the training set)."""
        if index is None:
            index = self.rng.choice(self.n, min(SDLM_HESSIAN_PATTERNS, self.n), replace=False)
        index = self.ops.asarray(index, dtype=np.int32)
        x, labels = self.ops.gather(self.images if images is None else images, self.labels,
                                    index)
        acts = self.model._forward(x)
        _, dy, hy = self.ops.loss(acts[-1], labels, self.loss, self.j)
        for name, h in self.model._backward2(acts, hy, dy).items():
            self.ops.fill(self.hessian[name], 0.0)
            self.ops.scale_add(self.hessian[name], h, 1.0)

    def train_pass(self, progress=None):
        """One pass over the training set; returns (mean loss, running error rate)."""
        with self.ops.threads_for(self.batch_size):
            return self._train_pass(progress)

    def _train_pass(self, progress):
        ops, bs = self.ops, self.batch_size
        images = self._pass_images()
        sdlm, count = self.recipe != "sgd", min(SDLM_HESSIAN_PATTERNS, self.n)
        if sdlm and self.hessian_sample == "random":
            self.estimate_hessian(self.rng.choice(self.n, count, replace=False), images)
        step = self.step_size()
        order = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        if sdlm and self.hessian_sample == "consecutive":
            self.estimate_hessian(order[:count], images)
        order = ops.asarray(order, dtype=np.int32)
        ops.fill(self.stats, 0.0)
        if self.recipe in PER_PATTERN and self.fused:
            self._fused_pass(images, order, step, progress)
            return self._finish_pass()
        for start in range(0, self.n, bs):
            index = order[start:start + bs]
            x, labels = ops.gather(images, self.labels, index)
            acts = self.model._forward(x)
            losses, dy, _ = ops.loss(acts[-1], labels, self.loss, self.j)
            ops.accumulate_stats(self.stats, losses, acts[-1], labels)
            grads = self.model._backward(acts, dy)
            for name, g in grads.items():
                if self.recipe == "sgd":
                    ops.sgd_update(self._params[name], g, self.velocity[name], step,
                                   self.momentum)
                else:
                    ops.sdlm_update(self._params[name], g, self.hessian[name], step, self.mu)
            if progress is not None:
                seen = start + len(index)
                progress.advance(len(index), lambda seen=seen: self._running(seen))
        return self._finish_pass()

    def _pass_images(self):
        """The training images of the coming pass: with distortions, every pattern
        distorted anew (kernels/distort.py) into a buffer on the backend."""
        if not self.distort:
            return self.images
        from kernels.distort import draw_distortions
        params = self.ops.asarray(draw_distortions(self.distort_rng, self.n))
        self.ops.distort(self.distorted, self.images, params)
        return self.distorted

    def _fused_pass(self, images, order, step, progress):
        """The paper's per-pattern steps through the backend's fused kernel, in chunks
        of FUSED_CHUNK patterns between progress updates."""
        model = self.model
        for start in range(0, self.n, FUSED_CHUNK):
            count = min(FUSED_CHUNK, self.n - start)
            self.ops.sdlm_steps(self._params, self.hessian, self.stats, images,
                                self.labels, order, start, count, step, self.mu, self.loss,
                                self.j, model._centers, model._tables["C3"])
            if progress is not None:
                seen = start + count
                progress.advance(count, lambda seen=seen: self._running(seen))

    def _finish_pass(self):
        self.pass_index += 1
        loss_sum, errors = self.ops.to_host(self.stats)
        return loss_sum / self.n, errors / self.n

    def _running(self, seen):
        loss_sum, errors = self.ops.to_host(self.stats)
        return f"loss {loss_sum / seen:.3f} err {100 * errors / seen:.2f}%"


def error_rate(model, images, labels):
    """Fraction of images whose predicted class differs from the label. On the CPU
    the penalties come from the compiled whole-network forward (CPUOps.penalties)."""
    if hasattr(model.ops, "penalties"):
        y = model.ops.penalties(model._params, model._input(images), model._centers,
                                model._tables["C3"])
        return float(np.mean(y.argmin(axis=1) != labels))
    return float(np.mean(np.asarray(model.ops.to_host(model.predict(images))) != labels))


def train(model, train_set, test_set, recipe="sgd", epochs=None, batch_size=None, lr=None,
          momentum=0.9, loss=None, j=MAP_J, seed=0, mu=None, checkpoint=None, log=None,
          progress=True, evaluate_train=True, out=print, schedule=None, shuffle=True,
          hessian_sample="random", distort=False):
    """Train `model` in place for `epochs` passes; after each pass print the
    train and test error, append a JSON line to `log` and save `checkpoint`.

    train_set and test_set are (preprocessed images, labels) pairs.
    Returns the list of per-pass records."""
    epochs = default_settings(recipe)["epochs"] if epochs is None else epochs
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, not {epochs}")
    trainer = Trainer(model, *train_set, recipe=recipe, batch_size=batch_size, lr=lr,
                      momentum=momentum, loss=loss, j=j, seed=seed, mu=mu, schedule=schedule,
                      shuffle=shuffle, hessian_sample=hessian_sample, distort=distort)
    loss = trainer.loss
    out(f"training LeNet-5 on {model.device}: recipe {recipe}, loss {loss}, "
        f"{epochs} passes, batch size {trainer.batch_size}, {trainer.n} patterns")
    records = []
    for epoch in range(epochs):
        started = time.perf_counter()
        step = trainer.step_size()
        bar = Progress(trainer.n, f"pass {epoch + 1}/{epochs}", enabled=progress)
        train_loss, running_error = trainer.train_pass(bar)
        bar.close()
        seconds = time.perf_counter() - started
        record = {"pass": epoch + 1, "recipe": recipe, "loss": loss, "step_size": step,
                  "mu": None if recipe == "sgd" else trainer.mu,
                  "train_loss": train_loss, "running_train_error": running_error,
                  "train_error": error_rate(model, *train_set) if evaluate_train else None,
                  "test_error": error_rate(model, *test_set),
                  "seconds": seconds, "patterns_per_second": trainer.n / seconds,
                  "device": model.device}
        if recipe != "sgd":  # the SDLM choices that docs/reproduction.md compares
            record.update(schedule=trainer.schedule, shuffle=shuffle,
                          hessian_sample=hessian_sample, distort=distort)
        records.append(record)
        train_err = record["train_error"]
        out(f"pass {epoch + 1:2d}: loss {train_loss:.4f}  train error "
            f"{100 * (train_err if train_err is not None else running_error):.2f}%  "
            f"test error {100 * record['test_error']:.2f}%  ({seconds:.1f} s, "
            f"{record['patterns_per_second']:.0f} patterns/s)")
        if checkpoint:
            model.save(checkpoint)
        if log:
            _append_json_line(log, record)
    return records


def _append_json_line(path, record):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
