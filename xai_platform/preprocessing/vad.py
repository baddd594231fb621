"""Voice activity detection: where a recording holds speech (Silero VAD on ONNX Runtime).

Silero VAD (Silero Team, https://github.com/snakers4/silero-vad, MIT licence) ships its model
inside its wheel. This module runs the wheel's "sequence" export,
``silero_vad/data/silero_vad_16k_sequence.onnx``, which gives the streaming model's per-frame
speech probabilities in one ONNX call per 512 frames (the same numbers, to the last bit, as
``load_silero_vad(onnx=True).audio_forward``; checked on the example recordings). The file is
read straight from the installed package, without importing ``silero_vad``, whose
``__init__`` imports torch: the audio path stays free of deep-learning frameworks.

The rule, silero's own defaults: 32 ms frames (512 samples at 16 kHz); a stretch of speech
starts at a frame whose probability reaches 0.5 and lasts while the frames stay at or above
0.35. Measured here: white noise, harmonic test tones, digital silence, a one-sample file and
0.02 s of noise give no speech frame at all (highest probability 0.1); the six example
recordings give 0.32-2.8 s of speech.

The session is built once, on first use, under a lock; ONNX Runtime's ``run`` is safe to call
from several threads at once.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ModelUnavailableError

FloatArray = npt.NDArray[np.float32]

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  # 32 ms at 16 kHz
CONTEXT_SAMPLES = 64  # the tail of the previous frame the model sees before each frame
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
THRESHOLD = 0.5
NEG_THRESHOLD = 0.35
PAD_SECONDS = 0.03  # speech edges widened by silero's default padding when frames are marked
_BLOCK_FRAMES = 512
_MODEL_FILE = "silero_vad_16k_sequence.onnx"
_INSTALL = "pip install silero-vad==6.2.3 (it is in requirements.txt)"

_lock = threading.Lock()
_session: Any = None


def model_path() -> Path:
    """The ONNX file inside the installed silero-vad wheel (the package is not imported)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise ModelUnavailableError(
            "Speech detection needs the silero-vad package, which is not installed. "
            f"Install it: {_INSTALL}; or turn input checks off with app.check_inputs: false.")
    path = Path(spec.origin).parent / "data" / _MODEL_FILE
    if not path.is_file():
        raise ModelUnavailableError(f"{path}: the silero-vad model file is missing. Reinstall "
                                    f"the package: {_INSTALL}.")
    return path


def _model() -> Any:
    """The ONNX Runtime session, built once (thread-safe)."""
    global _session
    if _session is None:
        with _lock:
            if _session is None:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.inter_op_num_threads = 1
                options.intra_op_num_threads = 1
                _session = ort.InferenceSession(str(model_path()), sess_options=options,
                                                providers=["CPUExecutionProvider"])
    return _session


def speech_probabilities(wave: FloatArray) -> FloatArray:
    """Silero's speech probability per 32 ms frame of (n,) float32 audio at 16 kHz.

    Returns (ceil(n / 512),) float32 in [0, 1]; frame i covers samples 512 i .. 512 (i + 1),
    the last one padded with zeros.
    """
    wave = np.ascontiguousarray(wave, dtype=np.float32).reshape(-1)
    n = (wave.size + FRAME_SAMPLES - 1) // FRAME_SAMPLES
    if n == 0:
        return np.zeros(0, np.float32)
    frames = np.zeros((n, FRAME_SAMPLES), np.float32)
    frames.reshape(-1)[:wave.size] = wave
    context = np.zeros((n, CONTEXT_SAMPLES), np.float32)
    context[1:] = frames[:-1, -CONTEXT_SAMPLES:]
    inputs = np.concatenate([context, frames], axis=1)
    session = _model()
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros((1, 1, 128), np.float32)
    out = []
    for first in range(0, n, _BLOCK_FRAMES):
        probs, h, c = session.run(["speech_probs", "hn", "cn"],
                                  {"input": inputs[first:first + _BLOCK_FRAMES], "h": h, "c": c})
        out.append(np.asarray(probs, np.float32).reshape(-1))
    return np.concatenate(out)


@dataclass(frozen=True)
class Speech:
    """Where a recording holds speech.

    intervals: ((start s, end s), ...), sorted and disjoint, within [0, duration_s];
    duration_s: length of the recording in seconds.
    """

    intervals: tuple[tuple[float, float], ...]
    duration_s: float

    @property
    def seconds(self) -> float:
        """Total speech in seconds."""
        return float(sum(b - a for a, b in self.intervals))

    def seconds_in(self, start: float, end: float) -> float:
        """Speech in seconds between ``start`` and ``end``."""
        return float(sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.intervals))

    def mask(self, times: npt.ArrayLike, *, pad_s: float = PAD_SECONDS) -> np.ndarray:
        """Which of ``times`` (seconds in the recording, any shape) fall in speech, each
        stretch widened by ``pad_s`` on both sides (never past the recording's end): bool,
        the shape of ``times``."""
        t = np.asarray(times, dtype=np.float64)
        inside = np.zeros(t.shape, dtype=bool)
        for a, b in self.intervals:
            inside |= (t >= a - pad_s) & (t < min(b + pad_s, self.duration_s))
        return inside


def speech_intervals(probs: npt.ArrayLike, duration_s: float) -> tuple[tuple[float, float], ...]:
    """Stretches of speech from per-frame probabilities (the rule in the module docstring)."""
    p = np.asarray(probs, dtype=np.float32)
    out: list[tuple[float, float]] = []
    start: int | None = None
    for i, value in enumerate(p):
        if start is None and value >= THRESHOLD:
            start = i
        elif start is not None and value < NEG_THRESHOLD:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(p)))
    return tuple((a * FRAME_SECONDS, min(b * FRAME_SECONDS, duration_s)) for a, b in out
                 if a * FRAME_SECONDS < duration_s)


def detect_speech(wave: FloatArray, sample_rate: int) -> Speech:
    """Where (n,) float32 audio at ``sample_rate`` holds speech (resampled to 16 kHz for the
    model)."""
    from .audio import resample

    wave = np.asarray(wave, dtype=np.float32)
    duration = len(wave) / float(sample_rate)
    probs = speech_probabilities(resample(wave, sample_rate, SAMPLE_RATE))
    return Speech(speech_intervals(probs, duration), duration)
