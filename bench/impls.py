"""The implementations the suite compares, behind one small interface.

    gpu         this project's CUDA kernels: LeNet5(device="gpu"), whose forward pass
                is the fused kernel (kernels/forward.py) and whose training steps are the
                fused step (kernels/train_step.py, three launches a step); its layer rows
                are the stage kernels of kernels/forward.py (C1+S2, C3+S4, C5, F6, RBF),
                built from the fused kernels' pieces; timed between
                numba.cuda.synchronize() calls
    torch-cuda  the same network in PyTorch on the GPU (bench/torch_lenet.py)
    torch-compile  that network through torch.compile(mode="reduce-overhead"):
                Inductor's Triton kernels replayed as CUDA graphs; inference and
                training steps only (each batch size costs a compile)
    cupy        a CuPy baseline: im2col + cuBLAS matmul (bench/cupy_lenet.py),
                forward only
    cpu         this project's compiled CPU model: LeNet5(device="cpu") (kernels/cpu.py);
                no layer rows (it has no stage of its own to time)
    torch-cpu   the PyTorch network on the CPU

ORDER is the order of the columns of the tables: each GPU figure beside the
PyTorch figure it is compared with, then the CPU ones.

An implementation offers, each returning a zero-argument `run` callable (or an
object with run()) that the suite checks once against the reference and then
times: inference(x), layer(stage, x) (a stage of bench.flops.STAGES),
train_step(x, labels, lr, momentum),
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
from bench.capability import ALL_WHATS, CPU_WHATS, Unavailable

ORDER = ("gpu", "torch-cuda", "torch-compile", "cupy", "cpu", "torch-cpu")
KIND = {"gpu": "gpu", "torch-cuda": "gpu", "torch-compile": "gpu", "cupy": "gpu",
        "cpu": "cpu", "torch-cpu": "cpu"}
# implementations of earlier results (bench/results/), retired since: bench.report still
# draws their columns there. gpu-layers was LeNet5(device="gpu", path="layers"), the
# layer-by-layer kernels (about 40 launches a training step)
RETIRED = {"gpu-layers": "gpu"}
PAPER_WARMUP_PATTERNS = 2   # a paper pass's warm-up: compiles the fused and curvature kernels


def create(name, params, rehearse=False):
    """The implementation called `name`, holding `params` (a dict of float32 arrays).
    rehearse: this project's GPU rows run in the CUDA simulator too (bench/gpu_session.sh
    --rehearse runs every part of a GPU session here; its times are not GPU timings)."""
    if name in ("cpu", "gpu"):
        return ProjectImpl(name, params, rehearse=rehearse)
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
    """This project's model, LeNet5(device="cpu" or "gpu")."""

    whats = ALL_WHATS              # the GPU's; the CPU has no layer rows (CPU_WHATS)

    def __init__(self, device, params, rehearse=False):
        self.name = self.kind = device
        if device == "cpu":
            self.whats = CPU_WHATS
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
            self.model = LeNet5(device=device)
        except NotImplementedError as e:
            raise Unavailable(str(e)) from e
        self.reset()

    def info(self):
        if self.kind == "cpu":   # kernels/cpu.py's compiled loops run on Numba's threads
            import numba
            return {"threads": numba.get_num_threads(), "threads_source": "numba.get_num_threads()"}
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

    def layer(self, stage, x):
        """One stage kernel of kernels/forward.py on x, into outputs made here."""
        return _stage(self.model, stage, self.model.ops.asarray(x))

    def train_step(self, x, labels, lr, momentum):
        return _ProjectStep(self.model, x, labels, lr, momentum)

    def train_pass(self, images, labels, batch_size, lr, momentum, seed=0):
        return _ProjectPass(self.model, images, labels, 2 * batch_size, recipe="sgd",
                            batch_size=batch_size, lr=lr, momentum=momentum, seed=seed)

    def paper_pass(self, images, labels, mu, seed=0, loss="mse"):
        return _ProjectPass(self.model, images, labels, PAPER_WARMUP_PATTERNS,
                            recipe="paper", mu=mu, loss=loss, seed=seed)


def _stage(model, stage, x):
    """The run callable of a GPU layer row: stage (bench.flops.STAGES) of `model` on the
    device array x (the stage's input as bench.workload.layer_input shapes it), through
    kernels/forward.py's stage kernel; it returns the stage's output shaped as the
    reference's. Outputs are made once, outside the timed call."""
    from numba import cuda

    from lenet.kernels import forward as fw
    from lenet.kernels import forward_pieces as L
    n, flat, at = x.shape[0], model.parameter_buffer.flat, L.PARAMETER_AT

    def out(*shape, dtype=np.float32):
        return cuda.device_array((n,) + shape, dtype)
    if stage == "C1+S2":
        s2, c1, x2 = out(L.S2_LEN), out(fw.C1_LEN), x.reshape(n, L.IN_LEN)
        shape = (n, L.C1_MAPS, L.S2_SIZE, L.S2_SIZE)
        return lambda: (fw.c1s2(s2, c1, x2, flat), s2.reshape(shape))[1]
    if stage == "C3+S4":
        s4, c3, x2 = out(L.S4_LEN), out(fw.C3_LEN), x.reshape(n, L.S2_LEN)
        table = L.c3_table(model.tables["C3"])
        shape = (n, L.C3_MAPS, L.S4_SIZE, L.S4_SIZE)
        return lambda: (fw.c3s4(s4, c3, x2, flat, table), s4.reshape(shape))[1]
    if stage in ("C5", "F6"):
        w = flat[at[stage + ".weight"]:at[stage + ".bias"]]
        b = flat[at[stage + ".bias"]:at[stage + ".bias"] + model.params[stage + ".bias"].size]
        y, x2 = out(b.shape[0]), x.reshape(n, -1)
        return lambda: (fw.dense(y, x2, w, b), y)[1]
    if stage == "RBF":
        y, classes, centers = out(L.N_CLASSES), out(dtype=np.int32), model.centers.reshape(-1)
        return lambda: (fw.rbf(y, classes, x, centers), y)[1]
    raise ValueError(f"unknown stage {stage!r}")


def _no_sync():
    pass


class _ProjectStep:
    """One SGD step as lenet.train.Trainer takes it, on a batch already on the device:
    the batch in order, its order uploaded once."""

    def __init__(self, model, x, labels, lr, momentum):
        from lenet.train import Trainer
        self.trainer = Trainer(model, x, labels, recipe="sgd", batch_size=len(labels), lr=lr,
                               momentum=momentum, shuffle=False)
        _, self.order, _ = self.trainer.begin_pass()
        self.n = len(labels)

    def run(self):
        self.trainer.step(self.order, 0, self.n)

    def outputs(self):
        return self.trainer.step_outputs()


class _ProjectPass:
    """lenet.train.Trainer(model, images, labels, **options).train_pass() over the
    images: sgd's (ProjectImpl.train_pass) or the paper's recipe (paper_pass: the
    curvature estimate on min(500, n) patterns, then one SDLM step per pattern: the
    per-pattern kernel on the GPU, kernels/cpu.py on the CPU)."""

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
