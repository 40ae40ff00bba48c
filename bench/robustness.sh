#!/usr/bin/env bash
# Standard training against adversarial training (adversary=pgd) on the default data set (digits):
# same model, epochs and seed; then clean and PGD accuracy (epsilon 0.1, 10 steps) of each best
# checkpoint with `python -m runner.analyze what=pgd`. Prints both pgd.csv tables.
#   bash bench/robustness.sh [OUT_DIR] [EPOCHS]
set -euo pipefail
out=${1:-outputs/robustness}
epochs=${2:-20}
for adversary in none pgd; do
  python -m runner epochs="$epochs" seed=0 adversary=$adversary compute.threads=1 tensorboard=false progress=false \
    hydra.run.dir="$out/$adversary"
  python -m runner.analyze checkpoint="$out/$adversary/model_best.pth.tar" what=pgd eps=0,0.1 steps=10 seed=0 \
    out="$out/$adversary/analysis"
done
for adversary in none pgd; do
  echo "== training with adversary=$adversary"
  cat "$out/$adversary/analysis/pgd.csv"
done
