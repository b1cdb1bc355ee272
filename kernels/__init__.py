"""LeNet-5's kernels: the network as data (`architecture.py`), the float64 NumPy reference
(`reference.py`), the CPU's compiled implementation (`cpu.py`) and the Numba CUDA kernels:
one-image pieces (`forward_pieces.py`, `backward_pieces.py`) built into the fused forward
pass (`forward.py`), training step (`train_step.py`) and per-pattern SDLM kernel
(`sdlm.py`), and into stage kernels that run one piece over a batch (`forward.py`,
`backward.py`). docs/kernels.md tells how the fused kernels are laid out."""

import numpy as np

# numba-cuda 0.30 still calls np.row_stack, which NumPy 2.5 removed (seen on the
# lent H100's image: every kernel compile failed). An alias restores it.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack
