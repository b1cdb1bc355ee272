"""The benchmark's inputs and their float64 CPU references.

Inputs: `unique` random images, uniform over the preprocessed range
[-0.1, 1.175] (never zeros), with random labels, seeded. A batch of N <= unique
images is their first N; a larger batch repeats them in order (image i of the
batch is image i mod unique), so that the reference stays affordable while every
output of every row is still checked: per-image outputs of a repeated image are
the repeated outputs, and the gradient of the batch's mean loss is the reference
gradient with each image weighted by how often it occurs. GPU inference rows get
their batch from device_images: the unique images are copied to the device once
and repeated there (a million images is 4 GB, which is not built on the host).

Layer rows (one stage of the network: C1+S2, C3+S4, C5, F6, RBF, as the GPU's stage
kernels run them) take as input the previous stage's output of the reference network
on those images, rounded to float32 (realistic values, not zeros).

References are kernels/reference.py's, in float64 on the float32 inputs cast to float64
(what kernels/tolerance.py asks for), in chunks of CHUNK images: forward_ref and
backward_ref for the whole network, its layer functions (apply_stage) for a stage.

The paper-pass rows' reference (paper_ref) is one pass of the paper's recipe
(lenet.train.Trainer(recipe="paper")) over the first few images, run on its own
float64 model from the same parameters: it trains, so it cannot share the
reference model of the other rows.
"""

import numpy as np

from bench.flops import STAGES
from lenet.kernels import reference as ref
from lenet.kernels.architecture import CONV_TABLES, INPUT_BACKGROUND, INPUT_INK, RBF_CENTERS
from lenet.model import LeNet5
from lenet.train import Trainer

BACKGROUND, INK = INPUT_BACKGROUND, INPUT_INK      # lenet.data.preprocess's range
CHUNK = 1024
# forward_ref's tensors: the input of each layer row, and the reference's penalties
TENSORS = ("input", "C1", "S2", "C3", "S4", "C5", "F6")
STAGE_INPUT = {"C1+S2": "input", "C3+S4": "S2", "C5": "S4", "F6": "C5", "RBF": "F6"}
assert tuple(STAGE_INPUT) == STAGES


def take(base, n):
    """The first n rows of `base`, repeating it in order when n > len(base)."""
    if n <= len(base):
        return base[:n]
    return np.resize(base, (n,) + base.shape[1:])


def apply_stage(params, stage, x):
    """The float64 reference output of one stage (STAGES) on its input x, from
    kernels/reference.py's layer functions: S2 (N,6,14,14), S4 (N,16,5,5), C5 (N,120),
    F6 (N,84) or the penalties (N,10). params: float64 arrays by name."""
    x = np.asarray(x, np.float64)
    for layer in stage.split("+"):
        if layer in ("C1", "C3"):
            x = ref.squash_ref(ref.conv_ref(x, params[layer + ".weight"],
                                            params[layer + ".bias"], CONV_TABLES[layer]))
        elif layer in ("S2", "S4"):
            x = ref.squash_ref(ref.subsample_ref(x, params[layer + ".coef"],
                                                 params[layer + ".bias"]))
        elif layer in ("C5", "F6"):
            w = params[layer + ".weight"]
            x = ref.squash_ref(ref.full_ref(x.reshape(len(x), -1), w.reshape(len(w), -1),
                                            params[layer + ".bias"]))
        elif layer == "RBF":
            x = ref.rbf_ref(x, RBF_CENTERS)
        else:
            raise ValueError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}")
    return x


def float64_model(params):
    """LeNet5(device="cpu", dtype=float64) holding `params` cast to float64 (the paper
    pass's reference: it trains)."""
    model = LeNet5(device="cpu", dtype=np.float64)
    model.set_parameters({k: v.astype(np.float64) for k, v in params.items()})
    return model


class Workload:
    """Inputs and references of every batch size, computed once and cached."""

    def __init__(self, params, unique, seed=0, log=None):
        self.params = params
        self.unique = int(unique)
        self.seed = seed
        self.log = log or (lambda msg: None)
        self._p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
        self._images = self._labels = None
        self._device_base = None     # the unique images on the device (device_images)
        self._acts = None            # float32 activations of the base images, x0..x6
        self._penalties = None       # float64 (unique, 10)
        self._layer_refs = {}
        self._step_refs = {}
        self._paper_refs = {}

    # ----------------------------------------------------------------- inputs
    def _base(self):
        if self._images is None:
            rng = np.random.default_rng(self.seed)
            shape = (self.unique, 1, 32, 32)
            self._images = rng.uniform(BACKGROUND, INK, size=shape).astype(np.float32)
            self._labels = rng.integers(0, 10, size=self.unique).astype(np.int64)
        return self._images, self._labels

    def images(self, n):
        """(n,1,32,32) float32 images and (n,) int64 labels of a batch of n."""
        images, labels = self._base()
        return take(images, n), take(labels, n)

    def device_images(self, n):
        """The (n,1,32,32) float32 images of images(n) as a numba device array, made on
        the device: the unique images are copied there once, then repeated by
        device-to-device copies (each doubling the filled part)."""
        from numba import cuda
        images, _ = self._base()
        if self._device_base is None:
            self._device_base = cuda.to_device(images)
        out = cuda.device_array((n,) + images.shape[1:], np.float32)
        done = min(n, len(images))
        if done:
            out[:done].copy_to_device(self._device_base[:done])
        while done < n:
            step = min(done, n - done)
            out[done:done + step].copy_to_device(out[:step])
            done += step
        cuda.synchronize()
        return out

    def _forward_base(self):
        """Reference forward over the base images: float32 layer inputs, penalties."""
        if self._acts is not None:
            return
        images, _ = self._base()
        self.log(f"reference: float64 forward of {len(images)} images")
        chunks = [ref.forward_ref(self._p64, images[s:s + CHUNK])
                  for s in range(0, len(images), CHUNK)]
        self._penalties = np.concatenate([c["penalties"] for c in chunks])
        self._acts = {name: np.concatenate([c[name] for c in chunks]).astype(np.float32)
                      for name in TENSORS}

    def inference_ref(self, n):
        self._forward_base()
        return take(self._penalties, n)

    def layer_input(self, stage, n):
        """float32 input of `stage` for a batch of n (C1+S2's (n,1,32,32), C5's
        (n,16,5,5), F6's (n,120), RBF's (n,84))."""
        self._forward_base()
        return take(self._acts[STAGE_INPUT[stage]], n)

    def layer_ref(self, stage, n):
        """float64 reference output of `stage` on layer_input(stage, n)."""
        if stage not in self._layer_refs:
            self._forward_base()
            x = self._acts[STAGE_INPUT[stage]]
            self.log(f"reference: float64 {stage} of {len(x)} images")
            self._layer_refs[stage] = np.concatenate([
                apply_stage(self._p64, stage, x[s:s + CHUNK]) for s in range(0, len(x), CHUNK)])
        return take(self._layer_refs[stage], n)

    # ------------------------------------------------------------- training
    def step_ref(self, n):
        """{"loss": per-pattern losses (n,), "grad.<name>": gradient of the mean
        MSE loss} of a batch of n, float64."""
        m = min(n, self.unique)
        repeats, extra = divmod(n, m)
        key = m if extra == 0 else (n, m)
        if key not in self._step_refs:
            images, labels = self._base()
            counts = np.full(m, repeats, dtype=np.float64)
            counts[:extra] += 1
            weights = counts / n          # each base image's share of the mean
            self.log(f"reference: float64 forward and backward of {m} images")
            grads, losses = {}, []
            for s in range(0, m, CHUNK):
                x = images[s:min(m, s + CHUNK)]
                fwd = ref.forward_ref(self._p64, x, labels[s:s + len(x)], "mse")
                fwd["dy"] = fwd["dy"] * (len(x) * weights[s:s + len(x)])[:, None]  # was 1/len
                bwd = ref.backward_ref(self._p64, fwd)
                for name in self._p64:
                    grads[name] = grads[name] + bwd[name] if name in grads else bwd[name]
                losses.append(fwd["losses"])
            result = {"loss": np.concatenate(losses)}
            result.update({f"grad.{k}": v for k, v in grads.items()})
            self._step_refs[key] = result
        result = dict(self._step_refs[key])
        result["loss"] = take(result["loss"], n)
        return result

    def paper_ref(self, n, mu, seed, loss="mse"):
        """One pass of the paper's recipe over the first n images in float64, from
        the benchmark's parameters: {"params": every parameter after the pass,
        "loss": the pass's mean loss, "error": its running error rate}. The
        Trainer's seed draws the curvature patterns and the order, as it does for
        the implementation checked against this."""
        key = (n, mu, seed, loss)
        if key not in self._paper_refs:
            images, labels = self.images(n)
            model = float64_model(self.params)
            self.log(f"reference: float64 pass of the paper's recipe over {n} images")
            mean_loss, error = Trainer(model, images, labels, recipe="paper", mu=mu,
                                       loss=loss, seed=seed).train_pass()
            self._paper_refs[key] = {"params": model.parameters(), "loss": float(mean_loss),
                                     "error": float(error)}
        return self._paper_refs[key]
