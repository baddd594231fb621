"""Room tone of the real recordings, lent to the synthetic training clips (``--room-tone``).

A real recording carries the noise of the room and microphone it was made with *inside* its
speech: the shared chain (:mod:`training.audio.chain`) trims the silence around the speech, so
what is left of the room is under and between the words, beneath the chain's synthetic noise
bed. A text-to-speech clip has digital silence there and only the bed. So "the noise of a
known recording set-up under the speech" says "real", and a real voice from a set-up training
never heard lacks it (``docs/AUDIO.md``: held-out set-ups are called fake 14-69% of the time).

This module takes that cue away in training: each synthetic training fake (classic and neural
engines; a vocoded copy already carries its original's room through the vocoder) gets, under
its speech, a stretch of room tone from a real training recording of the same source (the one
whose text it reads), at that recording's own noise-to-speech ratio, low-passed when the chain
low-passed the clip and through the same 16 kHz Ogg Vorbis trip the clip took. Room tone is
what the trim cut off a real recording: its leading and trailing stretches more than
``TRIM_TOP_DB`` below the peak.

The validation and test splits are never touched: they stay what users meet.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xai_platform.preprocessing import audio

from .chain import SAMPLE_RATE, TRIM_TOP_DB, fade_edges, lowpass, vorbis_round_trip
from .corpus import item_rng
from .data import Clip

MIN_TONE_S = 0.05  # shorter leading + trailing stretches carry too little to tile from
GUARD_S = 0.01  # kept off each side of the speech, so no onset or decay leaks into the tone
FADE_S = 0.01
SYNTHETIC_KINDS = ("classic", "neural")  # vocoded copies already carry their room


@dataclass(frozen=True)
class Tone:
    """Room tone of one real recording at 16 kHz, and how loud it sat under its speech."""

    samples: np.ndarray  # (n,) float32, n >= MIN_TONE_S * 16000
    ratio: float  # RMS of the tone / RMS of the trimmed speech, in amplitude


def room_tone(wave: np.ndarray, sr: int) -> Tone | None:
    """The stretches of a real recording that the corpus's trim cuts off (more than
    ``TRIM_TOP_DB`` below the peak, before the first and after the last louder frame), at
    16 kHz; None when they are shorter than ``MIN_TONE_S`` or digitally silent."""
    wave = audio.resample(np.asarray(wave, np.float32), sr, SAMPLE_RATE)
    start, end = audio.speech_bounds(wave, SAMPLE_RATE, top_db=TRIM_TOP_DB)
    guard = int(GUARD_S * SAMPLE_RATE)
    tone = np.concatenate([wave[:max(start - guard, 0)], wave[end + guard:]])
    speech = wave[start:end]
    if len(tone) < MIN_TONE_S * SAMPLE_RATE or not len(speech):
        return None
    tone_rms, speech_rms = _rms(tone), _rms(speech)
    if tone_rms < 1e-6 or speech_rms < 1e-6:
        return None
    return Tone(tone.astype(np.float32), tone_rms / speech_rms)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def tile(tone: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32: random stretches of ``tone`` joined with short cross-fades."""
    fade = min(int(FADE_S * SAMPLE_RATE), len(tone) // 4)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32) if fade else np.zeros(0, np.float32)
    out = np.zeros(0, np.float32)
    while len(out) < n:
        length = int(rng.integers(len(tone) // 2, len(tone) + 1))
        begin = int(rng.integers(0, len(tone) - length + 1))
        piece = tone[begin:begin + length].copy()
        if fade and len(out) >= fade and len(piece) > fade:
            out[-fade:] = out[-fade:] * ramp[::-1] + piece[:fade] * ramp
            piece = piece[fade:]
        out = np.concatenate([out, piece])
    return out[:n]


_PARAM = re.compile(r"(\w+)=([^\s]+)")


def chain_settings(params: str) -> dict[str, str]:
    """The ``key=value`` words of a corpus row's ``params`` (:class:`~training.audio.chain.
    ChainParams.text` and the generator's own)."""
    return dict(_PARAM.findall(params))


def lend(clip: np.ndarray, tone: Tone, *, lead_s: float, speech_s: float,
         lowpass_hz: float | None, vorbis_level: float | None,
         rng: np.random.Generator) -> np.ndarray:
    """``clip`` (a corpus clip at 16 kHz) with ``tone`` under its speech, which the chain
    placed at ``lead_s`` for ``speech_s`` seconds: scaled to the tone's own ratio to the speech
    it was recorded with, faded in and out over 10 ms, low-passed and Vorbis-coded as the clip
    was."""
    a = int(round(lead_s * SAMPLE_RATE))
    b = min(len(clip), a + int(round(speech_s * SAMPLE_RATE)))
    if b - a < 2 * int(FADE_S * SAMPLE_RATE):
        return clip
    speech_rms = _rms(clip[a:b])
    bed = tile(tone.samples, b - a, rng)
    bed *= np.float32(tone.ratio * speech_rms / (_rms(bed) + 1e-12))
    bed = fade_edges(bed, int(FADE_S * SAMPLE_RATE))
    full = np.zeros_like(clip)
    full[a:b] = bed
    if lowpass_hz:
        full = lowpass(full, SAMPLE_RATE, lowpass_hz)
    if vorbis_level is not None:
        full = vorbis_round_trip(np.clip(full, -1, 1), SAMPLE_RATE, level=vorbis_level)
    return np.clip(clip + full[: len(clip)], -1.0, 1.0).astype(np.float32)


@dataclass
class RoomTones:
    """Room tone per real source, from the training split's real recordings, lent to the
    training split's synthetic fakes: :meth:`transform` is a per-clip feature transform."""

    by_source: dict[str, list[Tone]]
    seed: int = 0

    @classmethod
    def from_clips(cls, clips: Iterable[Clip], *, seed: int = 0, per_source: int = 60
                   ) -> RoomTones:
        """Tones of up to ``per_source`` training real recordings of each source (their
        originals, before the corpus chain: its trim removed the tone from the clips)."""
        rng = np.random.default_rng(seed)
        reals: dict[str, list[Clip]] = {}
        for c in clips:
            if c.split == "train" and c.label == "real" and c.original:
                reals.setdefault(c.source, []).append(c)
        by_source: dict[str, list[Tone]] = {}
        for source, group in sorted(reals.items()):
            tones = []
            for i in rng.permutation(len(group)):
                try:
                    wave, sr = audio.decode_audio(Path(group[i].original))
                except Exception as e:  # noqa: BLE001 - a missing original only costs a tone
                    sys.stderr.write(f"  room tone: {group[i].original}: {e}\n")
                    continue
                tone = room_tone(wave, sr)
                if tone is not None:
                    tones.append(tone)
                if len(tones) >= per_source:
                    break
            if tones:
                by_source[source] = tones
        return cls(by_source, seed)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per source: recordings with a tone, and the median noise-to-speech ratio in dB."""
        return {s: {"recordings": len(t),
                    "median_db": round(float(np.median([20 * np.log10(x.ratio) for x in t])),
                                       1)}
                for s, t in self.by_source.items()}

    def _choose(self, clip: Clip) -> tuple[str, Tone, np.random.Generator] | None:
        """The source and tone ``clip`` is lent, and its own generator for the tiling (the
        same for the same clip in any run); None for a clip that keeps its own sound: real
        clips, vocoded copies, clips outside the training split."""
        if (clip.split != "train" or clip.label != "fake" or not self.by_source
                or clip.generator_kind not in SYNTHETIC_KINDS or clip.speech_seconds is None
                or "lead" not in chain_settings(clip.params)):
            return None
        rng = item_rng(self.seed, clip.key or str(clip.path))
        source = (clip.source if clip.source in self.by_source
                  else sorted(self.by_source)[int(rng.integers(len(self.by_source)))])
        tones = self.by_source[source]
        return source, tones[int(rng.integers(len(tones)))], rng

    def lent(self, clips: Iterable[Clip]) -> dict[str, int]:
        """How many of ``clips`` are lent each source's tone."""
        out: dict[str, int] = {}
        for c in clips:
            chosen = self._choose(c)
            if chosen is not None:
                out[chosen[0]] = out.get(chosen[0], 0) + 1
        return dict(sorted(out.items()))

    def transform(self, clip: Clip) -> Callable[[np.ndarray, int], tuple[np.ndarray, int]] | None:
        """The feature transform that lends ``clip`` its room tone (None: see :meth:`_choose`)."""
        chosen = self._choose(clip)
        if chosen is None:
            return None
        _, tone, rng = chosen
        settings = chain_settings(clip.params)
        lp, vorbis = settings.get("lowpass", "none"), settings.get("vorbis")

        def apply(wave: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
            wave = audio.resample(wave, sr, SAMPLE_RATE)
            return lend(wave, tone, lead_s=float(settings["lead"]),
                        speech_s=float(clip.speech_seconds), rng=rng,
                        lowpass_hz=None if lp == "none" else float(lp),
                        vorbis_level=None if vorbis is None else float(vorbis)), SAMPLE_RATE

        return apply
