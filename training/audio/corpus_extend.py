"""Corpus v2 with more real recording sources in its training split only: does the number of
sources cut false alarms on unseen set-ups?

    python -m training.audio_corpus_v2 --extra-train-sources fotaq,hedgewars,warzone,megaglest,kajongg \\
        --base data/audio_corpus_v2 --out data/audio_corpus_v3x --extra-per-source 150

The new corpus keeps every clip of the base corpus, in the same split (its ``metadata.csv``
points at the base corpus's files), and adds, to *training* only, at most ``cap`` real clips of
each extra source (read by :func:`training.audio.sources_v3.read_extracted`, spread over the
source's languages as :func:`training.audio.corpus_v2.pick_reals` does) and ``copies`` vocoded
copies of each with the base corpus's training vocoder (WORLD: test holds Griffin-Lim,
validation MLSA). The extracted clips carry no text, so no synthesiser reads them: the copies
alone keep the classes balanced. Both classes go the base corpus's way
(:class:`training.audio.corpus_v2.Builder`): a copy takes the storage trip at the rate its real
clip was stored at before extraction (the manifest's ``original_rate``), then both the shared
chain, so a new real clip and its copy share a channel.

A clip the base corpus's split plan would hold out (a Ukrainian Hedgewars pack: Ukrainian is a
validation language) is left out rather than trained on; a source of the held-out test
families (``NOT_FOR_TRAINING``) is refused. Seeded per clip and resumable as the base build is.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .corpus_v2 import Builder, Item, _crc, _slug, pick_reals, write_metadata
from .sources import Speech
from .sources_v3 import read_extracted, read_manifest
from .splits import DEFAULT_PLAN, SplitPlan

# Sources that stay unseen: the family of corpus v2's held-out test source (Asterisk's prompts)
# and the set-ups the experiment keeps for testing.
NOT_FOR_TRAINING = {"asterisk-gsm": "the family of corpus v2's held-out test source Asterisk",
                    "codec2": "held out: no storage trip imitates its radio channel",
                    "bass": "held out as an unseen source (FOTAQ's sister set-up)",
                    "pocketsphinx": "ten clips; held out"}
TRAIN_VOCODER = "world"
BASE_KEYS = ("generators", "test_languages", "validation_languages", "test_held_out",
             "validation_held_out", "tools", "trim_top_db")


def plan_extra(reals: Sequence[Speech], *, copies: int = 1, vocoder: str = TRAIN_VOCODER,
               split_plan: SplitPlan = DEFAULT_PLAN) -> tuple[list[Item], list[Speech]]:
    """Training items for the extra real clips and ``copies`` vocoded copies of each; returns
    (items, the clips left out because the split plan holds one of their attributes out)."""
    items, dropped = [], []
    for s in reals:
        real = Item(f"{s.source}-{s.language}-{_slug(s.path.stem)}-{_crc(str(s.path))}", "real",
                    s.source, s.language, s.source, s.speaker, s.text, s)
        fakes = [Item(f"{vocoder}-x{n}-{_crc(str(s.path))}", "fake", s.source, s.language,
                      vocoder, vocoder, s.text, s) for n in range(copies)]
        if any(split_plan.split_of(it.attributes()) != "train" for it in (real, *fakes)):
            dropped.append(s)
            continue
        items += [real, *fakes]
    return items, dropped


def _relative(base: Path, out: Path, path: str) -> str:
    return os.path.relpath(base / path, out)


def build_extended(out: Path, *, base: Path, extra_root: Path, sources: Sequence[str],
                   cap: int = 150, copies: int = 1, seed: int = 0,
                   split_plan: SplitPlan = DEFAULT_PLAN, builder_kwargs: dict | None = None,
                   log: Callable[[str], None] = lambda m: sys.stderr.write(m + "\n"),
                   command: str = "") -> dict[str, Any]:
    """Build (or finish) ``out``: the base corpus's clips as they are plus the extra sources'
    real clips and their copies in training. Returns the summary written to ``corpus.json``."""
    t0 = time.time()
    refused = {s: NOT_FOR_TRAINING[s] for s in sources if s in NOT_FOR_TRAINING}
    if refused:
        raise SystemExit("these sources must stay out of training: " + "; ".join(
            f"{s} ({why})" for s, why in refused.items()))
    base_meta = base / "metadata.csv"
    if not base_meta.is_file():
        raise SystemExit(f"{base_meta} not found: build the base corpus first "
                         "(python -m training.audio_corpus_v2 --out ...).")
    manifest = {str(Path(extra_root) / r["path"]): r for r in read_manifest(extra_root)}
    found: dict[str, list[Speech]] = {}
    dropped: list[Speech] = []
    for s in read_extracted(extra_root, sources):
        # before the cap, so that a held-out language's clips leave room for the others
        if split_plan.split_of({"source": s.source, "language": s.language,
                                "speaker": s.speaker, "origin_speaker": s.speaker}) != "train":
            dropped.append(s)
            continue
        found.setdefault(s.source, []).append(s)
    missing = [s for s in sources if s not in found]
    if missing:
        raise SystemExit(f"no extracted clips of {', '.join(missing)} under {extra_root}; the "
                         f"sources there: {', '.join(sorted({r['source'] for r in manifest.values()}))}.")
    reals = pick_reals(found, {s: cap for s in found}, seed=seed)
    items, late = plan_extra(reals, copies=copies, split_plan=split_plan)
    dropped += late
    for (source, language), n in sorted(Counter((s.source, s.language) for s in dropped).items()):
        log(f"  left out {n} clips of {source} ({language}): the split plan holds them out")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    builder = Builder(out, seed=seed, log=log, **(builder_kwargs or {}))
    builder.original_rates.update({p: int(r["original_rate"]) for p, r in manifest.items()
                                   if r.get("original_rate")})
    log(f"  extra: {sum(1 for it in items if it.label == 'real')} real clips of "
        f"{', '.join(sorted(found))} (at most {cap} each), {copies} {TRAIN_VOCODER} "
        f"cop{'y' if copies == 1 else 'ies'} each; {len(dropped)} left out by the split plan")
    new = builder.run(items)
    for row in new:  # the extracted clips' licence is in their manifest, not sources.PACKAGES
        origin = manifest.get(row["original"])
        if origin is not None:
            row["licence"] = origin["licence"]
    with open(base_meta, newline="", encoding="utf-8") as fh:
        old = [{**r, "path": _relative(base, out, r["path"])} for r in csv.DictReader(fh)]
    write_metadata(out / "metadata.csv", old + new)
    counts = Counter((r["split"], r["label"]) for r in old + new)
    added = Counter((r["source"], r["language"], r["label"]) for r in new)
    summary = {
        "command": command, "base": str(base), "extra_root": str(extra_root),
        "extra_train_sources": sorted(found), "extra_per_source": cap,
        "copies_per_real": copies, "vocoder": TRAIN_VOCODER, "seed": seed,
        "split_rule": "the base corpus's splits unchanged; the extra sources' real clips and "
                      "their vocoded copies train (a clip whose attributes the base plan holds "
                      "out is left out)",
        "n_clips": len(old) + len(new),
        "counts": {f"{s}/{lab}": n for (s, lab), n in sorted(counts.items())},
        "added": {f"{s}/{lang}/{lab}": n for (s, lang, lab), n in sorted(added.items())},
        "left_out_by_plan": len(dropped), "skipped": builder.skipped,
        "seconds_this_run": round(time.time() - t0, 1),
    }
    base_info = base / "corpus.json"
    if base_info.is_file():  # the base plan, which the trainer copies into the model card
        base_corpus = json.loads(base_info.read_text(encoding="utf-8"))
        summary.update({k: base_corpus[k] for k in BASE_KEYS if k in base_corpus})
        summary["base_command"] = base_corpus.get("command", "")
    (out / "corpus.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary

