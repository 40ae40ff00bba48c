#!/usr/bin/env bash
# The GPU check: is the captured step right, and how fast are the runner and the fused launcher,
# in one command meant to finish in under 7 minutes on one H100 (bench/gpu_check.md: how to run it).
#
#   bash bench/gpu_check.sh OUT [--tiny] [--data DIR]
#
# 1. the CUDA tests (`pytest -m cuda`), stopping at the first failure with its traceback;
# 2. LeNet on 50,000 / 5,000 MiniPlaces-shaped images (bench/make_data.py writes them here, in
#    parallel): training images/s at batch 8 and 32 for the course loop (0 and 8 workers), the
#    runner eager and the runner captured, with the captured step's self-check and each run's
#    best accuracy (acc_diff: captured minus eager) (bench/gpu.py --only throughput);
# 3. an 8-point learning-rate grid at batch 32, 1 epoch: the fused launcher against the basic one,
#    wall time and each trial's accuracy (bench/gpu.py --only grid);
# 4. ResNet-50 at 32 px, batch 128, one epoch (390 steps): captured against eager
#    (bench/gpu.py --only resnet).
# Every ratio is against a reference row measured in the same invocation on the same GPU.
# OUT/check.md (each step's status, time and table) is rewritten after every step, each step's
# own table (OUT/<step>/table.md, figures.json, figures.csv) after every run, and each step's log
# is OUT/logs/<step>.log: a check stopped early still leaves what it measured. Each step has a
# time budget, and no step starts a run past BUDGET_S (390 s) from the start.
#
# --tiny: a dry run on the CPU with tiny sizes (tests/test_bench_scripts.py runs it so the script
# cannot rot); what needs CUDA (step 1, the captured rows) is skipped with a line saying so.
# --data DIR: the data set's folder (default bench/data/miniplaces_500x50, kept between runs).
# PYTHON: the interpreter with the project installed (default python3).
set -uo pipefail

usage() { echo "error: usage: bash bench/gpu_check.sh OUT [--tiny] [--data DIR]" >&2; exit 2; }
[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || usage
OUT=$1; shift
TINY=0; DATA=""
while [ $# -gt 0 ]; do
  case $1 in
    --tiny) TINY=1; shift ;;
    --data) [ $# -ge 2 ] || usage; DATA=$2; shift 2 ;;
    *) echo "error: unknown option $1; pass OUT [--tiny] [--data DIR]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
mkdir -p "$OUT/logs" || exit 2
OUT=$(cd "$OUT" && pwd)
BUDGET_S=${BUDGET_S:-390}
START=$SECONDS

if [ "$TINY" = 1 ]; then  # seconds on a CPU: the mechanics, not figures
  DEVICE=cpu; PER_CLASS=(--train-per-class 2 --val-per-class 1); BATCHES=(32); WORKERS=(0); EPOCHS=1
  GRID=(--grid-points 2); RESNET=(--resnet-batch 64 --resnet-model lenet); CAPS=(0 120 120 120)
else
  DEVICE=cuda; PER_CLASS=(--train-per-class 500 --val-per-class 50); BATCHES=(8 32); WORKERS=(0 8); EPOCHS=2
  GRID=(--grid-points 8); RESNET=(--resnet-batch 128); CAPS=(150 210 90 80)
fi
[ -n "$DATA" ] && ROOT_ARG=(--root "$DATA") || ROOT_ARG=()

STEPS=("1. CUDA tests" "2. LeNet throughput" "3. 8-point lr grid" "4. ResNet-50 32px")
NAMES=(cuda_tests lenet grid resnet)
STATUS=("not run" "not run" "not run" "not run")
TOOK=("" "" "" "")

write_summary() {  # OUT/check.md, rewritten after every step (atomically: a reader never sees half of it)
  local tmp="$OUT/.check.md.tmp" i
  {
    echo "# GPU check"
    echo
    echo "\`bash bench/gpu_check.sh $OUT$( [ "$TINY" = 1 ] && echo ' --tiny')\`, started $STARTED_AT UTC, commit $COMMIT."
    echo "Device: $GPU_NAME."
    echo
    echo "| step | status | seconds | log |"
    echo "| --- | --- | ---: | --- |"
    for i in 0 1 2 3; do
      echo "| ${STEPS[$i]} | ${STATUS[$i]} | ${TOOK[$i]} | logs/${NAMES[$i]}.log |"
    done
    for i in 1 2 3; do
      if [ -f "$OUT/${NAMES[$i]}/table.md" ]; then
        echo; echo "## ${STEPS[$i]}"; echo; cat "$OUT/${NAMES[$i]}/table.md"
      fi
    done
    if [ "${STATUS[0]}" = failed ]; then
      echo; echo "## ${STEPS[0]}: the failure"; echo; echo '```'; tail -n 60 "$OUT/logs/cuda_tests.log"; echo '```'
    fi
  } > "$tmp" && mv "$tmp" "$OUT/check.md"
}

left() {  # seconds this step may use: its cap, or what is left of BUDGET_S
  local cap=$1 rest=$((BUDGET_S - (SECONDS - START)))
  [ "$rest" -lt "$cap" ] && echo "$rest" || echo "$cap"
}

STARTED_AT=$(date -u '+%Y-%m-%d %H:%M:%S')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
GPU_NAME="CPU only (--tiny)"
if [ "$TINY" = 0 ]; then
  GPU_NAME=$(nvidia-smi -L 2>/dev/null | head -n 1)
  [ -n "$GPU_NAME" ] || GPU_NAME="no GPU found by nvidia-smi"
fi
echo "GPU check into $OUT; device: $GPU_NAME"
write_summary

# 1. The CUDA tests: correctness before any figure counts.
if [ "$TINY" = 1 ]; then
  STATUS[0]="skipped: --tiny runs on the CPU (the tests marked cuda need a GPU)"
  echo "step 1 skipped: --tiny runs on the CPU, and the tests marked cuda need a GPU"
else
  t0=$SECONDS
  STATUS[0]=running; write_summary
  files=$(grep -l "pytest.mark.cuda" tests/test_*.py)  # only these: the others may need what a GPU image lacks
  echo "== ${STEPS[0]}: $PY -m pytest -x -q -m cuda $files"
  if [ -n "$files" ]; then
    timeout --signal=INT --kill-after=15 "$(left "${CAPS[0]}")" \
      "$PY" -m pytest -x -q -m cuda -p no:cacheprovider $files 2>&1 | tee "$OUT/logs/cuda_tests.log"
    rc=${PIPESTATUS[0]}
  else
    echo "no test file is marked cuda" | tee "$OUT/logs/cuda_tests.log"; rc=1
  fi
  case $rc in 0) STATUS[0]=passed ;; 124|137) STATUS[0]="timed out" ;; *) STATUS[0]=failed ;; esac
  TOOK[0]=$((SECONDS - t0)); write_summary
fi

# Steps 2-4: bench/gpu.py, one invocation each (its own reference rows), into OUT/<name>/.
bench_step() {  # index, then bench/gpu.py's arguments
  local i=$1 t0=$SECONDS budget rc; shift
  budget=$(left "${CAPS[$i]}")
  if [ "$budget" -lt 10 ]; then
    STATUS[$i]="skipped: the check's ${BUDGET_S} s were spent"; echo "${STEPS[$i]}: ${STATUS[$i]}"
    write_summary; return
  fi
  STATUS[$i]=running; write_summary
  echo "== ${STEPS[$i]} (budget ${budget} s)"
  "$PY" bench/gpu.py --out "$OUT/${NAMES[$i]}" --device "$DEVICE" "${PER_CLASS[@]}" "${ROOT_ARG[@]}" \
    --budget-s "$budget" "$@" 2>&1 | tee "$OUT/logs/${NAMES[$i]}.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] && STATUS[$i]="done (errors, if any, in the table)" || STATUS[$i]="failed: exit $rc (see its log)"
  TOOK[$i]=$((SECONDS - t0)); write_summary
}

bench_step 1 --only throughput --batch-sizes "${BATCHES[@]}" --course-workers "${WORKERS[@]}" --epochs "$EPOCHS"
bench_step 2 --only grid "${GRID[@]}" --grid-batch 32 --grid-epochs 1 --fuse true
bench_step 3 --only resnet "${RESNET[@]}" --epochs 1

echo
cat "$OUT/check.md"
echo
echo "check: $OUT/check.md ($((SECONDS - START)) s)"
