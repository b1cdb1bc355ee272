#!/usr/bin/env bash
# One GPU session in ONE call of the device tool: what a lent GPU should check, most
# valuable first. Each part runs under its own timeout and writes its log and JSON into
# $OUT as soon as it ends, so a session cut short keeps what it finished.
#
#   1. tests   the whole test suite on the GPU, at realistic sizes (kernel batches 1, 3,
#              1001, 4099): tests.log, tests.xml (JUnit, for python -m bench.report --readme)
#   2. census  python -m bench.ptx --device: every kernel compiled for the GPU, with
#              the driver's registers, local and shared memory: ptx.json
#   3. bench   python -m bench, short: whole-network inference at batch 1, 1,024 and
#              60,000, each layer at 60,000, a training step at 64 and 60,000 (the
#              fused step), an SGD pass over 60,000 images at batch 32, the paper's
#              per-pattern pass over 60,000 patterns; this project's kernels
#              against PyTorch (eager cuDNN, and torch.compile with CUDA graphs) and the
#              CPU rows up to batch 1,024: results.json
#   4. train   the paper's recipe on MNIST (--init sqrt-fan-in --mu 1) through the fused
#              kernel, for as many of its 20 passes as the time left allows:
#              train-paper.log, paper.log.jsonl
#   and session.log (all it printed) and session.json (each part's time and exit status):
#   8 files, the most the device tool sends back.
#
# What each part took on the last GPU (NVIDIA H100, 2026-11-22, with the older
# bench/run_on_gpu.sh): tests 142 s; census, bench (this short form) and train: not yet
# measured. Limits below: tests 210 s, census 60 s, bench 170 s, train the rest of 525 s.
#
# How to run it (a session whose device `status` says can_start_another: true; it costs
# about 11 of the task's 15 device minutes, machine start included):
#   1. Here, in the root of the session's own checkout (the device tool sends that
#      checkout, not a helper's worktree), with the commit to test checked out:
#          bash bench/gpu_session.sh --prepare [MNIST_DIR]   # default ../shared/data/mnist
#      It fills the git-ignored .carry/: mnist/ (11 MB), whl/ (threadpoolctl, which the
#      device's Python may lack) and commit (the hash: the copy sent there has no .git).
#   2. The device tool, exactly:
#          run(command="bash bench/gpu_session.sh", carry=[".carry"], timeout_s=540)
#   3. Here, with FILES_AT from the run's reply:
#          bash bench/gpu_session.sh --collect FILES_AT
#      which copies the files into bench/results/<date>-<device>/, renders results.md,
#      throughput.png and ptx.md, and regenerates the README's results (python -m
#      bench.report --readme); review and commit both. Then give_back, unless there is
#      time to run it again at the end.
# A rerun of some parts only, with a smaller budget (seconds for the parts; timeout_s
# 15 more), for example at the end of a session:
#          run(command="GPU_SESSION_PARTS='bench train' GPU_SESSION_BUDGET=285 bash bench/gpu_session.sh",
#              carry=[".carry"], timeout_s=300)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PYTHON=python3
[ -x .venv/bin/python ] && PYTHON=$PWD/.venv/bin/python

if [ "${1:-}" = --prepare ]; then
    mnist=${2:-../shared/data/mnist}
    ls "$mnist"/train-images-idx3-ubyte* >/dev/null || { echo "no MNIST in $mnist"; exit 1; }
    rm -rf .carry && mkdir -p .carry/mnist .carry/whl
    cp "$mnist"/*-ubyte* .carry/mnist/ || exit 1
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d .carry/whl \
        threadpoolctl==3.8.0 || exit 1
    git rev-parse HEAD > .carry/commit || exit 1
    [ -n "$(git status --porcelain --untracked-files=no)" ] && echo dirty >> .carry/commit
    du -sh .carry
    echo 'now: run(command="bash bench/gpu_session.sh", carry=[".carry"], timeout_s=540)'
    exit 0
fi
if [ "${1:-}" = --collect ]; then
    [ -f "${2:-}/session.json" ] || { echo "usage: $0 --collect FILES_AT (with session.json)"; exit 1; }
    "$PYTHON" -m bench.session collect "$2" && "$PYTHON" -m bench.report --readme
    exit $?
fi

BUDGET=${GPU_SESSION_BUDGET:-525}   # seconds for all parts: timeout_s (540) less the copy back
PARTS=" ${GPU_SESSION_PARTS:-tests census bench train} "   # e.g. "bench train" for a rerun
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
[ -f .carry/commit ] && cp .carry/commit .commit     # what bench.machine.git_commit reads
COMMIT=$(head -1 .commit 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 LENET_DATA=$PWD/.carry/mnist

header() {  # the first lines of a log: what, where, when, which commit
    echo "# $1"
    echo "# device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
    echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $COMMIT"
}
cap() {  # a part's limit: its own, or what is left of the budget; 0 for a part not asked for
    [[ $PARTS == *" $2 "* ]] || { echo 0; return; }
    local left=$((BUDGET - SECONDS - 5))
    left=$(( left > 0 ? left : 0 ))
    echo $(( $1 < left ? $1 : left ))
}
record() {  # NAME EXIT START LIMIT COMMAND...: into session.json
    local name=$1 rc=$2 start=$3 limit=$4
    shift 4
    $PYTHON -m bench.session record --budget $BUDGET "$OUT" "$name" "$rc" \
        $((SECONDS - start)) "$limit" -- "$@"
    if [ "$rc" = -1 ]; then echo "=== $name: skipped (not asked for, or too little time left)"
    else echo "=== $name: exit $rc after $((SECONDS - start)) s (limit $limit s; $SECONDS s in all)"
    fi
}

session() {
    echo "=== GPU session, commit $COMMIT, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    if ! $PYTHON -c "import threadpoolctl" 2>/dev/null; then
        $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --target /tmp/site .carry/whl/*.whl && export PYTHONPATH=$PWD:/tmp/site
    fi
    xdist=()
    $PYTHON -c "import xdist" 2>/dev/null && xdist=(-n 6 --dist loadfile)

    # 1. the whole test suite on the GPU
    start=$SECONDS; limit=$(cap 210 tests)
    cmd=(timeout -s INT -k 15 "$limit" $PYTHON -m pytest -q -ra --durations=20
         -p no:cacheprovider --junitxml="$OUT/tests.xml" "${xdist[@]}")
    if [ "$limit" -ge 20 ]; then
        { header "pytest on a real GPU: ${cmd[*]}"; "${cmd[@]}" 2>&1; rc=$?; } > "$OUT/tests.log"
        tail -5 "$OUT/tests.log"
    else rc=-1; fi
    record tests "$rc" "$start" "$limit" "${cmd[@]}"

    # 2. the compile census on the device
    start=$SECONDS; limit=$(cap 60 census)
    cmd=(timeout -k 10 "$limit" $PYTHON -m bench.ptx --device --out /tmp/ptx)
    if [ "$limit" -ge 20 ]; then
        "${cmd[@]}" 2>&1; rc=$?
        cp /tmp/ptx/ptx.json "$OUT/" 2>/dev/null
    else rc=-1; fi
    record census "$rc" "$start" "$limit" "${cmd[@]}"

    # 3. the short benchmark (SIGINT: it writes the rows measured so far)
    start=$SECONDS; limit=$(cap 170 bench)
    cmd=(timeout -s INT -k 20 "$limit" $PYTHON -m bench --out /tmp/bench
         --impl gpu,torch-cuda,torch-compile,cpu,torch-cpu
         --what inference,layers,train-step,train-pass,paper-pass --batch-sizes 1,1024,60000
         --layer-batch-sizes 60000 --step-batch-sizes 64,60000 --pass-batch-sizes 32
         --max-cpu-batch 1024
         --pass-images 60000 --pass-repeats 1 --max-cpu-pass-images 0
         --repeats 3 --min-time 0.3 --warmup 2)
    if [ "$limit" -ge 20 ]; then
        "${cmd[@]}" 2>&1; rc=$?
        cp /tmp/bench/results.json "$OUT/" 2>/dev/null
    else rc=-1; fi
    record bench "$rc" "$start" "$limit" "${cmd[@]}"

    # 4. the paper's recipe on MNIST for the time that is left (SIGINT keeps the last
    #    complete pass in the log)
    start=$SECONDS; limit=$(cap 600 train)
    cmd=(timeout -s INT -k 20 "$limit" $PYTHON -m lenet train --device gpu
         --data "$LENET_DATA" --recipe paper --init sqrt-fan-in --mu 1 --epochs 20
         --no-progress --out /tmp/train/paper.npz --log "$OUT/paper.log.jsonl")
    if [ "$limit" -ge 30 ]; then
        mkdir -p /tmp/train
        { header "lenet train: ${cmd[*]}"; "${cmd[@]}" 2>&1; rc=$?; } > "$OUT/train-paper.log"
        tail -25 "$OUT/train-paper.log"
    else rc=-1; fi
    record train "$rc" "$start" "$limit" "${cmd[@]}"
}

session 2>&1 | tee -a "$OUT/session.log"
