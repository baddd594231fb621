"""Real room tone lent to the synthetic training fakes (training.audio.room_tone, the trainer's
``--room-tone``): what counts as a recording's room tone, where and how loud it goes, and which
clips get it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.audio.data import Clip, load_corpus
from training.audio.features import feature_set
from training.audio.room_tone import RoomTones, chain_settings, lend, room_tone

SR = 16000


def _recording(rng: np.random.Generator, *, sr: int = SR, hum_hz: float = 120.0,
               noise_db: float = -40.0, silent_edges: bool = False) -> np.ndarray:
    """0.3 s of room (a hum plus hiss at ``noise_db`` below the speech), 0.8 s of a loud
    vowel-like tone over the same room, 0.3 s of room again."""
    t = np.arange(int(1.4 * sr)) / sr
    room = np.sin(2 * np.pi * hum_hz * t) + 0.3 * rng.standard_normal(len(t))
    room *= 10 ** (noise_db / 20) * 0.3 / np.sqrt(np.mean(room ** 2))  # the speech's RMS is 0.3
    speech = np.zeros_like(t)
    a, b = int(0.3 * sr), int(1.1 * sr)
    speech[a:b] = 0.3 * np.sqrt(2) * np.sin(2 * np.pi * 220 * t[a:b])
    wave = speech + (0.0 if silent_edges else room)
    return wave.astype(np.float32)


def test_room_tone_is_what_the_trim_cuts_off_at_its_level_under_the_speech():
    rng = np.random.default_rng(0)
    tone = room_tone(_recording(rng, sr=22050), 22050)
    assert tone is not None
    # about 0.6 s of room less the guards, resampled to 16 kHz
    assert 0.5 * SR < len(tone.samples) < 0.62 * SR
    assert 20 * np.log10(tone.ratio) == pytest.approx(-40.0, abs=1.5)
    # the hum is in it, the vowel is not
    spectrum = np.abs(np.fft.rfft(tone.samples))
    freqs = np.fft.rfftfreq(len(tone.samples), 1 / SR)
    near = lambda f: spectrum[np.abs(freqs - f) < 5].max()  # noqa: E731
    assert near(120) > 5 * near(220)


def test_a_recording_without_room_gives_no_tone():
    rng = np.random.default_rng(1)
    assert room_tone(_recording(rng, silent_edges=True), SR) is None
    assert room_tone(_recording(rng)[int(0.29 * SR):int(1.11 * SR)], SR) is None  # trimmed


def test_the_tone_goes_under_the_speech_only_at_its_own_ratio():
    rng = np.random.default_rng(2)
    tone = room_tone(_recording(rng), SR)
    clip = np.zeros(2 * SR, np.float32)
    lead, speech_s = 0.5, 0.8
    a, b = int(lead * SR), int((lead + speech_s) * SR)
    clip[a:b] = 0.1 * np.sin(2 * np.pi * 300 * np.arange(b - a) / SR)
    out = lend(clip, tone, lead_s=lead, speech_s=speech_s, lowpass_hz=None, vorbis_level=None,
               rng=np.random.default_rng(0))
    assert np.array_equal(out[:a], clip[:a]) and np.array_equal(out[b:], clip[b:])
    added = out[a:b] - clip[a:b]
    core = slice(int(0.02 * SR), -int(0.02 * SR))  # past the fades
    ratio_db = 20 * np.log10(np.sqrt(np.mean(added[core] ** 2))
                             / np.sqrt(np.mean(clip[a:b] ** 2)))
    assert ratio_db == pytest.approx(20 * np.log10(tone.ratio), abs=1.0)


def test_a_low_passed_clip_gets_a_low_passed_tone():
    rng = np.random.default_rng(3)
    tone = room_tone(_recording(rng, noise_db=-32.0), SR)
    clip = np.zeros(SR, np.float32)
    clip[1000:15000] = 0.1 * np.sin(2 * np.pi * 300 * np.arange(14000) / SR)
    out = lend(clip, tone, lead_s=1000 / SR, speech_s=14000 / SR, lowpass_hz=3000.0,
               vorbis_level=None, rng=np.random.default_rng(0))
    added = np.abs(np.fft.rfft(out - clip))
    freqs = np.fft.rfftfreq(len(clip), 1 / SR)
    assert added[freqs > 5000].mean() < 0.01 * added[(freqs > 500) & (freqs < 2500)].mean()


def test_chain_settings_reads_the_params_column():
    s = chain_settings("rate=1.10 store=vorbis44k/0.42 loud=-18.2 reverb=1 lowpass=none "
                       "noise=-54.3/0.69 lead=0.07 channel=none vorbis=0.67")
    assert s["lead"] == "0.07" and s["lowpass"] == "none" and s["vorbis"] == "0.67"


def _corpus(root: Path) -> Path:
    """Two real sources (a room with a 120 Hz hum, one with a 900 Hz whine), their originals,
    and a synthetic fake and a vocoded copy per split."""
    rng = np.random.default_rng(4)
    rows = ["path,label,split,language,generator,generator_kind,speaker,speech_duration,source,"
            "key,params,original"]
    params = "loud=-20.0 reverb=0 lowpass=none noise=-60.0/1.00 lead=0.30 vorbis=0.40"
    for src, hum in (("hums", 120.0), ("whines", 900.0)):
        for i in range(3):
            original = root / "originals" / f"{src}{i}.wav"
            original.parent.mkdir(parents=True, exist_ok=True)
            sf.write(original, _recording(rng, hum_hz=hum, noise_db=-32.0), SR)
            path = root / "clips" / f"{src}{i}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, _recording(rng, hum_hz=hum), SR)
            rows.append(f"clips/{src}{i}.flac,real,{'train' if i < 2 else 'test'},en,{src},human,"
                        f"{src}-{i},0.8,{src},{src}{i},{params},{original}")
    for split in ("train", "validation", "test"):
        for gen, kind in (("espeak-ng", "classic"), ("world", "vocoder")):
            path = root / "clips" / f"{gen}-{split}.flac"
            sf.write(path, _recording(rng, silent_edges=True), SR)
            rows.append(f"clips/{gen}-{split}.flac,fake,{split},en,{gen},{kind},,0.8,hums,"
                        f"{gen}-{split},{params},")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def test_only_synthetic_training_fakes_are_lent_a_tone_of_their_own_source(tmp_path):
    clips = load_corpus(_corpus(tmp_path))
    tones = RoomTones.from_clips(clips, seed=0)
    assert sorted(tones.by_source) == ["hums", "whines"]
    assert all(len(t) == 2 for t in tones.by_source.values())  # the test split's kept out
    lent = {c.key for c in clips if tones.transform(c) is not None}
    assert lent == {"espeak-ng-train"}
    assert tones.lent(clips) == {"hums": 1}

    fake = next(c for c in clips if c.key == "espeak-ng-train")
    wave, sr = sf.read(fake.path, dtype="float32")
    once, _ = tones.transform(fake)(wave, sr)
    again, _ = tones.transform(fake)(wave, sr)
    assert np.array_equal(once, again)  # the same clip gets the same tone in any run
    spectrum = np.abs(np.fft.rfft(once - wave))
    freqs = np.fft.rfftfreq(len(wave), 1 / SR)
    near = lambda f: spectrum[np.abs(freqs - f) < 5].max()  # noqa: E731
    assert near(120) > 5 * near(900)  # its source's hum, not the other room's whine


def test_only_the_training_features_change(tmp_path, tiny_config):
    clips = load_corpus(_corpus(tmp_path))
    spec = tiny_config.model("tiny-torch-audio")
    tones = RoomTones.from_clips(clips, seed=0)
    plain = feature_set(clips, spec, "train", cache_dir=None)
    toned = feature_set(clips, spec, "train", cache_dir=None, variant="roomtone-s0",
                        clip_transform=tones.transform)
    changed = {plain.clips[c].key for c in range(len(plain.clips))
               if not np.array_equal(plain.x[plain.clip == c], toned.x[toned.clip == c])}
    assert changed == {"espeak-ng-train"}


def test_clips_without_the_chain_settings_are_left_alone():
    clip = Clip(Path("x.flac"), "fake", "train", generator="espeak-ng", generator_kind="classic",
                speech_seconds=0.8, source="hums", key="k", params="rate=1.0")
    tones = RoomTones({"hums": [room_tone(_recording(np.random.default_rng(5)), SR)]})
    assert tones.transform(clip) is None
