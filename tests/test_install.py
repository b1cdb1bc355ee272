"""The installed package claims one top-level name, `lenet`: the source tree's kernels/
installs as lenet.kernels and bench/ is not installed, so a wheel of this project and
another project's `kernels` package (Hugging Face's, on PyPI) live side by side.

Builds the wheel from a copy of the source tree (offline: pip wheel --no-build-isolation,
the test extra's setuptools), installs it into a fresh virtual environment beside a
stand-in `kernels` package, in both orders, and imports both there. The fresh environment
reaches this one's dependencies (NumPy, Numba) through a path file, not its packages.
"""

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "__pycache__", "build", "dist", "*.egg-info",
                              "results", ".pytest_cache", ".ruff_cache", "data", ".carry")


def _run(*args, cwd=None):
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _wheel(src, out):
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", out, src)
    (wheel,) = Path(out).glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """(this project's wheel, a stand-in `kernels` wheel), built offline."""
    tmp = tmp_path_factory.mktemp("wheels")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=SKIP)
    ours = _wheel(src, tmp / "ours")
    standin = tmp / "standin"
    (standin / "kernels").mkdir(parents=True)
    (standin / "kernels" / "__init__.py").write_text('WHO = "stand-in"\n')
    (standin / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "kernels"\nversion = "0.0.1"\n'
        '[tool.setuptools]\npackages = ["kernels"]\n')
    return ours, _wheel(standin, tmp / "theirs")


def test_wheel_holds_only_lenet(wheels):
    names = zipfile.ZipFile(wheels[0]).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"lenet"}
    assert "lenet/kernels/forward.py" in names and "lenet/kernels/reference.py" in names
    assert "lenet/weights/lenet5-mnist.npz" in names     # the shipped weights
    for page in ("index.html", "demo.js", "demo.css"):   # the demo's page
        assert f"lenet/demo/static/{page}" in names, page
    assert any(n.endswith("LICENSE") and ".dist-info/" in n for n in names), names
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheels[0]).read(top_level).decode().split() == ["lenet"]


def test_sdist_holds_the_package_and_its_license_not_tests(tmp_path):
    # the tests and benchmarks run from a clone: an sdist with tests/test_*.py but not
    # conftest.py and their helpers held a suite that could not run
    import tarfile
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    _run(sys.executable, "-c", "from setuptools import setup; setup()", "-q", "sdist",
         "--dist-dir", tmp_path / "dist", cwd=src)
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    names = [n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n]
    assert "LICENSE" in names and "lenet/weights/lenet5-mnist.npz" in names
    assert "kernels/forward.py" in names or "lenet/kernels/forward.py" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))], names


CHECK = """
import importlib.util, sys, numpy as np
import kernels
assert kernels.WHO == "stand-in", kernels.__file__
from lenet import LeNet5
from lenet.kernels.architecture import PARAMETERS_LEN
import lenet.kernels.forward
assert PARAMETERS_LEN == 60900
assert importlib.util.find_spec("bench") is None
import lenet
print(kernels.__file__, lenet.__file__)
if sys.argv[1:] == ["predict"]:   # the CPU model compiled and run from the installed files
    model = LeNet5.pretrained(device="cpu")
    print(len(model.predict(np.full((2, 32, 32), -0.1, np.float32))))
"""


# both orders import both packages; the pretrained model predicts in one (what it runs is
# the same installed files in either order; compiling the CPU model twice proves no more)
@pytest.mark.parametrize("first, predict", [("ours", True), ("theirs", False)])
def test_installs_beside_another_kernels_package(wheels, tmp_path, first, predict):
    venv = tmp_path / "venv"
    # no pip of its own (ensurepip takes seconds): this environment's pip installs into it
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    # this environment's dependencies, reachable but not installed again (offline), with
    # their path files (numba-cuda's makes numba.cuda its own); not this checkout's lenet
    deps = Path(sysconfig.get_paths()["purelib"])
    Path(site.strip(), "00-deps.pth").write_text(f"{deps}\n")
    for pth in deps.glob("*.pth"):
        if not pth.name.startswith("__editable__"):
            shutil.copy(pth, site.strip())
    ours, theirs = wheels
    for wheel in (ours, theirs) if first == "ours" else (theirs, ours):
        _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
             "--no-index", wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUMBA_ENABLE_CUDASIM")}
    done = subprocess.run([str(python), "-c", CHECK, *(["predict"] if predict else [])],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    theirs_at, ours_at, *count = done.stdout.split()
    assert count == (["2"] if predict else [])
    assert theirs_at.startswith(site.strip()) and ours_at.startswith(site.strip())


def _imports(path):
    """The absolute module names a source file imports (relative imports are its own
    package's)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


@pytest.mark.parametrize("folder, refused", [
    ("kernels", ("lenet", "bench", "kernels")),   # the bottom layer: relative imports only
    ("lenet", ("bench", "kernels")),              # lenet.kernels, never the tree's kernels
    ("bench", ("kernels",)),
    ("tests", ("kernels",)),
])
def test_imports_go_downward(folder, refused):
    # `import kernels` in the source tree would load the kernels a second time as another
    # module (and fail where only the wheel is installed)
    bad = [f"{path.relative_to(ROOT)}: {name}"
           for path in sorted((ROOT / folder).rglob("*.py"))
           if "results" not in path.parts and "kernels" not in path.relative_to(ROOT).parts[1:]
           for name in _imports(path) if name.split(".")[0] in refused]
    assert not bad
