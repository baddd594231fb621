"""Threshold-free and matched-miss views of corpus v2's test split for the curve models:
per real test source, ROC AUC of its real clips against every test fake, and the false-alarm
rate at the threshold that gives each model the same overall test miss rate as audio-cnn-v2
at its own card threshold."""
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
clips, _ = load_clips(Path("data/audio_corpus_v2"))
out = {}
ref_miss = None
for mid in sys.argv[1:]:
    spec = config.model(mid)
    card = read_card(spec.weights)
    handle = load_saved(spec, spec.weights)
    fs, z = split_logits(handle, clips, "test", cache_dir=ROOT / "data" / "feature_cache")
    p = clip_probabilities(z, fs.clip, len(fs.clips), card.calibration.temperature)
    y = (fs.y_clip == spec.positive_index).astype(int)
    fake = p[y == 1]
    if ref_miss is None:  # the first model (audio-cnn-v2) at its own threshold
        ref_miss = float(np.mean(fake < card.calibration.threshold))
    thr = float(np.quantile(fake, ref_miss))
    row = {"threshold_at_matched_miss": thr, "miss": float(np.mean(fake < thr)),
           "false_alarms": float(np.mean(p[y == 0] >= thr)), "sources": {}}
    for src in sorted({c.source for c, t in zip(fs.clips, y) if t == 0}):
        sel = np.array([c.source == src and t == 0 for c, t in zip(fs.clips, y)])
        scores = np.concatenate([p[sel], fake])
        labels = np.concatenate([np.zeros(sel.sum()), np.ones(len(fake))])
        row["sources"][src] = {"n": int(sel.sum()), "auc_vs_all_fakes": roc_auc_score(labels, scores),
                               "false_alarms_at_matched_miss": float(np.mean(p[sel] >= thr))}
    out[mid] = row
    print(mid, json.dumps(row, indent=None, default=float))
Path("docs/audio-v3/curve_matched.json").write_text(json.dumps(
    {"reference_miss_rate": ref_miss, "models": out}, indent=1, default=float) + "\n")
