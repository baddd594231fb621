"""Corpus v2 plus extra real sources in training only (training.audio.corpus_extend): the base
splits kept, the extra clips and their WORLD copies in training, a held-out language left out
before the cap, the stored rate used for the copies' storage trip, refused sources, resuming."""

from __future__ import annotations

import csv
import gettext
import json
import shutil
import struct
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import needs_corpus_package
from training.audio import corpus_extend, corpus_v2, sources_v3, texts_v3
from training.audio.sources import Speech
from training.audio.chain import ChannelAugment
from training.audio.data import load_clips
from training.audio.splits import DEFAULT_PLAN, HoldOut, SplitPlan

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
                         "split": split, "key": f"{split}-{label}", "speech_duration": "1.0",
                         "text": f"a {split} sentence"})
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


@needs_corpus_package("pyworld")
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
    with pytest.raises(SystemExit, match="asterisk-gsm .*Asterisk.*--train-held-out"):
        corpus_extend.build_extended(tmp_path / "x", base=base, extra_root=extra,
                                     sources=["game", "asterisk-gsm"])
    with pytest.raises(SystemExit, match="no extracted clips of fotaq.*game"):
        corpus_extend.build_extended(tmp_path / "x", base=base, extra_root=extra,
                                     sources=["fotaq"])
    with pytest.raises(SystemExit, match="build the base corpus first"):
        corpus_extend.build_extended(tmp_path / "x", base=tmp_path / "none", extra_root=extra,
                                     sources=["game"])


@needs_corpus_package("pyworld")
def test_a_held_out_family_trains_only_when_named_and_its_fakes_take_its_codec(tmp_path):
    """--train-held-out asterisk-gsm: the GSM prompts train, their copies take the 8 kHz GSM
    06.10 trip (not the Vorbis one, or the codec would tell the classes apart), and
    corpus.json records what was held out and why."""
    base, extra = _base(tmp_path / "v2"), _extracted(tmp_path / "v3")
    summary = corpus_extend.build_extended(
        tmp_path / "x", base=base, extra_root=extra, sources=["asterisk-gsm"], cap=5,
        split_plan=PLAN, builder_kwargs=QUIET, log=lambda m: None,
        allow_held_out=["asterisk-gsm"])
    new = [r for r in _rows(tmp_path / "x" / "metadata.csv") if r["source"] == "asterisk-gsm"]
    assert Counter((r["label"], r["split"]) for r in new) == {("real", "train"): 2,
                                                              ("fake", "train"): 2}
    assert all("store=gsm8k" in r["params"] for r in new if r["label"] == "fake")
    assert summary["held_out_sources_trained"] == {
        "asterisk-gsm": corpus_extend.NOT_FOR_TRAINING["asterisk-gsm"]}


def _band_energy(wave: np.ndarray, sr: int, lo: float) -> float:
    spectrum = np.abs(np.fft.rfft(wave)) ** 2
    return float(spectrum[np.fft.rfftfreq(len(wave), 1 / sr) > lo].sum() / spectrum.sum())


def test_storage_trips_imitate_each_source_codec():
    """A fake reading a GSM prompt's line goes through GSM 06.10 at 8 kHz (lossy: the wave
    changes, nothing above 4 kHz); one of Beneath a Steel Sky's through 8-bit PCM at
    11.025 kHz (a quantisation floor); other sources keep their trips."""
    rng = np.random.default_rng(0)
    wave = _voice(rng, 16000, 1.0) + 0.05 * rng.standard_normal(16000).astype(np.float32)
    speech = {s: Speech(s, "fr", Path(f"{s}.wav"), "", s, "fr")
              for s in ("asterisk-gsm", "bass", "asterisk", "game")}
    gsm, sr, trip = corpus_v2.storage_trip(wave, 16000, speech["asterisk-gsm"], 8000, rng)
    assert (sr, trip, len(gsm)) == (8000, "store=gsm8k", 8000)
    plain = corpus_v2.audio.resample(wave, 16000, 8000)
    assert np.abs(gsm - plain).max() > 0.01  # the codec changed the samples
    assert _band_energy(corpus_v2.audio.resample(gsm, 8000, 16000), 16000, 4100) < 1e-3
    pcm8, sr, trip = corpus_v2.storage_trip(wave, 16000, speech["bass"], 11025, rng)
    assert (sr, trip) == (11025, "store=pcm_u8_11k")
    steps = np.unique(np.round(pcm8 * 128, 4))
    assert np.allclose(steps, np.round(steps))  # on the 8-bit grid
    assert corpus_v2.storage_trip(wave, 16000, speech["asterisk"], 8000, rng)[2] == "store=pcm8k"
    assert corpus_v2.storage_trip(wave, 16000, speech["game"], 22050, rng)[2].startswith(
        "store=vorbis22k/")


def test_plan_extra_copies_each_clip_and_drops_held_out_ones(tmp_path):
    speech = [Speech("game", lang, tmp_path / f"{lang}.wav", "", f"s-{lang}", lang)
              for lang in ("en", "uk", "el")]
    items, dropped = corpus_extend.plan_extra(speech, copies=2, split_plan=PLAN)
    assert [s.language for s in dropped] == ["uk", "el"]
    assert Counter((it.label, it.generator) for it in items) == {("real", "game"): 1,
                                                                 ("fake", "world"): 2}
    assert len({it.key for it in items}) == 3


# --------------------------------------------------------------------------------------------
# --extra-fakes mix: one fake per added clip in the base corpus's training mix


def _engines() -> corpus_v2.Engines:
    """Voices of every kind the plan treats differently: training voices, a validation
    generator (Pico) and voices (af_river, p*), test voices (bf_*) and a test vocoder."""
    return corpus_v2.Engines(
        voices={"espeak-ng": {"en": "en", "de": "de", "pl": "pl"},
                "festival": {"kal_diphone": "en", "msu_ru_nsh_clunits": "ru"},
                "kokoro": {"af_bella": "en", "am_adam": "en", "af_river": "en", "bf_emma": "en",
                           "pf_dora": "pt", "ef_dora": "es"},
                "pico": {"en-US": "en"}},
        vocoders=("world", "mlsa", "griffinlim"))


SHARES = {"espeak-ng": 0.45, "festival": 0.21, "kokoro": 0.16, "world": 0.18}


def test_plan_mixed_keeps_the_base_mix_and_only_training_voices(tmp_path):
    speech = ([Speech("game", "en", tmp_path / f"en{i}.wav", "", "s-en", "en")
               for i in range(160)]
              + [Speech("game", "de", tmp_path / f"de{i}.wav", "", "s-de", "de")
                 for i in range(30)]
              + [Speech("home", "und", tmp_path / f"und{i}.wav", "", "s-und", "und")
                 for i in range(10)]
              + [Speech("game", "uk", tmp_path / "uk.wav", "", "s-uk", "uk")])
    own = {str(tmp_path / f"en{i}.wav"): texts_v3.Text(f"line {i}", "subtitle")
           for i in range(20)}
    pool = {"en": ["an english sentence"], "de": ["ein deutscher Satz"]}
    kwargs = dict(texts=own, pool=pool, bank={}, seed=3)
    items, dropped, origins = corpus_extend.plan_mixed(speech, SHARES, _engines(), **kwargs)
    assert [s.language for s in dropped] == ["uk"]  # a validation language
    fakes = [it for it in items if it.label == "fake"]
    reals = [it for it in items if it.label == "real"]
    assert len(fakes) == len(reals) == 200
    counts = Counter(it.generator for it in fakes)
    for gen, share in SHARES.items():
        assert abs(counts[gen] - share * 200) <= 2, counts
    # never a held-out generator or voice: each fake trains under the corpus v2 plan
    assert {it.generator for it in fakes} <= set(SHARES)
    assert not {it.voice for it in fakes} & {"kokoro:af_river", "kokoro:bf_emma",
                                             "kokoro:pf_dora"}
    assert all(DEFAULT_PLAN.split_of(it.attributes()) == "train" for it in items)
    # a German clip has no Festival or Kokoro voice here: eSpeak NG or WORLD
    assert {it.generator for it in fakes if it.origin.language == "de"} <= {"espeak-ng",
                                                                             "world"}
    # an undetermined language is read in English; the voices rotate
    assert {it.language for it in fakes if it.origin.source == "home"
            and it.generator != "world"} <= {"en"}
    assert len({it.voice for it in fakes if it.generator == "kokoro"}) == 2
    # texts: the clip's own where known (and on its real clip), else the pool, with the origin
    for it in fakes:
        if str(it.origin.path) in own and it.generator != "world":
            assert it.text == own[str(it.origin.path)].text and origins[it.key] == "subtitle"
        elif it.generator != "world":
            assert it.text in pool[it.language] and origins[it.key] == "pool"
    assert {it.text for it in reals if str(it.origin.path) in own} == {f"line {i}"
                                                                       for i in range(20)}
    # seeded: the same plan again
    again, _, _ = corpus_extend.plan_mixed(speech, SHARES, _engines(), **kwargs)
    assert [(it.key, it.voice) for it in again] == [(it.key, it.voice) for it in items]


def test_plan_mixed_refuses_a_generator_it_cannot_run(tmp_path):
    speech = [Speech("game", "en", tmp_path / "a.wav", "", "s", "en")]
    engines = corpus_v2.Engines(voices={"espeak-ng": {"en": "en"}}, vocoders=("world",))
    with pytest.raises(SystemExit, match="not installed here: kokoro"):
        corpus_extend.plan_mixed(speech, {"espeak-ng": 0.5, "kokoro": 0.5}, engines,
                                 texts={}, pool={}, bank={})


def test_base_mix_counts_training_fakes_only():
    rows = ([{"split": "train", "label": "fake", "generator": "espeak-ng"}] * 3
            + [{"split": "train", "label": "fake", "generator": "world"}]
            + [{"split": "test", "label": "fake", "generator": "flite"}] * 5
            + [{"split": "train", "label": "real", "generator": "src"}] * 5)
    assert corpus_extend.base_mix(rows) == {"espeak-ng": 0.75, "world": 0.25}


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_mix_build_writes_text_origins_and_resumes(tmp_path):
    base, extra = _base(tmp_path / "v2"), _extracted(tmp_path / "v3")
    out = tmp_path / "v3t"
    engines = corpus_v2.Engines(voices={"espeak-ng": {"en": "en"}}, vocoders=())
    kwargs = dict(base=base, extra_root=extra, sources=["game", "home"], cap=5, seed=0,
                  split_plan=PLAN, builder_kwargs=QUIET, log=lambda m: None, fakes="mix",
                  engines=engines, bank={})
    summary = corpus_extend.build_extended(out, **kwargs)
    new = [r for r in _rows(out / "metadata.csv") if r["source"] != "src"]
    fakes = [r for r in new if r["label"] == "fake"]
    # the base's training fakes are all eSpeak NG, so are the added ones: one per real clip
    assert len(fakes) == len(new) - len(fakes) == 8
    assert {r["generator"] for r in fakes} == {"espeak-ng"} and {r["split"] for r in new} == {
        "train"}
    # no text in these packages: the base corpus's training sentence (the only English one)
    base_train = {r["text"] for r in _rows(base / "metadata.csv") if r["split"] == "train"}
    assert {r["text_origin"] for r in fakes} == {"pool"}
    assert {r["text"] for r in fakes} <= base_train
    assert all(r["licence"].startswith("GPL-3+; text: corpus v2") for r in fakes)
    assert {r["text_origin"] for r in new if r["label"] == "real"} == {""}
    assert "store=vorbis11k/" in next(r["params"] for r in fakes if r["source"] == "game")
    assert summary["added_fakes_per_generator"] == {"espeak-ng": 8}
    logged: list[str] = []
    corpus_extend.build_extended(out, **{**kwargs, "log": logged.append})
    assert any("16 clips planned, 16 already built, 0 to build" in m for m in logged)
    with pytest.raises(SystemExit, match="one fake per added clip"):
        corpus_extend.build_extended(out, **{**kwargs, "copies": 2})


def test_texts_from_file_names_and_the_games_tables(tmp_path):
    words = {"watch", "this", "cut", "it", "out", "cu", "tit", "come", "on", "then", "com", "eon"}
    assert texts_v3.split_words("Watchthis", words) == "watch this"
    assert texts_v3.split_words("Cutitout", words, {"it", "out"}) == "cut it out"
    assert texts_v3.split_words("Comeonthen", words, {"come", "on"}) == "come on then"
    assert texts_v3.split_words("Uh-oh", {"uh", "oh"}) == "uh oh"
    assert texts_v3.split_words("Nooo", words) == "nooo"
    # a pack in another language says something else than its English file name
    assert texts_v3.hedgewars_text("voices/Default_ru/Hello.ogg", "ru", frozenset()) is None
    english = gettext.NullTranslations()
    assert texts_v3.kajongg_text("s4", english) == texts_v3.Text("stone 4", "file_name")
    assert texts_v3.kajongg_text("we", english).text == "East Wind"
    assert texts_v3.kajongg_text("dr", english).text == "dragon red"
    assert texts_v3.kajongg_text("originalcall", english).text == "Original Call"
    assert texts_v3.kajongg_text("s4", None) is None  # no catalogue for the language
    wz = tmp_path / "base.wz"
    with zipfile.ZipFile(wz, "w") as z:
        z.writestr("audio/audio.cfg", 'audio\t"pcv337.ogg"\toneshot 100 /*Structure Under '
                                      'Attack*/\naudio "beep1.ogg" oneshot 30\n')
        z.writestr("script/tutorial.js", '{"audio": "tut2.ogg", "clear": false, "message": '
                                         '_("Oil resources are key"), "state": 0}')
    table = texts_v3.warzone_texts(wz)
    assert table == {"pcv337": texts_v3.Text("Structure Under Attack", "file_name"),
                     "tut2": texts_v3.Text("Oil resources are key", "subtitle")}
    assert texts_v3.warzone_text("base.wz:audio/tutorial/tut2.ogg", table).origin == "subtitle"
    assert texts_v3.warzone_text("base.wz:sequenceaudio/tut2.ogg#1", table) is None
    pool = texts_v3.text_pool([{"split": "train", "language": "en", "text": "b"},
                               {"split": "train", "language": "en", "text": "a"},
                               {"split": "test", "language": "en", "text": "held out"}])
    assert pool == {"en": ["a", "b"]}
    rng = np.random.default_rng(0)
    assert texts_v3.pick_text("und", rng, pool, {}).origin == "pool"  # read as English
    assert texts_v3.pick_text("pl", rng, pool, {"pl": ["zdanie"]}) == texts_v3.Text("zdanie",
                                                                                    "textbank")
    assert texts_v3.pick_text("pl", rng, pool, {}) is None
    with pytest.raises(ValueError, match="unknown text origin"):
        texts_v3.Text("x", "guess")


def _dog(talk_key: int, person: dict[int, str], joe: dict[int, str]) -> bytes:
    """A one-level ``*.DOG`` resource laid out as ScummVM's ``Talk::load`` reads it."""
    def table(lines: dict[int, str]) -> bytes:
        out = b""
        for ident, text in lines.items():
            out += struct.pack(">hh", 0, ident) + bytes([len(text)]) + text.encode("latin-1")
            out += b"\0" * (-len(out) % 4)
        return out

    joe_table, person_table = table(joe), table(person)
    person_at = 32 + 96 + len(joe_table)
    head = struct.pack(">5h", 1, 7, talk_key, len(joe), len(person)) + b"\0" * 12
    head += struct.pack(">3H", person_at, 0, 0) + b"\0" * 4
    return b"AmBk" + b"\0" * 16 + head + b"\0" * 96 + joe_table + person_table


def test_fotaq_dialogue_lines_map_to_their_voice_files():
    assert texts_v3.queen_segments("Hello.*FLWho are you?") == ["Hello.", "Who are you?"]
    assert texts_v3.queen_segments("*XY00(237,112)Over here.") == ["", "Over here."]
    data = _dog(2, {1: "Good day.*WTIt is hot."}, {0xA6: "Where am I?"})
    assert texts_v3.dog_texts(data) == {
        "020001P1": texts_v3.Text("Good day.", "subtitle"),
        "020001P2": texts_v3.Text("It is hot.", "subtitle"),
        "0200A6J1": texts_v3.Text("Where am I?", "subtitle")}
    table = texts_v3.dog_texts(data)
    assert texts_v3.fotaq_text("queen.1c:0200A6J1.SB", table).text == "Where am I?"
    assert texts_v3.fotaq_text("queen.1c:JOE00741.SB", table) is None
