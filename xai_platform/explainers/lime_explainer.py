"""LIME over the modality's features, with batched (on-GPU where possible) perturbations.

Sampling and the surrogate follow ``lime_image.LimeImageExplainer``: coalitions drawn
uniformly from {0, 1}^M with the first one complete, cosine distance to the complete
coalition, kernel sqrt(exp(-d^2 / width^2)), a ridge surrogate fitted by the lime library's
own :class:`lime.lime_base.LimeBase`. What differs is only how perturbed inputs are built and
evaluated: in batches, without copying the image per sample.

By default (``sampling="orthogonal"``) the coalitions are not independent draws but a
randomised orthogonal array of the same distribution: the columns of a Sylvester-Hadamard
matrix, a random one per feature with a random flip, each block followed by its fold-over
(every coalition's complement). Every feature is then present in exactly half of each block,
every pair of features is independent within it, and a feature's main effect is not confounded
with any two-feature interaction (Owen, "Orthogonal arrays for computer experiments,
integration and visualization", Statistica Sinica 1992; the fold-over gives resolution IV). Each
coalition is still uniform on {0, 1}^M, so the surrogate is estimated with less noise from the
same number of evaluations. ``sampling="uniform"`` is lime_image's independent sample.

The adaptive estimator (``adaptive=True``) aims at the same surrogate (the weighted ridge fit over all
2^M coalitions, which the fixed sample approximates) from fewer evaluations (:mod:`.sampling`):
the null features (removing them changes nothing) are averaged out of the fit in closed form
instead of sampled, and the budget is spent in rounds that stop once the ranking of the
features is stable. (Complementary pairs and stratified sizes, which help Kernel SHAP, did not
help LIME on the X-ray benchmark input and are not used: docs/BENCHMARKS.md.)
"""

from __future__ import annotations

from math import comb

import numpy as np

from ..models.handle import ModelHandle
from . import sampling as rounds  # "sampling" is also the sampler parameter of lime()
from .perturbation import (evaluate_coalitions, features, masked_value, paint,
                           target_evaluator)
from .registry import Attribution, ExplainContext, FloatArray, Param, register_method

SAMPLINGS = ("orthogonal", "uniform")
DEFAULT_SAMPLES = 1000
"""The budget (cap) of perturbed samples by default."""
RIDGE_ALPHA = 1.0
"""lime's surrogate: ``Ridge(alpha=1, fit_intercept=True)`` (lime.lime_base.LimeBase)."""


def lime_kernel(width: float):
    return lambda d: np.sqrt(np.exp(-(d ** 2) / width ** 2))


def cosine_distance_to_full(coalitions: np.ndarray) -> np.ndarray:
    """Cosine distance of each 0/1 row to the all-ones row (1 for the empty coalition)."""
    z = coalitions.astype(np.float64)
    norms = np.linalg.norm(z, axis=1) * np.sqrt(z.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = np.where(norms > 0, z.sum(axis=1) / norms, 0.0)
    return 1.0 - sim


def orthogonal_coalitions(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` coalitions (n, m) bool from a randomised fold-over orthogonal array (module
    docstring): blocks of 2 * 2^k rows (2^k > m), each row uniform on {0, 1}^m, the blocks'
    rows shuffled, the last block cut to fit; the first coalition is complete (lime's)."""
    from scipy.linalg import hadamard

    size = 2
    while size <= m:
        size *= 2
    columns = hadamard(size)[:, 1:] > 0  # balanced, pairwise orthogonal
    blocks, rows = [], 0
    while rows < n:
        block = columns[:, rng.choice(size - 1, size=m, replace=False)] ^ (rng.random(m) < 0.5)
        block = np.concatenate([block, ~block])
        blocks.append(block[rng.permutation(len(block))])
        rows += len(block)
    out = np.concatenate(blocks)[:n] if blocks else np.zeros((0, m), dtype=bool)
    if n:
        out[0] = True
    return out


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


def weighted_ridge(design: np.ndarray, y: np.ndarray, weights: np.ndarray, penalty: np.ndarray
                   ) -> tuple[np.ndarray, float, float]:
    """sklearn's ``Ridge(fit_intercept=True).fit(design, y, sample_weight=weights)`` with a
    per-coefficient penalty (M,): (coefficients (M,), intercept, weighted R^2)."""
    w = weights / weights.sum()
    mean_x, mean_y = w @ design, float(w @ y)
    xc, yc = design - mean_x, y - mean_y
    gram = xc.T @ (weights[:, None] * xc) + np.diag(penalty)
    beta = np.linalg.solve(gram, xc.T @ (weights * yc))
    residual = yc - xc @ beta
    total = float(weights @ yc ** 2)
    r2 = 1.0 - float(weights @ residual ** 2) / total if total > 0 else 0.0
    return beta, mean_y - float(mean_x @ beta), r2


def averaged_fit(active_rows: np.ndarray, values: np.ndarray, n_null: int, *,
                 kernel_width: float) -> tuple[np.ndarray, float, float, float]:
    """lime's weighted ridge surrogate when ``n_null`` features cannot change the model's output,
    with those features' bits averaged out in closed form (each evaluated row stands for all
    2^n_null settings of them, weighted by their probability under LIME's uniform sampling).

    active_rows: (n, A) bool; values: (n,). By symmetry the null features share one coefficient:
    it multiplies J, the number of them kept, and carries the penalty of all n_null.
    Returns (coefficients (A,), null coefficient, intercept, weighted R^2)."""
    n, a = active_rows.shape
    m = a + n_null
    j = np.arange(n_null + 1)
    p_j = np.array([comb(n_null, k) for k in j], dtype=np.float64) / 2.0 ** n_null
    k = active_rows.sum(axis=1)
    kept = k[:, None] + j[None, :]  # (n, n_null + 1): coalition sizes
    distance = 1.0 - np.sqrt(kept / m)
    weights = (lime_kernel(kernel_width)(distance) * p_j[None, :]).ravel()
    design = np.concatenate([np.repeat(active_rows.astype(np.float64), n_null + 1, axis=0),
                             np.tile(j, n)[:, None].astype(np.float64)], axis=1)
    y = np.repeat(values.astype(np.float64), n_null + 1)
    if n_null == 0:
        design, penalty = design[:, :a], np.full(a, RIDGE_ALPHA)
    else:
        penalty = np.r_[np.full(a, RIDGE_ALPHA), RIDGE_ALPHA * n_null]
    beta, intercept, r2 = weighted_ridge(design, y, weights, penalty)
    return beta[:a], (float(beta[a]) if n_null else 0.0), intercept, r2


def adaptive_lime(evaluate, active: np.ndarray, budget: int, rng: np.random.Generator, *,
                  kernel_width: float, batch_size: int, stop: bool = True
                  ) -> tuple[np.ndarray, int, dict]:
    """LIME's surrogate weights (M,) from at most ``budget`` evaluations of ``evaluate``
    (coalitions (n, M) bool -> values (n,) float64): the complete coalition, then lime's uniform
    coalitions over the ``active`` features (the null ones averaged out, :func:`averaged_fit`),
    in rounds (:func:`.sampling.round_sizes`) until the ranking is :func:`.sampling.stable`
    (``stop``) or the budget is spent. Returns (weights, evaluations used, info)."""
    m, a = len(active), int(active.sum())
    idx = np.flatnonzero(active)
    n_null = m - a
    rows = np.ones((1, a), dtype=bool)
    values = evaluate(np.ones((1, m), dtype=bool))
    info = {"null_features": n_null, "rounds": 0, "stopped": "budget"}
    weights = np.zeros(m)
    estimate = previous = None
    intercept, r2 = float(values[0]), 0.0
    if a == 0:
        return weights, 1, {**info, "stopped": "exact", "intercept": intercept, "surrogate_r2": r2}
    for r, size in enumerate(rounds.round_sizes(budget - 1, batch_size)):
        new = rng.integers(0, 2, size=(size, a)).astype(bool)
        lifted = np.zeros((size, m), dtype=bool)
        lifted[:, idx] = new
        rows = np.concatenate([rows, new])
        values = np.concatenate([values, evaluate(lifted)])
        coef, null_coef, intercept, r2 = averaged_fit(rows, values, n_null,
                                                      kernel_width=kernel_width)
        previous, estimate = estimate, coef
        weights = np.full(m, null_coef)
        weights[idx] = coef
        info["rounds"] = r + 1
        if (stop and previous is not None and r + 1 >= rounds.MIN_ROUNDS
                and rounds.stable(previous, estimate)):
            info["stopped"] = "stable"
            break
    return weights, len(rows), {**info, "intercept": intercept, "surrogate_r2": r2}


@register_method(
    id="lime", label="LIME",
    description="Fits a weighted linear model to the classifier's answers on many copies of the "
                "input with random features removed; a feature's weight is its local effect.",
    paper="Ribeiro et al., \"Why Should I Trust You?\", KDD 2016 (arXiv:1602.04938)",
    kind="perturbation", specificity="model-agnostic", uses_features=True, stochastic=True,
    signed=True, speed=70,
    params=(Param("num_samples", "Samples", "int", DEFAULT_SAMPLES, minimum=50, maximum=10000,
                  step=50, help="Perturbed copies evaluated (batched); adaptive: at most this "
                                "many."),
            Param("kernel_width", "Kernel width", "float", 0.25, minimum=0.01, maximum=5.0,
                  step=0.01, help="Locality of the surrogate (lime_image's default 0.25)."),
            Param("sampling", "Sampling", "choice", "orthogonal", choices=SAMPLINGS,
                  help="orthogonal: a randomised fold-over orthogonal array (each feature in "
                       "half the samples, pairs balanced: less noise from the same samples); "
                       "uniform: lime_image's independent draws."),
            Param("adaptive", "Adaptive sampling", "bool", False,
                  help="Null features averaged out exactly, samples evaluated in rounds that "
                       "stop once the ranking is stable (uniform draws); off: one fixed "
                       "sample.")),
    caveats="Features are the modality's (superpixels follow pixel similarity, not anatomy; "
            "audio uses time-frequency patches); the picture changes with the seed, the feature "
            "size and the number of samples: at 1,000 samples two seeds' maps of the shipped "
            "models' example inputs agree with a rank correlation of 0.6-0.9 with the default "
            "orthogonal sampling (0.45-0.9 with lime_image's independent draws; "
            "docs/BENCHMARKS.md), so read the strongest features, not the whole ranking, and "
            "measure it for your input with the comparison page's stability metric.")
def lime(model: ModelHandle, x: FloatArray, *, target: int, ctx: ExplainContext,
         num_samples: int = DEFAULT_SAMPLES, kernel_width: float = 0.25,
         sampling: str = "orthogonal", adaptive: bool = False,
         **segment_params) -> Attribution:
    """LIME: (H, W) float32, signed (the surrogate's weight of each pixel's feature)."""
    segments = features(x, ctx, segment_params)
    m = int(segments.max()) + 1
    baseline = masked_value(x, ctx.modality)
    if adaptive:
        evaluate = target_evaluator(model, x, baseline, segments, ctx, target=target,
                                    total=int(num_samples), what="evaluating samples")

        active = ~rounds.null_features(x, baseline, segments)
        weights, n, info = adaptive_lime(evaluate, active, int(num_samples), ctx.rng,
                                         kernel_width=kernel_width, batch_size=ctx.batch_size)
        return Attribution(paint(segments, weights), n_evaluations=n,
                           extras={"n_features": m, **info, "budget": int(num_samples),
                                   "segments": segments})
    if sampling == "orthogonal":
        coalitions = orthogonal_coalitions(int(num_samples), m, ctx.rng)
    else:
        coalitions = ctx.rng.integers(0, 2, size=(num_samples, m)).astype(bool)
        coalitions[0] = True
    probabilities = evaluate_coalitions(model, x, baseline, segments,
                                        coalitions, ctx, what="evaluating samples")
    weights, intercept, r2 = fit_surrogate(coalitions, probabilities, target,
                                           kernel_width=kernel_width, seed=ctx.seed)
    return Attribution(paint(segments, weights), n_evaluations=num_samples,
                       extras={"n_features": m, "surrogate_r2": r2, "intercept": intercept,
                               "segments": segments})
