"""Vocoded copies of real recordings: the same speaker, text and room as the real clip, only
the synthesis differs, so a detector trained on them learns synthesis artefacts rather than
who is speaking (Wang and Yamagishi, "Spoofed training data for speech spoofing
countermeasure can be efficiently created using neural vocoders", ICASSP 2023).

Each vocoder maps a (n,) float32 wave at ``sr`` to (wave, sr, voice id, parameters) and draws
its settings from ``rng``. Analysis runs at 16 kHz (the model rate).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable

import numpy as np

from xai_platform.preprocessing import audio

RATE = 16000


def prepared(wave: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float64 at 16 kHz, with a dither of 1e-5 drawn from ``rng``."""
    x = audio.resample(np.asarray(wave, np.float32), sr, RATE).astype(np.float64)
    # A little dither: digital silence breaks the log spectra of WORLD and SPTK.
    return x + rng.standard_normal(len(x)) * 1e-5


def world(wave: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, int, str, str]:
    """WORLD analysis (DIO + StoneMask F0, CheapTrick envelope, D4C aperiodicity) and
    resynthesis (Morise et al., IEICE 2016), at a random frame period."""
    import pyworld

    x = prepared(wave, sr, rng)
    period = float(rng.choice([5.0, 5.0, 10.0]))
    f0, sp, ap = world_analysis(x, period)
    y = pyworld.synthesize(f0, sp, ap, RATE, frame_period=period)
    return _checked(y, "world"), RATE, "world:dio", f"frame_period={period:.0f}ms"


def world_analysis(x: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WORLD's analysis of a (n,) float64 wave at 16 kHz: F0 (T,) in Hz (0 where unvoiced,
    DIO refined by StoneMask), spectral envelope (T, 513) power (CheapTrick) and aperiodicity
    (T, 513) in [0, 1] (D4C), one frame every ``period`` ms."""
    import pyworld

    f0, t = pyworld.dio(x, RATE, frame_period=period)
    f0 = pyworld.stonemask(x, f0, t, RATE)
    return f0, pyworld.cheaptrick(x, f0, t, RATE), pyworld.d4c(x, f0, t, RATE)


def griffin_lim(wave: np.ndarray, sr: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, int, str, str]:
    """The magnitude mel spectrogram inverted by Griffin-Lim phase reconstruction (Griffin and
    Lim, IEEE TASSP 1984; ``librosa.feature.inverse.mel_to_audio``). The initial phase is
    seeded from the prepared samples (which hold ``rng``'s dither), so a rebuild gives the same
    clip and ``rng`` is drawn from exactly as before; unseeded, librosa drew it from NumPy's
    global state and every rebuild differed (docs/AUDIO.md, thirtieth session)."""
    x = prepared(wave, sr, rng).astype(np.float32)
    n_mels = int(rng.choice([64, 80, 128]))
    n_iter = int(rng.integers(16, 33))
    y = mel_round_trip(x, n_mels=n_mels, n_iter=n_iter, random_state=phase_seed(x))
    return _checked(y, "griffinlim"), RATE, "griffinlim:mel", f"n_mels={n_mels} n_iter={n_iter}"


def phase_seed(x: np.ndarray) -> int:
    """A seed for Griffin-Lim's initial phase from the samples themselves: the same input gives
    the same phase on any run, and no two inputs share one pattern (a fixed seed would stamp the
    same initial phase on every copy). A CRC-32, as the corpus seeds each clip's generator
    (:func:`training.audio.corpus.item_rng`)."""
    return zlib.crc32(np.ascontiguousarray(x).tobytes())


def mel_round_trip(x: np.ndarray, *, n_mels: int, n_iter: int,
                   random_state: int | None = None, pinv: bool = False) -> np.ndarray:
    """A (n,) float32 wave at 16 kHz through its magnitude mel spectrogram (1024-point frames,
    hop 256) and back by ``n_iter`` Griffin-Lim iterations (``random_state``: the seed of the
    initial phase; None draws a fresh one, as librosa does). The linear magnitudes come from
    the mel ones by non-negative least squares, as ``mel_to_audio`` does, or with ``pinv``
    by the mel filters' pseudo-inverse clipped at zero (five times faster; on a corpus clip
    the two waves differ by at most 2e-4)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=x, sr=RATE, n_fft=1024, hop_length=256,
                                         n_mels=n_mels, power=1.0)
    # librosa.feature.inverse.mel_to_audio in two steps, so that the phase can be seeded.
    if pinv:
        stft = np.maximum(_mel_pinv(n_mels) @ mel, 0.0).astype(np.float32)
    else:
        stft = librosa.feature.inverse.mel_to_stft(mel, sr=RATE, n_fft=1024, power=1.0)
    return librosa.griffinlim(stft, n_iter=n_iter, hop_length=256, n_fft=1024, length=len(x),
                              dtype=np.float32, random_state=random_state)


@functools.lru_cache(maxsize=4)
def _mel_pinv(n_mels: int) -> np.ndarray:
    import librosa

    return np.linalg.pinv(librosa.filters.mel(sr=RATE, n_fft=1024, n_mels=n_mels))


def mlsa(wave: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, int, str, str]:
    """Mel-cepstral analysis and MLSA-filter resynthesis from a pulse / noise excitation
    (SWIPE' pitch), the source-filter vocoder of HMM synthesis (Imai, ICASSP 1983; ``pysptk``)."""
    import pysptk
    from pysptk.synthesis import MLSADF, Synthesizer

    x = prepared(wave, sr, rng)
    hop, frame, alpha = 80, 1024, 0.42
    order = int(rng.choice([20, 25, 30]))
    padded = np.pad(x, frame // 2)
    n = 1 + (len(padded) - frame) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame)[::hop][:n].copy()
    frames *= pysptk.blackman(frame)
    mc = pysptk.mcep(frames, order=order, alpha=alpha, etype=1, eps=1e-8)
    b = pysptk.mc2b(mc, alpha)
    pitch = pysptk.swipe(x, fs=RATE, hopsize=hop, min=60, max=400, otype="pitch")
    m = min(len(pitch), len(b))
    excitation = pysptk.excite(pitch[:m].astype(np.float64), hop)
    y = Synthesizer(MLSADF(order=order, alpha=alpha), hop).synthesis(excitation, b[:m])
    return _checked(y[: len(x)], "mlsa"), RATE, "mlsa:swipe", f"order={order} alpha={alpha}"


def phase_vocoder(wave: np.ndarray, sr: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, int, str, str]:
    """A phase-vocoder round trip: time-stretched by a random factor and back
    (``librosa.effects.time_stretch``; Flanagan and Golden, 1966; Laroche and Dolson, 1999).
    The magnitudes keep the original's frames; the phases are re-accumulated twice, so what
    remains is the smearing and "phasiness" of an STFT resynthesis."""
    import librosa

    x = prepared(wave, sr, rng).astype(np.float32)
    rate = float(rng.choice([0.75, 0.85, 1.2, 1.35]))
    n_fft = int(rng.choice([512, 1024]))
    hop = n_fft // 4
    y = librosa.effects.time_stretch(x, rate=rate, n_fft=n_fft, hop_length=hop)
    y = librosa.effects.time_stretch(y, rate=1.0 / rate, n_fft=n_fft, hop_length=hop)
    y = _level(librosa.util.fix_length(y, size=len(x)), x)
    return _checked(y, "phasevoc"), RATE, "phasevoc:stretch", f"rate={rate} n_fft={n_fft}"


def lpc(wave: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, int, str, str]:
    """A classic LPC vocoder (Atal and Hanauer, 1971): an all-pole filter per 5 ms (Burg's
    LPC over 32 ms Hann frames, ``librosa.lpc``) driven by a pulse train at the RAPT pitch
    (``pysptk.rapt``) where voiced and white noise where not, at the frame's residual level."""
    import librosa
    import pysptk
    from scipy.signal import lfilter

    x = prepared(wave, sr, rng)
    order = int(rng.choice([12, 16, 20]))
    hop, frame = 80, 512
    f0 = pysptk.rapt(x.astype(np.float32) * 32768, fs=RATE, hopsize=hop, min=60, max=400,
                     otype="f0").astype(np.float64)
    padded = np.pad(x, frame // 2)
    n = min(len(f0), 1 + (len(padded) - frame) // hop)
    window = np.hanning(frame)
    y = np.zeros(n * hop)
    state = np.zeros(order)
    phase = 0.0
    for i in range(n):
        seg = padded[i * hop: i * hop + frame] * window
        a = librosa.lpc(seg + rng.standard_normal(frame) * 1e-9, order=order)
        gain = float(np.sqrt(np.mean(lfilter(a, [1.0], seg) ** 2) / np.mean(window ** 2)))
        if f0[i] > 0:
            period = RATE / f0[i]
            excitation = np.zeros(hop)
            for j in range(hop):
                phase += 1.0
                if phase >= period:
                    phase -= period
                    excitation[j] = np.sqrt(period)
        else:
            excitation = rng.standard_normal(hop)
        y[i * hop:(i + 1) * hop], state = lfilter([gain], a, excitation, zi=state)
    y = _level(np.pad(y[: len(x)], (0, max(0, len(x) - len(y)))), x)
    return _checked(y, "lpc"), RATE, "lpc:rapt", f"order={order}"


def pghi(wave: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, int, str, str]:
    """A mel-spectrogram vocoder without Griffin-Lim: the magnitude mel spectrogram of a
    Gaussian-window STFT (32 ms frames, hop 4 ms), its linear magnitudes by non-negative least
    squares, and the phase by Phase Gradient Heap Integration (Prusa, Balazs and Sondergaard,
    IEEE/ACM TASLP 2017; ``pghipy``), which integrates the phase gradients that the log
    magnitude implies instead of iterating. It shares Griffin-Lim's mel bottleneck (as neural
    mel vocoders do), not its frames or its phase retrieval."""
    import librosa
    import pghipy

    x = prepared(wave, sr, rng)
    n_fft, hop = 512, 128
    n_mels = int(rng.choice([64, 80]))
    window, gamma = pghipy.get_default_window(n_fft)
    spec = np.abs(pghipy.stft(x, win_length=n_fft, hop_length=hop, window=window))  # (T, bins)
    basis = librosa.filters.mel(sr=RATE, n_fft=n_fft, n_mels=n_mels)
    magnitude = librosa.util.nnls(basis, basis @ spec.T).T
    phase = pghipy.pghi(magnitude, win_length=n_fft, hop_length=hop, gamma=gamma)
    synthesis = pghipy.calculate_synthesis_window(n_fft, hop, window)
    y = pghipy.istft(magnitude * np.exp(1j * phase), win_length=n_fft, hop_length=hop,
                     synthesis_window=synthesis, length=len(x))
    return _checked(_level(y, x), "pghi"), RATE, "pghi:mel", f"n_mels={n_mels}"


def _level(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y`` scaled to the RMS of ``x``: overlap-add of re-phased frames loses 45-60% of the
    level and an all-pole filter's gain is approximate; the copy should not say so by its level."""
    rms = float(np.sqrt(np.mean(np.square(y, dtype=np.float64))))
    return y * (float(np.sqrt(np.mean(np.square(x)))) / rms) if rms > 0 else y


def _checked(y: np.ndarray, name: str) -> np.ndarray:
    """``y`` as float32, refused when the synthesis diverged (an unstable MLSA filter)."""
    if not np.all(np.isfinite(y)) or np.max(np.abs(y), initial=0.0) > 100.0:
        raise RuntimeError(f"{name}: the resynthesis diverged (non-finite or huge samples)")
    return y.astype(np.float32)


VOCODERS: dict[str, Callable[..., tuple[np.ndarray, int, str, str]]] = {
    "world": world, "griffinlim": griffin_lim, "mlsa": mlsa,
    "phasevoc": phase_vocoder, "lpc": lpc, "pghi": pghi}
MODULES = {"world": "pyworld", "griffinlim": "librosa", "mlsa": "pysptk",
           "phasevoc": "librosa", "lpc": "pysptk", "pghi": "pghipy"}


def available_vocoders(wanted: tuple[str, ...] = tuple(VOCODERS)) -> list[str]:
    """The vocoders whose Python package imports."""
    import importlib

    found = []
    for name in wanted:
        try:
            importlib.import_module(MODULES[name])
        except ImportError:
            continue
        found.append(name)
    return found
