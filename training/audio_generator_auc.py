"""How well does each detector rank each generator's fakes above real speech, by the app's path?

    python -m training.audio_generator_auc --config config/research --data data/audio_corpus_v2 \\
        --split test --model audio-cnn-v2 --model audio-cnn-linear-v2 \\
        --out docs/audio-v3/generator_auc

ROC AUC of each generator's fakes against all real clips of the same split, from the clip's
p(fake) as the app computes it (:func:`training.audio.false_alarms.verdicts`: speech check,
windows, calibrated mean). Threshold-free, so models with different thresholds compare; 0.5 is
chance, and under 0.5 the generator's clips score below the real ones. Pooled over sources, so
which sources each side comes from weighs in (``--paired`` compares like with like). Clips the
speech check refuses are left out.

``--paired`` also scores, for each fake of the split whose ``original`` is the source file of a
real row of the corpus (any split), that real clip, and reports how often the fake scores above
it, split by whether the real clip was in training. For a vocoded copy the pair differs only in
the synthesis (same speaker, text and room); a text-to-speech fake shares only the text.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .audio.false_alarms import verdicts
from .audio_withheld import read_rows, write_report


def generator_auc(rows: Sequence[dict[str, Any]], p: Sequence[float | None]
                  ) -> dict[str, dict[str, Any]]:
    """Per generator of the fakes, and for all fakes: clips scored and ROC AUC against every
    scored real clip (None without both classes)."""
    from sklearn.metrics import roc_auc_score

    scores = np.array([np.nan if v is None else v for v in p], dtype=np.float64)
    scored = ~np.isnan(scores)
    real = scored & np.array([r["label"] == "real" for r in rows])
    fake = scored & np.array([r["label"] == "fake" for r in rows])
    groups = {"all fakes": fake}
    for g in sorted({r["generator"] for r, f in zip(rows, fake) if f}):
        groups[g] = fake & np.array([r["generator"] == g for r in rows])
    out = {}
    for name, sel in groups.items():
        auc = None
        if real.any() and sel.any():
            y = np.r_[np.zeros(real.sum()), np.ones(sel.sum())]
            auc = float(roc_auc_score(y, np.r_[scores[real], scores[sel]]))
        out[name] = {"n": int(sel.sum()), "auc": auc}
    return out


def vocoded_pairs(rows: Sequence[dict[str, Any]], corpus: Sequence[dict[str, Any]]
                  ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(fake, real) for each fake of ``rows`` whose ``original`` is a real row's of ``corpus``
    (the clip a vocoder copied, or whose text a synthesiser read)."""
    real = {r["original"]: r for r in corpus if r["label"] == "real" and r.get("original")}
    return [(r, real[r["original"]]) for r in rows
            if r["label"] == "fake" and r.get("original") in real]


def paired_rates(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]],
                 p_copy: Sequence[float | None], p_orig: Sequence[float | None]
                 ) -> dict[str, dict[str, Any]]:
    """Per "generator, original in training | held out": pairs scored and the share of them
    whose copy scores above its original (None: no pair)."""
    groups: dict[str, list[bool]] = {}
    for (copy, orig), a, b in zip(pairs, p_copy, p_orig):
        if a is None or b is None:
            continue
        where = "original in training" if orig.get("split") == "train" else "original held out"
        groups.setdefault(f"{copy['generator']}, {where}", []).append(a > b)
    return {k: {"n": len(v), "copy_above": float(np.mean(v))} for k, v in sorted(groups.items())}


def markdown(result: dict[str, Any]) -> str:
    models = list(result["models"])
    names = list(next(iter(result["models"].values()))["generators"]) if models else []
    lines = ["# ROC AUC per generator against real speech, by the app's path", "",
             f"Data: `{result['data']}`, splits {', '.join(result['splits']) or 'all'}; real "
             f"clips scored: {result['n_real']}. Command: `{result['command']}`", "",
             "| generator | fakes | " + " | ".join(f"`{m}`" for m in models) + " |",
             "| --- | ---: |" + " ---: |" * len(models)]
    for name in names:
        n = result["models"][models[0]]["generators"][name]["n"]
        cells = []
        for m in models:
            auc = result["models"][m]["generators"][name]["auc"]
            cells.append("-" if auc is None else f"{auc:.3f}")
        bold = "**" if name == "all fakes" else ""
        lines.append(f"| {bold}{name}{bold} | {n} | " + " | ".join(cells) + " |")
    paired = {m: v["paired"] for m, v in result["models"].items() if v.get("paired")}
    if paired:
        keys = sorted({k for v in paired.values() for k in v})
        lines += ["", "Fakes against the real clip they copy (vocoders: the same speaker, text "
                  "and room) or whose text they read (text-to-speech: the same text): share of "
                  "pairs whose fake scores above the real clip (0.5 is chance).", "",
                  "| copies | " + " | ".join(f"`{m}`" for m in paired) + " |",
                  "| --- |" + " ---: |" * len(paired)]
        for k in keys:
            cells = [f"{v[k]['copy_above']:.2f} ({v[k]['n']})" if k in v else "-"
                     for v in paired.values()]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.audio_generator_auc",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", action="append", default=[])
    parser.add_argument("--paired", action="store_true",
                        help="also score vocoded copies against their own originals")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)

    from xai_platform.config import load_config
    from xai_platform.models.manager import ModelManager

    config = load_config(args.config)
    manager = ModelManager(config, device="cpu")
    rows = read_rows(args.data, args.split)
    result: dict[str, Any] = {
        "data": str(args.data), "splits": args.split,
        "n_real": sum(r["label"] == "real" for r in rows),
        "command": "python -m training.audio_generator_auc " + shlex.join(
            list(argv if argv is not None else sys.argv[1:])),
        "models": {}}
    for model_id in args.model:
        model = manager.get(model_id)
        answers = verdicts(model, rows, args.data, config.app,
                           log=lambda m: (sys.stderr.write(m), sys.stderr.flush()))
        sys.stderr.write("\n")
        result["models"][model_id] = {
            "threshold": model.calibration.threshold,
            "generators": generator_auc(rows, [a["p"] for a in answers])}
        if args.paired:
            pairs = vocoded_pairs(rows, read_rows(args.data, []))
            p_copy = {id(r): a["p"] for r, a in zip(rows, answers)}
            originals = verdicts(model, [o for _, o in pairs], args.data, config.app)
            result["models"][model_id]["paired"] = paired_rates(
                pairs, [p_copy[id(c)] for c, _ in pairs], [a["p"] for a in originals])
    write_report(args.out, result, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
