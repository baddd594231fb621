"""Audio: is this voice real or synthetic? Log spectrograms scored in windows.

Input spec: :class:`AudioInput` (one definition for training and inference, see
:func:`xai_platform.preprocessing.audio.spectrogram`). A recording is cut into overlapping
windows (:func:`~xai_platform.preprocessing.audio.split_windows`), each a (bands, frames) plane
in dB, on mel bands (``input.kind: log_mel``) or bands evenly spaced in Hz (``linear``).

* **masked value**: the window's own floor, its minimum dB (about ``-top_db``), i.e. silence in
  that time-frequency cell. A zero would be the *loudest* value the spectrogram holds.
* **features**: a grid of time-frequency patches, ``patch_bands`` bands by
  ``patch_frames`` frames.
* **display**: time in seconds on x, band centre frequencies in Hz on y.
* **readouts**: attribution per frequency band and per time segment, and two clips to listen
  to (the important cells kept, and removed, each re-scored by the model).
* **speech** (with ``app.check_inputs``): voice activity detection
  (:mod:`~xai_platform.preprocessing.vad`) refuses a recording with less than
  ``app.min_speech_s`` of speech, leaves windows with less than that out of the verdict and the
  timeline, and :meth:`Audio.focus` gives each explanation's share on speech, flagged when most
  of the map lies on silence or padding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, InputError
from ..files import array_key
from ..params import Param
from ..validation import check_choice, check_positive, parse_fields
from .base import FloatArray, IntArray, Modality, PreparedInput, Readout, register_modality

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ..config import AppSettings, ModelSpec
    from ..explanation import Explanation
    from ..preprocessing.audio import AudioWindows
    from ..preprocessing.vad import Speech

#: every suffix the decoder reads (libsndfile, or the ffmpeg binary for MP3 / Ogg / Opus and,
#: only with it, M4A / MP4 / WebM)
EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".mp4",
              ".webm")
NORMALIZATIONS = ("db", "none")
#: the front-ends: log-mel, a linear-frequency filterbank (log_linear in preprocessing.audio),
#: or the raw waveform (the model's own front-end; explained on the log-mel of the window)
KINDS = ("log_mel", "linear", "waveform")
_KIND_WORDS = {"log_mel": ("log-mel", "mel scale"), "linear": ("log spectrogram", "linear"),
               "waveform": ("log-mel of the waveform", "mel scale")}


@dataclass(frozen=True)
class AudioInput:
    """Input of an audio model: a log spectrogram in dB, (n_mels, frames).

    ``kind`` picks the frequency axis: ``log_mel`` (mel bands) or ``linear`` (bands evenly
    spaced in Hz); ``n_mels`` is the number of bands either way. ``waveform``: the model takes
    the window's samples, (1, n_samples) in [-1, 1], and is explained on the log-mel plane of
    the window (:attr:`plane_shape`) through :class:`~xai_platform.models.resynthesis.
    SpectrogramView`, which resynthesises a changed plane with the window's own phase.
    """

    sample_rate: int = 16000
    duration: float = 2.0
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int | None = None
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float | None = None
    top_db: float = 80.0
    window_hop: float | None = None
    channels: int = 1
    normalize: str = "db"
    kind: str = "log_mel"

    @property
    def n_samples(self) -> int:
        return int(round(self.sample_rate * self.duration))

    @property
    def n_frames(self) -> int:
        # librosa's centred STFT: one frame per hop plus one.
        return 1 + self.n_samples // self.hop_length

    @property
    def waveform(self) -> bool:
        """Whether the model takes the raw waveform (``kind: waveform``)."""
        return self.kind == "waveform"

    @property
    def plane_shape(self) -> tuple[int, int]:
        """(bands, frames) of the spectrogram plane shown and explained."""
        return (self.n_mels, self.n_frames)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of what the model takes: the spectrogram plane, or (1, n_samples) for a
        waveform model."""
        return (1, self.n_samples) if self.waveform else self.plane_shape

    @property
    def f_max(self) -> float:
        return float(self.fmax) if self.fmax is not None else self.sample_rate / 2.0

    @property
    def hop_seconds(self) -> float:
        """Step between scoring windows on long recordings (default: half a window)."""
        return float(self.window_hop) if self.window_hop is not None else self.duration / 2.0


@dataclass(frozen=True)
class AudioAxes:
    """How to label a spectrogram: time of the window in the recording and band centres."""

    start_s: float
    duration_s: float
    band_centers_hz: FloatArray
    sample_rate: int
    kind: str = "log_mel"


_TYPES: dict[str, Any] = {
    "sample_rate": int, "duration": float, "n_fft": int, "hop_length": int,
    "win_length": (int, type(None)), "n_mels": int, "fmin": float,
    "fmax": (float, type(None)), "top_db": float, "window_hop": (float, type(None)),
    "channels": int, "normalize": str, "kind": str,
}


#: an explanation with less than this share of its mass on speech is flagged
MIN_SPEECH_SHARE = 0.5


def _hz(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def _require_speech(windows: AudioWindows, min_speech_s: float, *, name: str) -> Speech:
    """Where the recording holds speech (:mod:`~xai_platform.preprocessing.vad`); refuse it
    with :class:`InputError` when that is less than ``min_speech_s``."""
    from ..preprocessing.vad import detect_speech

    speech = detect_speech(windows.waveform, windows.sample_rate)
    if speech.seconds < min_speech_s:
        raise InputError(f"'{name}': found {speech.seconds:.2f} s of speech in "
                         f"{speech.duration_s:.2f} s of audio; the detector needs at least "
                         f"{min_speech_s:g} s of a voice to judge it (app.min_speech_s): upload "
                         "a recording with speech.")
    return speech


def _speech_windows(speech: Speech, starts: np.ndarray, length_s: float,
                    min_speech_s: float) -> np.ndarray:
    """(n,) bool: the windows holding at least ``min_speech_s`` of speech (at least the one
    holding the most, so a recording that passed is never left without a window)."""
    held = np.array([speech.seconds_in(s, s + length_s) for s in starts])
    scored = held >= min_speech_s
    if not scored.any():
        scored[int(np.argmax(held))] = True
    return scored


@register_modality
class Audio(Modality):
    name = "audio"
    label = "Audio: real or synthetic voice?"
    extensions = EXTENSIONS
    input_kind = "audio"
    examples = "audio"
    benchmark = ("audio_corpus", "python -m training.audio_corpus --out data/audio_corpus")
    window_label = "Audio window"
    feature_params = (
        Param("patch_bands", "Patch height (frequency bands)", "int", 8, minimum=1,
              maximum=64, step=1, help="Frequency bands (mel or linear) per time-frequency "
              "patch."),
        Param("patch_frames", "Patch width (frames)", "int", 8, minimum=1, maximum=256,
              step=1, help="Spectrogram frames per patch."),
    )

    def parse_input(self, raw: Mapping[str, Any], *, source: str) -> AudioInput:
        fields = parse_fields(raw, _TYPES, source=source, prefix="input.")
        if fields.get("kind") == "waveform":  # samples in [-1, 1] go in as they are
            fields.setdefault("normalize", "none")
            if fields["normalize"] != "none":
                raise ConfigError("a waveform model takes the samples in [-1, 1] as they are.",
                                  source=source, key="input.normalize",
                                  fix="remove it, or write none.")
        spec = AudioInput(**fields)
        for key in ("sample_rate", "duration", "n_fft", "hop_length", "n_mels", "top_db"):
            check_positive(getattr(spec, key), source=source, key=f"input.{key}")
        check_positive(spec.fmin, source=source, key="input.fmin", strict=False)
        if spec.f_max <= spec.fmin or spec.f_max > spec.sample_rate / 2:
            raise ConfigError(f"fmax {spec.f_max} must lie in (fmin, sample_rate / 2].",
                              source=source, key="input.fmax",
                              fix=f"use at most {spec.sample_rate / 2}.")
        if spec.hop_length > spec.n_fft:
            raise ConfigError("hop_length is larger than n_fft, so samples would be skipped.",
                              source=source, key="input.hop_length",
                              fix="use hop_length <= n_fft.")
        if spec.window_hop is not None:
            check_positive(spec.window_hop, source=source, key="input.window_hop")
        if spec.waveform and spec.channels != 1:
            raise ConfigError("a waveform model takes one (mono) channel.", source=source,
                              key="input.channels", fix="remove it, or write 1.")
        if spec.channels not in (1, 3):
            raise ConfigError("channels must be 1 or 3.", source=source, key="input.channels",
                              fix="use 1, or 3 for a network with an RGB stem.")
        check_choice(spec.normalize, NORMALIZATIONS, source=source, key="input.normalize")
        check_choice(spec.kind, KINDS, source=source, key="input.kind")
        return spec

    def prepare(self, source, spec: ModelSpec, *, settings: AppSettings,
                name: str) -> PreparedInput:
        from ..preprocessing import audio

        windows = audio.load_for_model(source, spec.input, max_seconds=settings.max_audio_seconds)
        data: dict[str, Any] = {"waveforms": windows.windows, "sample_rate": windows.sample_rate,
                                "duration_s": windows.duration,
                                "frame_s": spec.input.hop_length / spec.input.sample_rate}
        scored = None
        if settings.check_inputs:  # no verdict without speech
            data["speech"] = speech = _require_speech(windows, settings.min_speech_s, name=name)
            scored = _speech_windows(speech, windows.starts, spec.input.duration,
                                     settings.min_speech_s)
        planes = audio.features(windows, spec.input)
        notes = []
        if windows.padded:
            notes.append(f"The recording ({windows.duration:.2f} s) is shorter than the model's "
                         f"{spec.input.duration:g} s window: it was padded with silence.")
        elif len(planes) > 1:
            notes.append(f"{windows.duration:.1f} s scored in {len(planes)} overlapping windows "
                         f"of {spec.input.duration:g} s.")
        if "speech" in data:
            notes.append(f"Speech found: {data['speech'].seconds:.2f} s of "
                         f"{windows.duration:.2f} s (Silero VAD).")
        if scored is not None and not scored.all():
            notes.append(f"{int((~scored).sum())} of {len(scored)} windows hold less than "
                         f"{settings.min_speech_s:g} s of speech: they are left out of the verdict "
                         "and the timeline (no speech).")
        return PreparedInput(name, self.name, planes, starts_s=np.asarray(windows.starts),
                             notes=tuple(notes), data=data,
                             scored=None if scored is None or scored.all() else scored,
                             unscored_label="no speech",
                             judged_seconds=data["speech"].seconds if "speech" in data else None)

    def window_seconds(self, spec: ModelSpec) -> float:
        return float(spec.input.duration)

    # --- waveform models: scored on the samples, explained on the spectrogram -------------------
    def predict(self, model: Any, prepared: PreparedInput) -> FloatArray:
        if model.spec.input.waveform:
            return model.predict(np.asarray(prepared.data["waveforms"], np.float32)[:, None])
        return super().predict(model, prepared)

    def reference(self, prepared: PreparedInput, window: int) -> dict[str, Any]:
        waves = prepared.data.get("waveforms")
        return {} if waves is None else {"window_wave": np.asarray(waves[window], np.float32)}

    def explained_model(self, model: Any, display: FloatArray, extras: Mapping[str, Any]) -> Any:
        """A waveform model through the window's spectrogram
        (:class:`~xai_platform.models.resynthesis.SpectrogramView`); others as they are."""
        from ..models.resynthesis import SpectrogramView

        if not model.spec.input.waveform or isinstance(model, SpectrogramView):
            return model
        if "window_wave" not in extras:
            raise InputError("explaining a waveform model needs the window's samples; explain "
                             "it through the service or pipeline.explain.")
        return SpectrogramView(model, extras["window_wave"], display)

    def segment_phrase(self, positive_label: str) -> str:
        # The audio models here detect synthetic speech; their positive label says so.
        synthetic = positive_label.lower() in ("fake", "spoof", "synthetic", "deepfake")
        return "synthetic speech" if synthetic else f"'{positive_label}'"

    # --- perturbations --------------------------------------------------------------------------
    def masked_value(self, x: FloatArray) -> FloatArray:
        return np.full_like(x, x.min(), dtype=np.float32)

    def features(self, x: FloatArray, params: Mapping[str, Any]) -> IntArray:
        from ..explainers.perturbation import grid_segments

        return grid_segments(x.shape, patch_rows=int(params["patch_bands"]),
                             patch_cols=int(params["patch_frames"]))

    # --- display --------------------------------------------------------------------------------
    def axes(self, spec: ModelSpec, prepared: PreparedInput, window: int) -> AudioAxes:
        from ..preprocessing import audio

        start = float(prepared.starts_s[window]) if prepared.starts_s is not None else 0.0
        return AudioAxes(start_s=start, duration_s=spec.input.duration,
                         band_centers_hz=audio.band_centers_hz(spec.input).astype(np.float32),
                         sample_rate=spec.input.sample_rate, kind=spec.input.kind)

    def input_title(self, expl: Explanation) -> str:
        kind = expl.axes.kind if expl.axes is not None else "log_mel"
        return f"input ({_KIND_WORDS[kind][0]}, dB)"

    def imshow_kwargs(self, expl: Explanation) -> dict[str, Any]:
        a = expl.axes
        if a is None:
            return {}
        return {"origin": "lower", "aspect": "auto",
                "extent": (a.start_s, a.start_s + a.duration_s, -0.5,
                           expl.display.shape[0] - 0.5)}

    def draw_input(self, ax: Axes, expl: Explanation) -> None:
        ax.imshow(expl.display, cmap="magma", **self.imshow_kwargs(expl))
        self.label_axes(ax, expl, panel="input")

    def label_axes(self, ax: Axes, expl: Explanation, *, panel: str) -> None:
        from matplotlib.ticker import MaxNLocator

        ax.set_xlabel("time (s)")
        # At most six times a panel (1.0, 1.5, ... for a 2 s window): matplotlib's default gave
        # nine (1.00, 1.25, ...) whose labels ran into the next panel's.
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
        if panel == "overlay":  # keeps the input's frequency ticks
            ax.set_ylabel("")
        elif panel == "heatmap" or expl.axes is None:
            ax.set_yticks([])
        else:
            ticks = np.linspace(0, expl.display.shape[0] - 1, 6).round().astype(int)
            ax.set_yticks(ticks, [_hz(expl.axes.band_centers_hz[t]) for t in ticks])
            ax.set_ylabel(f"frequency (Hz, {_KIND_WORDS[expl.axes.kind][1]})")

    def figure_key(self, expl: Explanation) -> tuple:
        # what draw_input and label_axes read: the plane and the axes (window, bands)
        a = expl.axes
        axes = None if a is None else (a.kind, a.start_s, a.duration_s,
                                       array_key(a.band_centers_hz))
        return (type(self).__qualname__, array_key(expl.display), axes)

    def record(self, expl: Explanation) -> dict[str, Any]:
        out = super().record(expl)
        if expl.axes is not None:
            out |= {"window_start_s": expl.axes.start_s,
                    "window_duration_s": expl.axes.duration_s}
        return out

    def focus(self, prepared: PreparedInput, heatmap: FloatArray, *, signed: bool,
              window: int = 0) -> tuple[dict[str, Any], np.ndarray] | None:
        """The map's share on speech in the explained window, against silence and the padding
        of a short recording: a detector can separate real from fake by the silence alone
        (leading silence alone gives about 15% EER on ASVspoof 2019 LA: Müller et al. 2021,
        "Speech is Silver, Silence is Golden", arXiv:2106.12914). Flagged when more than half
        of the mass lies off speech."""
        speech = prepared.data.get("speech")
        if speech is None or prepared.starts_s is None:
            return None
        from ..evaluation.metrics import region_share

        start = float(prepared.starts_s[window])
        times = start + np.arange(heatmap.shape[1]) * float(prepared.data["frame_s"])
        mask = np.broadcast_to(speech.mask(times), heatmap.shape).copy()
        share = region_share(heatmap, mask, signed=signed)
        flagged = share < MIN_SPEECH_SHARE
        message = ""
        if flagged:
            message = (f"Only {share:.0%} of the attribution lies on speech, {1 - share:.0%} on "
                       "silence or padding: the map points mostly at silence or padding, so the "
                       "model may be using a shortcut (the silence, not the voice).")
        return ({"speech_share": share, "silence_share": 1.0 - share, "flagged": flagged,
                 "message": message,
                 "summary": f"{share:.0%} of the attribution lies on speech, {1 - share:.0%} "
                            "on silence or padding."}, mask)

    def readout(self, model: Any, expl: Explanation, prepared: PreparedInput,
                base: Path) -> Readout | None:
        """Band / time profiles and the two listening clips of the explained window."""
        from ..listening import listening_clips, save_clips
        from ..visualization.readouts import (
            no_bands_reason,
            render_readouts,
            top_bands,
            varies_with_frequency,
        )

        window = int(expl.extras.get("window", 0))
        waves = prepared.data.get("waveforms")
        if waves is None or expl.axes is None:
            return None
        clips = listening_clips(model, expl, waves[window])
        kept, removed = save_clips(clips, base)
        cells = ("time-frequency cells" if varies_with_frequency(expl.heatmap)
                 else "time frames")
        reason = no_bands_reason(expl)
        if reason is None:
            bands = "Strongest bands: " + ", ".join(f"{hz:.0f} Hz ({share:.0%})"
                                                    for hz, share in top_bands(expl))
        else:  # a flat band profile would name the lowest bands as "strongest"
            bands = "No band stands out: " + "".join(reason)
        text = (f"Listen: the top {clips.share:.0%} of the {cells} kept "
                f"(p({clips.target_label}) = {clips.score_kept:.1%}) and removed "
                f"(p = {clips.score_removed:.1%}); the original window scores "
                f"{clips.score_original:.1%}. {bands}.")
        record = {"kept": str(kept), "removed": str(removed), "share": clips.share,
                  "score_original": clips.score_original, "score_kept": clips.score_kept,
                  "score_removed": clips.score_removed}
        return Readout(figure=render_readouts(expl), clips=(str(kept), str(removed)), text=text,
                       record=record)

    # --- benchmarks -----------------------------------------------------------------------------
    def sample_plane(self, spec: ModelSpec, rng: np.random.Generator) -> FloatArray:
        """A harmonic spectrogram in dB; for a waveform model what it takes, a harmonic
        tone (1, n_samples) in [-1, 1]."""
        if spec.input.waveform:
            t = np.arange(spec.input.n_samples) / spec.input.sample_rate
            wave = sum(np.sin(2 * np.pi * 220.0 * k * t) / k for k in range(1, 6))
            wave = 0.2 * wave * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
            return (wave + 0.003 * rng.standard_normal(len(t)))[None].astype(np.float32)
        h, w = spec.input.plane_shape
        yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
        harmonics = sum(np.exp(-((yy * h - k * h / 9) ** 2) / 4.0) for k in range(1, 8))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * xx)
        plane = -80 + 75 * np.clip(harmonics * envelope + 0.1 * rng.random((h, w)), 0, 1)
        return plane.astype(np.float32)

    def to_unit(self, x: FloatArray) -> FloatArray:
        return (x - x.min()) / (np.ptp(x) or 1.0)

    def from_unit(self, x: FloatArray, reference: FloatArray) -> FloatArray:
        return x * (np.ptp(reference) or 1.0) + reference.min()
