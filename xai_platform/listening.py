"""Explanations you can listen to: a deletion test a user can hear.

From an attribution over a spectrogram window, two clips are made: the most important
time-frequency regions kept and the rest attenuated ("kept"), and the complement ("removed").
Each is scored by the model again, through the same spectrogram features (a waveform model:
on the clips' samples), so the user hears what the model relied on and sees what its score
becomes without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .modalities.audio import AudioInput
from .explanation import Explanation, FloatArray
from .models.handle import ModelHandle


@dataclass(frozen=True)
class ListeningClips:
    """kept / removed: (n_samples,) float32 waveforms at ``sample_rate``; scores: the model's
    probability of the explained class for the original window and each clip."""

    kept: FloatArray
    removed: FloatArray
    sample_rate: int
    share: float
    score_original: float
    score_kept: float
    score_removed: float
    target_label: str


def importance_mask(heatmap: FloatArray, *, share: float = 0.2) -> FloatArray:
    """1 on the ``share`` of cells with the strongest evidence *for* the class, else 0."""
    evidence = np.maximum(heatmap, 0.0)
    if not np.any(evidence > 0):
        return np.zeros_like(heatmap, dtype=np.float32)
    k = max(1, int(round(share * evidence.size)))
    cut = np.partition(evidence.ravel(), -k)[-k]
    return ((evidence >= cut) & (evidence > 0)).astype(np.float32)


def listening_clips(model: ModelHandle, expl: Explanation, window_wave: FloatArray, *,
                    share: float = 0.2, floor: float = 0.05) -> ListeningClips:
    """The two clips for ``expl`` (an explanation of one audio window) and their scores."""
    from .preprocessing import audio

    spec = model.spec.input
    assert isinstance(spec, AudioInput)
    mask = importance_mask(expl.heatmap, share=share)
    kept = audio.invert_band_mask(window_wave, spec, mask, floor=floor)
    removed = audio.invert_band_mask(window_wave, spec, 1.0 - mask, floor=floor)
    waves = (window_wave, kept, removed)
    if spec.waveform:  # a waveform model hears the clips themselves
        p = model.predict(np.stack(waves)[:, None].astype(np.float32))[:, expl.target]
    else:
        p = model.predict(np.stack([audio.spectrogram(w, spec) for w in waves]))[:, expl.target]
    return ListeningClips(kept, removed, spec.sample_rate, share, float(p[0]), float(p[1]),
                          float(p[2]), expl.target_label)


def save_clips(clips: ListeningClips, base: Path) -> tuple[Path, Path]:
    """Write ``<base>_kept.wav`` and ``<base>_removed.wav`` (16-bit PCM)."""
    import soundfile as sf

    paths = (base.with_name(base.name + "_kept.wav"), base.with_name(base.name + "_removed.wav"))
    for path, wave in zip(paths, (clips.kept, clips.removed)):
        peak = float(np.abs(wave).max()) or 1.0
        sf.write(path, (wave / max(peak, 1.0)).astype(np.float32), clips.sample_rate,
                 subtype="PCM_16")
    return paths
