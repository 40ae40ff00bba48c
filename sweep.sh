#!/usr/bin/env bash
# The course study in one command: LeNet under the course's seven configurations, run as one
# sweep, in the course's order (default; batch 8; batch 16; lr 0.05; lr 0.01; 20 epochs; 5 epochs).
# Leaves results.txt (seven lines, that order) and results.csv in the sweep dir and prints where.
# Extra arguments are Hydra overrides for every run, e.g.:
#   bash sweep.sh dataset=miniplaces dataset.root=/data/miniplaces
#   bash sweep.sh hydra/launcher=joblib hydra.launcher.n_jobs=2 compute.threads=1
set -euo pipefail
cd "$(dirname "$0")"
COURSE_ORDER="default,batch8,batch16,lr0.05,lr0.01,epochs20,epochs5"
SWEEP_DIR="${SWEEP_DIR:-outputs/course/$(date +%Y-%m-%d_%H-%M-%S)_$$}"   # _$$: two started in one second stay apart
python -m runner -m "course=${COURSE_ORDER}" "hydra.sweep.dir=${SWEEP_DIR}" "$@"
# A configuration that failed or was refused fails the sweep itself: one line naming the first, exit 1.
echo "course study: ${SWEEP_DIR}/results.txt and ${SWEEP_DIR}/results.csv"
