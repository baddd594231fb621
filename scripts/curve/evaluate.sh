#!/bin/sh
# usage: sh scripts/curve/evaluate.sh MODEL_ID...   (audio-cnn-v2 is always included)
# OUT=docs/audio-v3/v3t sh scripts/curve/evaluate.sh ... writes OUT_evaluation.* and
# OUT_false_alarms.* (default docs/audio-v3/curve)
set -e
cd "$(dirname "$0")/../.."
M="--model audio-cnn-v2"; for m in "$@"; do M="$M --model $m"; done
export OMP_NUM_THREADS=1
OUT="${OUT:-docs/audio-v3/curve}"
nice -n 15 .venv/bin/python -m training.audio_evaluate --data data/audio_corpus_v2 --config config/research \
  --config scripts/curve/curve.yaml $M --out "${OUT}_evaluation"
nice -n 15 .venv/bin/python -m training.audio_sources_v3 score --data data/sources_v3 --config config/research \
  --config scripts/curve/curve.yaml $M --sources asterisk-gsm,bass,codec2,pocketsphinx --per-group 200 \
  --out "${OUT}_false_alarms"
