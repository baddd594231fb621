"""What perturbation methods share: the masked value, the features, batched evaluation.

What "removing" a feature means, and what the features are, is the input's modality's to say
(:meth:`Modality.masked_value <xai_platform.modalities.base.Modality.masked_value>`,
:meth:`~xai_platform.modalities.base.Modality.features`): silence at the dB floor and
time-frequency patches for audio, a blurred copy and SLIC superpixels for images. Evaluation is
the model's (:meth:`~xai_platform.models.handle.ModelHandle.coalition_evaluator`), which builds
perturbed batches on its own device where its format can.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ..models.handle import ModelHandle
from ..modalities import get_modality
from .registry import ExplainContext, FloatArray

IntArray = npt.NDArray[np.int64]


def masked_value(x: FloatArray, modality: str) -> FloatArray:
    """The plane that replaces removed features: (H, W) float32 (the modality's)."""
    return get_modality(modality).masked_value(x)


def grid_segments(shape: tuple[int, int], *, patch_rows: int, patch_cols: int) -> IntArray:
    """Label (H, W) of a regular grid: cells of ``patch_rows`` x ``patch_cols`` (edge cells may
    be smaller)."""
    h, w = shape
    rows = np.arange(h) // patch_rows
    cols = np.arange(w) // patch_cols
    return (rows[:, None] * (cols.max() + 1) + cols[None, :]).astype(np.int64)


def superpixels(x: FloatArray, *, n_segments: int, compactness: float) -> IntArray:
    """SLIC superpixels of a grayscale plane in [0, 1]: labels (H, W), 0..M-1."""
    from skimage.segmentation import slic

    labels = slic(x.astype(np.float64), n_segments=n_segments, compactness=compactness,
                  channel_axis=None, start_label=0, enforce_connectivity=True)
    _, inverse = np.unique(labels, return_inverse=True)  # make labels contiguous
    return inverse.reshape(labels.shape).astype(np.int64)


def features(x: FloatArray, ctx: ExplainContext, params: dict[str, Any]) -> IntArray:
    """The modality's feature map: labels (H, W) int64, 0..M-1."""
    return get_modality(ctx.modality).features(x, params)


def target_evaluator(model: ModelHandle, x: FloatArray, baseline: FloatArray,
                     segments: IntArray, ctx: ExplainContext, *, target: int, total: int,
                     what: str) -> Callable[[npt.NDArray[np.bool_]], npt.NDArray[np.float64]]:
    """``evaluate(z)``: the ``target`` probability (n,) of each coalition row of ``z``, through
    :func:`evaluate_coalitions`, with progress counted over the calls against ``total`` (for
    estimators that evaluate in rounds)."""
    used = [0]

    def evaluate(z: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
        out = evaluate_coalitions(model, x, baseline, segments, z, ctx, done=used[0],
                                  total=total, what=what)
        used[0] += len(z)
        return out[:, target].astype(np.float64)

    return evaluate


def evaluate_coalitions(model: ModelHandle, x: FloatArray, baseline: FloatArray,
                        segments: IntArray, coalitions: npt.NDArray[np.bool_],
                        ctx: ExplainContext, *, what: str = "evaluating perturbations",
                        done: int = 0, total: int | None = None) -> FloatArray:
    """Probabilities (n, K) for each coalition row (n, M): feature ``m`` kept where True,
    replaced by ``baseline`` where False, evaluated ``ctx.batch_size`` at a time by the model's
    :meth:`~xai_platform.models.handle.ModelHandle.coalition_evaluator`. Progress is reported as
    ``done`` + rows so far out of ``total`` (default: this call's rows), for callers that
    evaluate in rounds.
    """
    n = len(coalitions)
    total = n if total is None else total
    evaluate = model.coalition_evaluator(x, baseline, segments)
    out: list[np.ndarray] = [np.zeros((0, len(model.spec.labels)), np.float32)]
    for start in range(0, n, ctx.batch_size):
        z = coalitions[start:start + ctx.batch_size]
        out.append(evaluate(z))
        ctx.report(done + start + len(z), total, what)
    return np.concatenate(out).astype(np.float32)


def paint(segments: IntArray, values: np.ndarray) -> FloatArray:
    """Per-feature values (M,) painted onto their pixels: (H, W) float32."""
    return np.asarray(values, dtype=np.float32)[segments]
