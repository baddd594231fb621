"""Metrics for one explanation: faithfulness, sanity, stability, agreement and localisation.

Every map is a heatmap ``(H, W)`` over the model's feature plane. **Ordering** (used by the
deletion and insertion curves, the top-k sets and the pointing game): pixels by value,
largest first, which puts the strongest evidence *for* the class first for unsigned maps
(magnitudes) and signed maps (positive = for) alike; ties keep row-major order, so the same map
always gives the same order.

**Mass** (region and lung shares): the positive part of a signed map, the magnitude of an
unsigned one. A map with no mass carries no information and counts as uniform, i.e. a share
equal to the region's area (chance), so every metric stays finite.

**Rank correlation** is Spearman's rho with average ranks for ties; when a map is constant its
ranking is undefined: two constant maps count as identical (1.0), one constant map as
unrelated (0.0).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import explainers
from ..explainers.perturbation import masked_value
from ..models.handle import ModelHandle

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

ExplainFn = Callable[[ModelHandle, FloatArray, int], np.ndarray]
"""A plain explainer, ``explain_fn(model, x (H, W), target) -> heatmap (H, W)``."""
Method = str | ExplainFn

RANDOMIZE_LAYERS = 3
"""How many top parameterised layers the randomisation test re-initialises by default: the
classifier and the last convolution with its normalisation. With the classifier alone (1),
Grad-CAM, saliency and IG keep rank correlations of 0.8-0.9 on the trained audio CNN: their maps
are dominated by the last feature maps, which a new classifier only re-weights."""
RANDOMIZATION_THRESHOLD = 0.5
"""The randomisation test passes when |rho| between the trained and the randomised model's maps,
and |rho| between their magnitudes, are both below this: the map changed a lot when what the
model learned was destroyed (a sign flip alone does not count as a change)."""
MIN_LUNG_SHARE = 0.5
"""X-ray focus flags a map with less than this share of its mass inside the lung fields."""
MAX_BORDER_SHARE = 0.5
"""... or with more than this share on the image's border strip."""


# --- shared helpers --------------------------------------------------------------------------

def _plane(a: np.ndarray, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty (H, W) array, got shape {a.shape}")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)}")
    if a.dtype != bool and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values")
    return a


def ranking(heatmap: np.ndarray) -> IntArray:
    """Flat pixel indices, strongest evidence for the class first (see the module docstring).

    heatmap: (H, W). Returns (H*W,) int64; ties in row-major order.
    """
    flat = _plane(heatmap, "heatmap").astype(np.float64).ravel()
    return np.argsort(-flat, kind="stable").astype(np.int64)


def top_k_mask(heatmap: np.ndarray, k: int | float) -> BoolArray:
    """The ``k`` first pixels of :func:`ranking` (a float in (0, 1] is a fraction of the map).

    Returns (H, W) bool with exactly ``k`` pixels set (a fraction rounds up, at least one)."""
    h = _plane(heatmap, "heatmap")
    count = int(np.ceil(k * h.size)) if isinstance(k, float) else int(k)
    count = min(max(count, 1), h.size)
    mask = np.zeros(h.size, dtype=bool)
    mask[ranking(h)[:count]] = True
    return mask.reshape(h.shape)


def rank_average(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Ranks 1..n of the flattened ``values``, ties sharing their average rank (as
    ``scipy.stats.rankdata``, without importing scipy.stats, which is slow to load)."""
    a = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(a, kind="stable")
    ordered = a[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # where each group of ties starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], a.size]
    ranks = np.empty(a.size)
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps of the same shape, in [-1, 1] (constant maps:
    see the module docstring)."""
    ra, rb = rank_average(a), rank_average(b)
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return 1.0 if sa == sb else 0.0
    return float(np.clip(np.mean((ra - ra.mean()) * (rb - rb.mean())) / (sa * sb), -1.0, 1.0))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two maps after min-max scaling each to [0, 1], in [-1, 1]
    (Wang et al., Image Quality Assessment: From Error Visibility to Structural Similarity,
    IEEE TIP 2004; used for saliency maps by Adebayo et al. 2018)."""
    from skimage.metrics import structural_similarity

    def unit(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        span = m.max() - m.min()
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)

    win = min(7, *a.shape)
    win -= 1 - win % 2  # odd
    return float(structural_similarity(unit(a), unit(b), data_range=1.0, win_size=max(win, 3)))


def mass(heatmap: np.ndarray, *, signed: bool = True) -> np.ndarray:
    """Attribution mass per pixel: (H, W) float64 >= 0 (positive part, or magnitude when
    unsigned)."""
    h = np.asarray(heatmap, dtype=np.float64)
    return np.clip(h, 0.0, None) if signed else np.abs(h)


def region_share(heatmap: np.ndarray, mask: np.ndarray, *, signed: bool = True) -> float:
    """Share of the map's mass inside ``mask`` (H, W) bool: in [0, 1]; the mask's area fraction
    when the map has no mass."""
    h = _plane(heatmap, "heatmap")
    m = _plane(mask, "mask", h.shape).astype(bool)
    w = mass(h, signed=signed)
    total = w.sum()
    return float(w[m].sum() / total) if total > 0 else float(m.mean())


def explain_map(model: ModelHandle, x: np.ndarray, method: Method, *, target: int,
                params: dict[str, Any] | None = None, seed: int = 0,
                batch_size: int | None = None) -> tuple[FloatArray, int]:
    """(heatmap (H, W) float32, model evaluations) from a registered method id or a plain
    callable (whose evaluations are unknown: reported as 0)."""
    if callable(method):
        heatmap = np.asarray(method(model, np.asarray(x, np.float32), int(target)), np.float32)
        return _plane(heatmap, "the explainer's heatmap", np.shape(x)), 0
    result = explainers.run(method, model, x, target=target, params=params, seed=seed,
                            batch_size=batch_size)
    return result.attribution.heatmap, int(result.attribution.n_evaluations)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


# --- faithfulness ----------------------------------------------------------------------------

@dataclass(frozen=True)
class FaithfulnessCurves:
    """Deletion and insertion curves of one explanation (Petsiuk et al., RISE: Randomized Input
    Sampling for Explanation of Black-box Models, BMVC 2018, arXiv:1806.07421).

    fractions: (steps+1,) share of pixels removed (deletion) or put back (insertion), 0 to 1;
    deletion, insertion: (steps+1,) along each curve, the probability of ``target`` in [0, 1]
    (``scale`` "probability"), or, when the probability is saturated, the model's log-odds for
    ``target`` rescaled so that the masked input is 0 and the full input 1 (``scale``
    "logit"); deletion_auc (lower is better), insertion_auc (higher is better): areas under the
    curves over the fraction axis, about [0, 1]; NaN when even the log-odds do not move
    between the full and the masked input (``scale`` "uninformative": the curves say nothing
    about this map).
    """

    fractions: FloatArray
    deletion: FloatArray
    insertion: FloatArray
    deletion_auc: float
    insertion_auc: float
    n_evaluations: int
    scale: str = "probability"

    @property
    def informative(self) -> bool:
        return self.scale != "uninformative"

    def to_dict(self) -> dict[str, Any]:
        return {"fractions": self.fractions.tolist(), "deletion": self.deletion.tolist(),
                "insertion": self.insertion.tolist(),
                "deletion_auc": self.deletion_auc if self.informative else None,
                "insertion_auc": self.insertion_auc if self.informative else None,
                "n_evaluations": self.n_evaluations, "scale": self.scale}


SATURATION_GAP = 0.02
"""Deletion and insertion run on the log-odds instead of the probability when the target's
probability on the full input lies within this of 0 or 1: the probability is saturated (e.g.
p(fake) = 1.0, logit 27, on a synthetic stretch: the probability curves stay at 1.0 until the
last few per cent of the cells are removed, and every method gets AUCs of 0.99), so the
curves over probabilities say nothing. (The full input is the same for every map, so all
methods on one input use one scale.)"""
MIN_LOGIT_GAP = 1e-3
"""... and are marked uninformative when the log-odds differ by less than this as well."""


def log_odds(model: ModelHandle, scores: np.ndarray, target: int) -> npt.NDArray[np.float64]:
    """The model's score for ``target`` before the final squashing, as log-odds against the
    other classes (for a multi-label model, the label's own log-odds). scores: the model's
    (:meth:`~xai_platform.models.handle.ModelHandle.scores`), (N, K); returns (N,)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[1] == 1 or model.spec.output == "multilabel":
        return s[:, target]
    others = np.delete(s, target, axis=1)
    top = others.max(axis=1, keepdims=True)
    return s[:, target] - (top[:, 0] + np.log(np.exp(others - top).sum(axis=1)))


def deletion_insertion(model: ModelHandle, x: np.ndarray, heatmap: np.ndarray, *, target: int,
                       modality: str | None = None, steps: int = 20,
                       batch_size: int = 32) -> FaithfulnessCurves:
    """Deletion and insertion curves and their AUC (RISE, Petsiuk et al. 2018).

    Deletion replaces pixels by the modality's masked value
    (:func:`~xai_platform.explainers.perturbation.masked_value`), strongest evidence first
    (:func:`ranking`); insertion starts from the fully masked input and puts pixels back in the
    same order. Both curves, ``2 * (steps + 1)`` planes, go through the model in batches;
    when the full input's probability is saturated (:data:`SATURATION_GAP`) the curves are over
    the rescaled log-odds (:class:`FaithfulnessCurves`), from the same forward passes
    (``model.outputs``) where the model's engine gives probabilities and scores together
    (:attr:`~xai_platform.models.handle.ModelHandle.outputs_in_one_pass`), else from a second
    pass (``model.scores``).

    x, heatmap: (H, W); modality: default the model's. Returns :class:`FaithfulnessCurves`.
    """
    x = _plane(x, "x").astype(np.float32)
    h = _plane(heatmap, "heatmap", x.shape)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    baseline = masked_value(x, modality or model.spec.modality)
    n = x.size
    counts = np.round(np.linspace(0, n, steps + 1)).astype(np.int64)
    position = np.empty(n, dtype=np.int64)
    position[ranking(h)] = np.arange(n)  # each pixel's place in the order
    removed = (position[None, :] < counts[:, None]).reshape(-1, *x.shape)  # (steps+1, H, W)
    planes = np.concatenate([np.where(removed, baseline[None], x[None]),
                             np.where(removed, x[None], baseline[None])]).astype(np.float32)
    scores = None
    if model.outputs_in_one_pass:  # the scores come with the probabilities, at no extra cost
        probs, scores = model.outputs(planes, batch_size=batch_size)
    else:
        probs = model.predict(planes, batch_size=batch_size)
    probs = probs[:, int(target)].astype(np.float32)
    fractions = (counts / n).astype(np.float32)
    evaluations, scale = len(planes), "probability"
    # probs[0]: the full input; probs[steps]: the fully masked one (the same for every map)
    full = float(probs[0])
    if full > 1 - SATURATION_GAP or full < SATURATION_GAP:
        if scores is None:  # a second pass over the planes
            scores = model.scores(planes, batch_size=batch_size)
            evaluations += len(planes)
        logits = log_odds(model, scores, int(target))
        gap = logits[0] - logits[steps]
        if abs(gap) >= MIN_LOGIT_GAP:
            probs, scale = ((logits - logits[steps]) / gap).astype(np.float32), "logit"
        else:
            scale = "uninformative"
    deletion, insertion = probs[:steps + 1], probs[steps + 1:]
    if scale == "uninformative":
        return FaithfulnessCurves(fractions, deletion, insertion, float("nan"), float("nan"),
                                  n_evaluations=evaluations, scale=scale)
    return FaithfulnessCurves(fractions, deletion, insertion,
                              _trapezoid(deletion, fractions), _trapezoid(insertion, fractions),
                              n_evaluations=evaluations, scale=scale)


# --- sanity ----------------------------------------------------------------------------------

def randomization_test(model: ModelHandle, x: np.ndarray, method: Method, *, target: int,
                       params: dict[str, Any] | None = None, seed: int = 0,
                       n_layers: int = RANDOMIZE_LAYERS,
                       heatmap: np.ndarray | None = None, batch_size: int | None = None,
                       threshold: float = RANDOMIZATION_THRESHOLD,
                       randomized: ModelHandle | None = None) -> dict[str, Any]:
    """Model-parameter randomisation test (Adebayo et al., Sanity Checks for Saliency Maps,
    NeurIPS 2018, arXiv:1810.03292).

    Explains ``x`` with the trained model (or takes ``heatmap``, already computed) and with
    ``model.randomized(n_layers, seed=seed)`` (its top ``n_layers`` parameterised layers
    re-initialised; pass ``randomized`` to reuse one across inputs), then compares the maps.
    A method **passes** when both ``|spearman|`` and ``|spearman_abs|`` are below
    ``threshold`` (default :data:`RANDOMIZATION_THRESHOLD`): its map depends on what the model
    learned. Both, because a signed map can flip its sign under a new classifier while its
    magnitudes, what a user sees as "where", keep the input's structure (Integrated Gradients
    on the audio benchmark: rho -0.33, magnitudes 0.79; Adebayo et al. report both). An edge
    detector that ignores the model gets rho = 1 and fails. For a stochastic
    method read rho against its seed-to-seed correlation (:func:`stability`): sampling noise
    alone lowers it.

    Returns spearman (rho of the maps, [-1, 1]), spearman_abs (of their magnitudes), ssim
    ([-1, 1]), passed, threshold, n_layers, n_evaluations, seconds, and randomized_heatmap
    (the randomised model's map, (H, W), e.g. to localise it as a control).
    """
    start = time.perf_counter()
    evaluations = 0
    if heatmap is None:
        heatmap, evaluations = explain_map(model, x, method, target=target, params=params,
                                           seed=seed, batch_size=batch_size)
    heatmap = _plane(heatmap, "heatmap", np.shape(x))
    if randomized is None:
        randomized = model.randomized(n_layers, seed=seed)
    other, more = explain_map(randomized, x, method, target=target, params=params, seed=seed,
                              batch_size=batch_size)
    rho = spearman(heatmap, other)
    rho_abs = spearman(np.abs(heatmap), np.abs(other))
    return {"spearman": rho, "spearman_abs": rho_abs,
            "ssim": ssim(heatmap, other),
            "passed": bool(max(abs(rho), abs(rho_abs)) < threshold),
            "threshold": threshold, "n_layers": int(n_layers),
            "n_evaluations": evaluations + more, "seconds": time.perf_counter() - start,
            "randomized_heatmap": other}


# --- stability -------------------------------------------------------------------------------

def normalised(heatmap: np.ndarray) -> np.ndarray:
    """The map divided by its largest magnitude: unsigned maps in [0, 1], signed in [-1, 1]
    (an all-zero map stays zero)."""
    h = np.asarray(heatmap, dtype=np.float64)
    peak = np.abs(h).max()
    return h / peak if peak > 0 else h


def stability(model: ModelHandle, x: np.ndarray, method: Method, *, target: int,
              params: dict[str, Any] | None = None, seeds: Sequence[int] = (0, 1, 2, 3, 4),
              batch_size: int | None = None,
              known: Mapping[int, np.ndarray] | None = None) -> dict[str, Any]:
    """Spread of a stochastic method's maps over seeds (as in Alvarez-Melis and Jaakkola, On the
    Robustness of Interpretability Methods, 2018, arXiv:1806.08049, for seeds not inputs).

    Returns pixel_std (mean over pixels of the std across seeds of the :func:`normalised` maps,
    in [0, 1]; 0 is perfectly stable), spearman (mean pairwise rank correlation, 1 is stable),
    stochastic, n_seeds, n_evaluations, seconds. A registered method that draws no random
    numbers with these parameters (``MethodInfo.uses_seed``) is exactly stable and is not
    recomputed; a callable is run once per seed (it gets no seed, so the
    spread shows its own nondeterminism). ``known``: maps already computed, by seed (e.g. the
    explanation being scored), reused instead of recomputed.
    """
    seeds = list(seeds)
    info = explainers.get_method(method) if isinstance(method, str) else None
    if info is not None and not info.uses_seed(
            info.resolve_params(params, modality=model.spec.modality)):
        return {"pixel_std": 0.0, "spearman": 1.0, "stochastic": False, "n_seeds": len(seeds),
                "n_evaluations": 0, "seconds": 0.0}
    if len(seeds) < 2:
        raise ValueError(f"stability needs at least two seeds, got {seeds}")
    start = time.perf_counter()
    maps, evaluations = [], 0
    for s in seeds:
        if known is not None and s in known:
            heatmap, n = _plane(known[s], f"the map of seed {s}", np.shape(x)), 0
        else:
            heatmap, n = explain_map(model, x, method, target=target, params=params, seed=s,
                                     batch_size=batch_size)
        maps.append(normalised(heatmap))
        evaluations += n
    rhos = [spearman(a, b) for a, b in itertools.combinations(maps, 2)]
    return {"pixel_std": float(np.stack(maps).std(axis=0).mean()),
            "spearman": float(np.mean(rhos)), "stochastic": True, "n_seeds": len(seeds),
            "n_evaluations": evaluations, "seconds": time.perf_counter() - start}


# --- agreement -------------------------------------------------------------------------------

def top_k_iou(a: np.ndarray, b: np.ndarray, *, top_k: float = 0.1) -> float:
    """IoU of the top ``top_k`` fractions of two maps' pixels (:func:`top_k_mask`), in [0, 1]."""
    ma, mb = top_k_mask(a, float(top_k)), top_k_mask(b, float(top_k))
    return float((ma & mb).sum() / (ma | mb).sum())


def agreement(heatmaps: Mapping[str, np.ndarray], *, top_k: float = 0.1) -> dict[str, Any]:
    """How much methods agree on one input.

    heatmaps: method -> (H, W), all the same shape. Returns methods (their order kept), top_k,
    top_k_iou and spearman: (M, M) float64 symmetric matrices, 1 on the diagonal.
    """
    methods = list(heatmaps)
    maps = [_plane(heatmaps[m], f"heatmap of {m}") for m in methods]
    if any(m.shape != maps[0].shape for m in maps):
        raise ValueError("agreement needs maps of one shape, got "
                         f"{ {m: h.shape for m, h in zip(methods, maps)} }")
    if not 0 < top_k <= 1:
        raise ValueError(f"top_k must be a fraction in (0, 1], got {top_k}")
    size = len(maps)
    iou, rho = np.eye(size), np.eye(size)
    for i, j in itertools.combinations(range(size), 2):
        iou[i, j] = iou[j, i] = top_k_iou(maps[i], maps[j], top_k=top_k)
        rho[i, j] = rho[j, i] = spearman(maps[i], maps[j])
    return {"methods": methods, "top_k": float(top_k), "top_k_iou": iou, "spearman": rho}


# --- localisation ----------------------------------------------------------------------------

def localisation(heatmap: np.ndarray, region_mask: np.ndarray, *, signed: bool,
                 tolerance: int = 0) -> dict[str, float]:
    """Agreement of a map with a ground-truth region (H, W) bool.

    pointing_game: 1.0 when the map's maximum lies in the region (dilated by ``tolerance``
    pixels), else 0.0 (Zhang et al., Top-down Neural Attention by Excitation Backprop, ECCV
    2016, arXiv:1608.00507); top_k_iou: IoU of the map's top-k pixels, k = the region's area,
    with the region, in [0, 1]; mass_inside: :func:`region_share`, in [0, 1];
    region_fraction: the region's area share (what a random map scores on average).
    """
    h = _plane(heatmap, "heatmap")
    region = _plane(region_mask, "region_mask", h.shape).astype(bool)
    area = int(region.sum())
    if area == 0:
        raise ValueError("the region mask is empty: localisation needs at least one pixel")
    hit_zone = region
    if tolerance > 0:
        from scipy.ndimage import binary_dilation

        hit_zone = binary_dilation(region, iterations=int(tolerance))
    top = top_k_mask(h, area)
    return {"pointing_game": float(hit_zone.ravel()[ranking(h)[0]]),
            "top_k_iou": float((top & region).sum() / (top | region).sum()),
            "mass_inside": region_share(h, region, signed=signed),
            "region_fraction": area / region.size}


def input_control(display: np.ndarray) -> np.ndarray:
    """A map that ignores the model: the input's own intensity above its minimum (log-mel dB
    above the window's floor; X-ray brightness). Scored for localisation as a control, like
    Adebayo et al.'s edge detector: a method that localises no better than this shows where the
    input is loud or bright, not necessarily what the model used."""
    d = _plane(display, "display").astype(np.float32)
    return d - float(d.min())


def border_mask(shape: tuple[int, int], border: float = 0.05) -> BoolArray:
    """The image's border strip: (H, W) bool, ``max(1, round(border * min(H, W)))`` pixels wide
    on each side."""
    width = max(1, int(round(border * min(shape))))
    m = np.ones(shape, dtype=bool)
    m[width:-width, width:-width] = False
    return m


def xray_focus(heatmap: np.ndarray, lung_mask: np.ndarray | None, *, border: float = 0.05,
               signed: bool = True, min_lung_share: float = MIN_LUNG_SHARE,
               max_border_share: float = MAX_BORDER_SHARE) -> dict[str, Any]:
    """Where a chest X-ray explanation looks: inside the lung fields or on the image border
    (labels, markers, collimation edges; the shortcut of Zech et al., PLOS Medicine 2018, and
    DeGrave et al., Nature Machine Intelligence 2021).

    heatmap, lung_mask: (H, W) (lung_mask None: border check only). Returns lung_share and
    border_share (of the map's mass, in [0, 1]; lung_share None without a mask), flagged (lung
    share below ``min_lung_share`` or border share above ``max_border_share``) and message
    ("" when not flagged).
    """
    h = _plane(heatmap, "heatmap")
    border_share = region_share(h, border_mask(h.shape, border), signed=signed)
    lung_share = None if lung_mask is None else region_share(h, lung_mask, signed=signed)
    reasons = []
    if lung_share is not None and lung_share < min_lung_share:
        reasons.append(f"only {lung_share:.0%} of the attribution lies inside the lung fields")
    if border_share > max_border_share:
        reasons.append(f"{border_share:.0%} lies on the image border")
    message = ""
    if reasons:
        message = ("; ".join(reasons).capitalize()
                   + ": the explanation points mostly outside the lungs (labels, markers, "
                     "borders or other anatomy); check the model for shortcuts.")
    return {"lung_share": lung_share, "border_share": border_share, "flagged": bool(reasons),
            "message": message}
