"""The pipeline under the service: input -> feature planes -> prediction -> explanation.

The input's modality (:mod:`xai_platform.modalities`) decodes it into one feature plane, or one
per window for inputs scored in windows over time (audio: see
:func:`xai_platform.preprocessing.audio.split_windows`).
**Overall verdict rule**: the input's probability of each class is the mean of the window
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
from .config import AppSettings, ModelSpec
from .errors import ExplainerError, InputError
from .explanation import Explanation, FloatArray, Prediction, UNTRAINED_NOTE
from .modalities import PreparedInput, Source, get_modality
from .models.handle import ModelHandle


def _name(source: Source, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, Path)):
        return Path(source).name
    return "microphone" if isinstance(source, tuple) else "upload"


def prepare(source: Source, spec: ModelSpec, *, settings: AppSettings = AppSettings(),
            name: str | None = None) -> PreparedInput:
    """Decode ``source`` and build the feature planes ``spec`` expects (its modality's work)."""
    label = _name(source, name)
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise InputError(f"{label}: file not found. Check the path.")
    return get_modality(spec.modality).prepare(source, spec, settings=settings, name=label)


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
    notes = list(analysis.notes)
    modality = get_modality(spec.modality)
    axes = modality.axes(spec, prepared, w)
    extras = {k: v for k, v in result.attribution.extras.items() if k != "segments"}
    focus = modality.focus(prepared, result.attribution.heatmap,
                           signed=bool(result.attribution.signed))
    if focus is not None:
        extras["focus"], extras["focus_mask"] = focus
        if focus[0].get("message"):
            notes.append(focus[0]["message"])
    length = modality.window_seconds(spec)
    if len(prepared.planes) > 1 and prepared.starts_s is not None and length is not None:
        start = float(prepared.starts_s[w])
        notes.append(f"Explained window {w + 1} of {len(prepared.planes)} "
                     f"({start:.2f}-{start + length:.2f} s).")
    return Explanation(
        model_id=spec.id, model_name=spec.name, modality=spec.modality, method=result.method.id,
        method_label=result.method.label, display=x, heatmap=result.attribution.heatmap,
        signed=bool(result.attribution.signed),
        prediction=analysis.window_prediction(w), target=t, params=result.params,
        seed=result.seed, seconds=result.seconds, n_evaluations=result.attribution.n_evaluations,
        axes=axes, notes=tuple(notes), extras=extras | {"window": w})
