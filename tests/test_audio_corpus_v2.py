"""Audio corpus v2: the readers of the real sources, the split plan (what it holds out never
trains), the manifest, resuming, a missing source, leave-one-source-out and the trainer's
loader. Tiny generated recordings; only librosa's Griffin-Lim synthesises, nothing downloads."""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.audio import corpus_v2, sources
from training.audio.chain import ChannelAugment, telephone
from training.audio.data import load_clips
from training.audio.splits import (HoldOut, SplitPlan, loso_rows, out_of_source_rows,
                                   selection_rows)

PLAN = SplitPlan(
    test=HoldOut(sources=("phone",), languages=("el",), speakers=("studio-en-b",),
                 generators=("flite",), voices=("kokoro:bf_*",)),
    validation=HoldOut(sources=("kids",), generators=("pico",), voices=("kokoro:pf_*",)))


def _speech_like(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """A voiced, syllable-modulated tone with harmonics in a little noise."""
    t = np.arange(int(sr * seconds)) / sr
    f0 = rng.uniform(100, 220) * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    pad = np.zeros(int(0.1 * sr))
    return np.concatenate([pad, 0.3 * wave, pad]).astype(np.float32) + \
        rng.standard_normal(len(t) + 2 * len(pad)).astype(np.float32) * 1e-3


def _recordings(root: Path) -> dict[str, list[sources.Speech]]:
    """Three sources x a few speakers and languages, as Speech records on generated files."""
    rng = np.random.default_rng(0)
    layout = {"studio": [("en", "studio-en-a"), ("en", "studio-en-b"), ("de", "studio-de-a"),
                         ("el", "studio-el-a")],
              "phone": [("en", "phone-en"), ("de", "phone-de")],
              "kids": [("en", "kids-en"), ("de", "kids-de")]}
    found: dict[str, list[sources.Speech]] = {}
    for source, speakers in layout.items():
        for lang, speaker in speakers:
            for i in range(2):
                path = root / source / f"{speaker}-{i}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, _speech_like(rng, 22050, 0.5), 22050)
                found.setdefault(source, []).append(
                    sources.Speech(source, lang, path, f"word {i}", speaker, lang))
    return found


def _readers(found: dict[str, list[sources.Speech]]) -> dict:
    return {name: (lambda v=v: v) for name, v in found.items()}


# --------------------------------------------------------------------------------------------
# Readers


def test_tuxpaint_reader_takes_descriptions_with_their_texts_and_never_effects(tmp_path):
    stamp = tmp_path / "animals" / "cat"
    stamp.parent.mkdir(parents=True)
    (tmp_path / "animals" / "cat.txt").write_text(
        "A cat.\nfr.utf8=Un chat.\npt_BR.utf8=Um gato.\nzh_CN.utf8=一只猫。\n",
        encoding="utf-8")
    for name in ("cat_desc.ogg", "cat_desc_fr.ogg", "cat_desc_pt_BR.wav", "cat.ogg",
                 "cat_desc_xx.ogg.ogg"):
        sf.write(tmp_path / "animals" / name, np.zeros(800, np.float32), 8000,
                 format="WAV" if name.endswith(".wav") else "OGG",
                 subtype="PCM_16" if name.endswith(".wav") else "VORBIS")
    got = {(s.language, s.locale, s.text) for s in sources.read_tuxpaint(tmp_path)}
    assert got == {("en", "en", "A cat."), ("fr", "fr", "Un chat."), ("pt", "pt_BR", "Um gato.")}
    bank = sources.text_bank(tmp_path)
    assert bank["zh"] == ["一只猫。"] and bank["pt"] == ["Um gato."]


def test_fillets_and_asterisk_readers_recover_texts_and_speakers(tmp_path):
    game = tmp_path / "fillets"
    (game / "sound" / "wreck" / "cs").mkdir(parents=True)
    (game / "script" / "wreck").mkdir(parents=True)
    sf.write(game / "sound" / "wreck" / "cs" / "let-m-oko.ogg", np.zeros(800, np.float32), 8000)
    (game / "script" / "wreck" / "dialogs_cs.lua").write_text(
        'dialogId("let-m-oko", "font_small", "This is not a glass eye.")\n'
        'dialogStr("To není skleněné oko.")\n', encoding="utf-8")
    (fish,) = sources.read_fillets(game)
    assert (fish.language, fish.speaker, fish.text) == (
        "cs", "fillets-cs-m", "To není skleněné oko.")

    sounds, docs = tmp_path / "sounds", tmp_path / "doc"
    (sounds / "en_US_f_Allison" / "digits").mkdir(parents=True)
    for name in ("added", "beep", "digits/1"):
        sf.write(sounds / "en_US_f_Allison" / f"{name}.wav", np.zeros(800, np.float32), 8000)
    (docs / "asterisk-core-sounds-en").mkdir(parents=True)
    with gzip.open(docs / "asterisk-core-sounds-en" / "core-sounds-en.txt.gz", "wt") as fh:
        fh.write("; Core sounds\nadded: Added.\nbeep: [this is a simple beep tone]\n"
                 "digits/1: one\n")
    got = {(s.path.name, s.text, s.speaker) for s in sources.read_asterisk(sounds, docs)}
    assert got == {("added.wav", "Added.", "asterisk-Allison"),
                   ("1.wav", "one", "asterisk-Allison")}


def test_a_missing_source_is_skipped_with_a_warning():
    messages: list[str] = []
    found = sources.read_sources(["klettres", "gcin"], readers={"klettres": lambda: [],
                                                                "gcin": lambda: []},
                                 warn=messages.append)
    assert found == {}
    assert len(messages) == 2 and "gcin-voice" in messages[1] and "skipped" in messages[1]


# --------------------------------------------------------------------------------------------
# The split plan


def test_split_plan_keeps_held_out_sources_languages_speakers_and_generators_out_of_training(
        tmp_path):
    found = _recordings(tmp_path)
    reals = corpus_v2.pick_reals(found, {"studio": 8, "phone": 4, "kids": 4}, seed=0)
    engines = corpus_v2.Engines(
        voices={"flite": {"random": "en"}, "espeak-ng": {"en": "en", "de": "de", "el": "el"},
                "pico": {"en-US": "en", "de-DE": "de"},
                "kokoro": {"af_a": "en", "bf_b": "en", "pf_c": "pt", "am_d": "en"}},
        vocoders=("world", "griffinlim"))
    quotas = {"flite": 6, "espeak-ng": 30, "pico": 6, "kokoro": 16, "world": 8, "griffinlim": 8}
    items = corpus_v2.plan(reals, engines, quotas, seed=0, bank={"pt": ["Um gato."]},
                           split_plan=PLAN)
    assert len({it.key for it in items}) == len(items)
    train = [it for it in items if it.split == "train"]
    for it in train:
        attrs = it.attributes()
        assert PLAN.test.reason(attrs) is None and PLAN.validation.reason(attrs) is None, it
    assert {it.source for it in train} == {"studio"}
    assert "el" not in {it.language for it in train}
    assert not {"flite", "pico"} & {it.generator for it in train}
    assert not any(it.voice.startswith(("kokoro:bf_", "kokoro:pf_")) for it in train)
    # whole held-out generators and voices sit in test / validation, never split by clip
    assert {it.split for it in items if it.generator == "flite"} == {"test"}
    assert {it.split for it in items if it.voice.startswith("kokoro:bf_")} == {"test"}
    assert {it.split for it in items if it.source == "kids"} <= {"validation", "test"}
    # a training generator reading a held-out source's or speaker's text is tested, not
    # trained on
    assert all(it.split == "test" for it in items if it.origin is not None
               and (it.origin.source == "phone" or it.origin.speaker == "studio-en-b"))
    assert any(it.generator in corpus_v2.TTS and it.origin.speaker == "studio-en-b"
               for it in items if it.origin is not None)
    # a voice with no real text in its language reads the text bank
    assert {it.text for it in items if it.voice == "kokoro:pf_c"} == {"Um gato."}
    for split in ("train", "validation", "test"):
        assert {it.label for it in items if it.split == split} == {"real", "fake"}, split
    # reals are spread over languages: the de speaker is not crowded out by three en ones
    assert Counter(s.language for s in reals if s.source == "studio")["de"] == 2


def test_loso_moves_one_source_to_test_and_keeps_the_rest_out_of_it():
    rows = [{"source": s, "split": sp, "label": lab} for s, sp, lab in (
        ("studio", "train", "real"), ("studio", "train", "fake"), ("phone", "test", "real"),
        ("phone", "test", "fake"), ("kids", "validation", "real"), ("flite", "test", "fake"))]
    fold = loso_rows(rows, "studio")
    assert [r["split"] for r in fold] == ["test", "test", "train", "train", "validation", "train"]
    with pytest.raises(SystemExit, match="no clips of source 'nope'"):
        loso_rows(rows, "nope")


def test_a_selection_fold_never_holds_a_test_clip_and_tests_recipes_on_the_same_clips():
    # A fold for choosing between recipes: the plan's test clips are in no split, only a
    # training source can be held out, and its twins (pair_of) are neither trained nor tested,
    # so a corpus with twins and its base are tested on the same clips.
    rows = [{"key": k, "source": s, "split": sp, "label": lab, "pair_of": pair}
            for k, s, sp, lab, pair in (
                ("a", "studio", "train", "real", ""), ("b", "studio", "train", "fake", ""),
                ("c", "studio", "train", "fake", "a"), ("d", "kids", "train", "real", ""),
                ("e", "kids", "train", "fake", "d"), ("f", "phone", "test", "real", ""),
                ("g", "studio", "test", "fake", ""), ("h", "ktub", "validation", "real", ""))]
    fold = {r["key"]: r["split"] for r in selection_rows(rows, "studio")}
    assert fold == {"a": "test", "b": "test", "d": "train", "e": "train", "h": "validation"}
    base = [r for r in rows if not r["pair_of"]]
    assert {k for k, sp in fold.items() if sp == "test"} == {
        r["key"] for r in selection_rows(base, "studio") if r["split"] == "test"}
    for source in ("phone", "ktub"):
        with pytest.raises(SystemExit, match="no real training clips"):
            selection_rows(rows, source)
    # An out-of-source fold scores a training source with a network that never heard it: the
    # same grouping as the read-out's out-of-source calibration, so the source's twins are
    # scored too; the plan's test clips are in no split, validation is kept.
    fold = {r["key"]: r["split"] for r in out_of_source_rows(rows, "studio")}
    assert fold == {"a": "test", "b": "test", "c": "test", "d": "train", "e": "train",
                    "h": "validation"}
    for source in ("phone", "ktub"):
        with pytest.raises(SystemExit, match="no real training clips"):
            out_of_source_rows(rows, source)


# --------------------------------------------------------------------------------------------
# Building


def test_telephone_band_removes_the_high_band():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(16000).astype(np.float32) * 0.1
    out = telephone(noise, 16000)
    spec_in, spec_out = np.abs(np.fft.rfft(noise)), np.abs(np.fft.rfft(out))
    high = np.fft.rfftfreq(16000, 1 / 16000) > 4200
    assert len(out) == len(noise)
    assert spec_out[high].mean() < 0.05 * spec_in[high].mean()


def test_build_writes_the_manifest_resumes_and_skips_a_missing_source(tmp_path, capsys):
    found = _recordings(tmp_path / "src")
    readers = {**_readers(found), "gcin": lambda: []}
    out = tmp_path / "v2"
    kwargs = dict(seed=0, caps={"studio": 8, "phone": 4, "kids": 4, "gcin": 4},
                  quotas={"griffinlim": 8}, sources=("studio", "phone", "kids", "gcin"),
                  readers=readers, generators=("griffinlim",), split_plan=PLAN, bank={},
                  channel=ChannelAugment(p_telephone=0.5, p_codec=0.0), check_confounds=False)
    card = corpus_v2.build_corpus(out, **kwargs)
    assert any("gcin" in w and "skipped" in w for w in card["warnings"])
    assert "gcin: no recordings found" in capsys.readouterr().err
    with open(out / "metadata.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == corpus_v2.METADATA_FIELDS
    assert len(rows) == 16 + 8
    for row in rows:
        info = sf.info(out / row["path"])
        assert info.samplerate == 16000 and info.channels == 1
        assert abs(info.duration - float(row["duration"])) < 1e-3
        assert row["licence"] and row["split"] in ("train", "validation", "test")
        assert row["generator_kind"] == ("human" if row["label"] == "real" else "vocoder")
        assert "channel=" in row["params"]
    fakes = [r for r in rows if r["label"] == "fake"]
    # a vocoded copy keeps its real clip's source, speaker, text and split
    by_path = {r["original"]: r for r in rows if r["label"] == "real"}
    for r in fakes:
        real = by_path[r["original"]]
        assert (r["source"], r["speaker"], r["text"], r["split"]) == (
            real["source"], real["speaker"], real["text"], real["split"])
    assert {r["split"] for r in fakes if r["source"] == "phone"} == {"test"}
    counts = card["counts"]["split_source"]
    assert counts["test"]["real/phone"] == 4 and counts["train"].get("real/phone", 0) == 0
    assert set(card["loso"]) == {"studio", "phone", "kids"}
    assert (out / "corpus_card.md").read_text().startswith("# Audio corpus v2")

    stamp = {r["path"]: (out / r["path"]).stat().st_mtime_ns for r in rows}
    corpus_v2.build_corpus(out, **kwargs)  # resumes: nothing is built again
    assert "24 clips planned, 24 already built, 0 to build" in capsys.readouterr().err
    assert stamp == {r["path"]: (out / r["path"]).stat().st_mtime_ns for r in rows}

    # the trainer reads it as it reads v1 (the split column), and a LOSO fold too
    clips, info = load_clips(out)
    assert Counter(c.split for c in clips) == Counter(r["split"] for r in rows)
    assert info["corpus"]["split_rule"].startswith("test if any attribute")
    fold = corpus_v2.build_fold(out, "studio")
    fold_clips, _ = load_clips(fold)
    assert {c.split for c in fold_clips if "/studio/" in str(c.path)} == {"test"}
    assert all(c.path.is_file() for c in fold_clips)


def test_one_failing_clip_is_skipped_and_the_build_goes_on(tmp_path, monkeypatch):
    found = _recordings(tmp_path / "src")
    items = corpus_v2.plan(found["studio"][:2], corpus_v2.Engines({}, ()), {}, seed=0, bank={},
                           split_plan=PLAN)
    builder = corpus_v2.Builder(tmp_path / "v2", channel=ChannelAugment(0.0, 0.0),
                                log=lambda msg: None)
    original = corpus_v2.Builder.build

    def flaky(self, item, tmp):
        if item is items[0]:
            raise ArithmeticError("diverged")  # not one of the errors the builder expects
        return original(self, item, tmp)

    monkeypatch.setattr(corpus_v2.Builder, "build", flaky)
    rows = builder.run(items)
    assert [r["key"] for r in rows] == [items[1].key]
    assert builder.skipped == {items[0].key: "ArithmeticError: diverged"}


def test_a_clip_the_plan_moves_to_another_split_is_moved_not_rebuilt(tmp_path):
    found = _recordings(tmp_path / "src")
    quiet = dict(channel=ChannelAugment(0.0, 0.0), log=lambda msg: None)
    items = corpus_v2.plan(found["studio"][:2], corpus_v2.Engines({}, ()), {}, seed=0, bank={},
                           split_plan=PLAN)
    corpus_v2.Builder(tmp_path / "v2", **quiet).run(items)
    moved_plan = SplitPlan(test=HoldOut(speakers=("studio-en-a",)), validation=HoldOut())
    moved = corpus_v2.plan(found["studio"][:2], corpus_v2.Engines({}, ()), {}, seed=0, bank={},
                           split_plan=moved_plan)
    assert {it.split for it in moved} == {"test"} and {it.split for it in items} == {"train"}
    builder = corpus_v2.Builder(tmp_path / "v2", **quiet)
    builder.build = None  # building anything now would fail
    rows = builder.run(moved)
    assert [r["split"] for r in rows] == ["test", "test"]
    assert all((tmp_path / "v2" / r["path"]).is_file() for r in rows)
    assert not list((tmp_path / "v2" / "clips" / "train").rglob("*.flac"))
