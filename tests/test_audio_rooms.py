"""Simulated rooms in training (training.audio.rooms, the trainer's ``--rooms``): what a room
does to a clip, which clips get one, and that only the training features change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.audio.data import Clip, load_corpus
from training.audio.features import feature_set
from training.audio.rooms import Rooms, impulse_response, reverberate, rt60

SR = 16000


@pytest.fixture(scope="module")
def rooms() -> Rooms:
    return Rooms(0.5, seed=3, bank=[impulse_response(np.random.default_rng(i)) for i in range(8)])


def test_a_room_starts_with_its_direct_path_and_decays_as_asked():
    ir = impulse_response(np.random.default_rng(0))
    assert np.argmax(np.abs(ir)) == 0  # the room adds no delay
    assert np.sum(ir.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-4)
    # the same draw gives the same room (the bank is the same on any machine)
    assert np.array_equal(ir, impulse_response(np.random.default_rng(0)))
    rts = [rt60(impulse_response(np.random.default_rng(i))) for i in range(12)]
    assert all(0.05 < t < 1.5 for t in rts)
    assert max(rts) > 2 * min(rts)  # rooms differ


def test_a_clip_in_a_room_keeps_its_length_and_level_and_rings_after_it_stops():
    rng = np.random.default_rng(1)
    wave = np.zeros(SR, np.float32)
    wave[2000:6000] = 0.2 * rng.standard_normal(4000)
    ir = impulse_response(np.random.default_rng(2))
    wet = reverberate(wave, ir)
    assert wet.shape == wave.shape and wet.dtype == np.float32
    rms = lambda x: np.sqrt(np.mean(np.square(x, dtype=np.float64)))  # noqa: E731
    assert rms(wet) == pytest.approx(rms(wave), rel=1e-3)
    assert np.abs(wet[:2000]).max() < 1e-6  # nothing before the talker starts
    tail = slice(6000 + int(0.02 * SR), 6000 + int(0.1 * SR))
    assert rms(wet[tail]) > 100 * rms(wave[tail])  # the room rings on


def test_about_p_of_the_training_clips_of_either_label_get_a_room_and_always_the_same(rooms):
    clips = [Clip(Path(f"c{i}.flac"), label, split, key=f"{label}{i}")
             for i in range(400) for label in ("real", "fake")
             for split in ("train", "test")]
    chosen = {c.key + c.split: rooms.choose(c) for c in clips}
    assert all(v is None for k, v in chosen.items() if k.endswith("test"))
    for label in ("real", "fake"):
        share = np.mean([chosen[f"{label}{i}train"] is not None for i in range(400)])
        assert 0.42 < share < 0.58
    again = Rooms(0.5, seed=3, bank=rooms.bank)
    assert all(again.choose(c) == chosen[c.key + c.split] for c in clips)
    other_seed = Rooms(0.5, seed=4, bank=rooms.bank)
    assert any(other_seed.choose(c) != chosen[c.key + c.split] for c in clips)
    summary = rooms.summary(clips)
    assert summary["bank"] == 8 and set(summary["train_clips_with_a_room"]) == {"fake", "real"}


def test_a_share_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="share"):
        Rooms(0.0, bank=[np.ones(1, np.float32)])
    with pytest.raises(ValueError, match="share"):
        Rooms(1.5, bank=[np.ones(1, np.float32)])


def _corpus(root: Path) -> Path:
    """Eight real and eight fake clips per split: a tone burst in a 1.4 s bed."""
    rng = np.random.default_rng(4)
    rows = ["path,label,split,language,generator,generator_kind,speaker,speech_duration,source,"
            "key"]
    t = np.arange(int(1.4 * SR)) / SR
    for split in ("train", "validation", "test"):
        for label, gen in (("real", "human"), ("fake", "espeak-ng")):
            for i in range(8):
                wave = 0.001 * rng.standard_normal(len(t))
                a, b = int(0.3 * SR), int(0.9 * SR)
                wave[a:b] += 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t[a:b])
                name = f"{label}-{split}-{i}"
                sf.write(root / f"{name}.flac", wave.astype(np.float32), SR)
                rows.append(f"{name}.flac,{label},{split},en,{gen},"
                            f"{'human' if label == 'real' else 'classic'},,0.6,src,{name}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def test_only_the_training_features_change_and_both_labels_do(tmp_path, tiny_config, rooms):
    clips = load_corpus(_corpus(tmp_path))
    spec = tiny_config.model("tiny-torch-audio")
    for split in ("train", "test"):
        plain = feature_set(clips, spec, split, cache_dir=None)
        roomy = feature_set(clips, spec, split, cache_dir=None, variant=rooms.variant,
                            clip_transform=rooms.transform)
        changed = {plain.clips[c].key for c in range(len(plain.clips))
                   if not np.array_equal(plain.x[plain.clip == c], roomy.x[roomy.clip == c])}
        expected = {c.key for c in clips if c.split == split and rooms.choose(c) is not None}
        assert changed == expected
        if split == "train":
            assert {k.split("-")[0] for k in changed} == {"real", "fake"}
        else:
            assert not changed
