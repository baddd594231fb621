"""Corpus v2's card: the split plan, counts per split x source / generator / language, the
confound check and the leave-one-source-out folds, as ``corpus_card.json`` and a short
``corpus_card.md``; also ``corpus.json`` with the keys the trainer records from v1."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from .chain import SAMPLE_RATE, TRIM_TOP_DB
from .confounds import CUES, EXTRA_CUES, confound_check
from .splits import SPLITS, SplitPlan, loso_sources


def _table(rows: Sequence[dict[str, Any]], key: str) -> dict[str, dict[str, int]]:
    """split -> "<label>/<value of key>" -> count."""
    out: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        c = Counter(f"{r['label']}/{r[key]}" for r in rows if r["split"] == split)
        out[split] = dict(sorted(c.items()))
    return out


def _medians(rows: Sequence[dict[str, Any]], key: str) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for split in SPLITS:
        out[split] = {}
        for label in ("real", "fake"):
            vals = [float(r[key]) for r in rows if r["split"] == split and r["label"] == label
                    and r.get(key) not in (None, "")]
            out[split][label] = round(float(np.median(vals)), 3) if vals else None
    return out


def loso_folds(rows: Sequence[dict[str, Any]], out: Path) -> dict[str, dict[str, Any]]:
    folds = {}
    for source in loso_sources(rows):
        mine = [r for r in rows if r["source"] == source]
        folds[source] = {
            "test_real": sum(r["label"] == "real" for r in mine),
            "test_fake": sum(r["label"] == "fake" for r in mine),
            "build": f"python -m training.audio_corpus_v2 --out {out} --loso {source}",
            "train": f"python -m training.audio_loso --data {out} --source {source}",
        }
    return folds


def corpus_card(out: Path, rows: Sequence[dict[str, Any]], *, split_plan: SplitPlan,
                settings: dict[str, Any] | None = None, command: str = "",
                found: dict[str, int] | None = None, engines: Any = None,
                skipped: dict[str, str] | None = None, warnings: Sequence[str] = (),
                planned: int | None = None, seconds: float | None = None,
                check_confounds: bool = True, tools: dict[str, str] | None = None,
                previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card of the corpus in ``out`` whose manifest rows are ``rows``."""
    prev = previous or {}
    rates = Counter()
    for r in rows:
        rates[sf.info(str(Path(out) / r["path"])).samplerate] += 1
    generators = sorted({r["generator"] for r in rows if r["label"] == "fake"})
    train_gens = {r["generator"] for r in rows if r["split"] == "train" and r["label"] == "fake"}
    train_voices = {r["voice"] for r in rows if r["split"] == "train" and r["label"] == "fake"}
    unseen = {split: {"generators": sorted({r["generator"] for r in rows if r["split"] == split
                                            and r["label"] == "fake"} - train_gens),
                      "voices": sorted({r["voice"] for r in rows if r["split"] == split
                                        and r["label"] == "fake"} - train_voices)}
              for split in ("validation", "test")}
    card: dict[str, Any] = {
        "kind": "audio corpus v2",
        "command": command or prev.get("command", ""),
        "settings": settings or prev.get("settings", {}),
        "sample_rate": SAMPLE_RATE, "trim_top_db": TRIM_TOP_DB,
        "written_sample_rates": {str(k): v for k, v in sorted(rates.items())},
        "n_clips": len(rows),
        "n_planned": planned if planned is not None else prev.get("n_planned"),
        # a resumed build adds its run to the earlier runs' seconds (those that wrote a card)
        "build_seconds": round(seconds, 1) if seconds is not None else prev.get("build_seconds"),
        "build_seconds_all_runs": round(
            prev.get("build_seconds_all_runs", prev.get("build_seconds") or 0.0)
            + (seconds or 0.0), 1),
        "sources_found": found if found is not None else prev.get("sources_found", {}),
        "generators": {g: sorted({r["voice"] for r in rows if r["generator"] == g})
                       for g in generators},
        "generators_missing": (engines.missing if engines is not None
                               else prev.get("generators_missing", {})),
        "warnings": list(warnings) or prev.get("warnings", []),
        "skipped": dict(list((skipped or {}).items())[:200]) if skipped is not None
        else prev.get("skipped", {}),
        "n_skipped": len(skipped) if skipped is not None else prev.get("n_skipped", 0),
        "split_plan": split_plan.as_dict(),
        "unseen_in_training": unseen,
        "counts": {
            "split_label": {s: dict(Counter(r["label"] for r in rows if r["split"] == s))
                            for s in SPLITS},
            "split_source": _table(rows, "source"),
            "split_generator": _table(rows, "generator"),
            "split_kind": _table(rows, "generator_kind"),
            "split_language": _table(rows, "language"),
            "split_reason": {s: dict(Counter(r["split_reason"] for r in rows if r["split"] == s))
                             for s in ("validation", "test")},
        },
        "medians": {"duration_s": _medians(rows, "duration"),
                    "speech_s": _medians(rows, "speech_duration"),
                    "original_sample_rate": _medians(rows, "original_sample_rate")},
        "original_sample_rates": {s: {lab: dict(Counter(str(r["original_sample_rate"]) for r in rows
                                                        if r["split"] == s and r["label"] == lab))
                                      for lab in ("real", "fake")} for s in SPLITS},
        "channel_augmentation": {s: {lab: dict(Counter(_channel(r["params"]) for r in rows
                                                       if r["split"] == s and r["label"] == lab))
                                     for lab in ("real", "fake")} for s in SPLITS},
        "loso": loso_folds(rows, out),
        "tools": tools or prev.get("tools", {}),
    }
    if check_confounds and all(card["counts"]["split_label"][s].get(lab) for s in ("train", "test")
                               for lab in ("real", "fake")):
        card["confound_check"] = confound_check(Path(out), rows, cues={**CUES, **EXTRA_CUES})
    elif "confound_check" in prev:
        card["confound_check"] = prev["confound_check"]
    return card


def _channel(params: str) -> str:
    for word in str(params).split():
        if word.startswith("channel="):
            return word.split("=", 1)[1]
    return "none"


def write_card(out: Path, card: dict[str, Any]) -> None:
    out = Path(out)
    (out / "corpus_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    (out / "corpus_card.md").write_text(card_markdown(card))
    plan = card["split_plan"]
    summary = {  # what training.audio.data records in a model card (v1's keys)
        "command": card["command"], "seed": card["settings"].get("seed"),
        "generators": sorted(card["generators"]),
        "split_rule": plan["rule"], "test_languages": plan["test"]["languages"],
        "validation_languages": plan["validation"]["languages"],
        "test_held_out": plan["test"], "validation_held_out": plan["validation"],
        "tools": card["tools"], "n_clips": card["n_clips"], "trim_top_db": card["trim_top_db"],
    }
    (out / "corpus.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


def _md_counts(table: dict[str, dict[str, int]]) -> list[str]:
    keys = sorted({k for s in table.values() for k in s})
    lines = ["| label/value | " + " | ".join(SPLITS) + " |", "| --- |" + " ---: |" * len(SPLITS)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(str(table[s].get(k, 0)) for s in SPLITS) + " |")
    return lines


def card_markdown(card: dict[str, Any]) -> str:
    plan = card["split_plan"]
    lines = [
        "# Audio corpus v2", "",
        f"`{card['command']}`", "",
        f"{card['n_clips']} clips at {card['sample_rate']} Hz (written rates: "
        f"{card['written_sample_rates']}); built in {card.get('build_seconds_all_runs')} s "
        f"over its runs (this run {card.get('build_seconds')} s); "
        f"{card.get('n_skipped', 0)} planned clips skipped.", "",
        "## Split plan", "", plan["rule"] + ".", "",
    ]
    for split in ("test", "validation"):
        h = plan[split]
        lines.append(f"- **{split}** holds out sources {h['sources']}, languages "
                     f"{h['languages']}, speakers {h['speakers']}, generators "
                     f"{h['generators']}, voices {h['voices']} ({h['why']}).")
    for split, u in card["unseen_in_training"].items():
        lines.append(f"- never in training, in {split}: generators {u['generators']}, "
                     f"{len(u['voices'])} voices")
    lines += ["", "## Counts", ""]
    lines += ["| split | real | fake |", "| --- | ---: | ---: |"]
    for s in SPLITS:
        c = card["counts"]["split_label"][s]
        lines.append(f"| {s} | {c.get('real', 0)} | {c.get('fake', 0)} |")
    for title, key in (("Split x source", "split_source"), ("Split x generator", "split_generator"),
                       ("Split x generator kind", "split_kind")):
        lines += ["", f"### {title}", ""] + _md_counts(card["counts"][key])
    lines += ["", "## Confounds", ""]
    med = card["medians"]
    lines.append("| split | median duration real / fake (s) | median speech real / fake (s) |")
    lines.append("| --- | --- | --- |")
    for s in SPLITS:
        d, sp = med["duration_s"][s], med["speech_s"][s]
        lines.append(f"| {s} | {d['real']} / {d['fake']} | {sp['real']} / {sp['fake']} |")
    check = card.get("confound_check")
    if check:
        lines += ["", f"Recording cues alone ({check['method']}): test AUC "
                      f"{check['auc_recording_cues']} (recording cues), {check['auc_all_cues']} "
                      "(all cues, with level, spectrum and silences); 0.5 = no information.", "",
                  "| cue | test AUC | median real | median fake |", "| --- | ---: | ---: | ---: |"]
        for cue, auc in check["auc_per_cue"].items():
            lines.append(f"| {cue} | {auc} | {check['test_median_real'][cue]} | "
                         f"{check['test_median_fake'][cue]} |")
    lines += ["", "## Leave one source out", "",
              "| source | test real | test fake | build the fold |", "| --- | ---: | ---: | --- |"]
    for source, f in card["loso"].items():
        lines.append(f"| {source} | {f['test_real']} | {f['test_fake']} | `{f['build']}` |")
    if card.get("generators_missing") or card.get("warnings"):
        lines += ["", "## Left out", ""]
        lines += [f"- {g}: {why}" for g, why in card.get("generators_missing", {}).items()]
        lines += [f"- {w}" for w in card.get("warnings", []) if w]
    return "\n".join(lines) + "\n"


