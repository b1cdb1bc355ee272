"""C3 connection tables other than the paper's, for the tests of what takes any table and
what takes only Table I's 60 pairs."""

import numpy as np

from lenet.kernels.architecture import C3_TABLE


def table_of(pairs):
    """Table I with one connection added (61 pairs) or taken away (59): tables the forward
    kernels and the stage kernels take, whose pair count the fused kernels are not built for."""
    table = C3_TABLE.copy()
    counts = table.sum(axis=0)
    if pairs == 61:
        m = int(np.flatnonzero(counts < 6)[0])
        table[np.flatnonzero(~table[:, m])[0], m] = True
    else:
        m = int(np.flatnonzero(counts > 1)[0])
        table[np.flatnonzero(table[:, m])[0], m] = False
    assert table.sum() == pairs
    return table

