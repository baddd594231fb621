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

``--detector MODEL_ID`` measures a trained detector instead of an embedding (its clip
probabilities at its card's temperature, by the app's feature path): within-source AUC, and
**verdicts with a "cannot tell" band**: two thresholds chosen on validation so that at most
``--target`` of validation's real clips are called fake and at most ``--target`` of its fakes
are called real, and what those verdicts do on test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import equal_error_rate, roc_auc
from . import embeddings
from .data import load_clips


def within_source_auc(y: np.ndarray, s: np.ndarray, sources: np.ndarray) -> dict[str, float]:
    """ROC AUC of real against fake clips within each source that has both."""
    return {src: round(roc_auc(s[sources == src], y[sources == src]), 4)
            for src in sorted(set(sources)) if len(set(y[sources == src])) == 2}


def linear_probe(x: np.ndarray, y: np.ndarray, split: np.ndarray, *, c: float = 0.1
                 ) -> dict[str, Any]:
    """Fit on train, threshold on validation; scores of every clip and the split figures."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train = split == "train"
    scaler = StandardScaler().fit(x[train])
    clf = LogisticRegression(C=c, max_iter=5000, class_weight="balanced")
    clf.fit(scaler.transform(x[train]), y[train])
    s = clf.decision_function(scaler.transform(x))
    val, test = split == "validation", split == "test"
    val_eer, threshold = equal_error_rate(s[val], y[val])
    test_eer, _ = equal_error_rate(s[test], y[test])
    return {"scores": s, "threshold": threshold, "validation_eer": val_eer,
            "validation_auc": roc_auc(s[val], y[val]), "test_eer": test_eer,
            "test_auc": roc_auc(s[test], y[test])}


def two_thresholds(y: np.ndarray, p: np.ndarray, target: float) -> tuple[float, float]:
    """(t_real, t_fake) on validation: "fake" above t_fake (at most ``target`` of real clips
    there), "real" below t_real (at most ``target`` of fakes there), "cannot tell" between."""
    return (float(np.quantile(p[y == 1], target, method="lower")),
            float(np.quantile(p[y == 0], 1 - target, method="higher")))


def band_verdicts(y: np.ndarray, p: np.ndarray, t_real: float, t_fake: float) -> dict[str, float]:
    """What two thresholds do: coverage, how often each verdict is wrong, and the share of
    real clips called fake and of fakes called real."""
    fake = p > t_fake
    real = (p < t_real) & ~fake
    return {"coverage": float(np.mean(fake | real)),
            "fake_verdicts": int(fake.sum()), "fake_verdicts_wrong": float(np.mean(y[fake] == 0))
            if fake.any() else 0.0,
            "real_verdicts": int(real.sum()), "real_verdicts_wrong": float(np.mean(y[real] == 1))
            if real.any() else 0.0,
            "reals_called_fake": float(np.mean(fake[y == 0])),
            "fakes_called_real": float(np.mean(real[y == 1]))}


def detector_scores(model_id: str, config: list[Path], data: Path, cache_dir: Path
                    ) -> dict[str, tuple[np.ndarray, np.ndarray, list]]:
    """Per split (validation, test): (y, clip probability, clips) of a trained detector at its
    card's temperature."""
    from xai_platform.config import load_config
    from xai_platform.models.cards import read_card

    from ..weights import load_saved
    from .evaluate import clip_probabilities, split_logits

    spec = load_config(config).model(model_id)
    card = read_card(spec.weights)
    if card is None or card.calibration.temperature is None:
        raise SystemExit(f"'{model_id}' has no trained weights with a calibrated card.")
    handle = load_saved(spec, spec.weights)
    clips, _ = load_clips(data)
    out = {}
    for split in ("validation", "test"):
        fs, z = split_logits(handle, clips, split, cache_dir=cache_dir)
        p = clip_probabilities(z, fs.clip, len(fs.clips), card.calibration.temperature)
        out[split] = ((fs.y_clip == spec.positive_index).astype(int), p, fs.clips)
    return out


def detector_main(args: argparse.Namespace) -> int:
    scores = detector_scores(args.detector, args.config, args.data, args.cache_dir)
    yv, pv, _ = scores["validation"]
    y, p, clips = scores["test"]
    sources = np.array([c.source for c in clips])
    print(f"{args.detector}: test, within-source ROC AUC (real against the fakes reading its "
          "texts):")
    for src, auc in within_source_auc(y, p, sources).items():
        print(f"    {src:<12} {auc:.3f}")
    for target in args.target:
        t_real, t_fake = two_thresholds(yv, pv, target)
        v, t = band_verdicts(yv, pv, t_real, t_fake), band_verdicts(y, p, t_real, t_fake)
        print(f"  'cannot tell' between {t_real:.3f} and {t_fake:.3f} (validation errors <= "
              f"{target:.0%} each way; validation coverage {v['coverage']:.1%}): test coverage "
              f"{t['coverage']:.1%}; 'fake' verdicts {t['fake_verdicts']}, "
              f"{t['fake_verdicts_wrong']:.1%} of them real; 'real' verdicts "
              f"{t['real_verdicts']}, {t['real_verdicts_wrong']:.1%} of them fake; real clips "
              f"called fake {t['reals_called_fake']:.1%}, fakes called real "
              f"{t['fakes_called_real']:.1%}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.audio_probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/audio_corpus_v2"))
    parser.add_argument("--embedding", default="resemblyzer",
                        help="resemblyzer or detector:MODEL_ID (its pooled features)")
    parser.add_argument("--config", action="append", type=Path, default=[])
    parser.add_argument("--cache-dir", type=Path, default=Path("data/feature_cache"))
    parser.add_argument("--c", type=float, default=0.1, help="inverse L2 strength")
    parser.add_argument("--detector", default=None, metavar="MODEL_ID",
                        help="measure this trained detector instead of an embedding")
    parser.add_argument("--target", type=float, action="append", default=None,
                        help="--detector: the validation error bound of each verdict "
                             "(repeatable; default 0.05 and 0.10)")
    args = parser.parse_args(argv)
    if args.detector:
        args.target = args.target or [0.05, 0.10]
        return detector_main(args)
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
