#!/bin/sh
# usage: sh runs/audio/curve/evaluate.sh MODEL_ID...   (audio-cnn-v2 is always included)
set -e
cd "$(dirname "$0")/../.."
M="--model audio-cnn-v2"; for m in "$@"; do M="$M --model $m"; done
export OMP_NUM_THREADS=1
nice -n 15 .venv/bin/python -m training.audio_evaluate --data data/audio_corpus_v2 --config config/research \
  --config scripts/curve/curve.yaml $M --out docs/audio-v3/curve_evaluation
nice -n 15 .venv/bin/python -m training.audio_sources_v3 score --data data/sources_v3 --config config/research \
  --config scripts/curve/curve.yaml $M --sources asterisk-gsm,bass,codec2,pocketsphinx --per-group 200 \
  --out docs/audio-v3/curve_false_alarms
