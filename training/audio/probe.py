"""Is there anything to learn across recording set-ups? Two measurements on an audio corpus.

    python -m training.audio_probe --data data/audio_corpus_v2 --embedding resemblyzer
    python -m training.audio_probe --data data/audio_corpus_v2 --embedding detector:audio-cnn-v2 \\
        --config config/research
    python -m training.audio_probe --embedding revocode+resemblyzer --loso --out probe.json
    python -m training.audio_probe --data data/audio_corpus_v3tw --embedding whisper --loso \
        --c 0.001 --c 0.01 --c 0.1 --wild data/sources_wild --wild-sources 0ad,mfa

1. **A linear probe on clip embeddings** (:mod:`training.audio.embeddings`; Resemblyzer's
   speaker encoder was trained on thousands of speakers and microphones, so if real and
   synthetic voices differ in a way that holds across set-ups, a linear read-out of it should
   find it): logistic regression (balanced classes) fitted on the train split, its threshold at
   the equal-error point of validation, test reported per real source and per generator.
2. **Within-source ROC AUC**: for each test source, its real clips against the synthetic clips
   reading its texts (which took the same storage trip). A low pooled AUC with high
   within-source AUCs would mean the scores shift by set-up (a calibration problem); low
   within-source AUCs mean the set-up hides what tells real from synthetic.
3. With ``--loso``, the same probe on each leave-one-source-out fold
   (:func:`training.audio.splits.loso_rows`), as ``training.audio_loso`` does for a detector.

Embeddings (:mod:`training.audio.embeddings`): ``resemblyzer``, ``revocode`` (re-vocoding
consistency, :mod:`training.audio.revocode`), ``whisper[:LAYER,...]`` (Whisper-base's encoder,
:mod:`training.audio.whisper`), ``detector:MODEL_ID``; ``a+b`` concatenates. ``--wild DIR``
scores real clips that no split holds (recording set-ups no corpus source has) with every fit.

``--detector MODEL_ID`` measures a trained detector instead of an embedding (its clip
probabilities at its card's temperature, by the app's feature path): within-source AUC, and
**verdicts with a "cannot tell" band**: two thresholds chosen on validation so that at most
``--target`` of validation's real clips are called fake and at most ``--target`` of its fakes
are called real, and what those verdicts do on test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..metrics import equal_error_rate, roc_auc
from . import embeddings
from .data import load_clips


def within_source_auc(y: np.ndarray, s: np.ndarray, sources: np.ndarray) -> dict[str, float]:
    """ROC AUC of real against fake clips within each source that has both."""
    return {src: round(roc_auc(s[sources == src], y[sources == src]), 4)
            for src in sorted(set(sources)) if len(set(y[sources == src])) == 2}


def logistic(c: float) -> Any:
    """The probe's and the read-out's classifier, unfitted: a logistic regression with balanced
    classes and inverse L2 strength ``c``."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=float(c), max_iter=5000, class_weight="balanced")


def logistic_fits(z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray,
                  y_val: np.ndarray, c: float | Sequence[float]) -> list[tuple[float, float, Any]]:
    """(validation ROC AUC, C, fitted model) of :func:`logistic` for each inverse L2 strength
    in ``c``, in order (``max`` by AUC keeps the first best)."""
    fits = []
    for strength in np.atleast_1d(c):
        clf = logistic(strength).fit(z_train, y_train)
        fits.append((roc_auc(clf.decision_function(z_val), y_val), float(strength), clf))
    return fits


def linear_probe(x: np.ndarray, y: np.ndarray, split: np.ndarray, *,
                 c: float | Sequence[float] = 0.1, extra: np.ndarray | None = None
                 ) -> dict[str, Any]:
    """Fit on train, threshold on validation; scores of every clip and the split figures.
    Given several inverse L2 strengths ``c``, the one with the highest validation ROC AUC.
    ``extra``: more clips' vectors, scored by the same fit (``extra_scores``)."""
    from sklearn.preprocessing import StandardScaler

    train, val, test = split == "train", split == "validation", split == "test"
    scaler = StandardScaler().fit(x[train])
    z = scaler.transform(x)
    val_auc, chosen, clf = max(logistic_fits(z[train], y[train], z[val], y[val], c),
                               key=lambda fit: fit[0])
    s = clf.decision_function(z)
    s_extra = (clf.decision_function(scaler.transform(extra))
               if extra is not None and len(extra) else np.zeros(0))
    val_eer, threshold = equal_error_rate(s[val], y[val])
    test_eer, _ = equal_error_rate(s[test], y[test])
    return {"scores": s, "extra_scores": s_extra, "threshold": threshold, "c": chosen,
            "validation_eer": val_eer,
            "validation_auc": val_auc, "test_eer": test_eer,
            "test_auc": roc_auc(s[test], y[test])}


def two_thresholds(y: np.ndarray, p: np.ndarray, target: float) -> tuple[float, float]:
    """(t_real, t_fake) on validation: "fake" above t_fake (at most ``target`` of real clips
    there), "real" below t_real (at most ``target`` of fakes there), "cannot tell" between."""
    return (float(np.quantile(p[y == 1], target, method="lower")),
            float(np.quantile(p[y == 0], 1 - target, method="higher")))


def band_verdicts(y: np.ndarray, p: np.ndarray, t_real: float, t_fake: float) -> dict[str, float]:
    """What two thresholds do: coverage, how often each verdict is wrong, and the share of
    real clips called fake and of fakes called real (:func:`verdict_rates`)."""
    fake = p > t_fake
    return verdict_rates(y, fake, (p < t_real) & ~fake)


def verdict_rates(y: np.ndarray, fake: np.ndarray, real: np.ndarray) -> dict[str, Any]:
    """The figures of a "cannot tell" band, given which clips got each verdict (``fake`` and
    ``real``: (N,) bool, never both): coverage, how many verdicts of each kind and how often
    each is wrong, the share of real clips (y 0) called fake and of fakes (y 1) called real
    (0.0 where there is none to count)."""
    def share(mask: np.ndarray) -> float:
        return float(np.mean(mask)) if len(mask) else 0.0

    return {"coverage": float(np.mean(fake | real)),
            "fake_verdicts": int(fake.sum()), "fake_verdicts_wrong": share(y[fake] == 0),
            "real_verdicts": int(real.sum()), "real_verdicts_wrong": share(y[real] == 1),
            "reals_called_fake": share(fake[y == 0]), "fakes_called_real": share(real[y == 1])}


def detector_scores(model_id: str, config: list[Path], data: Path, cache_dir: Path, *,
                    splits: tuple[str, ...] = ("validation", "test"),
                    weights: Path | None = None
                    ) -> dict[str, tuple[np.ndarray, np.ndarray, list]]:
    """Per split (``splits``): (y, clip probability, clips) of a trained detector at its
    card's temperature. ``weights``: another weights file of the entry's architecture (a
    fold's), with its own card; default the entry's."""
    from xai_platform.config import load_config
    from xai_platform.models.cards import read_card

    from ..weights import load_saved
    from .evaluate import clip_probabilities, split_logits

    spec = load_config(config).model(model_id)
    weights = weights or spec.weights
    card = read_card(weights)
    if card is None or card.calibration.temperature is None:
        raise SystemExit(f"'{model_id}' has no trained weights with a calibrated card "
                         f"({weights}).")
    handle = load_saved(spec, weights)
    clips, _ = load_clips(data)
    out = {}
    for split in splits:
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


def embed_clips(names: str, clips: list, *, config: list[Path], cache_dir: Path
                ) -> tuple[list, np.ndarray, str]:
    """The clips that every embedding of ``names`` (``a`` or ``a+b+...``) could embed, their
    vectors side by side (K, D1 + D2 + ...), and a label."""
    parts, labels = [], []
    for name in names.split("+"):
        embedder = embeddings.make(name, config=config, cache_dir=cache_dir)
        emb = embeddings.embed_cached(embedder, clips, cache_dir)
        parts.append(dict(zip(emb.paths, emb.x)))
        labels.append(f"{embedder.name} ({emb.x.shape[1]} dims, {emb.skipped} skipped)")
    kept = [c for c in clips if all(str(c.path) in p for p in parts)]
    x = np.stack([np.concatenate([p[str(c.path)] for p in parts]) for c in kept])
    return kept, x.astype(np.float64), " + ".join(labels)


def split_report(kept: list, x: np.ndarray, *, c: float | Sequence[float] = 0.1,
                 wild: list | None = None, x_wild: np.ndarray | None = None
                 ) -> dict[str, Any]:
    """The linear probe on ``kept``'s own splits: EERs, test false alarms and misses at the
    validation threshold, per real source and generator, and within-source AUC on test.
    ``wild`` (real clips no split holds, vectors ``x_wild``): the share of each of their sources
    called fake at the validation threshold, and their ROC AUC against the test fakes."""
    y = np.array([k.label == "fake" for k in kept], dtype=int)
    split = np.array([k.split for k in kept])
    source = np.array([k.source for k in kept])
    gen = np.array([k.generator if k.label == "fake" else "" for k in kept])
    r = linear_probe(x, y, split, c=c, extra=x_wild)
    s, test = r["scores"], split == "test"
    fake = s >= r["threshold"]
    out = {k: round(float(v), 4) for k, v in r.items() if k not in ("scores", "extra_scores")}
    out["n_test_real"] = int((test & (y == 0)).sum())
    out["n_test_fake"] = int((test & (y == 1)).sum())
    out["false_alarms"] = round(float(fake[test & (y == 0)].mean()), 4)
    out["misses"] = round(float(1 - fake[test & (y == 1)].mean()), 4)
    out["called_fake_by_source"] = {
        src: round(float(fake[test & (y == 0) & (source == src)].mean()), 4)
        for src in sorted(set(source[test & (y == 0)]))}
    out["let_through_by_generator"] = {
        g: round(float(1 - fake[test & (y == 1) & (gen == g)].mean()), 4)
        for g in sorted(set(gen[test & (y == 1)]))}
    out["within_source_auc"] = within_source_auc(y[test], s[test], source[test])
    if wild:
        sw, wild_source = r["extra_scores"], np.array([k.source for k in wild])
        out["wild_called_fake"] = {
            src: round(float((sw[wild_source == src] >= r["threshold"]).mean()), 4)
            for src in sorted(set(wild_source))}
        out["wild_auc"] = round(roc_auc(np.r_[sw, s[test & (y == 1)]],
                                        np.r_[np.zeros(len(sw)),
                                              np.ones(int((test & (y == 1)).sum()))]), 4)
    return out


def loso_report(data: Path, kept: list, x: np.ndarray, *, c: float | Sequence[float] = 0.1,
                wild: list | None = None, x_wild: np.ndarray | None = None,
                sources: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The linear probe on each leave-one-source-out fold of the corpus
    (:func:`training.audio.splits.loso_rows`: trained on the other sources' train and test
    clips, threshold on their validation clips, tested on the held-out source)."""
    from .corpus_v2 import read_metadata
    from .splits import loso_rows, loso_sources

    rows = read_metadata(data / "metadata.csv")
    out = []
    for src in sources or loso_sources(rows):
        fold = {str(data / r["path"]): r["split"] for r in loso_rows(rows, src)}
        fold_clips = [dataclasses.replace(k, split=fold[str(k.path)]) for k in kept]
        r = split_report(fold_clips, x, c=c, wild=wild, x_wild=x_wild)
        r = {"source": src, **{k: r[k] for k in (
            "n_test_real", "n_test_fake", "c", "validation_eer", "validation_auc", "test_eer",
            "test_auc", "false_alarms", "misses", "threshold", "let_through_by_generator",
            "wild_called_fake", "wild_auc") if k in r}}
        out.append(r)
    return out


def wild_clips(root: Path, sources: str | None = None) -> list:
    """The real clips of a ``training.audio_sources_v3`` folder (``manifest.jsonl``), as
    :class:`~training.audio.data.Clip` of split ``wild``."""
    from .data import Clip
    from .sources_v3 import read_manifest

    wanted = set(sources.split(",")) if sources else None
    return [Clip(path=Path(root) / r["path"], label="real", split="wild", source=r["source"],
                 language=r.get("language", ""), speaker=r.get("speaker", ""))
            for r in read_manifest(root) if wanted is None or r["source"] in wanted]


def print_report(label: str, r: dict[str, Any]) -> None:
    print(f"{label}: linear probe validation EER {r['validation_eer']:.1%} (AUC "
          f"{r['validation_auc']:.3f}), test EER {r['test_eer']:.1%} (AUC {r['test_auc']:.3f}); "
          f"at the validation threshold, test false alarms {r['false_alarms']:.1%} of "
          f"{r['n_test_real']}, misses {r['misses']:.1%} of {r['n_test_fake']}")
    print("  test, real clips called fake at the validation threshold, per source:")
    for src, v in r["called_fake_by_source"].items():
        print(f"    {src:<12} {v:6.1%}")
    print("  test, fakes let through, per generator:")
    for g, v in r["let_through_by_generator"].items():
        print(f"    {g:<12} {v:6.1%}")
    print("  test, within-source ROC AUC (real against the fakes reading its texts):")
    for src, auc in r["within_source_auc"].items():
        print(f"    {src:<12} {auc:.3f}")
    if "wild_called_fake" in r:
        print(f"  real clips of no split (--wild): ROC AUC against the test fakes "
              f"{r['wild_auc']:.3f}; called fake at the validation threshold: "
              + ", ".join(f"{k} {v:.1%}" for k, v in r["wild_called_fake"].items()))


def print_loso(folds: list[dict[str, Any]]) -> None:
    print("  leave one real source out (threshold on the fold's validation clips):")
    gens = sorted({g for f in folds for g in f["let_through_by_generator"]})
    print(f"    {'held out':<11} {'real/fake':>9} {'C':>6} {'val EER':>8} {'test EER':>8} {'AUC':>6} "
          f"{'FA':>6} {'miss':>6}  let through: " + " ".join(f"{g[:8]:>8}" for g in gens))
    for f in folds:
        cells = " ".join(f"{f['let_through_by_generator'][g]:8.0%}"
                         if g in f["let_through_by_generator"] else " " * 8 for g in gens)
        print(f"    {f['source']:<11} {f['n_test_real']:>4}/{f['n_test_fake']:<4} "
              f"{f['c']:6g} {f['validation_eer']:8.1%} {f['test_eer']:8.1%} {f['test_auc']:6.3f} "
              f"{f['false_alarms']:6.1%} {f['misses']:6.1%}  {' ' * 13}{cells}")
    print(f"    mean held-out EER {np.mean([f['test_eer'] for f in folds]):.1%}, AUC "
          f"{np.mean([f['test_auc'] for f in folds]):.3f}")
    if folds and "wild_auc" in folds[0]:
        print("  real clips of no split (--wild), per fold: ROC AUC against the fold's test "
              "fakes; called fake at the fold's threshold")
        for f in folds:
            print(f"    {f['source']:<11} AUC {f['wild_auc']:.3f}; "
                  + ", ".join(f"{k} {v:.1%}" for k, v in f["wild_called_fake"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.audio_probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/audio_corpus_v2"))
    parser.add_argument("--embedding", default="resemblyzer",
                        help="resemblyzer, revocode[:GROUP,...] or detector:MODEL_ID (its "
                             "pooled features); a+b puts two side by side")
    parser.add_argument("--config", action="append", type=Path, default=[])
    parser.add_argument("--cache-dir", type=Path, default=Path("data/feature_cache"))
    parser.add_argument("--c", type=float, action="append", default=None,
                        help="inverse L2 strength (default 0.1); repeated, the one with the "
                             "highest validation ROC AUC (per fold with --loso)")
    parser.add_argument("--loso", action="store_true",
                        help="also fit and test the probe on each leave-one-source-out fold")
    parser.add_argument("--loso-sources", default=None,
                        help="--loso: only these held-out sources (comma-separated)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the figures to this JSON file")
    parser.add_argument("--wild", type=Path, default=None, metavar="DIR",
                        help="real clips no split holds (a training.audio_sources_v3 folder: "
                             "manifest.jsonl), scored by every fit")
    parser.add_argument("--wild-sources", default=None,
                        help="--wild: only these sources (comma-separated)")
    parser.add_argument("--detector", default=None, metavar="MODEL_ID",
                        help="measure this trained detector instead of an embedding")
    parser.add_argument("--target", type=float, action="append", default=None,
                        help="--detector: the validation error bound of each verdict "
                             "(repeatable; default 0.05 and 0.10)")
    args = parser.parse_args(argv)
    args.c = args.c or [0.1]
    if args.detector:
        args.target = args.target or [0.05, 0.10]
        return detector_main(args)
    clips, _ = load_clips(args.data)
    kept, x, label = embed_clips(args.embedding, clips, config=args.config,
                                 cache_dir=args.cache_dir)
    wild, x_wild = (embed_clips(args.embedding, wild_clips(args.wild, args.wild_sources),
                                config=args.config, cache_dir=args.cache_dir)[:2]
                    if args.wild else (None, None))
    result: dict[str, Any] = {"embedding": args.embedding, "clips": len(kept),
                              "c_candidates": args.c,
                              **split_report(kept, x, c=args.c, wild=wild, x_wild=x_wild)}
    print_report(f"{label}: {len(kept)} clips", result)
    if args.loso:
        result["loso"] = loso_report(args.data, kept, x, c=args.c, wild=wild, x_wild=x_wild,
                                     sources=args.loso_sources.split(",")
                                     if args.loso_sources else None)
        print_loso(result["loso"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
