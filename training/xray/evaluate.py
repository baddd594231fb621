"""Score a trained X-ray detector, as shipped, on one split of a lesion benchmark, overall and
per condition (benchmark v2's age group, devices, collimation, markers, dose, saturation,
rotation; the lesion's type and edge).

    python -m training.xray_evaluate --model xray-cnn --data data/xray_benchmark_v2 --split test

The model is loaded by the app's own loader from its configured weights; its card's
temperature and threshold (fitted on the validation split of the data it was trained on) are
used unchanged, so the false-alarm and miss rates are those a user of the app would see.
Nothing is refitted on the data scored here.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from xai_platform.config import load_config

from ..metrics import binary_report
from ..trainer import limit_threads
from .benchmark_v2 import condition_of
from .data import _plane, _progress

SUMMARY_KEYS = ("n", "n_positive", "roc_auc", "eer", "sensitivity_at_90_specificity",
                "false_alarm_rate", "miss_rate", "accuracy")


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in SUMMARY_KEYS if k in report}


def evaluate(model_id: str, data: Path, *, split: str = "test", config: list[Path] | None = None,
             threads: int = 1, limit: int | None = None) -> dict[str, Any]:
    """Overall and per-condition figures of ``model_id`` on ``split`` of the benchmark at
    ``data`` (a conditions' value with one class only gets n and its error rate)."""
    from xai_platform.models import ModelManager

    cfg = load_config(config or ())
    spec = cfg.model(model_id)
    limit_threads(spec.framework, threads)
    manager = ModelManager(cfg, device="cpu")
    handle = manager.get(model_id)
    card = manager.card(model_id)
    if card is None or card.calibration is None or card.calibration.threshold is None:
        raise SystemExit(f"{model_id} has no card with a threshold; train it first.")
    temperature, threshold = float(card.calibration.temperature), float(card.calibration.threshold)
    with open(data / "metadata.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split][:limit]
    if not rows:
        raise SystemExit(f"{data} has no images in split '{split}'.")
    x = np.zeros((len(rows), *spec.input_shape), np.float16)
    for i, r in enumerate(rows):
        x[i] = _plane(data / r["path"], spec.input_shape)
        _progress(split, i + 1, len(rows))
    scores = handle.scores(x, batch_size=64)
    truth = np.array([r["label"] == "lesion" for r in rows], np.int64)
    overall = binary_report(spec, scores, truth, temperature=temperature, threshold=threshold)
    groups: dict[str, dict[str, list[int]]] = {}
    for i, r in enumerate(rows):
        keys = condition_of(r) if "age_group" in r else {}
        for key, value in keys.items():
            groups.setdefault(key, {}).setdefault(value, []).append(i)
    by_condition: dict[str, dict[str, Any]] = {}
    for key, values in groups.items():
        for value, idx in sorted(values.items()):
            sub = np.array(idx)
            t = truth[sub]
            if 0 < t.sum() < len(t):
                rep = _summary(binary_report(spec, scores[sub], t, temperature=temperature,
                                             threshold=threshold))
            else:
                rep = {"n": len(t), "n_positive": int(t.sum())}
            by_condition.setdefault(key, {})[value] = rep
    # Lesion kinds: every normal image against the lesions of one kind.
    normals = np.nonzero(truth == 0)[0]
    for key in ("lesion_type", "lesion_edge"):
        for value in sorted({r[key] for r in rows if r[key]}):
            sub = np.concatenate([normals, [i for i, r in enumerate(rows) if r[key] == value]])
            by_condition.setdefault(key, {})[value] = _summary(binary_report(
                spec, scores[sub], truth[sub], temperature=temperature, threshold=threshold))
    info = data / "benchmark.json"
    summary = json.loads(info.read_text()) if info.exists() else {}
    return {"model": model_id, "weights_trained_on": card.data.command if card.data else None,
            "data": str(data), "data_command": summary.get("command"), "split": split,
            "temperature": temperature, "threshold": threshold,
            "overall": _summary(overall), "by_condition": by_condition}


def format_report(result: dict[str, Any]) -> str:
    """The result as a plain-text table."""
    o = result["overall"]
    lines = [f"{result['model']} on {result['data']} ({result['split']}, n={o['n']}), "
             f"threshold {result['threshold']:.3f} from its card",
             f"  overall: AUC {o['roc_auc']:.3f}  EER {o['eer']:.3f}  "
             f"false alarms {o['false_alarm_rate']:.3f}  misses {o['miss_rate']:.3f}"]
    for key, values in result["by_condition"].items():
        for value, m in values.items():
            auc = f"AUC {m['roc_auc']:.3f}" if "roc_auc" in m else "AUC  -   "
            rates = (f"false alarms {m['false_alarm_rate']:.3f}  misses {m['miss_rate']:.3f}"
                     if "miss_rate" in m else "")
            lines.append(f"  {key:12s} {value:36s} n={m['n']:4d}  {auc}  {rates}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m training.xray_evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=Path("data/xray_benchmark_v2"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--config", action="append", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="at most this many images")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = evaluate(args.model, args.data, split=args.split, config=args.config,
                      threads=args.threads, limit=args.limit)
    print(format_report(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        sys.stderr.write(f"wrote {args.json}\n")
    return 0
