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

Layer rows take as input the previous layer's output of the reference network
on those images, rounded to float32 (realistic values, not zeros).

References are computed with kernels/reference.py through LeNet5(device="cpu",
dtype=float64) on the float32 inputs cast to float64 (what kernels/tolerance.py
asks for), in chunks of CHUNK images.

The paper-pass rows' reference (paper_ref) is one pass of the paper's recipe
(lenet.train.Trainer(recipe="paper")) over the first few images, run on its own
float64 model from the same parameters: it trains, so it cannot share the
reference model of the other rows.
"""

import numpy as np

from kernels.reference import MAP_J
from lenet.model import LeNet5
from lenet.train import Trainer

BACKGROUND, INK = -0.1, 1.175      # lenet.data.preprocess's range
CHUNK = 1024
LAYER_INDEX = {"C1": 0, "S2": 1, "C3": 2, "S4": 3, "C5": 4, "F6": 5, "RBF": 6}


def take(base, n):
    """The first n rows of `base`, repeating it in order when n > len(base)."""
    if n <= len(base):
        return base[:n]
    return np.resize(base, (n,) + base.shape[1:])


def apply_layer(model, layer, x):
    """Output of one layer of `model` (through model.ops) on backend array x."""
    p, t, ops = model.params, model.tables, model.ops
    if layer in ("C1", "C3", "C5"):
        return ops.conv(x, p[layer + ".weight"], p[layer + ".bias"], t[layer])
    if layer in ("S2", "S4"):
        return ops.subsample(x, p[layer + ".coef"], p[layer + ".bias"])
    if layer == "F6":
        return ops.full(x, p["F6.weight"], p["F6.bias"])
    if layer == "RBF":
        return ops.rbf(x, model.centers)
    raise ValueError(f"unknown layer {layer!r}")


def float64_model(params):
    """LeNet5(device="cpu", dtype=float64) holding `params` cast to float64."""
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
        self._ref = None
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

    @property
    def reference_model(self):
        if self._ref is None:
            self._ref = float64_model(self.params)
        return self._ref

    def _forward_base(self):
        """Reference forward over the base images: float32 layer inputs, penalties."""
        if self._acts is not None:
            return
        images, _ = self._base()
        ref = self.reference_model
        self.log(f"reference: float64 forward of {len(images)} images")
        acts = None
        for start in range(0, len(images), CHUNK):
            chunk = ref.forward_all(images[start:start + CHUNK].astype(np.float64))
            if acts is None:
                acts = [[] for _ in chunk]
            for i, a in enumerate(chunk):
                acts[i].append(a)
        acts = [np.concatenate(a) for a in acts]
        self._penalties = acts[-1]
        self._acts = [a.astype(np.float32) for a in acts[:-1]]

    def inference_ref(self, n):
        self._forward_base()
        return take(self._penalties, n)

    def layer_input(self, layer, n):
        """float32 input of `layer` for a batch of n (C5's input (n,16,5,5), F6's (n,120))."""
        self._forward_base()
        return take(self._acts[LAYER_INDEX[layer]], n)

    def layer_ref(self, layer, n):
        """float64 reference output of `layer` on layer_input(layer, n)."""
        if layer not in self._layer_refs:
            self._forward_base()
            x = self._acts[LAYER_INDEX[layer]]
            ref = self.reference_model
            self.log(f"reference: float64 {layer} of {len(x)} images")
            self._layer_refs[layer] = np.concatenate([
                apply_layer(ref, layer, x[s:s + CHUNK].astype(np.float64))
                for s in range(0, len(x), CHUNK)])
        return take(self._layer_refs[layer], n)

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
            ref, ops = self.reference_model, self.reference_model.ops
            self.log(f"reference: float64 forward and backward of {m} images")
            grads, losses = {}, []
            for s in range(0, m, CHUNK):
                x = images[s:min(m, s + CHUNK)].astype(np.float64)
                lab = labels[s:s + len(x)]
                acts = ref.forward_all(x)
                loss, dy, _ = ops.loss(acts[-1], lab, "mse", MAP_J)
                dy = dy * (len(x) * weights[s:s + len(x)])[:, None]   # dy was 1/len(x)
                for name, g in ref.backward(acts, dy).items():
                    grads[name] = grads[name] + g if name in grads else g
                losses.append(loss)
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
