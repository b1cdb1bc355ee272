"""The GPU backend: the op interface of `lenet.ops_cpu.CPUOps` on Numba device arrays.

Each op takes its output from a buffer cache, one buffer per (op, trailing
shape, dtype) grown to the largest batch seen, so a training loop or repeated
forward passes reuse device memory instead of allocating per call. A buffer is
overwritten by the next call of the same op: the model copies what it hands to
a user (`forward`, `predict`) into fresh arrays. Inputs may be NumPy arrays (copied to the device
once) or any object with `__cuda_array_interface__` (CuPy, PyTorch CUDA
tensors, Numba device arrays), used in place without a host round trip.

The fused paths read every parameter from the model's flat device buffer
(lenet.workspace.FlatBuffer, kernels.layers.PARAMETER_AT), whose named views are the
model's parameters:

    infer          the whole forward pass in one launch (kernels/forward.py)
    workspace(b)   the fused mini-batch step's buffers for batch size b (kernels/
                   train_step.py, lenet.workspace.Workspace), made once per batch size
    sdlm_rates, sdlm_steps, sdlm_runs   the paper's per-pattern steps (kernels/sdlm.py):
                   one run, or many runs side by side (one block each: lenet.train.sweep)
"""

import contextlib

import numpy as np
from numba import config, cuda

from kernels import conv, full, inputs, layers, loss, rbf, sdlm, subsample, update
from kernels import forward as fused
from lenet.workspace import FlatBuffer, Workspace


def on_device(x):
    """True for a device array of any library, or the simulator's."""
    return hasattr(x, "__cuda_array_interface__") or hasattr(x, "copy_to_host")


def _device_view(x):
    """A Numba view of a device array of any library, without copying."""
    if hasattr(x, "copy_to_host"):  # already a Numba device array (or the simulator's)
        return x
    return cuda.as_cuda_array(x)


class GPUOps:
    name = "gpu"
    dtype = np.dtype(np.float32)
    max_batch = 16384  # images per forward chunk: about 0.5 GB of activations
    # Subsampling's v2 backward adds per-block partial sums with atomics, whose
    # order varies from run to run; v1 reduces each map in one block, always in
    # the same order. Training batches use v1 so that a seed repeats a run bit
    # for bit; only larger batches take v2.
    deterministic_batch = 4096

    def __init__(self):
        if not cuda.is_available():
            raise NotImplementedError("no CUDA GPU is available (and the CUDA simulator is off)")
        self._buffers = {}
        self._fused = None          # kernels.forward.FusedForward, made on first use
        self._workspaces = {}       # batch size -> Workspace
        self._constants = None      # the fused kernels' C3 tables and RBF centers

    def _out(self, tag, shape, dtype=np.float32):
        """A cached output buffer for one batch: one per (op, trailing shape,
        dtype), grown to the largest batch asked for and handed out as a view of
        its first rows, so that varying batch sizes do not pile up buffers."""
        shape = tuple(int(s) for s in shape)
        key = (tag, shape[1:], np.dtype(dtype).str)
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < shape[0]:
            buf = self._buffers[key] = cuda.device_array(shape, dtype=dtype)
        return buf if buf.shape[0] == shape[0] else buf[:shape[0]]

    def _param_out(self, tag, shape):
        """A cached buffer shaped like a parameter (its gradient or curvature),
        keyed by the whole shape: C1's, C3's and C5's biases must not share one."""
        key = (tag, tuple(int(s) for s in shape))
        if key not in self._buffers:
            self._buffers[key] = cuda.device_array(key[1], dtype=np.float32)
        return self._buffers[key]

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

    def threads_for(self, batch_size):
        """CPUOps's thread limit for small batches; nothing to limit here."""
        return contextlib.nullcontext()

    def to_host(self, x):
        if isinstance(x, np.ndarray):
            return x.copy()
        return _device_view(x).copy_to_host()

    def prepare_table(self, table):
        return conv.conv_table(np.asarray(table, dtype=bool))

    def empty(self, shape, dtype=None):
        return cuda.device_array(shape, dtype=dtype or self.dtype)

    def copy_into(self, dst, start, src):
        dst[start:start + src.shape[0]].copy_to_device(src)

    def parameter_buffer(self):
        """A zeroed flat parameter buffer on the device with named views."""
        return FlatBuffer(cuda.to_device(np.zeros(layers.PARAMETERS_LEN, np.float32)))

    def assign(self, dst, src):
        """dst (a device array) = src (a host array of its shape), as float32."""
        dst.copy_to_device(np.ascontiguousarray(src, np.float32))

    def copy(self, dst, src):
        """dst = src, two device arrays of one shape (a device-to-device copy)."""
        dst.copy_to_device(src)

    # ------------------------------------------------------------ fused path
    def fused_constants(self):
        """(C3 input lists, C3 output lists, RBF centers (840,)) on the device, as the
        fused kernels read them (LeNet-5's own table and bitmaps)."""
        if self._constants is None:
            from kernels.architecture import C3_TABLE, RBF_CENTERS
            from kernels.layers_backward import c3_out_table
            table = conv.conv_table(C3_TABLE)
            self._constants = (layers.c3_table(table), c3_out_table(table),
                               cuda.to_device(RBF_CENTERS.astype(np.float32).ravel()))
        return self._constants

    def infer(self, x, shape, params, table, centers, want, out=None):
        """The whole forward pass in one launch per batch (per CHUNK images for NumPy
        input): penalties (N,10) float32 (want="penalties") or classes (N,) (want=
        "classes") of images x of `shape` (N,1,32,32), with the model's FlatBuffer params.
        NumPy in (checked finite by the caller), NumPy out (classes as intp, like argmin);
        a device array in, read in place and checked on the device in the same stream
        (kernels.inputs.nonfinite_error), a device array out: `out` if given (no
        allocation), else a fresh one (classes int32)."""
        if self._fused is None:
            self._fused = fused.FusedForward(table, centers.reshape(-1))
        n = shape[0]
        if isinstance(x, np.ndarray):
            return self._fused.host(x.reshape(n, layers.IN_LEN), params.flat, want)
        y, first = self._fused.device(self.asarray(x).reshape(n, layers.IN_LEN), params.flat,
                                      want, _device_view(out) if on_device(out) else out)
        if first >= 0:
            raise inputs.nonfinite_error(first, self.dtype)
        return y

    def workspace(self, batch):
        """The Workspace of the fused mini-batch step for `batch` images, made once."""
        ws = self._workspaces.get(batch)
        if ws is None:
            table, out_table, centers = self.fused_constants()
            ws = self._workspaces[batch] = Workspace(batch, centers, table, out_table)
        return ws

    def sdlm_rates(self, rates, hess, eta, mu):
        """rates = eta / (mu + hess) (FlatBuffers), once per pass."""
        sdlm.sdlm_rates(rates.flat, hess.flat, eta, mu)

    def sdlm_steps(self, params, rates, stats, images, labels, order, start, count, kind, j,
                   centers, c3_table):
        """Per-pattern SDLM steps for order[start:start + count] with step sizes `rates`
        (FlatBuffers params and rates), in one launch of kernels/sdlm.py (one run):
        what the batch-of-one loop does, without ~40 launches a pattern."""
        key = ("sdlm", kind, float(j))
        run = self._buffers.get(key)
        if run is None:
            run = self._buffers[key] = (
                cuda.to_device(np.zeros(1, np.int32)), cuda.to_device(sdlm.kinds_of([kind])),
                cuda.to_device(np.array([j], np.float32)))
        image_set, kinds, js = run
        self.sdlm_runs(params.flat.reshape(1, -1), rates.flat.reshape(1, -1),
                       stats.reshape(1, 2), images, image_set, labels, order.reshape(1, -1),
                       start, count, kinds, js, centers, c3_table)

    def sdlm_runs(self, params, rates, stats, images, image_set, labels, order, start, count,
                  kinds, js, centers=None, c3_table=None, scratch=None, record=False):
        """Per-pattern SDLM steps of R runs side by side (kernels/sdlm.py: one block each):
        params, rates (R, PARAMETERS_LEN), stats (R, 2) float64, images (N,1,32,32) or
        (M, N, 1024) image sets, image_set (R,) int32, labels (N,), order (R, P), kinds
        (R,) int32 (kernels.sdlm.kinds_of), js (R,); centers and c3_table unused (the
        kernel reads fused_constants()); scratch (R, SCRATCH_LEN) or one kept here."""
        r = params.shape[0]
        if scratch is None:
            scratch = self._buffers.get(("sdlm scratch", r))
            if scratch is None:
                scratch = self._buffers[("sdlm scratch", r)] = cuda.device_array(
                    (r, sdlm.SCRATCH_LEN), np.float32)
        if len(images.shape) == 4:
            images = images.reshape(1, images.shape[0], layers.IN_LEN)
        table, out_table, centers = self.fused_constants()
        sdlm.sdlm_steps(params, rates, stats, scratch, images, image_set, labels, order, start,
                        count, kinds, js, centers, table, out_table, record)

    # ------------------------------------------------------------- layers
    # A convolution whose kernel covers its whole input and whose table connects every
    # input map to every output map (LeNet-5's C5: 16@5x5 -> 120@1x1) is a full
    # connection, out (N,M) = f(x (N,C*K*K) @ weight (M,C*K*K).T + bias): it runs on
    # kernels/full.py's shared-tile matrix kernels, through views of the same arrays.
    # The convolution kernels' v2 C5 forward ran at 7.5M images/s on an H100, 720
    # GFLOP/s; the full kernel ran F6 at 6,300 GFLOP/s (309M images/s), which would be
    # about 65M images/s for C5's 4.7x the work (bench/results/2026-11-22-h100).
    #
    # Off under the CUDA simulator, where every barrier of the full kernels' 16x16-thread
    # tiles is a wait on 256 Python threads: C5 on 2 images took 13 s forward and 64 s
    # backward there, against 0.9 s and 3.5 s on the convolution kernels, and the
    # model's tests would take three times as long. tests/test_gpu_model.py turns it on
    # for its C5-shaped check of this path.
    whole_input_as_full = not config.ENABLE_CUDASIM

    def _is_full_connection(self, x, weight, table):
        return (self.whole_input_as_full and x.shape[2] == weight.shape[2]
                and x.shape[3] == weight.shape[3] and bool(table.table.all()))

    @staticmethod
    def _flat(*arrays):
        """(N, ...) device arrays as (N, rest) views."""
        return [a.reshape(a.shape[0], int(np.prod(a.shape[1:]))) for a in arrays]

    def conv(self, x, weight, bias, table):
        n, _, h, w = x.shape
        m, _, k, _ = weight.shape
        out = self._out("conv", (n, m, h - k + 1, w - k + 1))
        if self._is_full_connection(x, weight, table):
            full.full_forward(*self._flat(out, x, weight), bias)
        else:
            conv.conv_forward(out, x, weight, bias, table)
        return out

    def _conv_backward(self, order, tag, d, out, x, weight, table, need_dx):
        """conv_backward (order 1) and conv_backward2 (order 2)."""
        full_connection = self._is_full_connection(x, weight, table)
        dx = self._out(f"conv_{tag}x", x.shape) if need_dx or full_connection else None
        dw = self._param_out(f"conv_{tag}w", weight.shape)
        db = self._param_out(f"conv_{tag}b", weight.shape[:1])
        if full_connection:
            dx2, dw2, d2, out2, x2, w2 = self._flat(dx, dw, d, out, x, weight)
            backward = full.full_backward if order == 1 else full.full_backward2
            backward(dx2, dw2, db, d2, out2, x2, w2)
        else:
            backward = conv.conv_backward if order == 1 else conv.conv_backward2
            backward(dx, dw, db, d, out, x, weight, table)
        return dx if need_dx else None, dw, db

    def conv_backward(self, dout, out, x, weight, table, need_dx=True):
        return self._conv_backward(1, "d", dout, out, x, weight, table, need_dx)

    def conv_backward2(self, hout, out, x, weight, table, need_hx=True):
        return self._conv_backward(2, "h", hout, out, x, weight, table, need_hx)

    def subsample(self, x, coef, bias):
        n, c, h, w = x.shape
        out = self._out("subsample", (n, c, h // 2, w // 2))
        subsample.subsample_forward(out, x, coef, bias)
        return out

    def subsample_backward(self, dout, out, x, coef):
        dx = self._out("sub_dx", x.shape)
        dc, db = self._param_out("sub_dc", coef.shape), self._param_out("sub_db", coef.shape)
        subsample.subsample_backward(dx, dc, db, dout, out, x, coef,
                                     version=self._subsample_version(x))
        return dx, dc, db

    def subsample_backward2(self, hout, out, x, coef):
        hx = self._out("sub_hx", x.shape)
        hc, hb = self._param_out("sub_hc", coef.shape), self._param_out("sub_hb", coef.shape)
        subsample.subsample_backward2(hx, hc, hb, hout, out, x, coef,
                                      version=self._subsample_version(x))
        return hx, hc, hb

    def _subsample_version(self, x):
        return 1 if x.shape[0] <= self.deterministic_batch else 2

    def full(self, x, weight, bias):
        out = self._out("full", (x.shape[0], weight.shape[0]))
        full.full_forward(out, x, weight, bias)
        return out

    def full_backward(self, dout, out, x, weight):
        dx = self._out("full_dx", x.shape)
        dw = self._param_out("full_dw", weight.shape)
        db = self._param_out("full_db", weight.shape[:1])
        full.full_backward(dx, dw, db, dout, out, x, weight)
        return dx, dw, db

    def full_backward2(self, hout, out, x, weight):
        hx = self._out("full_hx", x.shape)
        hw = self._param_out("full_hw", weight.shape)
        hb = self._param_out("full_hb", weight.shape[:1])
        full.full_backward2(hx, hw, hb, hout, out, x, weight)
        return hx, hw, hb

    def rbf(self, x, centers):
        y = self._out("rbf", (x.shape[0], centers.shape[0]))
        rbf.rbf_forward(y, x, centers)
        return y

    def rbf_backward(self, dy, x, centers):
        dx = self._out("rbf_dx", x.shape)
        rbf.rbf_backward(dx, dy, x, centers)
        return dx

    def rbf_backward2(self, hy, dy, x, centers):
        hx = self._out("rbf_hx", x.shape)
        rbf.rbf_backward2(hx, hy, dy, x, centers)
        return hx

    # --------------------------------------------------------------- loss
    def loss(self, y, labels, kind, j):
        n = y.shape[0]
        losses, dy, hy = self._out("losses", (n,)), self._out("dy", y.shape), \
            self._out("hy", y.shape)
        loss.loss_forward_backward(losses, dy, hy, y, labels, kind, j)
        return losses, dy, hy

    # ----------------------------------------------------------- training
    def gather(self, images, labels, index):
        b = index.shape[0]
        x = self._out("gather_x", (b,) + tuple(images.shape[1:]))
        lab = self._out("gather_labels", (b,), np.int32)
        update.gather(x, lab, images, labels, index)
        return x, lab

    def argmin(self, y):
        out = cuda.device_array(y.shape[0], dtype=np.int32)  # handed to the user: fresh
        update.argmin_rows(out, y)
        return out

    def accumulate_stats(self, stats, losses, y, labels):
        update.sum_into(stats[0:1], losses)
        update.count_errors(stats[1:2], y, labels)

    def sgd_update(self, param, grad, velocity, lr, momentum):
        update.sgd_update(param, grad, velocity, lr, momentum)

    def sdlm_update(self, param, grad, hess, eta, mu):
        update.sdlm_update(param, grad, hess, eta, mu)

    def distort(self, out, images, params):
        """out = images under the affine distortions params (N,6), on the device
        (kernels/distort.py): no image leaves it."""
        from kernels.distort import distort
        distort(out, images, params)

    def scale_add(self, acc, x, scale):
        update.scale_add(acc, x, scale)

    def fill(self, x, value):
        update.fill(x, value)
