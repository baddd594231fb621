"""Input-gradient methods: plain gradient saliency and Integrated Gradients.

Gradients are taken with respect to the feature plane (grayscale image or log-mel dB), through
the channel repetition and normalisation, so they are already summed over channels.
"""

from __future__ import annotations

import numpy as np

from ..models.handle import ModelHandle
from .perturbation import masked_value
from .registry import Attribution, ExplainContext, FloatArray, Param, register_method


@register_method(
    id="saliency", label="Gradient saliency",
    description="The magnitude of the score's gradient at each input value: which values a "
                "small change would move the score most.",
    paper="Simonyan et al., Deep Inside Convolutional Networks, ICLR workshop 2014 "
          "(arXiv:1312.6034)",
    kind="gradient", specificity="model-specific", needs=("input_gradients",), speed=12,
    params=(Param("absolute", "Absolute value", "bool", True,
                  help="Show |gradient| (on) or the signed gradient (off)."),),
    caveats="A cheap baseline: noisy, and local (it says what a tiny change does, not what the "
            "model used); passes sanity checks only partly.")
def saliency(model: ModelHandle, x: FloatArray, *, target: int, ctx: ExplainContext,
             absolute: bool = True) -> Attribution:
    """Gradient saliency: (H, W) float32; >= 0 when ``absolute``."""
    ctx.report(0, 1, "backpropagating to the input")
    grads, _ = model.input_gradients(x[None], np.array([target]))
    ctx.report(1, 1)
    g = grads[0]
    return Attribution(np.abs(g) if absolute else g, n_evaluations=1, signed=not absolute)


def gauss_legendre(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in [0, 1] and weights summing to 1, as captum's ``gausslegendre`` method."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return 0.5 * (nodes + 1.0), 0.5 * weights


def riemann_trapezoid(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    alphas = np.linspace(0.0, 1.0, n_steps)
    weights = np.full(n_steps, 1.0 / (n_steps - 1))
    weights[[0, -1]] *= 0.5
    return alphas, weights


_RULES = {"gausslegendre": gauss_legendre, "riemann_trapezoid": riemann_trapezoid}


@register_method(
    id="integrated_gradients", label="Integrated Gradients",
    description="Sums gradients along the straight path from a baseline (the modality's "
                "'absent' input) to the input; attributions add up to the score difference.",
    paper="Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017 "
          "(arXiv:1703.01365)",
    kind="gradient", specificity="model-specific", needs=("input_gradients",), signed=True,
    speed=30,
    params=(Param("n_steps", "Steps", "int", 50, minimum=4, maximum=512, step=1,
                  help="Points on the path (batched); more steps, smaller completeness error."),
            Param("baseline", "Baseline", "choice", "masked", choices=("masked", "zero"),
                  help="masked: the modality's masking value (silence at the dB floor for "
                       "audio, a blurred copy for X-rays); zero: an all-zero plane."),
            Param("rule", "Integration rule", "choice", "gausslegendre",
                  choices=tuple(_RULES), help="Quadrature along the path (captum's default "
                                              "is gausslegendre).")),
    caveats="Depends on the baseline: features equal to the baseline get no attribution. "
            "Signed: red supports the class, blue speaks against it.")
def integrated_gradients(model: ModelHandle, x: FloatArray, *, target: int, ctx: ExplainContext,
                         n_steps: int = 50, baseline: str = "masked",
                         rule: str = "gausslegendre") -> Attribution:
    """Integrated Gradients: (H, W) float32, signed; sums to about score(x) - score(baseline)."""
    base = masked_value(x, ctx.modality) if baseline == "masked" else np.zeros_like(x)
    alphas, weights = _RULES[rule](n_steps)
    delta = (x - base).astype(np.float32)
    total = np.zeros_like(x, dtype=np.float64)
    endpoint_scores = model.scores(np.stack([base, x]))[:, target]
    for start in range(0, n_steps, ctx.batch_size):
        a = alphas[start:start + ctx.batch_size].astype(np.float32)
        batch = base[None] + a[:, None, None] * delta[None]
        grads, _ = model.input_gradients(batch, np.full(len(a), target))
        total += np.tensordot(weights[start:start + ctx.batch_size], grads.astype(np.float64), axes=1)
        ctx.report(start + len(a), n_steps, "integrating gradients")
    attribution = (delta * total).astype(np.float32)
    gap = float(endpoint_scores[1] - endpoint_scores[0])
    return Attribution(attribution, n_evaluations=n_steps + 2,
                       extras={"completeness_error": float(attribution.sum() - gap),
                               "score_difference": gap})
