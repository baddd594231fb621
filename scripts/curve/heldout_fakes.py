"""A check corpus for the held-out new sources (BASS, Asterisk GSM, codec2): up to 100 real
clips each (seeded, spread over languages) and a WORLD and a Griffin-Lim copy of each, built
the way corpus v2 builds clips (Builder: the copy's storage trip at the stored rate, then the
shared chain for both); all in split 'test'. Then every model's verdicts at its own card's
threshold and temperature: false alarms on the real clips, misses on the copies, AUC
(scripts/curve/heldout_score.py). Run from the repository root with PYTHONPATH=.."""
from collections import Counter
from dataclasses import replace
from pathlib import Path

from training.audio.corpus_extend import plan_extra
from training.audio.corpus_v2 import Builder, pick_reals, write_metadata
from training.audio.sources_v3 import read_extracted, read_manifest
from training.audio.splits import HoldOut, SplitPlan

ROOT = Path("data/sources_v3")
OUT = Path("data/audio_curve_heldout")
found = {}
for s in read_extracted(ROOT, ["bass", "asterisk-gsm", "codec2"]):
    found.setdefault(s.source, []).append(s)
reals = pick_reals(found, {s: 100 for s in found}, seed=0)
open_plan = SplitPlan(test=HoldOut(), validation=HoldOut())
items = []
for gen in ("world", "griffinlim"):
    its, _ = plan_extra(reals, copies=1, vocoder=gen, split_plan=open_plan)
    items += [it for it in its if it.label == "fake" or gen == "world"]
items = [replace(it, split="test") for it in items]
b = Builder(OUT, seed=0)
b.original_rates.update({str(ROOT / r["path"]): int(r["original_rate"]) for r in read_manifest(ROOT)})
rows = b.run(items)
# the trainer's loader needs both labels in every split: add a token train/validation pair
write_metadata(OUT / "metadata.csv", rows + [{**r, "split": s} for s in ("train", "validation")
                                                for r in (rows[0], rows[-1])])
print(Counter((r["source"], r["generator"]) for r in rows))
