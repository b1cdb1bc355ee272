"""The compile census (bench/ptx.py) as a test: every CUDA kernel compiles for the
H200 (sm_90) on this machine, GPU or not, and does not spill, use local memory or
compute in float64 unless its allow= says why; and every signature of every kernel is
what its launcher passes.

The census runs `python -m bench.ptx` in a subprocess: it needs the CUDA simulator off,
which this process (tests/conftest.py) may have turned on. It needs the CUDA toolkit
($CUDA_HOME, default /usr/local/cuda); without one these tests skip with the reason,
except in CI (CI=true), where they fail.

    pytest -q tests/test_ptx.py
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import missing
from numba import cuda

from bench import ptx
from lenet.kernels import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The kernels that may compute in float64, each a float64 accumulator on purpose: a
# new one needs its reason in its allow= and its name here.
FLOAT64_ACCUMULATORS = {
    "kernels.sdlm.sdlm_kernel",                      # each run's loss and error totals
    "kernels.train_step.finish_kernel",              # the pass's loss and error totals
}


@pytest.fixture(scope="module")
def census(ptx_census):
    """ptx.json of `python -m bench.ptx` over every kernel (tests/conftest.py)."""
    return ptx_census


def all_kernels():
    return ptx.load_kernels()


def test_every_kernel_compiles_for_sm_90(census):
    assert census["compute_capability"] == [9, 0]
    compiled = {(e["kernel"], e["signature_index"]) for e in census["kernels"]}
    expected = {(k.name, i) for k in all_kernels() for i in range(len(k.signatures))}
    assert compiled == expected
    broken = [f"{e['kernel']}: {e['error']}" for e in census["kernels"] if e.get("error")]
    assert not broken, "\n".join(broken)
    for e in census["kernels"]:
        assert e["registers"] > 0 and e["mix"]["instructions"] > 0, e["kernel"]


def test_no_spills_local_memory_or_float64_unless_allowed(census):
    bad = [f"{e['kernel']} {e['variant']}: {p}" for e in census["kernels"] for p in e["problems"]]
    assert not bad, "\n".join(bad)
    assert "## Problems" not in census["markdown"]


def test_every_allowance_is_needed(census):
    assert census["unused_allowances"] == {}


def test_float64_only_in_the_listed_accumulators(census):
    uses = {e["kernel"] for e in census["kernels"] if e["mix"]["float64_ops"]}
    assert uses <= FLOAT64_ACCUMULATORS, sorted(uses - FLOAT64_ACCUMULATORS)
    allowed = {k.name for k in all_kernels() if "float64" in k.allow}
    assert allowed <= FLOAT64_ACCUMULATORS, sorted(allowed - FLOAT64_ACCUMULATORS)


def test_census_reports_the_inner_loops(census):
    """The figures the fused-inference target is stated in: the FMA share of the
    innermost loops. c3s4_kernel's innermost loop is the one over the 5 kernel rows of
    a connected S2 map, its 5 weights times the 2x10 register tile unrolled: 100 FMAs
    per trip."""
    entry = next(e for e in census["kernels"]
                 if e["kernel"] == "kernels.forward.c3s4_kernel")
    hot = entry["loops"]["hot"]
    assert hot["fma_f32"] == 100
    assert 0 < hot["fma_share"] < 1
    assert "| forward.c3s4_kernel |" in census["markdown"]


# ------------------------------------------------------------- reading PTX

PTX = """
.visible .entry k(
\t.param .u64 k_param_0
)
{
\t.reg .f32 \t%f<9>;
\tld.param.u64 \t%rd1, [k_param_0];
$L__BB0_1:                      // outer loop
\tmov.f32 \t%f1, 0f00000000;
$L__BB0_2:
\tfma.rn.f32 \t%f2, %f1, %f1, %f1;
\tfma.rn.f32 \t%f3, %f2, %f1, %f1;
\tadd.s64 \t%rd2, %rd2, 1;
\t@%p1 bra \t$L__BB0_2;
\tcvt.f64.f32 \t%fd1, %f3;
\tadd.f64 \t%fd2, %fd1, %fd1;
\tld.global.f64 \t%fd3, [%rd1];
\tdiv.s64 \t%rd3, %rd2, %rd4;
\t@!%p2 bra.uni \t$L__BB0_1;
\tret;
}
"""


def test_instruction_mix_of_a_small_ptx():
    instrs, labels = ptx.instructions(PTX)
    assert [op for op, _ in instrs][:3] == ["ld.param.u64", "mov.f32", "fma.rn.f32"]
    assert labels == {"$L__BB0_1": 1, "$L__BB0_2": 2}
    m = ptx.mix(instrs)
    # cvt.f64.f32 and add.f64 compute in float64; a load of one does not
    assert m == {"fma_f32": 2, "instructions": 12, "fma_share": 2 / 12, "float64_ops": 2,
                 "int64_divrem": 1}


def test_loops_are_found_from_backward_branches():
    instrs, labels = ptx.instructions(PTX)
    assert ptx.loops(instrs, labels) == [(1, 10), (2, 5)]
    assert ptx.innermost([(1, 10), (2, 5)]) == [(2, 5)]
    lm = ptx.loop_mix(instrs, labels)
    assert lm["inner_loops"] == 1
    assert lm["hot"] == {"fma_f32": 2, "instructions": 4, "fma_share": 0.5, "float64_ops": 0,
                         "int64_divrem": 0}


def test_ptxas_log_is_parsed():
    log = ("ptxas info    : Function properties for k\n"
           "    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
           "ptxas info    : Used 92 registers, used 1 barriers, 2048 bytes smem, "
           "400 bytes cmem[0]\n")
    assert ptx.parse_ptxas(log) == {"registers": 92, "barriers": 1, "shared_bytes": 2048,
                                    "stack_bytes": 8, "spill_store_bytes": 4,
                                    "spill_load_bytes": 12}


def test_problems_name_what_is_not_allowed():
    entry = {"allow": {"float64": "why"}, "spill_store_bytes": 4, "spill_load_bytes": 0,
             "stack_bytes": 16, "mix": {"float64_ops": 3}}
    found = ptx.problems(entry)
    assert len(found) == 2 and "spills 4 B" in found[0] and "16 B of local memory" in found[1]
    entry["allow"] = {"float64": "why", "spills": "why", "local_memory": "why"}
    assert ptx.problems(entry) == []
    entry["kernel"] = "k"
    entry["mix"]["float64_ops"] = 0
    assert ptx.unused_allowances([entry]) == {"k": ["float64"]}


def test_missing_toolkit_is_named(tmp_path):
    assert "no ptxas" in ptx.toolkit_problem(str(tmp_path))


# ---------------------------------------------- every signature is launched

class _Launch:
    """kernel[grid, block](*args) that checks args against the signatures and records
    which one they fit, without running the kernel (the kernel tests run them)."""

    def __init__(self, kernel, seen):
        self.kernel, self.seen = kernel, seen

    def __call__(self, *args):
        self.kernel.check_args(args)   # TypeError naming the argument if none fits
        for i, argtypes in enumerate(self.kernel.argtypes):
            if common._mismatch(argtypes, args, self.kernel.py_func) is None:
                self.seen.add((self.kernel.name, i))
                return


def _device(shape, dtype=np.float32):
    return cuda.device_array(shape, dtype=dtype)


def _launch_sdlm():
    from lenet.kernels import backward_pieces, forward_pieces, sdlm
    from lenet.kernels.architecture import C3_TABLE
    r, n, table = 2, 5, C3_TABLE
    flat = _device((forward_pieces.PARAMETERS_LEN,))
    sdlm.sdlm_rates(flat, _device((forward_pieces.PARAMETERS_LEN,)), 5e-4, 0.02)
    sdlm.sdlm_steps(_device((r, forward_pieces.PARAMETERS_LEN)),
                    _device((r, forward_pieces.PARAMETERS_LEN)),
                    _device((r, 2), np.float64), _device((r, sdlm.SCRATCH_LEN)),
                    _device((2, n, forward_pieces.IN_LEN)), _device((r,), np.int32),
                    _device((n,), np.int32), _device((r, 4), np.int32), 1, 3,
                    _device((r,), np.int32), _device((r,)), _device((10 * 84,)),
                    forward_pieces.c3_table(table), backward_pieces.c3_out_table(table), True)


def _launch_train_step():
    from lenet.kernels import backward_pieces, forward_pieces
    from lenet.kernels import train_step as ts
    from lenet.kernels.architecture import C3_TABLE
    n, table = 6, C3_TABLE
    bp = ts.padded(n)
    flats = [_device((forward_pieces.PARAMETERS_LEN,)) for _ in range(4)]
    ts.launch_step(_device((bp * ts.ROW_LEN,)), bp, *flats, _device((9, forward_pieces.IN_LEN)),
                   _device((9,), np.int32), _device((8,), np.int32), 1, n, "map", 10.0, 2, "sgd",
                   0.01, 0.9, _device((2, ts.CONV_LEN)), _device((2, ts.DENSE_LEN)),
                   _device((2, 2)), _device((2,), np.float64), _device((10 * 84,)),
                   forward_pieces.c3_table(table), backward_pieces.c3_out_table(table))


def _launch_inputs():
    from lenet.kernels import inputs
    inputs.first_refused(_device((3, 1, 4, 4)))


def _launch_forward():
    from lenet.kernels import forward, forward_pieces
    from lenet.kernels.architecture import C3_TABLE
    n, params = 3, _device((forward_pieces.PARAMETERS_LEN,))
    table, centers = forward_pieces.c3_table(C3_TABLE), _device((10 * 84,))
    penalties, classes = _device((n, 10)), _device((n,), np.int32)
    forward.forward(penalties, classes, _device((n, forward_pieces.IN_LEN)), params, table, centers)
    s2, s4 = _device((n, forward_pieces.S2_LEN)), _device((n, forward_pieces.S4_LEN))
    forward.c1s2(s2, _device((n, 6 * 28 * 28)), _device((n, forward_pieces.IN_LEN)), params)
    forward.c3s4(s4, _device((n, 16 * 10 * 10)), s2, params, table)
    forward.dense(_device((n, 120)), s4, _device((120 * 400,)), _device((120,)))
    forward.rbf(penalties, classes, _device((n, 84)), centers)
    forward.squash_kernel[1, 32](_device((5,)), _device((5,)))  # squash_all is Python here


def _launch_backward():
    from lenet.kernels import backward as bw
    from lenet.kernels import backward_pieces, forward_pieces
    from lenet.kernels.architecture import C3_TABLE
    n, table = 3, C3_TABLE
    bw.rbf_delta_all(_device((n, 84)), _device((n, 10)), _device((n, 10)), _device((n, 84)),
                     _device((10 * 84,)), 1)
    bw.dense_delta_all(_device((n, 120)), _device((n, 84)), _device((84 * 120,)),
                       _device((n, 120)), 2)
    d, x = _device((n, 16 * 25)), _device((n, 16 * 100))
    bw.subsample_delta_all(_device((n, 16 * 100)), d, x, _device((16,)), 1)
    bw.subsample_grads_all(_device((16,)), _device((16,)), d, x, 2)
    bw.c1_grads_all(_device((6, 1, 5, 5)), _device((6,)), _device((n, 6 * 28 * 28)),
                    _device((n, forward_pieces.IN_LEN)), 1)
    bw.c3_grads_all(_device((16, 6, 5, 5)), _device((16,)), _device((n, 16 * 100)),
                    _device((n, forward_pieces.S2_LEN)), forward_pieces.c3_table(table), 1)
    bw.c3_delta_all(_device((n, forward_pieces.S2_LEN)), _device((n, 16 * 100)),
                    _device((16 * 6 * 25,)), _device((n, forward_pieces.S2_LEN)),
                    backward_pieces.c3_out_table(table), 1)
    bw.loss_all(_device((n,)), _device((n, 10)), _device((n, 10)), _device((n, 10)),
                _device((n,), np.int32), "map", 10.0)


def _launch_distort():
    from lenet.kernels import distort
    distort.distort(_device((3, 1, 32, 32)), _device((3, 1, 32, 32)), _device((3, 6)))


LAUNCHES = (_launch_sdlm, _launch_train_step, _launch_inputs, _launch_forward,
            _launch_backward, _launch_distort)


def test_every_kernel_signature_is_launched_by_its_launcher(monkeypatch):
    """Each launcher once, on small device arrays: every signature of every kernel in
    KERNELS must be what some launcher passes, or a signature could go unchecked.
    A kernel added to a new module needs a launch here."""
    seen = set()
    monkeypatch.setattr(common.Kernel, "__getitem__", lambda self, launch: _Launch(self, seen))
    for launch in LAUNCHES:
        launch()
    expected = {(k.name, i) for k in all_kernels() for i in range(len(k.signatures))}
    missing = sorted(f"{name} signature {i}" for name, i in expected - seen)
    assert not missing, ("never launched (add a launch of its launcher to LAUNCHES in "
                         "tests/test_ptx.py): " + ", ".join(missing))


def test_a_launch_that_does_not_fit_is_refused(monkeypatch):
    """The check itself: a float64 array where the signature says float32."""
    from lenet.kernels import forward
    seen = set()
    monkeypatch.setattr(common.Kernel, "__getitem__", lambda self, launch: _Launch(self, seen))
    with pytest.raises(TypeError, match="squash_kernel.*out is float64"):
        forward.squash_kernel[1, 1](_device((3,), np.float64), _device((3,)))


# ------------------------------------------- the census in a GPU session

def test_census_is_complete_with_the_fused_kernels_first(census):
    assert census["complete"] is True
    modules = [e["module"] for e in census["kernels"]]
    first = [m for m in modules if m in ptx.PRIORITY]
    assert set(first) == set(ptx.PRIORITY)
    assert modules[:len(first)] == sorted(first, key=ptx.PRIORITY.index)


class _Overload:
    """What cuda.jit(signature) holds on a GPU, for the device census without one."""
    regs_per_thread, shared_mem_per_block, local_mem_per_thread = 40, 1024, 0
    const_mem_size, max_threads_per_block = 8, 256

    def inspect_asm(self, cc):
        assert cc == (9, 0)
        return PTX


def test_device_census_compiles_each_signature_once(monkeypatch):
    """--device: one cuda.jit per kernel and signature gives both the PTX and the
    driver's figures (it used to compile twice: ~95 s, over the session's 60 s)."""
    from types import SimpleNamespace
    kernels = [k for k in all_kernels() if k.name.startswith("kernels.backward.")]
    compiled = []

    def jit(signature, **options):
        def compile_(py_func):
            compiled.append((py_func.__name__, signature))
            return SimpleNamespace(overloads={signature: _Overload()})
        return compile_
    monkeypatch.setattr(cuda, "jit", jit)
    monkeypatch.setattr(cuda, "get_current_device",
                        lambda: SimpleNamespace(compute_capability=(9, 0)))
    written = []
    entries = ptx.census(kernels, device=True, on_entry=lambda e: written.append(len(e)))
    expected = [(k.py_func.__name__, s) for k in kernels for s in k.signatures]
    assert compiled == expected and len(expected) > 1
    assert written == list(range(1, len(expected) + 1))      # after every kernel
    for e in entries:
        assert not e.get("error") and e["driver"]["registers"] == e["registers"] == 40
        assert e["shared_bytes"] == 1024 and e["spills_known"] is False
        assert e["mix"]["fma_f32"] == 2
    json.dumps(entries)    # plain numbers: the old census put dicts keyed by tuples there


def test_a_census_killed_midway_keeps_the_kernels_it_finished(tmp_path):
    _toolkit_or_skip()
    env = dict(os.environ, PYTHONPATH=ROOT, NUMBA_ENABLE_CUDASIM="0")
    p = subprocess.Popen([sys.executable, "-m", "bench.ptx", "--kernel", "kernels.backward.",
                          "--json-only", "--out", str(tmp_path)], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:
            if line.startswith("kernels.backward."):   # logged after its entry is written
                p.kill()
                break
        p.wait(timeout=300)
    finally:
        p.kill()
    results = json.loads((tmp_path / "ptx.json").read_text())
    assert results["complete"] is False and len(results["kernels"]) >= 1
    assert all(e["registers"] > 0 for e in results["kernels"])
    assert os.listdir(tmp_path) == ["ptx.json"]


# ------------------------------------------------------ the command's refusals

def _toolkit_or_skip():
    problem = ptx.toolkit_problem()
    if problem:
        missing(f"no CUDA toolkit for the compile census: {problem}")


def _ptx_command(*args, root=None, env=None):
    """`python -m bench.ptx args` in a subprocess with the simulator off; root: the
    folder that stands for the repository's root in bench.machine.ROOT (the default
    --out lies under it). (exit status, stderr)."""
    code = "import sys; from bench import machine, ptx\n"
    if root is not None:
        code += f"machine.ROOT = {str(root)!r}\n"
    code += f"sys.exit(ptx.main({[str(a) for a in args]!r}))"
    env = dict(os.environ, PYTHONPATH=ROOT, NUMBA_ENABLE_CUDASIM="0", **(env or {}))
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    return p.returncode, p.stderr


def _census_folder(path):
    path.mkdir(parents=True)
    (path / "ptx.json").write_text('{"kernels": ["an earlier census"]}\n')
    (path / "ptx.md").write_text("# an earlier census\n")
    return {name: (path / name).read_bytes() for name in ("ptx.json", "ptx.md")}


def test_an_out_holding_a_census_is_refused_and_left_alone(tmp_path):
    earlier = _census_folder(tmp_path / "census")
    status, err = _ptx_command("--kernel", "inputs", "--out", tmp_path / "census")
    assert status == 2 and err.strip().splitlines() == [
        f"bench.ptx: error: --out {tmp_path / 'census'} already holds ptx.json, ptx.md of an "
        "earlier run: give another --out, or --force to replace them"]
    assert {n: (tmp_path / "census" / n).read_bytes() for n in earlier} == earlier
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for out, message in ((afile, f"--out {afile}: not a directory"),
                         ("", "--out must name a directory, not an empty string")):
        status, err = _ptx_command("--kernel", "inputs", "--out", out)
        assert (status, err.strip()) == (2, f"bench.ptx: error: {message}")
    assert afile.read_text() == "not a folder"


def test_the_default_folder_moves_to_a_fresh_one(tmp_path):
    """Without --out, a day's census folder that already holds one is kept: the census
    goes to -2 (then -3): a committed census is never replaced by a smaller one."""
    _toolkit_or_skip()
    from bench import machine
    base = tmp_path / "bench" / "results" / f"{machine.today()}-offline-ptx"
    earlier = _census_folder(base)
    status, err = _ptx_command("--kernel", "kernels.inputs.", "--json-only", root=tmp_path)
    assert status == 0, err
    assert {n: (base / n).read_bytes() for n in earlier} == earlier
    fresh = json.loads((tmp_path / "bench" / "results" / f"{base.name}-2" / "ptx.json")
                       .read_text())
    assert fresh["complete"] and {e["module"] for e in fresh["kernels"]} == {"kernels.inputs"}


def test_no_matching_kernel_and_no_gpu_exit_as_the_help_says(tmp_path):
    _toolkit_or_skip()
    status, err = _ptx_command("--kernel", "nosuchkernel", "--out", tmp_path / "none")
    assert (status, err.strip()) == (2, "bench.ptx: error: no kernel's name contains "
                                        "'nosuchkernel'")
    assert not (tmp_path / "none").exists()
    # no GPU (hidden where there is one): 3, which the help gives to a missing GPU
    status, err = _ptx_command("--device", "--out", tmp_path / "dev",
                               env={"CUDA_VISIBLE_DEVICES": ""})
    assert status == 3 and "needs a CUDA GPU" in err and not (tmp_path / "dev").exists()
    p = subprocess.run([sys.executable, "-m", "bench.ptx", "--help"], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
    text = " ".join(p.stdout.split())
    assert "2 bad options (an --out refused, no kernel matching --kernel)" in text
    assert "3 no toolkit, or with --device no GPU" in text
