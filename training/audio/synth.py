"""The synthetic voices of the corpus: eSpeak NG, Flite and Festival (HTS), each run twice so
that the speech lasts about as long as the real recording of the same text. Each synthesiser
returns (wave, sample rate, voice id, parameters)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from xai_platform.preprocessing import audio

from .chain import TRIM_TOP_DB

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
