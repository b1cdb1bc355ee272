"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998) on hand-written Numba CUDA kernels.

    from lenet import LeNet5
    model = LeNet5(device="auto")       # the GPU when present, else NumPy
    penalties = model.forward(images)   # (N,10) RBF penalties, smaller is better
    digits = model.predict(images)      # (N,) class indices

`lenet.data` loads MNIST; `python -m lenet --help` lists the commands.
"""

from lenet.checkpoint import CheckpointError
from lenet.kernels.architecture import C3_TABLE, PARAMETER_SHAPES, RBF_CENTERS, bitmap_text
from lenet.model import LeNet5, gpu_available

__all__ = ["C3_TABLE", "PARAMETER_SHAPES", "RBF_CENTERS", "bitmap_text", "CheckpointError",
           "LeNet5", "gpu_available"]
__version__ = "0.1.0"
