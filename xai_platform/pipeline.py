"""The pipeline the CLI and the app share: input -> feature planes -> prediction -> explanation.

Audio is scored in overlapping windows (see :func:`xai_platform.preprocessing.audio.split_windows`).
**Overall verdict rule**: the recording's probability of each class is the mean of the window
probabilities; a binary model calls it positive (e.g. "fake") when that mean reaches the
model's decision threshold (from its card; 0.5 without one). The per-window scores are kept as a
timeline, and an explanation is computed for the *most suspicious* window (highest probability
of the positive class) unless the caller picks another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import explainers
from .config import AppSettings, AudioInput, ImageInput, ModelSpec
from .errors import ExplainerError, InputError
from .explanation import AudioAxes, Explanation, FloatArray, Prediction, UNTRAINED_NOTE
from .models.handle import ModelHandle

Source = str | Path | bytes | tuple[int, Any]


@dataclass(frozen=True)
class PreparedInput:
    """An input made ready for one model.

    planes: (n, H, W) float32, one feature plane per window (audio) or one (image);
    starts_s: (n,) window start times in seconds (audio) or None.
    """

    name: str
    modality: str
    planes: FloatArray
    starts_s: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    waveforms: FloatArray | None = None  # (n, n_samples) audio of each window
    sample_rate: int | None = None
    duration_s: float | None = None
    original: FloatArray | None = None  # the full-resolution grayscale image


def _name(source: Source, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, Path)):
        return Path(source).name
    return "microphone" if isinstance(source, tuple) else "upload"


def prepare(source: Source, spec: ModelSpec, *, settings: AppSettings = AppSettings(),
            name: str | None = None) -> PreparedInput:
    """Decode ``source`` and build the feature planes ``spec`` expects."""
    label = _name(source, name)
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise InputError(f"{label}: file not found. Check the path.")
    if spec.modality == "audio":
        assert isinstance(spec.input, AudioInput)
        from .preprocessing import audio

        windows = audio.load_for_model(source, spec.input, max_seconds=settings.max_audio_seconds)
        planes = audio.features(windows, spec.input)
        notes = []
        if windows.padded:
            notes.append(f"The recording ({windows.duration:.2f} s) is shorter than the model's "
                         f"{spec.input.duration:g} s window: it was padded with silence.")
        elif len(planes) > 1:
            notes.append(f"{windows.duration:.1f} s scored in {len(planes)} overlapping windows "
                         f"of {spec.input.duration:g} s.")
        return PreparedInput(label, "audio", planes, starts_s=np.asarray(windows.starts),
                             notes=tuple(notes), waveforms=windows.windows,
                             sample_rate=windows.sample_rate, duration_s=windows.duration)
    assert isinstance(spec.input, ImageInput)
    if isinstance(source, tuple):
        raise InputError("An X-ray model needs an image file (PNG, JPEG or DICOM), not audio.")
    from .preprocessing import image

    loaded = image.load_image(source, max_pixels=settings.max_image_pixels, name=label)
    plane = image.to_model_plane(loaded.pixels, spec.input.size)
    return PreparedInput(label, "xray", plane[None].astype(np.float32), notes=loaded.notes,
                         original=loaded.pixels)


@dataclass(frozen=True)
class Analysis:
    """A model's answer for a prepared input: overall prediction and per-window scores."""

    prepared: PreparedInput
    model_id: str
    prediction: Prediction
    window_probabilities: FloatArray  # (n, K)
    suspicious_window: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def window_prediction(self, window: int) -> Prediction:
        p = self.prediction
        return Prediction(p.labels, self.window_probabilities[window], multilabel=p.multilabel,
                          untrained=p.untrained, positive=p.positive, threshold=p.threshold)


def analyse(model: ModelHandle, prepared: PreparedInput) -> Analysis:
    """Predict every window and combine them by the rule in the module docstring."""
    spec = model.spec
    if prepared.modality != spec.modality:
        raise InputError(f"model '{spec.id}' is an {spec.modality} model but the input is "
                         f"{prepared.modality}; pick a {prepared.modality} model.")
    probs = model.predict(prepared.planes)
    overall = probs.mean(axis=0)
    positive = spec.positive_index
    threshold = model.calibration.threshold
    if positive is not None and threshold is None:
        threshold = 0.5
    prediction = Prediction(spec.labels, overall.astype(np.float32),
                            multilabel=spec.output == "multilabel", untrained=model.untrained,
                            positive=positive, threshold=threshold)
    suspicious = int(np.argmax(probs[:, positive])) if positive is not None else \
        int(np.argmax(probs.max(axis=1)))
    notes = list(prepared.notes)
    if len(probs) > 1 and positive is not None:
        above = int((probs[:, positive] >= threshold).sum())
        notes.append(f"{above} of {len(probs)} windows score '{spec.labels[positive]}' at or "
                     f"above the threshold {threshold:.2f}.")
    if model.untrained:
        notes.append(UNTRAINED_NOTE)
    if spec.notice:
        notes.append(spec.notice)
    return Analysis(prepared, spec.id, prediction, probs, suspicious, tuple(notes))


def explain(model: ModelHandle, analysis: Analysis, method: str, *, window: int | None = None,
            target: int | str | None = None, params: dict[str, Any] | None = None,
            seed: int = 0, batch_size: int | None = None,
            progress: Callable[[float, str], None] | None = None,
            cancel: threading.Event | None = None) -> Explanation:
    """Explain one window (default: the most suspicious) for ``target`` (default: the
    predicted class)."""
    spec = model.spec
    prepared = analysis.prepared
    w = analysis.suspicious_window if window is None else int(window)
    if not 0 <= w < len(prepared.planes):
        raise ExplainerError(f"window {w} does not exist; this input has "
                             f"{len(prepared.planes)} window(s).")
    if target is None:
        t = analysis.prediction.index
    elif isinstance(target, str):
        if target not in spec.labels:
            raise ExplainerError(f"'{target}' is not a label of model '{spec.id}'; use one of: "
                                 f"{', '.join(spec.labels)}.")
        t = spec.labels.index(target)
    else:
        t = int(target)
    x = prepared.planes[w]
    result = explainers.run(method, model, x, target=t, params=params, seed=seed,
                            batch_size=batch_size, progress=progress, cancel=cancel)
    axes = None
    notes = list(analysis.notes)
    if prepared.modality == "audio":
        from .preprocessing import audio

        assert isinstance(spec.input, AudioInput)
        axes = AudioAxes(start_s=float(prepared.starts_s[w]) if prepared.starts_s is not None
                         else 0.0, duration_s=spec.input.duration,
                         mel_centers_hz=audio.mel_centers_hz(spec.input).astype(np.float32),
                         sample_rate=spec.input.sample_rate)
        if len(prepared.planes) > 1:
            notes.append(f"Explained window {w + 1} of {len(prepared.planes)} "
                         f"({axes.start_s:.2f}-{axes.start_s + axes.duration_s:.2f} s).")
    return Explanation(
        model_id=spec.id, model_name=spec.name, modality=spec.modality, method=result.method.id,
        method_label=result.method.label, display=x, heatmap=result.attribution.heatmap,
        signed=bool(result.attribution.signed),
        prediction=analysis.window_prediction(w), target=t, params=result.params,
        seed=result.seed, seconds=result.seconds, n_evaluations=result.attribution.n_evaluations,
        axes=axes, notes=tuple(notes),
        extras={k: v for k, v in result.attribution.extras.items() if k != "segments"}
        | {"window": w})
