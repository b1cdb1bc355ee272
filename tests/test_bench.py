"""Tests of the benchmark suite (bench/): options, output files, FLOP counts,
the correctness gate before timing, the refusal to time the CUDA simulator, and
the comparison implementations (PyTorch when installed, the CuPy baseline's
maths through NumPy). Small and CPU-only: batches of a few images, 1 sample.

    pytest -q tests/test_bench.py
"""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import missing, python_path

from bench import capability, cli, flops, impls, machine, suite, timing
from bench.workload import Workload, take
from lenet import C3_TABLE
from lenet.kernels.tolerance import assert_close
from lenet.model import LeNet5

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--repeats", "1", "--min-time", "0", "--warmup", "1", "--cpu-peak-gflops", "100"]


def run_bench(*args):
    """`python -m bench args` in a subprocess: (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=python_path(ROOT))
    p = subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def load(out_dir):
    with open(os.path.join(out_dir, "results.json")) as f:
        return json.load(f)


def rows_by(results, **match):
    return [r for r in results["rows"] if all(r[k] == v for k, v in match.items())]


# ----------------------------------------------------------------- the command

def test_help_documents_every_option():
    status, out, _ = run_bench("--help")
    assert status == 0
    for option in ("--impl", "--what", "--batch-sizes", "--repeats", "--min-time", "--quick",
                   "--out", "--max-cpu-batch", "--peak-gflops", "--layers", "--pass-images",
                   "--paper-mu"):
        assert option in out, option
    for word in ("gpu", "torch-cuda", "cupy", "cpu", "torch-cpu", "train-pass", "paper-pass",
                 "simulator", "0.02"):
        assert word in out, word


def test_bad_options_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--impl", "tpu"])
    assert e.value.code == 2
    assert "choose from" in capsys.readouterr().err


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """A --quick CPU-only run at batch sizes 1 and 8."""
    out = str(tmp_path_factory.mktemp("bench") / "quick")
    status, stdout, stderr = run_bench(
        "--quick", "--impl", "cpu", "--batch-sizes", "1,8", "--repeats", "1",
        "--what", "inference,layers,train-step", "--out", out)
    return status, stdout, stderr, out


def test_quick_run_writes_json_with_everything(quick_run):
    status, stdout, stderr, out = quick_run
    assert status == 0, stderr
    results = load(out)
    for key in ("hostname", "cpu_model", "cpu_cores", "numpy_blas_threads"):
        assert key in results["machine"]
    for key in ("python", "numpy", "numba", "numba-cuda", "cupy", "torch"):
        assert key in results["versions"]
    assert results["commit"] == "unknown" or len(results["commit"]) == 40
    assert results["date"] and results["cpu"]["peak_gflops"] > 0
    rows = results["rows"]
    # no layer rows on the CPU: it has no stage of its own to time
    assert {(r["what"], r["layer"]) for r in rows} == {("inference", None), ("train-step", None)}
    assert {r["batch"] for r in rows} == {1, 8}
    for r in rows:
        assert r["impl"] == "cpu" and r["status"] == "ok", r
        assert r["samples"] and all(s > 0 for s in r["samples"])
        assert r["check_error"] <= 1e-5
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["images_per_s"] == pytest.approx(r["batch"] / r["median_s"])
        assert r["gflops"] == pytest.approx(r["images_per_s"] * r["flops_per_image"] / 1e9)
    assert set(results["implementations"]) == {"cpu"}  # only what was asked for
    assert "[1/" in stderr and "checking" in stderr  # progress on stderr


def test_quick_run_writes_markdown_and_png(quick_run):
    _, _, _, out = quick_run
    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    for text in ("## Inference", "## Training step", "| batch | cpu |",
                 "FLOPs per image", "122,304", "max-cpu-batch"):
        assert text in md, text
    assert "## Layers" not in md   # the CPU has no layer rows
    from PIL import Image
    with Image.open(os.path.join(out, "throughput.png")) as image:
        image.load()
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


# ------------------------------------------------------------------ FLOP counts

def test_flops_are_twice_the_papers_connections():
    # Connections as the paper's section II.B counts them, worked out here by hand.
    paper = {
        "C1": (5 * 5 + 1) * 6 * 28 * 28,                 # 122,304
        "S2": (4 + 1) * 6 * 14 * 14,                     # 5,880
        "C3": (60 * 5 * 5 + 16) * 10 * 10,               # 151,600
        "S4": (4 + 1) * 16 * 5 * 5,                      # 2,000
        "C5": (16 * 5 * 5 + 1) * 120,                    # 48,120
        "F6": (120 + 1) * 84,                            # 10,164
    }
    assert paper == {"C1": 122_304, "S2": 5_880, "C3": 151_600, "S4": 2_000,
                     "C5": 48_120, "F6": 10_164}
    for layer, count in paper.items():
        assert flops.connections(layer) == count, layer
        assert flops.flops(layer) == 2 * count, layer
    assert flops.connections("RBF") == 840 and flops.flops("RBF") == 3 * 840
    assert sum(flops.connections(layer) for layer in flops.LAYERS) == 340_908
    assert flops.forward_flops() == 2 * sum(paper.values()) + 3 * 840
    assert flops.train_flops() == 3 * flops.forward_flops()


# -------------------------------------------------------- checks before timing

def test_wrong_output_is_failed_and_not_timed(tmp_path, monkeypatch):
    original = impls.ProjectImpl.inference

    def off_by_a_little(self, x):
        run = original(self, x)
        return lambda: run() * np.float32(1.0001)   # relative error 1e-4 > 1e-5
    monkeypatch.setattr(impls.ProjectImpl, "inference", off_by_a_little)
    timed = []
    original_measure = timing.measure
    monkeypatch.setattr(timing, "measure",
                        lambda *a, **k: timed.append(1) or original_measure(*a, **k))
    out = str(tmp_path / "failed")
    status = cli.main(["--impl", "cpu", "--what", "inference", "--batch-sizes", "3,9",
                       "--max-cpu-batch", "4", "--out", out, *FAST])
    assert status == 1
    results = load(out)
    failed, capped = rows_by(results, batch=3)[0], rows_by(results, batch=9)[0]
    assert failed["status"] == "FAILED" and "relative error" in failed["reason"]
    assert failed["check_error"] == pytest.approx(1e-4, rel=0.01)
    assert failed["samples"] == [] and "median_s" not in failed and not timed
    assert capped["status"] == "skipped" and "max-cpu-batch" in capped["reason"]
    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    assert "**FAILED**" in md and "not run (N > 4)" in md


def test_wrong_update_is_failed(tmp_path, monkeypatch):
    from lenet.kernels.cpu import StepWorkspace  # the CPU's compiled step: lr 1% off
    original = StepWorkspace.step
    monkeypatch.setattr(StepWorkspace, "step", lambda self, *a:
                        original(self, *a[:-2], 1.01 * a[-2], a[-1]))
    out = str(tmp_path / "update")
    assert cli.main(["--impl", "cpu", "--what", "train-step", "--batch-sizes", "2",
                     "--out", out, *FAST]) == 1
    row = load(out)["rows"][0]
    assert row["status"] == "FAILED" and "velocity." in row["reason"] and row["samples"] == []


def test_simulator_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    assert machine.simulator_reason() is not None
    assert cli.main(["--impl", "gpu", "--out", str(tmp_path / "gpu"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "simulator" in err and "gpu" in err
    assert not os.path.exists(tmp_path / "gpu")
    out = str(tmp_path / "both")
    assert cli.main(["--impl", "gpu,cpu", "--what", "inference", "--batch-sizes", "2",
                     "--out", out, *FAST]) == 0
    results = load(out)
    gpu = results["implementations"]["gpu"]
    assert gpu["status"] == "not run" and "simulator" in gpu["reason"]
    assert {r["impl"] for r in results["rows"]} == {"cpu"}
    with open(os.path.join(out, "results.md")) as f:
        assert "simulator" in f.read()


# ----------------------------------------------------- the paper's recipe rows

PAPER = ["--impl", "cpu", "--what", "paper-pass", "--pass-images", "16", "--pass-repeats", "1",
         "--batch-sizes", "1", *FAST]


def test_paper_pass_row_runs_and_is_reported(tmp_path):
    out = str(tmp_path / "paper")
    assert cli.main([*PAPER, "--out", out]) == 0
    results = load(out)
    [row] = results["rows"]
    assert (row["what"], row["impl"], row["batch"], row["images"]) == ("paper-pass", "cpu", 1, 16)
    assert row["status"] == "ok" and len(row["samples"]) == 1 and row["samples"][0] > 0
    assert 0 < row["check_error"] <= 1e-5
    assert row["mu"] == results["settings"]["paper_mu"] == 1.0
    assert np.isfinite(row["pass_loss"]) and 0 <= row["pass_running_error"] <= 1
    assert row["images_per_s"] == pytest.approx(16 / row["median_s"])
    assert row["flops_per_image"] == flops.train_flops()
    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    section = md[md.index("## Training pass, the paper's recipe"):]
    for text in ("Seconds per pass over 16 images", "Images (patterns) per second",
                 "| batch | cpu |", "| 1 |", "curvature estimate", "Mean loss / running error"):
        assert text in section, text
    assert "A paper pass is the paper's recipe" in md and "mu=1," in md
    assert "torch-cpu" not in section


@pytest.mark.parametrize("wrong", ["mu", "parameter", "error"])
def test_wrong_paper_pass_is_failed_and_not_timed(tmp_path, monkeypatch, wrong):
    if wrong == "mu":        # the whole pass with another mu: every parameter is off
        original = impls.ProjectImpl.paper_pass
        monkeypatch.setattr(impls.ProjectImpl, "paper_pass", lambda self, images, labels, mu, **k:
                            original(self, images, labels, 1.1 * mu, **k))
    else:                    # one parameter 1e-4 off, or the running error one pattern off
        checked = impls._ProjectPass.checked

        def off(self, images, labels):
            (loss, error), params = checked(self, images, labels)
            if wrong == "parameter":
                params["F6.bias"] = params["F6.bias"] * np.float32(1.0001)
            else:
                error += 1 / len(labels)
            return (loss, error), params
        monkeypatch.setattr(impls._ProjectPass, "checked", off)
    timed = []
    monkeypatch.setattr(timing, "measure", lambda *a, **k: timed.append(1))
    monkeypatch.setattr(impls._ProjectPass, "warm_up", lambda self, **k: timed.append(1))
    out = str(tmp_path / "wrong")
    assert cli.main([*PAPER, "--out", out]) == 1
    [row] = load(out)["rows"]
    assert row["status"] == "FAILED" and row["samples"] == [] and "median_s" not in row
    assert not timed
    reason = {"mu": "relative error", "parameter": "F6.bias", "error": "running error"}[wrong]
    assert reason in row["reason"], row["reason"]
    if wrong == "parameter":
        assert row["check_error"] == pytest.approx(1e-4, rel=0.05)
    with open(os.path.join(out, "results.md")) as f:
        assert "- cpu paper-pass N=1: FAILED" in f.read()


def test_only_this_projects_models_get_paper_pass_rows():
    from bench.cupy_lenet import CuPyImpl
    whats = {"gpu": impls.ProjectImpl.whats, "cupy": CuPyImpl.whats,
             "cpu": capability.CPU_WHATS, "torch-cuda": capability.TORCH_WHATS,
             "torch-cpu": capability.TORCH_WHATS}
    runner = suite.Suite(suite.Config(batch_sizes=[1]), log=lambda message: None)
    runner.impls = {name: SimpleNamespace(whats=whats[name]) for name in impls.ORDER
                    if name in whats}
    rows = runner.plan()
    assert [r for r in rows if r[0] == "paper-pass"] == \
        [("paper-pass", None, 1, "gpu"), ("paper-pass", None, 1, "cpu")]
    # the passes come after the steps, the paper's first (a run cut short keeps them)
    passes = [r[0] for r in rows if r[0].endswith("-pass")]
    assert rows[-len(passes):] == [r for r in rows if r[0].endswith("-pass")]
    assert passes[:4] == ["paper-pass"] * 2 + ["pattern-pass"] * 2
    assert "paper-pass" not in passes[4:] and "pattern-pass" not in passes[4:]
    # PyTorch's per-pattern counterpart: SGD at batch 1, for the two PyTorch rows only
    assert [r for r in rows if r[0] == "pattern-pass"] == \
        [("pattern-pass", None, 1, "torch-cuda"), ("pattern-pass", None, 1, "torch-cpu")]
    assert {r[3] for r in rows if r[0] == "train-pass"} == set(whats) - {"cupy"}
    # in the full default run after train-pass, not in --quick's; --paper-mu reaches the suite
    parse = cli.build_parser().parse_args
    assert cli.config_from(parse([])).whats[-3:] == ["train-pass", "paper-pass", "pattern-pass"]
    assert "paper-pass" not in cli.config_from(parse(["--quick"])).whats
    assert cli.config_from(parse(["--paper-mu", "0.5"])).paper_mu == 0.5
    with pytest.raises(suite.SuiteError, match="--paper-mu"):
        cli.config_from(parse(["--paper-mu", "0"]))


# ------------------------------------------------------------ inputs, timing

def test_repeated_batches_have_exact_references():
    params = LeNet5(device="cpu", seed=1).parameters()
    w = Workload(params, unique=4, seed=3)
    ref = LeNet5(device="cpu", dtype=np.float64)
    ref.set_parameters({k: v.astype(np.float64) for k, v in params.items()})
    for n in (3, 8, 10):    # a prefix, whole repeats, and a partial repeat
        x, labels = w.images(n)
        assert x.shape == (n, 1, 32, 32) and x.dtype == np.float32 and np.all(x != 0)
        loss, grads = ref.gradients(x.astype(np.float64), labels)
        expected = w.step_ref(n)
        assert expected["loss"].mean() == pytest.approx(loss, rel=1e-12)
        for name, g in grads.items():
            assert_close(expected[f"grad.{name}"], g, np.float64, what=name)
        assert_close(w.inference_ref(n), ref.forward(x.astype(np.float64)), np.float64)
    assert np.array_equal(take(np.arange(4), 10), [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])


def test_device_images_repeat_the_unique_images_on_the_device():
    from numba import cuda  # the simulator here (conftest), a GPU where there is one
    w = Workload(LeNet5(device="cpu", seed=1).parameters(), unique=4, seed=3)
    for n in (3, 4, 11):    # a prefix, the unique images, two doublings and a part
        d = w.device_images(n)
        assert cuda.devicearray.is_cuda_ndarray(d)
        assert d.shape == (n, 1, 32, 32) and d.dtype == np.float32
        np.testing.assert_array_equal(d.copy_to_host(), w.images(n)[0])


def test_gpu_inference_rows_get_device_arrays():
    """A GPU implementation's inference batch is a device array (repeated on the device,
    never built on the host), checked against the reference as before; a CPU
    implementation gets host arrays, and none above --max-cpu-batch."""
    from numba import cuda
    cfg = suite.Config(repeats=1, min_time=0.0, warmup=1, max_cpu_batch=4)
    runner = suite.Suite(cfg, log=lambda message: None)
    params = LeNet5(device="cpu", seed=6).parameters()
    runner.workload = Workload(params, unique=3, seed=2)
    model, given = LeNet5(device="cpu"), []
    model.set_parameters(params)

    def inference(x):
        given.append(x)
        host = x.copy_to_host() if cuda.devicearray.is_cuda_ndarray(x) else x
        return lambda: model.forward(host)
    kinds = {kind: SimpleNamespace(name=kind, kind=kind, reset=lambda: None, sync=lambda: None,
                                   to_host=np.asarray, inference=inference)
             for kind in ("gpu", "cpu")}
    for n in (2, 7):
        row = runner.run_row(kinds["gpu"], "inference", None, n, "label")
        assert row["status"] == "ok" and row["check_error"] <= 1e-5, row
        assert cuda.devicearray.is_cuda_ndarray(given[-1]) and given[-1].shape == (n, 1, 32, 32)
    row = runner.run_row(kinds["cpu"], "inference", None, 3, "label")
    assert row["status"] == "ok" and isinstance(given[-1], np.ndarray)
    calls = len(given)
    row = runner.run_row(kinds["cpu"], "inference", None, 7, "label")
    assert row["status"] == "skipped" and len(given) == calls


def test_measure_takes_enough_samples():
    calls = []
    result = timing.measure(lambda: calls.append(1), lambda: None, repeats=5, min_time=0.01)
    assert len(result["samples"]) >= 5 and sum(result["samples"]) * result["calls_per_sample"] \
        >= 0.01 * 0.5
    assert len(calls) == result["warmup_calls"] + result["calls_per_sample"] * \
        len(result["samples"])
    s = timing.summarize([3.0, 1.0, 2.0])
    assert (s["min_s"], s["median_s"], s["max_s"]) == (1.0, 2.0, 3.0)


def test_earlier_results_still_render():
    """A committed GPU result of the retired layer rows (single layers, C1 to RBF) and the
    layer-by-layer kernels renders as it did: bench/results/ is history."""
    from bench import report
    with open(os.path.join(ROOT, "bench", "results", "2026-11-22-h100", "results.json")) as f:
        results = json.load(f)
    md = report.markdown(results)
    assert "## Layers" in md and "| gpu |" in md
    layers = [line.split("|")[1].strip() for line in md.split("## Layers")[1].split("\n## ")[0]
              .splitlines() if line.startswith("| ") and line.split("|")[1].strip() in
              flops.LAYERS]
    assert list(dict.fromkeys(layers)) == list(flops.LAYERS)    # in the network's order
    assert report.COLUMNS.index("gpu-layers") == 1 and "gpu-layers" not in impls.ORDER


# -------------------------------------------------- comparison implementations

def _reference_run(params, n=5, seed=4):
    w = Workload(params, unique=n, seed=seed)
    return w, w.images(n)[0]


def test_gpu_layer_rows_run_the_stage_kernels():
    """The gpu implementation's layer rows: each stage kernel of kernels/forward.py on the
    stage's input, against the float64 reference of that stage (in the simulator here,
    as a --rehearse session runs it)."""
    params = LeNet5(device="cpu", seed=3).parameters()
    w, _ = _reference_run(params, n=3)
    impl = impls.ProjectImpl("gpu", params, rehearse=True)
    for stage in flops.STAGES:
        run = impl.layer(stage, w.layer_input(stage, 3))
        assert_close(impl.to_host(run()), w.layer_ref(stage, 3), np.float32, what=stage)
    assert impls.ProjectImpl("cpu", params).whats == capability.CPU_WHATS   # none on the CPU


def test_cupy_baseline_maths_through_numpy():
    from bench.cupy_lenet import ArrayLeNet5
    params = LeNet5(device="cpu", seed=2).parameters()
    w, x = _reference_run(params)
    net = ArrayLeNet5(params, np)
    assert_close(net.forward(x), w.inference_ref(len(x)), np.float32, what="penalties")
    for stage in flops.STAGES:
        assert_close(net.layer(stage, w.layer_input(stage, len(x))), w.layer_ref(stage, len(x)),
                     np.float32, what=stage)


def _torch():
    """PyTorch, or a skip that says it is missing (a failure in CI, which installs its
    CPU build)."""
    try:
        import torch
    except ImportError:
        missing("PyTorch is not installed (.ci/run installs its CPU build, torch==2.13.0)")
    return torch


def test_torch_network_matches_the_cpu_model():
    torch = _torch()
    from bench.torch_lenet import TorchImpl, TorchLeNet5
    model = LeNet5(device="cpu", seed=5)
    params = model.parameters()
    w, x = _reference_run(params)
    net = TorchLeNet5(params, torch.device("cpu"))
    with torch.no_grad():
        y = net.forward(torch.from_numpy(x)).numpy()
    assert_close(y, model.forward(x).astype(np.float64), np.float32, what="vs cpu model")
    assert_close(y, w.inference_ref(len(x)), np.float32, what="vs float64 reference")
    with torch.no_grad():
        for stage in flops.STAGES:   # the layer rows
            got = net.layer(stage, torch.from_numpy(w.layer_input(stage, len(x)))).numpy()
            assert_close(got, w.layer_ref(stage, len(x)), np.float32, what=stage)
    # one training step: losses, gradients, momentum buffers
    impl = TorchImpl("cpu", params)
    images, labels = w.images(len(x))
    step = impl.train_step(images, labels, lr=0.01, momentum=0.9)
    step.run()
    out, ref = step.outputs(), w.step_ref(len(x))
    assert_close(out["loss"], ref["loss"], np.float32, what="loss")
    for name in params:
        assert_close(out[f"grad.{name}"], ref[f"grad.{name}"], np.float32, what=name)
        assert_close(out[f"momentum.{name}"], ref[f"grad.{name}"], np.float32, what=name)
    c3 = impl.net.p["C3.weight"].detach().numpy()      # after the step
    assert np.all(c3[~C3_TABLE.T] == 0) and np.all(c3[C3_TABLE.T] != 0)


def test_torch_cpu_rows_run(tmp_path):
    _torch()
    out = str(tmp_path / "torch")
    assert cli.main(["--impl", "torch-cpu,cpu", "--what",
                     "inference,train-step,train-pass,paper-pass,pattern-pass",
                     "--batch-sizes", "2", "--pass-batch-sizes", "4", "--pass-images", "8",
                     "--pattern-pass-images", "5", "--paper-check-patterns", "2",
                     "--pass-repeats", "1", "--out", out, *FAST]) == 0
    results = load(out)
    torch_rows = rows_by(results, impl="torch-cpu")
    assert {r["what"] for r in torch_rows} == \
        {"inference", "train-step", "train-pass", "pattern-pass"}
    assert all(r["status"] == "ok" and r["samples"] for r in results["rows"])
    assert results["implementations"]["torch-cpu"]["threads"] >= 1
    # the per-pattern row: SGD at batch 1 over --pattern-pass-images, checked as a step
    [pattern] = rows_by(results, what="pattern-pass")
    assert (pattern["batch"], pattern["images"]) == (1, 5) and 0 < pattern["check_error"] <= 1e-4
    assert pattern["images_per_s"] == pytest.approx(5 / pattern["median_s"])
    [paper] = rows_by(results, what="paper-pass")
    assert paper["vs_pattern_pass"]["torch-cpu"] == \
        pytest.approx(paper["images_per_s"] / pattern["images_per_s"])
    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    assert "## Training pass per pattern in PyTorch" in md
    ratio = paper["vs_pattern_pass"]["torch-cpu"]
    assert f"cpu / torch-cpu {ratio:,.3g}x" in md


def test_torch_rows_say_why_without_torch(tmp_path, monkeypatch):
    """PyTorch is optional: without it its rows are 'not run', the others run."""
    monkeypatch.setitem(sys.modules, "torch", None)     # import torch raises ImportError
    monkeypatch.delitem(sys.modules, "bench.torch_lenet", raising=False)
    for name in ("torch-cpu", "torch-cuda", "torch-compile"):
        with pytest.raises(capability.Unavailable, match="PyTorch is not installed"):
            impls.create(name, {})
    out = str(tmp_path / "no-torch")
    assert cli.main(["--impl", "cpu,torch-cpu", "--what", "inference,pattern-pass",
                     "--batch-sizes", "1", "--pass-images", "2", "--pass-repeats", "1",
                     "--out", out, *FAST]) == 0
    results = load(out)
    assert results["implementations"]["torch-cpu"]["status"] == "not run"
    assert [(r["impl"], r["what"]) for r in results["rows"]] == [("cpu", "inference")]


# ------------------------------------------------- the short form of a GPU session

def test_rows_have_their_own_batch_sizes():
    """The GPU session's short benchmark: inference at 1, 1,024 and 60,000, layers at
    60,000, training steps at 64 and 60,000; CPU passes can be left out."""
    args = cli.build_parser().parse_args(
        ["--what", "inference,layers,train-step,paper-pass", "--batch-sizes", "1,1024,60000",
         "--layer-batch-sizes", "60000", "--step-batch-sizes", "64,60000",
         "--max-cpu-pass-images", "0", "--layers", "C1+S2,F6"])
    cfg = cli.config_from(args)
    runner = suite.Suite(cfg, log=lambda message: None)
    runner.impls = {"gpu": SimpleNamespace(whats=impls.ProjectImpl.whats)}
    rows = [(what, layer, n) for what, layer, n, _ in runner.plan()]
    assert rows == [("inference", None, 1), ("train-step", None, 64),
                    ("inference", None, 1024), ("inference", None, 60000),
                    ("layer", "C1+S2", 60000), ("layer", "F6", 60000),
                    ("train-step", None, 60000), ("paper-pass", None, 1)]
    # torch.compile's rows (a compile per new batch size) come after every other row
    runner.impls = {"torch-compile": SimpleNamespace(whats={"inference"}),
                    "gpu": SimpleNamespace(whats=impls.ProjectImpl.whats)}
    assert [r[3] for r in runner.plan()][-3:] == ["torch-compile"] * 3
    assert runner.plan()[-4] == ("paper-pass", None, 1, "gpu")
    cpu = SimpleNamespace(name="cpu", kind="cpu")
    row = runner.run_row(cpu, "paper-pass", None, 1, "label")
    assert row["status"] == "skipped" and "--max-cpu-pass-images 0" in row["reason"]


def test_headline_rows_come_first():
    """--headline-first (the GPU session): the GPU implementations' inference rows, then
    their training steps, then the per-pattern passes, torch.compile's after the eager
    ones; then every other row in the usual order."""
    args = cli.build_parser().parse_args(
        ["--what", "inference,layers,train-step,paper-pass,pattern-pass,train-pass",
         "--batch-sizes", "1,1024", "--layer-batch-sizes", "1024", "--step-batch-sizes", "64",
         "--pass-batch-sizes", "32", "--layers", "C1+S2", "--headline-first"])
    runner = suite.Suite(cli.config_from(args), log=lambda message: None)
    runner.impls = {"gpu": SimpleNamespace(whats=impls.ProjectImpl.whats),
                    "torch-cuda": SimpleNamespace(whats=capability.TORCH_WHATS),
                    "torch-compile": SimpleNamespace(whats={"inference", "train-step"}),
                    "cpu": SimpleNamespace(whats=capability.CPU_WHATS)}
    rows = [(what, n, name) for what, _, n, name in runner.plan()]
    assert rows[:11] == [
        ("inference", 1, "gpu"), ("inference", 1024, "gpu"),
        ("inference", 1, "torch-cuda"), ("inference", 1024, "torch-cuda"),
        ("train-step", 64, "gpu"), ("train-step", 64, "torch-cuda"),
        ("paper-pass", 1, "gpu"), ("pattern-pass", 1, "torch-cuda"),
        ("inference", 1, "torch-compile"), ("inference", 1024, "torch-compile"),
        ("train-step", 64, "torch-compile")]
    headline = runner.plan()
    runner.cfg.headline_first = False    # the default: one implementation after the other
    default = runner.plan()
    assert [r[3] for r in default][:5] == ["gpu"] * 4 + ["torch-cuda"]
    assert headline[11:] == [r for r in default if r not in headline[:11]]
    assert headline[11] == ("layer", "C1+S2", 1024, "gpu") and len(headline) == len(default) == 20


def test_results_json_is_written_after_every_row(tmp_path, monkeypatch):
    """With --out: before the set-up, after each row, at the end; each a valid file."""
    from bench import report
    written, write_json = [], report.write_json

    def spy(results, out_dir):
        path = write_json(results, out_dir)
        with open(path) as f:
            saved = json.load(f)
        written.append((len(saved["rows"]), saved["complete"]))
        return path
    monkeypatch.setattr(report, "write_json", spy)
    out = str(tmp_path / "rows")
    assert cli.main(["--impl", "cpu", "--what", "inference", "--batch-sizes", "1,2,3",
                     "--json-only", "--out", out, *FAST]) == 0
    assert written == [(0, False), (1, False), (2, False), (3, False), (3, True)]
    assert sorted(os.listdir(out)) == ["results.json"]      # --json-only


def test_an_interrupt_during_the_setup_leaves_valid_results(tmp_path):
    """SIGINT (the session's timeout) while the suite sets up: exit 130, a results.json
    that says so; the run would take minutes otherwise (--min-time 60 a row)."""
    import signal
    out = tmp_path / "interrupted"
    env = dict(os.environ, PYTHONPATH=python_path(ROOT), PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "bench", "--impl", "cpu", "--what",
                          "inference", "--batch-sizes", "1", "--min-time", "60",
                          "--json-only", "--out", str(out)],
                         cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:
            if line.startswith("setting up cpu"):
                p.send_signal(signal.SIGINT)
                break
        assert p.wait(timeout=120) == 130
    finally:
        p.kill()
    results = load(out)
    assert results["interrupted"] is True and results["complete"] is False
    assert all(r["status"] == "ok" for r in results["rows"]) and len(results["rows"]) <= 1


def test_torch_compile_says_why_it_cannot_run():
    try:
        import torch
    except ImportError:
        with pytest.raises(capability.Unavailable, match="PyTorch is not installed"):
            impls.create("torch-compile", {})
        return
    if not torch.cuda.is_available():
        with pytest.raises(capability.Unavailable, match="no CUDA GPU"):
            impls.create("torch-compile", {})
    assert impls.KIND["torch-compile"] == "gpu" and "torch-compile" in impls.ORDER


def test_session_records_parts_and_collects_them(tmp_path, quick_run):
    from bench import ptx, readme, session
    out = tmp_path / "out"
    out.mkdir()
    (out / "tests.log").write_text("# pytest\n# device: NVIDIA H200, 580.1\n"
                                   "# date: 2026-12-03T10:00:00Z  commit: " + "a" * 40 + "\n"
                                   "FAILED tests/test_x.py::test_y - boom\n"
                                   "1 failed, 9 passed in 42.50s\n")
    session.record(str(out), "tests", 1, 43, 210, "pytest -q", budget=525)
    with open(os.path.join(quick_run[3], "results.json")) as f:
        (out / "results.json").write_text(f.read())
    session.record(str(out), "bench", 124, 170, 170, "python -m bench")
    census = {"mode": "offline", "target": "sm_90", "date": "2026-12-03T10:00:00",
              "commit": "a" * 40, "toolkit": "ptxas 13.0", "versions": {}, "command": "c",
              "kernels": [], "unused_allowances": {}}
    (out / "ptx.json").write_text(json.dumps(census))
    saved = json.loads((out / "session.json").read_text())
    assert [(p["name"], p["status"], p["files"]) for p in saved["parts"]] == \
        [("tests", "failed", ["tests.log"]), ("bench", "timed out", ["results.json"])]
    dest = session.collect(str(out), dest=str(tmp_path / "run"))
    for name in ("results.md", "throughput.png", "ptx.md", "README.md", "session.json"):
        assert os.path.isfile(os.path.join(dest, name)), name
    text = open(os.path.join(dest, "README.md")).read()
    assert "| tests | `pytest -q` | 43 s | 210 s | failed (exit 1) | tests.log |" in text
    assert ptx.markdown(census).startswith("# Compile census: sm_90")
    # the session recorded what it ran by content: unchanged sources read as such
    recorded = readme.run_sources(dest)
    assert recorded["kernels/forward.py"] == readme.file_digest("kernels/forward.py")
    assert readme.changed_since({"sources": recorded}, ["kernels/forward.py"]) == []
    recorded["kernels/forward.py"] = "0" * 64
    assert readme.changed_since({"sources": recorded}, ["kernels/forward.py"]) == \
        ["kernels/forward.py"]
    assert readme.changed_since({"sources": None}, ["kernels/forward.py"]) is None
    # a kernel module's pieces count as the module: a change there is a change since
    assert {"kernels/train_step.py", "kernels/forward_pieces.py", "kernels/backward_pieces.py",
            "kernels/architecture.py", "kernels/common.py"} <= \
        set(readme.depends_on("kernels/train_step.py"))
    assert "kernels/backward_pieces.py" not in readme.depends_on("kernels/forward.py")
    assert {"lenet/workspace.py", "kernels/sdlm.py"} <= set(readme.depends_on("lenet/ops_gpu.py"))
    run = {"dir": dest, "commit": None, "tests": readme.test_results(dest), "sources": None}
    assert run["tests"]["failed"] == [("tests/test_x.py", "test_y")]
    assert run["tests"]["counts"] == {"failed": 1, "passed": 9}
    assert readme.outcome_in(run, "tests/test_x.py", None) == "failed: test_y"
    assert readme.outcome_in(run, "tests/test_z.py", "word") == "passed"
    assert readme.log_header(os.path.join(dest, "tests.log")) == \
        {"device": "NVIDIA H200", "date": "2026-12-03", "commit": "a" * 40}


def test_junit_results_count_each_modules_tests(tmp_path):
    from bench import readme
    (tmp_path / "tests.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.test_layer_kernels" '
        'name="test_full_forward[1]"/><testcase classname="tests.test_layer_kernels" '
        'name="test_full_backward[3]"><failure message="x"/></testcase><testcase '
        'classname="tests.test_layer_kernels" name="test_rbf_forward"><skipped/></testcase>'
        '</testsuite></testsuites>')
    run = {"commit": None, "tests": readme.test_results(str(tmp_path)), "sources": None}
    assert readme.outcome_in(run, "tests/test_layer_kernels.py", "full") == \
        "1 passed, 1 failed (test_full_backward[3])"
    assert readme.outcome_in(run, "tests/test_layer_kernels.py", "rbf") is None  # skipped
    assert [readme.rate(x) for x in (719.5, 1070.8, 19000, 4702666)] == \
        ["720", "1.07k", "19.0k", "4.70M"]


def test_readme_results_are_generated_from_the_committed_files():
    """README.md's generated blocks are what python -m bench.report --readme makes now:
    a new result, or a kernel change since a GPU run, needs the README regenerated.
    No git history is needed: runs record their sources' SHA-256."""
    from bench import readme
    with open(readme.README) as f:
        text = f.read()
    assert readme.generate(text) == text, \
        "README.md is out of date: run python -m bench.report --readme"


def test_gpu_session_script_and_readme_give_the_same_call():
    call = 'run(command="bash bench/gpu_session.sh", carry=[".carry"], timeout_s=540)'
    with open(os.path.join(ROOT, "bench", "gpu_session.sh")) as f:
        script = f.read()
    with open(os.path.join(ROOT, "README.md")) as f:
        assert call in f.read()
    assert call in script and "GPU_SESSION_BUDGET:-525" in script
    script_path = os.path.join(ROOT, "bench", "gpu_session.sh")
    assert subprocess.run(["bash", "-n", script_path]).returncode == 0
    assert not os.path.exists(os.path.join(ROOT, "bench", "run_on_gpu.sh"))


def test_accuracy_table_comes_from_the_runs_logs():
    """Each reproduction row of the README: its `lenet train` options, parsed by lenet's
    own parser, pick the runs whose descriptions match; the mean and range of their logs'
    20th-pass test errors and mean training error are what the row says."""
    import glob
    import re

    from lenet.cli import build_parser
    from lenet.train import default_settings
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    block = readme.split("readme: accuracy (do not edit by hand) -->")[1].split("<!-- end")[0]
    rows = re.findall(r"^\| `lenet train ([^`]+)` \| ([\d.]+)% \(([\d.]+)-([\d.]+)%\) \| "
                      r"([\d.]+)% \| (\d+) \| [^|]+ \| \[logs\]\(([^)]+)\) \|$", block, re.M)
    assert len(rows) >= 4 and len(rows) == block.count("| `lenet train ")  # none unread
    assert "| **0.95%** |" in block
    for flags, mean, low, high, train, seeds, folder in rows:
        args = build_parser().parse_args(["train", *flags.split()])
        want = {**default_settings(args.recipe)}
        want.update({k: v for k, v in (("init", args.init), ("mu", args.mu),
                                       ("loss", args.loss), ("schedule", args.schedule))
                     if v is not None})
        want.update(shuffle=not args.ordered, hessian_sample=args.hessian_sample,
                    distort=args.distort)
        test_errors, train_errors = [], []
        for path in sorted(glob.glob(os.path.join(ROOT, folder, "*-seed*.json"))):
            with open(path) as f:
                run = json.load(f)
            if run.get("j", 10.0) != 10.0 or any(run[k] != want[k] for k in (
                    "init", "mu", "loss", "schedule", "shuffle", "hessian_sample", "distort")):
                continue
            with open(path[:-len(".json")] + ".log.jsonl") as f:
                passes = [json.loads(line) for line in f if line.strip()]
            assert len(passes) == 20 and passes[-1]["pass"] == 20, path
            assert passes[-1]["loss"] == want["loss"] and passes[-1]["mu"] == want["mu"]
            test_errors.append(passes[-1]["test_error"])
            train_errors.append(passes[-1]["train_error"])
        assert len(test_errors) == int(seeds) >= 3, flags
        assert float(mean) == pytest.approx(100 * np.mean(test_errors), abs=0.005), flags
        assert (float(low), float(high)) == pytest.approx(
            (100 * min(test_errors), 100 * max(test_errors)), abs=0.005), flags
        assert float(train) == pytest.approx(100 * np.mean(train_errors), abs=0.005), flags


# ------------------------------------------- nothing of the user's overwritten

TINY = ["--impl", "cpu", "--what", "inference", "--batch-sizes", "2", *FAST]


def _earlier_run(path):
    """A folder holding an earlier run's three files; {name: bytes} of them."""
    path.mkdir(parents=True)
    (path / "results.json").write_text('{"rows": ["an earlier run, not repeatable"]}\n')
    (path / "results.md").write_text("# an earlier run\n")
    (path / "throughput.png").write_bytes(b"\x89PNG earlier")
    return {name: (path / name).read_bytes() for name in os.listdir(path)}


def _files(path):
    return {name: (path / name).read_bytes() for name in os.listdir(path)}


def _one_error_line(capsys):
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("bench: error: ")]
    assert len(err) == 1, err
    return err[0].removeprefix("bench: error: ")


def test_an_out_holding_results_is_refused_and_left_alone(tmp_path, capsys):
    """An --out with an earlier run: refused before anything runs or is written, unless
    --force; and with --force, a run that cannot run (no GPU, or the simulator) writes
    nothing and deletes nothing."""
    out = tmp_path / "earlier"
    earlier = _earlier_run(out)
    for args in (["--impl", "gpu"], TINY):
        assert cli.main([*args, "--out", str(out)]) == 2
        assert _one_error_line(capsys) == (
            f"--out {out} already holds results.json, results.md, throughput.png of an "
            "earlier run: give another --out, or --force to replace them")
        assert _files(out) == earlier
    assert cli.main(["--impl", "gpu", "--force", "--out", str(out), *FAST]) == 2
    assert "none of the implementations asked for can run here" in _one_error_line(capsys)
    assert _files(out) == earlier
    assert cli.main([*TINY, "--force", "--json-only", "--out", str(out)]) == 0
    assert [r["impl"] for r in load(out)["rows"]] == ["cpu"]    # replaced, as asked
    err = capsys.readouterr().err   # the earlier run's results.md and png: named, kept
    assert "results.md, throughput.png in" in err and "earlier run's" in err
    assert (out / "results.md").read_bytes() == earlier["results.md"]


def test_forced_run_that_dies_leaves_no_earlier_page_beside_its_results(tmp_path,
                                                                         monkeypatch):
    # killed during the set-up (SystemExit stands for the kill): results.json says
    # "not complete", and no earlier run's results.md or plot is left looking current
    out = tmp_path / "earlier"
    _earlier_run(out)

    def killed(self):
        raise SystemExit(143)

    monkeypatch.setattr(suite.Suite, "setup", killed)
    with pytest.raises(SystemExit):
        cli.main([*TINY, "--force", "--out", str(out)])
    assert sorted(os.listdir(out)) == ["results.json"] and not load(out)["complete"]


def test_a_pass_batch_above_the_pass_runs_and_is_labelled_as_the_pass(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["--impl", "cpu", "--what", "train-pass", "--pass-batch-sizes", "64,20,8",
                     "--pass-images", "20", "--pass-repeats", "1", *FAST,
                     "--out", str(out)]) == 0
    rows = load(out)["rows"]
    assert [(r["batch"], r["images"], r["status"]) for r in rows] == [(8, 20, "ok"),
                                                                     (20, 20, "ok")]


def test_a_choice_named_twice_is_taken_once():
    # --layers C5,C5 ran the row twice; the Markdown showed one, the JSON both
    args = cli.build_parser().parse_args(["--layers", "C5,C5", "--what", "inference,layers,"
                                          "inference"])
    assert args.layers == ["C5"] and args.what == ["inference", "layers"]


def test_each_pass_section_explains_its_own_rows(tmp_path):
    # the paper pass's mu and curvature paragraph once sat in PyTorch's pattern-pass section
    from bench import report
    run = os.path.join(ROOT, "bench", "results", "2026-12-07-cpu-final-check", "results.json")
    sections = {part.split("\n", 1)[0]: part for part in
                report.markdown(json.load(open(run))).split("\n## ")}
    paper = [t for h, t in sections.items() if h.startswith("Training pass, the paper's")]
    torch = [t for h, t in sections.items() if h.startswith("Training pass per pattern in")]
    assert len(paper) == len(torch) == 1
    assert "(--paper-mu)" in paper[0] and "(--paper-mu)" not in torch[0]
    assert "SGD with momentum" in torch[0] and "SGD with momentum" not in paper[0]


def test_unequal_cpu_threads_are_said_on_the_page():
    # the ratios compare both CPU sides on the same threads; a threading layer set
    # otherwise (NUMBA_THREADING_LAYER=workqueue NUMBA_NUM_THREADS=1) once went unsaid
    from bench import report
    run = os.path.join(ROOT, "bench", "results", "2026-12-07-cpu-final-check", "results.json")
    results = json.load(open(run))
    assert report.unequal_threads(results) is None
    assert "unequal threads" not in report.markdown(results)
    results["implementations"]["cpu"]["threads"] = 1
    assert "**torch-cpu ran on 2 threads, cpu on 1: their ratios compare unequal threads.**" \
        in report.markdown(results)


def test_a_dangling_link_as_out_is_one_line(tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    assert cli.main([*TINY, "--out", str(link)]) == 2
    assert _one_error_line(capsys) == f"--out {link}: a link to nothing ({tmp_path / 'nowhere'})"
    assert os.listdir(tmp_path) == ["link"]


def test_a_broken_results_json_is_refused_and_results_md_kept(tmp_path, capsys):
    from bench import report
    (tmp_path / "results.json").write_text('{"rows": [], "settings": {}}')
    (tmp_path / "results.md").write_text("my notes\n")
    assert report.main(["--render", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bench.report: error: {tmp_path / 'results.json'}"
                                               ": not the results.json of python -m bench"), err
    assert (tmp_path / "results.md").read_text() == "my notes\n"


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed must be a whole number of at least 0, not -1"),
    (["--rtol", "-1"], "--rtol must be a positive number, not -1.0"),
    (["--rtol", "nan"], "--rtol must be a positive number, not nan"),
    (["--torch-rtol", "inf"], "--torch-rtol must be a positive number, not inf"),
    (["--cpu-peak-gflops", "-5"], "--cpu-peak-gflops must be a positive number, not -5.0"),
    (["--cpu-peak-gflops", "0"], "--cpu-peak-gflops must be a positive number, not 0.0"),
    (["--peak-gflops", "0"], "--peak-gflops must be a positive number, not 0.0"),
    (["--min-time", "nan"], "--min-time must be a number of at least 0, not nan"),
    (["--max-cpu-pass-images", "-1"], "--max-cpu-pass-images must not be negative"),
    (["--out", ""], "--out must name a directory, not an empty string"),
])
def test_bad_numbers_and_an_empty_out_are_one_line_and_write_nothing(
        tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setattr(machine, "ROOT", str(tmp_path / "root"))   # the default --out's root
    out = tmp_path / "earlier"
    earlier = _earlier_run(out)
    given = [] if "--out" in args else ["--out", str(out), "--force"]
    assert cli.main([*TINY, *args, *given]) == 2
    assert _one_error_line(capsys) == message
    assert _files(out) == earlier and not (tmp_path / "root").exists()


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    assert cli.main([*TINY, "--out", str(afile)]) == 2
    assert _one_error_line(capsys) == f"--out {afile}: not a directory"
    assert afile.read_text() == "mine"


def test_the_default_folder_moves_to_a_fresh_one(tmp_path, monkeypatch):
    """Without --out, a day's folder that already holds results is kept: the run goes
    to -2, the next to -3."""
    monkeypatch.setattr(machine, "ROOT", str(tmp_path))
    base = tmp_path / "bench" / "results" / \
        f"{machine.today()}-{machine.slug('cpu-' + machine.cpu_model())}"
    earlier = _earlier_run(base)
    for n in (2, 3):
        assert cli.main(TINY) == 0
        assert [r["batch"] for r in load(f"{base}-{n}")["rows"]] == [2]
        assert sorted(os.listdir(f"{base}-{n}")) == ["results.json", "results.md",
                                                     "throughput.png"]
    assert _files(base) == earlier


def test_fresh_folders_and_refusals(tmp_path):
    """bench/outdir.py: the first of base, base-2, base-3, ... holding none of the files;
    an --out holding any of them refused unless forced; an --out under a file refused."""
    from bench import outdir
    files, base = ("a.json", "b.md"), tmp_path / "run"
    assert outdir.fresh(str(base), files) == str(base)
    base.mkdir()
    (base / "other.txt").write_text("not a result")
    assert outdir.fresh(str(base), files) == str(base)
    (base / "a.json").write_text("{}")
    (tmp_path / "run-2").write_text("a file")
    (tmp_path / "run-3").mkdir()
    (tmp_path / "run-3" / "b.md").write_text("#")
    assert outdir.fresh(str(base), files) == str(tmp_path / "run-4")
    with pytest.raises(outdir.OutError, match="already holds a.json of an earlier run"):
        outdir.check(str(base), files)
    assert outdir.check(str(base), files, force=True) == str(base)
    assert outdir.check(str(tmp_path / "new" / "deeper"), files) == str(tmp_path / "new" /
                                                                          "deeper")
    assert not (tmp_path / "new").exists()      # checked, not made
    with pytest.raises(outdir.OutError, match="run-2 is not a directory"):
        outdir.check(str(tmp_path / "run-2" / "x"), files)


@pytest.mark.parametrize("args, message", [
    (["--impl", "cpu", "--what", "layers"],
     "nothing to run: cpu has no layers rows (--what's help says which implementation "
     "has which rows)"),
    (["--impl", "cpu", "--what", "pattern-pass,layers"],
     "nothing to run: cpu has no pattern-pass, layers rows (--what's help says which "
     "implementation has which rows)"),
    (["--impl", "cpu", "--what", "inference", "--batch-sizes", "20000"],
     "nothing to run: every row asked for is a CPU row with a batch above --max-cpu-batch "
     "10000"),
])
def test_nothing_to_run_is_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert cli.main([*args, *FAST, "--out", str(out)]) == 2
    assert _one_error_line(capsys) == message
    assert not out.exists()


def test_rows_an_implementation_lacks_are_named(tmp_path, capsys):
    out = tmp_path / "some"
    assert cli.main(["--impl", "cpu", "--what", "inference,layers", "--batch-sizes", "2",
                     *FAST, "--out", str(out)]) == 0
    assert "not run: cpu has no layers rows" in capsys.readouterr().err
    results = load(out)
    assert results["not_offered"] == {"cpu": ["layers"]}
    assert [r["what"] for r in results["rows"]] == ["inference"]
    assert "| cpu | has no layers rows (asked for) |" in (out / "results.md").read_text()


def test_reproduction_page_repeat_command_repeats_runs(tmp_path):
    """docs/reproduction.md's "How to repeat": its run.py command names an --out of its
    own (made first), where the runs it asks for are still to do; in run.py's own
    folder every one of them is complete, so the command would repeat nothing."""
    import importlib.util
    import shlex
    with open(os.path.join(ROOT, "docs", "reproduction.md")) as f:
        block = f.read().split("## How to repeat")[1].split("```")[1]
    [line] = [line for line in block.splitlines() if "run.py lush-" in line]
    made, _, command = line.partition(" && ")
    words = shlex.split(command)
    args = words[words.index(next(w for w in words if w.endswith("run.py"))) + 1:]
    path = os.path.join(ROOT, next(w for w in words if w.endswith("run.py")))
    spec = importlib.util.spec_from_file_location("repro_run", path)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    settings = [a for a in args[:args.index("--seeds")]]
    seeds = [int(a) for a in args[args.index("--seeds") + 1:] if a.isdigit()]
    out = args[args.index("--out") + 1]
    assert shlex.split(made) == ["mkdir", "-p", out] and settings and seeds

    def to_do(folder):
        run.OUT = folder
        return [(s, seed) for seed in seeds for s in settings
                if run.setting(s) and run.passes_done(s, seed) < run.PASSES]
    assert to_do(run.HERE) == []     # the committed runs: all complete
    assert to_do(str(tmp_path / out)) == [(s, seed) for seed in seeds for s in settings]


# ------------------------------------------------ what the results say of themselves

def test_cpu_rows_report_numbas_threads(tmp_path):
    """The cpu rows run kernels/cpu.py on Numba's threads: the results give Numba's
    count (1 here, set for this run), not NumPy's BLAS threads."""
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        out = tmp_path / "threads"
        assert cli.main([*TINY, "--out", str(out)]) == 0
    finally:
        numba.set_num_threads(before)
    results = load(out)
    assert results["implementations"]["cpu"]["threads"] == 1
    assert results["implementations"]["cpu"]["threads_source"] == "numba.get_num_threads()"
    assert "; cpu (Numba) threads: 1;" in (out / "results.md").read_text()


def test_help_and_docstrings_say_what_the_command_does():
    import inspect

    import bench
    actions = {a.dest: a.help for a in cli.build_parser()._actions}
    for what in suite.WHATS:
        assert f"{what} = " in actions["what"], what
    assert "NUMBA_ENABLE_CUDASIM=1" in actions["rehearse"]
    assert "lenet bench" not in inspect.getsource(cli)   # no such command
    sizes = suite.Config().pass_batch_sizes
    text = " ".join(bench.__doc__.split())
    assert (f"training pass over 60,000 images at batch sizes "
            f"{', '.join(map(str, sizes[:-1]))} and {sizes[-1]} (--pass-batch-sizes)") in text
    assert cli.build_parser().parse_args([]).pass_batch_sizes == sizes


def test_the_cpu_peak_is_the_best_of_matmuls_before_and_after_the_rows(tmp_path, monkeypatch):
    """Measured twice (a shared machine's other load comes and goes): the best counts,
    for every row's fraction of peak, and results.md gives the range."""
    measured = iter([[100.0, 150.0, 90.0, 140.0, 120.0], [310.0, 95.0, 300.0, 305.0, 299.0]])
    monkeypatch.setattr(machine, "cpu_matmul_gflops", lambda n, k: next(measured))
    out = tmp_path / "peak"
    args = [a for a in TINY if a not in ("--cpu-peak-gflops", "100")]
    assert cli.main([*args, "--out", str(out)]) == 0
    results = load(out)
    assert results["cpu"]["peak_gflops"] == 310.0
    assert results["cpu"]["peak_samples_gflops"] == [100.0, 150.0, 90.0, 140.0, 120.0,
                                                     310.0, 95.0, 300.0, 305.0, 299.0]
    [row] = results["rows"]
    assert row["peak_fraction"] == pytest.approx(row["gflops"] / 310.0)
    md = (out / "results.md").read_text()
    assert "float32 peak 310 GFLOP/s (measured: the best of 10 2048x2048" in md
    assert "5 before the rows and 5 after; they ranged 90-310 GFLOP/s" in md


def test_results_record_their_method_and_old_ones_claim_none(tmp_path):
    """results.md's method is the one its results.json records: re-rendering an older
    run (no record) or another method's does not claim today's."""
    from bench import report
    out = tmp_path / "now"
    assert cli.main([*TINY, "--out", str(out)]) == 0
    results = load(out)
    assert results["method"] == report.method(results["settings"])
    md = (out / "results.md").read_text()
    assert all(f"- {line}" in md for line in results["method"])
    today = "Numba's threads (images in fixed chunks"
    assert today in md
    older = {k: v for k, v in results.items() if k != "method"}
    md = report.markdown(older)
    assert today not in md and "A training pass is" not in md
    assert "This results.json does not record its method" in md
    md = report.markdown({**results, "method": ["Timed with a sundial."]})
    assert "- Timed with a sundial." in md and today not in md
    assert "Largest relative error of the rows that passed their check: cpu " in md


def test_every_committed_result_renders_again(tmp_path):
    """python -m bench.report --render on a copy of every committed results.json (into
    tmp_path; bench/results/ itself is history and stays as it is)."""
    import glob
    import hashlib

    from bench import report
    paths = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "*", "results.json")))
    assert len(paths) >= 10

    def digests():
        return {p: hashlib.sha256(open(p, "rb").read()).hexdigest()
                for p in glob.glob(os.path.join(ROOT, "bench", "results", "*", "*"))
                if os.path.isfile(p)}
    before = digests()
    for path in paths:
        copy = tmp_path / os.path.basename(os.path.dirname(path))
        copy.mkdir()
        (copy / "results.json").write_bytes(open(path, "rb").read())
        assert report.main(["--render", str(copy)]) == 0, path
        md = (copy / "results.md").read_text()
        recorded = json.loads((copy / "results.json").read_text())
        assert md.startswith("# LeNet-5 benchmarks: ") and "## How it was measured" in md
        assert ("does not record its method" in md) == ("method" not in recorded), path
        assert (copy / "throughput.png").stat().st_size > 1000
    assert digests() == before


def test_render_errors_are_one_line(tmp_path, capsys):
    from bench import report
    afile = tmp_path / "afile"
    afile.write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{")
    cases = {tmp_path / "missing": f"--render {tmp_path / 'missing'}: no such directory",
             afile: f"--render {afile}: not a directory",
             "": "--render must name a directory, not an empty string",
             tmp_path / "empty": f"--render {tmp_path / 'empty'}: no results.json in it",
             tmp_path / "bad": f"{tmp_path / 'bad' / 'results.json'}: not readable as JSON"}
    for where, message in cases.items():
        assert report.main(["--render", str(where)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"bench.report: error: {message}"), err
    assert afile.read_text() == "x" and os.listdir(tmp_path / "empty") == []
