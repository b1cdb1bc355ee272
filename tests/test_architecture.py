"""kernels/architecture.py: LeNet-5 as data, against the paper (the C3 table written out
here independently, the parameter counts, the RBF bitmaps)."""

import numpy as np

from lenet import C3_TABLE, RBF_CENTERS, LeNet5, bitmap_text
from lenet.kernels.architecture import PARAMETER_SHAPES, trainable_count

PAPER_TABLE = """
X...XXX..XXXX.XX
XX...XXX..XXXX.X
XXX...XXX..X.XXX
.XXX..XXXX..X.XX
..XXX..XXXX.XX.X
...XXX..XXXX.XXX
"""


def test_c3_table_is_the_papers():
    # written out independently of kernels.architecture's copy
    expected = np.array([[c == "X" for c in row] for row in PAPER_TABLE.split()])
    assert C3_TABLE.shape == (6, 16) and C3_TABLE.dtype == bool
    assert np.array_equal(C3_TABLE, expected)
    assert C3_TABLE.sum() == 60
    assert list(C3_TABLE.sum(axis=0)) == [3] * 6 + [4] * 9 + [6]


def test_parameter_counts_per_layer():
    per_layer = {}
    for name in PARAMETER_SHAPES:
        layer = name.split(".")[0]
        per_layer[layer] = per_layer.get(layer, 0) + trainable_count(name)
    assert per_layer == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164}
    assert LeNet5.num_parameters() == 60000


def test_rbf_bitmaps_are_distinct_digits():
    assert RBF_CENTERS.shape == (10, 84)
    assert set(np.unique(RBF_CENTERS)) == {-1.0, 1.0}
    for i in range(10):
        for k in range(i):
            # two prototypes differ in at least 12 of 84 pixels: well separated penalties
            assert np.sum(RBF_CENTERS[i] != RBF_CENTERS[k]) >= 12, (i, k)
    for d in range(10):  # shown with `pytest -s`: 12 rows of 7, readable as digits
        print(f"digit {d}:\n{bitmap_text(d)}\n")
        assert len(bitmap_text(d).splitlines()) == 12
        assert all(len(row) == 7 for row in bitmap_text(d).splitlines())
