"""The LeNet-5 model: parameters, forward, gradients, curvature, checkpoints.

    input (N,1,32,32) -C1-> (N,6,28,28) -S2-> (N,6,14,14) -C3-> (N,16,10,10)
    -S4-> (N,16,5,5) -C5-> (N,120) -F6-> (N,84) -RBF-> penalties (N,10)

LeNet5 holds its parameters on a backend (lenet.backend: CPUOps, GPUOps) as views of one
flat buffer that the fused kernels read, and calls the backend's ops for everything
else; kernels/reference.py is the float64 definition the tests (tests/test_model.py,
tests/test_gpu_model.py) hold it to.
"""

import math
import os

import numpy as np

from lenet.backend import on_device
from lenet.checkpoint import check_parameters, read_checkpoint, write_checkpoint
from lenet.datasets import DIGITS
from lenet.kernels.architecture import (
    CONV_TABLES,
    LOSS_KINDS,
    PARAMETER_SHAPES,
    RBF_CENTERS,
    STEP_MODES,
    fan_in,
    trainable_count,
)
from lenet.kernels.reference import LOSSES, MAP_J, refusal
from lenet.ops_cpu import CPUOps
from lenet.workspace import FlatBuffer

# gradients and second_derivatives step over at most this many images at a time, in
# workspaces of a power of two of images: calls on any batch sizes make at most 11
GRADIENT_CHUNK = 1024
# the trained weights shipped with the package (LeNet5.pretrained; how they were chosen:
# bench/results/2026-12-06-cpu-validation/ and docs/reproduction.md)
PRETRAINED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights",
                          "lenet5-mnist.npz")


def is_shipped(path):
    """Whether `path` is the package's shipped weights (PRETRAINED), which nothing may
    overwrite."""
    return os.path.exists(path) and os.path.exists(PRETRAINED) and \
        os.path.samefile(path, PRETRAINED)


def finite(x):
    """math.isfinite(x), False (not OverflowError) for an integer past float's range."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def check_loss(loss, j=MAP_J):
    """ValueError unless `loss` is one of LOSSES and MAP's constant j a positive number."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")
    if not (isinstance(j, (int, float, np.integer, np.floating)) and finite(j) and j > 0):
        raise ValueError(f"j, MAP's constant, must be a positive number, not {j!r}")


def check_seed(seed):
    """`seed` unless it is neither None nor a whole number of at least 0 (ValueError)."""
    if seed is not None and not (isinstance(seed, (int, np.integer))
                                 and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed must be a whole number of at least 0, or None, not {seed!r}")
    return seed


def gpu_available():
    """True when a real CUDA GPU can be used. The CUDA simulator does not count:
    device="auto" never picks it (device="gpu" runs on it, for tests)."""
    try:
        from numba import config, cuda
        return not config.ENABLE_CUDASIM and bool(cuda.is_available())
    except Exception:  # numba-cuda missing or no driver
        return False


def _make_ops(device, dtype):
    if device == "auto":
        device = "gpu" if gpu_available() and dtype == np.float32 else "cpu"
    if device == "cpu":
        return CPUOps(dtype)
    if device == "gpu":
        if dtype != np.float32:
            raise ValueError("the GPU model computes in float32 only")
        try:
            from lenet.ops_gpu import GPUOps
        except ImportError as e:
            raise NotImplementedError(f"the GPU backend is not available: {e}") from e
        return GPUOps()
    raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', not {device!r}")


INITS = ("fan-in", "sqrt-fan-in", "lush")


def init_parameters(seed=None, dtype=np.float32, init="fan-in"):
    """The paper's initialisation: every weight and bias uniform in [-2.4/F, 2.4/F],
    F the fan-in of its unit; C3's weights exact zeros where the table has no connection.
    init="sqrt-fan-in": [-2.4/sqrt(F), 2.4/sqrt(F)], what the paper's stated reason asks
    for; init="lush": LeCun's own code (Lush's `forget 1 2`, EBLearn): [-1/sqrt(F),
    1/sqrt(F)] with F the connected inputs, biases 0, subsampling coefficients 0.5. Why
    and where from: docs/initialisation.md."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, not {init!r}")
    rng = np.random.default_rng(check_seed(seed))
    params = {}
    for name, shape in PARAMETER_SHAPES.items():
        layer = name.split(".")[0]
        f = np.asarray(fan_in(layer), dtype=np.float64)
        limit = {"fan-in": 2.4 / f, "sqrt-fan-in": 2.4 / np.sqrt(f),
                 "lush": 1.0 / np.sqrt(f)}[init]
        if np.ndim(limit):  # per output map: broadcast along axis 0
            limit = limit.reshape((-1,) + (1,) * (len(shape) - 1))
        value = rng.uniform(-1.0, 1.0, size=shape) * limit
        if init == "lush" and not name.endswith(".weight"):
            value = np.full(shape, 0.5 if name.endswith(".coef") else 0.0)
        if name.endswith(".weight") and layer in CONV_TABLES:
            value = value * CONV_TABLES[layer].T[:, :, None, None]
        params[name] = value.astype(dtype)
    return params


class LeNet5:
    """LeNet-5 (LeCun et al. 1998) with 60,000 trainable parameters.

    device: "cpu" (compiled with Numba, kernels/cpu.py), "gpu" (Numba CUDA kernels) or
    "auto" (the GPU when one is present). dtype: float32, or float64 on the CPU for
    checking. seed, init: the initial parameters' seed and range (see init_parameters).
    classes, dataset: the names of the ten classes and the data set trained on (saved
    with the checkpoint; `lenet predict` and `lenet show` name classes with them).
    provenance: how the parameters were made (a JSON object saved with the checkpoint):
    {"init", "seed"} for a new model, the training's settings, passes and errors with
    what it started from ("start") once trained (lenet.train), the shipped weights'
    recipe, command, commit and errors; None when unknown (set_parameters).
    """

    classes = DIGITS
    dataset = None
    provenance = None

    def __init__(self, device="cpu", seed=None, dtype=np.float32, init="fan-in"):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, not {dtype}")
        self.ops = _make_ops(device, dtype)
        self.device = self.ops.name
        self.dtype = dtype
        self.max_batch = self.ops.max_batch
        # the connection tables (C, M) bool and the RBF bitmaps (10,84), as the ops take them
        self.tables = dict(CONV_TABLES)
        self.centers = self.ops.asarray(RBF_CENTERS)
        self._buffer = self.ops.parameter_buffer()   # allocated once: params are its views
        self.set_parameters(init_parameters(seed, dtype, init))
        self.provenance = {"init": init, "seed": None if seed is None else int(seed)}
        self._step_buffers = None    # gradients' (grads, velocity, rates, stats), made once

    def __repr__(self):
        return f"LeNet5(device={self.device!r}, dtype={self.dtype.name})"

    # ------------------------------------------------------------ parameters
    @property
    def params(self):
        """The live parameters: name -> backend array, views of flat_params (PARAMETER_SHAPES
        order and shapes). Training updates them in place; parameters() copies."""
        return self._buffer.views

    @property
    def parameter_buffer(self):
        """params and flat_params together: a lenet.workspace.FlatBuffer (.flat, .views),
        what the backends' fused ops take."""
        return self._buffer

    @property
    def flat_params(self):
        """All parameters in one flat backend array (kernels.architecture.PARAMETER_AT)."""
        return self._buffer.flat

    def parameters(self):
        """A dict of NumPy copies of every parameter, named and shaped as
        PARAMETER_SHAPES (C3.weight holds exact zeros off the table)."""
        return {name: self.ops.to_host(p) for name, p in self.params.items()}

    def set_parameters(self, params):
        """Replace every parameter after checking names, shapes, dtypes,
        finiteness and the C3 zeros; the old provenance no longer applies."""
        check_parameters(params)
        with np.errstate(over="ignore"):   # past the model's dtype: refused just below
            cast = {name: np.asarray(params[name], self.dtype) for name in PARAMETER_SHAPES}
        for name, value in cast.items():
            if not np.isfinite(value).all():
                raise ValueError(f"{name} holds values beyond {self.dtype.name}'s range")
        self.provenance = None
        for name in PARAMETER_SHAPES:  # copies: training must not change the caller's arrays
            self.ops.assign(self.params[name], cast[name])

    @staticmethod
    def num_parameters():
        """Trainable parameters: 60,000 (C3's forced zeros are not parameters)."""
        return sum(trainable_count(name) for name in PARAMETER_SHAPES)

    # --------------------------------------------------------------- forward
    @staticmethod
    def check_images(x):
        """x as an array (lists and tuples converted), its shape and dtype checked."""
        cai = getattr(x, "__cuda_array_interface__", None)
        if not on_device(x) and not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except ValueError as e:  # ragged nested lists
                raise ValueError(f"images must be an array of shape (N,1,32,32): {e}") from None
        shape = tuple(x.shape)
        if shape == (0,):   # an empty list
            x = x.reshape((0, 1, 32, 32))
            shape = x.shape
        if len(shape) == 3:
            shape = (shape[0], 1) + shape[1:]
        if len(shape) != 4 or shape[1:] != (1, 32, 32):
            raise ValueError(f"images must have shape (N,1,32,32) or (N,32,32), not "
                             f"{tuple(x.shape)}; lenet.data.preprocess pads 28x28 digits")
        # a device array of another library (PyTorch) may have a dtype NumPy cannot read
        dtype = np.dtype(cai["typestr"]) if cai is not None else np.dtype(x.dtype)
        if dtype.kind != "f":
            raise TypeError(f"images must be floating point (float32), not {dtype}; "
                            "lenet.data.preprocess maps uint8 pixels to the paper's range")
        return x

    def _this_side(self, x, what):
        """x, unless it is a device array given to a CPU model (TypeError)."""
        if self.device == "cpu" and on_device(x):
            raise TypeError(f"{what} are a device array, and this model runs on the CPU: "
                            "give NumPy arrays, or use LeNet5(device=\"gpu\")")
        return x

    def prepare_images(self, x):
        """Check and move one batch of images to the backend as (N,1,32,32) (check_images,
        check_encoding)."""
        x = self.check_images(self._this_side(x, "images"))
        with np.errstate(over="ignore"):  # too large for float32: refused just below
            x = self.ops.asarray(x).reshape((x.shape[0], 1, 32, 32))
        return self.check_encoding(x)

    def check_encoding(self, x):
        """x (as check_images returns it) unless one of its images is not in the paper's
        input encoding: ValueError naming the first and why (NaN, infinities, 0..255 or
        0..1 pixels: kernels/reference.py's first_refused_ref). A host array is checked
        on the host as the model's dtype, a device array on the device (no host copy)."""
        n = x.shape[0]
        if on_device(self._this_side(x, "images")):
            from lenet.kernels.inputs import first_refused
            x = self.ops.asarray(x)
            first = first_refused(x.reshape(n, 32 * 32))
        else:
            from lenet.kernels.cpu import first_refused_cpu
            with np.errstate(over="ignore"):  # too large for float32: refused as infinite
                x = np.ascontiguousarray(x, self.dtype)
            first = first_refused_cpu(x.reshape(n, 32 * 32))
        if first >= 0:
            raise refusal(self.ops.to_host(x[first]), first, self.dtype)
        return x

    def _infer(self, x, want, out=None):
        """Penalties or classes of checked images through the backend's infer (one launch
        per chunk on the GPU, every core on the CPU); host input is cast to the model's
        dtype and checked on the host first, device input checked on the device and read
        in place."""
        x = self.check_images(self._this_side(x, "images"))
        n = x.shape[0]
        if n == 0:   # on the side of the input, as any other result
            host = isinstance(x, np.ndarray)
            shape, dtype = ((0, 10), self.dtype) if want == "penalties" else \
                ((0,), np.intp if host else np.int32)
            return self._written(np.empty(shape, dtype) if host else
                                 self.ops.empty(shape, dtype), out)
        if isinstance(x, np.ndarray):
            x = self.check_encoding(x.reshape((n, 1, 32, 32)))   # as the model's dtype
            y = self.ops.infer(x, x.shape, self._buffer, self.tables["C3"], self.centers, want)
            return self._written(y, out)
        x = self.ops.asarray(x).reshape((n, 1, 32, 32))   # checked on the device, in order
        return self.ops.infer(x, x.shape, self._buffer, self.tables["C3"], self.centers, want,
                              out)

    def _written(self, y, out):
        """y, or y written into the caller's `out` (same shape and dtype, same device)."""
        if out is None:
            return y
        if not hasattr(out, "shape") or not hasattr(out, "dtype"):
            raise TypeError(f"out must be an array (NumPy, or a device array on the GPU), "
                            f"not {type(out).__name__}")
        if tuple(out.shape) != tuple(y.shape) or np.dtype(out.dtype) != np.dtype(y.dtype):
            raise ValueError(f"out is {np.dtype(out.dtype)} {tuple(out.shape)}; the "
                             f"result is {np.dtype(y.dtype)} {tuple(y.shape)}")
        if isinstance(out, np.ndarray) != isinstance(y, np.ndarray):
            raise ValueError("out must be where the result is: a NumPy array for NumPy "
                             "input, a device array for device input")
        if isinstance(out, np.ndarray):
            out[...] = y
        elif y.size:
            self.ops.copy(self.ops.asarray(out, out.dtype), y)
        return out

    def forward_all(self, x):
        """All activations of one batch of images x (as forward takes them; checked and
        moved by prepare_images), input first: [x (N,1,32,32), C1 (N,6,28,28), S2
        (N,6,14,14), C3 (N,16,10,10), S4 (N,16,5,5), C5 (N,120), F6 (N,84), penalties
        (N,10)], backend arrays in the model's dtype."""
        return self.ops.activations(self.prepare_images(x), self._buffer, self.tables["C3"],
                                    self.centers)

    def forward(self, x, out=None):
        """Penalties (N,10) of preprocessed images x (N,1,32,32) or (N,32,32) (a NumPy
        or device array, or nested lists). Returns a NumPy array for host input, a
        backend array for device input; N = 0 gives an empty result. `out`, an array of
        the result's shape and dtype on the same side, receives them instead of a new
        array (device input on the GPU then allocates nothing; a batch refused there may
        have written it)."""
        return self._infer(x, "penalties", out)

    def predict(self, x, out=None):
        """Class indices (N,): the RBF unit with the smallest penalty (intp for NumPy
        input; int32 on the GPU for device input). `out` as for forward."""
        return self._infer(x, "classes", out)

    # -------------------------------------------------------------- backward
    def prepare_labels(self, labels, n):
        """Labels (n,) of integers 0..9 (an array, list or tuple, or a device array on the
        GPU) on the backend, checked by host_labels."""
        device = on_device(labels)
        host = self.host_labels(labels, n)
        return self.ops.asarray(labels if device else host, dtype=np.int32)

    def host_labels(self, labels, n):
        """Labels (n,) as a NumPy array (a device array's through a host copy of its n
        integers), or the error saying why they are not n integers 0..9."""
        if not on_device(self._this_side(labels, "labels")):
            labels = np.asarray(labels)
        elif tuple(labels.shape) == (n,):       # copied only when it has the right size
            labels = self.ops.to_host(labels)
        if tuple(labels.shape) != (n,):
            raise ValueError(f"labels must have shape ({n},), one per image, not "
                             f"{tuple(labels.shape)}")
        if labels.dtype.kind not in "iu":
            raise TypeError(f"labels must be integers 0..9, not {labels.dtype}")
        if n and (labels.min() < 0 or labels.max() > 9):
            raise ValueError("labels must lie in 0..9")
        return labels

    def gradients(self, x, labels, loss="mse", j=MAP_J):
        """(mean loss over the batch, dict of gradients named and shaped like
        parameters()) of images x and labels 0..9."""
        return self._derivatives(x, labels, loss, j, 1)

    def second_derivatives(self, x, labels, loss="mse", j=MAP_J):
        """Gauss-Newton estimate of the diagonal of the Hessian of the mean loss
        over the batch, per parameter (what SDLM divides its steps by)."""
        return self._derivatives(x, labels, loss, j, 2)[1]

    def _derivatives(self, x, labels, loss, j, order):
        """(mean loss, derivatives by name) through the backend's fused step in mode
        STORE: order 1 the gradients, order 2 the curvature of the batch's mean loss.
        More than GRADIENT_CHUNK images go in chunks whose results are weighted by their
        sizes (in float64)."""
        check_loss(loss, j)
        x = self.prepare_images(x)
        n = x.shape[0]
        if n == 0:
            raise ValueError("an empty batch has no mean loss: give at least one image")
        labels = self.prepare_labels(labels, n)
        ops = self.ops
        if self._step_buffers is None:
            self._step_buffers = (ops.parameter_buffer(), ops.parameter_buffer(),
                                  ops.parameter_buffer(), ops.asarray(np.zeros(2), np.float64))
        grads, velocity, rates, stats = self._step_buffers
        ops.fill(stats, 0.0)
        chunk = min(n, GRADIENT_CHUNK)
        ws = ops.workspace(1 << (chunk - 1).bit_length())   # the next power of two
        index = ops.asarray(np.arange(n, dtype=np.int32), np.int32)
        codes = (np.int32(LOSS_KINDS[loss]), np.int32(order), np.int32(STEP_MODES["store"]))
        total = None
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            ws.step(self.flat_params, grads.flat, velocity.flat, rates.flat, stats,
                    x.reshape(n, 32 * 32), labels, index, start, count, codes[0], j, codes[1],
                    codes[2], 0.0, 0.0)
            part = ops.to_host(grads.flat).astype(np.float64) * (count / n)
            total = part if total is None else total + part
        flat = np.ascontiguousarray(total, self.dtype)
        named = {name: view.copy() for name, view in FlatBuffer(flat).views.items()}
        return float(ops.to_host(stats)[0] / n), named

    # ----------------------------------------------------------- checkpoints
    def save(self, path):
        """Write parameters and a description to `path` (.npz), atomically
        (lenet.checkpoint.write_checkpoint)."""
        write_checkpoint(path, self.parameters(), self.dtype, dataset=self.dataset,
                         classes=self.classes, provenance=self.provenance)

    @classmethod
    def load(cls, path, device="cpu"):
        """A model with the parameters stored by `save` (never unpickles), in the
        checkpoint's dtype on the CPU (the GPU computes in float32; "auto" takes the CPU
        for a float64 checkpoint, as LeNet5(device="auto", dtype=float64) does)."""
        params, meta = read_checkpoint(path)
        model = cls(device=device, dtype=np.float32 if device == "gpu" else meta["dtype"])
        model.set_parameters(params)
        model.classes = tuple(meta.get("classes", DIGITS))
        model.dataset = meta.get("dataset")
        model.provenance = meta.get("provenance")
        return model

    @classmethod
    def pretrained(cls, device="auto"):
        """The trained weights shipped with the package (lenet/weights/lenet5-mnist.npz:
        the lecun recipe's setting chosen on a validation set held out of MNIST's
        training set, then trained on all 60,000 digits); .provenance says how they
        were made and their validation and test errors. FileNotFoundError if this
        installation has none."""
        if not os.path.isfile(PRETRAINED):
            raise FileNotFoundError(f"no trained weights in this installation of lenet "
                                    f"({PRETRAINED} is missing): train with `lenet train` "
                                    "and load the checkpoint with LeNet5.load(path)")
        return cls.load(PRETRAINED, device=device)

