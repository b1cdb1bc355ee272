"""LeNet-5's ops: the NumPy reference (`reference.py`) and the Numba CUDA kernels
(`conv.py`, `subsample.py`, `full.py`, `rbf.py`, `loss.py`, `update.py`), with
the one tolerance they are compared at (`tolerance.py`)."""

import numpy as np

# numba-cuda 0.30 still calls np.row_stack, which NumPy 2.5 removed (seen on the
# lent H100's image: every kernel compile failed). An alias restores it.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack
