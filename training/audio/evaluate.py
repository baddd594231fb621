"""Scoring audio detectors as the app does (a clip is the mean of its windows' calibrated
probabilities): per-split reports with per-language and per-generator breakdowns, the
degradations of the robustness check, and which mel bands explanations point at."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import soundfile as sf

from xai_platform.config import ModelSpec
from xai_platform.modalities import get_modality
from xai_platform.modalities.audio import AudioInput
from xai_platform.models.cards import ExplanationSummary
from xai_platform.preprocessing import audio

from ..metrics import binary_report, equal_error_rate, positive_logit, rates_at, sigmoid
from .features import FeatureSet, Transform, feature_set


def _encode_round_trip(wave: np.ndarray, sr: int, *, fmt: str, subtype: str,
                       level: float) -> np.ndarray:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, np.float32), sr, format=fmt, subtype=subtype,
             compression_level=level)
    buf.seek(0)
    out, _ = sf.read(buf, dtype="float32")
    return np.asarray(out, np.float32)


def telephone_mp3(wave: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """8 kHz, loudness -23 dBFS, MP3 at 8 kHz (about 24 kbit/s); the feature path resamples back."""
    wave = audio.normalize_loudness(audio.resample(wave, sr, 8000), target_dbfs=-23.0)
    return _encode_round_trip(wave, 8000, fmt="MP3", subtype="MPEG_LAYER_III", level=0.6), 8000


def low_vorbis(wave: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """Loudness -30 dBFS and the lowest-quality Ogg Vorbis at 16 kHz."""
    wave = audio.normalize_loudness(audio.resample(wave, sr, 16000), target_dbfs=-30.0)
    return _encode_round_trip(wave, 16000, fmt="OGG", subtype="VORBIS", level=1.0), 16000


DEGRADATIONS: dict[str, tuple[Transform, str]] = {
    "telephone_mp3": (telephone_mp3, "resampled to 8 kHz, loudness -23 dBFS, MP3 at 8 kHz "
                                     "(about 24 kbit/s), back to 16 kHz"),
    "low_vorbis": (low_vorbis, "loudness -30 dBFS, Ogg Vorbis at its lowest quality"),
}



def window_logits(handle: Any, x: np.ndarray) -> np.ndarray:
    """(N,) positive-class logit of every window (before calibration)."""
    return positive_logit(handle.spec, handle.scores(x, batch_size=64))


def clip_probabilities(z: np.ndarray, owner: np.ndarray, n_clips: int,
                       temperature: float) -> np.ndarray:
    """The app's verdict rule: the mean over a clip's windows of sigmoid(logit / T)."""
    p = sigmoid(z / temperature)
    total = np.bincount(owner, weights=p, minlength=n_clips)
    count = np.bincount(owner, minlength=n_clips)
    return total / np.maximum(count, 1)


def as_scores(spec: ModelSpec, p_clip: np.ndarray, temperature: float) -> np.ndarray:
    """(C, 2) scores whose positive logit / T gives back ``p_clip`` (for binary_report)."""
    p = np.clip(p_clip, 1e-7, 1 - 1e-7)
    z = temperature * np.log(p / (1 - p))
    scores = np.zeros((len(z), 2))
    pos = spec.positive_index
    if spec.output == "sigmoid":
        scores[:, pos], scores[:, 1 - pos] = z, -z
    else:
        scores[:, pos] = z
    return scores


def report(spec: ModelSpec, z: np.ndarray, fs: FeatureSet, *, temperature: float,
           threshold: float, breakdown: bool = False) -> dict[str, Any]:
    """Clip-level figures for one split (see :func:`training.metrics.binary_report`)."""
    pos = spec.positive_index
    y = (fs.y_clip == pos).astype(int)
    p = clip_probabilities(z, fs.clip, len(fs.clips), temperature)
    out = binary_report(spec, as_scores(spec, p, temperature), y,
                               temperature=temperature, threshold=threshold)
    if breakdown:
        out["by_language"] = {}
        for lang in sorted({c.language for c in fs.clips}):
            sel = np.array([c.language == lang for c in fs.clips])
            row: dict[str, Any] = {"n_real": int((sel & (y == 0)).sum()),
                                   "n_fake": int((sel & (y == 1)).sum()),
                                   **rates_at(p[sel], y[sel], threshold)}
            if len(np.unique(y[sel])) == 2:
                row["eer"] = equal_error_rate(p[sel], y[sel])[0]
            out["by_language"][lang] = row
        out["by_generator"] = {}
        for gen in sorted({c.generator for c in fs.clips}):
            sel = np.array([c.generator == gen for c in fs.clips])
            rates = rates_at(p[sel], y[sel], threshold)
            key = "false_alarm_rate" if y[sel].max() == 0 else "miss_rate"
            out["by_generator"][gen] = {"n": int(sel.sum()), key: rates[key]}
    return out


def speech_seconds(clips: Sequence[Any], spec: AudioInput) -> np.ndarray:
    """(N,) seconds of speech Silero VAD finds in each clip as the app loads it for a model
    with input ``spec``: what a card's short-speech band is chosen by."""
    from xai_platform.preprocessing.vad import detect_speech

    out = np.empty(len(clips))
    for i, clip in enumerate(clips):
        windows = audio.load_for_model(clip.path, spec)
        out[i] = detect_speech(windows.waveform, windows.sample_rate).seconds
    return out


def band_calls(p: np.ndarray, below: float | np.ndarray, above: float | np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(fake, real): the clips a "cannot tell" band calls positive (at or above ``above``) and
    negative (at or below ``below``, not positive); the rest get no verdict. The app's rule
    (:class:`xai_platform.explanation.Prediction`)."""
    fake = p >= above
    return fake, (p <= below) & ~fake


def band_report(spec: ModelSpec, z: np.ndarray, fs: FeatureSet, *, temperature: float,
                below: float | np.ndarray, above: float | np.ndarray,
                keep: Sequence[str] = ()) -> dict[str, Any]:
    """What a "cannot tell" band does on one split's clips (the app's rule: the mean of the
    window probabilities; a verdict only at or above ``above`` or at or below ``below``, each
    one value or one per clip):
    coverage, how often each verdict is wrong, and per source (real clips: called fake, no
    verdict) and per generator (fakes: called real, no verdict); ``keep``: :func:`band_rates`'
    scores to keep."""
    pos = spec.positive_index
    p = clip_probabilities(z, fs.clip, len(fs.clips), temperature)
    return band_rates(p, (fs.y_clip == pos).astype(int), fs.clips, below=below, above=above,
                      keep=keep)


def band_rates(p: np.ndarray, y: np.ndarray, clips: Sequence[Any], *,
               below: float | np.ndarray, above: float | np.ndarray,
               keep: Sequence[str] = ()) -> dict[str, Any]:
    """:func:`band_report`'s figures from the clips' calibrated probabilities ``p`` and labels
    ``y`` (1: the positive class). ``keep`` "real" adds ``real_scores`` (each source's real
    clips' probabilities, sorted, to 4 decimals), "fake" ``fake_scores`` (each generator's
    fakes'): from these the app says how often such clips reach an input's score
    (:class:`xai_platform.explanation.ScoreShares`)."""
    from .probe import verdict_rates

    fake, real = band_calls(p, below, above)
    out = verdict_rates(y, fake, real)
    sources = np.array([c.source for c in clips], dtype=object)
    generators = np.array([c.generator for c in clips], dtype=object)
    out["by_source"] = {}
    for source in sorted({s for s, lab in zip(sources, y) if lab == 0 and s}):
        sel = (sources == source) & (y == 0)
        out["by_source"][source] = {"n": int(sel.sum()), "called_fake": float(fake[sel].mean()),
                                    "cannot_tell": float((~fake & ~real)[sel].mean())}
    out["by_generator"] = {}
    for gen in sorted({g for g, lab in zip(generators, y) if lab == 1}):
        sel = (generators == gen) & (y == 1)
        out["by_generator"][gen] = {"n": int(sel.sum()), "called_real": float(real[sel].mean()),
                                    "cannot_tell": float((~fake & ~real)[sel].mean())}
    for kind, label, names, groups in (("real", 0, sources, "by_source"),
                                       ("fake", 1, generators, "by_generator")):
        if kind in keep:
            out[f"{kind}_scores"] = {
                name: sorted(round(float(v), 4) for v in p[(names == name) & (y == label)])
                for name in out[groups]}
    return out


def split_logits(handle: Any, clips: Sequence[Any], split: str, *, cache_dir: Any
                 ) -> tuple[FeatureSet, np.ndarray]:
    """One split's windows by the app's feature path (cached) and their positive-class logits."""
    fs = feature_set(clips, handle.spec, split, cache_dir=cache_dir)
    return fs, window_logits(handle, fs.x)


def score_split(handle: Any, clips: Sequence[Any], split: str, *, temperature: float,
                threshold: float, cache_dir: Any) -> dict[str, Any]:
    """A saved model's figures on one split of a corpus at a given calibration (usually its
    card's), with the per-language and per-generator breakdown: features by the app's path
    (cached), window logits, clip verdicts."""
    fs, z = split_logits(handle, clips, split, cache_dir=cache_dir)
    return report(handle.spec, z, fs, temperature=temperature, threshold=threshold,
                  breakdown=True)


def band_summary(handle: Any, fs: FeatureSet, z: np.ndarray, *, methods: Sequence[str],
                 n_clips: int, seed: int, top: int = 5) -> ExplanationSummary:
    """Which mel bands the explanations point at, on up to ``n_clips`` test clips (half real,
    half fake), each explained on its most suspicious window for its true class: attribution
    (positive part) summed over time per band, normalised per clip, averaged."""
    from xai_platform import explainers
    from xai_platform.visualization.readouts import varies_with_frequency

    spec = handle.spec
    centres = audio.band_centers_hz(spec.input)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for cls in range(len(spec.labels)):
        ids = np.flatnonzero(fs.y_clip == cls)
        picked.extend(rng.choice(ids, size=min(len(ids), n_clips // 2), replace=False).tolist())
    out: dict[str, Any] = {}
    for method in methods:
        profiles: dict[str, list[np.ndarray]] = {label: [] for label in spec.labels}
        start = time.time()
        for k, ci in enumerate(picked):
            windows = np.flatnonzero(fs.clip == ci)
            w = windows[int(np.argmax(z[windows]))]
            target = int(fs.y_clip[ci])
            params = {"n_steps": 16} if method == "integrated_gradients" else None
            model, x = handle, fs.x[w]
            if spec.input.waveform:  # explained on the window's log-mel, as the app does
                x = audio.spectrogram(fs.x[w][0], spec.input)
                model = get_modality(spec.modality).explained_model(
                    handle, x, {"window_wave": fs.x[w][0]})
            heat = explainers.run(method, model, x, target=target, params=params,
                                  seed=seed).attribution.heatmap
            band = np.maximum(heat, 0).sum(axis=1)
            # a map over time only (Grad-CAM from a 1-D layer) is flat over the bands
            if band.sum() > 0 and varies_with_frequency(heat):
                profiles[spec.labels[target]].append(band / band.sum())
            sys.stderr.write(f"\r  explaining with {method}: {k + 1}/{len(picked)} "
                             f"[{time.time() - start:.0f} s]   ")
        sys.stderr.write("\n")
        result: dict[str, Any] = {}
        for label, rows in profiles.items():
            if not rows:
                continue
            mean = np.mean(rows, axis=0)
            order = np.argsort(mean)[::-1][:top]
            result[label] = {
                "n": len(rows),
                "top_bands": [{"band": int(b), "centre_hz": round(float(centres[b])),
                               "share": round(float(mean[b]), 4)} for b in order],
                "share_below_1khz": round(float(mean[centres < 1000].sum()), 3),
                "share_1_to_4khz": round(float(mean[(centres >= 1000) & (centres < 4000)].sum()), 3),
                "share_above_4khz": round(float(mean[centres >= 4000].sum()), 3),
            }
        out[method] = result
    return ExplanationSummary(n_clips=len(picked), target="each clip's true class",
                              window="the clip's most suspicious window (as the app picks)",
                              methods=out)

