"""Every training recording with a vocoded twin (training.audio.corpus_paired), the pairs the
trainer reads from it (features.pair_index) and the pair-ranking term (trainer.PairRanking)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import needs_corpus_package, needs_torch
from test_audio_corpus_extend import QUIET, _voice
from training.audio import corpus_paired, corpus_v2
from training.audio.data import load_clips
from training.audio.features import FeatureSet, pair_index


def _corpus(root: Path) -> Path:
    """Three training recordings (one with a WORLD copy already), a validation and a test one,
    and a text-to-speech fake per split; the recordings' originals stored at 22.05 kHz."""
    rng = np.random.default_rng(3)
    rows = []

    def clip(path: str, **row) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / path, _voice(rng, 16000, 1.2), 16000, format="FLAC")
        rows.append({"path": path, "language": "en", "speech_duration": "1.2", **row})

    for i, split in enumerate(("train", "train", "train", "validation", "test")):
        original = root / "originals" / f"rec{i}.wav"
        original.parent.mkdir(parents=True, exist_ok=True)
        sf.write(original, _voice(rng, 22050, 1.5), 22050)
        clip(f"clips/{split}/real/src/rec{i}.flac", label="real", source="src",
             speaker=f"src-{i}", generator="src", split=split, key=f"rec{i}",
             original=str(original), original_sample_rate="22050", licence="src licence")
    clip("clips/train/fake/src/world-rec0.flac", label="fake", source="src", speaker="src-0",
         generator="world", split="train", key="world-x0-rec0",
         original=str(root / "originals" / "rec0.wav"))
    for split in ("train", "validation", "test"):
        clip(f"clips/{split}/fake/tts/{split}.flac", label="fake", source="src",
             generator="espeak-ng", split=split, key=f"tts-{split}", original="")
    corpus_v2.write_metadata(root / "metadata.csv", rows,
                             fields=(*corpus_v2.METADATA_FIELDS, "text_origin"))
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@needs_corpus_package("pyworld")
def test_every_training_recording_gets_one_twin_and_the_other_splits_stay(tmp_path):
    base = _corpus(tmp_path / "base")
    out = tmp_path / "paired"
    summary = corpus_paired.build_paired(out, base=base, builder_kwargs=QUIET,
                                         log=lambda m: None)
    rows = _rows(out / "metadata.csv")
    old = {r["key"] for r in _rows(base / "metadata.csv")}
    new = [r for r in rows if r["key"] not in old]
    # rec1 and rec2 get a copy; rec0 keeps the one it had; validation and test get none
    assert sorted(r["pair_of"] for r in new) == ["rec1", "rec2"]
    pairs = {r["key"]: r["pair_of"] for r in rows if r["pair_of"]}
    assert sorted(pairs.values()) == ["rec0", "rec1", "rec2"]
    assert pairs["world-x0-rec0"] == "rec0"
    assert summary["paired"]["copies_added"] == 2 and summary["paired"]["training_pairs"] == 3
    reals = {r["key"]: r for r in rows if r["label"] == "real"}
    for r in new:
        twin = reals[r["pair_of"]]
        assert (r["split"], r["label"], r["generator"]) == ("train", "fake", "world")
        assert r["speaker"] == twin["speaker"] and r["licence"] == "src licence"
        assert "store=vorbis22k/" in r["params"]  # the original's storage rate
        info = sf.info(out / r["path"])
        assert (info.samplerate, info.channels) == (16000, 1)
    # the base clips keep their split and files
    assert {(r["key"], r["split"]) for r in rows if r["key"] in old} == {
        (r["key"], r["split"]) for r in _rows(base / "metadata.csv")}
    assert all((out / r["path"]).is_file() for r in rows)
    # the trainer reads the pairs
    clips, _ = load_clips(out)
    assert {c.key: c.pair_of for c in clips if c.pair_of} == pairs

    # a leave-one-source-out fold keeps the pairs
    fold = corpus_v2.build_fold(out, "src")
    assert {r["key"]: r["pair_of"] for r in _rows(fold / "metadata.csv") if r["pair_of"]} == pairs

    logged: list[str] = []
    corpus_paired.build_paired(out, base=base, builder_kwargs=QUIET, log=logged.append)
    assert any("2 clips planned, 2 already built, 0 to build" in m for m in logged)

    # a second vocoder's twins on top: the first twins keep their pairs
    both = tmp_path / "both"
    corpus_paired.build_paired(both, base=out, vocoders=("phasevoc",), builder_kwargs=QUIET,
                               log=lambda m: None)
    two = {r["key"]: r["pair_of"] for r in _rows(both / "metadata.csv") if r["pair_of"]}
    assert {k: v for k, v in two.items() if k in pairs} == pairs
    assert sorted(v for k, v in two.items() if k not in pairs) == ["rec0", "rec1", "rec2"]


def test_pair_index_matches_each_copy_window_with_its_originals():
    from training.audio.data import Clip

    clips = [Clip(Path("a"), "real", "train", key="a"),
             Clip(Path("b"), "fake", "train", key="b", pair_of="a"),
             Clip(Path("c"), "fake", "train", key="c", pair_of="gone"),  # original not here
             Clip(Path("d"), "real", "train", key="d")]
    clip = np.array([0, 0, 0, 1, 1, 2, 3])  # a: 3 windows, b: 2, c: 1, d: 1
    fs = FeatureSet(np.zeros((7, 2, 2), np.float32), np.array([0, 0, 0, 1, 1, 1, 0]), clip,
                    clips, np.array([0, 1, 1, 0]))
    assert pair_index(fs, positive=1).tolist() == [[3, 0], [4, 1]]
    none = FeatureSet(fs.x, fs.y, clip, [c.__class__(c.path, c.label, c.split, key=c.key)
                                         for c in clips], fs.y_clip)
    assert pair_index(none, positive=1).shape == (0, 2)


@needs_torch
def test_pair_ranking_teaches_what_tells_a_copy_from_its_original(tiny_config):
    """The labels say nothing (drawn at random); only the pairs do: each 'copy' is its
    original plus a mark. Trained with the ranking term, the model scores a held-out copy above
    its original; the term has the right sign."""
    import torch

    from training.trainer import PairRanking, TrainConfig, train
    from xai_platform.models.formats.torch import InputAdapter, build_network

    spec = tiny_config.model("tiny-torch-xray")
    rng = np.random.default_rng(0)
    originals = rng.random((60, 32, 32), dtype=np.float32)
    copies = originals.copy()
    copies[:, 20:28, 4:12] += 0.8
    x = np.concatenate([originals[:40], copies[:40]])
    y = rng.integers(0, 2, 80)
    pairs = np.stack([np.arange(40, 80), np.arange(40)], axis=1)  # (copy, original)
    net = build_network(spec, seed=0)
    train(spec, net, x, y, x[:16], np.r_[np.zeros(8, int), np.ones(8, int)],
          TrainConfig(epochs=4, batch_size=16, lr=3e-3, seed=0, threads=1),
          ranking=PairRanking(pairs, weight=5.0, per_step=16))
    model = torch.nn.Sequential(InputAdapter(spec), net).eval()
    with torch.no_grad():
        z = model(torch.from_numpy(np.concatenate([originals[40:], copies[40:]])))
    z = (z[:, 1] - z[:, 0]).numpy()  # the positive label's logit difference
    assert np.mean(z[20:] > z[:20]) >= 0.9


def test_several_vocoders_are_dealt_in_turn_over_every_source():
    rows = [{"key": f"r{i}", "label": "real", "split": "train", "original": f"/o/{i}.ogg",
             "source": "ab"[i % 2], "language": "en", "text": "", "speaker": ""}
            for i in range(60)]
    rows.append({"key": "w0", "label": "fake", "split": "train", "original": "/o/0.ogg",
                 "generator": "world", "source": "a", "language": "en"})
    items, pair_of = corpus_paired.plan_copies(rows, vocoders=("world", "phasevoc", "lpc"))
    # r0 has its WORLD copy already; the other 59 are dealt in turn
    assert len(items) == 59 and pair_of["w0"] == "r0"
    counts = {(it.generator, it.source): 0 for it in items}
    for it in items:
        counts[it.generator, it.source] += 1
    assert sorted(sum(n for (g, _), n in counts.items() if g == v)
                  for v in ("world", "phasevoc", "lpc")) == [19, 20, 20]
    assert all(n in (9, 10) for n in counts.values())  # an equal share of each source
    again, _ = corpus_paired.plan_copies(rows, vocoders=("world", "phasevoc", "lpc"))
    assert [it.key for it in again] == [it.key for it in items]  # seeded


@pytest.mark.parametrize("name", ["phasevoc", "lpc", "pghi"])
def test_a_training_vocoder_keeps_length_level_pitch_and_envelope_not_the_wave(name):
    import librosa

    from training.audio import vocoders

    pytest.importorskip(vocoders.MODULES[name], reason="requirements-corpus.txt")
    x = _voice(np.random.default_rng(0), 22050, 1.5)
    ref = vocoders.prepared(x, 22050, np.random.default_rng(1)).astype(np.float32)
    y, sr, _, params = vocoders.VOCODERS[name](x, 22050, np.random.default_rng(2))
    assert sr == 16000 and len(y) == len(ref) and np.all(np.isfinite(y)), params
    assert np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(ref ** 2)), rel=1e-3)

    def pitch(z):
        f0, _, _ = librosa.pyin(z, fmin=60, fmax=400, sr=16000)
        return np.nanmedian(f0)

    def mel_db(z):
        return librosa.power_to_db(librosa.feature.melspectrogram(y=z, sr=16000, n_mels=40))

    assert pitch(y) == pytest.approx(pitch(ref), rel=0.05)
    assert np.corrcoef(mel_db(y).ravel(), mel_db(ref).ravel())[0, 1] > 0.85
    assert np.corrcoef(y, ref)[0, 1] < 0.9  # resynthesised, not the original passed through


def test_twin_sampling_gives_the_twins_their_share_of_the_fake_draws():
    from training.audio.data import Clip
    from training.audio.features import twin_sampling
    from training.trainer import _epoch_batches

    clips = [Clip(Path("r"), "real", "train", key="r"),
             Clip(Path("t"), "fake", "train", key="t", pair_of="r"),
             Clip(Path("s"), "fake", "train", key="s")]
    clip = np.array([0, 0, 1, 1, 1, 1, 2, 2])  # the twin has 4 windows, the TTS fake 2
    fs = FeatureSet(np.zeros((8, 2, 2), np.float32), np.array([0, 0, 1, 1, 1, 1, 1, 1]), clip,
                    clips, np.array([0, 1, 1]))
    w = twin_sampling(fs, positive=1, share=0.2)
    assert w[:2].tolist() == [1.0, 1.0]  # real windows as they were
    assert w[2:6].sum() == pytest.approx(0.2 * 6) and w[6:].sum() == pytest.approx(0.8 * 6)
    # the sampler draws the rows in proportion, and never a row of weight 0
    rng = np.random.default_rng(0)
    draws = np.concatenate([idx for _ in range(500) for _, idx, _, _ in _epoch_batches(
        fs.x, 1, 8, None, rng, sampling=w * (np.arange(8) != 3))])
    counts = np.bincount(draws, minlength=8)
    assert counts[3] == 0
    twin_left = 0.2 * 6 * 3 / 4  # row 3, one of the twin's four windows, is out
    assert counts[6:].sum() / counts[2:].sum() == pytest.approx(4.8 / (4.8 + twin_left), abs=0.03)
    with pytest.raises(ValueError, match="between 0 and 1"):
        twin_sampling(fs, positive=1, share=1.0)


def test_a_source_moved_to_validation_leaves_training_whole_and_gets_no_twin():
    rows = [{"key": f"r{i}", "label": "real", "split": "train", "original": f"/o/{i}.ogg",
             "source": "ab"[i % 2], "language": "en", "text": "", "speaker": "",
             "split_reason": "", "generator": "ab"[i % 2]} for i in range(6)]
    rows += [{**rows[1], "key": "f1", "label": "fake", "generator": "espeak-ng"},
             {**rows[1], "key": "world-p0-1", "label": "fake", "generator": "world"},
             {**rows[0], "key": "t", "split": "test", "split_reason": "held out"}]
    moved = corpus_paired.moved_to_validation(rows, ["b"])
    assert {(r["key"], r["split"]) for r in moved if r["source"] == "b"} == {
        ("r1", "validation"), ("r3", "validation"), ("r5", "validation"), ("f1", "validation")}
    assert [r["split"] for r in moved if r["source"] == "a"] == ["train"] * 3 + ["test"]
    assert "world-p0-1" not in {r["key"] for r in moved}  # an earlier paired build's twin
    assert rows[1]["split"] == "train"  # the base rows are not changed in place
    items, _ = corpus_paired.plan_copies(moved)
    assert sorted(it.origin.path.name for it in items) == ["0.ogg", "2.ogg", "4.ogg"]
    with pytest.raises(SystemExit, match="no training clips of c"):
        corpus_paired.moved_to_validation(rows, ["c"])


def test_no_copies_only_moves_the_sources(tmp_path):
    base = _corpus(tmp_path / "base")
    out = tmp_path / "moved"
    summary = corpus_paired.build_paired(out, base=base, copies=False, validation_sources=["src"],
                                         builder_kwargs=QUIET, log=lambda m: None)
    rows = _rows(out / "metadata.csv")
    old = _rows(base / "metadata.csv")
    assert summary["paired"]["copies_added"] == 0 and len(rows) == len(old)
    assert summary["split_rule"].endswith(
        "; no copies added (src moved from training to validation; test unchanged)")
    assert {r["split"] for r in rows} == {"validation", "test"}  # training's one source moved
    assert all((out / r["path"]).is_file() for r in rows)
    with pytest.raises(SystemExit, match="--no-copies"):
        corpus_paired.build_paired(tmp_path / "x", base=base, copies=False, log=lambda m: None)


def test_readings_use_training_voices_of_the_language_in_turn_and_the_own_text():
    """Every training recording in a language a training voice speaks gets one reading by
    such a voice (held-out voices never), of its own text where it has one, else of a training
    text in its language; the reading keeps the recording's source (its storage trip) and
    is paired with it. Recordings in other languages, and held-out splits, get none."""
    from training.audio.corpus_v2 import Engines

    def real(i: int, language: str, text: str = "", split: str = "train") -> dict[str, str]:
        return {"key": f"r{i}", "label": "real", "split": split, "original": f"/o/{i}.ogg",
                "source": f"src{i % 2}", "language": language, "text": text, "speaker": ""}

    rows = [real(0, "en", "Hello there."), real(1, "en"), real(2, "und"), real(3, "en", "Hi."),
            real(4, "nl", "Hallo."), real(5, "en", "Held out.", split="test"), real(6, "es"),
            real(3, "en", "Hi.")]  # a base may list a recording twice: one twin
    engines = Engines(voices={"kokoro": {"af_one": "en", "am_two": "en", "bf_test": "en",
                                         "af_river": "en", "ef_one": "es"}}, vocoders=())
    bank = {"en": ["A sentence from the bank."], "es": ["Una frase del banco."]}
    items, pair_of, origins, unspoken = corpus_paired.plan_readings(
        rows, engines, generators=("kokoro",), bank=bank)
    by_original = {str(it.origin.path): it for it in items}
    assert sorted(by_original) == ["/o/0.ogg", "/o/1.ogg", "/o/2.ogg", "/o/3.ogg", "/o/6.ogg"]
    assert len(items) == len(by_original) == len({it.key for it in items})
    assert unspoken == {"nl": 1}
    english = [it for it in items if it.language == "en"]
    assert {it.voice for it in english} == {"kokoro:af_one", "kokoro:am_two"}  # in turn
    assert sum(it.voice == "kokoro:af_one" for it in english) == 2
    assert by_original["/o/0.ogg"].text == "Hello there."
    assert origins[by_original["/o/0.ogg"].key] == "own"
    # no own text: a training text in the language (the pool), else the bank
    assert by_original["/o/1.ogg"].text in ("Hello there.", "Hi.")
    assert origins[by_original["/o/1.ogg"].key] == "pool"
    assert by_original["/o/2.ogg"].language == "en"  # 'und' is read as English
    # no training text in Spanish: the bank's, and the origin says so
    assert by_original["/o/6.ogg"].text == "Una frase del banco."
    assert origins[by_original["/o/6.ogg"].key] == "textbank"
    for it in items:
        i = int(str(it.origin.path)[3])
        assert it.source == f"src{i % 2}" and pair_of[it.key] == f"r{i}"
        assert corpus_paired.COPY_KEY.match(it.key)
    again = corpus_paired.plan_readings(rows, engines, generators=("kokoro",), bank=bank)[0]
    assert [(it.key, it.voice, it.text) for it in again] == [
        (it.key, it.voice, it.text) for it in items]  # seeded


def test_foreign_readings_give_every_language_a_reading_by_training_voices_only():
    """With foreign readers, a recording in a language no training voice speaks is read by a
    training voice of another language, in the recording's language (Kokoro phonemises it);
    held-out voices still never read, and recordings a voice of their language speaks keep
    that voice. The builder's Kokoro call phonemises the recording's language."""
    from training.audio.corpus_v2 import Engines
    from training.audio.synth import kokoro_phonemiser

    rows = [{"key": f"r{i}", "label": "real", "split": "train", "original": f"/o/{i}.ogg",
             "source": "src", "language": lang, "text": f"Text {i}.", "speaker": ""}
            for i, lang in enumerate(["en", "cs", "cs", "nl", "nds"])]
    engines = Engines(voices={"kokoro": {"af_one": "en", "bf_test": "en", "ef_one": "es"}},
                      vocoders=())
    plain = corpus_paired.plan_readings(rows, engines, generators=("kokoro",), bank={})
    assert [it.language for it in plain[0]] == ["en"] and plain[3] == {"cs": 2, "nl": 1, "nds": 1}
    items, pair_of, _, unspoken = corpus_paired.plan_readings(
        rows, engines, generators=("kokoro",), bank={}, foreign=("kokoro",))
    assert not unspoken and len(items) == 5
    by_lang = {it.language: it for it in items}
    assert by_lang["en"].voice == "kokoro:af_one"  # its own language's voice, as before
    assert {it.voice for it in items} <= {"kokoro:af_one", "kokoro:ef_one"}  # never bf_test
    assert {it.voice for it in items if it.language == "cs"} == {"kokoro:af_one",
                                                                "kokoro:ef_one"}  # in turn
    assert all(pair_of[it.key] == f"r{str(it.origin.path)[3]}" for it in items)
    assert kokoro_phonemiser("af_one", "en") == "en-us"
    assert kokoro_phonemiser("bf_one", "en") == "en-gb"
    assert kokoro_phonemiser("ef_one", "cs") == "cs"
    assert kokoro_phonemiser("af_one", "nds") == "de"  # eSpeak NG has no Low German
    assert kokoro_phonemiser("jf_one", "und") == "en-us"
