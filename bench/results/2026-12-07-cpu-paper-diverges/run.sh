#!/usr/bin/env bash
# The paper's recipe as printed (init 2.4/F, mu 0.02, MSE) against lecun, one pass over
# MNIST's first 500 training digits, then the error on the first 1,000 test digits.
# Run from the repository root: bash bench/results/2026-12-07-cpu-paper-diverges/run.sh
set -euo pipefail
D=$(dirname "$0")
for recipe in paper lecun; do
    for seed in 0 1 2; do
        python -m lenet train --recipe "$recipe" --seed "$seed" --epochs 1 \
            --train-size 500 --test-size 1000 --device cpu --no-progress \
            --out "$D/$recipe-seed$seed.npz" --log "$D/$recipe-seed$seed.log.jsonl" \
            > "$D/$recipe-seed$seed.txt"
        rm "$D/$recipe-seed$seed.npz"
    done
done
