"""Do the pauses or the noise bed set a source apart after the shared chain? Per split, label
and real source (fakes: per generator), on a seeded sample of a corpus's clips: the median
5th percentile of 20 ms frame levels inside the speech (from the first to the last frame
within 35 dB of the loudest, in dB below it) and the median level of the lead-in before it
(the noise bed).

    PYTHONPATH=. python scripts/paired/pause_levels.py --data data/audio_corpus_v3g

A measurement (docs/AUDIO.md, "Professional telephone voices in training"), not an app
feature.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from pathlib import Path

import numpy as np

from xai_platform.preprocessing import audio


def levels(wave: np.ndarray, sr: int) -> tuple[float, float] | None:
    """(5th percentile of the in-speech frame levels, median lead-in level), dB re the loudest
    20 ms frame; None for a clip with under five loud frames."""
    n = int(0.02 * sr)
    frames = wave[: len(wave) // n * n].reshape(-1, n)
    energy = np.mean(frames ** 2, axis=1)
    db = 10 * np.log10(energy / (energy.max() + 1e-20) + 1e-12)
    loud = np.flatnonzero(db > -35)
    if len(loud) < 5:
        return None
    bed = float(np.median(db[: loud[0]])) if loud[0] > 2 else float("nan")
    return float(np.percentile(db[loud[0]: loud[-1] + 1], 5)), bed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--per-group", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with open(args.data / "metadata.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        groups[(r["split"], r["label"], r["source"] if r["label"] == "real"
                else r["generator"])].append(r)
    rng = random.Random(args.seed)
    print("| split / label / source or generator | clips | 5th pct in speech (dB) | lead-in (dB) |")
    print("|---|---:|---:|---:|")
    for key in sorted(groups):
        sample = rng.sample(groups[key], min(args.per_group, len(groups[key])))
        got = [v for v in (levels(*audio.decode_audio(args.data / r["path"])) for r in sample)
               if v is not None]
        if got:
            v = np.array(got)
            print(f"| {' / '.join(key)} | {len(v)} | {np.median(v[:, 0]):.1f} | "
                  f"{np.nanmedian(v[:, 1]):.1f} |")


if __name__ == "__main__":
    main()
