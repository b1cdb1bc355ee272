"""Benchmarks of LeNet-5: this project's CUDA kernels against the CPU, PyTorch and CuPy.

    python -m bench --quick                       # a short run of what this machine has
    python -m bench                               # the full suite (writes bench/results/...)
    python -m bench --impl gpu,torch-cuda --what inference,train-step
    python -m bench --help                        # every option

Implementations (bench/impls.py; each is skipped, with the reason, where it
cannot run): gpu (LeNet5(device="gpu"): the fused kernels), torch-cuda, torch-compile
(torch.compile with CUDA graphs; inference and training steps, planned last: each new
batch size costs a compile), cupy (im2col + cuBLAS, forward only), cpu
(LeNet5(device="cpu"), kernels/cpu.py), torch-cpu. PyTorch and CuPy are optional and
never dependencies. Earlier results also have gpu-layers (the retired layer-by-layer
kernels), which bench/report.py still draws.

Rows (bench/suite.py): whole-network inference, each stage's forward (C1+S2, C3+S4,
C5, F6, RBF: the GPU's stage kernels, not on the CPU) and one training step, at
batch sizes 1, 64, 1024, 10000 and 60000, inference also at 1,000,000; one SGD
training pass over 60,000 images at batch sizes 32, 1024 and 60000
(--pass-batch-sizes); the CPU rows up to --max-cpu-batch; inference at batch 1
also as a latency in microseconds; the paper's per-pattern pass (paper-pass, this
project) and PyTorch's per-pattern SGD pass (pattern-pass), compared pattern for
pattern. Rows an implementation does not have are named; none at all is exit 2.
--headline-first puts the GPU rows a short session must keep first; with --out,
results.json is rewritten after every row. Every row is first checked against the
float64 CPU reference (kernels/reference.py, tolerance of kernels/tolerance.py) on
its own inputs: a wrong result is FAILED and not timed.
Then warm-up, then samples between device synchronisations until --repeats and
--min-time; median and spread are reported with images/s, GFLOP/s (FLOP counts
in bench/flops.py), the fraction of the device's float32 peak and GPU speed-ups
over the CPU rows. Timings under the CUDA simulator are refused.

Output (bench/report.py), in --out (default bench/results/<date>-<device>/, or -2/,
-3/, ... where that already holds results; an --out holding results is refused
unless --force): results.json (machine, versions, commit, method, every sample),
results.md (tables, columns per implementation), throughput.png (images/s against
batch size).

Beside it: bench/ptx.py (python -m bench.ptx, the compile census of every kernel),
bench/gpu_session.sh (one prepared GPU session; bench/session.py keeps its books)
and bench/readme.py (python -m bench.report --readme: the README's GPU claims).

Tests: pytest -q tests/test_bench.py
"""
