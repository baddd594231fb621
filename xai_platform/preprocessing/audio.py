"""Audio preprocessing: decode, resample, split into windows, log-mel features, masks back to sound.

One feature definition, :func:`log_mel`, serves training and inference, so a model never sees
features computed differently from the ones it was trained on. The inference path is
:func:`load_for_model` -> :func:`features`; the training path is :func:`decode_audio` ->
:func:`resample` -> :func:`fit_window` -> :func:`log_mel`. For the first window of a recording
the two give bitwise equal features (a test checks this).

Waveforms are mono float32 in [-1, 1], shape (n_samples,). librosa is imported inside the
functions that need it, because importing it takes a second or more.
"""

from __future__ import annotations

import functools
import io
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from ..modalities.audio import EXTENSIONS, AudioInput
from ..errors import InputError

FloatArray = npt.NDArray[np.float32]

ACCEPTED = "WAV, FLAC, OGG, MP3 or M4A"
_AUDIO_SUFFIXES = frozenset(EXTENSIONS)
# Formats whose support in libsndfile depends on its version (MP3 since 1.1, Opus since 1.0.29):
# when libsndfile cannot open them, the ffmpeg binary decodes them instead.
_FFMPEG_KINDS = frozenset({"MP3", "OGG"})
_FFMPEG_SUFFIXES = frozenset({".mp3", ".ogg", ".oga", ".opus"})
# Containers libsndfile never reads: phones' voice memos (AAC or ALAC in MP4), browsers'
# recordings (Opus in WebM). Only the ffmpeg binary decodes them.
_FFMPEG_ONLY_KINDS = frozenset({"MP4/M4A", "WebM/Matroska"})
_FFMPEG_ONLY_SUFFIXES = frozenset({".m4a", ".mp4", ".webm"})
_FFMPEG_TIMEOUT_S = 300
_SNIFF_BYTES = 4096
_BLOCK_FRAMES = 1 << 20
_LIMIT_FIX = "raise the limit with --max-audio-seconds or app.max_audio_seconds in the config"


def _librosa() -> Any:
    import librosa  # slow to import: only when a feature is first computed

    return librosa


# --------------------------------------------------------------------------------------------
# Decoding


def _sniff(head: bytes) -> str | None:
    """Name the container from its first bytes: an audio kind we read, another kind, or None."""
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] in (b"WAVE", b"BW64"):
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "OGG"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if head[4:8] == b"ftyp":  # ISO media: audio or video, unless the brand is a still image
        if head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"avif"):
            return "a HEIC or AVIF image"
        return "MP4/M4A"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "WebM/Matroska"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "a PNG image"
    if head[:3] == b"\xff\xd8\xff":
        return "a JPEG image"
    if head[:4] == b"GIF8":
        return "a GIF image"
    if head[:4] == b"%PDF":
        return "a PDF document"
    if head[:4] == b"PK\x03\x04":
        return "a ZIP archive"
    if head[128:132] == b"DICM":
        return "a DICOM image"
    if head and b"\x00" not in head:
        printable = sum(b in (9, 10, 13) or 32 <= b < 127 or b >= 128 for b in head)
        if printable >= 0.95 * len(head):
            return "a text file"
    return None


_AUDIO_KINDS = frozenset({"WAV", "FLAC", "OGG", "MP3", "AIFF", "MP4/M4A", "WebM/Matroska"})


class _Undecodable(Exception):
    """A decoder could not read the data; the caller turns this into an InputError."""


@functools.lru_cache(maxsize=1)
def _soundfile_formats() -> frozenset[str]:
    return frozenset(sf.available_formats())


def _finish(chunks: list[FloatArray], *, label: str) -> FloatArray:
    wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if wave.size == 0:
        raise InputError(f"{label} contains no audio samples (0 s). "
                         f"Upload a recording with sound in it ({ACCEPTED}).")
    if not np.all(np.isfinite(wave)):
        raise InputError(f"{label} contains invalid (NaN or infinite) samples. "
                         "Re-export it from your audio editor as 16-bit PCM WAV or FLAC.")
    return np.clip(wave, -1.0, 1.0, out=wave)


def _too_long(label: str, seconds: float | None, max_seconds: float) -> InputError:
    length = f"is {seconds:.1f} s long" if seconds is not None else "is longer than the limit"
    return InputError(f"{label} {length}; the limit is {max_seconds:g} s. "
                      f"Upload a shorter clip, or {_LIMIT_FIX}.")


def _decode_soundfile(file: Any, *, max_seconds: float, label: str) -> tuple[FloatArray, int]:
    """Read with libsndfile block by block, downmixing each block, stopping past the limit."""
    try:
        with sf.SoundFile(file) as f:
            sr = int(f.samplerate)
            if sr <= 0:
                raise _Undecodable(f"sample rate {sr}")
            # The header gives the length: refuse long files before decoding them.
            if f.frames > 0 and f.frames / sr > max_seconds:
                raise _too_long(label, f.frames / sr, max_seconds)
            limit = int(math.floor(max_seconds * sr))
            chunks: list[FloatArray] = []
            total = 0
            while True:
                block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if len(block) == 0:
                    break
                chunks.append(block.mean(axis=1, dtype=np.float32))
                total += len(block)
                if total > limit:  # the header understated the length
                    raise _too_long(label, None, max_seconds)
    except (sf.SoundFileError, RuntimeError, EOFError, ValueError) as exc:
        raise _Undecodable(str(exc)) from exc
    return _finish(chunks, label=label), sr


def _decode_ffmpeg(path: Path | None, data: bytes | None, *, max_seconds: float,
                   label: str) -> tuple[FloatArray, int]:
    """Decode with the ffmpeg binary into a float WAV at the native rate, then read that."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise _Undecodable("ffmpeg is not installed")
    with tempfile.TemporaryDirectory(prefix="xai-audio-") as tmp:
        if path is None:
            path = Path(tmp) / "input"
            path.write_bytes(data or b"")
        out = Path(tmp) / "decoded.wav"
        # One second past the limit is enough to tell that a recording is too long.
        cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
               "-i", f"file:{path.resolve()}", "-map", "0:a:0", "-vn",
               "-t", f"{max_seconds + 1.0:.3f}", "-c:a", "pcm_f32le", f"file:{out}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=_FFMPEG_TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise InputError(f"Decoding {label.lower()} took more than {_FFMPEG_TIMEOUT_S} s. "
                             "Convert it to WAV or FLAC and upload that.") from None
        if proc.returncode != 0 or not out.exists():
            lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["no audio"]
            if any("matches no streams" in line for line in lines):  # -map 0:a:0: no audio
                raise _Undecodable("it has no audio stream")
            raise _Undecodable(lines[-1].replace(f"file:{path.resolve()}: ", ""))
        return _decode_soundfile(out, max_seconds=max_seconds, label=label)


def decode_audio(source: str | Path | bytes, *,
                 max_seconds: float = 600.0) -> tuple[FloatArray, int]:
    """Decode a WAV, FLAC, OGG (Vorbis, Opus), MP3, M4A (AAC, ALAC) or WebM file, or its
    bytes, to mono.

    Any sample rate and channel count is accepted; channels are averaged. The length is read
    from the header and checked against ``max_seconds`` before the audio is decoded. MP3 goes
    through the ``ffmpeg`` binary when that is installed (libsndfile's MP3 decoder prints to
    the terminal); libsndfile decodes everything else it can, and Ogg files it cannot open
    (older libsndfile) go through ffmpeg too. MP4 / M4A and WebM need ffmpeg (the first
    audio stream of a video is read).

    Returns:
        wave: (n_samples,) float32 in [-1, 1], at the file's own sample rate.
        sample_rate: that rate in Hz.

    Raises:
        InputError: the file is missing, empty, not audio, corrupt, in an unsupported format,
            longer than ``max_seconds`` or without samples; the message says what to do.
    """
    path: Path | None = None
    data: bytes | None = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label, suffix, size = "The upload", "", len(data)
        head = data[:_SNIFF_BYTES]
    else:
        path = Path(source).expanduser()
        label, suffix = f"The file '{path.name}'", path.suffix.lower()
        if not path.exists():
            raise InputError(f"No file at '{path}'. Check the path, or upload the recording "
                             "again.")
        if not path.is_file():
            raise InputError(f"'{path}' is a folder, not a file. Choose one {ACCEPTED} "
                             "recording.")
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    if size == 0:
        raise InputError(f"{label} is empty (0 bytes). Upload a {ACCEPTED} recording.")
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")

    kind = _sniff(head)
    if kind in _FFMPEG_ONLY_KINDS or (kind is None and suffix in _FFMPEG_ONLY_SUFFIXES):
        named = kind or suffix.lstrip(".").upper()
        if shutil.which("ffmpeg") is None:
            raise InputError(f"{label} is {named} audio, which only the ffmpeg program "
                             "decodes, and it is not installed here. Install ffmpeg (`apt-get "
                             "install ffmpeg`, `brew install ffmpeg`), or convert the file to "
                             "WAV or FLAC and upload that.")
        try:
            return _decode_ffmpeg(path, data, max_seconds=max_seconds, label=label)
        except _Undecodable as exc:
            raise InputError(f"{label} could not be decoded as {named} audio: it is damaged, "
                             f"truncated or holds no sound track ({str(exc).rstrip('.')}). "
                             f"Export it again as {ACCEPTED} and upload that.") from None
    if kind is not None and kind not in _AUDIO_KINDS:
        raise InputError(f"{label} is {kind}, not audio. Upload a {ACCEPTED} recording.")

    is_mp3 = kind == "MP3" or (kind is None and suffix == ".mp3")
    error: Exception | None = None
    if is_mp3 and shutil.which("ffmpeg") is not None:
        # libsndfile's MP3 decoder (libmpg123) prints notes about damaged frames straight to
        # the terminal; ffmpeg's messages are captured, so MP3 goes there first.
        try:
            return _decode_ffmpeg(path, data, max_seconds=max_seconds, label=label)
        except _Undecodable as exc:
            error = exc
    try:
        if kind == "MP3" and "MP3" not in _soundfile_formats():
            raise _Undecodable("this libsndfile has no MP3 support")
        if error is None:
            return _decode_soundfile(path if path is not None else io.BytesIO(data or b""),
                                     max_seconds=max_seconds, label=label)
    except _Undecodable as exc:
        error = exc
    if not is_mp3 and (kind in _FFMPEG_KINDS or (kind is None and suffix in _FFMPEG_SUFFIXES)):
        try:
            return _decode_ffmpeg(path, data, max_seconds=max_seconds, label=label)
        except _Undecodable as exc:
            error = exc
    if kind is None and suffix not in _AUDIO_SUFFIXES:
        what = f"'{suffix}' files are" if suffix else "This format is"
        raise InputError(f"{what} not supported. Upload a {ACCEPTED} recording.")
    named = kind or suffix.lstrip(".").upper()
    detail = str(error).rstrip(".")
    raise InputError(f"{label} could not be decoded as {named} audio: it is damaged, truncated "
                     f"or not really {named} ({detail}). Export it again as {ACCEPTED} and "
                     "upload that.")


def from_array(sr: int, data: npt.ArrayLike, *,
               max_seconds: float = 600.0) -> tuple[FloatArray, int]:
    """Normalise a ``(sample_rate, array)`` pair, as a Gradio microphone gives it, to mono.

    ``data`` is (n,) or (n, channels) (a (channels, n) array with fewer channels than samples
    is recognised too). Integers are scaled by their type's full range (int16 / 32768,
    int32 / 2**31, uint8 centred on 128); floats are taken as [-1, 1], and float data whose
    peak exceeds 1 is divided by its peak.

    Returns:
        wave: (n,) float32 in [-1, 1]; sample_rate: ``sr`` in Hz.
    """
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise InputError(f"The recording has an invalid sample rate ({sr!r}). Record again or "
                         f"upload a {ACCEPTED} file.")
    array = np.asarray(data)
    if array.size == 0:
        raise InputError("The recording contains no audio samples. Record again, holding the "
                         "button for at least a second.")
    if array.ndim == 2:
        channel_axis = 1 if array.shape[1] <= array.shape[0] else 0
    elif array.ndim == 1:
        channel_axis = None
    else:
        raise InputError(f"The recording has shape {array.shape}; expected (samples,) or "
                         "(samples, channels). Record again or upload a file.")
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        offset = (int(info.max) + 1) / 2.0 if info.min == 0 else 0.0
        scale = float(info.max) + 1.0 - offset
        wave = ((array.astype(np.float64) - offset) / scale).astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        wave = array.astype(np.float32)
        if not np.all(np.isfinite(wave)):
            raise InputError("The recording contains invalid (NaN or infinite) samples. "
                             "Record again or upload a file.")
        peak = float(np.max(np.abs(wave)))
        if peak > 1.0:
            wave /= peak
    else:
        raise InputError(f"The recording has samples of type {array.dtype}; expected integers "
                         "or floats. Record again or upload a file.")
    if channel_axis is not None:
        wave = wave.mean(axis=channel_axis, dtype=np.float32)
    if len(wave) / sr > max_seconds:
        raise _too_long("The recording", len(wave) / sr, max_seconds)
    return np.clip(wave, -1.0, 1.0), int(sr)


# --------------------------------------------------------------------------------------------
# Waveform helpers


def resample(wave: FloatArray, sr: int, target_sr: int) -> FloatArray:
    """Resample (n,) audio from ``sr`` to ``target_sr`` Hz with soxr's high-quality filter.

    Returns (ceil(n * target_sr / sr),) float32 clipped to [-1, 1]; the input unchanged (as
    float32) when the rates are equal.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if int(sr) == int(target_sr):
        return wave
    out = _librosa().resample(wave, orig_sr=int(sr), target_sr=int(target_sr),
                              res_type="soxr_hq")
    return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)


def fit_window(wave: FloatArray, n_samples: int) -> tuple[FloatArray, bool]:
    """Trim (n,) audio to its first ``n_samples``, or pad zeros at the end up to that length.

    Returns a new (n_samples,) float32 array and whether it was padded.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if len(wave) >= n_samples:
        return wave[:n_samples].copy(), False
    return np.pad(wave, (0, n_samples - len(wave))), True


def _levels_db(wave: FloatArray) -> tuple[float, float]:
    """(peak, RMS) of the wave in dBFS; -inf for digital silence or no samples."""
    if wave.size == 0:
        return -math.inf, -math.inf
    peak = float(np.max(np.abs(wave)))
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    to_db = lambda v: 20.0 * math.log10(v) if v > 0 else -math.inf  # noqa: E731
    return to_db(peak), to_db(rms)


def is_silent(wave: FloatArray, *, threshold_db: float = -60.0) -> bool:
    """Whether the peak or the RMS level of (n,) audio in [-1, 1] is below ``threshold_db`` dBFS."""
    peak_db, rms_db = _levels_db(np.asarray(wave, dtype=np.float32))
    return peak_db < threshold_db or rms_db < threshold_db


def check_not_silent(wave: FloatArray, *, threshold_db: float = -60.0) -> None:
    """Raise :class:`InputError` when :func:`is_silent` says the recording is silent."""
    wave = np.asarray(wave, dtype=np.float32)
    if is_silent(wave, threshold_db=threshold_db):
        peak_db, rms_db = _levels_db(wave)
        raise InputError(f"The recording is silent (peak {peak_db:.0f} dBFS, RMS {rms_db:.0f} "
                         f"dBFS; the threshold is {threshold_db:g} dBFS). Check that the "
                         "microphone is on and record again, or upload a recording with "
                         "audible sound.")


def normalize_loudness(wave: FloatArray, *, target_dbfs: float = -20.0) -> FloatArray:
    """Scale (n,) audio so its RMS is ``target_dbfs`` dBFS; float32 clipped to [-1, 1].

    Digital silence is returned unchanged (there is no level to scale).
    """
    wave = np.asarray(wave, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
    if rms <= 1e-10:
        return wave.copy()
    gain = 10.0 ** (target_dbfs / 20.0) / rms
    return np.clip(wave * np.float32(gain), -1.0, 1.0)


def speech_bounds(wave: FloatArray, sr: int, *, top_db: float = 35.0) -> tuple[int, int]:
    """(start, end) sample indices of what :func:`trim_silence` keeps: from the first to the
    last frame no quieter than ``top_db`` dB below the peak (:func:`librosa.effects.trim`, 25 ms
    frames, 6.25 ms hop at ``sr``); end <= start for a silent input."""
    frame = max(16, int(round(0.025 * sr)))
    _, (start, end) = _librosa().effects.trim(np.asarray(wave, dtype=np.float32), top_db=top_db,
                                              frame_length=frame, hop_length=max(1, frame // 4))
    return int(start), int(end)


def trim_silence(wave: FloatArray, sr: int, *, top_db: float = 35.0) -> FloatArray:
    """Cut leading and trailing parts quieter than ``top_db`` dB below the peak
    (:func:`speech_bounds`). A silent input is returned unchanged (check it with
    :func:`is_silent`). Returns (m,) float32, m <= n.
    """
    wave = np.asarray(wave, dtype=np.float32)
    start, end = speech_bounds(wave, sr, top_db=top_db)
    return wave[start:end] if end > start else wave.copy()


# --------------------------------------------------------------------------------------------
# Windows and features


@dataclass(frozen=True)
class AudioWindows:
    """A recording cut into the fixed-length windows a model scores.

    waveform: (n,) float32 in [-1, 1], the whole mono recording at ``sample_rate``.
    windows: (n_windows, spec.n_samples) float32, see :func:`split_windows`.
    starts: (n_windows,) float64 start of each window in seconds, increasing.
    padded: whether the recording was shorter than one window and padded with zeros.
    duration: length of ``waveform`` in seconds.
    """

    waveform: FloatArray
    sample_rate: int
    windows: FloatArray
    starts: npt.NDArray[np.float64]
    padded: bool
    duration: float

    @property
    def n_windows(self) -> int:
        return int(self.windows.shape[0])


def split_windows(wave: FloatArray, spec: AudioInput) -> AudioWindows:
    """Cut (n,) audio at ``spec.sample_rate`` into windows of ``spec.n_samples``.

    The rule: a recording no longer than one window gives one window, padded at the end with
    zeros when shorter. A longer one gives windows starting at 0, hop, 2 * hop, ... (hop =
    ``spec.hop_seconds``, half a window unless configured) as long as they fit, plus one window
    ending exactly at the end of the recording when the last regular window stops short of it,
    so the tail is always scored. The first window is always ``fit_window(wave)``.
    """
    wave = np.asarray(wave, dtype=np.float32)
    sr, n = spec.sample_rate, spec.n_samples
    duration = len(wave) / sr
    if len(wave) <= n:
        window, padded = fit_window(wave, n)
        return AudioWindows(waveform=wave, sample_rate=sr, windows=window[None, :],
                            starts=np.zeros(1), padded=padded, duration=duration)
    hop = max(1, int(round(spec.hop_seconds * sr)))
    last = len(wave) - n
    offsets = list(range(0, last + 1, hop))
    if offsets[-1] != last:
        offsets.append(last)
    windows = np.stack([wave[o:o + n] for o in offsets])
    return AudioWindows(waveform=wave, sample_rate=sr, windows=windows,
                        starts=np.asarray(offsets, dtype=np.float64) / sr, padded=False,
                        duration=duration)


def load_for_model(source: str | Path | bytes | tuple[int, npt.ArrayLike], spec: AudioInput, *,
                   max_seconds: float = 600.0) -> AudioWindows:
    """Decode, refuse silence, resample to ``spec.sample_rate`` and split into windows.

    ``source`` is a path, the file's bytes, or a Gradio ``(sample_rate, array)`` pair.
    """
    if isinstance(source, tuple):
        wave, sr = from_array(source[0], source[1], max_seconds=max_seconds)
    else:
        wave, sr = decode_audio(source, max_seconds=max_seconds)
    check_not_silent(wave)
    return split_windows(resample(wave, sr, spec.sample_rate), spec)


def _check_window(wave: FloatArray, spec: AudioInput) -> FloatArray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or len(wave) != spec.n_samples:
        raise ValueError(f"a spectrogram needs a ({spec.n_samples},) window, got {wave.shape}; "
                         "call fit_window first.")
    return wave


def _to_db(power: npt.NDArray[Any], spec: AudioInput) -> FloatArray:
    # dB relative to the window's own maximum, floored at -top_db.
    if float(power.max()) <= 1e-10:  # ref=max would be 0 and every value 0 dB
        return np.full(spec.plane_shape, -spec.top_db, dtype=np.float32)
    db = _librosa().power_to_db(power, ref=np.max, top_db=spec.top_db).astype(np.float32)
    # Rounding can leave values a hair outside the documented range.
    return np.clip(db, -spec.top_db, 0.0, out=db)


def log_mel(wave: FloatArray, spec: AudioInput) -> FloatArray:
    """The log-mel spectrogram (``input.kind: log_mel``, the default).

    Power mel spectrogram (centred STFT with ``spec``'s n_fft, hop, window, n_mels, fmin and
    fmax, power 2) in dB relative to the window's own maximum and floored at ``-spec.top_db``,
    which normalises each window's loudness.

    Args:
        wave: (spec.n_samples,) float32 at ``spec.sample_rate``; use :func:`fit_window` first.

    Returns:
        (spec.n_mels, spec.n_frames) float32 in [-spec.top_db, 0] dB; all ``-spec.top_db``
        for a window of zeros.
    """
    wave = _check_window(wave, spec)
    power = _librosa().feature.melspectrogram(
        y=wave, sr=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length,
        win_length=spec.win_length, n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.f_max,
        power=2.0, center=True, pad_mode="constant")
    return _to_db(power, spec)


def log_linear(wave: FloatArray, spec: AudioInput) -> FloatArray:
    """The linear-frequency log spectrogram (``input.kind: linear``).

    The same STFT as :func:`log_mel`, pooled by ``spec.n_mels`` triangular bands spaced evenly
    in Hz from fmin to fmax (a linear filterbank, as in the LFB / LFCC front-ends of the
    ASVspoof baselines) instead of on the mel scale, so the 4-8 kHz band, where much of the
    evidence of synthesis lies (Tak et al., Interspeech 2020), keeps as many bands as the low
    frequencies. Same dB scale as :func:`log_mel`.
    """
    wave = _check_window(wave, spec)
    stft = _librosa().stft(wave, n_fft=spec.n_fft, hop_length=spec.hop_length,
                           win_length=spec.win_length, center=True, pad_mode="constant")
    power = _filterbank(spec) @ (np.abs(stft) ** 2)
    return _to_db(power, spec)


def spectrogram(wave: FloatArray, spec: AudioInput) -> FloatArray:
    """The spectrogram plane of one window, by ``spec.kind`` (log-mel for ``log_mel`` and
    ``waveform``): (spec.n_mels, spec.n_frames) float32 in [-spec.top_db, 0] dB."""
    return log_linear(wave, spec) if spec.kind == "linear" else log_mel(wave, spec)


def _check_rate(windows: AudioWindows, spec: AudioInput) -> None:
    if windows.sample_rate != spec.sample_rate:
        raise ValueError(f"windows are at {windows.sample_rate} Hz but the model expects "
                         f"{spec.sample_rate} Hz; build them with load_for_model.")


def features(windows: AudioWindows, spec: AudioInput) -> FloatArray:
    """:func:`spectrogram` of every window: (n_windows, n_mels, n_frames) float32 in
    [-top_db, 0] (for a waveform model: the plane it is explained on)."""
    _check_rate(windows, spec)
    return np.stack([spectrogram(w, spec) for w in windows.windows])


def model_inputs(windows: AudioWindows, spec: AudioInput) -> FloatArray:
    """What the model takes for every window: :func:`features`, or for a waveform model
    (``kind: waveform``) the windows' samples, (n_windows, 1, n_samples) float32 in [-1, 1]."""
    if not spec.waveform:
        return features(windows, spec)
    _check_rate(windows, spec)
    return np.ascontiguousarray(windows.windows[:, None, :], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Axes


def _band_points(spec: AudioInput) -> npt.NDArray[np.float64]:
    # The n_mels + 2 points of the triangular filterbank: band i spans points i..i+2 (librosa's
    # Slaney mel points, or evenly spaced in Hz for the linear filterbank).
    if spec.kind == "linear":
        return np.linspace(spec.fmin, spec.f_max, spec.n_mels + 2)
    return _librosa().mel_frequencies(n_mels=spec.n_mels + 2, fmin=spec.fmin, fmax=spec.f_max)


def band_centers_hz(spec: AudioInput) -> npt.NDArray[np.float64]:
    """(n_mels,) centre frequency of each band (mel or linear) in Hz, increasing."""
    return _band_points(spec)[1:-1]


def band_edges_hz(spec: AudioInput) -> npt.NDArray[np.float64]:
    """(n_mels + 1,) band edges in Hz (midpoints between neighbouring filter points).

    Band i is drawn from edge i to edge i + 1, e.g. with ``pcolormesh``.
    """
    points = _band_points(spec)
    return (points[:-1] + points[1:]) / 2.0


def frame_times(spec: AudioInput) -> npt.NDArray[np.float64]:
    """(n_frames,) time in seconds of each spectrogram frame's centre within the window."""
    return np.arange(spec.n_frames) * (spec.hop_length / spec.sample_rate)


@functools.lru_cache(maxsize=8)
def _filterbank(spec: AudioInput) -> FloatArray:
    """(n_mels, 1 + n_fft // 2) unnormalised triangles over the STFT bins (peak 1), centred on
    :func:`band_centers_hz`."""
    librosa = _librosa()
    if spec.kind != "linear":
        bank = librosa.filters.mel(sr=spec.sample_rate, n_fft=spec.n_fft, n_mels=spec.n_mels,
                                   fmin=spec.fmin, fmax=spec.f_max, norm=None)
    else:
        bins = librosa.fft_frequencies(sr=spec.sample_rate, n_fft=spec.n_fft)
        points = _band_points(spec)
        lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]
        rising = (bins[None, :] - lower) / (centre - lower)
        falling = (upper - bins[None, :]) / (upper - centre)
        bank = np.maximum(0.0, np.minimum(rising, falling))
    bank = np.asarray(bank, dtype=np.float32)
    bank.setflags(write=False)
    return bank


# --------------------------------------------------------------------------------------------
# Explanations you can listen to


@functools.lru_cache(maxsize=8)
def _band_to_stft_weights(spec: AudioInput) -> FloatArray:
    """(1 + n_fft // 2, n_mels) weights: each STFT bin's weighted average over the bands."""
    librosa = _librosa()
    # Unnormalised triangles, so every band weighs by its shape and not by its width.
    bank = _filterbank(spec).astype(np.float64)
    total = bank.sum(axis=0)
    weights = np.zeros_like(bank.T)
    covered = total > 0
    weights[covered] = (bank[:, covered] / total[covered]).T
    # Bins below fmin, above fmax or between narrow low bands take the nearest band.
    bins = librosa.fft_frequencies(sr=spec.sample_rate, n_fft=spec.n_fft)
    nearest = np.abs(bins[:, None] - band_centers_hz(spec)[None, :]).argmin(axis=1)
    weights[~covered, nearest[~covered]] = 1.0
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


def invert_band_mask(wave_window: FloatArray, spec: AudioInput, mask: npt.ArrayLike, *,
                     floor: float = 0.05) -> FloatArray:
    """Keep the time-frequency regions a mask on the model's bands selects and attenuate the
    rest.

    The mask is spread onto the STFT bins (each bin takes the filterbank-weighted average of
    the bands, mel or linear, covering it), the STFT is scaled by ``floor + (1 - floor) *
    mask`` and inverted, so a heatmap becomes audio: 1 keeps a region, 0 turns it down to
    ``floor``.

    Args:
        wave_window: (n,) float32 at ``spec.sample_rate``, normally one window of
            ``spec.n_samples``.
        mask: (spec.n_mels, 1 + n // spec.hop_length) in [0, 1] (values outside are clipped);
            for a full window that is ``spec.plane_shape``.
        floor: gain in [0, 1] where the mask is 0.

    Returns:
        (n,) float32, the same length as ``wave_window``.
    """
    wave = np.asarray(wave_window, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.float32)
    n_frames = 1 + len(wave) // spec.hop_length
    if wave.ndim != 1 or mask.shape != (spec.n_mels, n_frames):
        raise ValueError(f"mask must be ({spec.n_mels}, {n_frames}) for a {wave.shape} window, "
                         f"got {mask.shape}.")
    if not 0.0 <= floor <= 1.0 or not np.all(np.isfinite(mask)):
        raise ValueError("floor must lie in [0, 1] and the mask must be finite.")
    librosa = _librosa()
    stft = librosa.stft(wave, n_fft=spec.n_fft, hop_length=spec.hop_length,
                        win_length=spec.win_length, center=True, pad_mode="constant")
    bin_mask = _band_to_stft_weights(spec) @ np.clip(mask, 0.0, 1.0)
    gain = floor + (1.0 - floor) * bin_mask
    out = librosa.istft(stft * gain, n_fft=spec.n_fft, hop_length=spec.hop_length,
                        win_length=spec.win_length, center=True, length=len(wave))
    return out.astype(np.float32, copy=False)
