"""The bookkeeping of bench/gpu_session.sh: what ran, for how long, on what.

    python -m bench.session record OUT NAME EXIT SECONDS LIMIT COMMAND   (on the GPU)
    python -m bench.session collect FILES_AT [--dest DIR]                (here, after it)

record adds one part to OUT/session.json (creating it with the device, driver, date
and commit), so a session cut short still says what it finished. collect copies a
session's files into bench/results/<date>-<device>/, renders what the device did not
send back (results.md and throughput.png from results.json, ptx.md from ptx.json),
writes the folder's README.md and regenerates the README's results (python -m
bench.report --readme).

A rehearsal (gpu_session.sh --rehearse: GPU_SESSION_REHEARSAL=1, the device named by
GPU_SESSION_DEVICE) is marked "rehearsal": true; collect puts it only where --dest
says, never into bench/results/ or the README.

session.json: {"schema", "device", "driver", "date", "commit", "budget_s",
"parts": [{"name", "command", "exit", "seconds", "limit_s", "status"}], "sources":
{path: SHA-256 of the kernels, model and tests the session ran}}; status is
"ok", "failed" (non-zero exit), "timed out" (the part's own timeout) or "skipped".
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys

from bench import machine
from bench.readme import source_digests

PARTS = ("tests", "census", "bench", "train")   # gpu_session.sh's parts, in order of value
FILES = {  # what each part leaves in $OUT (at most 8 files come back from the device)
    "tests": ["tests.log", "tests.xml"],
    "census": ["ptx.json"],
    "bench": ["results.json"],
    "train": ["train-paper.log", "paper.log.jsonl"],
    "session": ["session.log", "session.json"],
}


def _device():
    """(name, driver) of the GPU, from nvidia-smi; a rehearsal's GPU_SESSION_DEVICE."""
    if os.environ.get("GPU_SESSION_DEVICE"):
        return os.environ["GPU_SESSION_DEVICE"], None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30).stdout.strip().splitlines()
        name, driver = (s.strip() for s in out[0].split(",", 1))
        return name, driver
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None, None


def status_of(exit_code):
    return {0: "ok", 124: "timed out", 130: "timed out", -1: "skipped"}.get(exit_code, "failed")


def record(out, name, exit_code, seconds, limit, command, budget=None):
    path = os.path.join(out, "session.json")
    if os.path.isfile(path):
        with open(path) as f:
            session = json.load(f)
    else:
        device, driver = _device()
        commit, dirty = machine.git_commit()
        session = {"schema": "lenet5-gpu-session/1", "device": device, "driver": driver,
                   "date": machine.now(), "commit": commit, "dirty": dirty,
                   "budget_s": budget, "versions": machine.versions(), "parts": [],
                   "rehearsal": os.environ.get("GPU_SESSION_REHEARSAL") == "1",
                   "sources": source_digests()}
    session["parts"].append({"name": name, "command": command, "exit": exit_code,
                             "seconds": seconds, "limit_s": limit,
                             "status": status_of(exit_code),
                             "files": [f for f in FILES.get(name, [])
                                       if os.path.isfile(os.path.join(out, f))]})
    with open(path + ".tmp", "w") as f:
        json.dump(session, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return session


def run_readme(session, files):
    """The run folder's README.md: what each file is, what each part took."""
    lines = [f"# GPU session{' REHEARSAL' if session.get('rehearsal') else ''}: "
             f"{session['device']}, {session['date'][:10]}", "",
             f"`bash bench/gpu_session.sh` through the device tool, commit "
             f"`{session['commit']}`{' (with uncommitted changes)' if session.get('dirty') else ''}"
             f", driver {session.get('driver')}.", "",
             "| part | command | took | limit | result | files |", "|---|---|---|---|---|---|"]
    for p in session["parts"]:
        lines.append(f"| {p['name']} | `{p['command']}` | {p['seconds']} s | {p['limit_s']} s "
                     f"| {p['status']} (exit {p['exit']}) | {', '.join(p['files'])} |")
    rendered = [f for f in ("results.md", "throughput.png", "ptx.md") if f in files]
    if rendered:
        lines += ["", f"{', '.join(rendered)}: rendered here from the JSON by "
                  "`python -m bench.session collect` (the device sends back at most 8 files)."]
    return "\n".join(lines) + "\n"


def collect(files_at, dest=None):
    """Copy a session's files into bench/results/<date>-<device>/ and render the rest."""
    with open(os.path.join(files_at, "session.json")) as f:
        session = json.load(f)
    if session.get("rehearsal") and dest is None:
        raise ValueError("a rehearsal's files go where --dest says, not into bench/results/")
    day = session["date"][:10] or datetime.date.today().isoformat()
    dest = dest or os.path.join(machine.ROOT, "bench", "results",
                                f"{day}-{machine.slug(session['device'] or 'gpu')}")
    os.makedirs(dest, exist_ok=True)
    copied = []
    for name in sorted(os.listdir(files_at)):
        if os.path.isfile(os.path.join(files_at, name)):
            shutil.copyfile(os.path.join(files_at, name), os.path.join(dest, name))
            copied.append(name)
    if "results.json" in copied:
        from bench import report
        with open(os.path.join(dest, "results.json")) as f:
            results = json.load(f)
        report.render(results, dest)
        copied += ["results.md", "throughput.png"]
    if "ptx.json" in copied:
        from bench import ptx
        with open(os.path.join(dest, "ptx.json")) as f:
            census = json.load(f)
        with open(os.path.join(dest, "ptx.md"), "w") as f:
            f.write(ptx.markdown(census))
        copied.append("ptx.md")
    with open(os.path.join(dest, "README.md"), "w") as f:
        f.write(run_readme(session, copied))
    return dest


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.session",
                                description="bench/gpu_session.sh's bookkeeping")
    sub = p.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("record", help="add one part to OUT/session.json")
    r.add_argument("out")
    r.add_argument("name", choices=PARTS)
    r.add_argument("exit", type=int)
    r.add_argument("seconds", type=int)
    r.add_argument("limit", type=int)
    r.add_argument("command", nargs="+")
    r.add_argument("--budget", type=int, default=None)
    c = sub.add_parser("collect", help="copy a session's files into bench/results/")
    c.add_argument("files_at")
    c.add_argument("--dest", default=None)
    args = p.parse_args(argv)
    if args.verb == "record":
        record(args.out, args.name, args.exit, args.seconds, args.limit,
               " ".join(args.command), args.budget)
        return 0
    try:
        dest = collect(args.files_at, args.dest)
    except (OSError, ValueError, KeyError) as e:
        print(f"bench.session collect: {e}", file=sys.stderr)
        return 1
    print(f"collected into {dest}")
    results = os.path.join(machine.ROOT, "bench", "results")
    if os.path.dirname(os.path.abspath(dest)) != results:
        print("not under bench/results/: the README is left as it is")
        return 0
    from bench import readme
    return readme.main()


if __name__ == "__main__":
    sys.exit(main())
