"""Test configuration: pick the real GPU when there is one, else the CUDA simulator.

NUMBA_ENABLE_CUDASIM must be set before Numba is imported, so the choice is made
here, first, by asking the CUDA driver directly through ctypes. Set the variable
yourself to force either (1 = simulator, 0 = real GPU).

Sizes: `SIMULATOR` is True under the simulator, where every CUDA thread is a
Python thread, so the kernel tests use a few images there and thousands on a GPU.
"""

import ctypes
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _real_gpu_present():
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 \
        and count.value > 0


if "NUMBA_ENABLE_CUDASIM" not in os.environ:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0" if _real_gpu_present() else "1"
SIMULATOR = os.environ["NUMBA_ENABLE_CUDASIM"] == "1"

# Batch sizes for kernel tests: awkward ones (1, 3, not multiples of any block).
BATCHES = (1, 3) if SIMULATOR else (1, 3, 1001, 4099)


def pytest_report_header(config):
    return f"CUDA: {'simulator (NUMBA_ENABLE_CUDASIM=1)' if SIMULATOR else 'real GPU'}; " \
           f"kernel batch sizes {BATCHES}"


@pytest.fixture(scope="session")
def mnist_dir():
    """The MNIST directory from LENET_DATA; skips with a reason when absent."""
    path = os.environ.get("LENET_DATA")
    if not path or not os.path.isdir(path):
        pytest.skip("MNIST not available: set LENET_DATA to a directory with the IDX files")
    return path
