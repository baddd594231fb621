"""Class activation maps: Grad-CAM and Grad-CAM++.

The formats (:mod:`xai_platform.models.formats.torch`, :mod:`~.formats.keras`) only capture
the target layer's activations and gradients, channels first; the weighting below is the one
copy of the math for both frameworks. It follows pytorch-grad-cam (``BaseCAM``): weights per
channel, weighted sum, ReLU, min-max scaling per map, bilinear resize to the input.
"""

from __future__ import annotations

import numpy as np

from ..models.handle import ModelHandle
from .registry import Attribution, ExplainContext, FloatArray, register_method



def gradcam_weights(activations: FloatArray, gradients: FloatArray) -> FloatArray:
    """Grad-CAM channel weights: gradients averaged over space. (N, C, h, w) -> (N, C)."""
    return gradients.mean(axis=(2, 3))


def gradcampp_weights(activations: FloatArray, gradients: FloatArray) -> FloatArray:
    """Grad-CAM++ channel weights (Chattopadhay et al., 2018, eq. 19 with the exponential
    score, as pytorch-grad-cam computes them). (N, C, h, w) -> (N, C)."""
    g2 = gradients ** 2
    g3 = g2 * gradients
    sum_act = activations.sum(axis=(2, 3))[:, :, None, None]
    alpha = g2 / (2.0 * g2 + sum_act * g3 + 1e-6)
    alpha = np.where(gradients != 0, alpha, 0.0)
    return (np.maximum(gradients, 0.0) * alpha).sum(axis=(2, 3))


def cam_from_weights(activations: FloatArray, weights: FloatArray,
                     size: tuple[int, int]) -> FloatArray:
    """ReLU(sum_c w_c A_c), resized to ``size`` = (H, W) bilinearly, then min-max scaled.

    Returns (N, H, W) float32 in [0, 1]; an all-zero map stays zero (no evidence found). A map
    one row high (a 1-D convolution over time) is resized along its length and repeated on
    every row.
    pytorch-grad-cam scales before and after resizing; the result is the same map, since
    resizing is linear and the scaling affine.
    """
    import cv2  # here, not at the top: the app imports this module before its page is served

    cam = np.maximum((weights[:, :, None, None] * activations).sum(axis=1), 0.0)
    out = np.empty((cam.shape[0], *size), dtype=np.float32)
    for i, m in enumerate(cam):
        if m.shape[0] == 1:  # a 1-D layer (a curve over time): the same at every row
            m = np.repeat(cv2.resize(m.astype(np.float32), (size[1], 1),
                                     interpolation=cv2.INTER_LINEAR), size[0], axis=0)
        else:
            m = cv2.resize(m.astype(np.float32), (size[1], size[0]),
                           interpolation=cv2.INTER_LINEAR)
        m = m - m.min()
        top = float(m.max())
        out[i] = m / top if top > 0 else m  # no epsilon: tiny maps must still reach 1
    return out


def _cam(model: ModelHandle, x: FloatArray, target: int, ctx: ExplainContext, weigh) -> Attribution:
    ctx.report(0, 1, "backpropagating to the target layer")
    captured = model.layer_gradients(x[None], np.array([target]))
    heatmap = cam_from_weights(captured.activations, weigh(captured.activations,
                                                          captured.gradients), x.shape)[0]
    ctx.report(1, 1)
    extras = {"layer": model.spec.target_layer,
              "layer_shape": list(captured.activations.shape[1:])}
    if not heatmap.any():  # the ReLU removed everything: no cell raises the target's score
        extras["no_positive_evidence"] = True
    return Attribution(heatmap, n_evaluations=1, extras=extras)


@register_method(
    id="gradcam", label="Grad-CAM",
    description="Weights the target layer's feature maps by their average gradient for the class.",
    paper="Selvaraju et al., Grad-CAM, ICCV 2017 (arXiv:1610.02391)",
    kind="gradient", specificity="model-specific", needs=("layer_gradients",),
    needs_conv_layer=True, speed=10,
    caveats="Resolution is that of the target layer (coarse blobs, upsampled); shows where "
            "evidence for the class is, not against it.")
def gradcam(model: ModelHandle, x: FloatArray, *, target: int, ctx: ExplainContext) -> Attribution:
    """Grad-CAM heatmap: (H, W) float32 in [0, 1]."""
    return _cam(model, x, target, ctx, gradcam_weights)


@register_method(
    id="gradcampp", label="Grad-CAM++",
    description="Like Grad-CAM, but weights each location's positive gradients, which separates "
                "several instances of a class better.",
    paper="Chattopadhay et al., Grad-CAM++, WACV 2018 (arXiv:1710.11063)",
    kind="gradient", specificity="model-specific", needs=("layer_gradients",),
    needs_conv_layer=True, speed=11,
    caveats="Same coarse resolution as Grad-CAM; the closed-form weights assume an exponential "
            "of the score.")
def gradcampp(model: ModelHandle, x: FloatArray, *, target: int, ctx: ExplainContext) -> Attribution:
    """Grad-CAM++ heatmap: (H, W) float32 in [0, 1]."""
    return _cam(model, x, target, ctx, gradcampp_weights)
