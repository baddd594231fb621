"""Score shipped audio detectors on a corpus they may never have seen, at their own calibration.

    python -m training.audio_evaluate --data data/audio_corpus_v2 [--model ID ...]
        [--splits validation,test] [--out docs/audio-v2]

Each model is loaded from its shipped weights file the way the app loads it and applies the
temperature and threshold of its own card; the recordings go through the app's feature path
(:func:`~training.audio.features.feature_set`, cached). Per split: EER, ROC AUC, and the false
alarms and misses *at the card's threshold*, overall, per real source (false alarms) and per
generator (misses). A model that ranks well but sits at the wrong threshold shows as both a
fair AUC and many errors.

The default audio model is chosen on the validation split only: the lowest validation EER
among models whose false alarms and misses at their own thresholds both stay under 50%
(a model past that is worse than a coin at its own threshold on one class). Test figures are
reported beside it, never used to choose.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xai_platform.config import ROOT, ModelSpec, load_config
from xai_platform.models.cards import read_card

from ..weights import load_saved
from .data import load_clips
from .evaluate import score_split

#: a model must stay under this false-alarm and miss rate on validation to be chosen
USABLE = 0.5


@dataclass
class ModelResult:
    """One model's figures per split (``report(..., breakdown=True)`` output)."""

    model: str
    name: str
    trained_on: str
    temperature: float
    threshold: float
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)

    def usable(self, split: str = "validation") -> bool:
        r = self.splits[split]
        return r["false_alarm_rate"] < USABLE and r["miss_rate"] < USABLE


def evaluate_model(spec: ModelSpec, clips: Sequence[Any], splits: Sequence[str], *,
                   cache_dir: Path) -> ModelResult:
    card = read_card(spec.weights)
    if card is None or card.calibration.threshold is None:
        raise SystemExit(f"{spec.id} has no model card with a calibrated threshold beside its "
                         "weights; train it with training.train_audio first.")
    cal = card.calibration
    handle = load_saved(spec, spec.weights)
    result = ModelResult(spec.id, spec.name, str(card.data.root), cal.temperature, cal.threshold)
    for split in splits:
        result.splits[split] = score_split(handle, clips, split, temperature=cal.temperature,
                                           threshold=cal.threshold, cache_dir=cache_dir)
    return result


def choose(results: Sequence[ModelResult]) -> ModelResult | None:
    """The lowest validation EER among the models usable on validation (see module doc)."""
    usable = [r for r in results if "validation" in r.splits and r.usable()]
    return min(usable, key=lambda r: r.splits["validation"]["eer"]) if usable else None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def markdown(results: Sequence[ModelResult], data: Path, chosen: ModelResult | None) -> str:
    splits = list(results[0].splits) if results else []
    lines = [f"# Audio detectors on `{data}`", "",
             "Each model at its own card's temperature and threshold; false alarms: real speech "
             "called fake, misses: fake speech called real. Written by `python -m "
             "training.audio_evaluate`.", ""]
    head = ["model", "trained on", "threshold"]
    for s in splits:
        head += [f"{s} AUC", f"{s} EER", f"{s} false alarms", f"{s} misses"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [f"`{r.model}`" + (" (chosen)" if r is chosen else ""), f"`{r.trained_on}`",
               f"{r.threshold:.3f}"]
        for s in splits:
            m = r.splits[s]
            row += [f"{m['roc_auc']:.3f}", _pct(m["eer"]), _pct(m["false_alarm_rate"]),
                    _pct(m["miss_rate"])]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "**Chosen on validation**: " + (
        f"`{chosen.model}` (lowest validation EER among models with false alarms and misses "
        f"under {USABLE:.0%} at their own threshold)" if chosen else
        f"none: no model keeps both false alarms and misses under {USABLE:.0%} on validation "
        "at its own threshold"), ""]
    for s in splits:
        gens = sorted({g for r in results for g in r.splits[s].get("by_generator", {})})
        if not gens:
            continue
        lines += [f"## {s}: per real source (false alarms) and per generator (misses)", "",
                  "| source / generator | n | " + " | ".join(f"`{r.model}`" for r in results)
                  + " |", "|" + "---|" * (len(results) + 2)]
        for g in gens:
            cells, n = [], 0
            for r in results:
                row = r.splits[s]["by_generator"].get(g)
                if row is None:
                    cells.append("-")
                    continue
                n = row["n"]
                rate = row.get("false_alarm_rate", row.get("miss_rate"))
                kind = "FA" if "false_alarm_rate" in row else "miss"
                cells.append(f"{kind} {_pct(rate)}")
            lines.append(f"| {g} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.audio_evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="corpus folder (metadata.csv)")
    parser.add_argument("--model", action="append", default=[],
                        help="model id (repeatable; default: every audio model with weights)")
    parser.add_argument("--config", action="append", default=[])
    parser.add_argument("--splits", default="validation,test")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "data" / "feature_cache")
    parser.add_argument("--out", type=Path, default=None,
                        help="write OUT.json and OUT.md (default: print the markdown only)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    ids = args.model or [m.id for m in config.models
                         if m.modality == "audio" and m.weights is not None
                         and m.weights.is_file() and m.input.kind != "waveform"
                         and "artefact" not in m.id]
    clips, _ = load_clips(args.data)
    splits = [s for s in args.splits.split(",") if s]
    results = []
    for mid in ids:
        print(f"scoring {mid} ...", flush=True)
        results.append(evaluate_model(config.model(mid), clips, splits, cache_dir=args.cache_dir))
    chosen = choose(results)
    text = markdown(results, args.data, chosen)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
        payload = {"data": str(args.data), "chosen": chosen.model if chosen else None,
                   "rule": f"lowest validation EER with false alarms and misses < {USABLE}",
                   "models": [r.__dict__ for r in results]}
        args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=float),
                                                 encoding="utf-8")
        print(f"wrote {args.out.with_suffix('.md')} and .json")
    print(text)
    return 0
