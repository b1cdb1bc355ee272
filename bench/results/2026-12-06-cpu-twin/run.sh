#!/bin/sh
# The CPU rows of `python -m bench` for main (a clean export of its commit) and for this
# branch, one after the other on the same machine, then PyTorch-CPU in the branch's run.
# Usage: sh bench/results/2026-12-06-cpu-twin/run.sh MAIN_COMMIT   (from the repository root)
set -e
here=bench/results/2026-12-06-cpu-twin
main_src=$(mktemp -d)
git archive "$1" | tar -x -C "$main_src"
rows="--what inference,train-step,train-pass,paper-pass --batch-sizes 1,1024,10000
      --step-batch-sizes 1024 --pass-batch-sizes 32 --pass-repeats 1"
(cd "$main_src" && PYTHONPATH="$main_src" python -m bench --impl cpu $rows --out "$OLDPWD/$here/main") \
    2> "$here/main.log" || true
PYTHONPATH=$PWD python -m bench --impl cpu,torch-cpu $rows --out "$here/branch" 2> "$here/branch.log" || true
rm -rf "$main_src"
