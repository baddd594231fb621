"""Threshold-free and matched-miss views of corpus v2's test split for the curve models:
per real test source, ROC AUC of its real clips against every test fake, and the false-alarm
rate at the threshold that gives each model the same overall test miss rate as audio-cnn-v2
at its own card threshold, and each generator's misses there.

    PYTHONPATH=. python scripts/curve/matched.py [--out FILE.json] audio-cnn-v2 MODEL...
"""
import json
import sys
from pathlib import Path

import numpy as np

from scripts.curve.heldout_score import CONFIG, test_scores
from training.metrics import roc_auc

args = sys.argv[1:]
OUT = "docs/audio-v3/curve_matched.json"
if args[:1] == ["--out"]:
    OUT, args = args[1], args[2:]
out = {}
ref_miss = None
for mid in args:
    y, p, clips, threshold = test_scores(mid, Path("data/audio_corpus_v2"))
    fake = p[y == 1]
    if ref_miss is None:  # the first model (audio-cnn-v2) at its own threshold
        ref_miss = float(np.mean(fake < threshold))
    thr = float(np.quantile(fake, ref_miss))
    row = {"threshold_at_matched_miss": thr, "miss": float(np.mean(fake < thr)),
           "false_alarms": float(np.mean(p[y == 0] >= thr)), "sources": {}}
    for src in sorted({c.source for c, t in zip(clips, y) if t == 0}):
        sel = np.array([c.source == src and t == 0 for c, t in zip(clips, y)])
        scores = np.concatenate([p[sel], fake])
        labels = np.concatenate([np.zeros(sel.sum()), np.ones(len(fake))])
        row["sources"][src] = {"n": int(sel.sum()), "auc_vs_all_fakes": roc_auc(scores, labels),
                               "false_alarms_at_matched_miss": float(np.mean(p[sel] >= thr))}
    for gen in sorted({c.generator for c, t in zip(clips, y) if t == 1}):
        sel = np.array([c.generator == gen and t == 1 for c, t in zip(clips, y)])
        row.setdefault("generators", {})[gen] = {
            "n": int(sel.sum()), "miss_at_matched_miss": float(np.mean(p[sel] < thr))}
    out[mid] = row
    print(mid, json.dumps(row, indent=None, default=float))
Path(OUT).write_text(json.dumps(
    {"reference_miss_rate": ref_miss, "models": out}, indent=1, default=float) + "\n")
