#!/usr/bin/env bash
# The speed issue's GPU target on one NVIDIA GPU (docs/BENCHMARKS.md, "The GPU target"): the six
# methods (LIME 1,000 samples, SHAP 500 evaluations, IG 50 steps) on DenseNet-121 at 224 px within
# 0.5 s together. One command, about 4 minutes on an H100:
#   [PY=python3] [OUT=out/gpu] bash bench/gpu.sh
# (A dry run of the script itself on a CPU: DEVICE=cpu LIME=50 SHAP=20 IG=4 REPEATS=1 BATCHES=8.)
# 1. parity: probabilities on the GPU against the same weights on the CPU, with PyTorch's
#    default TF32 convolutions and in IEEE float32 (the exact path's bound is 1e-5), on the
#    bench DenseNet-121 (random weights) and on the shipped xray-densenet121 over examples/xray;
# 2. the benchmark at three batch sizes (PyTorch's defaults), then at the best of them in IEEE
#    float32, with cuDNN's autotuner (torch.backends.cudnn.benchmark), and once with the
#    libraries called the usual way (--baselines);
# 3. a table of the six methods' seconds together per run (bench's "totals").
# Each step's JSON and log land in OUT; a step that fails is reported and the next one runs.
set -uo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/gpu}
DEVICE=${DEVICE:-cuda}
BATCHES=${BATCHES:-64 256 512}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version())" | tee -a "$OUT/gpu.txt"

step() {  # name, command...: the command's stdout into OUT/name.json, stderr into OUT/name.log
  local name=$1; shift
  local t0=$SECONDS
  if "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"; then
    echo "$name: done in $((SECONDS - t0)) s"
  else
    echo "$name: FAILED after $((SECONDS - t0)) s; the end of its log:"; tail -n 5 "$OUT/$name.log"
  fi
}

BENCH=(-m xai_platform bench --config bench/models.yaml --model bench-densenet121 --device "$DEVICE"
       --repeats "${REPEATS:-5}" --lime-samples "${LIME:-1000}" --shap-evals "${SHAP:-500}"
       --ig-steps "${IG:-50}" --json)
IEEE="import sys, runpy, torch; sys.path.insert(0, 'bench'); from cuda_parity import set_tf32; \
set_tf32(torch, False); sys.argv = ['xai_platform'] + sys.argv[1:]; \
runpy.run_module('xai_platform', run_name='__main__')"

step parity-bench "$PY" bench/cuda_parity.py --device "$DEVICE" --config bench/models.yaml \
  --model bench-densenet121 --json
step parity-trained "$PY" bench/cuda_parity.py --device "$DEVICE" --model xray-densenet121 \
  --examples examples/xray --json
for bs in $BATCHES; do
  step "bench-tf32-b$bs" "$PY" "${BENCH[@]}" --batch-size "$bs"
done
best=$("$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
runs = {}
for f in Path(sys.argv[1]).glob("bench-tf32-b*.json"):
    try:
        runs[int(f.stem.split("-b")[1])] = json.loads(f.read_text())["totals"]["bench-densenet121"]["seconds"]
    except (ValueError, KeyError):
        pass
print(min(runs, key=runs.get) if runs else 256)
EOF
)
step "bench-ieee-b$best" "$PY" -c "$IEEE" "${BENCH[@]:2}" --batch-size "$best"
step "bench-cudnn-benchmark-b$best" "$PY" -c "${IEEE/set_tf32(torch, False)/torch.backends.cudnn.benchmark = True}" \
  "${BENCH[@]:2}" --batch-size "$best"
step "bench-baselines-b$best" "$PY" "${BENCH[@]}" --batch-size "$best" --baselines

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for f in sorted(out.glob("parity-*.json")):
    try:
        p = json.loads(f.read_text())
    except ValueError:
        continue
    for mode, m in p["modes"].items():
        print(f"{p['model']:<20} {mode:>12}: max |p_gpu - p_cpu| {m['max_abs_diff']:.1e} over "
              f"{p['inputs']} inputs, {m['decisions_changed']} decisions changed, "
              f"{m['ms_per_evaluation']:.3f} ms/evaluation at batch {m['batch_size']}")
methods = ["gradcam", "gradcampp", "saliency", "integrated_gradients", "shap", "lime"]
print("| run | " + " | ".join(methods) + " | six together (s) | evaluations |")
for f in sorted(out.glob("bench-*.json")):
    try:
        b = json.loads(f.read_text())
    except ValueError:
        continue
    secs = {r["method"]: r["seconds"] for r in b["rows"]}
    t = b["totals"]["bench-densenet121"]
    print(f"| {f.stem} | " + " | ".join(f"{secs.get(m, float('nan')):.3f}" for m in methods)
          + f" | {t['seconds']:.3f} | {t['evaluations']} |")
    for r in b["rows"]:
        if "(" in r["method"]:
            print(f"|   {r['method']} | {r['seconds']:.3f} s, {r['evaluations']} evaluations |")
EOF
