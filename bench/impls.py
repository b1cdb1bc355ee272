"""The implementations the suite compares, behind one small interface.

    gpu         this project's CUDA kernels: LeNet5(device="gpu"), whose forward pass
                is the fused kernel (kernels/forward.py) and whose training steps are the
                fused step (kernels/train_step.py, three launches a step); timed between
                numba.cuda.synchronize() calls
    gpu-layers  the same model layer by layer: LeNet5(device="gpu", path="layers") for
                inference, Trainer(fused=False) for training steps and SGD passes (about
                40 launches a step: the checked baseline); its layer rows are gpu's
    torch-cuda  the same network in PyTorch on the GPU (bench/torch_lenet.py)
    torch-compile  that network through torch.compile(mode="reduce-overhead"):
                Inductor's Triton kernels replayed as CUDA graphs; inference and
                training steps only (each batch size costs a compile)
    cupy        a CuPy baseline: im2col + cuBLAS matmul (bench/cupy_lenet.py),
                forward only
    cpu         this project's compiled CPU model: LeNet5(device="cpu") (kernels/cpu.py)
    torch-cpu   the PyTorch network on the CPU

ORDER is the order of the columns of the tables: each GPU figure beside the
PyTorch figure it is compared with, then the CPU ones.

An implementation offers, each returning a zero-argument `run` callable (or an
object with run()) that the suite checks once against the reference and then
times: inference(x), layer(name, x), train_step(x, labels, lr, momentum),
train_pass(images, labels, batch_size, lr, momentum) and, for this project's
models only (PyTorch and CuPy have no SDLM), paper_pass(images, labels, mu). PyTorch's
rows also have pattern-pass rows: train_pass at batch size 1, the per-pattern pass the
paper's is compared with.
Inputs are host NumPy
arrays; each implementation moves them to its device once, outside the timed
region. One exception: a GPU implementation's inference(x) gets a numba device array
(bench.workload's device_images: the unique images repeated on the device), which it
reads in place through __cuda_array_interface__. A constructor that cannot work here
raises Unavailable with the reason.

Training checks: a step object's outputs() gives, after one step from the
initial parameters and zero momentum, the per-pattern losses ("loss"), every
gradient ("grad.<name>") and the momentum state: "velocity.<name>" (ours:
v = momentum*v - lr*g, so -lr*g after one step) or "momentum.<name>" (PyTorch's
SGD: b = momentum*b + g, so g after one step; the two updates are the same).
A paper pass's checked(images, labels) runs the recipe over those few patterns
from the model's current parameters and gives the pass's (mean loss, running
error) and every parameter afterwards, on the host.
"""

import numpy as np

from bench import machine
from bench.workload import apply_layer

ORDER = ("gpu", "gpu-layers", "torch-cuda", "torch-compile", "cupy", "cpu", "torch-cpu")
KIND = {"gpu": "gpu", "gpu-layers": "gpu", "torch-cuda": "gpu", "torch-compile": "gpu",
        "cupy": "gpu", "cpu": "cpu",
        "torch-cpu": "cpu"}
ALL_WHATS = frozenset({"inference", "layer", "train-step", "train-pass", "paper-pass"})
TORCH_WHATS = frozenset({"inference", "layer", "train-step", "train-pass", "pattern-pass"})
PAPER_WARMUP_PATTERNS = 2   # a paper pass's warm-up: compiles the fused and curvature kernels


class Unavailable(Exception):
    """An implementation that cannot run on this machine; the message says why."""


def create(name, params, rehearse=False):
    """The implementation called `name`, holding `params` (a dict of float32 arrays).
    rehearse: this project's GPU rows run in the CUDA simulator too (bench/gpu_session.sh
    --rehearse runs every part of a GPU session here; its times are not GPU timings)."""
    if name in ("cpu", "gpu"):
        return ProjectImpl(name, params, rehearse=rehearse)
    if name == "gpu-layers":
        return ProjectImpl("gpu", params, path="layers", rehearse=rehearse)
    if name in ("torch-cpu", "torch-cuda"):
        try:
            from bench.torch_lenet import TorchImpl
        except ImportError as e:
            raise Unavailable(f"PyTorch is not installed ({e})") from e
        return TorchImpl(name.split("-")[1], params)
    if name == "torch-compile":
        try:
            from bench.torch_lenet import TorchCompileImpl
        except ImportError as e:
            raise Unavailable(f"PyTorch is not installed ({e})") from e
        return TorchCompileImpl(params)
    if name == "cupy":
        from bench.cupy_lenet import CuPyImpl
        return CuPyImpl(params)
    raise ValueError(f"unknown implementation {name!r}; choose from {', '.join(ORDER)}")


class ProjectImpl:
    """This project's model, LeNet5(device="cpu" or "gpu"), on its default forward path
    or on `path` (then named "<device>-<path>", inference rows only)."""

    whats = ALL_WHATS

    def __init__(self, device, params, path=None, rehearse=False):
        self.name = self.kind = device
        self.fused = path is None      # training through the fused paths, or layer by layer
        if path is not None:
            self.name = f"{device}-{path}"
            self.whats = frozenset({"inference", "train-step", "train-pass"})
        self.params = params
        if device == "gpu":
            reason = machine.simulator_reason()
            if reason and not rehearse:
                raise Unavailable(f"refused: {reason}")
            try:
                from numba import cuda
            except ImportError as e:
                raise Unavailable(f"numba-cuda is not installed ({e})") from e
            if not cuda.is_available():
                raise Unavailable("no CUDA GPU (numba.cuda.is_available() is False)")
            self._sync = cuda.synchronize
        else:
            self._sync = _no_sync
        from lenet.model import LeNet5
        try:
            self.model = LeNet5(device=device, path=path)
        except NotImplementedError as e:
            raise Unavailable(str(e)) from e
        self.reset()

    def info(self):
        if self.kind == "cpu":
            threads, how = machine.numpy_blas_threads()
            return {"threads": threads, "threads_source": how}
        from numba import cuda
        name = getattr(cuda.get_current_device(), "name", None)
        if name is None:   # the simulator's device has no name (a --rehearse run)
            return {"device": "CUDA simulator"}
        return {"device": name.decode() if isinstance(name, bytes) else str(name)}

    def reset(self):
        # set_parameters copies, so the training rows never change self.params
        self.model.set_parameters(self.params)

    def sync(self):
        self._sync()

    def to_host(self, y):
        return np.asarray(self.model.ops.to_host(y))

    def release(self):
        pass

    def inference(self, x):
        # into one output array made here: a timed call allocates nothing (LeNet5.forward)
        xd = self.model.ops.asarray(x)
        out = self.model.forward(xd)
        return lambda: self.model.forward(xd, out=out)

    def layer(self, layer, x):
        xd = self.model.ops.asarray(x)
        return lambda: apply_layer(self.model, layer, xd)

    def train_step(self, x, labels, lr, momentum):
        return _ProjectStep(self.model, x, labels, lr, momentum, self.fused)

    def train_pass(self, images, labels, batch_size, lr, momentum, seed=0):
        return _ProjectPass(self.model, images, labels, 2 * batch_size, recipe="sgd",
                            batch_size=batch_size, lr=lr, momentum=momentum, seed=seed,
                            fused=self.fused)

    def paper_pass(self, images, labels, mu, seed=0, loss="mse"):
        return _ProjectPass(self.model, images, labels, PAPER_WARMUP_PATTERNS,
                            recipe="paper", mu=mu, loss=loss, seed=seed, fused=self.fused)


def _no_sync():
    pass


class _ProjectStep:
    """One SGD step as lenet.train.Trainer takes it (fused or layer by layer), on a batch
    already on the device: the batch in order, its order uploaded once."""

    def __init__(self, model, x, labels, lr, momentum, fused):
        from lenet.train import Trainer
        self.trainer = Trainer(model, x, labels, recipe="sgd", batch_size=len(labels), lr=lr,
                               momentum=momentum, shuffle=False, fused=fused)
        _, self.order, _ = self.trainer.begin_pass()
        self.n = len(labels)

    def run(self):
        self.trainer.step(self.order, 0, self.n)

    def outputs(self):
        return self.trainer.step_outputs()


class _ProjectPass:
    """lenet.train.Trainer(model, images, labels, **options).train_pass() over the
    images: sgd's (ProjectImpl.train_pass) or the paper's recipe (paper_pass: the
    curvature estimate on min(500, n) patterns, then one SDLM step per pattern, the
    fused kernel on the GPU, NumPy layer by layer on the CPU)."""

    def __init__(self, model, images, labels, warmup_images, **options):
        self.model, self.options = model, options
        self.images, self.labels = images, labels
        self.warmup_images = warmup_images
        self.trainer = None

    def make(self, images, labels):
        from lenet.train import Trainer
        return Trainer(self.model, images, labels, **self.options)

    def warm_up(self, run_pass=True):
        """A pass over the first `warmup_images` images (sgd: two batches; paper:
        PAPER_WARMUP_PATTERNS patterns): compiles everything a full pass runs. The
        timed passes then go on from the parameters it leaves, each from the last.
        run_pass=False (--warmup 0): no warm-up pass, only the set-up of the timed ones."""
        if run_pass:
            n = min(len(self.labels), self.warmup_images)
            self.make(self.images[:n], self.labels[:n]).train_pass()
        self.trainer = self.make(self.images, self.labels)

    def run(self):
        """One timed pass; returns (mean loss, running error rate)."""
        return self.trainer.train_pass()

    def checked(self, images, labels):
        """One pass over `images` from the model's current parameters:
        ((mean loss, running error rate), {name: host parameter after the pass})."""
        result = self.make(images, labels).train_pass()
        return result, self.model.parameters()
