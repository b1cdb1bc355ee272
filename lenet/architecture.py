"""LeNet-5 as data: the C3 connection table, the RBF digit bitmaps, the layers.

Everything here is a fact of the paper (../shared/docs/lenet5.md) except the
digit glyphs, which the paper leaves to us.
"""

import numpy as np

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


# The trainable layers in order: name -> kind and parameter shapes. Connection
# tables are (input maps, output maps); C1 and C5 are fully connected.
CONV_TABLES = {
    "C1": np.ones((1, 6), dtype=bool),
    "C3": C3_TABLE,
    "C5": np.ones((16, 120), dtype=bool),
}
PARAMETER_SHAPES = {
    "C1.weight": (6, 1, 5, 5), "C1.bias": (6,),
    "S2.coef": (6,), "S2.bias": (6,),
    "C3.weight": (16, 6, 5, 5), "C3.bias": (16,),
    "S4.coef": (16,), "S4.bias": (16,),
    "C5.weight": (120, 16, 5, 5), "C5.bias": (120,),
    "F6.weight": (84, 120), "F6.bias": (84,),
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
