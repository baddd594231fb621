"""Verdicts of each model (its card's temperature and threshold) on data/audio_curve_heldout:
false alarms per real source, misses per source and generator, AUC per source.

    PYTHONPATH=. python scripts/curve/heldout_score.py [--out FILE.json] MODEL...
"""
import json
import sys
from pathlib import Path

import numpy as np

from training.audio.probe import detector_scores
from training.metrics import roc_auc
from xai_platform.config import ROOT, load_config
from xai_platform.models.cards import read_card

CONFIG = [Path("config/research"), Path("scripts/curve/curve.yaml")]


def test_scores(model_id: str, data: Path) -> tuple[np.ndarray, np.ndarray, list, float]:
    """(y, clip probability at the card's temperature, clips, the card's threshold) of a curve
    model on the test split of ``data``."""
    y, p, clips = detector_scores(model_id, CONFIG, data, ROOT / "data" / "feature_cache",
                                  splits=("test",))["test"]
    threshold = read_card(load_config(CONFIG).model(model_id).weights).calibration.threshold
    return y, p, clips, threshold


if __name__ == "__main__":
    args = sys.argv[1:]
    OUT = "docs/audio-v3/curve_heldout.json"
    if args[:1] == ["--out"]:
        OUT, args = args[1], args[2:]
    out = {}
    for mid in args:
        y, p, clips, threshold = test_scores(mid, Path("data/audio_curve_heldout"))
        called = p >= threshold
        row = {}
        for src in sorted({c.source for c in clips}):
            s = np.array([c.source == src for c in clips])
            r = {"n_real": int((s & (y == 0)).sum()),
                 "false_alarms": float(called[s & (y == 0)].mean()), "auc": roc_auc(p[s], y[s])}
            for gen in ("world", "griffinlim"):
                g = s & np.array([c.generator == gen for c in clips])
                r[f"miss_{gen}"] = float((~called[g]).mean())
                r[f"n_{gen}"] = int(g.sum())
            row[src] = r
        row["all"] = {"false_alarms": float(called[y == 0].mean()),
                      "miss": float((~called[y == 1]).mean()), "auc": roc_auc(p, y)}
        out[mid] = row
        print(mid, json.dumps(row))
    Path(OUT).write_text(json.dumps(out, indent=1) + "\n")
