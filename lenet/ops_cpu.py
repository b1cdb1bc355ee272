"""The CPU backend: lenet.backend.Backend on NumPy arrays, its paths compiled with Numba
(kernels/cpu.py), images split over every core.

    memory      asarray, to_host, empty, copy, fill, parameter_buffer, assign,
                prepare_table (NumPy)
    forward     infer (penalties or classes), activations (every layer's output):
                kernels/cpu.py penalties_cpu and activations_cpu
    training    workspace(batch) (kernels/cpu.py StepWorkspace: the mini-batch steps,
                LeNet5.gradients and second_derivatives, the curvature estimate),
                sdlm_rates, sdlm_steps (the paper's per-pattern steps), sdlm_runs (many
                runs of them, one per core at once)
    distortions distort(out, images, params) (kernels/distort.py)
"""

import numpy as np

from lenet.backend import Backend


class CPUOps(Backend):
    name = "cpu"
    max_batch = 1024   # images per forward chunk

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self._workspaces = {}       # batch size -> kernels.cpu.StepWorkspace

    # ------------------------------------------------------------- memory
    def asarray(self, x, dtype=None):
        return np.ascontiguousarray(x, dtype=dtype or self.dtype)

    def to_host(self, x):
        return np.array(x, copy=True)

    def prepare_table(self, table):
        return np.asarray(table, dtype=bool)

    def empty(self, shape, dtype=None):
        return np.empty(shape, dtype=dtype or self.dtype)

    def parameter_buffer(self):
        """A zeroed flat parameter buffer with named views (lenet.workspace.FlatBuffer)."""
        from lenet.kernels.architecture import PARAMETERS_LEN
        from lenet.workspace import FlatBuffer
        return FlatBuffer(np.zeros(PARAMETERS_LEN, self.dtype))

    def assign(self, dst, src):
        """dst[...] = src (a host array of dst's shape), in dst's dtype."""
        dst[...] = src

    def fill(self, x, value):
        x[...] = value

    def copy(self, dst, src):
        """dst = src, two arrays of one shape."""
        dst[...] = src

    # ----------------------------------------------------------- compiled
    def workspace(self, batch):
        """The buffers of compiled mini-batch steps of up to `batch` images (kernels/cpu.py
        StepWorkspace, the GPU's Workspace interface), made once per batch size."""
        ws = self._workspaces.get(batch)
        if ws is None:
            from lenet.kernels.architecture import C3_TABLE, RBF_CENTERS
            from lenet.kernels.cpu import StepWorkspace
            ws = self._workspaces[batch] = StepWorkspace(batch, self.dtype, RBF_CENTERS,
                                                         C3_TABLE)
        return ws

    def sdlm_rates(self, rates, hess, eta, mu):
        """rates = eta / (mu + hess) (FlatBuffers), once per pass, in their dtype."""
        rates.flat[...] = eta / (mu + hess.flat)

    def sdlm_steps(self, params, rates, stats, images, labels, order, start, count, kind, j,
                   centers, c3_table):
        """Per-pattern SDLM steps for order[start:start + count] with the step sizes
        `rates` (FlatBuffers params and rates), compiled (kernels/cpu.py), on one thread:
        each step needs the last."""
        from lenet.kernels.cpu import sdlm_steps_cpu
        sdlm_steps_cpu(params.flat, rates.flat, stats, images, labels, order, start, count,
                       kind, j, centers, c3_table)

    def sdlm_runs(self, params, rates, stats, images, image_set, labels, order, start, count,
                  kinds, js, centers, c3_table):
        """Per-pattern SDLM steps of R runs side by side, one run per core at once
        (kernels/cpu.py sdlm_runs_cpu; lenet.sweep.sweep): params, rates (R,
        PARAMETERS_LEN), stats (R, 2) float64, images (M, N, 1024) image sets, image_set
        (R,), labels (N,), order (R, P), kinds (R,) int32 loss codes, js (R,)."""
        from lenet.kernels.cpu import sdlm_runs_cpu
        sdlm_runs_cpu(params, rates, stats, images, image_set, labels, order, start, count,
                      kinds, js, centers, c3_table)

    def infer(self, x, shape, params, table, centers, want):
        """Penalties (N,10) (want="penalties") or classes (N,) of checked images x `shape`
        (N,1,32,32), compiled (kernels/cpu.py), images split over every core.
        params: the model's FlatBuffer."""
        from lenet.kernels.cpu import penalties_cpu
        out = np.empty((shape[0], 10), x.dtype)
        penalties_cpu(out, x.reshape(shape), params.flat, centers, table)
        return out if want == "penalties" else out.argmin(axis=1)

    def activations(self, x, params, table, centers):
        """[x, C1, S2, C3, S4, C5, F6, penalties] of checked images x (N,1,32,32), compiled
        (kernels/cpu.py activations_cpu), images split over every core. params: the
        model's FlatBuffer."""
        from lenet.kernels.cpu import activations_cpu
        x = np.ascontiguousarray(x, self.dtype)
        return [x] + activations_cpu(x, params.flat, centers, table)

    def distort(self, out, images, params):
        """out = images under the affine distortions params (N,6) (kernels/distort.py)."""
        from lenet.kernels.distort import distort_cpu
        distort_cpu(out, images, params)
