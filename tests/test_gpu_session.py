"""bench/gpu_session.sh --rehearse: every part of a GPU session run here, end to end, in
the CUDA simulator at tiny sizes with a fake device name; then its files collected into
a temporary folder. What would break the one GPU call of a session breaks here first.

    pytest -q tests/test_gpu_session.py     (about a minute on 2 cores)
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import python_path

from bench import session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRIORITY = ["tests/test_forward_pieces.py", "tests/test_forward.py",
            "tests/test_backward_pieces.py", "tests/test_train_step.py", "tests/test_sdlm.py",
            "tests/test_gpu_model.py", "tests/test_model.py"]


def _tree(path):
    """{relative path: mtime} of every file under path."""
    return {os.path.relpath(os.path.join(d, f), path): os.path.getmtime(os.path.join(d, f))
            for d, _, files in os.walk(path) for f in files}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, mnist_dir):
    out = tmp_path_factory.mktemp("session") / "out"
    results_before = _tree(os.path.join(ROOT, "bench", "results"))
    with open(os.path.join(ROOT, "README.md")) as f:
        readme_before = f.read()
    # the session's own settings (GPU_SESSION_*) left in the environment would change it
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_SESSION_")}
    env.update(GPU_SESSION_PYTHON=sys.executable, LENET_DATA=mnist_dir)
    p = subprocess.run(["bash", "bench/gpu_session.sh", "--rehearse", str(out)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=900)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme_after = f.read()
    return {"process": p, "out": out, "collected": out.parent / "out-collected",
            "untouched": (results_before == _tree(os.path.join(ROOT, "bench", "results"))
                          and readme_before == readme_after)}


def load(path):
    with open(path) as f:
        return json.load(f)


def test_every_part_runs_and_leaves_its_files(rehearsal):
    p, out = rehearsal["process"], rehearsal["out"]
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    expected = {f for files in session.FILES.values() for f in files}
    assert len(expected) == 8 and set(os.listdir(out)) == expected   # what the device sends
    s = load(out / "session.json")
    assert s["rehearsal"] is True and s["device"] == "Rehearsal GPU (CUDA simulator)"
    assert [(q["name"], q["status"]) for q in s["parts"]] == \
        [(name, "ok") for name in ("tests", "census", "bench", "train")]
    assert all(q["files"] == session.FILES[q["name"]] for q in s["parts"])
    # the budget: every part inside its limit, and the rehearsal inside its own
    assert all(q["seconds"] <= q["limit_s"] for q in s["parts"])
    assert "=== train: exit 0" in p.stdout and rehearsal["untouched"]


def test_the_priority_tests_ran_first_and_passed(rehearsal):
    out = rehearsal["out"]
    cases = ET.parse(out / "tests.xml").getroot().iter("testcase")
    ran = [(c.get("classname"), c.get("name"), [x.tag for x in c]) for c in cases]
    files = [f"tests/{cls.split('.')[-1]}.py" for cls, _, _ in ran]
    assert set(files) == set(PRIORITY) and len(ran) >= 7
    assert files == sorted(files, key=PRIORITY.index)      # in the session's order
    assert all(not tags for _, _, tags in ran), ran        # no failure, error or skip
    with open(out / "tests.log") as f:
        head = [next(f) for _ in range(3)]
    assert head[0].startswith("# pytest: ") and "--junitxml" in head[0]
    assert head[1] == "# device: Rehearsal GPU (CUDA simulator), none\n"


def test_the_census_and_the_benchmark_wrote_complete_files(rehearsal):
    out = rehearsal["out"]
    census = load(out / "ptx.json")
    assert census["complete"] is True and census["kernels"]
    assert all(not e.get("error") and e["registers"] > 0 for e in census["kernels"])
    results = load(out / "results.json")
    assert results["rehearsal"] is True and results["complete"] is True
    rows = [(r["impl"], r["what"], r["batch"], r["status"]) for r in results["rows"]]
    # headline first: this project's GPU inference, its step, its per-pattern pass (each
    # at batch 1: the simulator's rows are about running, not sizes)
    assert rows[:3] == [("gpu", "inference", 1, "ok"), ("gpu", "train-step", 1, "ok"),
                        ("gpu", "paper-pass", 1, "ok")]
    assert ("gpu", "layer", 1, "ok") in rows      # RBF, the stage kernel
    assert all(r["check_error"] <= 1e-5 for r in results["rows"][:3])
    assert all(status in ("ok", "skipped") for *_, status in rows), rows
    torch = results["implementations"]["torch-cpu"]
    if torch["status"] == "ran":   # PyTorch installed: its per-pattern row ran too
        assert ("torch-cpu", "pattern-pass", 1, "ok") in rows
    else:
        assert "PyTorch is not installed" in torch["reason"]
    [line] = (out / "paper.log.jsonl").read_text().splitlines()
    assert json.loads(line)["pass"] == 1 and json.loads(line)["device"] == "gpu"


def test_collect_renders_the_rehearsal_outside_the_results(rehearsal):
    collected = rehearsal["collected"]
    for name in ("results.md", "throughput.png", "ptx.md", "README.md", "session.json"):
        assert os.path.isfile(collected / name), name
    with open(collected / "results.md") as f:
        assert "A rehearsal (`--rehearse`)" in f.read()
    with open(collected / "README.md") as f:
        assert f.readline().startswith("# GPU session REHEARSAL")
    # without a destination, a rehearsal is refused (it would land in bench/results/)
    p = subprocess.run([sys.executable, "-m", "bench.session", "collect",
                        str(rehearsal["out"])], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=python_path(ROOT)), timeout=120)
    assert p.returncode == 1 and "rehearsal" in p.stderr and p.stderr.count("\n") == 1
