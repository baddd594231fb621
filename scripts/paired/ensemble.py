"""Does averaging detectors help? Each model's clip probability at its own card's temperature,
averaged as logits over the given models; the threshold at the validation EER; test figures.

    PYTHONPATH=. python scripts/paired/ensemble.py --data data/audio_corpus_v3t \\
        audio-cnn-v3t audio-cnn-grid-v3t ...

A measurement (docs/AUDIO.md, "The front-end on corpus v3t"), not an app feature: prints one
line per model and one for the mean of all of them (``--combine max``: the largest margin of
any model over its own card's threshold, for detectors that each catch one kind of fake),
with the false alarms and misses at the validation threshold per held-out real source and
generator.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from training.audio.data import load_clips
from training.audio.evaluate import clip_probabilities, split_logits
from training.metrics import equal_error_rate, rates_at
from training.weights import load_saved
from xai_platform.config import ROOT, load_config
from xai_platform.models.cards import read_card

SHOWN = ("asterisk", "fillets", "gcin", "griffinlim", "kokoro", "mlsa")


def clip_logits(config, mid: str, clips, cache_dir: Path) -> dict[str, np.ndarray]:
    spec = config.model(mid)
    cal = read_card(spec.weights).calibration
    handle = load_saved(spec, spec.weights)
    out = {}
    for split in ("validation", "test"):
        fs, z = split_logits(handle, clips, split, cache_dir=cache_dir)
        p = np.clip(clip_probabilities(z, fs.clip, len(fs.clips), cal.temperature), 1e-6, 1 - 1e-6)
        out[split] = np.log(p / (1 - p))
        out[split + ":margin"] = out[split] - np.log(cal.threshold / (1 - cal.threshold))
        out[split + ":y"] = (fs.y_clip == spec.positive_index).astype(int)
        out[split + ":g"] = np.array([c.generator if c.label == "fake" else c.source
                                      for c in fs.clips])
    return out


def line(name: str, scores: list[dict[str, np.ndarray]], combine: str = "mean") -> str:
    ref = scores[0]
    if combine == "max":
        v = np.max([s["validation:margin"] for s in scores], axis=0)
        t = np.max([s["test:margin"] for s in scores], axis=0)
    else:
        v = np.mean([s["validation"] for s in scores], axis=0)
        t = np.mean([s["test"] for s in scores], axis=0)
    val_eer, threshold = equal_error_rate(v, ref["validation:y"])[:2]
    y, g = ref["test:y"], ref["test:g"]
    rates = rates_at(t, y, threshold)
    per = {}
    for k in SHOWN:
        sel = g == k
        if sel.any():  # a real source's false alarms or a generator's misses
            r = rates_at(t[sel], y[sel], threshold)
            per[k] = f"{r['false_alarm_rate' if y[sel][0] == 0 else 'miss_rate']:.0%}"
    return (f"{name}: validation EER {val_eer:.1%}, test EER {equal_error_rate(t, y)[0]:.1%}, "
            f"false alarms {rates['false_alarm_rate']:.1%}, misses {rates['miss_rate']:.1%} "
            f"{per}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "audio_corpus_v3t")
    parser.add_argument("--config", action="append",
                        default=["config/research", "scripts/paired/paired.yaml"])
    parser.add_argument("--combine", choices=("mean", "max"), default="mean")
    args = parser.parse_args()
    config = load_config(args.config)
    clips, _ = load_clips(args.data)
    scores = [clip_logits(config, m, clips, ROOT / "data" / "feature_cache") for m in args.models]
    for mid, s in zip(args.models, scores):
        print(line(mid, [s]))
    print(line(f"{args.combine} of {len(scores)}", scores, args.combine))


if __name__ == "__main__":
    main()
