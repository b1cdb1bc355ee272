"""The interface the model and its trainers are written against: the methods of Backend,
which every backend provides (lenet.ops_cpu.CPUOps on NumPy arrays, lenet.ops_gpu.GPUOps
on device arrays), so that code calls these and asks a backend nothing else. params is
the model's FlatBuffer (kernels.architecture.PARAMETER_AT layout), table its C3 table
(model.tables["C3"]), centers its RBF bitmaps (model.centers).
"""

import abc

import numpy as np

from lenet.kernels.architecture import IN_LEN, LOSS_KINDS


def on_device(x):
    """True for a device array: any with __cuda_array_interface__, or a Numba one
    (the CUDA simulator's have none)."""
    return hasattr(x, "__cuda_array_interface__") or hasattr(x, "copy_to_host")


class Backend(abc.ABC):
    """The methods of a backend; a subclass must define all, and call __init__."""

    name = None         # "cpu" or "gpu"
    dtype = None        # the arrays' dtype
    max_batch = 1024    # images per forward chunk

    def __init__(self):
        self._workspaces = {}   # batch size -> the backend's workspace
        self._one_run = {}      # (kind, j) -> sdlm_steps's one-run arrays

    @abc.abstractmethod
    def asarray(self, x, dtype=None):
        """x as a C-contiguous backend array of `dtype` (default: the backend's)."""

    @abc.abstractmethod
    def to_host(self, x):
        """A NumPy copy of the backend array x."""

    @abc.abstractmethod
    def empty(self, shape, dtype=None):
        """An uninitialised backend array."""

    @abc.abstractmethod
    def copy(self, dst, src):
        """dst = src, two backend arrays of one shape."""

    @abc.abstractmethod
    def fill(self, x, value):
        """x[...] = value."""

    @abc.abstractmethod
    def parameter_buffer(self):
        """A zeroed flat parameter buffer with named views (lenet.workspace.FlatBuffer)."""

    @abc.abstractmethod
    def assign(self, dst, src):
        """dst (a backend array) = src (a host array of its shape), in dst's dtype."""

    @abc.abstractmethod
    def infer(self, x, shape, params, table, centers, want):
        """Penalties (N,10) (want="penalties") or classes (N,) of checked images x."""

    @abc.abstractmethod
    def activations(self, x, params, table, centers):
        """[x, C1 (N,6,28,28), S2 (N,6,14,14), C3 (N,16,10,10), S4 (N,16,5,5), C5 (N,120),
        F6 (N,84), penalties (N,10)] of checked images x (N,1,32,32), in the backend's
        dtype."""

    @abc.abstractmethod
    def workspace(self, batch):
        """The buffers of fused mini-batch steps of up to `batch` images: an object with
        step(params, grads, velocity, rates, stats, images, labels, index, start, count,
        kind, j, order, mode, lr, momentum), losses(count) and scratch_stats."""

    @abc.abstractmethod
    def sdlm_rates(self, rates, hess, eta, mu):
        """rates = eta / (mu + hess) (FlatBuffers), once per pass."""

    def sdlm_steps(self, params, rates, stats, images, labels, order, start, count, kind, j,
                   centers, c3_table):
        """The paper's per-pattern SDLM steps for order[start:start + count] with the
        step sizes `rates` (FlatBuffers params and rates), loss `kind` ("mse", "map"):
        sdlm_runs with one run, its image set a (1, N, 1024) view of images (N,1,32,32)
        or (N,1024)."""
        if kind not in LOSS_KINDS:
            raise ValueError(f"sdlm_steps: kind {kind!r}, expected one of {sorted(LOSS_KINDS)}")
        runs = self._one_run
        if (kind, j) not in runs:
            runs[kind, j] = (self.asarray(np.zeros(1), np.int32),
                             self.asarray([LOSS_KINDS[kind]], np.int32), self.asarray([j]))
        image_set, kinds, js = runs[kind, j]
        self.sdlm_runs(params.flat.reshape(1, -1), rates.flat.reshape(1, -1),
                       stats.reshape(1, 2), images.reshape(1, images.shape[0], IN_LEN),
                       image_set, labels, order.reshape(1, -1), start, count, kinds, js,
                       centers, c3_table)

    @abc.abstractmethod
    def sdlm_runs(self, params, rates, stats, images, image_set, labels, order, start, count,
                  kinds, js, centers, c3_table):
        """The per-pattern steps of R runs side by side (lenet sweep): params, rates (R,
        PARAMETERS_LEN), stats (R, 2) float64, images (M, N, 1024) image sets, image_set
        (R,) int32, labels (N,), order (R, P), kinds (R,) int32 loss codes, js (R,)."""

    @abc.abstractmethod
    def distort(self, out, images, params):
        """out = images under the affine distortions params (N,6)."""
