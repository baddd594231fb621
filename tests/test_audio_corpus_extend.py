"""Corpus v2 plus extra real sources in training only (training.audio.corpus_extend): the base
splits kept, the extra clips and their WORLD copies in training, a held-out language left out
before the cap, the stored rate used for the copies' storage trip, refused sources, resuming."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.audio import corpus_extend, corpus_v2, sources_v3
from training.audio.sources import Speech
from training.audio.chain import ChannelAugment
from training.audio.data import load_clips
from training.audio.splits import HoldOut, SplitPlan

PLAN = SplitPlan(test=HoldOut(sources=("phone",), languages=("el",)),
                 validation=HoldOut(languages=("uk",)))
QUIET = {"channel": ChannelAugment(p_telephone=0.0, p_codec=0.0)}


def _voice(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """A voiced tone with harmonics and a syllable rhythm, in a little noise."""
    t = np.arange(int(sr * seconds)) / sr
    phase = 2 * np.pi * np.cumsum(rng.uniform(100, 200) * (1 + 0.05 * np.sin(6 * t))) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(8 * np.pi * t))
    return (0.3 * wave + 1e-3 * rng.standard_normal(len(t))).astype(np.float32)


def _base(root: Path) -> Path:
    """A two-clip-per-split stand-in for corpus v2 (metadata.csv, corpus.json)."""
    rng = np.random.default_rng(1)
    rows = []
    for split in ("train", "validation", "test"):
        for label in ("real", "fake"):
            path = f"clips/{split}/{label}/src/{split}-{label}.flac"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / path, _voice(rng, 16000, 1.0), 16000, format="FLAC")
            rows.append({"path": path, "label": label, "source": "src", "language": "en",
                         "generator": "src" if label == "real" else "espeak-ng",
                         "split": split, "key": f"{split}-{label}", "speech_duration": "1.0"})
    corpus_v2.write_metadata(root / "metadata.csv", rows)
    (root / "corpus.json").write_text(json.dumps({"command": "base", "generators": ["world"],
                                                  "test_held_out": {"sources": ["phone"]}}))
    return root


def _extracted(root: Path) -> Path:
    """Extracted sources as sources_v3 writes them: 16 kHz files, the stored rate in the
    manifest. 'game' has 6 English and 4 Ukrainian clips (Ukrainian: a validation language)."""
    rng = np.random.default_rng(2)
    rows = []
    layout = [("game", "en", 6, 11025), ("game", "uk", 4, 11025), ("home", "und", 3, 44100),
              ("asterisk-gsm", "fr", 2, 8000)]
    for source, lang, n, rate in layout:
        for i in range(n):
            path = f"{source}/{lang}/{source}-{lang}-{i}.wav"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / path, _voice(rng, 16000, 1.2), 16000)
            rows.append({"source": source, "language": lang, "speaker": f"{source}-{lang}",
                         "licence": f"{source} licence", "original_rate": rate, "path": path})
    sources_v3.write_manifest(root / "manifest.jsonl", rows)
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_extra_sources_train_only_and_the_base_splits_stay(tmp_path, capsys):
    base, extra = _base(tmp_path / "v2"), _extracted(tmp_path / "v3")
    out = tmp_path / "v3x"
    kwargs = dict(base=base, extra_root=extra, sources=["game", "home"], cap=5, copies=1,
                  seed=0, split_plan=PLAN, builder_kwargs=QUIET, log=lambda m: None)
    summary = corpus_extend.build_extended(out, **kwargs)
    rows = _rows(out / "metadata.csv")
    old = [r for r in rows if r["source"] == "src"]
    new = [r for r in rows if r["source"] != "src"]
    # the base clips keep their split and point at the base corpus's files
    assert [(r["key"], r["split"]) for r in old] == [(r["key"], r["split"])
                                                    for r in _rows(base / "metadata.csv")]
    assert all((out / r["path"]).resolve() == (base / "clips").resolve() / r["path"].split(
        "clips/", 1)[1] for r in old)
    # the extra clips all train: Ukrainian left out before the cap, so 'game' still has 5
    assert {r["split"] for r in new} == {"train"}
    real = Counter((r["source"], r["language"]) for r in new if r["label"] == "real")
    assert real == {("game", "en"): 5, ("home", "und"): 3}
    assert summary["left_out_by_plan"] == 4
    # one WORLD copy of each added real clip, its speaker and licence kept
    reals = {r["original"]: r for r in new if r["label"] == "real"}
    fakes = [r for r in new if r["label"] == "fake"]
    assert sorted(r["original"] for r in fakes) == sorted(reals)
    for r in fakes:
        assert r["generator"] == "world" and r["speaker"] == reals[r["original"]]["speaker"]
        assert r["licence"] == f"{r['source']} licence"
        # the storage trip at the rate the clip was stored at, not the extraction's 16 kHz
        rate = {"game": 11, "home": 44}[r["source"]]
        assert f"store=vorbis{rate}k/" in r["params"]
    for r in new:
        info = sf.info(out / r["path"])
        assert (info.samplerate, info.channels) == (16000, 1)
    # the trainer reads it, with the base plan in the card's corpus description
    clips, info = load_clips(out)
    assert len(clips) == len(rows) and all(c.path.is_file() for c in clips)
    assert info["corpus"]["test_held_out"] == {"sources": ["phone"]}
    assert summary["counts"]["train/real"] == 1 + 8 and summary["counts"]["test/fake"] == 1

    stamp = {r["path"]: (out / r["path"]).stat().st_mtime_ns for r in new}
    logged: list[str] = []
    corpus_extend.build_extended(out, **{**kwargs, "log": logged.append})
    assert any("16 clips planned, 16 already built, 0 to build" in m for m in logged)
    assert stamp == {r["path"]: (out / r["path"]).stat().st_mtime_ns for r in new}


def test_held_out_families_and_unknown_sources_are_refused(tmp_path):
    base, extra = _base(tmp_path / "v2"), _extracted(tmp_path / "v3")
    with pytest.raises(SystemExit, match="asterisk-gsm .*Asterisk"):
        corpus_extend.build_extended(tmp_path / "x", base=base, extra_root=extra,
                                     sources=["game", "asterisk-gsm"])
    with pytest.raises(SystemExit, match="no extracted clips of fotaq.*game"):
        corpus_extend.build_extended(tmp_path / "x", base=base, extra_root=extra,
                                     sources=["fotaq"])
    with pytest.raises(SystemExit, match="build the base corpus first"):
        corpus_extend.build_extended(tmp_path / "x", base=tmp_path / "none", extra_root=extra,
                                     sources=["game"])


def test_plan_extra_copies_each_clip_and_drops_held_out_ones(tmp_path):
    speech = [Speech("game", lang, tmp_path / f"{lang}.wav", "", f"s-{lang}", lang)
              for lang in ("en", "uk", "el")]
    items, dropped = corpus_extend.plan_extra(speech, copies=2, split_plan=PLAN)
    assert [s.language for s in dropped] == ["uk", "el"]
    assert Counter((it.label, it.generator) for it in items) == {("real", "game"): 1,
                                                                 ("fake", "world"): 2}
    assert len({it.key for it in items}) == 3
