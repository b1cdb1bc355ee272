"""What every kernel module shares: the derivative of the squashing function as a CUDA
device function, the decorator that makes them, and the launchers' check of a device
array argument (the squashing function itself is kernels.forward_pieces.squash).

    device_function             cuda.jit(device=True), or the plain function under
                                the CUDA simulator (see its docstring)
    through_squash(d, out, k)   d f'(a) (k = 1) or d f'(a)^2 (k = 2), with f'(a)
                                computed from the output out = f(a)
    check_device_array(...)     ValueError naming the argument unless it is a
                                C-contiguous device array of the shape and dtype
    check_device_arrays(op, **arrays)   check_device_array of each, in order
    cdiv(a, b)                  a / b rounded up: blocks for a items, b a block
    kernel(signature, ...)      a CUDA kernel with an explicit signature, listed in
                                KERNELS for the compile census (bench/ptx.py)
    u32(x)                      an unsigned index conversion (a masked int in the simulator)
"""

import numpy as np
from numba import config, cuda, float32, types, uint32
from numba.cuda.core.sigutils import normalize_signature

from .architecture import SQUASH_A, SQUASH_S

A2 = float32(SQUASH_A * SQUASH_A)
S_OVER_A = float32(SQUASH_S / SQUASH_A)


# An unsigned index conversion for kernels: numba's uint32 on a GPU (indices Numba can
# prove non-negative get no wraparound check, and divide in 32 bits). Under the CUDA
# simulator, which runs kernels as Python, a masked Python int: it wraps the same way,
# and NumPy scalars would make every index operation several times slower.
if config.ENABLE_CUDASIM:
    def u32(x):
        return int(x) & 0xFFFFFFFF
else:
    u32 = uint32


def device_function(fn):
    """cuda.jit(device=True)(fn) on a GPU; `fn` itself under the CUDA simulator, whose
    jitted device functions take two locks per call (hundreds of threads queue on them).
    Only for functions that use no cuda.* intrinsics (those need the simulator's swap)."""
    if config.ENABLE_CUDASIM:
        return fn
    return cuda.jit(device=True)(fn)


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


def check_device_arrays(op, **arrays):
    """check_device_array of each name=(array, shape[, dtype]) (float32 by default), in
    the order given: the first that does not fit is named."""
    for name, spec in arrays.items():
        check_device_array(op, name, *spec)


def cdiv(a, b):
    """a / b rounded up, for whole numbers a >= 0, b > 0."""
    return -(-a // b)


# ------------------------------------------------------------------ kernels
_PACKAGE = __name__.rpartition(".")[0]   # lenet.kernels

KERNELS = []  # every Kernel, in definition order: what bench/ptx.py compiles
ALLOWANCES = ("float64", "local_memory", "spills")


class Kernel:
    """A CUDA kernel with explicit signatures, made by the @kernel decorator.

    kernel[grid, block](*args) launches it. On a GPU the first launch compiles every
    signature (numba's eager compile at that moment, so importing a module costs
    nothing); with one signature the dispatcher is numba's "specialized" one, which
    skips type dispatch on every later launch. It also skips type checks: an argument
    that does not fit the signature (a non-contiguous view for a ::1 array) would be
    misread, not refused. So under the CUDA simulator every launch checks its
    arguments against the signatures (TypeError naming the kernel and the argument),
    and the simulator test suite checks every launcher's arguments that way.

    allow: what the compile census (tests/test_ptx.py) lets this kernel do, each with
    its reason: float64=..., local_memory=..., spills=....
    """

    def __init__(self, fn, signatures, allow, options):
        self.py_func = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        # this package's kernels named by their place in the source tree (kernels/<module>.py)
        module = fn.__module__
        if module.startswith(_PACKAGE + "."):
            module = "kernels." + module[len(_PACKAGE) + 1:]
        self.name = f"{module}.{fn.__name__}"
        self.signatures = list(signatures)
        self.allow = dict(allow)
        self.options = dict(options)
        self.argtypes = [normalize_signature(s)[0] for s in self.signatures]
        self._dispatcher = None

    def __repr__(self):
        return f"<Kernel {self.name}>"

    @property
    def dispatcher(self):
        """The numba dispatcher (compiled on first use on a GPU)."""
        if self._dispatcher is None:
            if config.ENABLE_CUDASIM:  # the simulator's jit takes no compile options
                self._dispatcher = cuda.jit(self.py_func)
            else:
                sig = self.signatures[0] if len(self.signatures) == 1 else self.signatures
                self._dispatcher = cuda.jit(sig, **self.options)(self.py_func)
        return self._dispatcher

    def __getitem__(self, launch):
        if config.ENABLE_CUDASIM:
            return _CheckedLaunch(self, launch)
        return self.dispatcher[launch]

    def check_args(self, args):
        """TypeError unless `args` fit one of the signatures."""
        problems = []
        for argtypes in self.argtypes:
            problem = _mismatch(argtypes, args, self.py_func)
            if problem is None:
                return
            problems.append(problem)
        raise TypeError(f"{self.name}: arguments do not fit its signature: "
                        + "; ".join(problems))


# Under the simulator, a checked launch that a test turns on: races and bounds (tests/simcheck.py)
launch_check = None


class _CheckedLaunch:
    def __init__(self, kernel, launch):
        self.kernel, self.launch = kernel, launch

    def __call__(self, *args):
        self.kernel.check_args(args)
        if launch_check is not None:
            return launch_check(self.kernel, self.launch, args)
        return self.kernel.dispatcher[self.launch](*args)


def _arg_names(fn):
    return fn.__code__.co_varnames[:fn.__code__.co_argcount]


def _mismatch(argtypes, args, fn):
    """None if args fit argtypes, else a phrase saying the first that does not."""
    names = _arg_names(fn)
    if len(args) != len(argtypes):
        return f"{len(args)} arguments for {len(argtypes)} parameters"
    for name, ty, value in zip(names, argtypes, args, strict=True):
        if isinstance(ty, types.Array):
            shape = getattr(value, "shape", None)
            dtype = getattr(value, "dtype", None)
            if shape is None or dtype is None or isinstance(value, np.ndarray):
                return f"{name} is a {type(value).__name__}, not a device array"
            if np.dtype(dtype) != np.dtype(str(ty.dtype)) or len(shape) != ty.ndim:
                return (f"{name} is {np.dtype(dtype).name} {len(shape)}-D, "
                        f"expected {ty.dtype} {ty.ndim}-D")
            if ty.layout == "C" and not (value.is_c_contiguous() if hasattr(
                    value, "is_c_contiguous") else value.flags.c_contiguous):
                return f"{name} is not C-contiguous"
        elif isinstance(ty, types.Integer):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                return f"{name} is {type(value).__name__}, expected an integer ({ty})"
        elif isinstance(ty, types.Float):
            if not isinstance(value, (float, int, np.floating, np.integer)):
                return f"{name} is {type(value).__name__}, expected a number ({ty})"
        elif isinstance(ty, types.Boolean):
            if not isinstance(value, (bool, np.bool_)):
                return f"{name} is {type(value).__name__}, expected a bool"
    return None


def kernel(*signatures, allow=None, **options):
    """@kernel("void(float32[:, :, :, ::1], ...)", ...): a Kernel with these explicit
    signatures (one, normally), registered in KERNELS. allow={"float64": reason, ...}
    lists what the compile census may find in it and why; options go to cuda.jit."""
    allow = allow or {}
    unknown = set(allow) - set(ALLOWANCES)
    if unknown or not signatures:
        raise ValueError(f"kernel: need signatures; allow keys are {ALLOWANCES}")

    def wrap(fn):
        k = Kernel(fn, signatures, allow, options)
        KERNELS.append(k)
        return k
    return wrap
