"""A CuPy baseline of LeNet-5's forward: im2col + cuBLAS matmul, as a user would
write it without hand-written kernels.

    C1, C3, C5  im2col (a strided window view, copied to (N*Ho*Wo, C*K*K)), one
                float32 matmul with the weights (M, C*K*K) (cuBLAS), then bias and
                squash in one elementwise kernel, then back to (N,M,Ho,Wo). C3 is
                computed densely over all 96 map pairs with the 36 the table leaves
                out as zero weights (FLOP rates count only the 60 real ones)
    S2, S4      reshape-and-sum of 2x2 blocks, then coef, bias and squash fused
    F6          matmul, then bias and squash fused
    RBF         (x - c)^2 summed over the 84 inputs

The network is written against an array module `xp`: cupy on the GPU, numpy in
tests/test_bench.py (which checks the maths without a GPU). CuPy's matmuls stay
float32 unless CUPY_TF32=1, which the implementation refuses.
"""

import importlib
import os

import numpy as np

from bench.capability import Unavailable
from lenet.kernels.architecture import CONV_TABLES, RBF_CENTERS
from lenet.kernels.reference import SQUASH_A, SQUASH_S

K = 5
_A, _S = float(np.float32(SQUASH_A)), float(np.float32(SQUASH_S))


def _cupy_kernels(cp):
    """Fused elementwise tails: bias + squash, and coef * sum + bias + squash."""
    bias_squash = cp.ElementwiseKernel(
        "float32 a, float32 b", "float32 y",
        f"y = {_A!r}f * tanhf({_S!r}f * (a + b))", "lenet_bias_squash")
    scale_bias_squash = cp.ElementwiseKernel(
        "float32 s, float32 c, float32 b", "float32 y",
        f"y = {_A!r}f * tanhf({_S!r}f * (c * s + b))", "lenet_scale_bias_squash")
    return (lambda a, b: bias_squash(a, b)), (lambda s, c, b: scale_bias_squash(s, c, b))


def _numpy_kernels():
    def bias_squash(a, b):
        return (_A * np.tanh(_S * (a + b))).astype(np.float32, copy=False)

    def scale_bias_squash(s, c, b):
        return (_A * np.tanh(_S * (c * s + b))).astype(np.float32, copy=False)
    return bias_squash, scale_bias_squash


class ArrayLeNet5:
    """LeNet-5's forward on array module xp (cupy or numpy), float32."""

    def __init__(self, params, xp):
        self.xp = xp
        self.as_strided = importlib.import_module(xp.__name__ + ".lib.stride_tricks").as_strided
        if xp is np:
            self.bias_squash, self.scale_bias_squash = _numpy_kernels()
        else:
            self.bias_squash, self.scale_bias_squash = _cupy_kernels(xp)

        def dev(a):
            return xp.ascontiguousarray(xp.asarray(np.asarray(a, dtype=np.float32)))
        self.weights_t = {}          # (C*K*K, M): cols @ weights_t is the convolution
        for layer, table in CONV_TABLES.items():
            w = np.asarray(params[layer + ".weight"], np.float32) * table.T[:, :, None, None]
            self.weights_t[layer] = dev(w.reshape(w.shape[0], -1).T)
        self.p = {k: dev(v) for k, v in params.items()}
        self.f6_weight_t = dev(np.asarray(params["F6.weight"]).T)
        self.centers = dev(RBF_CENTERS)

    def conv(self, layer, x):
        """x (N,C,H,W) -> (N,M,H-4,W-4)."""
        xp = self.xp
        n, c, h, w = x.shape
        ho, wo = h - K + 1, w - K + 1
        m = self.weights_t[layer].shape[1]
        sn, sc, sh, sw = x.strides
        windows = self.as_strided(x, (n, ho, wo, c, K, K), (sn, sh, sw, sc, sh, sw))
        cols = xp.ascontiguousarray(windows).reshape(n * ho * wo, c * K * K)   # im2col
        a = cols @ self.weights_t[layer]                           # cuBLAS sgemm
        y = self.bias_squash(a, self.p[layer + ".bias"])           # (N*Ho*Wo, M)
        return xp.ascontiguousarray(y.reshape(n, ho, wo, m).transpose(0, 3, 1, 2))

    def subsample(self, layer, x):
        """x (N,C,H,W) -> (N,C,H/2,W/2)."""
        n, c, h, w = x.shape
        s = x.reshape(n, c, h // 2, 2, w // 2, 2).sum(axis=(3, 5))
        coef, bias = self.p[layer + ".coef"], self.p[layer + ".bias"]
        return self.scale_bias_squash(s, coef[:, None, None], bias[:, None, None])

    def full(self, x):
        return self.bias_squash(x @ self.f6_weight_t, self.p["F6.bias"])

    def rbf(self, x):
        diff = x[:, None, :] - self.centers[None, :, :]
        return (diff * diff).sum(axis=2)

    def layer(self, stage, x):
        """One stage of bench.flops.STAGES (its layers, joined by "+", in turn)."""
        for layer in stage.split("+"):
            if layer in CONV_TABLES:
                x = self.conv(layer, x)
                x = x.reshape(len(x), -1) if layer == "C5" else x
            elif layer in ("S2", "S4"):
                x = self.subsample(layer, x)
            else:
                x = self.full(x) if layer == "F6" else self.rbf(x)
        return x

    def forward(self, x):
        """Penalties (N,10) of images (N,1,32,32)."""
        x = self.subsample("S2", self.conv("C1", x))
        x = self.subsample("S4", self.conv("C3", x))
        x = self.conv("C5", x)
        return self.rbf(self.full(x.reshape(x.shape[0], -1)))


class CuPyImpl:
    """The CuPy baseline on the GPU: inference and layer rows only."""

    name, kind = "cupy", "gpu"
    whats = frozenset({"inference", "layer"})

    def __init__(self, params):
        try:
            import cupy
        except ImportError as e:
            raise Unavailable(f"CuPy is not installed ({e})") from e
        if os.environ.get("CUPY_TF32", "0") not in ("", "0"):
            raise Unavailable("refused: CUPY_TF32 is set, so matmuls would not be float32")
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDARuntimeError without a driver or device
            raise Unavailable(f"CuPy finds no CUDA GPU ({e})") from e
        if count < 1:
            raise Unavailable("CuPy finds no CUDA GPU")
        self.cp = cupy
        self.params = params
        self.reset()

    def info(self):
        props = self.cp.cuda.runtime.getDeviceProperties(self.cp.cuda.Device().id)
        name = props["name"]
        return {"device": name.decode() if isinstance(name, bytes) else str(name),
                "cuda_runtime": self.cp.cuda.runtime.runtimeGetVersion()}

    def reset(self):
        self.net = ArrayLeNet5(self.params, self.cp)

    def sync(self):
        self.cp.cuda.Device().synchronize()

    def to_host(self, y):
        return self.cp.asnumpy(y)

    def release(self):
        self.cp.get_default_memory_pool().free_all_blocks()

    def inference(self, x):
        xd = self.cp.asarray(x)
        return lambda: self.net.forward(xd)

    def layer(self, layer, x):
        xd = self.cp.asarray(x)
        return lambda: self.net.layer(layer, xd)
