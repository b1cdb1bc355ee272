"""What each implementation of bench.impls can measure, and the exception it raises when it
cannot run on this machine: apart from bench.impls, so that the PyTorch and CuPy
implementations it imports need not import it back."""

ALL_WHATS = frozenset({"inference", "layer", "train-step", "train-pass", "paper-pass"})
CPU_WHATS = ALL_WHATS - {"layer"}
TORCH_WHATS = frozenset({"inference", "layer", "train-step", "train-pass", "pattern-pass"})


class Unavailable(Exception):
    """An implementation that cannot run on this machine; the message says why."""
