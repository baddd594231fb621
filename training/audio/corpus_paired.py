"""Every training recording with a vocoded copy: a corpus where the recording set-up no longer
tells the classes apart.

    python -m training.audio_paired --base data/audio_corpus_v3t --out data/audio_corpus_v3w

The leave-one-source-out folds and the per-generator AUCs (docs/AUDIO.md) say the detectors
learn the recording set-up (room, microphone, codec) more than the synthesis: a text-to-speech
fake never went through a real set-up, so "sounds like a recording I know" reads as "real".
In the base corpus only some training recordings have a vocoded copy (WORLD: 275 of 1,455 in
corpus v3t). This builder gives every other *training* recording one copy by the base corpus's
training vocoder (WORLD; validation holds MLSA and test Griffin-Lim, so both stay unseen), made
the base corpus's way (:class:`training.audio.corpus_v2.Builder`: the copy is cut from the
original file, takes the storage trip at the rate the original was stored at, then the shared
chain). Every training recording then has a fake twin in its own set-up, so only the synthesis
separates the classes there (the recipe of Wang and Yamagishi, ICASSP 2023, on top of the
text-to-speech fakes). Validation and test are the base corpus's, unchanged: results compare
with the base corpus's models split for split.

With ``--vocoder world,phasevoc,lpc`` the copies are dealt to several training vocoders in
turn, an equal share of each source to each (corpus v3z: does variety among the twins' vocoders
reach an unseen one, where WORLD alone did not?).

With ``--validation-sources warzone`` the base corpus's training clips of those sources, real
and fake, move to validation (and get no copy), so that validation holds a recording set-up
that training never heard, as the test split's held-out sources are. The base corpora's
validation holds none (KTuberling's words sound like KLettres'), so it cannot tell a detector
that generalises across set-ups from one that does not. ``--no-copies`` only moves them: a
twin-free baseline with the same validation.

The new rows carry ``pair_of``, the key of the recording they copy (the base corpus's own
WORLD copies get it too), so that training can use the pairs
(:func:`training.audio.features.pair_index`). Resumable: the builder's state is under
``out/.state``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .corpus_extend import BASE_KEYS, FIELDS, TRAIN_VOCODER, _crc32, _relative, training_voices
from .corpus_v2 import (LICENCES, TTS, Builder, Engines, Item, _crc, find_engines,
                        read_metadata, write_metadata)
from .sources import Speech, text_bank
from .splits import DEFAULT_PLAN, SplitPlan
from .texts_v3 import READ_AS, pick_text, text_pool
from .vocoders import VOCODERS

PAIRED_FIELDS = (*FIELDS, "pair_of")
FOREIGN_READERS = ("kokoro",)  # engines whose voices read any eSpeak NG language
COPY_TAG = "p0"  # the copies plan_copies makes are keyed <vocoder>-p0-<crc of the original>
READING_TAG = "t0"  # the readings plan_readings makes: <generator>-t0-<crc of the original>
READING_KEY = re.compile(rf"^[a-z]+-{READING_TAG}-")
COPY_KEY = re.compile(rf"^[a-z]+-(?:{COPY_TAG}|{READING_TAG})-")  # copies and readings


def _origin(row: dict[str, Any]) -> Speech:
    return Speech(source=row["source"], language=row["language"], path=Path(row["original"]),
                  text=row.get("text") or "", speaker=row.get("speaker") or "")


def moved_to_validation(rows: Sequence[dict[str, Any]], sources: Sequence[str]
                        ) -> list[dict[str, Any]]:
    """``rows`` with the training clips of ``sources`` (real and fake) put in validation. The
    copies an earlier paired build gave them (keys ``<vocoder>-p0-*``, :data:`COPY_KEY`) are
    left out, so every
    corpus built from the same base with the same sources moved has the same validation."""
    known = {r["source"] for r in rows if r["split"] == "train"}
    missing = sorted(set(sources) - known)
    if missing:
        raise SystemExit(f"no training clips of {', '.join(missing)} to move to validation; "
                         f"training holds {', '.join(sorted(known))}")
    moved = []
    for r in rows:
        if r["split"] != "train" or r["source"] not in sources:
            moved.append(r)
        elif not COPY_KEY.match(r["key"]):
            moved.append({**r, "split": "validation",
                          "split_reason": "moved to validation: a recording set-up "
                                          "training never hears"})
    return moved


def plan_copies(rows: Sequence[dict[str, Any]], *, vocoders: Sequence[str] = (TRAIN_VOCODER,),
                split_plan: SplitPlan = DEFAULT_PLAN, seed: int = 0
                ) -> tuple[list[Item], dict[str, str]]:
    """One vocoded copy of every training recording in ``rows`` that has none yet (by any of
    ``vocoders``); returns (the items, ``pair_of`` for every copy: the new ones' and the
    existing ones' keys to the key of the recording they copy). With several vocoders each
    source's recordings are dealt to them in turn, in a seeded order, so every vocoder copies
    an equal share of every source."""
    reals = {r["original"]: r for r in rows
             if r["label"] == "real" and r["split"] == "train" and r.get("original")}
    pair_of = {r["key"]: reals[r["original"]]["key"] for r in rows
               if r["label"] == "fake" and r["generator"] in vocoders
               and r.get("original") in reals}
    copied = {r["original"] for r in rows if r["key"] in pair_of}
    todo = [o for o in reals if o not in copied]
    dealt: dict[str, str] = {}
    rng = np.random.default_rng(seed)
    for source in sorted({reals[o]["source"] for o in todo}):  # in turn within each source
        mine = [o for o in todo if reals[o]["source"] == source]
        for j in rng.permutation(len(mine)):
            dealt[mine[j]] = vocoders[len(dealt) % len(vocoders)]
    items = []
    for original in todo:
        real, vocoder = reals[original], dealt[original]
        item = Item(f"{vocoder}-{COPY_TAG}-{_crc(original)}", "fake", real["source"],
                    real["language"], vocoder, vocoder, real.get("text") or "", _origin(real))
        split = split_plan.split_of(item.attributes())
        if split != "train":  # the plan holds an attribute out: the copy would leave training
            raise SystemExit(f"the split plan puts a {vocoder} copy of {original} in {split}; "
                             "pick a training vocoder.")
        items.append(item)
        pair_of[item.key] = real["key"]
    return items, pair_of


def foreign_voices(engines: Engines, generators: Sequence[str], language: str,
                   split_plan: SplitPlan = DEFAULT_PLAN) -> list[str]:
    """The training voices of ``generators`` (any language) that may read ``language``'s
    text: those the split plan lets train in their own language and in ``language``."""
    voices = []
    for gen in generators:
        for own in sorted(set(engines.voices.get(gen, {}).values())):
            voices += [v for v in training_voices(engines, gen, own, split_plan)
                       if split_plan.split_of({"generator": gen, "voice": v,
                                               "language": language}) == "train"]
    return sorted(voices)


def plan_readings(rows: Sequence[dict[str, Any]], engines: Engines, *,
                  generators: Sequence[str], bank: dict[str, list[str]],
                  split_plan: SplitPlan = DEFAULT_PLAN, seed: int = 0,
                  foreign: Sequence[str] = ()
                  ) -> tuple[list[Item], dict[str, str], dict[str, str], Counter[str]]:
    """One text-to-speech twin of every training recording in ``rows`` whose language a
    training voice of ``generators`` speaks: that voice (the voices of each language in turn,
    in a seeded order) reads the recording's own text, else a seeded pick of the training texts
    in its language, and the fake takes the recording's storage trip (its source's). Returns
    (the items, ``pair_of`` for each, the text origin of each (the recording's own, ``pool`` or
    ``textbank``), the recordings left without a twin per language: no training voice speaks
    it, or no text).

    ``foreign``: engines of ``generators`` whose voices may read a language none of their
    training voices speaks (Kokoro phonemises any eSpeak NG language): those recordings are
    read by all of their training voices in a seeded turn, in the recording's language."""
    # one twin per recording, as in plan_copies (a base may list a recording twice)
    reals = sorted({r["original"]: r for r in rows if r["label"] == "real"
                    and r["split"] == "train" and r.get("original")}.values(),
                   key=lambda r: r["key"])
    have = {r["original"] for r in rows if r["label"] == "fake" and READING_KEY.match(r["key"])}
    pool = text_pool(rows)
    order: dict[str, list[str]] = {}
    turn: Counter[str] = Counter()
    items, pair_of, origins, unspoken = [], {}, {}, Counter()
    for real in reals:
        if real["original"] in have:
            continue
        lang = READ_AS.get(real["language"], real["language"])
        if lang not in order:
            voices = [v for g in generators for v in training_voices(engines, g, lang, split_plan)]
            if not voices and foreign:
                voices = foreign_voices(engines, [g for g in generators if g in foreign], lang,
                                        split_plan)
            perm = np.random.default_rng([seed, _crc32(f"readings|{lang}")]).permutation(
                len(voices))
            order[lang] = [voices[j] for j in perm]
        own = (real.get("text") or "").strip()
        picked = None if own else pick_text(lang, np.random.default_rng(
            [seed, _crc32(real["original"]), 2]), pool, bank)
        text = own or (picked.text if picked is not None else "")
        if not order[lang] or not text:
            unspoken[real["language"]] += 1
            continue
        vid = order[lang][turn[lang] % len(order[lang])]
        turn[lang] += 1
        gen = vid.split(":", 1)[0]
        item = Item(f"{gen}-{READING_TAG}-{_crc(real['original'])}", "fake", real["source"],
                    lang, gen, vid, text, _origin(real))
        if split_plan.split_of(item.attributes()) != "train":  # voices are filtered: a bug
            raise AssertionError(f"{item.key} would not train: {item.attributes()}")
        items.append(item)
        pair_of[item.key] = real["key"]
        origins[item.key] = (real.get("text_origin") or "own") if own else picked.origin
    return items, pair_of, origins, unspoken


def build_paired(out: Path, *, base: Path, vocoders: Sequence[str] = (TRAIN_VOCODER,),
                 seed: int = 0, validation_sources: Sequence[str] = (), copies: bool = True,
                 readers: Sequence[str] = (), foreign_readings: bool = False,
                 engines: Engines | None = None, bank: dict[str, list[str]] | None = None,
                 command: str = "", builder_kwargs: dict | None = None,
                 log: Callable[[str], None] = lambda m: sys.stderr.write(m + "\n")
                 ) -> dict[str, Any]:
    """Build (or finish) ``out``: the base corpus's clips as they are plus one vocoded copy
    of each training recording that lacks one (``vocoders`` in turn; none when empty), and one
    reading of its text by the text-to-speech ``readers`` (:func:`plan_readings`; ``engines``
    and ``bank`` default to what is installed; ``foreign_readings``: recordings in languages no
    training voice speaks are read by the voices of :data:`FOREIGN_READERS` among ``readers``),
    after the training clips of ``validation_sources`` moved to validation (``copies=False``:
    only the move, no new copies). Returns the summary written to ``corpus.json``."""
    t0 = time.time()
    base_meta = base / "metadata.csv"
    if not base_meta.is_file():
        raise SystemExit(f"{base_meta} not found: build the base corpus first.")
    unknown = [v for v in vocoders if v not in VOCODERS]
    if unknown or not (vocoders or readers or not copies):
        raise SystemExit(f"unknown vocoder(s) {', '.join(unknown) or '(none given)'}; "
                         f"training.audio.vocoders has {', '.join(VOCODERS)}")
    not_tts = [g for g in readers if g not in TTS]
    if not_tts:
        raise SystemExit(f"--tts takes text-to-speech engines ({', '.join(TTS)}), got "
                         f"{', '.join(not_tts)}")
    if not copies and not validation_sources:
        raise SystemExit("--no-copies without --validation-sources would copy the base as it is")
    rows = read_metadata(base_meta)
    if validation_sources:
        rows = moved_to_validation(rows, validation_sources)
    items, pair_of = (plan_copies(rows, vocoders=vocoders, seed=seed) if copies and vocoders
                      else ([], {}))
    n_copies, origins, unspoken = len(items), {}, Counter()
    if copies and readers:
        engines = engines or find_engines(tuple(readers), kokoro_dir=(builder_kwargs or {}).get(
            "kokoro_dir"))
        missing = [g for g in readers if g not in engines.voices]
        if missing:
            raise SystemExit(f"not installed here: {', '.join(missing)} "
                             f"({'; '.join(engines.missing.get(g, '') for g in missing)})")
        readings, read_of, origins, unspoken = plan_readings(
            rows, engines, generators=readers, bank=text_bank() if bank is None else bank,
            seed=seed, foreign=FOREIGN_READERS if foreign_readings else ())
        items, pair_of = items + readings, {**pair_of, **read_of}
    out.mkdir(parents=True, exist_ok=True)
    builder = Builder(out, seed=seed, log=log, **(builder_kwargs or {}))
    builder.original_rates.update({r["original"]: int(float(r["original_sample_rate"]))
                                   for r in rows if r["label"] == "real" and r.get("original")
                                   and r.get("original_sample_rate")})
    licences = {r["original"]: r["licence"] for r in rows if r["label"] == "real"}
    named = "/".join(vocoders) if copies else ""
    if copies and vocoders:
        log(f"  {n_copies} training recordings get a {named} copy "
            f"({len(pair_of) - len(items)} have one already)")
    if copies and readers:
        log(f"  {len(items) - n_copies} training recordings get a {'/'.join(readers)} reading "
            "of their text" + (f"; none for {sum(unspoken.values())} (no training voice speaks "
                               f"{', '.join(sorted(unspoken))}, or no text)" if unspoken else ""))
    if not copies:
        log(f"  no copies; {', '.join(validation_sources)} moved to validation")
    new = builder.run(items)
    for row in new:
        if row["generator"] in TTS:
            row["text_origin"] = origins.get(row["key"], "")
            text_from = {"pool": "corpus training texts", "textbank": "Tux Paint (GPL-2)"}.get(
                row["text_origin"], licences.get(row["original"], ""))
            row["licence"] = f"{LICENCES[row['generator']]}; text: {text_from}"
        else:
            row["licence"] = licences.get(row["original"], row["licence"])
    old = [{**r, "path": _relative(base, out, r["path"])} for r in rows]
    # a base built by this builder keeps its pairs (copies by other vocoders than these)
    merged = [{**r, "pair_of": pair_of.get(r["key"], r.get("pair_of") or "")} for r in old + new]
    write_metadata(out / "metadata.csv", merged, fields=PAIRED_FIELDS)
    counts = Counter((r["split"], r["label"]) for r in merged)
    summary: dict[str, Any] = {}
    base_info = base / "corpus.json"
    if base_info.is_file():  # the base plan, which the trainer copies into the model card
        base_corpus = json.loads(base_info.read_text(encoding="utf-8"))
        summary.update({k: base_corpus[k] for k in BASE_KEYS if k in base_corpus})
        summary["base_command"] = base_corpus.get("command", "")
        summary["split_rule"] = base_corpus.get("split_rule", "")
    summary.update({
        "command": command, "base": str(base), "paired_vocoder": named, "seed": seed,
        **({"paired_readers": "/".join(readers),
            "readings": {"planned": len(items) - n_copies,
                         "by_voice": dict(sorted(Counter(
                             it.voice for it in items[n_copies:]).items())),
                         "foreign": sum(1 for it in items[n_copies:]
                                        if engines.voices[it.generator].get(
                                            it.voice.split(":", 1)[1]) != it.language),
                         "none_for_language": dict(sorted(unspoken.items()))}}
           if copies and readers else {}),
        "validation_sources": list(validation_sources),
        "paired": {"copies_added": len(new), "planned": len(items),
                   "training_pairs": sum(1 for r in merged if r["pair_of"]),
                   "by_generator": dict(Counter(r["generator"] for r in new)),
                   "skipped": builder.skipped},
        "split_rule": (summary.get("split_rule", "") + "; "
                       + ("; ".join(
                           ([f"every training recording also has one {named} copy in training"]
                            if copies and vocoders else [])
                           + ([f"every training recording in a language a training voice of "
                               f"{'/'.join(readers)} speaks also has a reading of its text "
                               "by that voice, in its set-up"
                               + ("; the others, by any training voice of "
                                  f"{'/'.join(g for g in readers if g in FOREIGN_READERS)} "
                                  "in the recording's language" if foreign_readings else "")]
                              if copies and readers else []))
                          if copies else "no copies added")
                       + (f" ({', '.join(validation_sources)} moved from training to "
                          "validation; test unchanged)" if validation_sources
                          else " (validation and test unchanged)")),
        "n_clips": len(merged),
        "counts": {f"{s}/{lab}": n for (s, lab), n in sorted(counts.items())},
        "seconds_this_run": round(time.time() - t0, 1)})
    (out / "corpus.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.audio_paired",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="a built corpus (metadata.csv)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vocoder", default=TRAIN_VOCODER,
                        help="training vocoders of training.audio.vocoders, comma-separated, "
                             "dealt in turn (default: world)")
    parser.add_argument("--tts", default="", metavar="ENGINE",
                        help="text-to-speech engines (e.g. kokoro) whose training voices also "
                             "read each training recording's text, in its set-up; with "
                             "--vocoder none, no vocoded copies")
    parser.add_argument("--foreign-readings", action="store_true",
                        help="recordings in languages no training voice of --tts speaks are "
                             "read by any training voice of "
                             f"{', '.join(FOREIGN_READERS)} in the recording's language "
                             "(phonemised by eSpeak NG)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-copies", action="store_true",
                        help="add no copies: only move --validation-sources (a twin-free "
                             "baseline with the same validation)")
    parser.add_argument("--validation-sources", default="", metavar="S1,S2",
                        help="move the base corpus's training clips of these sources, real and "
                             "fake, to validation: a recording set-up training never hears")
    args = parser.parse_args(argv)
    words = ["python", "-m", "training.audio_paired", *(sys.argv[1:] if argv is None else argv)]
    vocoders = () if args.vocoder == "none" else tuple(args.vocoder.split(","))
    summary = build_paired(args.out, base=args.base, vocoders=vocoders,
                           readers=tuple(filter(None, args.tts.split(","))),
                           foreign_readings=args.foreign_readings, seed=args.seed,
                           copies=not args.no_copies,
                           validation_sources=tuple(filter(None,
                                                           args.validation_sources.split(","))),
                           command=shlex.join(words))
    print(json.dumps({k: summary[k] for k in ("paired", "counts", "seconds_this_run")},
                     indent=2))
