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
# A configuration that failed (or was refused) fails the study: one line with its error, exit 1.
python - "${SWEEP_DIR}/results.csv" <<'EOF'
import csv, sys
try:
    rows = list(csv.DictReader(open(sys.argv[1], encoding="utf-8")))
except OSError as e:
    sys.exit(f"error: the study's table could not be read ({e.strerror}: {sys.argv[1]}); see the sweep's log above")
bad = [r for r in rows if r.get("status") in ("failed", "refused")]
if bad:
    first = bad[0]
    sys.exit(f"error: {len(bad)} of {len(rows)} configurations failed; {first.get('course') or first.get('job')}: "
             f"{first.get('error') or first['status']} (every run's error: {sys.argv[1]})")
EOF
echo "course study: ${SWEEP_DIR}/results.txt and ${SWEEP_DIR}/results.csv"
