"""The GPU backend: lenet.backend.Backend on Numba device arrays, every computation one
of the fused family's kernels (kernels/forward.py, train_step.py, sdlm.py). Inputs may be
NumPy arrays (copied to the device once) or any object with `__cuda_array_interface__`
(CuPy, PyTorch CUDA tensors, Numba device arrays), used in place without a host copy.
"""

import numpy as np
from numba import cuda

from lenet.backend import Backend, on_device
from lenet.kernels import forward as fused
from lenet.kernels import forward_pieces, sdlm
from lenet.kernels.reference import refusal
from lenet.workspace import FlatBuffer, Workspace


def _device_view(x):
    """A Numba view of a device array of any library, without copying."""
    if hasattr(x, "copy_to_host"):  # already a Numba device array (or the simulator's)
        return x
    return cuda.as_cuda_array(x)


class GPUOps(Backend):
    name = "gpu"
    dtype = np.dtype(np.float32)
    max_batch = 16384  # images per forward chunk: about 0.5 GB of activations

    def __init__(self):
        if not cuda.is_available():
            raise NotImplementedError("no CUDA GPU is available (and the CUDA simulator is off)")
        super().__init__()
        self._buffers = {}
        self._fused = None          # kernels.forward.FusedForward, made on first use
        self._constants = None      # the fused kernels' C3 tables and RBF centers

    def _out(self, tag, shape, dtype=np.float32):
        """A cached output buffer for one batch: one per (tag, trailing shape, dtype),
        grown to the largest batch asked for and handed out as a view of its first
        rows, so that varying batch sizes do not pile up buffers."""
        shape = tuple(int(s) for s in shape)
        key = (tag, shape[1:], np.dtype(dtype).str)
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < shape[0]:
            buf = self._buffers[key] = cuda.device_array(shape, dtype=dtype)
        return buf if buf.shape[0] == shape[0] else buf[:shape[0]]

    # ------------------------------------------------------------- memory
    def asarray(self, x, dtype=None):
        dtype = np.dtype(dtype or self.dtype)
        if on_device(x):
            arr = _device_view(x)
            if np.dtype(arr.dtype) != dtype:
                raise TypeError(f"device array has dtype {arr.dtype}; the GPU model needs "
                                f"{dtype.name} (convert it on the device first)")
            if not arr.is_c_contiguous():
                raise ValueError("device array must be C-contiguous")
            return arr
        return cuda.to_device(np.ascontiguousarray(x, dtype=dtype))

    def to_host(self, x):
        if isinstance(x, np.ndarray):
            return x.copy()
        return _device_view(x).copy_to_host()

    def empty(self, shape, dtype=None):
        return cuda.device_array(shape, dtype=dtype or self.dtype)

    def parameter_buffer(self):
        return FlatBuffer(cuda.to_device(np.zeros(forward_pieces.PARAMETERS_LEN, np.float32)))

    def assign(self, dst, src):
        dst.copy_to_device(np.ascontiguousarray(src, np.float32))

    def copy(self, dst, src):
        dst.copy_to_device(src)

    # ------------------------------------------------------------ fused path
    def fused_constants(self):
        """(C3 input lists, C3 output lists, RBF centers (840,)) on the device, as the
        fused kernels read them (LeNet-5's own table and bitmaps)."""
        if self._constants is None:
            from lenet.kernels.architecture import C3_TABLE, RBF_CENTERS
            from lenet.kernels.backward_pieces import c3_out_table
            self._constants = (forward_pieces.c3_table(C3_TABLE), c3_out_table(C3_TABLE),
                               cuda.to_device(RBF_CENTERS.astype(np.float32).ravel()))
        return self._constants

    def infer(self, x, shape, params, table, centers, want, out=None):
        """The whole forward pass in one launch per batch (per chunk for NumPy input).
        NumPy in (checked by the caller), NumPy out (classes as intp, like argmin);
        a device array in, read in place and checked on the device in the same stream,
        a device array out: `out` if given (no allocation), else a fresh one."""
        if self._fused is None:
            self._fused = fused.FusedForward(table, centers.reshape(-1))
        n = shape[0]
        if isinstance(x, np.ndarray):
            return self._fused.host(x.reshape(n, forward_pieces.IN_LEN), params.flat, want)
        x = self.asarray(x).reshape(n, forward_pieces.IN_LEN)
        y, first = self._fused.device(x, params.flat, want,
                                      _device_view(out) if on_device(out) else out)
        if first >= 0:
            raise refusal(self.to_host(x[first]), first, self.dtype)
        return y

    def workspace(self, batch):
        """The lenet.workspace.Workspace for `batch` images, made once."""
        ws = self._workspaces.get(batch)
        if ws is None:
            table, out_table, centers = self.fused_constants()
            ws = self._workspaces[batch] = Workspace(batch, centers, table, out_table)
        return ws

    def sdlm_rates(self, rates, hess, eta, mu):
        sdlm.sdlm_rates(rates.flat, hess.flat, eta, mu)

    def sdlm_runs(self, params, rates, stats, images, image_set, labels, order, start, count,
                  kinds, js, centers=None, c3_table=None, scratch=None, record=False):
        """kernels/sdlm.py, one block a run; centers and c3_table unused (the kernel reads
        fused_constants()); scratch (R, SCRATCH_LEN) or one kept here."""
        if scratch is None:
            scratch = self._out("sdlm scratch", (params.shape[0], sdlm.SCRATCH_LEN))
        table, out_table, centers = self.fused_constants()
        sdlm.sdlm_steps(params, rates, stats, scratch, images, image_set, labels, order, start,
                        count, kinds, js, centers, table, out_table, record)

    # ------------------------------------------------------------- layers
    def activations(self, x, params, table, centers):
        """kernels/forward.py's stage kernels (C1+S2, C3+S4, C5, F6, RBF: the fused
        kernels' pieces), into new device arrays, the caller's to keep; table unused
        (LeNet-5's, from fused_constants())."""
        n = x.shape[0]
        x = _device_view(x)
        rows = self.fused_constants()[0]
        flat, L = params.flat, forward_pieces
        c1, s2, c3, s4, c5, f6, y = (cuda.device_array((n, size), np.float32) for size in (
            fused.C1_LEN, L.S2_LEN, fused.C3_LEN, L.S4_LEN, L.C5_UNITS, L.F6_UNITS,
            L.N_CLASSES))
        if n:
            fused.c1s2(s2, c1, x.reshape(n, L.IN_LEN), flat)
            fused.c3s4(s4, c3, s2, flat, rows)
            fused.dense(c5, s4, params["C5.weight"].reshape(-1), params["C5.bias"])
            fused.dense(f6, c5, params["F6.weight"].reshape(-1), params["F6.bias"])
            fused.rbf(y, self._out("classes", (n,), np.int32), f6,
                      _device_view(centers).reshape(-1))
        return [x, c1.reshape(n, L.C1_MAPS, L.C1_SIZE, L.C1_SIZE),
                s2.reshape(n, L.C1_MAPS, L.S2_SIZE, L.S2_SIZE),
                c3.reshape(n, L.C3_MAPS, L.C3_SIZE, L.C3_SIZE),
                s4.reshape(n, L.C3_MAPS, L.S4_SIZE, L.S4_SIZE), c5, f6, y]

    # ----------------------------------------------------------- training
    def distort(self, out, images, params):
        """On the device (kernels/distort.py): no image leaves it."""
        from lenet.kernels.distort import distort
        distort(out, images, params)

    def fill(self, x, value):
        """Every element of the device array x = value (a host copy: x is small)."""
        x.copy_to_device(np.full(x.shape, value, x.dtype))
