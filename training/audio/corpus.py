"""Build the offline audio deepfake corpus: people reading letters and syllables (KLettres) as
the real class, eSpeak NG, Flite and Festival (HTS) saying the same texts as the fake class.

    python -m training.audio_corpus --out data/audio_corpus [--seed 0] [--max-per-language N]

Every clip, real or fake, goes through the *same* chain (:mod:`training.audio.chain`), so that
a detector cannot tell the classes apart by how they were recorded or stored; fakes are also
length-matched (:mod:`training.audio.synth`). ``--check-confounds`` measures what recording
cues alone give away (:mod:`training.audio.confounds`).

The split is by language (:data:`TEST_LANGUAGES`, :data:`VALIDATION_LANGUAGES`, the rest
train): a test language's speakers, texts and synthetic voices are never seen in training.
Everything is seeded per clip (the seed and the clip's key), so a rerun, or a resumed run,
produces the same files; finished clips are skipped. ``metadata.csv`` lists every clip:
path, label (real|fake), language, speaker (voice id), generator, text, duration, split.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from xai_platform.errors import InputError
from xai_platform.preprocessing import audio

from .chain import SAMPLE_RATE, TRIM_TOP_DB, shared_chain, vorbis_round_trip
from .confounds import confound_check
from .synth import BINARIES, ESPEAK_VOICES, GENERATORS, SYNTHESISERS, available_generators

KLETTRES_ROOT = Path("/usr/share/klettres")

# Split by language, never by clip. Malayalam (28% of the clips, one large set) trains; test
# and validation each mix language families, recording set-ups (noisy, noise-gated, clean)
# and both letters and syllables. English stays in training because Flite and Festival speak
# only English: the detector sees all three generators, and the test languages hold voices of
# eSpeak NG it never heard, in languages it never heard.
TEST_LANGUAGES = ("de", "he", "it", "lt", "nl", "tn")
VALIDATION_LANGUAGES = ("cs", "nb", "pt_BR", "uk")
ENGLISH = ("en", "en_GB")
METADATA_FIELDS = ("path", "label", "language", "speaker", "generator", "text", "duration",
                   "speech_duration", "split", "source", "params")


# --------------------------------------------------------------------------------------------
# What to build


@dataclass(frozen=True)
class Recording:
    """One KLettres clip: ``text`` from its language's sounds.xml (the file name when the
    file is not listed there)."""

    language: str
    path: Path
    text: str
    kind: str  # alpha | syllab


@dataclass(frozen=True)
class Item:
    """One clip of the corpus, fully determined by its key and the seed."""

    key: str
    split: str
    label: str  # real | fake
    language: str
    generator: str  # klettres | espeak-ng | flite | festival
    text: str
    recording: Recording
    voice: str = ""

    @property
    def relpath(self) -> str:
        return f"clips/{self.split}/{self.label}/{self.language}/{self.key}.flac"


_SOUND = re.compile(r'<sound\s+name="([^"]*)"\s+file="([^"]*)"')


def read_klettres(root: Path = KLETTRES_ROOT, *,
                  languages: Iterable[str] | None = None) -> list[Recording]:
    """Every clip under ``root/<lang>/{alpha,syllab}/``, with its text, sorted by path."""
    wanted = set(languages) if languages is not None else None
    found: dict[Path, Recording] = {}
    for lang_dir in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        lang = lang_dir.name
        if wanted is not None and lang not in wanted:
            continue
        texts: dict[Path, str] = {}
        xml = lang_dir / "sounds.xml"
        if xml.is_file():
            for name, file in _SOUND.findall(xml.read_text(encoding="utf-8", errors="replace")):
                texts[(Path(root) / html.unescape(file)).resolve()] = html.unescape(name).strip()
        for kind in ("alpha", "syllab"):
            for path in sorted((lang_dir / kind).glob("*.ogg")):
                key = path.resolve()
                text = texts.get(key) or re.sub(r"[-_]\d+$", "", path.stem)
                found[key] = Recording(lang, path, text, kind)
    return sorted(found.values(), key=lambda r: str(r.path))


def split_of(language: str, *, test: Sequence[str] = TEST_LANGUAGES,
             validation: Sequence[str] = VALIDATION_LANGUAGES) -> str:
    if language in test:
        return "test"
    return "validation" if language in validation else "train"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "x"


def plan(recordings: Sequence[Recording], *, generators: Sequence[str] = GENERATORS,
         real_copies: int = 2, espeak_per_text: int = 2, test: Sequence[str] = TEST_LANGUAGES,
         validation: Sequence[str] = VALIDATION_LANGUAGES) -> list[Item]:
    """The clips to build. Training reals get ``real_copies`` differently augmented copies (to
    balance the classes there); every text gets ``espeak_per_text`` eSpeak NG voices, and
    English texts one Flite and one Festival voice as well."""
    items: list[Item] = []
    for rec in recordings:
        split = split_of(rec.language, test=test, validation=validation)
        stem = f"{rec.language}-{rec.kind}-{_slug(rec.path.stem)}"
        copies = real_copies if split == "train" else 1
        for c in range(copies):
            items.append(Item(f"klettres-{stem}-c{c}", split, "real", rec.language, "klettres",
                              rec.text, rec, voice=f"klettres-{rec.language}"))
        if "espeak-ng" in generators and rec.language in ESPEAK_VOICES:
            for k in range(espeak_per_text):
                items.append(Item(f"espeak-{stem}-{k}", split, "fake", rec.language,
                                  "espeak-ng", rec.text, rec))
        if rec.language in ENGLISH:
            for gen in ("flite", "festival"):
                if gen in generators:
                    items.append(Item(f"{gen}-{stem}-0", split, "fake", rec.language, gen,
                                      rec.text, rec))
    return items


def item_rng(seed: int, key: str) -> np.random.Generator:
    """The clip's own generator: the same clip gets the same randomness in any run order."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


# --------------------------------------------------------------------------------------------
# Building


def finished_rows(out: Path) -> dict[str, dict[str, Any]]:
    """The clips a build at ``out`` finished (``.state/rows.jsonl``, whose file exists), by key:
    what a resumed run skips."""
    state = out / ".state"
    state.mkdir(parents=True, exist_ok=True)
    found: dict[str, dict[str, Any]] = {}
    rows = state / "rows.jsonl"
    if rows.exists():
        for line in rows.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if (out / row["path"]).is_file():
                    found[row["key"]] = row
    return found


@dataclass
class Builder:
    """Builds the planned items into ``out``; resumable through ``out/.state/rows.jsonl``."""

    out: Path
    seed: int = 0
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    speech: dict[str, float] = field(default_factory=dict)  # real speech seconds per recording
    skipped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = self.out / ".state"
        self.rows.update(finished_rows(self.out))
        speech = self.state / "speech_seconds.json"
        if speech.exists():
            self.speech = json.loads(speech.read_text())

    def real_speech_seconds(self, rec: Recording) -> float:
        """How long the real recording's speech lasts once trimmed (the fakes' target)."""
        key = str(rec.path)
        if key not in self.speech:
            wave, sr = audio.decode_audio(rec.path)
            wave = audio.resample(wave, sr, SAMPLE_RATE)
            self.speech[key] = len(audio.trim_silence(wave, SAMPLE_RATE, top_db=TRIM_TOP_DB)) / SAMPLE_RATE
        return self.speech[key]

    def build(self, item: Item, tmp: Path) -> dict[str, Any] | None:
        rng = item_rng(self.seed, item.key)
        if item.label == "real":
            wave, sr = audio.decode_audio(item.recording.path)
            voice, synth_params = item.voice, ""
        else:
            target = self.real_speech_seconds(item.recording) * float(np.exp(rng.normal(0, 0.2)))
            wave, sr, voice, synth_params = SYNTHESISERS[item.generator](
                item.text, item.language, rng, target, tmp)
            if audio.is_silent(wave):
                self.skipped[item.key] = f"{item.generator} produced silence for {item.text!r}"
                return None
            # The KLettres files were stored as 44.1 kHz Ogg Vorbis: fakes take the same trip.
            wave = audio.resample(wave, sr, 44100)
            wave, sr = vorbis_round_trip(wave, 44100, level=float(rng.uniform(0.3, 0.6))), 44100
        clip, speech_s, chain = shared_chain(wave, sr, rng)
        path = self.out / item.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial.flac")
        sf.write(partial, clip, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        partial.replace(path)  # a killed run never leaves a half-written clip behind
        return {"key": item.key, "path": item.relpath, "label": item.label,
                "language": item.language, "speaker": voice, "generator": item.generator,
                "text": item.text, "duration": round(len(clip) / SAMPLE_RATE, 4),
                "speech_duration": round(speech_s, 4), "split": item.split,
                "source": str(item.recording.path),
                "params": " ".join(p for p in (synth_params, chain.text()) if p)}

    def run(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        todo = [it for it in items if it.key not in self.rows]
        done_before = len(items) - len(todo)
        start = time.time()
        with tempfile.TemporaryDirectory(prefix="audio-corpus-") as tmp, \
                open(self.state / "rows.jsonl", "a", encoding="utf-8") as log:
            for i, item in enumerate(todo, 1):
                try:
                    row = self.build(item, Path(tmp))
                except (RuntimeError, subprocess.TimeoutExpired, InputError) as exc:
                    self.skipped[item.key] = str(exc)[:200]
                    row = None
                if row is not None:
                    self.rows[item.key] = row
                    log.write(json.dumps(row, ensure_ascii=False) + "\n")
                    log.flush()
                if i % 25 == 0 or i == len(todo):
                    elapsed = time.time() - start
                    eta = elapsed / i * (len(todo) - i)
                    sys.stderr.write(f"\r  built {i}/{len(todo)} (+{done_before} already there, "
                                     f"{len(self.skipped)} skipped) {elapsed:.0f} s, "
                                     f"about {eta:.0f} s left   ")
                    sys.stderr.flush()
                    (self.state / "speech_seconds.json").write_text(json.dumps(self.speech))
        if todo:
            sys.stderr.write("\n")
        return [self.rows[it.key] for it in items if it.key in self.rows]


def tool_versions() -> dict[str, str]:
    versions = {}
    for name, cmd in (("espeak-ng", ["espeak-ng", "--version"]), ("flite", ["flite", "--version"]),
                      ("festival", ["festival", "--version"])):
        if shutil.which(cmd[0]):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            versions[name] = (proc.stdout or proc.stderr).strip().splitlines()[0][:120]
    return versions


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts per split x class x generator, languages per split, median durations."""
    out: dict[str, Any] = {}
    for split in ("train", "validation", "test"):
        sel = [r for r in rows if r["split"] == split]
        by = Counter((r["label"], r["generator"]) for r in sel)
        med = lambda lab, key: float(np.median([r[key] for r in sel if r["label"] == lab])) \
            if any(r["label"] == lab for r in sel) else None  # noqa: E731
        out[split] = {
            "languages": sorted({r["language"] for r in sel}),
            "real": sum(r["label"] == "real" for r in sel),
            "fake": sum(r["label"] == "fake" for r in sel),
            "by_generator": {f"{lab}/{gen}": n for (lab, gen), n in sorted(by.items())},
            "median_duration_s": {lab: med(lab, "duration") for lab in ("real", "fake")},
            "median_speech_s": {lab: med(lab, "speech_duration") for lab in ("real", "fake")},
        }
    return out


def build_corpus(out: Path, *, seed: int = 0, klettres_root: Path = KLETTRES_ROOT,
                 languages: Sequence[str] | None = None, max_per_language: int | None = None,
                 generators: Sequence[str] = GENERATORS, real_copies: int = 2,
                 espeak_per_text: int = 2, test: Sequence[str] = TEST_LANGUAGES,
                 validation: Sequence[str] = VALIDATION_LANGUAGES,
                 command: str = "", check_confounds: bool = False) -> dict[str, Any]:
    """Build (or finish building) the corpus in ``out``; returns the summary in corpus.json."""
    out = Path(out)
    recordings = read_klettres(klettres_root, languages=languages)
    if not recordings:
        raise SystemExit(f"no KLettres clips under {klettres_root}: install klettres-data "
                         "(apt-get install klettres-data) or pass --klettres-root.")
    if max_per_language:
        rng = np.random.default_rng(seed)
        keep: list[Recording] = []
        for lang in sorted({r.language for r in recordings}):
            mine = [r for r in recordings if r.language == lang]
            picked = rng.choice(len(mine), size=min(max_per_language, len(mine)), replace=False)
            keep.extend(mine[i] for i in sorted(picked))
        recordings = keep
    usable = available_generators(generators)
    for missing in sorted(set(generators) - set(usable)):
        sys.stderr.write(f"  {missing}: {BINARIES[missing]} is not installed, skipped "
                         "(see ../shared/DATA.md for the apt package)\n")
    items = plan(recordings, generators=usable, real_copies=real_copies,
                 espeak_per_text=espeak_per_text, test=test, validation=validation)
    sys.stderr.write(f"  {len(recordings)} KLettres clips in {len({r.language for r in recordings})} "
                     f"languages -> {len(items)} corpus clips\n")
    builder = Builder(out, seed=seed)
    rows = builder.run(items)
    with open(out / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=METADATA_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "seed": seed, "command": command, "sample_rate": SAMPLE_RATE,
        "klettres_root": str(klettres_root), "generators": usable,
        "split_rule": "by language: test and validation languages are never seen in training",
        "test_languages": sorted(set(test)), "validation_languages": sorted(set(validation)),
        "real_copies_train": real_copies, "espeak_per_text": espeak_per_text,
        "max_per_language": max_per_language, "trim_top_db": TRIM_TOP_DB,
        "tools": tool_versions(), "n_clips": len(rows), "skipped": builder.skipped,
        "splits": summarise(rows),
    }
    if check_confounds:
        summary["confound_check"] = confound_check(out, rows)
    (out / "corpus.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.audio_corpus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/audio_corpus"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-per-language", type=int, default=None,
                        help="at most N KLettres clips per language (a quick, smaller corpus)")
    parser.add_argument("--klettres-root", type=Path, default=KLETTRES_ROOT)
    parser.add_argument("--languages", default=None, help="comma-separated KLettres codes")
    parser.add_argument("--generators", default=",".join(GENERATORS))
    parser.add_argument("--real-copies", type=int, default=2,
                        help="augmented copies of each training real clip")
    parser.add_argument("--espeak-per-text", type=int, default=2)
    parser.add_argument("--test-languages", default=",".join(TEST_LANGUAGES))
    parser.add_argument("--validation-languages", default=",".join(VALIDATION_LANGUAGES))
    parser.add_argument("--check-confounds", action="store_true",
                        help="fit a classifier on recording cues alone and report its test AUC")
    args = parser.parse_args(argv)
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    command = "python -m training.audio_corpus " + " ".join(
        sys.argv[1:] if argv is None else list(argv))
    summary = build_corpus(
        args.out, seed=args.seed, klettres_root=args.klettres_root,
        languages=split(args.languages) if args.languages else None,
        max_per_language=args.max_per_language, generators=split(args.generators),
        real_copies=args.real_copies, espeak_per_text=args.espeak_per_text,
        test=split(args.test_languages), validation=split(args.validation_languages),
        command=command.strip(), check_confounds=args.check_confounds)
    for name, s in summary["splits"].items():
        print(f"{name:10s} real {s['real']:5d} fake {s['fake']:5d}  languages "
              f"{', '.join(s['languages'])}")
    if "confound_check" in summary:
        check = summary["confound_check"]
        print(f"recording cues alone: test AUC {check['auc_recording_cues']:.3f} "
              f"(with spectral cues {check['auc_all_cues']:.3f}; 0.5 = no information)")
    print(f"metadata: {args.out / 'metadata.csv'}")


if __name__ == "__main__":
    main()
