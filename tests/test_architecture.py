"""kernels/architecture.py: LeNet-5 as data, against the paper (the C3 table written out
here independently, the parameter counts, the RBF bitmaps, the input's encoding), and
written once: no other module of lenet/ or kernels/ writes its constants again."""

import ast
import pathlib

import numpy as np

from lenet import C3_TABLE, RBF_CENTERS, LeNet5, bitmap_text
from lenet.kernels import architecture as A
from lenet.kernels.architecture import PARAMETER_SHAPES, trainable_count

ROOT = pathlib.Path(__file__).resolve().parent.parent

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
    assert type(A.C3_PAIRS) is int and A.C3_PAIRS == 60   # kernels' loop bound: a Python int


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


def test_the_input_encoding_is_the_papers():
    # a 28x28 digit centred in a 32x32 field; background -0.1, full ink 1.175
    assert (A.INPUT_BACKGROUND, A.INPUT_INK) == (-0.1, 1.175)
    assert 28 + 2 * A.INPUT_PAD == A.IN_SIZE == 32


def _literals(path):
    """The float constants written in a Python file, -x counted as one."""
    tree = ast.parse(path.read_text())
    negated = {id(n.operand) for n in ast.walk(tree)
               if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub)}
    return [-n.value if id(n) in negated else n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and type(n.value) is float]


def test_no_module_writes_the_architectures_constants_again():
    # the squashing function's amplitude and the input's encoding are kernels.architecture's
    # (written here as the paper gives them): another copy could silently disagree
    facts = {1.7159: "SQUASH_A", -0.1: "INPUT_BACKGROUND", 1.175: "INPUT_INK"}
    files = sorted((ROOT / "lenet").rglob("*.py")) + sorted((ROOT / "kernels").rglob("*.py"))
    assert len(files) > 20
    again = [f"{path.relative_to(ROOT)}: {value} (kernels.architecture.{facts[value]})"
             for path in files if path.name != "architecture.py"
             for value in _literals(path) if value in facts]
    assert again == []
