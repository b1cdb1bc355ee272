"""What a benchmark ran on: machine, CPU peak, GPU name and peak, versions, commit.

Nothing here imports torch or cupy: versions come from the installed package
metadata, so that describing the machine never initialises a GPU library.
"""

import ctypes
import datetime
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Float32 peak of the CUDA cores (no tensor cores), from NVIDIA's datasheets:
# (words that must all be in the device name, GFLOP/s). First match wins.
KNOWN_GPU_PEAKS = (
    (("H100", "PCIE"), 51_200),
    (("H100", "NVL"), 60_000),
    (("H100",), 67_000),          # SXM5 (names like "NVIDIA H100 80GB HBM3")
    (("H200", "NVL"), 60_000),
    (("H200",), 67_000),
    (("A100",), 19_500),
)
CPU_PEAK_MATMUL = 2048            # n of the n x n float32 matmul that measures the CPU


def simulator_reason():
    """Why GPU timings would be false (the CUDA simulator is active), or None."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return "the CUDA simulator is active (NUMBA_ENABLE_CUDASIM=1): it runs kernels " \
               "as Python threads, so its times are not GPU timings"
    try:
        from numba import config
        if config.ENABLE_CUDASIM:
            return "numba.cuda runs in its simulator (numba.config.ENABLE_CUDASIM)"
    except Exception:  # numba missing: nothing simulated
        pass
    return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def numpy_blas_threads():
    """(threads NumPy's BLAS uses, how that was found)."""
    names = ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
             "openblas_get_num_threads", "MKL_Get_Max_Threads")
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "numpy" in line and
                    ("blas" in line.lower() or "mkl" in line.lower())}
    except OSError:
        libs = set()
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                return int(fn()), f"{name}() of {os.path.basename(path)}"
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            return int(os.environ[var]), f"${var}"
    return usable_cores(), "not queried: BLAS libraries default to every usable core"


def cpu_matmul_gflops(n=CPU_PEAK_MATMUL, repeats=3):
    """GFLOP/s of each of `repeats` n x n float32 NumPy matmuls (all BLAS threads),
    after an untimed one (thread pool start, page faults)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        samples.append(2.0 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return samples


def known_gpu_peak(name):
    """(GFLOP/s, source) of the float32 peak of a GPU named `name`, or (None, reason)."""
    upper = (name or "").upper()
    for words, peak in KNOWN_GPU_PEAKS:
        if all(w in upper for w in words):
            return float(peak), f"datasheet float32 (non-tensor) peak of {' '.join(words)}"
    return None, "unknown device: pass --peak-gflops to get fractions of peak"


def package_version(*names):
    """Version of the first installed distribution among `names` (prefix* matches)."""
    for name in names:
        if name.endswith("*"):
            prefix = name[:-1].lower()
            for dist in importlib.metadata.distributions():
                dist_name = (dist.metadata["Name"] or "").lower()
                if dist_name.startswith(prefix):
                    return f"{dist.version} ({dist_name})"
            continue
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions():
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": package_version("numba"),
        "numba-cuda": package_version("numba-cuda"),
        "cupy": package_version("cupy", "cupy-cuda*"),
        "torch": package_version("torch"),
        "matplotlib": package_version("matplotlib"),
    }


def git_commit(root=ROOT):
    """(commit, dirty) of the working tree; where there is no git checkout (the
    device tool sends a copy without .git), the hash on the first line of a `.commit`
    file written beside it by the sender (bench/gpu_session.sh --prepare), "dirty" on
    a second line if the sender had uncommitted changes; else ("unknown", None)."""
    recorded = os.path.join(root, ".commit")
    if not os.path.exists(os.path.join(root, ".git")) and os.path.isfile(recorded):
        with open(recorded) as f:
            lines = f.read().split()
        return (lines[0] if lines else "unknown"), ("dirty" in lines[1:]) if lines else None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout
        return commit or "unknown", bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def describe_machine():
    threads, how = numpy_blas_threads()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "numpy_blas_threads": threads,
        "numpy_blas_threads_source": how,
    }


def today():
    return datetime.date.today().isoformat()


def now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def slug(text):
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"
