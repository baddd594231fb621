"""Is there anything to learn across recording set-ups? Two measurements on an audio corpus.

    python -m training.audio_probe --data data/audio_corpus_v2 --embedding resemblyzer
    python -m training.audio_probe --data data/audio_corpus_v2 --embedding detector:audio-cnn-v2 \\
        --config config/research

1. **A linear probe on clip embeddings** (:mod:`training.audio.embeddings`; Resemblyzer's
   speaker encoder was trained on thousands of speakers and microphones, so if real and
   synthetic voices differ in a way that holds across set-ups, a linear read-out of it should
   find it): logistic regression (balanced classes) fitted on the train split, its threshold at
   the equal-error point of validation, test reported per real source and per generator.
2. **Within-source ROC AUC**: for each test source, its real clips against the synthetic clips
   reading its texts (which took the same storage trip). A low pooled AUC with high
   within-source AUCs would mean the scores shift by set-up (a calibration problem); low
   within-source AUCs mean the set-up hides what tells real from synthetic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import embeddings
from .data import load_clips


def eer_point(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """(EER, threshold at the equal-error point) of scores ``s`` for labels ``y`` (1: fake)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, s)
    k = int(np.argmin(np.abs((1 - tpr) - fpr)))
    return float((fpr[k] + 1 - tpr[k]) / 2), float(thr[k])


def within_source_auc(y: np.ndarray, s: np.ndarray, sources: np.ndarray) -> dict[str, float]:
    """ROC AUC of real against fake clips within each source that has both."""
    from sklearn.metrics import roc_auc_score

    return {src: round(float(roc_auc_score(y[sources == src], s[sources == src])), 4)
            for src in sorted(set(sources)) if len(set(y[sources == src])) == 2}


def linear_probe(x: np.ndarray, y: np.ndarray, split: np.ndarray, *, c: float = 0.1
                 ) -> dict[str, Any]:
    """Fit on train, threshold on validation; scores of every clip and the split figures."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    train = split == "train"
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(C=c, max_iter=5000, class_weight="balanced")
    clf.fit(scaler.transform(x[train]), y[train])
    s = clf.decision_function(scaler.transform(x))
    val, test = split == "validation", split == "test"
    val_eer, threshold = eer_point(y[val], s[val])
    test_eer, _ = eer_point(y[test], s[test])
    return {"scores": s, "threshold": threshold, "validation_eer": val_eer,
            "validation_auc": float(roc_auc_score(y[val], s[val])), "test_eer": test_eer,
            "test_auc": float(roc_auc_score(y[test], s[test]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.audio_probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/audio_corpus_v2"))
    parser.add_argument("--embedding", default="resemblyzer",
                        help="resemblyzer or detector:MODEL_ID (its pooled features)")
    parser.add_argument("--config", action="append", type=Path, default=[])
    parser.add_argument("--cache-dir", type=Path, default=Path("data/feature_cache"))
    parser.add_argument("--c", type=float, default=0.1, help="inverse L2 strength")
    args = parser.parse_args(argv)
    clips, _ = load_clips(args.data)
    embedder = embeddings.make(args.embedding, config=args.config, cache_dir=args.cache_dir)
    emb = embeddings.embed_cached(embedder, clips, args.cache_dir)
    by_path = {str(c.path): c for c in clips}
    kept = [by_path[p] for p in emb.paths]
    y = np.array([c.label == "fake" for c in kept], dtype=int)
    split = np.array([c.split for c in kept])
    source = np.array([c.source for c in kept])
    gen = np.array([c.generator if c.label == "fake" else "" for c in kept])
    r = linear_probe(emb.x, y, split, c=args.c)
    s, test = r["scores"], split == "test"
    called_fake = s >= r["threshold"]
    print(f"{embedder.name}: {len(kept)} clips ({emb.skipped} skipped); linear probe "
          f"validation EER {r['validation_eer']:.1%} (AUC {r['validation_auc']:.3f}), test EER "
          f"{r['test_eer']:.1%} (AUC {r['test_auc']:.3f})")
    print("  test, real clips called fake at the validation threshold, per source:")
    for src in sorted(set(source[test & (y == 0)])):
        m = test & (y == 0) & (source == src)
        print(f"    {src:<12} {called_fake[m].mean():6.1%} of {m.sum()}")
    print("  test, fakes let through, per generator:")
    for g in sorted(set(gen[test & (y == 1)])):
        m = test & (y == 1) & (gen == g)
        print(f"    {g:<12} {1 - called_fake[m].mean():6.1%} of {m.sum()}")
    print("  test, within-source ROC AUC (real against the fakes reading its texts):")
    for src, auc in within_source_auc(y[test], s[test], source[test]).items():
        print(f"    {src:<12} {auc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
