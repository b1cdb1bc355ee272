"""The compile census: every CUDA kernel of kernels/ compiled for the H200, with or
without one.

    python -m bench.ptx                   # here: numba-cuda + libnvvm + ptxas, no GPU
    python -m bench.ptx --device          # on a GPU: its own compiler and driver
    python -m bench.ptx --kernel backward --out DIR

It imports every module of kernels/ (so every kernel made with kernels.common.kernel
is in kernels.common.KERNELS), compiles each of its explicit signatures to PTX, and
through them every device function they call, then runs `ptxas -v` on the PTX. Per
kernel and signature it reports:

    ptxas      registers, spill stores and loads, stack frame (local memory),
               static shared memory
    PTX mix    f32 FMAs, all instructions, the FMA share, float64 operations (any
               instruction on .f64 but loads, stores and moves), 64-bit integer
               division and remainder (which cost tens of instructions each)
    hot loop   the same mix inside the innermost loops (found from the PTX's backward
               branches): all of them together, and the one with the most FMAs. The
               fused-inference target is one f32 FMA in every 3 instructions there.
    problems   spills, local memory or float64 that the kernel's allow= does not
               explain (tests/test_ptx.py fails on any), and allowances not needed

Offline (the default) it compiles for compute capability 9.0 with the toolkit at
$CUDA_HOME (default /usr/local/cuda), passing the three obstacles that
../shared/docs/gpu-without-gpu.md describes. It must run in a process of its own
with the CUDA simulator off (it sets NUMBA_ENABLE_CUDASIM=0 before importing numba).
--device compiles for the current GPU and loads each kernel to read the driver's
registers, shared and local memory per thread.

--device compiles each kernel and signature once (cuda.jit with the signature,
device_compile), and reads the PTX and the driver's figures from that compilation.

Writes ptx.json (every figure) and ptx.md (the table) to --out (default
bench/results/<date>-offline-ptx/, or <date>-<device name>/ with --device; where that
already holds a census, the first of -2/, -3/, ... that does not) and prints the
table. An --out that already holds ptx.json or ptx.md is refused unless --force
(bench/outdir.py). ptx.json is rewritten after every kernel ("complete": false until
the last), so a run killed mid-way keeps every kernel it finished; the fused kernels
(PRIORITY) come first. Exit status: 0 no problems, 1 some kernel has one, 2 bad
options (an --out refused, no kernel matching --kernel), 3 what it compiles with is
missing here: the toolkit, or with --device a GPU.

Test: pytest -q tests/test_ptx.py
"""

import argparse
import importlib
import json
import os
import pkgutil
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CC = (9, 0)                       # the H200's (and H100's) compute capability
DEFAULT_CUDA_HOME = "/usr/local/cuda"
FMA_TARGET = 1 / 3                # the fused-inference issue: 1 f32 FMA per 3 instructions
NOT_ARITHMETIC = ("ld", "st", "mov", "cvta")   # .f64 opcodes that compute nothing
# the modules whose kernels the census takes first: the GPU's default paths
PRIORITY = ("kernels.forward", "kernels.train_step", "kernels.sdlm")
FILES = ("ptx.json", "ptx.md")   # what a census writes


class ToolkitMissing(Exception):
    """No CUDA toolkit to compile with here; the message says what is missing."""


def toolkit_problem(cuda_home=None):
    """Why the offline census cannot run here (a missing ptxas or libnvvm), or None.
    Checks files only: importing numba is not needed."""
    home = cuda_home or os.environ.get("CUDA_HOME") or DEFAULT_CUDA_HOME
    ptxas = os.path.join(home, "bin", "ptxas")
    if not os.access(ptxas, os.X_OK):
        return f"no ptxas at {ptxas} (set CUDA_HOME to a CUDA toolkit)"
    places = [os.path.join(home, *sub) for sub in (("nvvm", "lib64"), ("lib64",), ("lib",))]
    if not any(os.path.isfile(os.path.join(d, "libnvvm.so")) for d in places):
        return f"no libnvvm.so in {home}'s nvvm/lib64, lib64 or lib (set CUDA_HOME)"
    if not os.path.isdir(os.path.join(home, "nvvm", "libdevice")):
        return f"no nvvm/libdevice in {home} (set CUDA_HOME to a CUDA toolkit)"
    return None


# ------------------------------------------------------------------ reading PTX

_LABEL = re.compile(r"^\s*(\$?[\w$]+):\s*$")


def instructions(ptx):
    """The PTX's instructions in order, as (opcode, operands text); directives,
    declarations, labels and braces are left out. Labels map to the index of the
    instruction after them: instructions(ptx) returns (list, {label: index})."""
    out, labels = [], {}
    for line in ptx.splitlines():
        text = line.split("//", 1)[0].strip()
        if not text or text[0] in ".{}":
            continue
        label = _LABEL.match(text)
        if label:
            labels[label.group(1)] = len(out)
            continue
        if not text.endswith(";"):
            continue
        if text.startswith("@"):          # a predicate: @%p1 or @!%p1
            text = text.split(None, 1)[1] if " " in text or "\t" in text else ""
        parts = text[:-1].split(None, 1)
        if parts:
            out.append((parts[0], parts[1].strip() if len(parts) > 1 else ""))
    return out, labels


def mix(instrs):
    """Counts of one run of instructions: f32 FMAs, all, the FMA share, float64
    operations, 64-bit integer div/rem."""
    fma = f64 = div64 = 0
    for op, _ in instrs:
        parts = op.split(".")
        if parts[0] == "fma" and parts[-1] == "f32":
            fma += 1
        if "f64" in parts and parts[0] not in NOT_ARITHMETIC:
            f64 += 1
        if parts[0] in ("div", "rem") and parts[-1] in ("s64", "u64"):
            div64 += 1
    n = len(instrs)
    return {"fma_f32": fma, "instructions": n, "fma_share": fma / n if n else None,
            "float64_ops": f64, "int64_divrem": div64}


def loops(instrs, labels):
    """The loops of the PTX as (first, last) instruction indices: a branch back to a
    label at or before it closes one (branches back to one label are one loop)."""
    ends = {}
    for i, (op, operands) in enumerate(instrs):
        if op.split(".")[0] != "bra":
            continue
        target = labels.get(operands.strip().rstrip(";").strip())
        if target is not None and target <= i:
            ends[target] = max(ends.get(target, i), i)
    return sorted(ends.items())


def innermost(spans):
    """The loops that hold no other loop."""
    return [(a, b) for a, b in spans
            if not any((a, b) != (c, d) and a <= c and d <= b for c, d in spans)]


def loop_mix(instrs, labels):
    """The mix of the innermost loops: all together ("inner"), the one with the most
    f32 FMAs ("hot", None when no loop has one), and how many there are."""
    inner = innermost(loops(instrs, labels))
    body = [ins for a, b in inner for ins in instrs[a:b + 1]]
    mixes = [mix(instrs[a:b + 1]) for a, b in inner]
    hot = max(mixes, key=lambda m: (m["fma_f32"], -m["instructions"]), default=None)
    if hot is not None and hot["fma_f32"] == 0:
        hot = None
    return {"inner_loops": len(inner), "inner": mix(body) if inner else None, "hot": hot}


_PTXAS_FIGURES = {
    "registers": r"Used (\d+) registers",
    "barriers": r"used (\d+) barriers",
    "shared_bytes": r"(\d+) bytes smem",
    "stack_bytes": r"(\d+) bytes stack frame",
    "spill_store_bytes": r"(\d+) bytes spill stores",
    "spill_load_bytes": r"(\d+) bytes spill loads",
}


def parse_ptxas(log):
    """ptxas -v's figures, summed over the functions it lists (a kernel is normally one
    entry; a device function left uninlined would add its own stack and spills);
    registers and shared memory are the entry's (the largest)."""
    figures = {}
    for key, pattern in _PTXAS_FIGURES.items():
        values = [int(v) for v in re.findall(pattern, log)]
        if key in ("registers", "barriers", "shared_bytes"):
            figures[key] = max(values, default=0)
        else:
            figures[key] = sum(values)
    return figures


def problems(entry):
    """What entry (a kernel and signature's figures) does that its allow= does not
    explain, and allowances it does not need."""
    allow, out = entry["allow"], []
    if entry.get("error"):
        return [f"does not compile: {entry['error']}"]
    spills = entry["spill_store_bytes"] + entry["spill_load_bytes"]
    uses = {"spills": spills > 0, "local_memory": entry["stack_bytes"] > 0,
            "float64": entry["mix"]["float64_ops"] > 0}
    what = {"spills": f"spills {entry['spill_store_bytes']} B / {entry['spill_load_bytes']} B",
            "local_memory": f"uses {entry['stack_bytes']} B of local memory (stack frame)",
            "float64": f"has {entry['mix']['float64_ops']} float64 operations"}
    for key, used in uses.items():
        if used and key not in allow:
            out.append(f"{what[key]}, not in its allow=")
    return out


def unused_allowances(entries):
    """{kernel name: [allow keys that none of its signatures needs]}."""
    used, allowed = {}, {}
    for e in entries:
        if e.get("error"):
            continue
        allowed[e["kernel"]] = set(e["allow"])
        u = used.setdefault(e["kernel"], set())
        if e["spill_store_bytes"] + e["spill_load_bytes"]:
            u.add("spills")
        if e["stack_bytes"]:
            u.add("local_memory")
        if e["mix"]["float64_ops"]:
            u.add("float64")
    return {k: sorted(allowed[k] - used[k]) for k in allowed if allowed[k] - used[k]}


# ------------------------------------------------------------------- compiling

def prepare_offline(cuda_home=None):
    """Set up numba-cuda to compile for CC without a GPU. Must run before numba is
    imported in this process (ToolkitMissing otherwise, or when the toolkit is absent)."""
    home = cuda_home or os.environ.get("CUDA_HOME") or DEFAULT_CUDA_HOME
    problem = toolkit_problem(home)
    if problem:
        raise ToolkitMissing(problem)
    if "numba" in sys.modules:
        from numba import config
        if config.ENABLE_CUDASIM:
            raise ToolkitMissing("numba was imported with the CUDA simulator on: run "
                                 "python -m bench.ptx in a process of its own")
    os.environ["CUDA_HOME"] = home
    os.environ["NUMBA_FORCE_CUDA_CC"] = f"{CC[0]}.{CC[1]}"   # no NVRTC query of the arch
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0"
    import numba.cuda.cuda_paths as cuda_paths
    if not getattr(cuda_paths._get_nvrtc_path, "_census", False):
        find = cuda_paths._get_nvrtc_path

        def nvrtc_path_or_none(*args, **kwargs):  # no libnvrtc here, and none needed
            try:
                return find(*args, **kwargs)
            except Exception:
                return None
        nvrtc_path_or_none._census = True
        cuda_paths._get_nvrtc_path = nvrtc_path_or_none
    return home


class _Device:
    """What the dispatcher asks "the current device" while compiling device functions."""
    compute_capability = CC


def load_kernels():
    """Import every module of the kernels package; return kernels.common.KERNELS."""
    from lenet import kernels
    from lenet.kernels.common import KERNELS
    for info in pkgutil.iter_modules(kernels.__path__):
        importlib.import_module(f"{kernels.__name__}.{info.name}")
    return KERNELS


_COMPILE_OPTIONS = ("debug", "lineinfo", "fastmath", "opt", "launch_bounds")


def compile_ptx(kernel, signature):
    """The kernel's PTX for one signature, offline for CC (no GPU)."""
    from numba import cuda
    options = {k: v for k, v in kernel.options.items() if k in _COMPILE_OPTIONS}
    import numba.cuda.dispatcher as dispatcher
    current = dispatcher.get_current_device
    dispatcher.get_current_device = _Device   # device functions ask for it; no GPU here
    try:
        return cuda.compile_ptx(kernel.py_func, signature, cc=CC, **options)[0]
    finally:
        dispatcher.get_current_device = current


def run_ptxas(ptxas, ptx, arch, kernel):
    """ptxas -v's log for the PTX (raises RuntimeError with its message on failure)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        command = [ptxas, f"-arch={arch}", "-v", "-o", os.path.join(tmp, "kernel.cubin"), path]
        if kernel.options.get("max_registers"):
            command[1:1] = ["-maxrregcount", str(kernel.options["max_registers"])]
        p = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if p.returncode:
        raise RuntimeError(f"ptxas failed: {(p.stderr or p.stdout).strip()[-500:]}")
    return p.stdout + p.stderr


def device_compile(kernel, signature):
    """(PTX, the driver's figures) of one kernel and signature on the current GPU, from
    one compilation: cuda.jit with the signature compiles it, the loaded overload
    gives its registers, shared, local and constant memory per thread or block."""
    from numba import cuda
    d = cuda.jit(signature, **kernel.options)(kernel.py_func)
    [overload] = d.overloads.values()
    cc = cuda.get_current_device().compute_capability
    figures = {"registers": overload.regs_per_thread,
               "shared_bytes": overload.shared_mem_per_block,
               "local_bytes": overload.local_mem_per_thread,
               "const_bytes": overload.const_mem_size,
               "max_threads_per_block": overload.max_threads_per_block}
    return overload.inspect_asm(cc), {k: int(v) for k, v in figures.items()}


def by_priority(kernels):
    """The kernels with PRIORITY's modules first (in its order), the rest as they were."""
    def rank(k):
        module = k.name.rsplit(".", 1)[0]
        return PRIORITY.index(module) if module in PRIORITY else len(PRIORITY)
    return sorted(kernels, key=rank)


def signature_text(argtypes):
    """Argument types as they are written: (float32[:, ::1], int64, ...)."""
    from numba import types
    args = []
    for t in argtypes:
        if isinstance(t, types.Array):
            dims = [":"] * t.ndim
            dims[-1 if t.layout == "C" else 0] = "::1" if t.layout in "CF" else ":"
            args.append(f"{t.dtype}[{', '.join(dims)}]")
        else:
            args.append(str(t))
    return "(" + ", ".join(args) + ")"


def variant_text(kernel, index):
    """What sets signature `index` apart from the kernel's others: "x float64[::1],
    value float64" (empty for a kernel with one signature)."""
    if len(kernel.argtypes) < 2:
        return ""
    names = kernel.py_func.__code__.co_varnames
    mine = kernel.argtypes[index]
    differ = [i for i in range(len(mine)) if any(o[i] != mine[i] for o in kernel.argtypes)]
    return ", ".join(f"{names[i]} {signature_text([mine[i]])[1:-1]}" for i in differ)


def census(kernels, device=False, ptxas=None, arch=None, log=None, on_entry=None):
    """One entry per kernel and signature: its ptxas figures, PTX mix, loops, problems.
    on_entry(entries) after each one (main writes ptx.json there)."""
    entries = []
    for k in kernels:
        for index, signature in enumerate(k.signatures):
            entry = {"kernel": k.name, "module": k.name.rsplit(".", 1)[0],
                     "signature_index": index, "signatures": len(k.signatures),
                     "signature": signature_text(k.argtypes[index]),
                     "variant": variant_text(k, index), "allow": dict(k.allow)}
            start = time.perf_counter()
            try:
                if device:
                    ptx, entry["driver"] = device_compile(k, signature)
                else:
                    ptx = compile_ptx(k, signature)
                body, labels = instructions(ptx)
                entry["mix"] = mix(body)
                entry["loops"] = loop_mix(body, labels)
                figures = None
                if ptxas:
                    try:
                        figures = parse_ptxas(run_ptxas(ptxas, ptx, arch, k))
                    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                        if not device:
                            raise
                        # on a GPU a toolkit older than numba-cuda's NVVM may refuse the
                        # PTX: the driver's figures below still stand
                        entry["ptxas_error"] = str(e)[-300:]
                if figures is None:   # the driver's local memory is the stack frame
                    figures = {"registers": entry["driver"]["registers"],
                               "shared_bytes": entry["driver"]["shared_bytes"],
                               "stack_bytes": entry["driver"]["local_bytes"],
                               "spill_store_bytes": 0, "spill_load_bytes": 0,
                               "spills_known": False}
                entry.update(figures)
            except Exception as e:  # a kernel that does not compile: reported, not fatal
                entry["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:400]}"
            entry["seconds"] = round(time.perf_counter() - start, 3)
            entry["problems"] = problems(entry)
            entries.append(entry)
            if on_entry is not None:
                on_entry(entries)
            if log:
                log(f"{k.name}{f' [{index}]' if len(k.signatures) > 1 else ''}: "
                    + (entry.get("error") or f"{entry.get('registers', '?')} registers, "
                       f"{entry['mix']['fma_f32']} FMAs / {entry['mix']['instructions']}"))
    return entries


# ------------------------------------------------------------------- reporting

def _pct(share):
    return "-" if share is None else f"{100 * share:.0f}%"


def _loop_cell(m):
    return "-" if not m else f"{m['fma_f32']}/{m['instructions']} ({_pct(m['fma_share'])})"


def markdown(results):
    """The census as Markdown: one row per kernel and signature."""
    device = results["mode"] == "device"
    out = [f"# Compile census: {results['target']}", "",
           f"{results['date']}, commit `{results['commit']}`"
           + (" (with uncommitted changes)" if results.get("dirty") else "")
           + f"; {results['toolkit']}; numba-cuda {results['versions'].get('numba-cuda')}.",
           "", f"Command: `{results['command']}`", "",
           "Registers, spills (stores/loads), local memory (the stack frame) and static "
           "shared memory per thread or block, from `ptxas -v`"
           + ("; driver: what the loaded kernel reports" if device else "")
           + ". PTX mix: f32 FMAs / all instructions (FMA share), float64 operations, "
           "64-bit integer div/rem. Hot loop: the innermost loop with the most FMAs, "
           "FMAs/instructions (share); inner loops: all innermost loops together. "
           f"The fused-inference target is an FMA share of at least {_pct(FMA_TARGET)} in "
           "the inner loops.", ""]
    header = ["kernel", "registers", "spills B", "local B", "shared B", "FMA / instr.",
              "float64", "64-bit div", "hot loop", "inner loops", "allowed"]
    if device:
        header[1:1] = ["driver regs / local / shared"]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in results["kernels"]:
        name = e["kernel"].removeprefix("kernels.")
        if e["signatures"] > 1:
            name += f" ({e['variant']})"
        if e.get("error"):
            cells = [name] + ["**does not compile**"] + [""] * (len(header) - 2)
            out.append("| " + " | ".join(cells) + " |")
            continue
        m, lp = e["mix"], e["loops"]
        cells = [name, str(e.get("registers", "?")),
                 f"{e['spill_store_bytes']}/{e['spill_load_bytes']}"
                 if e.get("spills_known", True) else "?",
                 str(e["stack_bytes"]), str(e["shared_bytes"]),
                 f"{m['fma_f32']}/{m['instructions']} ({_pct(m['fma_share'])})",
                 str(m["float64_ops"]), str(m["int64_divrem"]),
                 _loop_cell(lp["hot"]), _loop_cell(lp["inner"]),
                 ", ".join(sorted(e["allow"])) or ""]
        if device:
            d = e["driver"]
            cells[1:1] = [f"{d['registers']} / {d['local_bytes']} / {d['shared_bytes']}"]
        if e["problems"]:
            cells[0] = f"**{cells[0]}**"
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    bad = [(e["kernel"], p) for e in results["kernels"] for p in e["problems"]]
    unused = results.get("unused_allowances", {})
    if bad or unused:
        out += ["## Problems", ""]
        out += [f"- {k}: {p}" for k, p in bad]
        out += [f"- {k}: allow= lists {', '.join(v)}, which no signature needs"
                for k, v in unused.items()]
        out.append("")
    reasons = {e["kernel"]: e["allow"] for e in results["kernels"] if e["allow"]}
    if reasons:
        out += ["## Allowed, and why", ""]
        out += [f"- {k} {key}: {why}" for k, allow in reasons.items()
                for key, why in allow.items()]
        out.append("")
    return "\n".join(out)


def _progress(message):
    print(message, file=sys.stderr, flush=True)


def toolkit_version(ptxas):
    if not ptxas:
        return "no ptxas"
    p = subprocess.run([ptxas, "--version"], capture_output=True, text=True, timeout=60)
    lines = [line for line in p.stdout.splitlines() if "release" in line]
    return f"ptxas {lines[-1].split('release', 1)[1].strip().strip(',')}" if lines else "ptxas"


def main(argv=None):
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even if started ignoring it
    p = argparse.ArgumentParser(
        prog="python -m bench.ptx",
        description="Compile every CUDA kernel (kernels.common.KERNELS) for the H200 and "
        "report ptxas's registers, spills, local and shared memory and the PTX's instruction "
        "mix, per kernel and signature. Without a GPU by default (CUDA toolkit at $CUDA_HOME, "
        "default /usr/local/cuda).",
        epilog="Exit status: 0 no problems, 1 a kernel spills, uses local memory or float64 "
        "without an allowance, or does not compile, 2 bad options (an --out refused, no "
        "kernel matching --kernel), 3 no toolkit, or with --device no GPU.")
    p.add_argument("--device", action="store_true",
                   help="compile for the current GPU (cuda.jit, once per signature) "
                   "and read the loaded kernels' figures from the driver")
    p.add_argument("--kernel", default=None,
                   help="only kernels whose name contains this text")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for ptx.json and ptx.md (default: "
                   "bench/results/<date>-offline-ptx/ or <date>-<device>/ with --device, or "
                   "the first of -2/, -3/, ... after it that holds no census). An --out that "
                   "already holds ptx.json or ptx.md is refused, nothing written, unless "
                   "--force")
    p.add_argument("--force", action="store_true",
                   help="replace the census an --out already holds")
    p.add_argument("--json-only", action="store_true",
                   help="write ptx.json alone, not ptx.md (bench/gpu_session.sh: the device "
                   "sends back few files; python -m bench.session collect renders it)")
    args = p.parse_args(argv)
    command = "python -m bench.ptx " + " ".join(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    from bench import outdir
    if args.out is not None:
        try:
            outdir.check(args.out, FILES, force=args.force)
        except outdir.OutError as e:
            print(f"bench.ptx: error: {e}", file=sys.stderr)
            return 2
    try:
        if args.device:
            home = os.environ.get("CUDA_HOME") or DEFAULT_CUDA_HOME
            ptxas = os.path.join(home, "bin", "ptxas")
            ptxas = ptxas if os.access(ptxas, os.X_OK) else shutil.which("ptxas")
        else:
            home = prepare_offline()
            ptxas = os.path.join(home, "bin", "ptxas")
    except ToolkitMissing as e:
        print(f"bench.ptx: {e}", file=sys.stderr)
        return 3
    from numba import cuda

    from bench import machine
    cc, target = CC, f"sm_{CC[0]}{CC[1]} offline (no GPU)"
    device_name = None
    if args.device:
        if not cuda.is_available():
            print("bench.ptx: --device needs a CUDA GPU", file=sys.stderr)
            return 3
        dev = cuda.get_current_device()
        cc = dev.compute_capability
        name = dev.name
        device_name = name.decode() if isinstance(name, bytes) else str(name)
        target = f"{device_name}, sm_{cc[0]}{cc[1]}"
    kernels = by_priority([k for k in load_kernels()
                           if args.kernel is None or args.kernel in k.name])
    if not kernels:
        print(f"bench.ptx: error: no kernel's name contains {args.kernel!r}", file=sys.stderr)
        return 2
    commit, dirty = machine.git_commit()
    slug = machine.slug(device_name) if device_name else "offline-ptx"
    out = args.out if args.out is not None else outdir.fresh(
        os.path.join(machine.ROOT, "bench", "results", f"{machine.today()}-{slug}"), FILES)
    os.makedirs(out, exist_ok=True)
    results = {"schema": "lenet5-ptx/1", "mode": "device" if args.device else "offline",
               "date": machine.now(), "command": command, "commit": commit, "dirty": dirty,
               "target": target, "compute_capability": list(cc), "device": device_name,
               "toolkit": toolkit_version(ptxas), "cuda_home": home,
               "versions": machine.versions(), "fma_target": FMA_TARGET,
               "complete": False, "kernels": [], "unused_allowances": {}}

    def write(entries):
        results.update(kernels=entries, seconds=round(time.perf_counter() - started, 1),
                       unused_allowances=unused_allowances(entries))
        path = os.path.join(out, "ptx.json")
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
        os.replace(path + ".tmp", path)

    write([])
    entries = census(kernels, device=args.device, ptxas=ptxas, arch=f"sm_{cc[0]}{cc[1]}",
                     log=_progress, on_entry=write)
    results["complete"] = True
    write(entries)
    text = markdown(results)
    if not args.json_only:
        with open(os.path.join(out, "ptx.md"), "w") as f:
            f.write(text)
    print(text)
    print(f"written: {os.path.join(out, 'ptx.json')}"
          + ("" if args.json_only else ", ptx.md") + f" ({results['seconds']} s)")
    return 1 if any(e["problems"] for e in entries) or results["unused_allowances"] else 0


if __name__ == "__main__":
    sys.exit(main())
