"""LIME over the modality's features, with batched (on-GPU where possible) perturbations.

Sampling and the surrogate follow ``lime_image.LimeImageExplainer``: coalitions drawn
uniformly from {0, 1}^M with the first one complete, cosine distance to the complete
coalition, kernel sqrt(exp(-d^2 / width^2)), a ridge surrogate fitted by the lime library's
own :class:`lime.lime_base.LimeBase`. What differs is only how perturbed inputs are built and
evaluated: in batches, without copying the image per sample.
"""

from __future__ import annotations

import numpy as np

from ..models.handle import ModelHandle
from .perturbation import evaluate_coalitions, features, masked_value, paint
from .registry import Attribution, ExplainContext, FloatArray, Param, register_method


def lime_kernel(width: float):
    return lambda d: np.sqrt(np.exp(-(d ** 2) / width ** 2))


def cosine_distance_to_full(coalitions: np.ndarray) -> np.ndarray:
    """Cosine distance of each 0/1 row to the all-ones row (1 for the empty coalition)."""
    z = coalitions.astype(np.float64)
    norms = np.linalg.norm(z, axis=1) * np.sqrt(z.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = np.where(norms > 0, z.sum(axis=1) / norms, 0.0)
    return 1.0 - sim


def fit_surrogate(coalitions: np.ndarray, probabilities: np.ndarray, target: int, *,
                  kernel_width: float, seed: int) -> tuple[np.ndarray, float, float]:
    """Weights (M,), intercept and R^2 of lime's weighted ridge surrogate for ``target``."""
    from lime.lime_base import LimeBase

    distances = cosine_distance_to_full(coalitions)
    base = LimeBase(lime_kernel(kernel_width), random_state=np.random.RandomState(seed))
    m = coalitions.shape[1]
    intercept, local_exp, score, _ = base.explain_instance_with_data(
        coalitions.astype(np.float64), probabilities.astype(np.float64), distances, target,
        num_features=m, feature_selection="none")
    weights = np.zeros(m, dtype=np.float64)
    for feature, weight in local_exp:
        weights[feature] = weight
    return weights, float(intercept), float(score)


@register_method(
    id="lime", label="LIME",
    description="Fits a weighted linear model to the classifier's answers on many copies of the "
                "input with random features removed; a feature's weight is its local effect.",
    paper="Ribeiro et al., \"Why Should I Trust You?\", KDD 2016 (arXiv:1602.04938)",
    kind="perturbation", specificity="model-agnostic", uses_features=True, stochastic=True,
    signed=True, speed=70,
    params=(Param("num_samples", "Samples", "int", 1000, minimum=50, maximum=10000, step=50,
                  help="Perturbed copies evaluated (batched)."),
            Param("kernel_width", "Kernel width", "float", 0.25, minimum=0.01, maximum=5.0,
                  step=0.01, help="Locality of the surrogate (lime_image's default 0.25).")),
    caveats="Features are the modality's (superpixels follow pixel similarity, not anatomy; "
            "audio uses time-frequency patches); the picture changes with the seed, the feature "
            "size and the number of samples.")
def lime(model: ModelHandle, x: FloatArray, *, target: int, ctx: ExplainContext,
         num_samples: int = 1000, kernel_width: float = 0.25, **segment_params) -> Attribution:
    """LIME: (H, W) float32, signed (the surrogate's weight of each pixel's feature)."""
    segments = features(x, ctx, segment_params)
    m = int(segments.max()) + 1
    coalitions = ctx.rng.integers(0, 2, size=(num_samples, m)).astype(bool)
    coalitions[0] = True
    probabilities = evaluate_coalitions(model, x, masked_value(x, ctx.modality), segments,
                                        coalitions, ctx, what="LIME: evaluating samples")
    weights, intercept, r2 = fit_surrogate(coalitions, probabilities, target,
                                           kernel_width=kernel_width, seed=ctx.seed)
    return Attribution(paint(segments, weights), n_evaluations=num_samples,
                       extras={"n_features": m, "surrogate_r2": r2, "intercept": intercept,
                               "segments": segments})
