"""Build the offline audio deepfake corpus: people reading letters and syllables (KLettres) as
the real class, eSpeak NG, Flite and Festival (HTS) saying the same texts as the fake class.

    python -m training.audio_corpus --out data/audio_corpus [--seed 0] [--max-per-language N]

Every clip, real or fake, goes through the *same* chain, so that a detector cannot tell the
classes apart by how they were recorded or stored (``docs/AUDIO.md``, "Confounds"):

1. decode (fakes first take one 44.1 kHz Ogg Vorbis round trip, as the KLettres files did);
2. resample to 16 kHz, trim leading and trailing silence, normalise loudness to a random level;
3. with some probability, the same light synthetic room reverb and the same random low-pass;
4. place the speech at a random offset inside a random-length bed (so clip length and the
   position of speech in the model's window carry no label), with coloured noise at a random
   level over the whole clip (so a digitally silent background does not say "synthetic");
5. one 16 kHz Ogg Vorbis round trip at a random quality, then 16-bit FLAC.

Fakes are also length-matched: each synthesis is run twice, the second time with its rate set
so that the speech lasts about as long as the real recording of the same text.

The split is by language (:data:`TEST_LANGUAGES`, :data:`VALIDATION_LANGUAGES`, the rest
train): a test language's speakers, texts and synthetic voices are never seen in training.
Everything is seeded per clip (the seed and the clip's key), so a rerun, or a resumed run,
produces the same files; finished clips are skipped. ``metadata.csv`` lists every clip:
path, label (real|fake), language, speaker (voice id), generator, text, duration, split.
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from xai_platform.errors import InputError
from xai_platform.preprocessing import audio

KLETTRES_ROOT = Path("/usr/share/klettres")
SAMPLE_RATE = 16000
TRIM_TOP_DB = 25.0  # KLettres clips carry room noise 40-50 dB below the peak; 35 dB keeps it

# Split by language, never by clip. Malayalam (28% of the clips, one large set) trains; test
# and validation each mix language families, recording set-ups (noisy, noise-gated, clean)
# and both letters and syllables. English stays in training because Flite and Festival speak
# only English: the detector sees all three generators, and the test languages hold voices of
# eSpeak NG it never heard, in languages it never heard.
TEST_LANGUAGES = ("de", "he", "it", "lt", "nl", "tn")
VALIDATION_LANGUAGES = ("cs", "nb", "pt_BR", "uk")
ENGLISH = ("en", "en_GB")

# KLettres language code -> eSpeak NG voice. Low German (nds) has no eSpeak voice: German is
# the nearest; Norwegian Nynorsk (nn, no recordings installed) takes Bokmal.
ESPEAK_VOICES = {
    "ar": "ar", "cs": "cs", "da": "da", "de": "de", "en": "en-us", "en_GB": "en-gb",
    "es": "es", "fr": "fr-fr", "he": "he", "hu": "hu", "id": "id", "it": "it", "lt": "lt",
    "ml": "ml", "nb": "nb", "nds": "de", "nl": "nl", "nn": "nb", "pt_BR": "pt-br", "ru": "ru",
    "tn": "tn", "uk": "uk",
}
ESPEAK_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                   "klatt", "klatt2", "klatt3", "croak", "Andy", "Annie", "Denis", "Gene",
                   "Jacky", "Lee", "Michael", "Mike", "aunty", "belinda", "benjamin", "boris",
                   "david", "edward", "grandpa", "linda", "max", "michel", "pablo", "paul",
                   "quincy", "rob", "steph", "travis", "victor", "zac")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_VOICE = "cmu_us_slt_arctic_hts"
GENERATORS = ("espeak-ng", "flite", "festival")
METADATA_FIELDS = ("path", "label", "language", "speaker", "generator", "text", "duration",
                   "speech_duration", "split", "source", "params")


# --------------------------------------------------------------------------------------------
# What to build


@dataclass(frozen=True)
class Recording:
    """One KLettres clip: ``text`` from its language's sounds.xml (the file name when the
    file is not listed there)."""

    language: str
    path: Path
    text: str
    kind: str  # alpha | syllab


@dataclass(frozen=True)
class Item:
    """One clip of the corpus, fully determined by its key and the seed."""

    key: str
    split: str
    label: str  # real | fake
    language: str
    generator: str  # klettres | espeak-ng | flite | festival
    text: str
    recording: Recording
    voice: str = ""

    @property
    def relpath(self) -> str:
        return f"clips/{self.split}/{self.label}/{self.language}/{self.key}.flac"


_SOUND = re.compile(r'<sound\s+name="([^"]*)"\s+file="([^"]*)"')


def read_klettres(root: Path = KLETTRES_ROOT, *,
                  languages: Iterable[str] | None = None) -> list[Recording]:
    """Every clip under ``root/<lang>/{alpha,syllab}/``, with its text, sorted by path."""
    wanted = set(languages) if languages is not None else None
    found: dict[Path, Recording] = {}
    for lang_dir in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        lang = lang_dir.name
        if wanted is not None and lang not in wanted:
            continue
        texts: dict[Path, str] = {}
        xml = lang_dir / "sounds.xml"
        if xml.is_file():
            for name, file in _SOUND.findall(xml.read_text(encoding="utf-8", errors="replace")):
                texts[(Path(root) / html.unescape(file)).resolve()] = html.unescape(name).strip()
        for kind in ("alpha", "syllab"):
            for path in sorted((lang_dir / kind).glob("*.ogg")):
                key = path.resolve()
                text = texts.get(key) or re.sub(r"[-_]\d+$", "", path.stem)
                found[key] = Recording(lang, path, text, kind)
    return sorted(found.values(), key=lambda r: str(r.path))


def split_of(language: str, *, test: Sequence[str] = TEST_LANGUAGES,
             validation: Sequence[str] = VALIDATION_LANGUAGES) -> str:
    if language in test:
        return "test"
    return "validation" if language in validation else "train"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "x"


def plan(recordings: Sequence[Recording], *, generators: Sequence[str] = GENERATORS,
         real_copies: int = 2, espeak_per_text: int = 2, test: Sequence[str] = TEST_LANGUAGES,
         validation: Sequence[str] = VALIDATION_LANGUAGES) -> list[Item]:
    """The clips to build. Training reals get ``real_copies`` differently augmented copies (to
    balance the classes there); every text gets ``espeak_per_text`` eSpeak NG voices, and
    English texts one Flite and one Festival voice as well."""
    items: list[Item] = []
    for rec in recordings:
        split = split_of(rec.language, test=test, validation=validation)
        stem = f"{rec.language}-{rec.kind}-{_slug(rec.path.stem)}"
        copies = real_copies if split == "train" else 1
        for c in range(copies):
            items.append(Item(f"klettres-{stem}-c{c}", split, "real", rec.language, "klettres",
                              rec.text, rec, voice=f"klettres-{rec.language}"))
        if "espeak-ng" in generators and rec.language in ESPEAK_VOICES:
            for k in range(espeak_per_text):
                items.append(Item(f"espeak-{stem}-{k}", split, "fake", rec.language,
                                  "espeak-ng", rec.text, rec))
        if rec.language in ENGLISH:
            for gen in ("flite", "festival"):
                if gen in generators:
                    items.append(Item(f"{gen}-{stem}-0", split, "fake", rec.language, gen,
                                      rec.text, rec))
    return items


def item_rng(seed: int, key: str) -> np.random.Generator:
    """The clip's own generator: the same clip gets the same randomness in any run order."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


# --------------------------------------------------------------------------------------------
# Synthesis (each returns (wave, sample_rate, voice id, parameters))


def _run(cmd: list[str], *, stdin: str | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin.encode("utf-8") if stdin is not None else None,
                          capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.decode(errors='replace')[-300:]}")


def _read(path: Path) -> tuple[np.ndarray, int]:
    return audio.decode_audio(path)


def _spoken(text: str) -> str:
    # An all-capital syllable ("BA") is spelt letter by letter by the synthesisers.
    return text.lower() if len(text) > 1 else text


def _speech_seconds(wave: np.ndarray, sr: int) -> float:
    if audio.is_silent(wave):
        return 0.0
    return len(audio.trim_silence(wave, sr, top_db=TRIM_TOP_DB)) / sr


def _matched(synth: Callable[[float], tuple[np.ndarray, int]], target_s: float,
             rate: Callable[[float, float], float], first: float) -> tuple[np.ndarray, int, float]:
    """Synthesise at ``first``, then again at ``rate(first, speech / target)`` so the speech
    lasts about ``target_s``."""
    wave, sr = synth(first)
    speech = _speech_seconds(wave, sr)
    if speech <= 0 or target_s <= 0:
        return wave, sr, first
    second = rate(first, speech / target_s)
    if abs(second - first) / first < 0.05:
        return wave, sr, first
    wave, sr = synth(second)
    return wave, sr, second


def synth_espeak(text: str, language: str, rng: np.random.Generator, target_s: float,
                 tmp: Path) -> tuple[np.ndarray, int, str, str]:
    variant = str(rng.choice(ESPEAK_VARIANTS))
    voice = ESPEAK_VOICES[language] + (f"+{variant}" if variant else "")
    pitch = int(rng.integers(20, 81))
    out = tmp / "espeak.wav"

    def synth(speed: float) -> tuple[np.ndarray, int]:
        _run(["espeak-ng", "-v", voice, "-s", str(int(round(speed))), "-p", str(pitch),
              "-w", str(out), "--", _spoken(text)])
        return _read(out)

    wave, sr, speed = _matched(synth, target_s,
                               lambda s, ratio: float(np.clip(s * ratio, 80, 450)),
                               float(rng.integers(140, 211)))
    return wave, sr, f"espeak-ng:{voice}", f"speed={int(round(speed))} pitch={pitch}"


def synth_flite(text: str, language: str, rng: np.random.Generator, target_s: float,
                tmp: Path) -> tuple[np.ndarray, int, str, str]:
    voice = str(rng.choice(FLITE_VOICES))
    f0 = float(rng.uniform(150, 230) if voice == "slt" else rng.uniform(85, 150))
    out = tmp / "flite.wav"

    def synth(stretch: float) -> tuple[np.ndarray, int]:
        _run(["flite", "-voice", voice, "-t", _spoken(text), "-o", str(out),
              "--setf", f"duration_stretch={stretch:.3f}",
              "--setf", f"int_f0_target_mean={f0:.1f}"])
        return _read(out)

    wave, sr, stretch = _matched(synth, target_s,
                                 lambda s, ratio: float(np.clip(s / ratio, 0.5, 3.0)),
                                 float(rng.uniform(0.9, 1.2)))
    return wave, sr, f"flite:{voice}", f"duration_stretch={stretch:.2f} f0={f0:.0f}"


def synth_festival(text: str, language: str, rng: np.random.Generator, target_s: float,
                   tmp: Path) -> tuple[np.ndarray, int, str, str]:
    shift = float(rng.uniform(-3.0, 3.0))  # half-tones
    out = tmp / "festival.wav"

    def synth(speed: float) -> tuple[np.ndarray, int]:
        params = f"(list '(\"-r\" {speed:.3f}) '(\"-fm\" {shift:.2f}))"
        _run(["text2wave", "-o", str(out), "-eval", f"(voice_{FESTIVAL_VOICE})",
              "-eval", f"(set! hts_engine_params (append hts_engine_params {params}))"],
             stdin=_spoken(text) + "\n")
        return _read(out)

    wave, sr, speed = _matched(synth, target_s,
                               lambda s, ratio: float(np.clip(s * ratio, 0.4, 2.0)),
                               float(rng.uniform(0.9, 1.1)))
    return wave, sr, f"festival:{FESTIVAL_VOICE}", f"rate={speed:.2f} pitch_shift={shift:+.1f}"


SYNTHESISERS = {"espeak-ng": synth_espeak, "flite": synth_flite, "festival": synth_festival}
BINARIES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}


def available_generators(wanted: Sequence[str] = GENERATORS) -> list[str]:
    return [g for g in wanted if shutil.which(BINARIES[g]) is not None]


# --------------------------------------------------------------------------------------------
# The shared chain (identical for both classes)


def vorbis_round_trip(wave: np.ndarray, sr: int, *, level: float) -> np.ndarray:
    """Encode to Ogg Vorbis and decode again; ``level`` in [0, 1], 0 is the best quality."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, np.float32), sr, format="OGG", subtype="VORBIS",
             compression_level=float(level))
    buf.seek(0)
    out, _ = sf.read(buf, dtype="float32")
    return np.asarray(out[: len(wave)], np.float32)


def coloured_noise(n: int, rng: np.random.Generator, *, slope: float) -> np.ndarray:
    """(n,) noise with a 1 / f**slope power spectrum (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum / f ** (slope / 2), n)
    return (noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)).astype(np.float32)


def room(wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A light synthetic room: exponentially decaying noise as the impulse response."""
    from scipy.signal import fftconvolve

    rt60 = rng.uniform(0.08, 0.35)
    t = np.arange(int(rt60 * sr)) / sr
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir[0] = 0.0
    ir /= np.sqrt(np.sum(ir ** 2)) + 1e-12
    wet = fftconvolve(wave, ir)[: len(wave)]
    mix = rng.uniform(0.05, 0.3)
    return ((1 - mix) * wave + mix * wet).astype(np.float32)


def lowpass(wave: np.ndarray, sr: int, cutoff: float) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    sos = butter(6, cutoff, btype="low", fs=sr, output="sos")
    return sosfiltfilt(sos, wave).astype(np.float32)


@dataclass
class ChainParams:
    """What the shared chain did to one clip (written to metadata ``params``)."""

    loudness_dbfs: float
    reverb: bool
    lowpass_hz: float | None
    noise_dbfs: float
    noise_slope: float
    lead_s: float
    vorbis_level: float

    def text(self) -> str:
        lp = f"{self.lowpass_hz:.0f}" if self.lowpass_hz else "none"
        return (f"loud={self.loudness_dbfs:.1f} reverb={int(self.reverb)} lowpass={lp} "
                f"noise={self.noise_dbfs:.1f}/{self.noise_slope:.2f} lead={self.lead_s:.2f} "
                f"vorbis={self.vorbis_level:.2f}")


def shared_chain(wave: np.ndarray, sr: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, float, ChainParams]:
    """Steps 2-5 of the module docstring. Returns (16 kHz clip, speech seconds, parameters)."""
    wave = audio.resample(wave, sr, SAMPLE_RATE)
    wave = audio.trim_silence(wave, SAMPLE_RATE, top_db=TRIM_TOP_DB)
    speech_s = len(wave) / SAMPLE_RATE
    fade = min(len(wave) // 4, int(0.01 * SAMPLE_RATE))  # no click where the bed begins
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        wave = wave.copy()
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    loud = float(rng.uniform(-28.0, -16.0))
    wave = audio.normalize_loudness(wave, target_dbfs=loud)
    reverb = bool(rng.random() < 0.5)
    if reverb:
        wave = room(wave, SAMPLE_RATE, rng)
    cutoff = float(rng.uniform(3500.0, 7500.0)) if rng.random() < 0.3 else None
    if cutoff:
        wave = lowpass(wave, SAMPLE_RATE, cutoff)
    # The bed: a length drawn independently of the class, the speech at a random offset.
    n = len(wave)
    total = max(n + int(0.1 * SAMPLE_RATE), int(rng.uniform(0.8, 2.0) * SAMPLE_RATE))
    lead = int(rng.integers(0, total - n + 1))
    bed = np.zeros(total, np.float32)
    bed[lead:lead + n] = wave
    noise_db, slope = float(rng.uniform(-62.0, -38.0)), float(rng.uniform(0.0, 1.5))
    bed += coloured_noise(total, rng, slope=slope) * np.float32(10 ** (noise_db / 20))
    level = float(rng.uniform(0.2, 0.7))
    bed = vorbis_round_trip(np.clip(bed, -1, 1), SAMPLE_RATE, level=level)
    params = ChainParams(loud, reverb, cutoff, noise_db, slope, lead / SAMPLE_RATE, level)
    return np.clip(bed, -1.0, 1.0), speech_s, params


# --------------------------------------------------------------------------------------------
# Building


@dataclass
class Builder:
    """Builds the planned items into ``out``; resumable through ``out/.state/rows.jsonl``."""

    out: Path
    seed: int = 0
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    speech: dict[str, float] = field(default_factory=dict)  # real speech seconds per recording
    skipped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = self.out / ".state"
        self.state.mkdir(parents=True, exist_ok=True)
        rows = self.state / "rows.jsonl"
        if rows.exists():
            for line in rows.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    if (self.out / row["path"]).is_file():
                        self.rows[row["key"]] = row
        speech = self.state / "speech_seconds.json"
        if speech.exists():
            self.speech = json.loads(speech.read_text())

    def real_speech_seconds(self, rec: Recording) -> float:
        """How long the real recording's speech lasts once trimmed (the fakes' target)."""
        key = str(rec.path)
        if key not in self.speech:
            wave, sr = audio.decode_audio(rec.path)
            wave = audio.resample(wave, sr, SAMPLE_RATE)
            self.speech[key] = len(audio.trim_silence(wave, SAMPLE_RATE, top_db=TRIM_TOP_DB)) / SAMPLE_RATE
        return self.speech[key]

    def build(self, item: Item, tmp: Path) -> dict[str, Any] | None:
        rng = item_rng(self.seed, item.key)
        if item.label == "real":
            wave, sr = audio.decode_audio(item.recording.path)
            voice, synth_params = item.voice, ""
        else:
            target = self.real_speech_seconds(item.recording) * float(np.exp(rng.normal(0, 0.2)))
            wave, sr, voice, synth_params = SYNTHESISERS[item.generator](
                item.text, item.language, rng, target, tmp)
            if audio.is_silent(wave):
                self.skipped[item.key] = f"{item.generator} produced silence for {item.text!r}"
                return None
            # The KLettres files were stored as 44.1 kHz Ogg Vorbis: fakes take the same trip.
            wave = audio.resample(wave, sr, 44100)
            wave, sr = vorbis_round_trip(wave, 44100, level=float(rng.uniform(0.3, 0.6))), 44100
        clip, speech_s, chain = shared_chain(wave, sr, rng)
        path = self.out / item.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial.flac")
        sf.write(partial, clip, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        partial.replace(path)  # a killed run never leaves a half-written clip behind
        return {"key": item.key, "path": item.relpath, "label": item.label,
                "language": item.language, "speaker": voice, "generator": item.generator,
                "text": item.text, "duration": round(len(clip) / SAMPLE_RATE, 4),
                "speech_duration": round(speech_s, 4), "split": item.split,
                "source": str(item.recording.path),
                "params": " ".join(p for p in (synth_params, chain.text()) if p)}

    def run(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        todo = [it for it in items if it.key not in self.rows]
        done_before = len(items) - len(todo)
        start = time.time()
        with tempfile.TemporaryDirectory(prefix="audio-corpus-") as tmp, \
                open(self.state / "rows.jsonl", "a", encoding="utf-8") as log:
            for i, item in enumerate(todo, 1):
                try:
                    row = self.build(item, Path(tmp))
                except (RuntimeError, subprocess.TimeoutExpired, InputError) as exc:
                    self.skipped[item.key] = str(exc)[:200]
                    row = None
                if row is not None:
                    self.rows[item.key] = row
                    log.write(json.dumps(row, ensure_ascii=False) + "\n")
                    log.flush()
                if i % 25 == 0 or i == len(todo):
                    elapsed = time.time() - start
                    eta = elapsed / i * (len(todo) - i)
                    sys.stderr.write(f"\r  built {i}/{len(todo)} (+{done_before} already there, "
                                     f"{len(self.skipped)} skipped) {elapsed:.0f} s, "
                                     f"about {eta:.0f} s left   ")
                    sys.stderr.flush()
                    (self.state / "speech_seconds.json").write_text(json.dumps(self.speech))
        if todo:
            sys.stderr.write("\n")
        return [self.rows[it.key] for it in items if it.key in self.rows]


def tool_versions() -> dict[str, str]:
    versions = {}
    for name, cmd in (("espeak-ng", ["espeak-ng", "--version"]), ("flite", ["flite", "--version"]),
                      ("festival", ["festival", "--version"])):
        if shutil.which(cmd[0]):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            versions[name] = (proc.stdout or proc.stderr).strip().splitlines()[0][:120]
    return versions


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts per split x class x generator, languages per split, median durations."""
    out: dict[str, Any] = {}
    for split in ("train", "validation", "test"):
        sel = [r for r in rows if r["split"] == split]
        by = Counter((r["label"], r["generator"]) for r in sel)
        med = lambda lab, key: float(np.median([r[key] for r in sel if r["label"] == lab])) \
            if any(r["label"] == lab for r in sel) else None  # noqa: E731
        out[split] = {
            "languages": sorted({r["language"] for r in sel}),
            "real": sum(r["label"] == "real" for r in sel),
            "fake": sum(r["label"] == "fake" for r in sel),
            "by_generator": {f"{lab}/{gen}": n for (lab, gen), n in sorted(by.items())},
            "median_duration_s": {lab: med(lab, "duration") for lab in ("real", "fake")},
            "median_speech_s": {lab: med(lab, "speech_duration") for lab in ("real", "fake")},
        }
    return out


CUES = {
    "duration_s": "clip length",
    "speech_s": "length of the trimmed speech",
    "noise_floor_db": "10th percentile of 20 ms frame levels (dBFS)",
    "dynamic_range_db": "loudest minus quietest 10% of frames",
    "active_fraction": "share of frames within 30 dB of the loudest",
    "centroid_hz": "spectral centroid of the whole clip",
    "rolloff95_hz": "frequency below which 95% of the energy lies",
}
RECORDING_CUES = ("duration_s", "speech_s", "noise_floor_db", "dynamic_range_db",
                  "active_fraction")


def clip_cues(wave: np.ndarray, sr: int) -> dict[str, float]:
    """Simple recording statistics a detector could exploit instead of the voice."""
    hop = int(0.02 * sr)
    frames = wave[: len(wave) // hop * hop].reshape(-1, hop)
    level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    floor, top = np.percentile(level, 10), np.percentile(level, 90)
    power = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / sr)
    cum = np.cumsum(power) / max(power.sum(), 1e-12)
    return {"duration_s": len(wave) / sr,
            "speech_s": len(audio.trim_silence(wave, sr, top_db=TRIM_TOP_DB)) / sr,
            "noise_floor_db": float(floor), "dynamic_range_db": float(top - floor),
            "active_fraction": float(np.mean(level > level.max() - 30)),
            "centroid_hz": float((freqs * power).sum() / max(power.sum(), 1e-12)),
            "rolloff95_hz": float(freqs[min(np.searchsorted(cum, 0.95), len(freqs) - 1)])}


def confound_check(out: Path, rows: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """How well the recording cues alone separate the classes: a logistic regression fitted on
    the training split, ROC AUC on the test split (0.5 = no information), per cue and together.
    A detector only needs to beat these to show it uses more than the recording."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if rows is None:
        with open(out / "metadata.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    table: dict[str, list[dict[str, float]]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    for i, row in enumerate(r for r in rows if r["split"] in table):
        wave, sr = audio.decode_audio(out / row["path"])
        table[row["split"]].append(clip_cues(wave, sr))
        labels[row["split"]].append(int(row["label"] == "fake"))
        if (i + 1) % 500 == 0:
            sys.stderr.write(f"\r  confound check: {i + 1} clips   ")
    sys.stderr.write("\n")

    def auc(names: Sequence[str]) -> float:
        x = {s: np.array([[r[n] for n in names] for r in table[s]]) for s in table}
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(x["train"], labels["train"])
        return float(roc_auc_score(labels["test"], model.predict_proba(x["test"])[:, 1]))

    result = {"method": "logistic regression on the cues, fitted on train, ROC AUC on test",
              "cues": CUES, "auc_per_cue": {n: round(auc([n]), 3) for n in CUES},
              "auc_recording_cues": round(auc(RECORDING_CUES), 3),
              "auc_all_cues": round(auc(list(CUES)), 3)}
    for label in ("real", "fake"):
        sel = [r for r, y in zip(table["test"], labels["test"]) if y == (label == "fake")]
        result[f"test_median_{label}"] = {n: round(float(np.median([r[n] for r in sel])), 3)
                                          for n in CUES}
    return result


def build_corpus(out: Path, *, seed: int = 0, klettres_root: Path = KLETTRES_ROOT,
                 languages: Sequence[str] | None = None, max_per_language: int | None = None,
                 generators: Sequence[str] = GENERATORS, real_copies: int = 2,
                 espeak_per_text: int = 2, test: Sequence[str] = TEST_LANGUAGES,
                 validation: Sequence[str] = VALIDATION_LANGUAGES,
                 command: str = "", check_confounds: bool = False) -> dict[str, Any]:
    """Build (or finish building) the corpus in ``out``; returns the summary in corpus.json."""
    out = Path(out)
    recordings = read_klettres(klettres_root, languages=languages)
    if not recordings:
        raise SystemExit(f"no KLettres clips under {klettres_root}: install klettres-data "
                         "(apt-get install klettres-data) or pass --klettres-root.")
    if max_per_language:
        rng = np.random.default_rng(seed)
        keep: list[Recording] = []
        for lang in sorted({r.language for r in recordings}):
            mine = [r for r in recordings if r.language == lang]
            picked = rng.choice(len(mine), size=min(max_per_language, len(mine)), replace=False)
            keep.extend(mine[i] for i in sorted(picked))
        recordings = keep
    usable = available_generators(generators)
    for missing in sorted(set(generators) - set(usable)):
        sys.stderr.write(f"  {missing}: {BINARIES[missing]} is not installed, skipped "
                         "(see ../shared/DATA.md for the apt package)\n")
    items = plan(recordings, generators=usable, real_copies=real_copies,
                 espeak_per_text=espeak_per_text, test=test, validation=validation)
    sys.stderr.write(f"  {len(recordings)} KLettres clips in {len({r.language for r in recordings})} "
                     f"languages -> {len(items)} corpus clips\n")
    builder = Builder(out, seed=seed)
    rows = builder.run(items)
    with open(out / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=METADATA_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "seed": seed, "command": command, "sample_rate": SAMPLE_RATE,
        "klettres_root": str(klettres_root), "generators": usable,
        "split_rule": "by language: test and validation languages are never seen in training",
        "test_languages": sorted(set(test)), "validation_languages": sorted(set(validation)),
        "real_copies_train": real_copies, "espeak_per_text": espeak_per_text,
        "max_per_language": max_per_language, "trim_top_db": TRIM_TOP_DB,
        "tools": tool_versions(), "n_clips": len(rows), "skipped": builder.skipped,
        "splits": summarise(rows),
    }
    if check_confounds:
        summary["confound_check"] = confound_check(out, rows)
    (out / "corpus.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.audio_corpus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/audio_corpus"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-per-language", type=int, default=None,
                        help="at most N KLettres clips per language (a quick, smaller corpus)")
    parser.add_argument("--klettres-root", type=Path, default=KLETTRES_ROOT)
    parser.add_argument("--languages", default=None, help="comma-separated KLettres codes")
    parser.add_argument("--generators", default=",".join(GENERATORS))
    parser.add_argument("--real-copies", type=int, default=2,
                        help="augmented copies of each training real clip")
    parser.add_argument("--espeak-per-text", type=int, default=2)
    parser.add_argument("--test-languages", default=",".join(TEST_LANGUAGES))
    parser.add_argument("--validation-languages", default=",".join(VALIDATION_LANGUAGES))
    parser.add_argument("--check-confounds", action="store_true",
                        help="fit a classifier on recording cues alone and report its test AUC")
    args = parser.parse_args(argv)
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    command = "python -m training.audio_corpus " + " ".join(
        sys.argv[1:] if argv is None else list(argv))
    summary = build_corpus(
        args.out, seed=args.seed, klettres_root=args.klettres_root,
        languages=split(args.languages) if args.languages else None,
        max_per_language=args.max_per_language, generators=split(args.generators),
        real_copies=args.real_copies, espeak_per_text=args.espeak_per_text,
        test=split(args.test_languages), validation=split(args.validation_languages),
        command=command.strip(), check_confounds=args.check_confounds)
    for name, s in summary["splits"].items():
        print(f"{name:10s} real {s['real']:5d} fake {s['fake']:5d}  languages "
              f"{', '.join(s['languages'])}")
    if "confound_check" in summary:
        check = summary["confound_check"]
        print(f"recording cues alone: test AUC {check['auc_recording_cues']:.3f} "
              f"(with spectral cues {check['auc_all_cues']:.3f}; 0.5 = no information)")
    print(f"metadata: {args.out / 'metadata.csv'}")


if __name__ == "__main__":
    main()
