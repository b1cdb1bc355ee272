"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998) on hand-written Numba CUDA kernels.

    from lenet import LeNet5
    model = LeNet5(device="auto")       # the GPU when present, else the compiled CPU code
    penalties = model.forward(images)   # (N,10) RBF penalties, smaller is better
    digits = model.predict(images)      # (N,) class indices

`lenet.data` loads MNIST, `lenet.train` trains (train, Trainer), `lenet.images` reads
image files as digits (load_digits), `lenet.export` writes ONNX; `python -m lenet --help`
lists the commands. The kernels and
their reference (the source tree's kernels/) are the subpackage `lenet.kernels`.
"""

import importlib

__version__ = "0.1.0"

# Names resolved on first use (PEP 562), so that importing lenet.kernels, or the CLI,
# does not load the model and its backends first.
_EXPORTS = {
    "C3_TABLE": "lenet.kernels.architecture",
    "PARAMETER_SHAPES": "lenet.kernels.architecture",
    "RBF_CENTERS": "lenet.kernels.architecture",
    "bitmap_text": "lenet.kernels.architecture",
    "CheckpointError": "lenet.checkpoint",
    "LeNet5": "lenet.model",
    "gpu_available": "lenet.model",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lenet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
