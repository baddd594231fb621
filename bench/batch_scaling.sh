#!/usr/bin/env bash
# explain-batch in-process vs a local Ray with 1 and 2 workers (docs/BENCHMARKS.md, "Batch
# runs"). Usage: [DEVICE=cuda] bash bench/batch_scaling.sh [N_INPUTS] [OUT]; needs
# data/xray_benchmark (or DATA=folder of images).
set -euo pipefail
N=${1:-12}
OUT=${2:-out/batch-scaling}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/xray_benchmark/images/test}
mkdir -p "$OUT"
{ echo path; ls "$DATA" | grep -v mask | awk -v n="$N" -v d="$(cd "$DATA" && pwd)" "NR <= n {print d \"/\" \$0}"; } > "$OUT/inputs.csv"
run() {  # name, extra args
  rm -rf "$OUT/$1"
  local t0=$(date +%s.%N)
  "$PY" -m xai_platform explain-batch "$OUT/inputs.csv" --model xray-cnn --method gradcam \
    --method lime --param num_samples=300 --device "${DEVICE:-cpu}" --out "$OUT/$1" "${@:2}" \
    > "$OUT/$1.log" 2>/dev/null
  head -n 1 "$OUT/$1.log"
  local t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" -v n="$N" -v name="$1" \
    'BEGIN {printf "%s: %.1f s wall for the whole command, %.3f inputs/s\n", name, b - a, n / (b - a)}'
}
run in-process
run ray-1 --ray auto --ray-workers 1
run ray-2 --ray auto --ray-workers 2
