"""LeNet-5 in PyTorch, built to the same architecture, for comparison only.

    C1, C3, C5  F.conv2d (cuDNN on CUDA); C3's weight is multiplied by the
                connection table, so the 36 pairs it leaves out stay exact zeros
                and get zero gradients
    S2, S4      avg_pool2d(x, 2) * 4 (the 2x2 sum, exactly) * coef + bias
    squash      1.7159 tanh(2a/3) after C1, S2, C3, S4, C5 and F6
    F6          F.linear
    RBF         sum_j (x_j - c_ij)^2 against lenet.RBF_CENTERS (fixed)
    loss        MSE (paper eq. 8): the penalty of the correct class, mean over
                the batch; SGD with momentum through torch.optim.SGD, also at batch
                size 1 over a whole pass (the pattern-pass rows: PyTorch's
                counterpart of the paper's per-pattern pass, which needs SDLM)

TorchCompileImpl (torch-compile) runs the same functions through
torch.compile(mode="reduce-overhead", fullgraph=True): Inductor's fused Triton kernels,
replayed as CUDA graphs (the SGD update stays eager). A function that does not
compile whole raises, so a row is never eager code under the compiled name.

Parameters are loaded from the project's model (names of
kernels.architecture.PARAMETER_SHAPES). Float32 only: TF32 is switched off for
cuBLAS and cuDNN, so the check uses the project's float32 tolerance.
Imported only when torch is installed; torch is never a dependency.
"""

import numpy as np
import torch
import torch.nn.functional as F

from bench.capability import TORCH_WHATS, Unavailable
from lenet.kernels.architecture import C3_TABLE, RBF_CENTERS
from lenet.kernels.reference import SQUASH_A, SQUASH_S


def squash(a):
    return SQUASH_A * torch.tanh(SQUASH_S * a)


class TorchLeNet5:
    """The network as functions of leaf tensors p["C1.weight"], ... (requires_grad)."""

    def __init__(self, params, device, dtype=torch.float32):
        self.p = {k: torch.tensor(np.asarray(v), dtype=dtype, device=device).requires_grad_()
                  for k, v in params.items()}
        self.c3_mask = torch.tensor(C3_TABLE.T[:, :, None, None], dtype=dtype, device=device)
        self.centers = torch.tensor(RBF_CENTERS, dtype=dtype, device=device)

    def parameters(self):
        return list(self.p.values())

    def conv(self, layer, x):
        w = self.p[layer + ".weight"]
        if layer == "C3":
            w = w * self.c3_mask
        return squash(F.conv2d(x, w, self.p[layer + ".bias"]))

    def subsample(self, layer, x):
        coef, bias = self.p[layer + ".coef"], self.p[layer + ".bias"]
        block_sum = F.avg_pool2d(x, 2) * 4.0
        return squash(block_sum * coef[None, :, None, None] + bias[None, :, None, None])

    def full(self, x):
        return squash(F.linear(x, self.p["F6.weight"], self.p["F6.bias"]))

    def rbf(self, x):
        diff = x[:, None, :] - self.centers[None, :, :]
        return (diff * diff).sum(dim=2)

    def layer(self, stage, x):
        """One stage of bench.flops.STAGES (its layers, joined by "+", in turn)."""
        for layer in stage.split("+"):
            if layer in ("C1", "C3"):
                x = self.conv(layer, x)
            elif layer == "C5":
                x = self.conv(layer, x).flatten(1)
            elif layer in ("S2", "S4"):
                x = self.subsample(layer, x)
            else:
                x = self.full(x) if layer == "F6" else self.rbf(x)
        return x

    def forward(self, x):
        """Penalties (N,10) of images (N,1,32,32)."""
        x = self.subsample("S2", self.conv("C1", x))
        x = self.subsample("S4", self.conv("C3", x))
        x = self.conv("C5", x).flatten(1)
        return self.rbf(self.full(x))

    @staticmethod
    def losses(y, labels):
        """Per-pattern MSE losses: the correct class's penalty."""
        return y.gather(1, labels[:, None])[:, 0]


class TorchImpl:
    """torch-cpu or torch-cuda."""

    whats = TORCH_WHATS   # pattern-pass: train_pass at batch size 1

    def __init__(self, device, params):
        self.name = f"torch-{device}"
        self.kind = "gpu" if device == "cuda" else "cpu"
        if device == "cuda":
            if not torch.cuda.is_available():
                raise Unavailable("PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)")
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        self.device = torch.device(device)
        self.params = params
        self.reset()

    def info(self):
        if self.kind == "cpu":
            return {"threads": torch.get_num_threads(), "threads_source": "torch.get_num_threads()"}
        return {"device": torch.cuda.get_device_name(self.device),
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                "cudnn_benchmark": True, "tf32": False}

    def reset(self):
        self.net = TorchLeNet5(self.params, self.device)

    def sync(self):
        if self.kind == "gpu":
            torch.cuda.synchronize(self.device)

    def upload(self, a):
        if hasattr(a, "__cuda_array_interface__"):   # a device array: read in place
            return torch.as_tensor(a, device=self.device)
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def to_host(self, y):
        return y.detach().cpu().numpy()

    def release(self):
        if self.kind == "gpu":
            torch.cuda.empty_cache()

    def forward(self, x):
        return self.net.forward(x)

    def step_losses(self, x, labels):
        """Per-pattern losses of a training step (the graph its backward runs through)."""
        return self.net.losses(self.net.forward(x), labels)

    def inference(self, x):
        xd = self.upload(x)

        def run():
            with torch.inference_mode():
                return self.forward(xd)
        return run

    def layer(self, layer, x):
        xd = self.upload(x)

        def run():
            with torch.inference_mode():
                return self.net.layer(layer, xd)
        return run

    def train_step(self, x, labels, lr, momentum):
        return _TorchStep(self, x, labels, lr, momentum)

    def train_pass(self, images, labels, batch_size, lr, momentum, seed=0):
        return _TorchPass(self, images, labels, batch_size, lr, momentum, seed)


class _TorchStep:
    def __init__(self, impl, x, labels, lr, momentum):
        self.impl, self.net = impl, impl.net
        self.x, self.labels = impl.upload(x), impl.upload(labels.astype(np.int64))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=momentum)
        self._losses = None

    def run(self):
        self.opt.zero_grad(set_to_none=True)
        losses = self.impl.step_losses(self.x, self.labels)
        losses.mean().backward()
        self.opt.step()
        self._losses = losses

    def outputs(self):
        out = {"loss": self._losses.detach().cpu().numpy()}
        for name, p in self.net.p.items():
            out[f"grad.{name}"] = p.grad.detach().cpu().numpy()
            out[f"momentum.{name}"] = self.opt.state[p]["momentum_buffer"].detach().cpu().numpy()
        return out


class _TorchPass:
    """The loop of lenet.train.Trainer.train_pass in PyTorch: a seeded permutation,
    batches gathered on the device, step, loss and error counts kept on the device."""

    def __init__(self, impl, images, labels, batch_size, lr, momentum, seed):
        self.net, self.device = impl.net, impl.device
        self.images = impl.upload(images)
        self.labels = impl.upload(labels.astype(np.int64))
        self.batch_size = batch_size
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=momentum)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.stats = torch.zeros(2, dtype=torch.float64, device=self.device)

    def _pass(self, n):
        order = torch.randperm(n, generator=self.gen, device=self.device)
        self.stats.zero_()
        for start in range(0, n, self.batch_size):
            index = order[start:start + self.batch_size]
            x, labels = self.images.index_select(0, index), self.labels.index_select(0, index)
            self.opt.zero_grad(set_to_none=True)
            y = self.net.forward(x)
            losses = self.net.losses(y, labels)
            losses.mean().backward()
            self.opt.step()
            with torch.no_grad():
                self.stats[0] += losses.sum()
                self.stats[1] += (y.argmin(dim=1) != labels).sum()
        loss_sum, errors = self.stats.tolist()
        return loss_sum / n, errors / n

    def warm_up(self, run_pass=True):
        if run_pass:
            self._pass(min(len(self.labels), 2 * self.batch_size))

    def run(self):
        return self._pass(len(self.labels))


COMPILE_MODE = "reduce-overhead"   # Inductor's kernels, launched as CUDA graph replays


class TorchCompileImpl(TorchImpl):
    """torch-compile: torch-cuda's network through torch.compile with CUDA graphs."""

    whats = frozenset({"inference", "train-step"})

    def __init__(self, params, device="cuda"):   # device "cpu": for tests only
        if device == "cuda":
            if not torch.cuda.is_available():
                raise Unavailable("PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)")
            try:
                import triton  # noqa: F401  (Inductor's GPU code generator)
            except ImportError as e:
                raise Unavailable(f"torch.compile needs Triton on the GPU ({e})") from e
        super().__init__(device, params)
        self.name = "torch-compile"

    def info(self):
        return {**super().info(), "compile_mode": COMPILE_MODE, "fullgraph": True}

    def reset(self):
        # One network and one pair of compiled functions for all rows: a new network
        # would fail the compiled code's guards and cost a compile per row (tens of
        # seconds). A row's reset copies the starting parameters into the same tensors;
        # a new batch size recompiles once with a dynamic batch (Dynamo's default).
        if getattr(self, "net", None) is None:
            super().reset()
            self._forward = torch.compile(self.net.forward, mode=COMPILE_MODE, fullgraph=True)
            self._step_losses = torch.compile(super().step_losses, mode=COMPILE_MODE,
                                              fullgraph=True)
            return
        with torch.no_grad():
            for name, p in self.net.p.items():
                p.copy_(torch.from_numpy(np.ascontiguousarray(self.params[name])))
                p.grad = None

    def forward(self, x):
        torch.compiler.cudagraph_mark_step_begin()  # the last call's outputs are done with
        return self._forward(x)

    def step_losses(self, x, labels):
        torch.compiler.cudagraph_mark_step_begin()
        return self._step_losses(x, labels)
