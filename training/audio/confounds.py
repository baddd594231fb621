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

