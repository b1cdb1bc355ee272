"""Floating-point operations of LeNet-5 per image, counted from the layer shapes.

A connection is one multiply-add of an input (or of the constant 1 of a bias)
with a weight: 2 FLOPs. The paper counts connections the same way (C1 122,304,
S2 5,880, C3 151,600, S4 2,000, C5 48,120, F6 10,164), so its table is checked
by tests/test_bench.py. The RBF output does a subtract, a square and an add per
(unit, input) pair: 3 FLOPs per connection. The squashing function (tanh) is
not counted. Training (forward, backward to every parameter, update) is counted
as 3x the forward: the backward pass does about twice the forward's work (one
product for the gradient of the inputs and one for that of the weights).

    python -c "import bench.flops as f; print(*f.napkin_lines(), sep='\\n')"
"""

import numpy as np

from lenet.kernels.architecture import CONV_TABLES, PARAMETER_SHAPES, RBF_CENTERS

LAYERS = ("C1", "S2", "C3", "S4", "C5", "F6", "RBF")
# the benchmark's layer rows: the stages the GPU's stage kernels run (kernels/forward.py),
# a convolution with its subsampling; earlier results' rows are single LAYERS
STAGES = ("C1+S2", "C3+S4", "C5", "F6", "RBF")
INPUT_SHAPE = (1, 32, 32)
TRAIN_FACTOR = 3          # forward + backward (about 2x forward), per image
SUBSAMPLE = 2             # S2 and S4 sum 2x2 blocks


def layer_shapes():
    """{layer: (input shape, output shape)} of one image, walked from the parameters."""
    shapes, shape = {}, INPUT_SHAPE
    for layer in LAYERS:
        if layer in CONV_TABLES:
            m, _, k, _ = PARAMETER_SHAPES[layer + ".weight"]
            out = (m, shape[1] - k + 1, shape[2] - k + 1)
        elif layer in ("S2", "S4"):
            out = (shape[0], shape[1] // SUBSAMPLE, shape[2] // SUBSAMPLE)
        elif layer == "F6":
            out = (PARAMETER_SHAPES["F6.weight"][0],)
        else:
            out = (RBF_CENTERS.shape[0],)
        shapes[layer] = (shape, out)
        shape = out if layer != "C5" else (out[0],)
    return shapes


def connections(layer):
    """Connections of `layer` per image, as the paper counts them (biases included)."""
    _, out = layer_shapes()[layer]
    if layer in CONV_TABLES:
        k = PARAMETER_SHAPES[layer + ".weight"][-1]
        pixels = out[1] * out[2]
        return pixels * (int(CONV_TABLES[layer].sum()) * k * k + out[0])
    if layer in ("S2", "S4"):
        return out[0] * out[1] * out[2] * (SUBSAMPLE * SUBSAMPLE + 1)
    if layer == "F6":
        o, i = PARAMETER_SHAPES["F6.weight"]
        return o * (i + 1)
    return int(np.prod(RBF_CENTERS.shape))


def flops(layer):
    """Forward FLOPs of `layer` (or of a stage, its layers joined by "+") per image."""
    if "+" in layer:
        return sum(flops(part) for part in layer.split("+"))
    return (3 if layer == "RBF" else 2) * connections(layer)


def forward_flops():
    """Forward FLOPs of the whole network per image."""
    return sum(flops(layer) for layer in LAYERS)


def train_flops():
    """FLOPs of one training step per image (forward + backward + update), about."""
    return TRAIN_FACTOR * forward_flops()


def flops_per_image(what, layer=None):
    """FLOPs per image of a benchmark row."""
    if what == "layer":
        return flops(layer)
    if what == "inference":
        return forward_flops()
    return train_flops()


def _formula(layer):
    (_, out) = layer_shapes()[layer]
    if layer in CONV_TABLES:
        m, _, k, _ = PARAMETER_SHAPES[layer + ".weight"]
        pairs = int(CONV_TABLES[layer].sum())
        return f"{out[1]}*{out[2]} pixels * ({pairs} map pairs*{k}*{k} + {m} biases)"
    if layer in ("S2", "S4"):
        return f"{out[0]}*{out[1]}*{out[2]} units * (4 inputs + 1 bias)"
    if layer == "F6":
        o, i = PARAMETER_SHAPES["F6.weight"]
        return f"{o} units * ({i} inputs + 1 bias)"
    return "10 units * 84 inputs; 3 FLOPs each (subtract, square, add)"


def napkin_rows():
    """(layer, formula, connections, FLOPs) for every layer, then the totals."""
    rows = [(layer, _formula(layer), connections(layer), flops(layer)) for layer in LAYERS]
    rows.append(("forward", "sum of the layers", sum(r[2] for r in rows), forward_flops()))
    rows.append(("train step", f"{TRAIN_FACTOR} x forward (backward ~ 2 x forward)", None,
                 train_flops()))
    return rows


def napkin_lines():
    """The napkin maths as text lines."""
    lines = ["FLOPs per image (a connection = 1 multiply-add = 2 FLOPs; tanh not counted):"]
    for layer, formula, conn, fl in napkin_rows():
        conn_text = f"{conn:>9,} connections" if conn is not None else " " * 21
        lines.append(f"  {layer:<10} {conn_text}  {fl:>10,} FLOPs   {formula}")
    return lines
