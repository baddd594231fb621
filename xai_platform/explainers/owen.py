"""Owen values over a spatial hierarchy of the features: shap's Partition explainer, batched.

The features (superpixels, time-frequency patches) are joined bottom-up into a binary tree by
where they lie (Ward linkage of their centroids), so a node is a compact region. At each node
the two children play a two-player Shapley game, once with the rest of the parent's context
absent and once present, and the recursion descends into the children whose marginal effect is
largest first, until the budget is spent; a node left unexpanded shares its credit among its
features by their number. Fully expanded, this is the Owen value of the hierarchy (Owen,
"Values of games with a priori unions", 1977); the values sum to f(all) - f(none) at every
budget, features whose removal changes nothing get exactly 0, and no random numbers are drawn:
the same input, model and budget give the same map.

It is shap's ``PartitionExplainer.owen`` (the algorithm of shap's image explanations) written
over the platform's batched coalition evaluator, with ties in the expansion order broken by
arrival instead of ``np.random.randn``; ``tests/test_explainers_reference.py`` checks it against
``shap.PartitionExplainer`` on the same game and hierarchy.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import count

import numpy as np
import numpy.typing as npt

Game = Callable[[npt.NDArray[np.bool_]], npt.NDArray[np.float64]]

ROUND = 16
"""Evaluations per round of refinement (8 nodes, two coalitions each) in the app, whatever the
model's batch size: which nodes a round refines depends on the rounds before it, so a fixed
round keeps the map the same on every device and batch size. Smaller rounds follow the largest
effects more closely: at a quarter of the default budget on the audio bench input
fake_espeak_it_ba.wav the map agreed with the 4x map at rho 0.83 in rounds of 16 and 0.66 in
rounds of 32 (the audio models' batch size)."""


def spatial_hierarchy(segments: np.ndarray, features: np.ndarray) -> np.ndarray:
    """scipy linkage matrix (len(features) - 1, 4) joining ``features`` (indices into the labels
    of ``segments`` (H, W)) by Ward linkage of their centroids, in fractions of the plane's
    height and width. Leaf i of the tree is ``features[i]``."""
    from scipy.cluster.hierarchy import linkage

    if len(features) < 2:
        return np.zeros((0, 4))
    m = int(segments.max()) + 1
    rows, cols = np.indices(segments.shape)
    area = np.maximum(np.bincount(segments.ravel(), minlength=m), 1)
    centroid = np.stack([np.bincount(segments.ravel(), rows.ravel() / segments.shape[0], m),
                         np.bincount(segments.ravel(), cols.ravel() / segments.shape[1], m)],
                        axis=1) / area[:, None]
    return linkage(centroid[features], method="ward")


def owen_values(evaluate: Game, m: int, features: np.ndarray, tree: np.ndarray, budget: int,
                *, batch_size: int) -> tuple[np.ndarray, int, dict]:
    """Owen values (m,) of the game ``evaluate`` (coalitions (n, m) bool -> values (n,)) over
    the hierarchy ``tree`` (:func:`spatial_hierarchy` of ``features``; every other feature is a
    null player and gets 0) from at most ``budget`` evaluations (at least 2; as shap's
    ``max_evals`` for an even budget). Returns
    (values, evaluations used, info: base and full value, nodes expanded, whether the tree was
    expanded to its leaves)."""
    a = len(features)
    ends = evaluate(np.array([np.zeros(m, bool), np.ones(m, bool)]))
    f00, f11 = float(ends[0]), float(ends[1])
    phi = np.zeros(m)
    info = {"base_value": f00, "full_value": f11, "expanded": 0, "complete": True}
    if a == 0:
        return phi, 2, info
    if a == 1:
        phi[features[0]] = f11 - f00
        return phi, 2, info
    n_nodes = 2 * a - 1
    members = np.zeros((n_nodes, m), dtype=bool)
    members[np.arange(a), features] = True
    size = np.ones(n_nodes, dtype=np.int64)
    for k, (left, right, _, _) in enumerate(tree):
        members[a + k] = members[int(left)] | members[int(right)]
        size[a + k] = size[int(left)] + size[int(right)]
    credit = np.zeros(n_nodes)
    order = count()
    queue: list = [(0.0, next(order), np.zeros(m, bool), f00, f11, n_nodes - 1, 1.0)]
    limit, used = budget - 2, 0
    while queue:
        if used + 2 > limit:  # no budget for another node: each keeps its marginal effect
            for _, _, _, lo, hi, node, weight in queue:
                credit[node] += (hi - lo) * weight
            info["complete"] = False
            break
        work, masks = [], []
        while queue and len(masks) < batch_size and used + len(masks) + 2 <= limit:
            _, _, m00, lo, hi, node, weight = heapq.heappop(queue)
            if node < a:
                credit[node] += (hi - lo) * weight
                continue
            left, right = (int(i) for i in tree[node - a, :2])
            m10, m01 = m00 | members[left], m00 | members[right]
            work.append((m00, m10, m01, lo, hi, left, right, weight / 2))
            masks += [m10, m01]
        if not work:  # only leaves were popped
            continue
        out = evaluate(np.array(masks))
        used += len(masks)
        info["expanded"] += len(work)
        for i, (m00, m10, m01, lo, hi, left, right, weight) in enumerate(work):
            f10, f01 = float(out[2 * i]), float(out[2 * i + 1])
            for start, f_start, f_end, child in ((m00, lo, f10, left), (m00, lo, f01, right),
                                                 (m01, f01, hi, left), (m10, f10, hi, right)):
                heapq.heappush(queue, (-abs(f_end - f_start) * weight, next(order), start,
                                       f_start, f_end, child, weight))
    for node in range(n_nodes - 1, a - 1, -1):  # hand each node's credit down by feature count
        left, right = (int(i) for i in tree[node - a, :2])
        credit[left] += credit[node] * size[left] / size[node]
        credit[right] += credit[node] * size[right] / size[node]
    phi[features] = credit[:a]
    return phi, 2 + used, info
