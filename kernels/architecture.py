"""LeNet-5 as data, written once: the bottom of the import graph (NumPy only). Everything
here is a fact of the paper (../shared/docs/lenet5.md) except the digit glyphs and MAP's
j, which the paper leaves to us, and the flat order of the parameters, ours: the
squashing function's constants, the input's encoding, the losses, the layers' shapes, the
parameters (PARAMETER_SHAPES in the flat order, PARAMETER_AT their offsets), the C3
connection table and the RBF prototypes.

Test: pytest -q tests/test_architecture.py
"""

import numpy as np

# ------------------------------------------------------------------ squashing, losses
SQUASH_A = 1.7159
SQUASH_S = 2.0 / 3.0
LOSS_KINDS = {"mse": 0, "map": 1}   # the kernels' codes for paper eq. 8 and eq. 9
MAP_J = 10.0                        # eq. 9's constant j (the paper does not give one)

# ------------------------------------------------------------------ shapes
K = 5                          # kernel size of C1, C3, C5
IN_SIZE = 32                   # input 1@32x32: a 28x28 digit and INPUT_PAD pixels a side
C1_MAPS, C1_SIZE = 6, 28
S2_SIZE = 14
C3_MAPS, C3_SIZE = 16, 10
S4_SIZE = 5
C3_MAX_IN = 6                  # most S2 maps one C3 map reads (the table's last column)
C5_UNITS, C5_INPUTS = 120, C3_MAPS * S4_SIZE * S4_SIZE
F6_UNITS = 84
N_CLASSES = 10

IN_LEN = IN_SIZE * IN_SIZE                 # 1024 floats an image
S2_LEN = C1_MAPS * S2_SIZE * S2_SIZE       # 1176
S4_LEN = C5_INPUTS                         # 400

# ------------------------------------------------------------------ the input's encoding
# A 28x28 digit padded with INPUT_PAD background pixels a side to IN_SIZE x IN_SIZE; white
# (background, and what a distortion brings in from outside the image) is INPUT_BACKGROUND,
# full ink INPUT_INK: the paper's values (for mean about 0 and variance about 1, it says;
# MNIST's are 0.03 and 0.12: docs/initialisation.md) (lenet.data.preprocess, kernels.distort)
INPUT_PAD = 2
INPUT_BACKGROUND, INPUT_INK = -0.1, 1.175
# what an image given to the network may hold (ours; kernels/reference.py's
# first_refused_ref refuses the rest): values within a tenth of the encoding's span
# (1.275) of it, one at least as close to the background as INPUT_NEAR (a preprocessed
# image's 2-pixel border is at the background)
INPUT_ACCEPTED = (INPUT_BACKGROUND - 0.1275, INPUT_INK + 0.1275)
INPUT_NEAR = INPUT_BACKGROUND + 0.05

# ------------------------------------------------------------------ parameters
# name -> shape, in the order of the one flat buffer that holds them all (C3's weights
# with their zeros off the table); PARAMETER_AT: name -> offset in that buffer
PARAMETER_SHAPES = {
    "C1.weight": (C1_MAPS, 1, K, K), "C1.bias": (C1_MAPS,),
    "S2.coef": (C1_MAPS,), "S2.bias": (C1_MAPS,),
    "C3.weight": (C3_MAPS, C1_MAPS, K, K), "C3.bias": (C3_MAPS,),
    "S4.coef": (C3_MAPS,), "S4.bias": (C3_MAPS,),
    "C5.weight": (C5_UNITS, C3_MAPS, K, K), "C5.bias": (C5_UNITS,),
    "F6.weight": (F6_UNITS, C5_UNITS), "F6.bias": (F6_UNITS,),
}


def offsets(sizes):
    """({name: offset}, total) of (name, size) pairs laid end to end in one flat buffer."""
    at, total = {}, 0
    for name, size in sizes:
        at[name], total = total, total + size
    return at, total


PARAMETER_AT, PARAMETERS_LEN = offsets(           # PARAMETERS_LEN: 60,900 floats
    (name, int(np.prod(shape))) for name, shape in PARAMETER_SHAPES.items())
CONV_PARAMETERS_LEN = PARAMETER_AT["C5.weight"]        # C1 to S4: 2,616 floats
# the offsets as the kernels slice the buffer (W weight, B bias, C subsampling coefficient)
W1_AT, B1_AT = PARAMETER_AT["C1.weight"], PARAMETER_AT["C1.bias"]
C2_AT, B2_AT = PARAMETER_AT["S2.coef"], PARAMETER_AT["S2.bias"]
W3_AT, B3_AT = PARAMETER_AT["C3.weight"], PARAMETER_AT["C3.bias"]
C4_AT, B4_AT = PARAMETER_AT["S4.coef"], PARAMETER_AT["S4.bias"]
W5_AT, B5_AT = PARAMETER_AT["C5.weight"], PARAMETER_AT["C5.bias"]
W6_AT, B6_AT = PARAMETER_AT["F6.weight"], PARAMETER_AT["F6.bias"]
# what a fused training step does with the gradients: store them, or an SGD or SDLM step
STEP_MODES = {"store": 0, "sgd": 1, "sdlm": 2}

# ------------------------------------------------------------------ connections, output
# Paper's Table I: rows are S2 maps (inputs), columns C3 maps (outputs).
_C3_ROWS = """
X...XXX..XXXX.XX
XX...XXX..XXXX.X
XXX...XXX..X.XXX
.XXX..XXXX..X.XX
..XXX..XXXX.XX.X
...XXX..XXXX.XXX
"""
C3_TABLE = np.array([[c == "X" for c in row] for row in _C3_ROWS.split()], dtype=bool)
C3_TABLE.setflags(write=False)
C3_PAIRS = int(C3_TABLE.sum())   # 60 connected (C3 map, S2 map) pairs

# The 10 RBF prototypes: 7 wide, 12 tall, '#' = ink (+1), '.' = background (-1).
_GLYPHS = """
.......  .......  .......  .......  .......  .......  .......  .......  .......  .......
..###..  ...#...  .#####.  .#####.  ....##.  #######  ..####.  #######  ..###..  .#####.
.#...#.  ..##...  #.....#  ......#  ...#.#.  #......  .#.....  ......#  .#...#.  #.....#
#.....#  .#.#...  ......#  ......#  ..#..#.  #......  #......  .....#.  .#...#.  #.....#
#.....#  ...#...  ......#  ......#  .#...#.  ######.  #......  ....#..  .#...#.  #.....#
#.....#  ...#...  .....#.  ..####.  #....#.  ......#  ######.  ...#...  ..###..  .######
#.....#  ...#...  ...##..  ......#  #######  ......#  #.....#  ...#...  .#...#.  ......#
#.....#  ...#...  ..#....  ......#  .....#.  ......#  #.....#  ..#....  #.....#  .....#.
#.....#  ...#...  .#.....  ......#  .....#.  ......#  #.....#  ..#....  #.....#  ....#..
.#...#.  ...#...  #......  ......#  .....#.  #.....#  #.....#  ..#....  #.....#  ...#...
..###..  .#####.  #######  .#####.  .....#.  .#####.  .#####.  ..#....  .#####.  ..#....
.......  .......  .......  .......  .......  .......  .......  .......  .......  .......
"""
BITMAP_HEIGHT, BITMAP_WIDTH = 12, 7


def _bitmaps():
    rows = [line.split() for line in _GLYPHS.strip().splitlines()]
    maps = np.array([[[c == "#" for c in rows[r][d]] for r in range(BITMAP_HEIGHT)]
                     for d in range(10)])
    return np.where(maps, 1.0, -1.0).reshape(10, BITMAP_HEIGHT * BITMAP_WIDTH)


RBF_CENTERS = _bitmaps()  # (10, 84) float64, +1 ink / -1 background
RBF_CENTERS.setflags(write=False)


def bitmap_text(digit):
    """The prototype of `digit` as 12 lines of 7 characters."""
    m = RBF_CENTERS[digit].reshape(BITMAP_HEIGHT, BITMAP_WIDTH)
    return "\n".join("".join("#" if v > 0 else "." for v in row) for row in m)


# Connection tables of the convolutions, (input maps, output maps): C1 and C5 connect
# every input map to every output map.
CONV_TABLES = {
    "C1": np.ones((1, C1_MAPS), dtype=bool),
    "C3": C3_TABLE,
    "C5": np.ones((C3_MAPS, C5_UNITS), dtype=bool),
}


def fan_in(layer):
    """Inputs of each unit of `layer`: per output map for the convolutions
    (C3's maps take 3, 4 or 6 input maps), one number for the others."""
    if layer in CONV_TABLES:
        k = PARAMETER_SHAPES[layer + ".weight"][-1]
        return CONV_TABLES[layer].sum(axis=0) * k * k
    if layer in ("S2", "S4"):
        return 4
    return PARAMETER_SHAPES["F6.weight"][1]


def trainable_count(name):
    """Free parameters in tensor `name` (the C3 zeros the table forces do not count)."""
    layer, kind = name.split(".")
    if kind == "weight" and layer in CONV_TABLES:
        k = PARAMETER_SHAPES[name][-1]
        return int(CONV_TABLES[layer].sum()) * k * k
    return int(np.prod(PARAMETER_SHAPES[name]))
