"""Audio preprocessing: every format decodes, bad inputs raise InputError with a useful message,
features have the documented shape and range, and training and inference features agree."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xai_platform.modalities.audio import AudioInput
from xai_platform.errors import InputError
from xai_platform.preprocessing import audio

SPEC = AudioInput(sample_rate=16000, duration=2.0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def tone(sr: int, seconds: float, *, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, wave: np.ndarray, sr: int, **kwargs) -> Path:
    sf.write(path, wave, sr, **kwargs)
    return path


def ffmpeg_encode(tmp_path: Path, wave: np.ndarray, sr: int, name: str, *options: str) -> Path:
    """``wave`` written by the ffmpeg binary to ``tmp_path / name`` with its output
    ``options``; the test is skipped where ffmpeg is missing or cannot write that format."""
    ffmpeg = shutil.which("ffmpeg") or pytest.skip("the ffmpeg binary is not installed")
    src = write(tmp_path / "src.wav", wave, sr)
    out = tmp_path / name
    proc = subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
                           *options, str(out)], capture_output=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"ffmpeg cannot write {name} here: {proc.stderr.decode()[-200:]}")
    return out


def ffmpeg_mp3(tmp_path: Path, wave: np.ndarray, sr: int) -> Path:
    return ffmpeg_encode(tmp_path, wave, sr, "clip.mp3", "-b:a", "128k")


# --------------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize("name, fmt, subtype, sr, lossy", [
    ("pcm16.wav", "WAV", "PCM_16", 22050, False),
    ("float.wav", "WAV", "FLOAT", 22050, False),
    ("clip.flac", "FLAC", "PCM_16", 22050, False),
    ("vorbis.ogg", "OGG", "VORBIS", 22050, True),
    ("opus.ogg", "OGG", "OPUS", 48000, True),
])
def test_formats_decode(tmp_path, name, fmt, subtype, sr, lossy):
    if subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write {fmt}/{subtype}")
    x = tone(sr, 1.0)
    path = write(tmp_path / name, x, sr, format=fmt, subtype=subtype)
    wave, got_sr = audio.decode_audio(path)
    assert got_sr == sr and wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == len(x)
    assert np.abs(wave).max() <= 1.0
    if lossy:  # a 0.5 sine has an RMS of 0.354
        assert np.sqrt(np.mean(wave**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    else:
        np.testing.assert_allclose(wave, x, atol=1e-4)


def test_mp3_decodes(tmp_path):
    x = tone(44100, 1.0)
    wave, sr = audio.decode_audio(ffmpeg_mp3(tmp_path, x, 44100))
    assert sr == 44100 and wave.dtype == np.float32
    assert abs(len(wave) - len(x)) <= 2 * 1152  # at most the encoder's delay and padding
    assert np.sqrt(np.mean(wave**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_mp3_falls_back_to_ffmpeg(tmp_path, monkeypatch):
    path = ffmpeg_mp3(tmp_path, tone(44100, 1.0), 44100)
    monkeypatch.setattr(audio, "_soundfile_formats", lambda: frozenset({"WAV"}))
    wave, sr = audio.decode_audio(path)
    assert sr == 44100 and abs(len(wave) - 44100) <= 2 * 1152
    with pytest.raises(InputError, match=r"limit is 0\.5 s"):
        audio.decode_audio(path, max_seconds=0.5)


@pytest.mark.parametrize("name, codec", [("memo.m4a", "aac"), ("lossless.m4a", "alac"),
                                         ("browser.webm", "libopus")])
def test_phone_and_browser_recordings_decode_through_ffmpeg(tmp_path, name, codec):
    """A phone's voice memo (AAC or ALAC in MP4) and a browser's recording (Opus in WebM):
    libsndfile reads neither; the ffmpeg binary does, from a path or from bytes."""
    sr = 48000 if codec == "libopus" else 44100
    path = ffmpeg_encode(tmp_path, tone(sr, 1.0), sr, name, "-c:a", codec)
    wave, got_sr = audio.decode_audio(path)
    assert got_sr == sr and wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - sr) <= 0.05 * sr  # the encoder's priming and padding at most
    assert np.sqrt(np.mean(wave**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    from_bytes, _ = audio.decode_audio(path.read_bytes())
    np.testing.assert_array_equal(from_bytes, wave)
    with pytest.raises(InputError, match=r"limit is 0\.5 s"):
        audio.decode_audio(path, max_seconds=0.5)


def test_m4a_without_ffmpeg_and_video_without_sound(tmp_path, monkeypatch):
    memo = ffmpeg_encode(tmp_path, tone(16000, 0.5), 16000, "memo.m4a", "-c:a", "aac")
    video = tmp_path / "silent-film.mp4"
    proc = subprocess.run([shutil.which("ffmpeg"), "-nostdin", "-loglevel", "error", "-y",
                           "-f", "lavfi", "-i", "color=c=black:s=16x16:d=1", "-c:v", "mpeg4",
                           str(video)], capture_output=True, check=False)
    if proc.returncode == 0:
        with pytest.raises(InputError, match=r"could not be decoded as MP4/M4A audio.*no "
                                             r"sound track \(it has no audio stream\)"):
            audio.decode_audio(video)
    monkeypatch.setattr(audio.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="MP4/M4A audio, which only the ffmpeg program "
                                         "decodes, and it is not installed here. Install"):
        audio.decode_audio(memo)


def test_stereo_downmix_and_bytes(tmp_path):
    left, right = tone(16000, 0.5, freq=300), tone(16000, 0.5, freq=700, amp=0.2)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 16000,
                 subtype="FLOAT")
    wave, _ = audio.decode_audio(path)
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-6)
    from_bytes, _ = audio.decode_audio(path.read_bytes())
    np.testing.assert_array_equal(from_bytes, wave)


@pytest.mark.parametrize("sr", [8000, 44100])
def test_resample_to_16k(tmp_path, sr):
    wave, got = audio.decode_audio(write(tmp_path / "x.wav", tone(sr, 1.5), sr))
    out = audio.resample(wave, got, 16000)
    assert out.dtype == np.float32 and len(out) == math.ceil(len(wave) * 16000 / sr) == 24000
    np.testing.assert_array_equal(audio.resample(out, 16000, 16000), out)


def test_from_array_int16_stereo():
    pcm = np.stack([np.full(800, 16384, np.int16), np.full(800, -8192, np.int16)], axis=1)
    wave, sr = audio.from_array(16000, pcm)
    assert sr == 16000 and wave.shape == (800,) and wave.dtype == np.float32
    np.testing.assert_allclose(wave, (0.5 - 0.25) / 2)
    loud, _ = audio.from_array(8000, np.array([0.0, 2.0, -4.0]))
    np.testing.assert_allclose(loud, [0.0, 0.5, -1.0])
    with pytest.raises(InputError, match="no audio samples"):
        audio.from_array(16000, np.zeros((0, 2), np.int16))


# --------------------------------------------------------------------------------------------
# Bad inputs


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="No file at .*Check the path"):
        audio.decode_audio(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(InputError,
                       match=r"empty \(0 bytes\)\. Upload a WAV, FLAC, OGG, MP3 or M4A"):
        audio.decode_audio(tmp_path / "empty.wav")
    with pytest.raises(InputError, match="empty"):
        audio.decode_audio(b"")


def test_corrupt_wav(tmp_path, rng):
    header_only = b"RIFF\x24\x10\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\x07" * 40
    (tmp_path / "broken.wav").write_bytes(header_only)
    with pytest.raises(InputError, match="could not be decoded as WAV.*Export it again"):
        audio.decode_audio(tmp_path / "broken.wav")
    noise = b"\x00" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    (tmp_path / "noise.wav").write_bytes(noise)
    with pytest.raises(InputError, match="could not be decoded"):
        audio.decode_audio(tmp_path / "noise.wav")


def test_unsupported_files(tmp_path, rng):
    (tmp_path / "notes.txt").write_text("hello, this is not a recording\n")
    with pytest.raises(InputError,
                       match="text file, not audio. Upload a WAV, FLAC, OGG, MP3 or M4A"):
        audio.decode_audio(tmp_path / "notes.txt")
    (tmp_path / "voice.wav").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(InputError, match="PNG image, not audio"):
        audio.decode_audio(tmp_path / "voice.wav")
    with pytest.raises(InputError, match="HEIC or AVIF image, not audio"):
        audio.decode_audio(b"\x00\x00\x00\x18ftypheic" + bytes(100))
    (tmp_path / "data.xyz").write_bytes(b"\x00" + rng.integers(0, 256, 999, np.uint8).tobytes())
    with pytest.raises(InputError, match=r"'\.xyz' files are not supported\. Upload a WAV"):
        audio.decode_audio(tmp_path / "data.xyz")


def test_too_long_and_no_samples(tmp_path):
    path = write(tmp_path / "long.wav", tone(8000, 3.0), 8000)
    with pytest.raises(InputError, match=r"3\.0 s long; the limit is 1 s.*--max-audio-seconds"
                                         r".*app\.max_audio_seconds"):
        audio.decode_audio(path, max_seconds=1)
    path = write(tmp_path / "none.wav", np.zeros(0, np.float32), 8000)
    with pytest.raises(InputError, match="no audio samples"):
        audio.decode_audio(path)


def test_silence_is_refused_only_where_asked(tmp_path):
    path = write(tmp_path / "quiet.wav", np.zeros(8000, np.float32), 8000)
    wave, _ = audio.decode_audio(path)  # decoding alone accepts it; training code chooses
    assert audio.is_silent(wave) and not audio.is_silent(tone(8000, 0.1))
    with pytest.raises(InputError, match="The recording is silent .*microphone"):
        audio.load_for_model(path, SPEC)


# --------------------------------------------------------------------------------------------
# Features and windows


def test_log_mel_shape_and_range(rng):
    x = (rng.standard_normal(SPEC.n_samples) * 0.1).astype(np.float32)
    feats = audio.log_mel(x, SPEC)
    assert feats.shape == SPEC.shape and feats.dtype == np.float32
    assert feats.max() == 0.0 and feats.min() >= -SPEC.top_db
    zeros = audio.log_mel(np.zeros(SPEC.n_samples, np.float32), SPEC)
    assert not np.isnan(zeros).any() and np.all(zeros == -SPEC.top_db)
    with pytest.raises(ValueError, match="fit_window"):
        audio.log_mel(x[:-1], SPEC)


def test_short_input_gives_one_padded_window():
    windows = audio.split_windows(tone(16000, 0.5), SPEC)
    assert windows.windows.shape == (1, SPEC.n_samples) and windows.padded
    assert windows.duration == 0.5 and np.all(windows.windows[0, 8000:] == 0)
    exact = audio.split_windows(tone(16000, 2.0), SPEC)
    assert exact.n_windows == 1 and not exact.padded


def test_long_input_windows_cover_the_end():
    wave = tone(16000, 7.3, freq=220) * np.linspace(0.1, 1, 116800, dtype=np.float32)
    windows = audio.split_windows(wave, SPEC)
    np.testing.assert_allclose(windows.starts, [0, 1, 2, 3, 4, 5, 5.3])
    assert np.all(np.diff(windows.starts) > 0) and not windows.padded
    np.testing.assert_array_equal(windows.windows[-1], wave[-SPEC.n_samples:])
    assert windows.starts[-1] + SPEC.duration == pytest.approx(windows.duration)
    feats = audio.features(windows, SPEC)
    assert feats.shape == (7, *SPEC.shape) and feats.dtype == np.float32


@pytest.mark.parametrize("seconds", [1.2, 3.7])
def test_training_and_inference_features_match(tmp_path, rng, seconds):
    x = (0.3 * rng.standard_normal(int(44100 * seconds))).astype(np.float32)
    path = write(tmp_path / "clip.flac", x, 44100)
    windows = audio.load_for_model(path, SPEC)
    wave, sr = audio.decode_audio(path)  # the training way
    train_window, padded = audio.fit_window(audio.resample(wave, sr, SPEC.sample_rate),
                                            SPEC.n_samples)
    assert padded == windows.padded
    np.testing.assert_array_equal(audio.log_mel(train_window, SPEC),
                                  audio.features(windows, SPEC)[0])


def test_axes():
    centers, edges = audio.band_centers_hz(SPEC), audio.band_edges_hz(SPEC)
    assert centers.shape == (SPEC.n_mels,) and edges.shape == (SPEC.n_mels + 1,)
    assert np.all(edges[:-1] < centers) and np.all(centers < edges[1:])
    assert SPEC.fmin < edges[0] and edges[-1] < SPEC.f_max
    times = audio.frame_times(SPEC)
    assert times.shape == (SPEC.n_frames,) and times[0] == 0 and times[-1] == pytest.approx(2.0)


LINEAR = AudioInput(sample_rate=16000, duration=2.0, n_mels=64, fmin=0.0, kind="linear")


def test_linear_front_end_puts_a_tone_in_its_band():
    # A 6 kHz tone: the linear bands are evenly spaced, 64 of them up to 8 kHz (125 Hz apart),
    # and the tone's energy peaks in the band centred nearest to it, where mel bands are wide.
    centers = audio.band_centers_hz(LINEAR)
    np.testing.assert_allclose(np.diff(centers), 8000 / 65, rtol=1e-9)
    plane = audio.spectrogram(tone(16000, 2.0, freq=6000), LINEAR)
    assert plane.shape == LINEAR.shape == (64, SPEC.n_frames) and plane.max() == 0.0
    assert int(plane.mean(axis=1).argmax()) == int(np.abs(centers - 6000).argmin())
    mel_centers = audio.band_centers_hz(SPEC)
    assert (mel_centers > 4000).sum() < 20 < (centers > 4000).sum()  # half of linear's bands
    assert np.all(audio.spectrogram(np.zeros(SPEC.n_samples, np.float32), LINEAR)
                  == -LINEAR.top_db)
    np.testing.assert_array_equal(audio.spectrogram(tone(16000, 2.0), SPEC),
                                  audio.log_mel(tone(16000, 2.0), SPEC))


def test_linear_mask_inverts_on_its_own_bands():
    x = (tone(16000, 2.0, freq=300) + tone(16000, 2.0, freq=5000)) / 2
    high_only = np.zeros(LINEAR.shape)
    high_only[audio.band_centers_hz(LINEAR) > 4000] = 1.0
    spectrum = np.abs(np.fft.rfft(audio.invert_band_mask(x, LINEAR, high_only)))
    assert spectrum[10000] > 10 * spectrum[600]  # 5 kHz kept, 300 Hz turned down


def test_loudness_and_trim():
    x = np.concatenate([np.zeros(4000, np.float32), tone(16000, 0.5, amp=0.01),
                        np.zeros(4000, np.float32)])
    loud = audio.normalize_loudness(x, target_dbfs=-20)
    trimmed = audio.trim_silence(loud, 16000)
    assert 8000 <= len(trimmed) < 9000
    rms = np.sqrt(np.mean(trimmed.astype(np.float64) ** 2))
    assert 20 * np.log10(rms) > -20  # the silence no longer dilutes the level


def test_invert_band_mask(rng):
    x = (tone(16000, 2.0, freq=300) + tone(16000, 2.0, freq=5000)) / 2
    kept = audio.invert_band_mask(x, SPEC, np.ones(SPEC.shape))
    assert kept.shape == x.shape and kept.dtype == np.float32
    np.testing.assert_allclose(kept, x, atol=1e-4)
    muted = audio.invert_band_mask(x, SPEC, np.zeros(SPEC.shape), floor=0.05)
    assert np.sqrt(np.mean(muted**2)) / np.sqrt(np.mean(x**2)) == pytest.approx(0.05, rel=1e-3)
    low_only = np.zeros(SPEC.shape)
    low_only[audio.band_centers_hz(SPEC) < 1000] = 1.0
    spectrum = np.abs(np.fft.rfft(audio.invert_band_mask(x, SPEC, low_only)))
    assert spectrum[600] > 10 * spectrum[10000]  # 300 Hz kept, 5 kHz turned down (0.5 Hz bins)
    with pytest.raises(ValueError, match="mask must be"):
        audio.invert_band_mask(x, SPEC, np.ones((3, 3)))


def test_import_is_light():
    code = ("import sys, xai_platform.preprocessing.audio; "
            "print([m for m in ('torch', 'tensorflow', 'librosa') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"
