"""LeNet-5 as data: kernels/architecture.py, where it is written once."""

from kernels.architecture import (  # noqa: F401
    BITMAP_HEIGHT,
    BITMAP_WIDTH,
    C3_TABLE,
    CONV_TABLES,
    PARAMETER_SHAPES,
    RBF_CENTERS,
    bitmap_text,
    fan_in,
    trainable_count,
)
