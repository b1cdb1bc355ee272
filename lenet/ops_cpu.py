"""The CPU backend: lenet.backend.Backend on NumPy arrays, its network computations
compiled with Numba (kernels/cpu.py: forward, the mini-batch step's StepWorkspace, the
per-pattern steps; kernels/distort.py), images split over every core."""

import numpy as np

from lenet.backend import Backend


class CPUOps(Backend):
    name = "cpu"

    def __init__(self, dtype=np.float32):
        super().__init__()
        self.dtype = np.dtype(dtype)

    # ------------------------------------------------------------- memory
    def asarray(self, x, dtype=None):
        return np.ascontiguousarray(x, dtype=dtype or self.dtype)

    def to_host(self, x):
        return np.array(x, copy=True)

    def empty(self, shape, dtype=None):
        return np.empty(shape, dtype=dtype or self.dtype)

    def parameter_buffer(self):
        from lenet.kernels.architecture import PARAMETERS_LEN
        from lenet.workspace import FlatBuffer
        return FlatBuffer(np.zeros(PARAMETERS_LEN, self.dtype))

    def copy(self, dst, src):
        dst[...] = src

    assign = fill = copy    # on NumPy arrays the same assignment (fill's src: one value)

    # ----------------------------------------------------------- compiled
    def workspace(self, batch):
        """kernels/cpu.py's StepWorkspace for `batch` images, made once per batch size."""
        ws = self._workspaces.get(batch)
        if ws is None:
            from lenet.kernels.architecture import C3_TABLE, RBF_CENTERS
            from lenet.kernels.cpu import StepWorkspace
            ws = self._workspaces[batch] = StepWorkspace(batch, self.dtype, RBF_CENTERS,
                                                         C3_TABLE)
        return ws

    def sdlm_rates(self, rates, hess, eta, mu):
        rates.flat[...] = eta / (mu + hess.flat)

    def sdlm_runs(self, params, rates, stats, images, image_set, labels, order, start, count,
                  kinds, js, centers, c3_table):
        """One run per core at once."""
        from lenet.kernels.cpu import sdlm_runs_cpu
        sdlm_runs_cpu(params, rates, stats, images, image_set, labels, order, start, count,
                      kinds, js, centers, c3_table)

    def infer(self, x, shape, params, table, centers, want):
        from lenet.kernels.cpu import penalties_cpu
        out = np.empty((shape[0], 10), x.dtype)
        penalties_cpu(out, x.reshape(shape), params.flat, centers, table)
        return out if want == "penalties" else out.argmin(axis=1)

    def activations(self, x, params, table, centers):
        from lenet.kernels.cpu import activations_cpu
        x = np.ascontiguousarray(x, self.dtype)
        return [x] + activations_cpu(x, params.flat, centers, table)

    def distort(self, out, images, params):
        from lenet.kernels.distort import distort_cpu
        distort_cpu(out, images, params)
