"""The pipeline under the service: input -> feature planes -> prediction -> explanation.

The input's modality (:mod:`xai_platform.modalities`) decodes it into one feature plane, or one
per window for inputs scored in windows over time (audio: see
:func:`xai_platform.preprocessing.audio.split_windows`).
**Overall verdict rule**: the input's probability of each class is the mean of the window
probabilities; a binary model calls it positive (e.g. "fake") when that mean reaches the
model's decision threshold (from its card; 0.5 without one), **or** when the segment rule
flags a stretch. A model whose card has a "cannot tell" band
(``calibration.band``) calls it positive only at or above the band, negative only at or below
it, and gives no verdict in between (``prediction.undecided``). Where the card also has a wider
band for short inputs (``calibration.band.short_speech``), an input holding less than its
``below_s`` seconds of what the model judges (audio: speech) gets that band instead.

**Segment rule** (:func:`flagged_segments`): at least ``app.segment_windows`` (default 2)
consecutive windows scoring the positive class at or above the threshold form a flagged
stretch, from the first window's start to the last window's end; overlapping or touching
stretches merge. A partly synthetic recording (real speech, a few seconds of synthetic speech,
real speech) is then called positive and the headline says where ("synthetic speech at
7.0-14.5 s"); ``prediction.segments`` holds the stretches. The default of 2 windows (3 s with
the shipped 2 s windows and 1 s hop) was chosen on validation recordings built from the
corpus's validation languages (``python -m training.segment_rule``; docs/AUDIO.md has the
detection, false-alarm and boundary figures on test recordings).

**Familiarity** (:mod:`xai_platform.familiarity`): a model whose card describes its training
distribution is checked on every input; when most scored windows (an image's only one) lie
beyond the limit set on validation data, the verdict is withheld (``prediction.withheld``, with
``prediction.reason``) while the probabilities and explanations are still computed: they show
what the model would answer and why, not a verdict. A model configured with ``verdict: false``
(measured unfit for one; its notice says why) has its verdict withheld on every input.

Windows the modality finds hold nothing to judge (audio: less than ``app.min_speech_s`` of
speech, found by voice activity detection) are left out of the mean, the segment rule (they
break a stretch) and the choice of the window to explain; the timeline shows them as "no
speech". The per-window scores are kept as a timeline. An explanation is computed, unless
the caller picks another, for the window that drives the headline (:func:`driving_window`): for a
positive verdict the window with the highest probability of the positive class (inside the
flagged stretch when there is one), otherwise the window with the highest probability of the
predicted class; the default target is the headline's class, so a class with no evidence in
the window is never the default.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import explainers, familiarity
from .config import AppSettings, ModelSpec
from .errors import ExplainerError, InputError
from .explanation import Explanation, FloatArray, Prediction, UNTRAINED_NOTE
from .modalities import PreparedInput, Source, get_modality
from .models.handle import ModelHandle


#: why a model configured ``verdict: false`` gives none (its notice, shown beside, says more)
UNFIT_REASON = "this model is not fit for a verdict; its notice gives the measured figures"


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
    suspicious_window: int  # highest probability of the positive class (or of any class)
    notes: tuple[str, ...] = field(default_factory=tuple)
    explained_window: int | None = None  # the default window: the one driving the headline

    @property
    def default_window(self) -> int:
        return self.suspicious_window if self.explained_window is None else self.explained_window

    def window_prediction(self, window: int) -> Prediction:
        """The prediction for one window: the recording's, with that window's probabilities
        and no flagged stretches (a stretch is a run of windows, not one)."""
        return replace(self.prediction, probabilities=self.window_probabilities[window],
                       segments=(), segment_phrase="")


def flagged_segments(positive_probs: np.ndarray, starts_s: np.ndarray | None,
                     window_s: float | None, *, threshold: float,
                     min_windows: int) -> tuple[tuple[float, float], ...]:
    """The segment rule: (start s, end s) of each run of at least ``min_windows`` consecutive
    windows whose positive-class probability is at or above ``threshold``, overlapping or
    touching runs merged.

    positive_probs: (n,) in [0, 1]; starts_s: (n,) window starts in seconds (None, or fewer
    than two windows: no segments, the input is seen whole); window_s: window length.
    """
    if starts_s is None or window_s is None or len(positive_probs) < 2 or min_windows < 1:
        return ()
    hit = np.asarray(positive_probs) >= threshold
    runs, i = [], 0
    while i < len(hit):
        if not hit[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(hit) and hit[j + 1]:
            j += 1
        if j - i + 1 >= min_windows:
            runs.append((float(starts_s[i]), float(starts_s[j]) + float(window_s)))
        i = j + 1
    merged: list[tuple[float, float]] = []
    for a, b in runs:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return tuple(merged)


def familiar(model: ModelHandle, prepared: PreparedInput) -> familiarity.Check | None:
    """How far the input's scored windows are from the model's training data (None when the
    model carries no familiarity description or cannot give the features)."""
    if model.familiarity is None or not model.capabilities.layer_gradients:
        return None
    planes = prepared.planes[prepared.scored_mask]
    if not len(planes):
        return None
    features = model.embeddings(planes, layer=model.familiarity.layer)
    return familiarity.check(model.familiarity, features, planes)


def _among(values: np.ndarray, scored: np.ndarray | None) -> np.ndarray:
    """(n,) values with the windows left out (``scored`` False) set to -inf, for argmax."""
    return values if scored is None else np.where(scored, values, -np.inf)


def driving_window(probs: np.ndarray, prediction: Prediction, *,
                   scored: np.ndarray | None = None) -> int:
    """The window that drives the headline (module docstring): the highest probability of the
    predicted class among the scored windows. probs: (n, K); scored: (n,) bool or None (all)."""
    return int(np.argmax(_among(probs[:, prediction.index], scored)))


def analyse(model: ModelHandle, prepared: PreparedInput, *,
            settings: AppSettings = AppSettings()) -> Analysis:
    """Predict every window and combine them by the rules in the module docstring."""
    spec = model.spec
    if prepared.modality != spec.modality:
        raise InputError(f"model '{spec.id}' is an {spec.modality} model but the input is "
                         f"{prepared.modality}; pick a {prepared.modality} model.")
    modality = get_modality(spec.modality)
    probs = modality.predict(model, prepared)
    scored = prepared.scored
    overall = probs[prepared.scored_mask].mean(axis=0)
    positive = spec.positive_index
    threshold = model.calibration.threshold
    if positive is not None and threshold is None:
        threshold = 0.5
    multilabel = spec.output == "multilabel"
    pooled = band = None
    if positive is not None and not multilabel:
        # less evidence: the card's wider band for short inputs, where it has one
        pooled = model.calibration.band
        band = model.calibration.band_for(prepared.judged_seconds)
    # with a "cannot tell" band, only windows above it flag a stretch
    flag_at = threshold if band is None else max(threshold, band[1])
    segments: tuple[tuple[float, float], ...] = ()
    if positive is not None and not multilabel:
        segments = flagged_segments(_among(probs[:, positive], scored), prepared.starts_s,
                                    modality.window_seconds(spec), threshold=flag_at,
                                    min_windows=settings.segment_windows)
    unfit = not spec.verdict and not model.untrained
    # an unfit model's verdict is withheld whatever its inputs look like: no familiarity check
    # (so a withheld verdict without one means "unfit", as the figure title reads it)
    known = None if unfit else familiar(model, prepared)
    prediction = Prediction(spec.labels, overall.astype(np.float32), multilabel=multilabel,
                            untrained=model.untrained, positive=positive, threshold=threshold,
                            segments=segments,
                            segment_phrase=modality.segment_phrase(spec.labels[positive])
                            if segments else "",
                            withheld=unfit or (known is not None and known.withheld
                                               and not model.untrained),
                            reason=UNFIT_REASON if unfit
                            else known.reason if known is not None else "",
                            familiarity=known.to_dict() if known is not None else None,
                            one_sided=spec.one_sided, band=band,
                            unseen_reals=model.calibration.unseen_reals,
                            test_fakes=model.calibration.test_fakes)
    suspicious = int(np.argmax(_among(probs[:, positive] if positive is not None
                                      else probs.max(axis=1), scored)))
    notes = list(prepared.notes)
    if len(probs) > 1 and positive is not None:
        judged = probs[prepared.scored_mask, positive]
        above = int((judged >= threshold).sum())
        which = "" if scored is None else " scored"
        notes.append(f"{above} of {len(judged)}{which} windows score '{spec.labels[positive]}' "
                     f"at or above the threshold {threshold:.2f}.")
        if segments:
            notes.append(f"Segment rule: {settings.segment_windows} or more consecutive windows "
                         f"at or above {'the threshold' if band is None else 'the band'} "
                         "flag the input (app.segment_windows).")
    if band is not None:
        notes.append(f"'Cannot tell' band: p({spec.labels[positive]}) between {band[0]:.2f} and "
                     f"{band[1]:.2f} gets no verdict (fitted where this model's errors on data "
                     "unlike its training data were measured; see its card).")
    short = model.calibration.short_band
    if band is not None and band != pooled and short is not None:
        notes.append(f"Short input: {prepared.judged_seconds:.2f} s to judge, under the "
                     f"{short[0]:g} s below which this model's verdicts on data unlike its "
                     "training data were wrong more often, so its wider band "
                     f"{band[0]:.2f}-{band[1]:.2f} applies instead of "
                     f"{pooled[0]:.2f}-{pooled[1]:.2f} (see its card).")
    if known is not None and not known.withheld:
        notes.append(f"Familiar input: distance to the training data "
                     f"{known.to_dict()['distance_ratio']:.2f}x the limit set on validation "
                     "data (above 1 the verdict would be withheld).")
    elif known is None and model.familiarity is None and not model.untrained:
        notes.append("This model has no familiarity check: nothing tells whether the input is "
                     "like its training data.")
    if model.untrained:
        notes.append(UNTRAINED_NOTE)
    if model.forward_path.note():
        notes.append(model.forward_path.note())
    if spec.notice:
        notes.append(spec.notice)
    return Analysis(prepared, spec.id, prediction, probs, suspicious, tuple(notes),
                    explained_window=driving_window(probs, prediction, scored=scored))


def explain(model: ModelHandle, analysis: Analysis, method: str, *, window: int | None = None,
            target: int | str | None = None, params: dict[str, Any] | None = None,
            seed: int = 0, batch_size: int | None = None,
            progress: Callable[[float, str], None] | None = None,
            cancel: threading.Event | None = None) -> Explanation:
    """Explain one window for ``target`` (default: the headline's class); the default window
    is the one driving the headline, or, for another target, the window where that target
    scores highest (never a window with no evidence for it when another has some)."""
    spec = model.spec
    prepared = analysis.prepared
    if target is None:
        t = analysis.prediction.index
    elif isinstance(target, str):
        if target not in spec.labels:
            raise ExplainerError(f"'{target}' is not a label of model '{spec.id}'; use one of: "
                                 f"{', '.join(spec.labels)}.")
        t = spec.labels.index(target)
    else:
        t = int(target)
    if window is not None:
        w = int(window)
    elif t == analysis.prediction.index:
        w = analysis.default_window
    else:
        w = int(np.argmax(_among(analysis.window_probabilities[:, t], prepared.scored)))
    if not 0 <= w < len(prepared.planes):
        raise ExplainerError(f"window {w} does not exist; this input has "
                             f"{len(prepared.planes)} window(s).")
    x = prepared.planes[w]
    modality = get_modality(spec.modality)
    reference = modality.reference(prepared, w)
    explained = modality.explained_model(model, x, reference)
    result = explainers.run(method, explained, x, target=t, params=params, seed=seed,
                            batch_size=batch_size, progress=progress, cancel=cancel)
    notes = list(analysis.notes)
    if explained.method_note(result.method):
        notes.append(explained.method_note(result.method))
    axes = modality.axes(spec, prepared, w)
    extras = reference | {k: v for k, v in result.attribution.extras.items() if k != "segments"}
    focus = modality.focus(prepared, result.attribution.heatmap,
                           signed=bool(result.attribution.signed), window=w)
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
