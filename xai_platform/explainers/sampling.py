"""What the adaptive LIME and Kernel SHAP estimators share: null features, stratified draws of
coalition sizes, and the stopping rule.

* **Null features** are free: a feature whose pixels already equal the masked value is not
  changed by removing it, so the model cannot tell whether it is kept. Kernel SHAP gives it
  exactly 0 (the null-player axiom) and plays the game over the other features only; LIME
  averages it out of its surrogate in closed form (:mod:`.lime_explainer`). On audio, every
  patch of silence or padding at the dB floor is one (about two thirds of the patches of a
  short word).
* **Stratified sizes**: the size of each sampled coalition comes from a randomly shifted
  van der Corput sequence through the size distribution's inverse CDF, so every prefix of the
  stream holds each size in close to its expected share (Owen, Monte Carlo theory, methods and
  examples, 2013, ch. 10), and each coalition comes with its complement (antithetic pairs,
  Covert & Lee, Improving KernelSHAP, AISTATS 2021).
* **Stopping rule** (:func:`stable`): evaluate in rounds, stop when two successive estimates rank
  the features alike (Spearman >= :data:`STOP_SPEARMAN`) and agree on the top
  :data:`STOP_TOP_K` features, or when the budget is spent.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

STOP_SPEARMAN = 0.99
"""Successive estimates must rank the (non-null) features with at least this Spearman rho."""
STOP_TOP_K = 5
"""... and hold the same set of this many top features (largest values first)."""
MIN_ROUNDS = 3
"""Rounds evaluated before the rule may stop (two comparisons agreeing in a row)."""
ROUNDS = 8
"""The budget is spent in about this many rounds (each a whole number of batches)."""


def null_features(x: np.ndarray, baseline: np.ndarray, segments: np.ndarray) -> npt.NDArray[np.bool_]:
    """(M,) bool: features whose every pixel of ``x`` equals ``baseline`` (removing them leaves
    the input unchanged). x, baseline, segments: (H, W)."""
    m = int(segments.max()) + 1
    changed = np.bincount(segments.ravel(), weights=(x != baseline).ravel(), minlength=m)
    return changed == 0


def van_der_corput(n: int, start: int = 0) -> npt.NDArray[np.float64]:
    """Base-2 radical inverses of start..start+n-1, in [0, 1)."""
    k = np.arange(start, start + n, dtype=np.uint64)
    out = np.zeros(n)
    scale = 0.5
    while np.any(k):
        out += scale * (k & np.uint64(1))
        k >>= np.uint64(1)
        scale /= 2
    return out


def stratified_choice(probs: np.ndarray, n: int, *, start: int, shift: float) -> npt.NDArray[np.int64]:
    """Indices into ``probs`` for draws ``start..start+n-1`` of a shifted van der Corput stream:
    any prefix of the stream takes each index close to ``probs`` of the time."""
    u = (van_der_corput(n, start) + shift) % 1.0
    cdf = np.cumsum(probs) / np.sum(probs)
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(probs) - 1).astype(np.int64)


def random_subsets(m: int, sizes: np.ndarray, rng: np.random.Generator) -> npt.NDArray[np.bool_]:
    """One uniformly random subset of ``range(m)`` per entry of ``sizes``: (n, m) bool."""
    keys = rng.random((len(sizes), m))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    return ranks < np.asarray(sizes)[:, None]


def stable(previous: np.ndarray, current: np.ndarray, *, min_spearman: float = STOP_SPEARMAN,
           top_k: int = STOP_TOP_K) -> bool:
    """Whether two successive per-feature estimates (M,) rank the features alike: Spearman
    >= ``min_spearman`` and the same ``top_k`` largest features."""
    from ..evaluation.metrics import spearman  # here: metrics imports explainers

    k = min(top_k, len(current))
    top = set(np.argsort(-previous, kind="stable")[:k]) == set(np.argsort(-current, kind="stable")[:k])
    return top and spearman(previous, current) >= min_spearman


def round_sizes(budget: int, batch_size: int, first: int = 0) -> list[int]:
    """How many evaluations each round takes: ``first`` (the fixed rows), then about
    ``budget / ROUNDS``, rounded up to whole batches, until ``budget`` is spent."""
    step = max(batch_size, int(np.ceil(budget / ROUNDS / batch_size)) * batch_size)
    sizes = [first] if first else []
    left = budget - first
    while left > 0:
        sizes.append(min(step, left))
        left -= sizes[-1]
    return sizes
