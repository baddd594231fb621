"""Feature-domain augmentation of training windows (both classes): SpecAugment masks, band
shift and time stretch, recording-channel variation; for waveform models gain, shift and
noise on the samples."""

from __future__ import annotations

import numpy as np

from ..trainer import Augment

AUGMENTATIONS = {
    "masks": "SpecAugment masks (one band <= 8 mel bins, one span <= 16 frames, p = 0.5 each)",
    "warp": "SpecAugment masks, plus a shift of +-2 mel bands and a time stretch of 0.85-1.15 "
            "(p = 0.5 each; vocal-tract-length and speaking-rate perturbation)",
    "channel": "SpecAugment masks, plus recording-channel variation (p = 0.5 each): a random "
               "EQ (tilt +-6 dB over the bands and one +-6 dB bump), a noise floor 40-70 dB "
               "below the peak, a noise gate (frames quieter than 35-60 dB below the peak set "
               "to the floor, p = 0.25) and a time shift of up to +-0.5 s",
    "channel_warp": "channel, plus warp's band shift and time stretch",
    "channel_band": "channel, plus a band limit (p = 0.5): every band above a cut-off drawn "
                    "from 3.4, 4, 5.5 and 7 kHz set to the floor (telephone, 8 and 11 kHz "
                    "recordings, low-pass codecs), and below 300 Hz with the 3.4 kHz cut-off "
                    "(the telephone band)",
    "wave": "waveform models: a gain of +-6 dB, a time shift of up to +-0.25 of the window "
            "(zero-filled) and white noise 40-70 dB below the peak (p = 0.5 each)",
    "none": "none",
}
#: the augmentations that apply to samples (``input.kind: waveform``); the others to dB planes
WAVE_AUGMENTATIONS = ("wave", "none")


def _warp(x: np.ndarray, rng: np.random.Generator, floor: float) -> np.ndarray:
    """x: (H, W) dB plane; a +-2 band shift and a 0.85-1.15 time stretch, p = 0.5 each."""
    h, w = x.shape
    if rng.random() < 0.5:
        k = int(rng.choice([-2, -1, 1, 2]))
        x = np.roll(x, k, axis=0)
        if k > 0:  # the bands rolled round to the other edge repeat the edge band
            x[:k] = x[k]
        else:
            x[k:] = x[k - 1]
    if rng.random() < 0.5:
        factor = rng.uniform(0.85, 1.15)
        src = np.arange(w) * factor
        lo = np.clip(np.floor(src).astype(int), 0, w - 1)
        hi = np.clip(lo + 1, 0, w - 1)
        frac = (src - np.floor(src)).astype(np.float32)
        row = x[:, lo] * (1 - frac)[None, :] + x[:, hi] * frac[None, :]
        x = np.where(src[None, :] <= w - 1, row, floor).astype(np.float32)
    return x


def _channel(x: np.ndarray, rng: np.random.Generator, floor: float) -> np.ndarray:
    """x: (H, W) dB plane relative to its peak, floored at ``floor``; recording-channel
    variation that carries no label: EQ, a noise floor, a noise gate and a time shift. The
    plane is re-referenced to its peak and floored again, as :func:`log_mel` would."""
    h, w = x.shape
    live = x > floor + 1e-3  # digital silence stays silent under EQ
    if rng.random() < 0.5:
        bands = np.linspace(-1.0, 1.0, h, dtype=np.float32)
        curve = rng.uniform(-6, 6) * bands
        centre, width = rng.uniform(-1, 1), rng.uniform(0.1, 0.4)
        curve += rng.uniform(-6, 6) * np.exp(-0.5 * ((bands - centre) / width) ** 2)
        x = np.where(live, x + curve[:, None].astype(np.float32), floor)
    if rng.random() < 0.5:
        level = rng.uniform(-70, -40) + x.max()
        noise = level + rng.normal(0, 3, size=x.shape)
        x = 10 * np.log10(10 ** (x / 10) + 10 ** (noise / 10))
    if rng.random() < 0.25:
        gate = x.max() + rng.uniform(-60, -35)
        x = np.where(x.max(axis=0, keepdims=True) < gate, floor, x)
    if rng.random() < 0.5:
        k = int(rng.integers(-w // 4, w // 4 + 1))
        x = np.roll(x, k, axis=1)
        if k > 0:
            x[:, :k] = floor
        elif k < 0:
            x[:, k:] = floor
    return np.clip(x - x.max(), floor, 0).astype(np.float32)


BAND_CUTOFFS_HZ = (3400.0, 4000.0, 5500.0, 7000.0)
"""``channel_band``'s upper cut-offs: the telephone band, 8 kHz and 11.025 kHz recordings, and a
low-pass codec."""


def _band_limit(x: np.ndarray, rng: np.random.Generator, floor: float,
                centers_hz: np.ndarray) -> np.ndarray:
    """x: (H, W) dB plane; with p = 0.5 the bands whose centre lies above a random cut-off
    (:data:`BAND_CUTOFFS_HZ`) are set to the floor, as a recording at a lower sample rate or
    through a telephone chain would leave them (the telephone cut-off also removes the bands
    below 300 Hz). The plane is re-referenced to its peak, as :func:`log_mel` would."""
    if rng.random() >= 0.5:
        return x
    cutoff = float(rng.choice(BAND_CUTOFFS_HZ))
    gone = centers_hz > cutoff
    if cutoff == BAND_CUTOFFS_HZ[0]:
        gone |= centers_hz < 300.0
    if gone.all():
        return x
    x = x.copy()
    x[gone] = floor
    return np.clip(x - x.max(), floor, 0).astype(np.float32)


def _wave(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x: (L,) samples in [-1, 1]; gain, time shift and a noise floor (see ``wave``)."""
    if rng.random() < 0.5:
        x = x * np.float32(10 ** (rng.uniform(-6, 6) / 20))
    if rng.random() < 0.5:
        k = int(rng.integers(-len(x) // 4, len(x) // 4 + 1))
        x = np.roll(x, k)
        if k > 0:
            x[:k] = 0.0
        elif k < 0:
            x[k:] = 0.0
    if rng.random() < 0.5:
        peak = float(np.abs(x).max()) or 1.0
        x = x + (peak * 10 ** (rng.uniform(-70, -40) / 20)
                 * rng.standard_normal(len(x))).astype(np.float32)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def augmentation(kind: str, top_db: float, *, waveform: bool = False,
                 centers_hz: np.ndarray | None = None) -> Augment | None:
    """Feature-domain augmentation applied alike to both classes (see :data:`AUGMENTATIONS`).

    x: (N, H, W) float32 dB planes in [-top_db, 0]; returned in the same range (``waveform``:
    (N, 1, L) samples, for ``wave``). Masks follow
    SpecAugment (Park et al., 2019), set to the dB floor. ``warp`` adds a small shift along
    the mel axis and a time stretch, which mimic other speakers and speaking rates (the
    training set has few real speakers; test speakers are all new). ``channel`` varies what a
    recording set-up changes (EQ, noise floor, noise gate, where the speech sits), so that
    none of it can stand in for the label. ``channel_band`` adds band limits at the cut-offs
    users' recordings have (telephone, low sample rates), so that the bandwidth cannot stand in
    for the label either; it needs each band's centre frequency, ``centers_hz`` (H,).
    """
    if kind not in AUGMENTATIONS:
        raise SystemExit(f"unknown augmentation '{kind}'; use one of {', '.join(AUGMENTATIONS)}.")
    if waveform != (kind in WAVE_AUGMENTATIONS) and kind != "none":
        fits = WAVE_AUGMENTATIONS if waveform else tuple(k for k in AUGMENTATIONS
                                                         if k not in WAVE_AUGMENTATIONS)
        raise SystemExit(f"augmentation '{kind}' does not apply to a "
                         f"{'waveform' if waveform else 'spectrogram'} model; use one of "
                         f"{', '.join(fits)}.")
    if kind == "none":
        return None
    if kind == "channel_band" and centers_hz is None:
        raise ValueError("channel_band needs the bands' centre frequencies (centers_hz)")
    if waveform:  # x: (N, 1, L) samples
        def augment_wave(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return np.stack([_wave(row[0].copy(), rng)[None] for row in x])

        return augment_wave
    floor = -float(top_db)

    def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = x.copy()
        n, h, w = x.shape
        for i in range(n):
            if kind in ("warp", "channel_warp"):
                x[i] = _warp(x[i], rng, floor)
            if kind in ("channel", "channel_warp", "channel_band"):
                x[i] = _channel(x[i], rng, floor)
            if kind == "channel_band":
                x[i] = _band_limit(x[i], rng, floor, centers_hz)
            if rng.random() < 0.5:
                f = int(rng.integers(1, 9))
                f0 = int(rng.integers(0, h - f + 1))
                x[i, f0:f0 + f] = floor
            if rng.random() < 0.5:
                t = int(rng.integers(1, 17))
                t0 = int(rng.integers(0, w - t + 1))
                x[i, :, t0:t0 + t] = floor
        return x

    return augment

