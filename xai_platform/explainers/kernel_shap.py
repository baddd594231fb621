"""SHAP over the modality's features, batched: Owen values (the default) or Kernel SHAP.

The partition estimator (``estimator="partition"``, the default) is :mod:`.owen`: shap's
Partition explainer over a spatial hierarchy of the features, deterministic. It replaced Kernel
SHAP as the default because at the default budget Kernel SHAP's ranking was mostly sampling
noise (two seeds agreed at rho 0.1-0.3 on the example inputs), while the partition estimator's
map is the same on every run and close to its fully refined map (docs/BENCHMARKS.md).

The kernel estimator's fixed estimator (``adaptive=False``) is shap's ``KernelExplainer`` with one background (the
modality's masked value): coalition sizes whose subsets all fit in the budget are enumerated
with their exact Shapley kernel weights, the rest are sampled in complementary pairs, and a
weighted least-squares fit under the efficiency constraint (attributions sum to
f(all) - f(none)) gives the values. With a budget covering all 2^M coalitions the result is the
exact Shapley value. It is written here, not called, because shap builds its samples in NumPy
with its global random state (neither batched on a GPU nor safe to seed per request);
``tests/test_explainers_reference.py`` checks it against ``shap.KernelExplainer`` and against
exact Shapley values.

The kernel estimator's adaptive variant (``adaptive=True``) computes the same values from fewer evaluations
(:mod:`.sampling`): null features get exactly 0 and leave the game, the remaining sizes are
enumerated or drawn stratified in complementary pairs, each size class keeps its exact kernel
mass (post-stratification), and the budget is spent in rounds that stop once the ranking of the
features is stable.
"""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np

from ..errors import ExplainerError
from ..models.handle import ModelHandle
from . import owen, sampling
from .perturbation import (evaluate_coalitions, features, masked_value, paint,
                           target_evaluator)
from .registry import Attribution, ExplainContext, FloatArray, Param, register_method

DEFAULT_EVALUATIONS = 500
"""The budget (cap) of model evaluations by default."""


def size_masses(m: int) -> np.ndarray:
    """Shapley kernel mass of each size class (s, m - s), s = 1..ceil((m - 1) / 2), summing to
    1: (ceil((m - 1) / 2),) float64."""
    n_sizes = int(np.ceil((m - 1) / 2))
    n_paired = (m - 1) // 2
    mass = np.array([(m - 1) / (s * (m - s)) for s in range(1, n_sizes + 1)])
    mass[:n_paired] *= 2
    return mass / mass.sum()


def kernel_coalitions(m: int, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions (n, m) bool and their kernel weights (n,), summing to 1, excluding the empty
    and the full coalition. ``n <= budget``."""
    if m < 2:
        return np.zeros((0, m), dtype=bool), np.zeros(0)
    n_sizes = int(np.ceil((m - 1) / 2))
    n_paired = (m - 1) // 2
    size_weight = size_masses(m)

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


WELL_CONDITIONED = 1e-4
"""The smallest ratio of the Cholesky factor's diagonal entries (about 1 / sqrt(condition
number) of the Gram matrix, so 1e-4 means a condition number under about 1e8 and errors
under about 1e-8) at which :func:`weighted_least_squares` trusts the normal
equations."""


def weighted_least_squares(design: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """argmin_b sum_i w_i (y_i - design_i @ b)^2: (p,) float64.

    Through the normal equations (a Cholesky factor of the p x p weighted Gram matrix: well
    under a millisecond for Kernel SHAP's ~500 x 127 problems) when they are well conditioned,
    else numpy's SVD-based ``lstsq`` (the minimum-norm solution when the coalitions do not
    determine every value). The SVD took 20 ms per solve on an idle machine, and 0.6 s in a
    profile of the audio CNN's SHAP bench under load (its forward passes: 0.9 s)."""
    n, p = design.shape
    if n >= p > 0:
        gram = design.T @ (weights[:, None] * design)
        try:
            factor = np.linalg.cholesky(gram)
        except np.linalg.LinAlgError:
            factor = None
        if factor is not None:
            diagonal = np.abs(np.diag(factor))
            if diagonal.min() > WELL_CONDITIONED * diagonal.max():
                from scipy.linalg import cho_solve

                return cho_solve((factor, True), design.T @ (weights * y))
    sw = np.sqrt(weights)[:, None]
    solution, *_ = np.linalg.lstsq(design * sw, y * sw[:, 0], rcond=None)
    return solution


def solve_shapley(coalitions: np.ndarray, weights: np.ndarray, values: np.ndarray,
                  f_none: float, f_all: float, *, ridge: float = 0.0) -> np.ndarray:
    """Weighted least squares for phi (M,) with sum(phi) = f_all - f_none.

    ``ridge`` > 0 adds ``lambda * |phi|^2`` with lambda = ridge * (mean diagonal of the weighted
    Gram matrix) * (M / n) * (the share of the values' variance a linear fit leaves unexplained,
    adjusted for its M - 1 coefficients; 1 when n <= M): it shrinks the noisy estimate from
    few coalitions and fades as n grows, and a game the linear fit explains exactly (an
    additive one) is not shrunk at all."""
    m = coalitions.shape[1]
    total = f_all - f_none
    if m == 1:
        return np.array([total])
    z = coalitions.astype(np.float64)
    y = values - f_none - z[:, -1] * total
    design = z[:, :-1] - z[:, -1:]
    phi_head = weighted_least_squares(design, y, weights)
    n = len(z)
    if ridge > 0 and n > 0:
        unexplained = 1.0
        spread = float(weights @ (y - np.average(y, weights=weights)) ** 2)
        if n > m and spread > 0:
            r2 = 1.0 - float(weights @ (y - design @ phi_head) ** 2) / spread
            unexplained = min(1.0, max(0.0, (1.0 - r2) * (n - 1) / (n - m)))
        gram = design.T @ (weights[:, None] * design)
        lam = ridge * np.trace(gram) / (m - 1) * m / n * unexplained
        if lam > 0:  # the penalty covers phi_head and phi_last = total - sum(phi_head)
            a = gram + lam * (np.eye(m - 1) + np.ones((m - 1, m - 1)))
            phi_head = np.linalg.solve(a, design.T @ (weights * y) + lam * total)
    return np.append(phi_head, total - phi_head.sum())


SHRINK = 3.0
"""The adaptive estimator's ``ridge`` (:func:`solve_shapley`). On the audio benchmark input
(audio-cnn, real_klettres_de_b.wav, 48 non-null features) it raised the mean rank correlation
of six seeds with converged Shapley values (25,800 evaluations of antithetic permutations) from
0.13 to 0.36 at 125 evaluations, 0.37 to 0.44 at 250, and left it at 0.49 at 500."""


def enumerated_classes(m: int, budget: int) -> int:
    """How many size classes (s, m - s), smallest first, Kernel SHAP enumerates whole within
    ``budget`` coalitions (a class is enumerated when its share of the remaining budget covers
    all its subsets)."""
    if m < 2:
        return 0
    mass, n_paired, done, remaining = size_masses(m), (m - 1) // 2, 0, budget
    for i in range(len(mass)):
        n_subsets = comb(m, i + 1) * (2 if i < n_paired else 1)
        left = mass[i:].sum()
        if left <= 0 or remaining * mass[i] / left < n_subsets - 1e-8:
            break
        remaining -= n_subsets
        done = i + 1
    return done


class PairedCoalitions:
    """The adaptive estimator's coalitions over ``m`` features: the size classes that fit in
    ``budget`` whole (exact weights), then a stream of complementary pairs whose sizes are drawn
    stratified (:func:`.sampling.stratified_choice`) and, within a class, without repeats. Each
    sampled class keeps its exact kernel mass, shared by the rows drawn from it."""

    def __init__(self, m: int, budget: int, rng: np.random.Generator) -> None:
        self.m, self.rng = m, rng
        self.mass = size_masses(m)
        self.done = enumerated_classes(m, budget)
        self.shift = float(rng.random())
        self.drawn = 0
        self.seen: set[bytes] = set()
        rows, weights = [], []
        for i in range(self.done):
            s = i + 1
            subsets = [np.isin(np.arange(m), c) for c in combinations(range(m), s)]
            paired = s != m - s
            n_rows = len(subsets) * (2 if paired else 1)
            for z in subsets:
                rows += [z, ~z] if paired else [z]
            weights += [self.mass[i] / n_rows] * n_rows
        self.fixed = np.array(rows, dtype=bool).reshape(-1, m)
        self.fixed_weights = np.array(weights)
        self.classes: list[int] = []  # class index of each sampled row

    def draw(self, n_pairs: int) -> np.ndarray:
        """The next ``n_pairs`` complementary pairs: (2 * n_pairs, m) bool."""
        probs = self.mass[self.done:]
        if n_pairs <= 0 or probs.sum() <= 0:
            return np.zeros((0, self.m), dtype=bool)
        picks = self.done + sampling.stratified_choice(probs, n_pairs, start=self.drawn,
                                                       shift=self.shift)
        self.drawn += n_pairs
        out = []
        for c in picks:
            s = int(c) + 1
            for _ in range(32):  # redraw a subset already drawn (small classes fill up)
                z = sampling.random_subsets(self.m, np.array([s]), self.rng)[0]
                if z.tobytes() not in self.seen:
                    break
            self.seen.update((z.tobytes(), (~z).tobytes()))
            out += [z, ~z]
            self.classes += [int(c), int(c)]
        return np.array(out, dtype=bool)

    def weights(self) -> np.ndarray:
        """Kernel weights of the fixed rows, then of every sampled row so far (n,)."""
        classes = np.array(self.classes, dtype=np.int64)
        counts = np.bincount(classes, minlength=len(self.mass)) if len(classes) else \
            np.zeros(len(self.mass))
        sampled = self.mass[classes] / np.maximum(counts[classes], 1)
        return np.concatenate([self.fixed_weights, sampled])


def adaptive_shapley(evaluate, active: np.ndarray, budget: int, rng: np.random.Generator, *,
                     batch_size: int, stop: bool = True) -> tuple[np.ndarray, int, dict]:
    """Shapley values (M,) of the game ``evaluate`` (coalitions (n, M) bool -> values (n,)
    float64) from at most ``budget`` evaluations (at least 2): 0 for every feature not in
    ``active`` (null players), Kernel SHAP over the others in rounds
    (:func:`.sampling.round_sizes`) until the ranking is :func:`.sampling.stable` (``stop``)
    or the budget is spent. Returns (phi, evaluations used, info)."""
    m, a = len(active), int(active.sum())
    idx = np.flatnonzero(active)

    def lift(z: np.ndarray) -> np.ndarray:
        full = np.zeros((len(z), m), dtype=bool)
        full[:, idx] = z
        return full

    ends = evaluate(np.array([np.zeros(m, bool), np.ones(m, bool)]))
    f_none, f_all = float(ends[0]), float(ends[1])
    phi = np.zeros(m)
    info = {"base_value": f_none, "full_value": f_all, "null_features": m - a, "rounds": 0,
            "stopped": "exact"}
    if a <= 1:
        phi[idx] = f_all - f_none
        return phi, 2, info
    if 2 ** a - 2 <= budget - 2:  # every coalition fits: the exact Shapley values
        rows, weights = kernel_coalitions(a, 2 ** a, rng)
        phi[idx] = solve_shapley(rows, weights, evaluate(lift(rows)), f_none, f_all)
        info["rounds"] = 1
        return phi, 2 + len(rows), info
    plan = PairedCoalitions(a, budget - 2, rng)
    rows, values = plan.fixed, evaluate(lift(plan.fixed)) if len(plan.fixed) else np.zeros(0)
    estimate, previous = None, None
    sizes = sampling.round_sizes(budget - 2 - len(plan.fixed), batch_size)
    info["stopped"] = "budget"
    for r, size in enumerate(sizes):
        new = plan.draw(size // 2)
        if len(new) == 0:
            break
        rows = np.concatenate([rows, new])
        values = np.concatenate([values, evaluate(lift(new))])
        previous, estimate = estimate, solve_shapley(rows, plan.weights(), values, f_none,
                                                     f_all, ridge=SHRINK)
        info["rounds"] = r + 1
        if (stop and previous is not None and r + 1 >= sampling.MIN_ROUNDS
                and sampling.stable(previous, estimate)):
            info["stopped"] = "stable"
            break
    if estimate is None:
        estimate = solve_shapley(rows, plan.weights(), values, f_none, f_all, ridge=SHRINK)
    phi[idx] = estimate
    return phi, 2 + len(rows), info


ESTIMATORS = ("partition", "kernel")


@register_method(
    id="shap", label="SHAP",
    description="Shapley-style values of the features: each feature's contribution to the class "
                "probability over coalitions of the others. By default Owen values over a "
                "spatial hierarchy of the features (shap's Partition explainer: neighbouring "
                "features form the coalitions, deterministic); or Kernel SHAP's Shapley "
                "values, sampled.",
    paper="Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017 "
          "(arXiv:1705.07874); Owen, Values of games with a priori unions, 1977",
    kind="perturbation", specificity="model-agnostic", uses_features=True, stochastic=True,
    stochastic_when=lambda params: params.get("estimator") == "kernel",
    signed=True, speed=60,
    params=(Param("n_evaluations", "Model evaluations", "int", DEFAULT_EVALUATIONS, minimum=16,
                  maximum=10000, step=16,
                  help="Coalitions evaluated (batched); at most this many for the partition "
                       "and the adaptive estimator."),
            Param("estimator", "Estimator", "choice", "partition", choices=ESTIMATORS,
                  help="partition: Owen values over a spatial hierarchy of the features, "
                       "refined where the effects are largest first (shap's Partition "
                       "explainer; no random numbers: the same map every run). kernel: "
                       "Kernel SHAP's Shapley values from sampled coalitions "
                       "(shap.KernelExplainer; seeded)."),
            Param("adaptive", "Adaptive sampling (kernel)", "bool", False,
                  help="Kernel estimator only: null features exact, stratified complementary "
                       "pairs, evaluated in rounds that stop once the ranking is stable; off: "
                       "the fixed Kernel SHAP sample of shap.KernelExplainer.")),
    caveats="Values depend on what 'absent' means (the masked value) and on the features; "
            "they sum to p(input) - p(all masked). Partition (default): Owen values, which "
            "treat neighbouring features as a coalition first, so a region's credit is "
            "shared inside it before it is split; where the budget runs out a region's "
            "credit is spread evenly over its features. At 500 evaluations its maps of the "
            "example inputs agree with the fully refined map at rho 0.77-0.98 "
            "(docs/BENCHMARKS.md), and every run gives the same map. Kernel: exact Shapley "
            "values only when every coalition fits in the budget; at 500 evaluations two "
            "seeds' maps agree with a rank correlation of only 0.1-0.3: most of the ranking "
            "is sampling noise. Measure it for your input with the comparison page's "
            "stability metric.")
def kernel_shap(model: ModelHandle, x: FloatArray, *, target: int, ctx: ExplainContext,
                n_evaluations: int = DEFAULT_EVALUATIONS, estimator: str = "partition",
                adaptive: bool = False, **segment_params) -> Attribution:
    """SHAP: (H, W) float32, signed; the values sum to p(x) - p(masked)."""
    if adaptive and estimator != "kernel":
        raise ExplainerError("Adaptive sampling is the kernel estimator's: set estimator to "
                             "'kernel', or turn adaptive sampling off (the partition estimator "
                             "draws no samples).")
    segments = features(x, ctx, segment_params)
    m = int(segments.max()) + 1
    baseline = masked_value(x, ctx.modality)
    if estimator == "partition" or adaptive:  # the estimators that evaluate in rounds
        evaluate = target_evaluator(model, x, baseline, segments, ctx, target=target,
                                    total=int(n_evaluations), what="evaluating coalitions")
        active = ~sampling.null_features(x, baseline, segments)
        budget = max(int(n_evaluations), 2)
        if estimator == "partition":
            live = np.flatnonzero(active)
            phi, n, info = owen.owen_values(evaluate, m, live,
                                            owen.spatial_hierarchy(segments, live), budget,
                                            batch_size=owen.ROUND)
            info["null_features"] = m - len(live)
        else:
            phi, n, info = adaptive_shapley(evaluate, active, budget, ctx.rng,
                                            batch_size=ctx.batch_size)
        return Attribution(paint(segments, phi), n_evaluations=n,
                           extras={"n_features": m, **info, "budget": int(n_evaluations),
                                   "segments": segments})
    coalitions, weights = kernel_coalitions(m, max(n_evaluations - 2, 0), ctx.rng)
    everything = np.concatenate([np.zeros((1, m), bool), np.ones((1, m), bool), coalitions])
    probs = evaluate_coalitions(model, x, baseline, segments, everything,
                                ctx, what="evaluating coalitions")[:, target]
    phi = solve_shapley(coalitions, weights, probs[2:].astype(np.float64), float(probs[0]),
                        float(probs[1]))
    return Attribution(paint(segments, phi), n_evaluations=len(everything),
                       extras={"n_features": m, "base_value": float(probs[0]),
                               "full_value": float(probs[1]), "segments": segments})
