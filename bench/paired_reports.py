"""Two `evaluate` runs of one method on the same inputs, compared input by input.

    .venv/bin/python bench/paired_reports.py RUN_A RUN_B [--method ID]

RUN_A and RUN_B are the ``--out`` folders of two ``python -m xai_platform evaluate`` runs that
differ in one setting (e.g. ``--param shap.estimator=kernel`` against the default). For each
metric it prints the mean of each run over the inputs both scored, the mean paired difference
B - A with a 95 % percentile-bootstrap interval (2,000 resamples of the inputs, seed 0), and on
how many inputs B is higher. Pairing removes the spread between inputs, which dominates the
intervals of each run's own report.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

METRICS = ["insertion_auc", "deletion_auc", "randomization_rho", "randomization_rho_abs",
           "randomization_passed", "pointing_game", "top_k_iou", "mass_inside", "lung_share",
           "border_share", "explain_seconds", "explain_evaluations"]


def load(folder: Path, method: str | None) -> dict[str, dict[str, str]]:
    with (folder / "metrics.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if method is None or r["method"] == method]
    return {r["input"]: r for r in rows}


def number(text: str | None) -> float | None:
    if text in (None, ""):
        return None
    if text.lower() in ("true", "false"):
        return float(text.lower() == "true")
    return float(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--method", default=None, help="only this method's rows")
    args = ap.parse_args()
    a, b = load(args.run_a, args.method), load(args.run_b, args.method)
    shared = sorted(set(a) & set(b))
    print(f"{len(shared)} inputs in both runs ({len(a)} in A, {len(b)} in B)\n")
    print(f"| metric | inputs | A: {args.run_a.name} | B: {args.run_b.name} | B - A [95 % CI] | "
          "B higher |")
    print("|---|---:|---:|---:|---|---:|")
    rng = np.random.default_rng(0)
    for metric in METRICS:
        pairs = [(number(a[k].get(metric)), number(b[k].get(metric))) for k in shared]
        pairs = [p for p in pairs if None not in p]
        if not pairs:
            continue
        x = np.array(pairs)
        d = x[:, 1] - x[:, 0]
        boots = d[rng.integers(0, len(d), (2000, len(d)))].mean(axis=1)
        lo, hi = np.percentile(boots, [2.5, 97.5])
        print(f"| {metric} | {len(d)} | {x[:, 0].mean():.3f} | {x[:, 1].mean():.3f} | "
              f"{d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] | {int((d > 0).sum())} of "
              f"{int((d != 0).sum())} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
