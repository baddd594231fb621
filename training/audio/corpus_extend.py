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

``fakes="mix"`` (``--extra-fakes mix``) removes the confound the WORLD-only copies bring (WORLD
58% of the training fakes against 18% in the base): each added real clip gets *one* fake whose
generator is drawn so that the added fakes' generator mix matches the base corpus's *training*
fakes (:func:`base_mix`: eSpeak NG, Festival, Kokoro and WORLD in corpus v2), with a voice the
split plan lets train (never a test or validation generator or voice), reading the clip's own
text where its package says it (:mod:`training.audio.texts_v3`: subtitles, file names) or else
a sentence of the clip's language from the base corpus's training texts. Each fake is built by
the base corpus's :class:`~training.audio.corpus_v2.Builder` (its synthesisers, rates and
pitch drawn per clip, the storage trip at the real clip's stored rate, the shared chain);
``metadata.csv`` gains ``text_origin``.

A clip the base corpus's split plan would hold out (a Ukrainian Hedgewars pack: Ukrainian is a
validation language) is left out rather than trained on; a source of the held-out test
families (``NOT_FOR_TRAINING``) is refused. Seeded per clip and resumable as the base build is.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from dataclasses import replace
from typing import Any

import numpy as np

from .corpus_v2 import (LICENCES, METADATA_FIELDS, TTS, Builder, Engines, Item, _crc, _slug,
                        find_engines, pick_reals, read_metadata, write_metadata)
from .sources import Speech, text_bank
from .sources_v3 import read_extracted, read_manifest
from .splits import DEFAULT_PLAN, SplitPlan
from .texts_v3 import READ_AS, Text, common_words, pick_text, source_texts, text_pool

# Sources that stay unseen: the family of corpus v2's held-out test source (Asterisk's prompts)
# and the set-ups the experiment keeps for testing.
NOT_FOR_TRAINING = {"asterisk-gsm": "the family of corpus v2's held-out test source Asterisk",
                    "codec2": "held out: no storage trip imitates its radio channel",
                    "bass": "held out as an unseen source (FOTAQ's sister set-up)",
                    "pocketsphinx": "ten clips; held out"}
TRAIN_VOCODER = "world"
FAKE_MODES = ("world", "mix")
FIELDS = (*METADATA_FIELDS, "text_origin")
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


def base_mix(rows: Sequence[dict[str, str]]) -> dict[str, float]:
    """Each generator's share of the base corpus's *training* fakes (corpus v2: eSpeak NG 45%,
    Festival 21%, WORLD 18%, Kokoro 17%)."""
    counts = Counter(r["generator"] for r in rows
                     if r.get("split") == "train" and r.get("label") == "fake")
    total = sum(counts.values())
    if not total:
        raise SystemExit("the base corpus has no training fakes to take the generator mix from")
    return {g: n / total for g, n in sorted(counts.items())}


def _crc32(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _voice_id(gen: str, voice: str) -> str:
    return f"{gen}:{voice}" if gen in ("festival", "pico", "kokoro") else gen


def training_voices(engines: Engines, gen: str, language: str,
                    split_plan: SplitPlan = DEFAULT_PLAN) -> list[str]:
    """The voice ids of ``gen`` speaking ``language`` that the split plan lets train."""
    return [vid for vid in (_voice_id(gen, v) for v, lang in
                            sorted(engines.voices.get(gen, {}).items()) if lang == language)
            if split_plan.split_of({"generator": gen, "voice": vid, "language": language})
            == "train"]


def plan_mixed(reals: Sequence[Speech], shares: dict[str, float], engines: Engines, *,
               texts: dict[str, Text], pool: dict[str, list[str]], bank: dict[str, list[str]],
               seed: int = 0, split_plan: SplitPlan = DEFAULT_PLAN
               ) -> tuple[list[Item], list[Speech], dict[str, str]]:
    """Training items for the extra real clips and one fake of each, the fakes' generators in
    ``shares`` (a TTS engine only where one of its training voices speaks the clip's
    language). Returns (items, clips left out by the split plan, text origin per item key).

    ``texts``: a clip's own text by its path; the others' fakes read a seeded pick of ``pool``
    (else ``bank``) in the clip's language. Clips with the fewest usable generators are given
    theirs first, each drawing in proportion to what is left of every generator's quota, so
    that the mix holds where some languages have only eSpeak NG and WORLD."""
    shares = {g: w for g, w in shares.items() if w > 0}
    usable_gens = [g for g in shares if g in engines.voices or g in engines.vocoders]
    missing = sorted(set(shares) - set(usable_gens))
    if missing:
        raise SystemExit(f"generators of the base mix not installed here: {', '.join(missing)} "
                         "(python -m training.audio_corpus_v2 --help lists what to install)")
    clips, dropped, origins = [], [], {}
    for s in reals:
        own = texts.get(str(s.path))
        s = replace(s, text=own.text) if own is not None else s
        real = Item(f"{s.source}-{s.language}-{_slug(s.path.stem)}-{_crc(str(s.path))}",
                    "real", s.source, s.language, s.source, s.speaker, s.text, s)
        if split_plan.split_of(real.attributes()) != "train":
            dropped.append(s)
            continue
        lang = READ_AS.get(s.language, s.language)
        rng = np.random.default_rng([seed, _crc32(str(s.path)), 1])  # the generator's draw
        text = own or pick_text(lang, np.random.default_rng([seed, _crc32(str(s.path)), 2]),
                                pool, bank)
        options = [g for g in usable_gens if g in engines.vocoders
                   or (text is not None and training_voices(engines, g, lang, split_plan))]
        if not options:
            raise SystemExit(f"no generator of the mix can make a fake of {s.path} (language "
                             f"{s.language}): no text in the language, or no training voice")
        clips.append((s, real, own, text, lang, rng, options))
    order = np.random.default_rng([seed, 2]).permutation(len(clips))
    order = sorted(order, key=lambda i: len(clips[i][6]))  # stable: the fewest options first
    quota = {g: shares[g] * len(clips) for g in usable_gens}
    used: Counter[str] = Counter()
    turn: Counter[tuple[str, str]] = Counter()
    voice_order: dict[tuple[str, str], list[str]] = {}
    items: dict[int, list[Item]] = {}
    for i in order:
        s, real, own, text, lang, rng, options = clips[i]
        left = np.array([max(quota[g] - used[g], 0.0) for g in options])
        if left.sum() <= 0:
            left = np.array([shares[g] for g in options])
        gen = options[int(rng.choice(len(options), p=left / left.sum()))]
        used[gen] += 1
        origins[real.key] = own.origin if own is not None else ""
        if gen in engines.vocoders:
            fake = Item(f"{gen}-x0-{_crc(str(s.path))}", "fake", s.source, s.language, gen, gen,
                        s.text, s)
            origins[fake.key] = origins[real.key]
        else:
            if (gen, lang) not in voice_order:
                vs = training_voices(engines, gen, lang, split_plan)
                perm = np.random.default_rng([seed, _crc32(f"{gen}|{lang}")]).permutation(len(vs))
                voice_order[(gen, lang)] = [vs[j] for j in perm]
            vs = voice_order[(gen, lang)]
            vid = vs[turn[(gen, lang)] % len(vs)]
            turn[(gen, lang)] += 1
            fake = Item(f"{gen}-x-{_crc(vid, text.text, str(s.path))}", "fake", s.source, lang,
                        gen, vid, text.text, s)
            origins[fake.key] = text.origin
        if split_plan.split_of(fake.attributes()) != "train":  # cannot happen: voices filtered
            raise AssertionError(f"{fake.key} would not train: {fake.attributes()}")
        items[i] = [real, fake]
    return [it for i in range(len(clips)) if i in items for it in items[i]], dropped, origins


def _relative(base: Path, out: Path, path: str) -> str:
    return os.path.relpath(base / path, out)


def build_extended(out: Path, *, base: Path, extra_root: Path, sources: Sequence[str],
                   cap: int = 150, copies: int = 1, seed: int = 0,
                   split_plan: SplitPlan = DEFAULT_PLAN, builder_kwargs: dict | None = None,
                   log: Callable[[str], None] = lambda m: sys.stderr.write(m + "\n"),
                   command: str = "", fakes: str = "world", raw: Path | None = None,
                   engines: Engines | None = None,
                   bank: dict[str, list[str]] | None = None,
                   allow_held_out: Sequence[str] = ()) -> dict[str, Any]:
    """Build (or finish) ``out``: the base corpus's clips as they are plus the extra sources'
    real clips and their fakes in training: ``copies`` WORLD copies of each (``fakes="world"``)
    or one fake each in the base corpus's training mix (``"mix"``; the texts from the packages
    unpacked under ``raw``, default ``extra_root/raw``; ``engines`` and ``bank`` default to
    what is installed). A source of :data:`NOT_FOR_TRAINING` is refused unless it is also in
    ``allow_held_out`` (``--train-held-out``); ``corpus.json`` then says which and why it was
    held out. Returns the summary written to ``corpus.json``."""
    if fakes not in FAKE_MODES:
        raise SystemExit(f"--extra-fakes takes one of {', '.join(FAKE_MODES)}, got {fakes!r}")
    if fakes == "mix" and copies != 1:
        raise SystemExit("--extra-fakes mix makes one fake per added clip; leave --extra-copies "
                         "at 1")
    t0 = time.time()
    refused = {s: NOT_FOR_TRAINING[s] for s in sources
               if s in NOT_FOR_TRAINING and s not in allow_held_out}
    if refused:
        raise SystemExit("these sources must stay out of training: " + "; ".join(
            f"{s} ({why})" for s, why in refused.items()) + "; name them in --train-held-out "
            "to train on them anyway (the corpus card then says so)")
    overridden = {s: NOT_FOR_TRAINING[s] for s in sources if s in NOT_FOR_TRAINING}
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
    base_rows = read_metadata(base_meta)
    origins: dict[str, str] = {}
    shares: dict[str, float] = {}
    if fakes == "mix":
        shares = base_mix(base_rows)
        extracted = {str(Path(extra_root) / p): t for p, t in source_texts(
            list(manifest.values()), Path(raw or Path(extra_root) / "raw"),
            common=common_words(t for r in base_rows if r.get("language") == "en"
                                for t in [r.get("text") or ""])).items()}
        bank = text_bank() if bank is None else bank
        engines = engines or find_engines(tuple(shares), kokoro_dir=(builder_kwargs or {}).get(
            "kokoro_dir"))
        items, late, origins = plan_mixed(reals, shares, engines, texts=extracted,
                                          pool=text_pool(base_rows), bank=bank, seed=seed,
                                          split_plan=split_plan)
    else:
        items, late = plan_extra(reals, copies=copies, split_plan=split_plan)
    dropped += late
    for (source, language), n in sorted(Counter((s.source, s.language) for s in dropped).items()):
        log(f"  left out {n} clips of {source} ({language}): the split plan holds them out")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    builder = Builder(out, seed=seed, log=log, **(builder_kwargs or {}))
    builder.original_rates.update({p: int(r["original_rate"]) for p, r in manifest.items()
                                   if r.get("original_rate")})
    fake_text = (f"{copies} {TRAIN_VOCODER} cop{'y' if copies == 1 else 'ies'} each"
                 if fakes == "world" else "one fake each in the base training mix (" + ", ".join(
                     f"{g} {w:.0%}" for g, w in shares.items()) + ")")
    log(f"  extra: {sum(1 for it in items if it.label == 'real')} real clips of "
        f"{', '.join(sorted(found))} (at most {cap} each), {fake_text}; {len(dropped)} left "
        f"out by the split plan")
    if fakes == "mix":  # reals first, then the fakes in a seeded order (a partial build holds
        # every generator)
        fake_items = [it for it in items if it.label == "fake"]
        perm = np.random.default_rng(seed).permutation(len(fake_items))
        items = [it for it in items if it.label == "real"] + [fake_items[i] for i in perm]
    new = builder.run(items)
    for row in new:  # the extracted clips' licence is in their manifest, not sources.PACKAGES
        origin = manifest.get(row["original"])
        row["text_origin"] = origins.get(row["key"], "")
        if origin is None:
            continue
        if row["label"] == "real" or row["generator"] not in TTS:
            row["licence"] = origin["licence"]
        else:
            text_from = (origin["licence"] if row["text_origin"] not in ("pool", "textbank")
                         else "corpus v2's training texts" if row["text_origin"] == "pool"
                         else "Tux Paint (GPL-2)")
            row["licence"] = f"{LICENCES[row['generator']]}; text: {text_from}"
    old = [{**r, "path": _relative(base, out, r["path"])} for r in base_rows]
    write_metadata(out / "metadata.csv", old + new, fields=FIELDS if fakes == "mix"
                   else METADATA_FIELDS)
    counts = Counter((r["split"], r["label"]) for r in old + new)
    added = Counter((r["source"], r["language"], r["label"]) for r in new)
    summary = {
        "command": command, "base": str(base), "extra_root": str(extra_root),
        "extra_train_sources": sorted(found), "extra_per_source": cap,
        "copies_per_real": copies, "extra_fakes": fakes, "seed": seed,
        **({"vocoder": TRAIN_VOCODER} if fakes == "world" else {
            "generator_shares_target": {g: round(w, 4) for g, w in shares.items()},
            "added_fakes_per_generator": dict(sorted(Counter(
                r["generator"] for r in new if r["label"] == "fake").items())),
            "added_fakes_per_voice": dict(sorted(Counter(
                r["voice"] for r in new if r["label"] == "fake").items())),
            "text_origins": {f"{lab}/{o or 'none'}": n for (lab, o), n in sorted(Counter(
                (r["label"], r["text_origin"]) for r in new).items())}}),
        "split_rule": "the base corpus's splits unchanged; the extra sources' real clips and "
                      "their fakes train (a clip whose attributes the base plan holds "
                      "out is left out)",
        "n_clips": len(old) + len(new),
        "counts": {f"{s}/{lab}": n for (s, lab), n in sorted(counts.items())},
        "added": {f"{s}/{lang}/{lab}": n for (s, lang, lab), n in sorted(added.items())},
        "left_out_by_plan": len(dropped), "skipped": builder.skipped,
        **({"held_out_sources_trained": overridden} if overridden else {}),
        "seconds_this_run": round(time.time() - t0, 1),
    }
    base_info = base / "corpus.json"
    if base_info.is_file():  # the base plan, which the trainer copies into the model card
        base_corpus = json.loads(base_info.read_text(encoding="utf-8"))
        summary.update({k: base_corpus[k] for k in BASE_KEYS if k in base_corpus})
        summary["base_command"] = base_corpus.get("command", "")
    (out / "corpus.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary

