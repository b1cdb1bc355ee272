"""One pass of lenet.train.Trainer computed by kernels/reference.py in float64: the same
random draws (the curvature's patterns, then the order) from the same seed, the recipes'
settings from lenet.train, every derivative from forward_ref / backward_ref. The tests
hold the Trainer's fused passes (CPU and GPU) to it."""

import numpy as np

from lenet.kernels import reference as ref
from lenet.model import LeNet5
from lenet.train import PER_PATTERN, SDLM_HESSIAN_PATTERNS, Trainer


def curvature_ref(params, images, labels, index, loss="mse", j=ref.MAP_J):
    """The Gauss-Newton diagonal of the mean loss over images[index], by parameter name."""
    fwd = ref.forward_ref(params, images[index], labels[index], loss, j)
    bwd = ref.backward_ref(params, fwd, order=2)
    return {name: bwd[name] for name in ref.PARAMETER_SHAPES}


def trainer_pass_ref(params, images, labels, **settings):
    """(parameters after, {"loss", "error", "hessian" (SDLM recipes), "rates"}) of the
    first pass of Trainer(model, images, labels, **settings) from `params`; settings as
    the Trainer's (recipe, batch_size, seed, mu, loss, j, lr, momentum), shuffled, random
    curvature patterns, no distortions."""
    probe = Trainer(LeNet5(), images, labels, **settings)   # its settings, checked
    x = np.asarray(images, np.float64).reshape(-1, 1, 32, 32)
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(settings.get("seed", 0))
    out = {}
    if probe.recipe != "sgd":
        index = rng.choice(n, min(SDLM_HESSIAN_PATTERNS, n), replace=False)
        out["hessian"] = curvature_ref(params, x, labels, index, probe.loss, probe.j)
        step = probe.step_size()
        out["rates"] = {k: step / (probe.mu + h) for k, h in out["hessian"].items()}
    order = rng.permutation(n)
    if probe.recipe in PER_PATTERN:
        after, stats, _, _ = ref.sdlm_steps_ref(params, out["rates"], x, labels, order,
                                                probe.loss, probe.j)
    else:
        after, _, stats, _, _ = ref.minibatch_steps_ref(
            params, x, labels, order, probe.batch_size, probe.loss, probe.j, lr=probe.lr,
            momentum=probe.momentum, rates=out.get("rates"))
    out["loss"], out["error"] = stats[0] / n, stats[1] / n
    return after, out

