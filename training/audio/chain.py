"""The chain every corpus clip goes through, real or fake alike, so that a detector cannot tell
the classes apart by how they were recorded or stored (``docs/AUDIO.md``, "Confounds"):

1. (fakes only, before this chain: one 44.1 kHz Ogg Vorbis round trip, as the KLettres files
   had);
2. resample to 16 kHz, trim leading and trailing silence, normalise loudness to a random level;
3. with some probability, the same light synthetic room reverb and the same random low-pass;
4. place the speech at a random offset inside a random-length bed (so clip length and the
   position of speech in the model's window carry no label), with coloured noise at a random
   level over the whole clip (so a digitally silent background does not say "synthetic");
5. one 16 kHz Ogg Vorbis round trip at a random quality (then 16-bit FLAC, when written).
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from xai_platform.preprocessing import audio

SAMPLE_RATE = 16000
TRIM_TOP_DB = 25.0  # KLettres clips carry room noise 40-50 dB below the peak; 35 dB keeps it


def codec_round_trip(wave: np.ndarray, sr: int, *, fmt: str, subtype: str,
                     **write_options: float) -> np.ndarray:
    """Encode with libsndfile (``fmt`` and ``subtype`` as :func:`soundfile.write` takes them,
    e.g. WAV / GSM610) and decode again, cut to the input's length."""
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, np.float32), sr, format=fmt, subtype=subtype,
             **write_options)
    buf.seek(0)
    out, _ = sf.read(buf, dtype="float32")
    return np.asarray(out[: len(wave)], np.float32)


def vorbis_round_trip(wave: np.ndarray, sr: int, *, level: float) -> np.ndarray:
    """Encode to Ogg Vorbis and decode again; ``level`` in [0, 1], 0 is the best quality."""
    return codec_round_trip(wave, sr, fmt="OGG", subtype="VORBIS",
                            compression_level=float(level))


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


def fade_edges(wave: np.ndarray, n: int) -> np.ndarray:
    """A copy of ``wave`` faded in over its first ``n`` samples and out over its last ``n``
    (linear ramps; ``wave`` itself when ``n`` is 0)."""
    if n <= 0:
        return wave
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    wave = wave.copy()
    wave[:n] *= ramp
    wave[-n:] *= ramp[::-1]
    return wave


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
    channel: str = ""  # what the optional channel step did (corpus v2)

    def text(self) -> str:
        lp = f"{self.lowpass_hz:.0f}" if self.lowpass_hz else "none"
        return (f"loud={self.loudness_dbfs:.1f} reverb={int(self.reverb)} lowpass={lp} "
                f"noise={self.noise_dbfs:.1f}/{self.noise_slope:.2f} lead={self.lead_s:.2f} "
                + (f"channel={self.channel} " if self.channel else "")
                + f"vorbis={self.vorbis_level:.2f}")


Channel = Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, str]]


def shared_chain(wave: np.ndarray, sr: int, rng: np.random.Generator, *,
                 channel: Channel | None = None) -> tuple[np.ndarray, float, ChainParams]:
    """Steps 2-5 of the module docstring. Returns (16 kHz clip, speech seconds, parameters).
    ``channel(bed, 16000, rng) -> (bed, description)``, when given, runs on the noisy bed just
    before the final Vorbis trip (corpus v2's telephone band and low-bit-rate codecs)."""
    wave = audio.resample(wave, sr, SAMPLE_RATE)
    wave = audio.trim_silence(wave, SAMPLE_RATE, top_db=TRIM_TOP_DB)
    speech_s = len(wave) / SAMPLE_RATE
    # no click where the bed begins
    wave = fade_edges(wave, min(len(wave) // 4, int(0.01 * SAMPLE_RATE)))
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
    described = ""
    if channel is not None:
        bed, described = channel(np.clip(bed, -1, 1), SAMPLE_RATE, rng)
    level = float(rng.uniform(0.2, 0.7))
    bed = vorbis_round_trip(np.clip(bed, -1, 1), SAMPLE_RATE, level=level)
    params = ChainParams(loud, reverb, cutoff, noise_db, slope, lead / SAMPLE_RATE, level,
                         described)
    return np.clip(bed, -1.0, 1.0), speech_s, params


# --------------------------------------------------------------------------------------------
# Channel augmentation (corpus v2): applied to real and fake clips at the same rates.

# codec -> (ffmpeg encoder, container, bit rates in kbit/s)
CODECS = {"mp3": ("libmp3lame", "mp3", (16, 24, 32, 48)),
          "opus": ("libopus", "ogg", (8, 12, 16, 24))}


def ffmpeg_round_trip(wave: np.ndarray, sr: int, *, codec: str, kbps: int) -> np.ndarray:
    """Encode with ffmpeg (``codec`` a key of :data:`CODECS`) at ``kbps`` and decode back to
    ``sr``; the output has the input's length."""
    encoder, container, _ = CODECS[codec]
    with tempfile.TemporaryDirectory(prefix="chain-") as tmp:
        src, enc = Path(tmp) / "in.wav", Path(tmp) / f"enc.{container}"
        sf.write(src, np.asarray(wave, np.float32), sr, subtype="PCM_16")
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
                        "-c:a", encoder, "-b:a", f"{kbps}k", str(enc)],
                       check=True, capture_output=True, timeout=60)
        proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(enc),
                               "-f", "f32le", "-ac", "1", "-ar", str(sr), "-"],
                              check=True, capture_output=True, timeout=60)
    out = np.frombuffer(proc.stdout, np.float32)
    if len(out) >= len(wave):
        return out[: len(wave)].copy()
    return np.pad(out, (0, len(wave) - len(out)))


def telephone(wave: np.ndarray, sr: int) -> np.ndarray:
    """The telephone band: 300-3400 Hz band-pass, through 8 kHz, back to ``sr``."""
    from scipy.signal import butter, sosfiltfilt

    narrow = audio.resample(wave, sr, 8000)
    sos = butter(4, (300.0, 3400.0), btype="band", fs=8000, output="sos")
    return audio.resample(sosfiltfilt(sos, narrow).astype(np.float32), 8000, sr)[: len(wave)]


@dataclass(frozen=True)
class ChannelAugment:
    """With probability ``p_telephone`` the telephone band, then with ``p_codec`` an MP3 or
    Opus round trip at a low bit rate; draws from the clip's generator, class-blind."""

    p_telephone: float = 0.15
    p_codec: float = 0.3

    def __call__(self, wave: np.ndarray, sr: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, str]:
        steps = []
        if rng.random() < self.p_telephone:
            wave = telephone(wave, sr)
            steps.append("telephone")
        if rng.random() < self.p_codec:
            codec = str(rng.choice(sorted(CODECS)))
            kbps = int(rng.choice(CODECS[codec][2]))
            wave = ffmpeg_round_trip(wave, sr, codec=codec, kbps=kbps)
            steps.append(f"{codec}{kbps}k")
        return wave, "+".join(steps) or "none"
