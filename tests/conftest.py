"""Test configuration: pick the real GPU when there is one, else the CUDA simulator.

NUMBA_ENABLE_CUDASIM must be set before Numba is imported, so the choice is made
here, first, by asking the CUDA driver directly through ctypes. Set the variable
yourself to force either (1 = simulator, 0 = real GPU).

Sizes: `SIMULATOR` is True under the simulator, where every CUDA thread is a
Python thread, so the kernel tests use a few images there and thousands on a GPU.
"""

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys

import pytest
from filelock import FileLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _real_gpu_present():
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 \
        and count.value > 0


if "NUMBA_ENABLE_CUDASIM" not in os.environ:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0" if _real_gpu_present() else "1"
SIMULATOR = os.environ["NUMBA_ENABLE_CUDASIM"] == "1"
SIM_SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sim_site")


def python_path(*first):
    """PYTHONPATH for a child process: these folders, then what the tests run with."""
    return os.pathsep.join([*first, *filter(None, [os.environ.get("PYTHONPATH")])])


if SIMULATOR:   # the faster simulator (fast_sim), here and in every child Python (sim_site)
    from fast_sim import install
    install()
    os.environ["PYTHONPATH"] = python_path(SIM_SITE)
    import simcheck  # noqa: F401  (LENET_SIMCHECK=1 checks every launch for races and bounds)

# CI (.ci/run sets CI=true) installs what the tests need: a missing piece fails there
CI = os.environ.get("CI", "").lower() in ("true", "1")


def missing(reason):
    """Skip this test for a missing dependency, with its reason; fail instead in CI."""
    if CI:
        pytest.fail(f"CI must have this: {reason}")
    pytest.skip(reason)


# Batch sizes for kernel tests: awkward ones (1, 3, not multiples of any block).
BATCHES = (1, 3) if SIMULATOR else (1, 3, 1001, 4099)


def pytest_configure(config):
    # a time limit's SIGINT (bench/gpu_session.sh) must stop the run with its JUnit XML
    # written, even when the suite was started with SIGINT ignored (a background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header(config):
    return f"CUDA: {'simulator (NUMBA_ENABLE_CUDASIM=1)' if SIMULATOR else 'real GPU'}; " \
           f"kernel batch sizes {BATCHES}"


@pytest.fixture(scope="session")
def mnist_dir():
    """The MNIST directory from LENET_DATA (absolute, so that a relative one works from
    any directory); skips with a reason when absent (fails in CI)."""
    path = os.environ.get("LENET_DATA")
    if not path or not os.path.isdir(path):
        missing("MNIST not available: set LENET_DATA to a directory with the IDX files")
    return os.path.abspath(path)


DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="session")
def debian_fashion():
    """Debian's Fashion-MNIST directory (.ci/run installs dataset-fashion-mnist); skips
    where it is not installed, except in CI, where that is a failure."""
    if not os.path.isdir(DEBIAN_FASHION):
        missing("Debian's dataset-fashion-mnist is not installed "
                f"(apt-get install dataset-fashion-mnist puts it in {DEBIAN_FASHION})")
    return DEBIAN_FASHION


def run_folder(tmp_path_factory, worker_id):
    """A folder shared by the run's pytest-xdist workers (each has its own below it)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session", autouse=True)
def cpu_code_compiled_once(tmp_path_factory, worker_id):
    """The CPU paths' code (kernels/cpu.py, float32) compiled into Numba's cache by the
    first pytest-xdist worker while the others wait, then loaded from it: in a fresh clone
    the workers, and the children they started, each compiled it at once."""
    from lenet.kernels import cpu
    if worker_id == "master" or not cpu.CACHE:
        return
    with FileLock(str(run_folder(tmp_path_factory, worker_id) / "cpu-code.lock")):
        import warnings

        import numpy as np

        from lenet import LeNet5
        from lenet.train import Trainer
        x = np.full((2, 1, 32, 32), -0.1, np.float32)
        labels = np.array([1, 7], np.int32)
        try:   # a fault here is the tests' to report, each where it shows, not every test's
            model = LeNet5(device="cpu", seed=0)
            model.predict(x), model.forward_all(x), model.second_derivatives(x, labels)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")    # the recipes' advice on init and set sizes
                Trainer(model, x, labels, recipe="sgd", batch_size=2).train_pass()
                Trainer(model, x, labels, recipe="paper").train_pass()
        except Exception:
            pass


@pytest.fixture(scope="session")
def ptx_census(tmp_path_factory, worker_id):
    """ptx.json of `python -m bench.ptx` over every kernel (compiled for sm_90 with the
    CUDA toolkit, in a subprocess with the simulator off), made once for the run: the
    first pytest-xdist worker to ask makes it, the others wait for it and read it; skips
    without a toolkit, except in CI, where it fails."""
    from bench import ptx
    problem = ptx.toolkit_problem()
    if problem:
        missing(f"no CUDA toolkit for the compile census: {problem}")
    shared = run_folder(tmp_path_factory, worker_id)
    out = shared / "ptx-census"
    with FileLock(str(shared / "ptx-census.lock")):
        if not (out / "ptx.json").exists():
            env = dict(os.environ, PYTHONPATH=ROOT, NUMBA_ENABLE_CUDASIM="0")
            p = subprocess.run([sys.executable, "-m", "bench.ptx", "--out", str(out)],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            assert p.returncode in (0, 1), p.stderr[-3000:]  # 1: problems, tests/test_ptx.py
    with open(out / "ptx.json") as f:
        results = json.load(f)
    results["markdown"] = (out / "ptx.md").read_text()
    return results


def limited_lenet(args, max_bytes):
    """`python -m lenet ARGS` with files limited to max_bytes (a full disk, for the test;
    SIGXFSZ ignored so that a write past it fails with EFBIG); the CompletedProcess."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return subprocess.run([sys.executable, "-m", "lenet", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, preexec_fn=limit)


def lenet_cli(args, capsys):
    """(exit status, stdout, stderr) of lenet.cli.main(args) in this process."""
    from lenet.cli import main
    try:
        status = main([str(a) for a in args])
    except SystemExit as e:
        status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err
