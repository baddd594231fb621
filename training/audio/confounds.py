"""The confound check: how well simple recording cues alone (length, noise floor, dynamic
range, spectrum) separate real from fake clips. A detector only needs to beat these to show it
uses more than the recording."""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xai_platform.preprocessing import audio

from .chain import TRIM_TOP_DB

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
# Corpus v2 also checks the level and the silence around the speech (leading silence alone
# gives about 15% EER on ASVspoof 2019 LA: Mueller et al. 2021, arXiv:2106.12914).
EXTRA_CUES = {
    "level_dbfs": "RMS level of the whole clip (dBFS)",
    "lead_silence_s": "silence before the speech (trimmed at the corpus's top_db)",
    "trail_silence_s": "silence after the speech",
}


def clip_cues(wave: np.ndarray, sr: int) -> dict[str, float]:
    """Simple recording statistics a detector could exploit instead of the voice."""
    hop = int(0.02 * sr)
    frames = wave[: len(wave) // hop * hop].reshape(-1, hop)
    level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    floor, top = np.percentile(level, 10), np.percentile(level, 90)
    power = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / sr)
    cum = np.cumsum(power) / max(power.sum(), 1e-12)
    lead, trail = _silences(wave, sr)
    return {"level_dbfs": float(10 * np.log10(np.mean(wave.astype(np.float64) ** 2) + 1e-12)),
            "lead_silence_s": lead, "trail_silence_s": trail,"duration_s": len(wave) / sr,
            "speech_s": len(audio.trim_silence(wave, sr, top_db=TRIM_TOP_DB)) / sr,
            "noise_floor_db": float(floor), "dynamic_range_db": float(top - floor),
            "active_fraction": float(np.mean(level > level.max() - 30)),
            "centroid_hz": float((freqs * power).sum() / max(power.sum(), 1e-12)),
            "rolloff95_hz": float(freqs[min(np.searchsorted(cum, 0.95), len(freqs) - 1)])}


def _silences(wave: np.ndarray, sr: int) -> tuple[float, float]:
    """Seconds of silence before and after the speech (librosa's trim at TRIM_TOP_DB)."""
    import librosa

    if not np.any(wave):
        return len(wave) / sr, 0.0
    frame = max(16, int(round(0.025 * sr)))  # as audio.trim_silence
    _, (start, end) = librosa.effects.trim(np.asarray(wave, np.float32), top_db=TRIM_TOP_DB,
                                           frame_length=frame, hop_length=max(1, frame // 4))
    return start / sr, (len(wave) - end) / sr


def confound_check(out: Path, rows: Sequence[dict[str, Any]] | None = None, *,
                   cues: dict[str, str] | None = None) -> dict[str, Any]:
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

    cues = cues or CUES
    result = {"method": "logistic regression on the cues, fitted on train, ROC AUC on test",
              "cues": cues, "auc_per_cue": {n: round(auc([n]), 3) for n in cues},
              "auc_recording_cues": round(auc(RECORDING_CUES), 3),
              "auc_all_cues": round(auc(list(cues)), 3)}
    for label in ("real", "fake"):
        sel = [r for r, y in zip(table["test"], labels["test"]) if y == (label == "fake")]
        result[f"test_median_{label}"] = {n: round(float(np.median([r[n] for r in sel])), 3)
                                          for n in cues}
    return result

