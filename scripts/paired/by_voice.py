"""Real voices called fake, per voice: each model at its own card's temperature and threshold,
the share of a held-out real source's test clips above the threshold, per language and
speaker (Asterisk: one professional voice per package).

    PYTHONPATH=. python scripts/paired/by_voice.py --data data/audio_corpus_v3g \\
        --source asterisk audio-cnn-v3t audio-cnn-v3g ...

A measurement (docs/AUDIO.md, "Professional telephone voices in training"), not an app
feature: it says whether a training source of one family helps only its own languages.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from scripts.paired.ensemble import clip_logits
from training.audio.data import load_clips
from xai_platform.config import ROOT, load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--source", default="asterisk")
    parser.add_argument("--config", action="append", type=Path,
                        default=[ROOT / "config/research", ROOT / "scripts/paired/paired.yaml"])
    args = parser.parse_args()
    config = load_config(args.config)
    clips, _ = load_clips(args.data)
    test = [c for c in clips if c.split == "test"]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(test):
        if c.label == "real" and c.source == args.source:
            groups[f"{c.language} {c.speaker}"].append(i)
    margins = {}
    for mid in args.models:
        out = clip_logits(config, mid, clips, ROOT / "data" / "feature_cache")
        margins[mid] = out["test:margin"]
        if len(out["test:margin"]) != len(test):
            raise SystemExit("the scored test clips do not line up with the corpus's test rows")
    print(f"| {args.source}: language, voice | n | " + " | ".join(f"`{m}`" for m in args.models)
          + " |")
    print("|---|---:|" + "---:|" * len(args.models))
    for key in sorted(groups):
        idx = np.array(groups[key])
        print(f"| {key} | {len(idx)} | " + " | ".join(
            f"{np.mean(margins[m][idx] > 0):.0%}" for m in args.models) + " |")


if __name__ == "__main__":
    main()
