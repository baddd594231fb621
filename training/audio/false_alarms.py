"""How often detectors call real speech from never-heard recording set-ups fake, the way the
app answers (per source and language), and the command line of the extraction.

    python -m training.audio_sources_v3 extract --raw data/sources_v3/raw --out data/sources_v3
    python -m training.audio_sources_v3 score --data data/sources_v3 --config config/research \\
        --model audio-cnn --model audio-cnn-v2 --per-group 200 --out docs/audio-v3/false_alarms

Each clip goes through the app's own path (:func:`xai_platform.pipeline.prepare` and
:func:`~xai_platform.pipeline.analyse`: decode, speech check, windows, calibrated window
probabilities, the mean against the card's threshold *or* the segment rule, the familiarity
check). A clip is a false alarm when the verdict is "fake"; clips the speech check refuses
(too little speech) and verdicts withheld as unfamiliar are counted apart, and the false-alarm
share is of the clips that got a verdict. ``--per-group`` caps the clips of each source and
language (seeded sample) to keep the run short.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import roc_auc
from .sources_v3 import READERS, TRAINABLE, extract, find_recordings, read_manifest


def sample_rows(rows: Sequence[dict[str, Any]], per_group: int | None, *, seed: int = 0
                ) -> list[dict[str, Any]]:
    """At most ``per_group`` rows of each (source, language), drawn with ``seed``; in the
    manifest's order."""
    if not per_group:
        return list(rows)
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["source"], r["language"]), []).append(i)
    keep: set[int] = set()
    for idx in groups.values():
        keep.update(idx if len(idx) <= per_group
                    else rng.choice(idx, size=per_group, replace=False).tolist())
    return [r for i, r in enumerate(rows) if i in keep]


def verdicts(model: Any, rows: Sequence[dict[str, Any]], root: Path, settings: Any, *,
             log: Any = None) -> list[dict[str, Any]]:
    """The app's answer for each clip: ``verdict`` (a label, ``cannot tell`` inside a model's
    band, ``refused`` when the input is refused, e.g. too little speech), ``withheld``, the
    mean positive probability ``p`` and ``segment_only``: called positive by the segment rule
    alone."""
    from xai_platform.errors import InputError
    from xai_platform.pipeline import analyse, prepare

    out, start = [], time.time()
    pos = model.spec.positive_index
    for i, r in enumerate(rows):
        try:
            prepared = prepare(Path(root) / r["path"], model.spec, settings=settings)
            pred = analyse(model, prepared, settings=settings).prediction
            p = float(pred.probabilities[pos])
            out.append({"verdict": "cannot tell" if pred.undecided else pred.label,
                        "withheld": bool(pred.withheld), "p": p,
                        "segment_only": bool(pred.segments) and p < (pred.threshold or 0.5)})
        except InputError as exc:
            out.append({"verdict": "refused", "withheld": False, "p": None,
                        "segment_only": False, "reason": str(exc)[:120]})
        if log and ((i + 1) % 200 == 0 or i + 1 == len(rows)):
            log(f"\r  {model.spec.id}: {i + 1}/{len(rows)} clips [{time.time() - start:.0f} s]")
    return out


def tally(rows: Sequence[dict[str, Any]], answers: Sequence[dict[str, Any]], positive: str,
          keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per value of ``keys`` joined by "/": clips, refused, withheld, and the share called
    ``positive`` among the clips given a verdict (withheld ones counted by their would-be
    verdict in ``fake_incl_withheld``)."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault("/".join(str(r[k]) for k in keys), []).append(i)
    out = {}
    for name, idx in sorted(groups.items()):
        a = [answers[i] for i in idx]
        judged = [x for x in a if x["verdict"] != "refused"]
        given = [x for x in judged if not x["withheld"]]
        out[name] = {
            "n": len(a), "refused": len(a) - len(judged),
            "withheld": len(judged) - len(given),
            "fake": (sum(x["verdict"] == positive for x in given) / len(given)) if given else None,
            "fake_incl_withheld": (sum(x["verdict"] == positive for x in judged) / len(judged))
            if judged else None,
            # fake only through the segment rule (the mean stayed under the threshold)
            "by_segment_rule": sum(x["segment_only"] for x in given),
            # no verdict: inside the model's "cannot tell" band (counted as not called fake)
            "cannot_tell": sum(x["verdict"] == "cannot tell" for x in given),
        }
    return out


def against_fakes(p_real: Sequence[float], p_fake: Sequence[float], *,
                  let_through: float = 0.3) -> dict[str, Any]:
    """Real clips against a set of fakes, free of the card's threshold (which validation chose,
    on other set-ups): the ROC AUC (1: every fake scores above every real clip), and the share
    of real clips called fake at the threshold that lets ``let_through`` of the fakes through."""
    real, fake = np.asarray(p_real, float), np.asarray(p_fake, float)
    threshold = float(np.quantile(fake, let_through))
    return {"n_fakes": int(len(fake)),
            "roc_auc": roc_auc(np.r_[real, fake], np.r_[np.zeros(len(real)), np.ones(len(fake))]),
            "let_through": let_through, "threshold": threshold,
            "fake": float((real >= threshold).mean())}


def fold_fakes(fold: Path) -> list[dict[str, Any]]:
    """The test split's fakes of a corpus or leave-one-source-out fold (its ``metadata.csv``;
    paths relative to ``fold``, as :func:`verdicts` reads them with ``root=fold``)."""
    from .corpus_v2 import read_metadata

    return [r for r in read_metadata(fold / "metadata.csv")
            if r["split"] == "test" and r["label"] == "fake"]


def score(root: Path, model_ids: Sequence[str], configs: Sequence[str], *,
          per_group: int | None, seed: int = 0, sources: Sequence[str] | None = None,
          against: Path | None = None) -> dict[str, Any]:
    """Every model's answers on the sampled clips, tallied per source and per source and
    language; the models are loaded the way the app loads them (config, weights, card).
    ``against``: a corpus or fold whose test fakes every model scores too, for
    :func:`against_fakes` over all the real clips."""
    from xai_platform.config import load_config
    from xai_platform.models.manager import ModelManager

    config = load_config(configs)
    manager = ModelManager(config, device="cpu")
    rows = read_manifest(root)
    if sources:
        rows = [r for r in rows if r["source"] in set(sources)]
    rows = sample_rows(rows, per_group, seed=seed)
    fakes = fold_fakes(against) if against is not None else []
    result: dict[str, Any] = {"data": str(root), "per_group": per_group, "seed": seed,
                              "n_clips": len(rows), "models": {},
                              **({"against": str(against)} if against is not None else {})}
    for mid in model_ids:
        model = manager.get(mid)
        positive = model.spec.labels[model.spec.positive_index]
        answers = verdicts(model, rows, root, config.app,
                           log=lambda m: (sys.stderr.write(m), sys.stderr.flush()))
        sys.stderr.write("\n")
        result["models"][mid] = {
            "threshold": model.calibration.threshold, "positive": positive,
            "overall": tally(rows, answers, positive, ())[""],
            "by_source": tally(rows, answers, positive, ("source",)),
            "by_source_language": tally(rows, answers, positive, ("source", "language")),
            "clip_fields": ["path", "verdict", "p", "segment_only"],
            "clips": [[r["path"], a["verdict"], None if a["p"] is None else round(a["p"], 4),
                       a["segment_only"]] for r, a in zip(rows, answers)],
        }
        if fakes:
            fake_answers = verdicts(model, fakes, against, config.app)
            result["models"][mid]["against"] = against_fakes(
                [a["p"] for a in answers if a["p"] is not None],
                [a["p"] for a in fake_answers if a["p"] is not None])
    return result


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def markdown(result: dict[str, Any]) -> str:
    """Tables: real clips called fake per source (one column per model), then per source and
    language."""
    models = list(result["models"])
    lines = [f"Real clips called fake, the app's verdict at each model's own threshold "
             f"({result['n_clips']} clips, at most {result['per_group']} per source and "
             f"language, seed {result['seed']}); refused: too little speech for the app; "
             "cannot tell: inside the model's band, no verdict (not called fake).", ""]
    for key, title in (("by_source", "source"), ("by_source_language", "source / language")):
        groups = list(result["models"][models[0]][key])
        lines += [f"| {title} | clips | " + " | ".join(f"`{m}`" for m in models) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in models) + " |"]
        for g in groups:
            first = result["models"][models[0]][key][g]
            cells = []
            for m in models:
                t = result["models"][m][key][g]
                extra = [f"{t['refused']} refused"] if t["refused"] else []
                extra += [f"{t['withheld']} withheld"] if t["withheld"] else []
                extra += [f"{t['cannot_tell']} cannot tell"] if t.get("cannot_tell") else []
                cells.append(_pct(t["fake"]) + (f" ({', '.join(extra)})" if extra else ""))
            lines.append(f"| {g} | {first['n']} | " + " | ".join(cells) + " |")
        overall = [_pct(result["models"][m]["overall"]["fake"]) for m in models]
        lines += [f"| all | {result['n_clips']} | " + " | ".join(overall) + " |", ""]
    if "against" in result:
        a = [result["models"][m]["against"] for m in models]
        lines += [f"Against the test fakes of `{result['against']}` ({a[0]['n_fakes']} clips), "
                  "free of the cards' thresholds: ROC AUC of every real clip here against "
                  "them, and the real clips called fake at the threshold that lets "
                  f"{a[0]['let_through']:.0%} of those fakes through.", "",
                  "| | " + " | ".join(f"`{m}`" for m in models) + " |",
                  "| --- | " + " | ".join("---:" for _ in models) + " |",
                  "| ROC AUC | " + " | ".join(f"{x['roc_auc']:.3f}" for x in a) + " |",
                  f"| called fake at {a[0]['let_through']:.0%} let through | "
                  + " | ".join(_pct(x["fake"]) for x in a) + " |", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.audio_sources_v3",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="decode the unpacked packages to a 16 kHz tree")
    ex.add_argument("--raw", type=Path, required=True,
                    help="folder with each package unpacked (dpkg-deb -x) into RAW/<package>")
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--sources", default=",".join(TRAINABLE),
                    help="comma-separated (default: the trainable ones; known: "
                         + ", ".join(READERS) + ")")
    sc = sub.add_parser("score", help="the app's verdicts on the extracted clips")
    sc.add_argument("--data", type=Path, required=True)
    sc.add_argument("--model", action="append", required=True)
    sc.add_argument("--config", action="append", default=[])
    sc.add_argument("--sources", default="")
    sc.add_argument("--per-group", type=int, default=200)
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--against", type=Path, default=None, metavar="FOLD",
                    help="a corpus or leave-one-source-out fold (its metadata.csv): score its "
                         "test fakes too and report, free of the cards' thresholds, the ROC "
                         "AUC of the real clips against them and the share called fake at "
                         "the threshold that lets 30%% of them through")
    sc.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if args.command == "extract":
        found = find_recordings(args.raw, [s for s in args.sources.split(",") if s])
        rows = extract(found, args.out)
        print(f"wrote {len(rows)} clips and {args.out / 'manifest.jsonl'}")
        return 0
    result = score(args.data, args.model, args.config, per_group=args.per_group,
                   seed=args.seed, sources=[s for s in args.sources.split(",") if s] or None,
                   against=args.against)
    text = markdown(result)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, separators=(",", ":")),
                                                 encoding="utf-8")
        args.out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out.with_suffix('.md')} and .json")
    print(text)
    return 0
