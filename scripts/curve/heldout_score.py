"""Verdicts of each model (its card's temperature and threshold) on data/audio_curve_heldout:
false alarms per real source, misses per source and generator, AUC per source."""
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from training.audio.data import load_clips
from training.audio.evaluate import clip_probabilities, split_logits
from training.weights import load_saved
from xai_platform.config import ROOT, load_config
from xai_platform.models.cards import read_card

config = load_config(["config/research", "scripts/curve/curve.yaml"])
clips, _ = load_clips(Path("data/audio_curve_heldout"))
out = {}
for mid in sys.argv[1:]:
    spec = config.model(mid)
    cal = read_card(spec.weights).calibration
    handle = load_saved(spec, spec.weights)
    fs, z = split_logits(handle, clips, "test", cache_dir=ROOT / "data" / "feature_cache")
    p = clip_probabilities(z, fs.clip, len(fs.clips), cal.temperature)
    y = (fs.y_clip == spec.positive_index).astype(int)
    called = p >= cal.threshold
    row = {}
    for src in sorted({c.source for c in fs.clips}):
        s = np.array([c.source == src for c in fs.clips])
        r = {"n_real": int((s & (y == 0)).sum()), "false_alarms": float(called[s & (y == 0)].mean()),
             "auc": float(roc_auc_score(y[s], p[s]))}
        for gen in ("world", "griffinlim"):
            g = s & np.array([c.generator == gen for c in fs.clips])
            r[f"miss_{gen}"] = float((~called[g]).mean())
            r[f"n_{gen}"] = int(g.sum())
        row[src] = r
    row["all"] = {"false_alarms": float(called[y == 0].mean()), "miss": float((~called[y == 1]).mean()),
                  "auc": float(roc_auc_score(y, p))}
    out[mid] = row
    print(mid, json.dumps(row))
Path("docs/audio-v3/curve_heldout.json").write_text(json.dumps(out, indent=1) + "\n")
