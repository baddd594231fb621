"""Kernel SHAP over the modality's features, batched, seeded.

The estimator is shap's ``KernelExplainer`` with one background (the modality's masked value):
coalition sizes whose subsets all fit in the budget are enumerated with their exact Shapley
kernel weights, the rest are sampled in complementary pairs, and a weighted least-squares fit
under the efficiency constraint (attributions sum to f(all) - f(none)) gives the values. With
a budget covering all 2^M coalitions the result is the exact Shapley value. It is written here,
not called, because shap builds its samples in NumPy with its global random state (neither
batched on a GPU nor safe to seed per request); ``tests/test_explainers_reference.py`` checks it
against ``shap.KernelExplainer`` and against exact Shapley values.
"""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np

from ..models.handle import ModelHandle
from .perturbation import evaluate_coalitions, features, masked_value, paint
from .registry import Attribution, ExplainContext, FloatArray, Param, register_method


def kernel_coalitions(m: int, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions (n, m) bool and their kernel weights (n,), summing to 1, excluding the empty
    and the full coalition. ``n <= budget``."""
    if m < 2:
        return np.zeros((0, m), dtype=bool), np.zeros(0)
    n_sizes = int(np.ceil((m - 1) / 2))
    n_paired = (m - 1) // 2
    size_weight = np.array([(m - 1) / (s * (m - s)) for s in range(1, n_sizes + 1)])
    size_weight[:n_paired] *= 2
    size_weight /= size_weight.sum()

    rows: list[np.ndarray] = []
    weights: list[float] = []
    remaining = budget
    left = size_weight.copy()
    done = 0
    for i, s in enumerate(range(1, n_sizes + 1)):
        n_subsets = comb(m, s) * (2 if i < n_paired else 1)
        if left[i:].sum() <= 0 or remaining * left[i] / left[i:].sum() < n_subsets - 1e-8:
            break
        w = size_weight[i] / n_subsets
        for subset in combinations(range(m), s):
            z = np.zeros(m, dtype=bool)
            z[list(subset)] = True
            rows.append(z)
            weights.append(w)
            if i < n_paired:
                rows.append(~z)
                weights.append(w)
        remaining -= n_subsets
        done = i + 1
    left_mass = size_weight[done:].sum()
    if done < n_sizes and remaining >= 2 and left_mass > 0:
        probs = size_weight[done:] / left_mass
        n_pairs = remaining // 2
        sampled: dict[bytes, int] = {}
        pool: list[np.ndarray] = []
        for _ in range(n_pairs):
            s = done + 1 + int(rng.choice(len(probs), p=probs))
            z = np.zeros(m, dtype=bool)
            z[rng.choice(m, size=s, replace=False)] = True
            for row in (z, ~z):
                key = row.tobytes()
                if key in sampled:
                    sampled[key] += 1
                else:
                    sampled[key] = 1
                    pool.append(row)
        total = sum(sampled.values())
        for row in pool:
            rows.append(row)
            weights.append(left_mass * sampled[row.tobytes()] / total)
    return np.array(rows, dtype=bool).reshape(-1, m), np.array(weights)


def solve_shapley(coalitions: np.ndarray, weights: np.ndarray, values: np.ndarray,
                  f_none: float, f_all: float) -> np.ndarray:
    """Weighted least squares for phi (M,) with sum(phi) = f_all - f_none."""
    m = coalitions.shape[1]
    total = f_all - f_none
    if m == 1:
        return np.array([total])
    z = coalitions.astype(np.float64)
    y = values - f_none - z[:, -1] * total
    design = z[:, :-1] - z[:, -1:]
    sw = np.sqrt(weights)[:, None]
    phi_head, *_ = np.linalg.lstsq(design * sw, y * sw[:, 0], rcond=None)
    return np.append(phi_head, total - phi_head.sum())


@register_method(
    id="shap", label="SHAP (Kernel)",
    description="Shapley values of the features: each feature's average contribution to the "
                "class probability over coalitions of the others, estimated with Kernel SHAP.",
    paper="Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017 "
          "(arXiv:1705.07874)",
    kind="perturbation", specificity="model-agnostic", uses_features=True, stochastic=True,
    signed=True, speed=60,
    params=(Param("n_evaluations", "Model evaluations", "int", 500, minimum=16, maximum=10000,
                  step=16, help="Coalitions evaluated (batched)."),),
    caveats="Values depend on what 'absent' means (the masked value) and on the features; "
            "sums to p(input) - p(all masked). Sampled: exact only when every coalition fits "
            "in the budget.")
def kernel_shap(model: ModelHandle, x: FloatArray, *, target: int, ctx: ExplainContext,
                n_evaluations: int = 500, **segment_params) -> Attribution:
    """Kernel SHAP: (H, W) float32, signed; the values sum to p(x) - p(masked)."""
    segments = features(x, ctx, segment_params)
    m = int(segments.max()) + 1
    coalitions, weights = kernel_coalitions(m, max(n_evaluations - 2, 0), ctx.rng)
    everything = np.concatenate([np.zeros((1, m), bool), np.ones((1, m), bool), coalitions])
    probs = evaluate_coalitions(model, x, masked_value(x, ctx.modality), segments, everything,
                                ctx, what="SHAP: evaluating coalitions")[:, target]
    phi = solve_shapley(coalitions, weights, probs[2:].astype(np.float64), float(probs[0]),
                        float(probs[1]))
    return Attribution(paint(segments, phi), n_evaluations=len(everything),
                       extras={"n_features": m, "base_value": float(probs[0]),
                               "full_value": float(probs[1]), "segments": segments})
