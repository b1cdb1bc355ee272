"""LeNet-5 as an ONNX graph (opset 17, IR version 8: ONNX Runtime 1.13 and later), in
float32: onnx_model(model) builds it, to_onnx(model, path) writes it (`lenet export`).

Input images (N,1,32,32) as lenet.data.preprocess makes them (the graph does not check
their encoding as LeNet5 does: 0..255 pixels give answers, wrong ones); outputs penalties
(N,10) and class (N,) int64 (ArgMin, the first of equal ones as NumPy's argmin). The
layers as the paper gives them: C3 a masked convolution (C3.weight times the 0/1 table, so the
zeros stay zeros in any tool that retrains the graph), S2 and S4 the 2x2 sum (AveragePool
times 4, exact) times a coefficient plus a bias, the squash as Mul-Tanh-Mul, the RBF as
ReduceSum((F6 - centers)^2). Initialisers carry the project's parameter names; the
metadata the class names and data set. `onnx` is optional (pip install
'lenet5-cuda[onnx]'). Tested by tests/test_export.py (ONNX Runtime against LeNet5 on
the 10,000 MNIST test digits).
"""

import json
import os

import numpy as np

from lenet import __version__
from lenet.checkpoint import write_atomically
from lenet.kernels.architecture import C3_TABLE, RBF_CENTERS, SQUASH_A, SQUASH_S

FORMATS = ("onnx",)
OPSET = 17
IR_VERSION = 8
INPUT, PENALTIES, CLASS = "images", "penalties", "class"
EXTRA = "onnx"  # setup.cfg's extra that installs onnx and onnxruntime


def require_onnx():
    """The onnx module, or ImportError naming the extra that installs it."""
    try:
        import onnx
    except ImportError:
        raise ImportError(f"ONNX export needs the onnx package: pip install "
                          f"'lenet5-cuda[{EXTRA}]' (or pip install onnx)") from None
    return onnx


class _Graph:
    """The nodes and initialisers of one graph, in order; each node is named after its
    output."""

    def __init__(self, onnx):
        self.helper, self.numpy_helper = onnx.helper, onnx.numpy_helper
        self.nodes, self.initializers = [], []

    def constant(self, name, value, dtype=np.float32):
        value = np.asarray(value, dtype)
        self.initializers.append(self.numpy_helper.from_array(value, name))
        return name

    def node(self, op, inputs, output, **attributes):
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output,
                                                **attributes))
        return output

    def squash(self, a, name):
        """f(a) = A tanh(S a)."""
        scaled = self.node("Mul", [a, "squash.S"], f"{name}.Sa")
        return self.node("Mul", [self.node("Tanh", [scaled], f"{name}.tanh"), "squash.A"],
                         name)

    def subsample(self, x, layer, params):
        """coef * (sum of each 2x2 block) + bias, per map, then the squash."""
        mean = self.node("AveragePool", [x], f"{layer}.mean", kernel_shape=[2, 2],
                         strides=[2, 2])
        block_sum = self.node("Mul", [mean, "four"], f"{layer}.sum")
        coef = self.constant(f"{layer}.coef", params[f"{layer}.coef"].reshape(-1, 1, 1))
        bias = self.constant(f"{layer}.bias", params[f"{layer}.bias"].reshape(-1, 1, 1))
        a = self.node("Add", [self.node("Mul", [block_sum, coef], f"{layer}.scaled"), bias],
                      f"{layer}.a")
        return self.squash(a, layer)

    def conv(self, x, layer, params, weight=None):
        weight = weight or self.constant(f"{layer}.weight", params[f"{layer}.weight"])
        bias = self.constant(f"{layer}.bias", params[f"{layer}.bias"])
        return self.squash(self.node("Conv", [x, weight, bias], f"{layer}.a",
                                     kernel_shape=[5, 5]), layer)


def onnx_model(model):
    """The onnx.ModelProto of LeNet5 `model` (any device or dtype; exported in float32):
    inputs images (N,1,32,32), outputs penalties (N,10) float32 and class (N,) int64."""
    onnx = require_onnx()
    helper = onnx.helper
    params = {k: np.asarray(v, np.float32) for k, v in model.parameters().items()}
    g = _Graph(onnx)
    g.constant("squash.A", SQUASH_A)
    g.constant("squash.S", SQUASH_S)
    g.constant("four", 4.0)
    x = g.conv(INPUT, "C1", params)
    x = g.subsample(x, "S2", params)
    mask = g.constant("C3.connections", C3_TABLE.T[:, :, None, None])
    masked = g.node("Mul", [g.constant("C3.weight", params["C3.weight"]), mask],
                    "C3.masked_weight")
    x = g.conv(x, "C3", params, weight=masked)
    x = g.subsample(x, "S4", params)
    x = g.node("Flatten", [g.conv(x, "C5", params)], "C5.flat", axis=1)
    g.constant("F6.weight", params["F6.weight"])
    g.constant("F6.bias", params["F6.bias"])
    x = g.squash(g.node("Gemm", [x, "F6.weight", "F6.bias"], "F6.a", transB=1), "F6")
    # RBF: (N,1,84) - (10,84) -> (N,10,84), squared, summed over the 84 units
    column = g.node("Unsqueeze", [x, g.constant("rbf.unsqueeze_axes", [1], np.int64)],
                    "rbf.F6")
    diff = g.node("Sub", [column, g.constant("rbf.centers", RBF_CENTERS)], "rbf.diff")
    square = g.node("Mul", [diff, diff], "rbf.square")
    g.node("ReduceSum", [square, g.constant("rbf.sum_axes", [2], np.int64)], PENALTIES,
           keepdims=0)
    g.node("ArgMin", [PENALTIES], CLASS, axis=1, keepdims=0, select_last_index=0)

    float32, int64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    graph = helper.make_graph(
        g.nodes, "lenet5",
        [helper.make_tensor_value_info(INPUT, float32, ["N", 1, 32, 32])],
        [helper.make_tensor_value_info(PENALTIES, float32, ["N", 10]),
         helper.make_tensor_value_info(CLASS, int64, ["N"])],
        initializer=g.initializers,
        doc_string="LeNet-5 (LeCun et al. 1998): images as lenet.data.preprocess makes "
        "them -> RBF penalties (smaller is better) and the class of the smallest")
    onnx_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   ir_version=IR_VERSION, producer_name="lenet5-cuda",
                                   producer_version=__version__)
    helper.set_model_props(onnx_proto, {"classes": json.dumps(list(model.classes)),
                                        "dataset": json.dumps(model.dataset)})
    onnx.checker.check_model(onnx_proto)
    return onnx_proto


def to_onnx(model, path, overwrite=False):
    """Write `model` as ONNX to `path` and return the path. An existing file is replaced
    only with overwrite=True (FileExistsError otherwise); the file is written beside it
    under a temporary name and renamed, so a failed write leaves no half file."""
    proto = onnx_model(model)
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; give a file name")
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    write_atomically(path, lambda f: f.write(proto.SerializeToString()), ".onnx.tmp")
    return path
