"""Audio data sources: the offline corpus (``metadata.csv``, built by
:mod:`training.audio.corpus`) and the Fake-or-Real dataset, as a list of `Clip`."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xai_platform.files import sha256

FOR_SUBSETS = ("for-norm", "for-2sec", "for-rerec", "for-original")
FOR_SPLITS = {"training": "train", "validation": "validation", "testing": "test"}
SPLITS = ("train", "validation", "test")
_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".oga", ".opus")


@dataclass(frozen=True)
class Clip:
    """One labelled recording: ``label`` is real or fake; ``split`` is train, validation or
    test (the offline corpus splits by ``language``)."""

    path: Path
    label: str
    split: str
    language: str = ""
    generator: str = ""
    speaker: str = ""
    speech_seconds: float | None = None  # trimmed speech length (the corpus's metadata)
    source: str = ""  # where a real clip was recorded (corpus v2), or whose line a fake reads
    key: str = ""  # the corpus's key (corpus v2)
    pair_of: str = ""  # the key of the recording this fake copies (training.audio.corpus_paired)
    generator_kind: str = ""  # human, classic, neural or vocoder (corpus v2)
    params: str = ""  # what the generator and the shared chain did (corpus v2's ``params``)
    original: str = ""  # the recording a real clip, or the one whose text a fake reads, came from


def load_corpus(root: Path) -> list[Clip]:
    """The offline corpus's ``metadata.csv`` (v1: :mod:`training.audio.corpus`; v2, with more
    columns and the same ``split``, ``generator`` and ``speech_duration``:
    :mod:`training.audio.corpus_v2`). Paths are relative to ``root``."""
    with open(root / "metadata.csv", newline="", encoding="utf-8") as fh:
        return [Clip(root / r["path"], r["label"], r["split"], r.get("language", ""),
                     r.get("generator", ""), r.get("speaker", ""),
                     float(r["speech_duration"]) if r.get("speech_duration") else None,
                     r.get("source", ""), r.get("key", ""), r.get("pair_of", ""),
                     r.get("generator_kind", ""), r.get("params", ""), r.get("original", ""))
                for r in csv.DictReader(fh)]


def find_for_subset(root: Path, subset: str | None = None) -> Path:
    """The Fake-or-Real folder holding ``training|validation|testing``: ``root`` itself, or
    ``root/<subset>`` (default: the first of for-norm, for-2sec, for-rerec, for-original)."""
    if all((root / s).is_dir() for s in FOR_SPLITS) and subset is None:
        return root
    names = [subset] if subset else list(FOR_SUBSETS)
    for name in names:
        if all((root / name / s).is_dir() for s in FOR_SPLITS):
            return root / name
    raise SystemExit(f"{root} is neither the offline corpus (no metadata.csv) nor a "
                     "Fake-or-Real folder: expected training/, validation/ and testing/ "
                     f"(each with real/ and fake/) in it or in one of {', '.join(FOR_SUBSETS)}.")


def load_fake_or_real(root: Path, subset: str | None = None) -> list[Clip]:
    """Every audio file under ``<subset>/{training,validation,testing}/{real,fake}/``."""
    base = find_for_subset(root, subset)
    clips = []
    for folder, split in FOR_SPLITS.items():
        for label in ("real", "fake"):
            for path in sorted((base / folder / label).rglob("*")):
                if path.is_file() and path.suffix.lower() in _AUDIO_SUFFIXES:
                    clips.append(Clip(path, label, split, "en", f"for:{base.name}"))
    return clips


def clip_digests(clips: list[Clip], root: Path) -> dict[str, str]:
    """Each clip's sha256 (of its file's bytes), by its path relative to ``root``
    (:mod:`training.audio.digests` writes and compares them)."""
    return {os.path.relpath(c.path, root): sha256(c.path) for c in clips}


def split_digests(clips: list[Clip], root: Path,
                  digests: dict[str, str] | None = None) -> dict[str, str]:
    """Each split's sha256 over its clips' paths (relative to ``root``), labels and audio bytes
    (``digests``: :func:`clip_digests` of ``clips``, read from the files when None).

    The manifest's hash (``metadata_sha256``) changes with any row; these tell a card whose
    training audio differs from one whose only difference is elsewhere (a rerun that does not
    reproduce a card: other bytes, or other arithmetic? docs/AUDIO.md, thirty-first session).
    Which clips differ: :mod:`training.audio.digests`."""
    digests = clip_digests(clips, root) if digests is None else digests
    out = {}
    for split in SPLITS:
        h = hashlib.sha256()
        for rel, label in sorted((os.path.relpath(c.path, root), c.label)
                                 for c in clips if c.split == split):
            h.update(f"{rel}|{label}|{digests[rel]}\n".encode())
        out[split] = h.hexdigest()
    return out


def load_clips(data: Path, subset: str | None = None, *, audio_digests: bool = False
               ) -> tuple[list[Clip], dict[str, Any]]:
    """The clips and a description of the source for the model card. ``audio_digests``: an
    offline corpus's description also holds :func:`split_digests` and each clip's digest
    (``clip_sha256``, :func:`clip_digests`), which read every clip (the trainer's card and the
    digests file beside it want them; the tools that only need the clips do not)."""
    data = Path(data)
    if (data / "metadata.csv").is_file():
        clips = load_corpus(data)
        info: dict[str, Any] = {"kind": "offline corpus", "root": str(data),
                                "metadata_sha256": sha256(data / "metadata.csv")}
        if audio_digests:
            digests = clip_digests(clips, data)
            info["split_sha256"] = split_digests(clips, data, digests)
            info["clip_sha256"] = digests
        summary = data / "corpus.json"
        if summary.is_file():
            corpus = json.loads(summary.read_text(encoding="utf-8"))
            info["corpus"] = {k: corpus.get(k) for k in (
                "command", "seed", "generators", "split_rule", "test_languages",
                "validation_languages", "tools", "n_clips", "trim_top_db")}
            for k in ("test_held_out", "validation_held_out"):  # corpus v2's split plan
                if k in corpus:
                    info["corpus"][k] = corpus[k]
    else:
        clips = load_fake_or_real(data, subset)
        info = {"kind": "Fake-or-Real", "root": str(find_for_subset(data, subset))}
    for split in SPLITS:
        labels = {c.label for c in clips if c.split == split}
        if labels != {"real", "fake"}:
            raise SystemExit(f"the {split} split of {data} has labels {sorted(labels)}; every "
                             "split needs both real and fake clips.")
    return clips, info

