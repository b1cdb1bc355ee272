#!/usr/bin/env bash
# One session on a lent GPU machine: the whole test suite, the benchmarks and
# training runs, each logged with the device, date and commit. Usage:
#   bash bench/run_on_gpu.sh MNIST_DIR OUT_DIR [tests] [bench] [passes] [train] [paper]
# (the device tool: carry a copy of MNIST in an ignored folder, e.g. .carry/mnist,
# and .whl/ with a threadpoolctl wheel: pip download threadpoolctl --no-deps -d .whl).
# Each device call gets 10 minutes and a session 30 in all, machine start included,
# so the steps go in three calls whose timeouts add up to under 570 s each:
#   "tests paper"   tests (240 s; took 142 s on an H100) and the paper's recipe, 20
#                   passes through the fused kernel (320 s; not yet measured)
#   "bench"         inference, layers, training steps (560 s; took about 6.5 min)
#   "passes train"  training passes, the paper's recipe's first (400 s; not yet
#                   measured; the CPU rows take most of it), then 10 SGD passes on
#                   MNIST (150 s; took 80 s)
# A timed-out bench writes the rows it has (SIGINT); a timed-out training keeps its
# last complete pass in the checkpoint and the log.
set -uo pipefail
data=$1; out=$2; shift 2
steps=${*:-tests paper}  # the first of the three calls
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 LENET_DATA=$data
# a dependency the device's Python lacks (it has no network): carry its wheel in .whl/
python -c "import threadpoolctl" 2>/dev/null || pip install -q --no-deps --no-index .whl/threadpoolctl-*.whl
header() {
    echo "# $1"
    echo "# device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
    # the device tool's copy has no .git: the sender writes the hash to .commit
    if [ -d .git ]; then commit=$(git rev-parse HEAD); else commit=$(cat .commit 2>/dev/null); fi
    echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: ${commit:-unknown}"
}
for step in $steps; do
    case $step in
    tests)
        { header "pytest on a real GPU"; timeout 240 python -m pytest -q -ra 2>&1; } \
            | tee "$out/tests.log" | tail -30 ;;
    bench)  # SIGINT: the suite writes the rows measured so far
        timeout -s INT 560 python -m bench --out "$out/bench" --impl gpu,torch-cuda,cupy,cpu,torch-cpu \
            --what inference,layers,train-step 2>&1 | tail -40 ;;
    passes)
        timeout -s INT 400 python -m bench --out "$out/bench-passes" \
            --impl gpu,torch-cuda,cpu,torch-cpu --what train-pass,paper-pass \
            --pass-repeats 1 --max-cpu-batch 1024 2>&1 | tail -40 ;;
    train)
        { header "lenet train --device gpu"; timeout -s INT 150 python -m lenet train --device gpu \
            --data "$data" --recipe sgd --epochs 10 --no-progress --out "$out/sgd.npz" 2>&1; } \
            | tee "$out/train-sgd.log" | tail -15 ;;
    paper)  # the paper's recipe, 20 per-pattern passes through the fused kernel
        { header "lenet train --device gpu --recipe paper"; timeout -s INT 320 python -m lenet train \
            --device gpu --data "$data" --recipe paper --mu 1 --init sqrt-fan-in \
            --no-progress --out "$out/paper.npz" 2>&1; } \
            | tee "$out/train-paper.log" | tail -25 ;;
    esac
done
