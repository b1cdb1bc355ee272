"""What every kernel module shares: the squashing function as CUDA device
functions, the decorator that makes them, and the launchers' check of a device array
argument.

    device_function             cuda.jit(device=True), or the plain function under
                                the CUDA simulator (see its docstring)
    squash(a)                   f(a) = A tanh(S a), A = 1.7159, S = 2/3
    through_squash(d, out, k)   d f'(a) (k = 1) or d f'(a)^2 (k = 2), with f'(a)
                                computed from the output out = f(a)
    check_device_array(...)     ValueError naming the argument unless it is a
                                C-contiguous device array of the shape and dtype
"""

import math

import numpy as np
from numba import config, cuda, float32

from kernels.reference import SQUASH_A, SQUASH_S

A = float32(SQUASH_A)
S = float32(SQUASH_S)
A2 = float32(SQUASH_A * SQUASH_A)
S_OVER_A = float32(SQUASH_S / SQUASH_A)


def device_function(fn):
    """cuda.jit(device=True)(fn) on a GPU; `fn` itself under the CUDA simulator.

    The simulator runs every call of a jitted device function inside
    swapped_cuda_module, which takes a global lock and the function's module lock on
    entry and again on exit. A block's hundreds of Python threads calling one in an
    inner loop queue on those locks: one C1 weight-gradient test took 135 s, almost all
    of it waiting there. A plain Python function computes the same thing with no lock.
    Only for functions that use no cuda.* intrinsics (those need the simulator's fake
    cuda module, which the swap installs)."""
    if config.ENABLE_CUDASIM:
        return fn
    return cuda.jit(device=True)(fn)


@device_function
def squash(a):
    return A * math.tanh(S * a)


@device_function
def through_squash(d, out, order):
    """d f'(a) for order 1, d f'(a)^2 for order 2 (Gauss-Newton), f'(a) from f(a)."""
    fp = S_OVER_A * (A2 - out * out)
    if order == 2:
        fp = fp * fp
    return d * fp


def check_device_array(op, name, a, shape, dtype=np.float32):
    """ValueError, prefixed with `op`, unless `a` is a C-contiguous device array
    of `dtype` and `shape`."""
    if isinstance(a, np.ndarray):
        raise ValueError(f"{op}: {name} is a host array; pass a device array")
    if not hasattr(a, "shape") or not hasattr(a, "dtype"):
        raise ValueError(f"{op}: {name} is a {type(a).__name__}, not a device array")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    if a.dtype != dtype:
        raise ValueError(f"{op}: {name} has dtype {a.dtype}, expected {np.dtype(dtype).name}")
    if not (a.is_c_contiguous() if hasattr(a, "is_c_contiguous") else a.flags.c_contiguous):
        raise ValueError(f"{op}: {name} must be C-contiguous")
