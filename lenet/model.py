"""The LeNet-5 model: parameters, forward, gradients, curvature, checkpoints.

The model holds its parameters on a backend (`lenet.ops_cpu.CPUOps` or the GPU
one) and calls the backend's ops; it knows nothing of NumPy versus CUDA beyond
that. The layers, in the paper's order:

    input (N,1,32,32) -C1-> (N,6,28,28) -S2-> (N,6,14,14) -C3-> (N,16,10,10)
    -S4-> (N,16,5,5) -C5-> (N,120) -F6-> (N,84) -RBF-> penalties (N,10)
"""

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from kernels.reference import MAP_J
from lenet.architecture import (
    C3_TABLE,
    CONV_TABLES,
    PARAMETER_SHAPES,
    RBF_CENTERS,
    fan_in,
    trainable_count,
)
from lenet.ops_cpu import CPUOps

FORMAT = "lenet5-checkpoint"
FORMAT_VERSION = 1
LOSSES = ("mse", "map")


class CheckpointError(ValueError):
    """A file that is not a valid LeNet-5 checkpoint."""


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
    F the fan-in of the unit it belongs to; C3's weights are exact zeros where the
    connection table has no connection.

    init="sqrt-fan-in" draws from [-2.4/sqrt(F), 2.4/sqrt(F)] instead. It is what the
    paper's stated reason for its choice asks for ("that the initial standard
    deviation of the weighted sums be in the same range for each unit, and fall
    within the normal operating region of the sigmoid"): with inputs of variance
    about 1, a weighted sum over F inputs has standard deviation 1.39 / sqrt(F)
    under the paper's letter (0.07 for C5), 1.39 for every unit under sqrt(F).
    It matters for SDLM: see lenet/train.py.

    init="lush" is what LeCun's own code does: Lush's gblearn2 `forget 1 2`
    (packages/gblearn2/gb-modules-nn.lsh in github.com/barak/lush: c-layer, f-layer
    and s-layer `forget (v p)`, called with v = 1, p = 2 by demos/lenet5.lsh) and
    EBLearn's `forget_param_linear(1, 0.5)` (github.com/Augertron/eblearn): weights
    uniform in [-1/sqrt(F), 1/sqrt(F)], F counting only connected inputs (C3: per map,
    from the table), every bias 0 and every subsampling coefficient 1/sqrt(4) = 0.5.
    With the paper's recipe it trains best of the three (docs/reproduction.md)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, not {init!r}")
    rng = np.random.default_rng(seed)
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


def check_parameters(params, dtype=None):
    """Raise ValueError saying exactly what is wrong with a parameter dict."""
    if not isinstance(params, dict):
        raise TypeError(f"parameters must be a dict of arrays, not {type(params).__name__}")
    missing = sorted(set(PARAMETER_SHAPES) - set(params))
    unknown = sorted(set(params) - set(PARAMETER_SHAPES))
    if missing or unknown:
        raise ValueError(f"parameter names do not match LeNet-5: missing {missing}, "
                         f"unknown {unknown}")
    for name, shape in PARAMETER_SHAPES.items():
        value = np.asarray(params[name])
        if value.shape != shape:
            raise ValueError(f"{name} has shape {value.shape}, expected {shape}")
        if value.dtype not in (np.float32, np.float64):
            raise ValueError(f"{name} has dtype {value.dtype}, expected float32 or float64")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} contains NaN or infinite values")
    c3 = np.asarray(params["C3.weight"])
    stray = np.abs(c3).sum(axis=(2, 3)) * ~C3_TABLE.T
    if stray.any():
        o, i = np.argwhere(stray)[0]
        raise ValueError(f"C3.weight connects S2 map {i} to C3 map {o}, which the "
                         "connection table leaves out: those weights must be exactly 0")


class LeNet5:
    """LeNet-5 (LeCun et al. 1998) with 60,000 trainable parameters.

    device: "cpu" (NumPy), "gpu" (Numba CUDA kernels) or "auto" (the GPU when
    one is present). dtype: float32, or float64 on the CPU for checking.
    seed, init: the initial parameters' seed and range (see init_parameters).
    """

    def __init__(self, device="cpu", seed=None, dtype=np.float32, init="fan-in"):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, not {dtype}")
        self.ops = _make_ops(device, dtype)
        self.device = self.ops.name
        self.dtype = dtype
        self.max_batch = getattr(self.ops, "max_batch", 1024)
        self._tables = {k: self.ops.prepare_table(t) for k, t in CONV_TABLES.items()}
        self._centers = self.ops.asarray(RBF_CENTERS)
        self._params = {}
        self.set_parameters(init_parameters(seed, dtype, init))

    def __repr__(self):
        return f"LeNet5(device={self.device!r}, dtype={self.dtype.name})"

    # ------------------------------------------------------------ parameters
    def parameters(self):
        """A dict of NumPy copies of every parameter, named and shaped as
        PARAMETER_SHAPES (C3.weight holds exact zeros off the table)."""
        return {name: self.ops.to_host(p) for name, p in self._params.items()}

    def set_parameters(self, params):
        """Replace every parameter after checking names, shapes, dtypes,
        finiteness and the C3 zeros."""
        check_parameters(params)
        for name in PARAMETER_SHAPES:  # copies: training must not change the caller's arrays
            self._params[name] = self.ops.asarray(np.array(params[name], dtype=self.dtype))

    @staticmethod
    def num_parameters():
        """Trainable parameters: 60,000 (C3's forced zeros are not parameters)."""
        return sum(trainable_count(name) for name in PARAMETER_SHAPES)

    # --------------------------------------------------------------- forward
    def _input(self, x):
        """Check and move one batch of images to the backend as (N,1,32,32)."""
        shape = tuple(x.shape)
        if len(shape) == 3:
            shape = (shape[0], 1) + shape[1:]
        if len(shape) != 4 or shape[1:] != (1, 32, 32):
            raise ValueError(f"images must have shape (N,1,32,32) or (N,32,32), not "
                             f"{tuple(x.shape)}; lenet.data.preprocess pads 28x28 digits")
        # a device array of another library (PyTorch) may have a dtype NumPy cannot read
        cai = getattr(x, "__cuda_array_interface__", None)
        dtype = np.dtype(cai["typestr"]) if cai is not None else np.dtype(x.dtype)
        if dtype.kind != "f":
            raise TypeError(f"images must be floating point (float32), not {x.dtype}; "
                            "lenet.data.preprocess maps uint8 pixels to the paper's range")
        return self.ops.asarray(x).reshape(shape)

    def _forward(self, x):
        """All activations of one batch (backend arrays), input first."""
        p, t, ops = self._params, self._tables, self.ops
        x0 = x
        x1 = ops.conv(x0, p["C1.weight"], p["C1.bias"], t["C1"])
        x2 = ops.subsample(x1, p["S2.coef"], p["S2.bias"])
        x3 = ops.conv(x2, p["C3.weight"], p["C3.bias"], t["C3"])
        x4 = ops.subsample(x3, p["S4.coef"], p["S4.bias"])
        x5 = ops.conv(x4, p["C5.weight"], p["C5.bias"], t["C5"])
        x5 = x5.reshape(x5.shape[0], x5.shape[1])
        x6 = ops.full(x5, p["F6.weight"], p["F6.bias"])
        y = ops.rbf(x6, self._centers)
        return [x0, x1, x2, x3, x4, x5, x6, y]

    def _chunks(self, x):
        n = x.shape[0]
        for start in range(0, n, self.max_batch):
            yield start, x[start:start + self.max_batch]

    def forward(self, x):
        """Penalties (N,10) of preprocessed images x (N,1,32,32) or (N,32,32).
        Returns a NumPy array for NumPy input, a backend array otherwise."""
        host = isinstance(x, np.ndarray)
        out = np.empty((x.shape[0], 10), self.dtype) if host else \
            self.ops.empty((x.shape[0], 10))
        for start, chunk in self._chunks(x):
            y = self._forward(self._input(chunk))[-1]
            if host:
                out[start:start + len(y)] = self.ops.to_host(y)
            else:
                self.ops.copy_into(out, start, y)
        return out

    def predict(self, x):
        """Class indices (N,): the RBF unit with the smallest penalty."""
        y = self.forward(x)
        return y.argmin(axis=1) if isinstance(y, np.ndarray) else self.ops.argmin(y)

    # -------------------------------------------------------------- backward
    def _check_loss(self, loss):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {loss!r}")

    def _labels(self, labels, n):
        labels = np.asarray(labels) if isinstance(labels, (list, tuple)) else labels
        if tuple(labels.shape) != (n,):
            raise ValueError(f"labels must have shape ({n},), not {tuple(labels.shape)}")
        if isinstance(labels, np.ndarray):
            if labels.dtype.kind not in "iu":
                raise TypeError(f"labels must be integers, not {labels.dtype}")
            if n and (labels.min() < 0 or labels.max() > 9):
                raise ValueError("labels must lie in 0..9")
        return self.ops.asarray(labels, dtype=np.int32)

    def _backward(self, acts, dy):
        """Gradients of every parameter (backend arrays) given dE/dy."""
        return self._propagate(acts, self.ops.rbf_backward(dy, acts[6], self._centers), "")

    def _backward2(self, acts, hy, dy):
        """Gauss-Newton diagonal second derivatives of every parameter."""
        return self._propagate(acts, self.ops.rbf_backward2(hy, dy, acts[6], self._centers), "2")

    def _propagate(self, acts, d6, order):
        """From F6 down to C1: gradients (order "") or Gauss-Newton curvature
        (order "2") of every parameter, given that of F6's output."""
        p, t, ops = self._params, self._tables, self.ops
        conv, subsample, full = (getattr(ops, f"{op}_backward{order}")
                                 for op in ("conv", "subsample", "full"))
        x0, x1, x2, x3, x4, x5, x6, _ = acts
        g = {}
        d5, g["F6.weight"], g["F6.bias"] = full(d6, x6, x5, p["F6.weight"])
        d5 = d5.reshape(d5.shape[0], d5.shape[1], 1, 1)
        x5 = x5.reshape(d5.shape)
        d4, g["C5.weight"], g["C5.bias"] = conv(d5, x5, x4, p["C5.weight"], t["C5"])
        d3, g["S4.coef"], g["S4.bias"] = subsample(d4, x4, x3, p["S4.coef"])
        d2, g["C3.weight"], g["C3.bias"] = conv(d3, x3, x2, p["C3.weight"], t["C3"])
        d1, g["S2.coef"], g["S2.bias"] = subsample(d2, x2, x1, p["S2.coef"])
        _, g["C1.weight"], g["C1.bias"] = conv(d1, x1, x0, p["C1.weight"], t["C1"], False)
        return g

    def _loss_and_derivatives(self, x, labels, loss, j):
        self._check_loss(loss)
        x = self._input(x)
        labels = self._labels(labels, x.shape[0])
        acts = self._forward(x)
        losses, dy, hy = self.ops.loss(acts[-1], labels, loss, j)
        return acts, losses, dy, hy

    def gradients(self, x, labels, loss="mse", j=MAP_J):
        """(mean loss over the batch, dict of gradients named like parameters())."""
        acts, losses, dy, _ = self._loss_and_derivatives(x, labels, loss, j)
        grads = self._backward(acts, dy)
        return float(self.ops.to_host(losses).mean()), \
            {k: self.ops.to_host(v) for k, v in grads.items()}

    def second_derivatives(self, x, labels, loss="mse", j=MAP_J):
        """Gauss-Newton estimate of the diagonal of the Hessian of the mean loss
        over the batch, per parameter (what SDLM divides its steps by)."""
        acts, _, dy, hy = self._loss_and_derivatives(x, labels, loss, j)
        return {k: self.ops.to_host(v) for k, v in self._backward2(acts, hy, dy).items()}

    # ----------------------------------------------------------- checkpoints
    def save(self, path):
        """Write parameters and a description to `path` (.npz), atomically."""
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "dtype": self.dtype.name,
                "shapes": {k: list(v) for k, v in PARAMETER_SHAPES.items()},
                "c3_table": C3_TABLE.astype(int).tolist(),
                "rbf_centers_sha256": _centers_digest()}
        arrays = self.parameters()
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".lenet-", suffix=".npz.tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path, device="cpu"):
        """A model with the parameters stored by `save` (never unpickles)."""
        params, meta = read_checkpoint(path)
        model = cls(device=device, dtype=np.float32 if device != "cpu" else meta["dtype"])
        model.set_parameters(params)
        return model


def _centers_digest():
    return hashlib.sha256(RBF_CENTERS.astype("<f8").tobytes()).hexdigest()


def read_checkpoint(path):
    """(parameters, description) of a checkpoint; CheckpointError if it is not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a .npz checkpoint (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable .npz checkpoint ({e})") from e
    if "__meta__" not in arrays:
        raise CheckpointError(f"{path}: not a LeNet-5 checkpoint (no __meta__ record)")
    try:
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt __meta__ record ({e})") from e
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} version "
                              f"{meta.get('version')!r}, expected {FORMAT!r} {FORMAT_VERSION}")
    if meta.get("c3_table") != C3_TABLE.astype(int).tolist():
        raise CheckpointError(f"{path}: made with another C3 connection table")
    if meta.get("rbf_centers_sha256") != _centers_digest():
        raise CheckpointError(f"{path}: made with other RBF bitmaps than this version's")
    if meta.get("dtype") not in ("float32", "float64"):
        raise CheckpointError(f"{path}: unknown dtype {meta.get('dtype')!r}")
    try:
        check_parameters(arrays)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    return arrays, meta
