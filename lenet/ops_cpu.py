"""The CPU backend: the op interface the model is written against, on NumPy arrays.

A backend is an object with the methods below; the model calls nothing else,
so the GPU backend (`lenet.ops_gpu.GPUOps`) provides the same methods on device
arrays. Layer ops fuse the squashing function into conv, subsample and full:
forward returns the squashed output, and backward takes the gradient with
respect to that output together with the output itself (f'(a) is computed from
f(a), so pre-activations are never stored).

    memory      asarray(x), to_host(x), prepare_table(table), empty(shape),
                copy_into(dst, start, src), parameter_buffer() (a zeroed
                lenet.workspace.FlatBuffer), assign(dst, host array)
    layers      conv, subsample, full, rbf         (forward)
                *_backward                         (gradients)
                *_backward2                        (Gauss-Newton curvature)
                kernels/reference.py's NumPy: the model's path="layers", gradients and
                second_derivatives, and Trainer(fused=False)
    loss        loss(y, labels, kind, j) -> (per-pattern losses, dy, hy)
    training    gather, argmin, accumulate_stats, sgd_update, sdlm_update,
                scale_add, fill, threads_for(batch_size)   (Trainer(fused=False))
    compiled    infer (inference on every core), workspace(batch) (mini-batch steps and
                the curvature estimate), sdlm_rates, sdlm_steps (the paper's per-pattern
                steps), sdlm_runs (many runs of them, one per core at once), copy:
                kernels/cpu.py, as lenet.ops_gpu.GPUOps's
    distortions distort(out, images, params) (kernels/distort.py)
"""

import contextlib

import numpy as np

from kernels import reference as ref

# Trainer(fused=False)'s batches up to this size run with BLAS on one thread
# (threads_for): on a busy machine one thread ran 2.2x as fast as two
# (bench/results/2026-12-06-cpu-twin/README.md keeps the figures).
SINGLE_THREAD_BATCH = 64


class CPUOps:
    name = "cpu"

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self._workspaces = {}       # batch size -> kernels.cpu.StepWorkspace

    # ------------------------------------------------------------- memory
    def asarray(self, x, dtype=None):
        return np.ascontiguousarray(x, dtype=dtype or self.dtype)

    def to_host(self, x):
        return np.array(x, copy=True)

    def threads_for(self, batch_size):
        """A context for a training loop over batches of `batch_size`: BLAS limited to
        one thread for batches up to SINGLE_THREAD_BATCH (restored on exit), else
        nothing."""
        if batch_size > SINGLE_THREAD_BATCH:
            return contextlib.nullcontext()
        from threadpoolctl import threadpool_limits
        return threadpool_limits(limits=1, user_api="blas")

    def prepare_table(self, table):
        return np.asarray(table, dtype=bool)

    def empty(self, shape, dtype=None):
        return np.empty(shape, dtype=dtype or self.dtype)

    def copy_into(self, dst, start, src):
        dst[start:start + len(src)] = src

    def parameter_buffer(self):
        """A zeroed flat parameter buffer with named views (lenet.workspace.FlatBuffer)."""
        from kernels.layers import PARAMETERS_LEN
        from lenet.workspace import FlatBuffer
        return FlatBuffer(np.zeros(PARAMETERS_LEN, self.dtype))

    def assign(self, dst, src):
        """dst[...] = src (a host array of dst's shape), in dst's dtype."""
        dst[...] = src


    # ------------------------------------------------------------- layers
    def conv(self, x, weight, bias, table):
        return ref.squash_ref(ref.conv_ref(x, weight, bias, table))

    def conv_backward(self, dout, out, x, weight, table, need_dx=True):
        da = ref.squash_backward_ref(dout, out)
        return ref.conv_backward_ref(da, x, weight, table, need_dx)

    def conv_backward2(self, hout, out, x, weight, table, need_hx=True):
        ha = ref.squash_backward2_ref(hout, out)
        return ref.conv_backward2_ref(ha, x, weight, table, need_hx)

    def subsample(self, x, coef, bias):
        return ref.squash_ref(ref.subsample_ref(x, coef, bias))

    def subsample_backward(self, dout, out, x, coef):
        return ref.subsample_backward_ref(ref.squash_backward_ref(dout, out), x, coef)

    def subsample_backward2(self, hout, out, x, coef):
        return ref.subsample_backward2_ref(ref.squash_backward2_ref(hout, out), x, coef)

    def full(self, x, weight, bias):
        return ref.squash_ref(ref.full_ref(x, weight, bias))

    def full_backward(self, dout, out, x, weight):
        return ref.full_backward_ref(ref.squash_backward_ref(dout, out), x, weight)

    def full_backward2(self, hout, out, x, weight):
        return ref.full_backward2_ref(ref.squash_backward2_ref(hout, out), x, weight)

    def rbf(self, x, centers):
        return ref.rbf_ref(x, centers)

    def rbf_backward(self, dy, x, centers):
        return ref.rbf_backward_ref(dy, x, centers)

    def rbf_backward2(self, hy, dy, x, centers):
        return ref.rbf_backward2_ref(hy, dy, x, centers)

    # --------------------------------------------------------------- loss
    def loss(self, y, labels, kind, j):
        """Per-pattern losses (N,), and dy, hy of their mean over the batch."""
        if kind == "mse":
            return ref.mse_loss_ref(y, labels)
        return ref.map_loss_ref(y, labels, j)

    # ----------------------------------------------------------- training
    def gather(self, images, labels, index):
        return images[index], labels[index]

    def argmin(self, y):
        return y.argmin(axis=1)

    def sgd_update(self, param, grad, velocity, lr, momentum):
        """velocity = momentum * velocity - lr * grad; param += velocity."""
        velocity *= momentum
        velocity -= lr * grad
        param += velocity

    def sdlm_update(self, param, grad, hess, eta, mu):
        """param -= eta / (mu + hess) * grad (one step size per parameter)."""
        param -= (eta / (mu + hess)) * grad

    def scale_add(self, acc, x, scale):
        """acc += scale * x (running averages of the Hessian estimate)."""
        acc += scale * x

    def accumulate_stats(self, stats, losses, y, labels):
        """stats[0] += sum of per-pattern losses; stats[1] += misclassified count."""
        stats[0] += losses.sum()
        stats[1] += np.count_nonzero(y.argmin(axis=1) != labels)

    def fill(self, x, value):
        x[...] = value

    # ----------------------------------------------------------- compiled
    def workspace(self, batch):
        """The buffers of compiled mini-batch steps of up to `batch` images (kernels/cpu.py
        StepWorkspace, the GPU's Workspace interface), made once per batch size."""
        ws = self._workspaces.get(batch)
        if ws is None:
            from kernels.architecture import C3_TABLE, RBF_CENTERS
            from kernels.cpu import StepWorkspace
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
        from kernels.cpu import sdlm_steps_cpu
        sdlm_steps_cpu(params.flat, rates.flat, stats, images, labels, order, start, count,
                       kind, j, centers, c3_table)

    def sdlm_runs(self, params, rates, stats, images, image_set, labels, order, start, count,
                  kinds, js, centers, c3_table):
        """Per-pattern SDLM steps of R runs side by side, one run per core at once
        (kernels/cpu.py sdlm_runs_cpu; lenet.train.sweep): params, rates (R,
        PARAMETERS_LEN), stats (R, 2) float64, images (M, N, 1024) image sets, image_set
        (R,), labels (N,), order (R, P), kinds (R,) int32 loss codes, js (R,)."""
        from kernels.cpu import sdlm_runs_cpu
        sdlm_runs_cpu(params, rates, stats, images, image_set, labels, order, start, count,
                      kinds, js, centers, c3_table)

    def copy(self, dst, src):
        """dst = src, two arrays of one shape."""
        dst[...] = src

    def infer(self, x, shape, params, table, centers, want):
        """Penalties (N,10) (want="penalties") or classes (N,) of checked images x `shape`
        (N,1,32,32), compiled (kernels/cpu.py), images split over every core.
        params: the model's FlatBuffer."""
        from kernels.cpu import penalties_cpu
        out = np.empty((shape[0], 10), x.dtype)
        penalties_cpu(out, x.reshape(shape), params.flat, centers, table)
        return out if want == "penalties" else out.argmin(axis=1)

    def distort(self, out, images, params):
        """out = images under the affine distortions params (N,6) (kernels/distort.py)."""
        from kernels.distort import distort_cpu
        distort_cpu(out, images, params)
