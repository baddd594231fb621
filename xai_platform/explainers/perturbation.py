"""What perturbation methods share: the masked value, the features, batched evaluation.

Masked value, per modality (what "removing" a feature means):

* **audio** (log-mel in dB, ref = the window's maximum): the window's own floor, its minimum
  dB (about ``-top_db``), i.e. silence in that time-frequency cell. A zero would be the
  *loudest* value the spectrogram holds, not an absent one.
* **xray** (grayscale in [0, 1]): a heavily Gaussian-blurred copy of the image (sigma = 1/8 of its
  size). It removes local structure (a nodule, an edge, a marker) but keeps the overall
  brightness of that region, so a masked patch is not a black hole no radiograph contains.

Features, per modality:

* **audio**: a grid of time-frequency patches, ``patch_bands`` mel bands by ``patch_frames``
  frames;
* **xray**: SLIC superpixels of the grayscale image (``n_segments``, ``compactness``).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from ..models.handle import ModelHandle
from .registry import ExplainContext, FloatArray, Param

IntArray = npt.NDArray[np.int64]


def masked_value(x: FloatArray, modality: str) -> FloatArray:
    """The plane that replaces removed features: (H, W) float32 (see the module docstring)."""
    if modality == "audio":
        return np.full_like(x, x.min(), dtype=np.float32)
    sigma = max(x.shape) / 8.0
    return cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REFLECT)


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


SEGMENT_PARAMS = (
    Param("patch_bands", "Patch height (mel bands)", "int", 8, minimum=1, maximum=64, step=1,
          help="Mel bands per time-frequency patch.", modalities=("audio",)),
    Param("patch_frames", "Patch width (frames)", "int", 8, minimum=1, maximum=256, step=1,
          help="Spectrogram frames per patch.", modalities=("audio",)),
    Param("n_segments", "Superpixels", "int", 60, minimum=4, maximum=400, step=1,
          help="About how many SLIC superpixels.", modalities=("xray",)),
    Param("compactness", "Superpixel compactness", "float", 0.2, minimum=0.01, maximum=10.0,
          step=0.001, help="Higher gives squarer superpixels, lower follows intensity.",
          modalities=("xray",)),
)


def features(x: FloatArray, ctx: ExplainContext, params: dict[str, Any]) -> IntArray:
    """The feature map for this modality: labels (H, W) int64, 0..M-1."""
    if ctx.modality == "audio":
        return grid_segments(x.shape, patch_rows=int(params["patch_bands"]),
                             patch_cols=int(params["patch_frames"]))
    return superpixels(x, n_segments=int(params["n_segments"]),
                       compactness=float(params["compactness"]))


def evaluate_coalitions(model: ModelHandle, x: FloatArray, baseline: FloatArray,
                        segments: IntArray, coalitions: npt.NDArray[np.bool_],
                        ctx: ExplainContext, *, what: str = "evaluating perturbations") -> FloatArray:
    """Probabilities (n, K) for each coalition row (n, M): feature ``m`` kept where True,
    replaced by ``baseline`` where False. Built and evaluated ``ctx.batch_size`` at a time; on a
    GPU the perturbed inputs are built there (only the 0/1 coalitions cross the bus).
    """
    n = len(coalitions)
    device = str(getattr(model, "device", "cpu"))
    on_gpu = device.startswith("cuda") or "GPU" in device
    build = _device_builder(model, x, baseline, segments) if on_gpu else None
    out: list[np.ndarray] = []
    for start in range(0, n, ctx.batch_size):
        z = coalitions[start:start + ctx.batch_size]
        if build is not None:
            out.append(build(z))
        else:
            batch = np.where(z[:, segments], x[None], baseline[None]).astype(np.float32)
            out.append(model.predict(batch, batch_size=len(batch)))
        ctx.report(start + len(z), n, what)
    return np.concatenate(out).astype(np.float32)


def _device_builder(model: ModelHandle, x: FloatArray, baseline: FloatArray, segments: IntArray):
    """z (b, M) bool -> probabilities (b, K), with the perturbed batch built on the model's GPU."""
    if model.framework == "torch":
        import torch

        xt, bt = (torch.from_numpy(a).to(model.device) for a in (x, baseline))
        seg = torch.from_numpy(segments).to(model.device)

        def build(z: np.ndarray) -> np.ndarray:
            keep = torch.from_numpy(z).to(model.device)[:, seg]  # (b, H, W)
            return model.predict_tensor(torch.where(keep, xt, bt)).cpu().numpy()

        return build
    import tensorflow as tf

    with tf.device(model.device):
        xt, bt = tf.constant(x), tf.constant(baseline)
        seg = tf.constant(segments)

    def build(z: np.ndarray) -> np.ndarray:
        with tf.device(model.device):
            keep = tf.gather(tf.constant(z), seg, axis=1)  # (b, H, W)
            return model.predict_tensor(tf.where(keep, xt, bt)).numpy()

    return build


def paint(segments: IntArray, values: np.ndarray) -> FloatArray:
    """Per-feature values (M,) painted onto their pixels: (H, W) float32."""
    return np.asarray(values, dtype=np.float32)[segments]
