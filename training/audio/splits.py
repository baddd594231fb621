"""Corpus v2's split plan: what the test and validation splits hold out whole, so that the
test figures are for what users meet (speakers, recording set-ups, languages and synthesisers
never heard in training), and the leave-one-source-out folds.

A clip goes to test when any of its attributes (source, language, speaker, generator, voice)
is held out for test, else to validation when any is held out for validation, else to train.
A fake carries the attributes of the real clip or text it came from, so a training
synthesiser reading a test source's sentence is tested, never trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class HoldOut:
    """What one split holds out whole. ``speakers`` and ``voices`` match exactly or by a
    prefix ending in ``*`` (``fillets-en-*``, ``kokoro:bf_*``)."""

    sources: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    speakers: tuple[str, ...] = ()
    generators: tuple[str, ...] = ()
    voices: tuple[str, ...] = ()
    why: str = ""

    def reason(self, attrs: Mapping[str, str]) -> str | None:
        """The first held-out attribute of a clip (``"language=el"``), or None. A synthetic
        clip's ``speaker`` is its voice; ``origin_speaker`` is the person whose line it reads
        (held out like a speaker, so no line of a held-out speaker trains)."""
        for name, values in (("source", self.sources), ("language", self.languages),
                             ("speaker", self.speakers), ("origin_speaker", self.speakers),
                             ("generator", self.generators), ("voice", self.voices)):
            value = attrs.get(name, "")
            if value and any(_match(value, v) for v in values):
                return f"{name}={value}"
        return None


def _match(value: str, pattern: str) -> bool:
    return value.startswith(pattern[:-1]) if pattern.endswith("*") else value == pattern


@dataclass(frozen=True)
class SplitPlan:
    test: HoldOut
    validation: HoldOut
    notes: tuple[str, ...] = field(default_factory=tuple)

    def split_of(self, attrs: Mapping[str, str]) -> str:
        if self.test.reason(attrs):
            return "test"
        return "validation" if self.validation.reason(attrs) else "train"

    def as_dict(self) -> dict[str, Any]:
        return {"rule": "test if any attribute (source, language, speaker, generator, voice) is "
                        "held out for test, else validation if any is held out for "
                        "validation, else train; a fake carries the source, language and "
                        "speaker of the real clip or text it came from",
                "test": asdict(self.test), "validation": asdict(self.validation),
                "notes": list(self.notes)}


# The default plan. Test: two whole real sources (Asterisk's professional telephone voices,
# gcin's Mandarin speakers), the English cast of Fish Fillets (speakers whose language trains),
# four whole languages, and one generator of each kind (Flite, Griffin-Lim, a set of Kokoro
# voices: British English, Mandarin, Italian). Validation (best epoch, temperature, threshold):
# KTuberling, Catalan and Ukrainian, SVOX Pico, MLSA and other Kokoro voices.
DEFAULT_PLAN = SplitPlan(
    test=HoldOut(sources=("asterisk", "gcin"), languages=("el", "he", "hu", "zh"),
                 speakers=("fillets-en-*",), generators=("flite", "griffinlim"),
                 voices=("kokoro:bf_*", "kokoro:bm_*", "kokoro:z*", "kokoro:i*"),
                 why="what users meet: new recording set-ups, speakers, languages, synthesisers"),
    validation=HoldOut(sources=("ktuberling",), languages=("ca", "uk"),
                       generators=("pico", "mlsa"),
                       voices=("kokoro:p*", "kokoro:af_river", "kokoro:am_onyx"),
                       why="threshold and temperature on sources and generators that test "
                           "does not hold"),
    notes=("eSpeak NG, Festival, WORLD and the other Kokoro voices train; a training "
           "generator also appears in test and validation where it reads a held-out source's "
           "text or speaks a held-out language (the 'seen generator, unseen text' rows).",))


def loso_rows(rows: Sequence[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Leave one real source out: every clip of ``source`` (its real clips, their vocoded
    copies and the synthetic clips reading its texts) is the test split; validation keeps the
    plan's validation clips of other sources; everything else trains, including the plan's
    other test clips. Rows are copied with the new ``split``."""
    if not any(r["source"] == source for r in rows):
        raise SystemExit(f"no clips of source '{source}' in the corpus; the sources are "
                         f"{', '.join(sorted({r['source'] for r in rows}))}.")
    out = []
    for r in rows:
        if r["source"] == source:
            split = "test"
        elif r["split"] == "validation":
            split = "validation"
        else:
            split = "train"
        out.append({**r, "split": split})
    return out


def loso_sources(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The real sources a leave-one-source-out fold can leave out (those with real clips)."""
    return sorted({r["source"] for r in rows if r["label"] == "real"})


def selection_rows(rows: Sequence[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """A leave-one-source-out fold for choosing between recipes without touching the test
    split: the plan's test clips are left out altogether; the held-out training source's
    clips are the fold's test split, except its twins (rows with ``pair_of``), which are left
    out too, so that recipes with and without twins are tested on the same clips; validation
    keeps the plan's validation clips; the rest trains."""
    if source not in selection_sources(rows):
        raise SystemExit(f"'{source}' has no real training clips; a selection fold holds out "
                         f"one of {', '.join(selection_sources(rows))}.")
    out = []
    for r in rows:
        if r["split"] == "test" or (r["source"] == source and r.get("pair_of")):
            continue
        split = "test" if r["source"] == source else r["split"]
        out.append({**r, "split": split})
    return out


def selection_sources(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The sources a selection fold can hold out: those with real clips in training."""
    return sorted({r["source"] for r in rows if r["label"] == "real" and r["split"] == "train"})


def out_of_source_rows(rows: Sequence[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """A training source scored by a network that never heard it: the fold a trained network
    needs for the out-of-source scores a frozen encoder's read-out gets by refitting
    (:func:`training.audio.train.out_of_source_logits`, grouped the same way). The plan's test
    clips are left out altogether; every *training* clip of ``source`` (its real clips, their
    twins and the synthetic clips reading its texts) is the fold's test split; validation keeps
    the plan's validation clips, of ``source`` too; the rest trains."""
    if source not in selection_sources(rows):
        raise SystemExit(f"'{source}' has no real training clips; an out-of-source fold holds "
                         f"out one of {', '.join(selection_sources(rows))}.")
    return [{**r, "split": "test" if r["source"] == source and r["split"] == "train"
             else r["split"]} for r in rows if r["split"] != "test"]


class Fold(NamedTuple):
    """One kind of fold: how it builds its rows from the corpus's, which sources it can hold
    out, and what its test split holds (``{source}`` filled in)."""

    rows: Callable[[Sequence[dict[str, Any]], str], list[dict[str, Any]]]
    sources: Callable[[Iterable[dict[str, Any]]], list[str]]
    rule: str


#: fold kinds, by the folder prefix of ``<corpus>/<kind>-<source>``
FOLDS: dict[str, Fold] = {
    "loso": Fold(loso_rows, loso_sources,
                 "leave one source out: {source} is the test split"),
    "select": Fold(selection_rows, selection_sources,
                   "leave one source out: {source} is the test split; the plan's test clips "
                   "and the twins of {source} left out"),
    "oos": Fold(out_of_source_rows, selection_sources,
                "out of source: the training clips of {source} (with its twins) are the test "
                "split; the plan's test clips left out"),
}
