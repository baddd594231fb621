"""A scorecard per explanation, a ranking of methods, and their compact renderings.

**Ranking rule** (:func:`rank_methods`): for each criterion below that every compared method
has, the methods are ranked 1 (best) to M, ties sharing the average rank; a method's score is
its mean rank, lower first; equal means keep the given order. **Checks first**: a method whose
scorecard fails a check (:data:`FAILING_FLAGS`: the randomisation test, or deletion and
insertion no better than chance) ranks below every method that passes, whatever its mean
rank; the table says why. When the probability is saturated the deletion and insertion curves
run on the log-odds (:func:`~xai_platform.evaluation.metrics.deletion_insertion`); when even
those do not move, the two AUCs are NaN for every method, so they are not ranked on.

==================  ==================  ===================================================
criterion           better              why
==================  ==================  ===================================================
insertion_auc       higher              the top pixels alone restore the score (faithful)
deletion_auc        lower               removing the top pixels destroys it (faithful)
randomization_rho   closer to 0 (|.|)   the map depends on what the model learned (sane);
(and of magnitudes)                     the same for |map|
pointing_game,      higher              where a ground-truth region exists
top_k_iou,
mass_inside
lung_share          higher              X-rays with lung masks: looks at the lungs
==================  ==================  ===================================================

Stability is shown and flagged but not ranked: deterministic methods would win it by
construction, and a method's spread is a property of its sampling budget, set by the user.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import explainers
from ..errors import XAIError
from ..explanation import Explanation, counted
from ..modalities import get_modality
from ..models.handle import ModelHandle
from . import metrics as m

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COSTLY_METRICS = ("faithfulness", "randomization", "stability")
"""What ``metrics=`` chooses from. Localisation and X-ray focus cost no model evaluation and
run whenever their mask is given."""
STABILITY_THRESHOLD = 0.5
"""A stochastic method is flagged unstable when its mean pairwise rank correlation over seeds
is below this."""
FAITHFULNESS_MARGIN = 0.01
"""A map is flagged as ordering pixels no better than chance when its insertion AUC does not
exceed its deletion AUC by this much (a random order gives equal AUCs)."""


@dataclass(frozen=True)
class Value:
    """How to show and compare one scorecard value."""

    label: str
    better: str  # higher | lower | zero (closer to 0) | "" (not compared)
    group: str


VALUES: dict[str, Value] = {
    "insertion_auc": Value("Insertion AUC", "higher", "faithfulness"),
    "deletion_auc": Value("Deletion AUC", "lower", "faithfulness"),
    "randomization_rho": Value("Randomisation rho", "zero", "randomization"),
    "randomization_rho_abs": Value("Randomisation rho (magnitudes)", "zero", "randomization"),
    "randomization_ssim": Value("Randomisation SSIM", "lower", "randomization"),
    "randomization_passed": Value("Passes randomisation (share)", "higher", "randomization"),
    "stability_spearman": Value("Seed rank correlation", "higher", "stability"),
    "stability_pixel_std": Value("Seed pixel std", "lower", "stability"),
    "pointing_game": Value("Pointing game", "higher", "localisation"),
    "top_k_iou": Value("Top-k IoU with region", "higher", "localisation"),
    "mass_inside": Value("Share inside region", "higher", "localisation"),
    # Controls (not ranked): the same localisation for the randomised model's map. A method
    # whose map finds the region as well with what the model learned destroyed shows the
    # input's structure there, not the model's evidence.
    "randomized_pointing_game": Value("Pointing game, randomised model (control)", "",
                                      "localisation"),
    "randomized_mass_inside": Value("Share inside region, randomised model (control)", "",
                                    "localisation"),
    "lung_share": Value("Share inside lungs", "higher", "xray_focus"),
    "border_share": Value("Share on border", "lower", "xray_focus"),
}
FLAGS = {"chance_order": "Ranks pixels no better than chance",
         "fails_randomization": "Fails the randomisation test",
         "unstable": "Unstable across seeds",
         "off_lungs": "Points mostly outside the lungs",
         "saturated": "Deletion / insertion on the log-odds (probability saturated)",
         "uninformative": "Deletion / insertion uninformative for this input"}
"""Flag codes (CSV column ``flags``) and their short titles."""
FAILING_FLAGS = {"fails_randomization": "the randomisation check",
                 "chance_order": "deletion / insertion no better than chance"}
"""The flags that put a method below every method that passes (:func:`rank_methods`), with the
reason the ranking table gives."""


RANKING_CRITERIA = ("insertion_auc", "deletion_auc", "randomization_rho",
                    "randomization_rho_abs", "pointing_game", "top_k_iou", "mass_inside",
                    "lung_share")


@dataclass(frozen=True)
class Cost:
    """What computing something took: wall-clock seconds and model evaluations (rows through
    the network)."""

    seconds: float
    evaluations: int


@dataclass(frozen=True)
class Scorecard:
    """The quality metrics of one explanation, with what each cost.

    values: name -> float (names and meanings in :data:`VALUES`; booleans as 0.0 / 1.0);
    costs: metric family (faithfulness, randomization, stability, localisation, xray_focus) ->
    :class:`Cost`; flags: code (:data:`FLAGS`) -> a warning a user should read; curves: the
    deletion and insertion curves when faithfulness ran; explanation: what the explanation
    itself cost; details: stochastic (whether the method samples), region_fraction.
    """

    method: str
    method_label: str
    target: int
    values: dict[str, float]
    costs: dict[str, Cost]
    flags: dict[str, str] = field(default_factory=dict)
    curves: m.FaithfulnessCurves | None = None
    explanation: Cost | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def metric_cost(self) -> Cost:
        """The metrics' total cost (without the explanation's)."""
        return Cost(sum(c.seconds for c in self.costs.values()),
                    sum(c.evaluations for c in self.costs.values()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: values, costs, flags and curves."""
        out: dict[str, Any] = {
            "method": self.method, "method_label": self.method_label, "target": self.target,
            "values": dict(self.values), "flags": dict(self.flags),
            "costs": {k: {"seconds": c.seconds, "evaluations": c.evaluations}
                      for k, c in self.costs.items()},
            "details": dict(self.details)}
        if self.explanation is not None:
            out["explanation_cost"] = {"seconds": self.explanation.seconds,
                                       "evaluations": self.explanation.evaluations}
        if self.curves is not None:
            out["curves"] = self.curves.to_dict()
        return out


def _label(method: m.Method) -> str:
    if callable(method):
        return getattr(method, "__name__", "custom")
    return explainers.get_method(method).label


def score_explanation(model: ModelHandle, x: np.ndarray | None,
                      explanation: Explanation | np.ndarray, *,
                      method: m.Method | None = None, target: int | None = None,
                      modality: str | None = None, seed: int | None = None,
                      params: dict[str, Any] | None = None, signed: bool | None = None,
                      metrics: Sequence[str] = COSTLY_METRICS,
                      region_mask: np.ndarray | None = None,
                      lung_mask: np.ndarray | None = None, batch_size: int | None = None,
                      steps: int = 20, n_layers: int = m.RANDOMIZE_LAYERS,
                      seeds: Sequence[int] = (0, 1, 2, 3, 4),
                      randomized: ModelHandle | None = None) -> Scorecard:
    """Score one explanation.

    ``explanation`` is an :class:`~xai_platform.explanation.Explanation` (method, target,
    modality, seed, parameters, signedness and, when ``x`` is None, the input come from it;
    keywords given override) or a heatmap (H, W), which then needs ``method`` (a registered id
    or ``explain_fn(model, x, target) -> heatmap``) and ``target``. ``x``: the explained
    feature plane (H, W). ``metrics``: any of :data:`COSTLY_METRICS`; ``region_mask`` (H, W)
    bool adds localisation, ``lung_mask`` (H, W) bool and X-ray inputs add the lung focus.
    ``randomized``: ``model.randomized(n_layers, seed=seed)`` if already built (it costs a copy
    of the model; reuse it across inputs).
    """
    unknown = [name for name in metrics if name not in COSTLY_METRICS]
    if unknown:
        raise XAIError(f"unknown metric '{unknown[0]}'; use any of: {', '.join(COSTLY_METRICS)}.")
    cost = None
    if isinstance(explanation, Explanation):
        e = explanation
        heatmap, x = e.heatmap, e.display if x is None else x
        method = e.method if method is None else method
        target = e.target if target is None else target
        modality = modality or e.modality
        seed = (e.seed or 0) if seed is None else seed
        params = e.params if params is None else params
        signed = e.signed if signed is None else signed
        cost = Cost(e.seconds, e.n_evaluations)
        # the function the methods explained (a waveform model: through the window's STFT)
        kind = get_modality(e.modality)
        model = kind.explained_model(model, e.display, e.extras)
        if randomized is not None:
            randomized = kind.explained_model(randomized, e.display, e.extras)
    else:
        heatmap = np.asarray(explanation, dtype=np.float32)
    if method is None or target is None or x is None:
        raise XAIError("score_explanation needs the input, the method and the target "
                       "(give an Explanation or pass x, method= and target=).")
    x = np.asarray(x, dtype=np.float32)
    target, seed = int(target), int(seed or 0)
    signed = True if signed is None else bool(signed)  # positive part = magnitude for maps >= 0
    modality = modality or model.spec.modality
    batch = batch_size or model.default_batch_size
    values: dict[str, float] = {}
    costs: dict[str, Cost] = {}
    details: dict[str, Any] = {}
    curves = None

    if "faithfulness" in metrics:
        start = time.perf_counter()
        curves = m.deletion_insertion(model, x, heatmap, target=target, modality=modality,
                                      steps=steps, batch_size=batch)
        values |= {"deletion_auc": curves.deletion_auc, "insertion_auc": curves.insertion_auc}
        details["faithfulness_scale"] = curves.scale
        costs["faithfulness"] = Cost(time.perf_counter() - start, curves.n_evaluations)
    if "randomization" in metrics:
        r = m.randomization_test(model, x, method, target=target, params=params, seed=seed,
                                 n_layers=n_layers, heatmap=heatmap, batch_size=batch,
                                 randomized=randomized)
        values |= {"randomization_rho": r["spearman"], "randomization_rho_abs": r["spearman_abs"],
                   "randomization_ssim": r["ssim"], "randomization_passed": float(r["passed"])}
        costs["randomization"] = Cost(r["seconds"], r["n_evaluations"])
    if "stability" in metrics:
        s = m.stability(model, x, method, target=target, params=params, seeds=seeds,
                        batch_size=batch, known={seed: heatmap})
        values |= {"stability_spearman": s["spearman"], "stability_pixel_std": s["pixel_std"]}
        costs["stability"] = Cost(s["seconds"], s["n_evaluations"])
        details["stochastic"] = s["stochastic"]
    if region_mask is not None:
        start = time.perf_counter()
        loc = m.localisation(heatmap, region_mask, signed=signed)
        values |= {k: loc[k] for k in ("pointing_game", "top_k_iou", "mass_inside")}
        details["region_fraction"] = loc["region_fraction"]
        if "randomization" in metrics:
            control = m.localisation(r["randomized_heatmap"], region_mask, signed=signed)
            values |= {"randomized_pointing_game": control["pointing_game"],
                       "randomized_mass_inside": control["mass_inside"]}
        costs["localisation"] = Cost(time.perf_counter() - start, 0)
    focus = None
    if lung_mask is not None and get_modality(modality).focus_region is not None:
        start = time.perf_counter()
        focus = m.xray_focus(heatmap, lung_mask, signed=signed)
        values |= {"lung_share": focus["lung_share"], "border_share": focus["border_share"]}
        costs["xray_focus"] = Cost(time.perf_counter() - start, 0)
    return Scorecard(method=method if isinstance(method, str) else _label(method),
                     method_label=_label(method), target=target,
                     values={k: float(v) for k, v in values.items()}, costs=costs,
                     flags=_flags(values, focus, details), curves=curves, explanation=cost,
                     details=details)


def _flags(values: Mapping[str, float], focus: Mapping[str, Any] | None,
           details: Mapping[str, Any]) -> dict[str, str]:
    flags = {}
    scale = details.get("faithfulness_scale")
    if scale == "logit":
        flags["saturated"] = (
            "The probability is saturated for this input (within "
            f"{m.SATURATION_GAP:g} of 0 or 1), so its deletion and insertion curves would say "
            "nothing: they are computed on the model's log-odds, rescaled to 0 (masked) .. "
            "1 (full).")
    elif scale == "uninformative":
        flags["uninformative"] = (
            "Deletion and insertion say nothing for this input: neither the probability nor "
            "the log-odds change between the full and the fully masked input. They are not "
            "ranked on.")
    if "deletion_auc" in values and np.isfinite(values["deletion_auc"]) and \
            values["insertion_auc"] - values["deletion_auc"] < FAITHFULNESS_MARGIN:
        flags["chance_order"] = (
            f"Deletion AUC ({values['deletion_auc']:.2f}) is not clearly below insertion AUC "
            f"({values['insertion_auc']:.2f}): for this input the map orders pixels no better "
            "than chance.")
    if values.get("randomization_passed") == 0.0:
        rho, rho_abs = values["randomization_rho"], values["randomization_rho_abs"]
        how = ("hardly changes" if rho >= m.RANDOMIZATION_THRESHOLD else
               "keeps its structure, inverted," if rho <= -m.RANDOMIZATION_THRESHOLD else
               "keeps where its strong values are")
        flags["fails_randomization"] = (
            f"Fails the randomisation test (rho {rho:.2f}, of magnitudes {rho_abs:.2f}; both "
            f"must be below {m.RANDOMIZATION_THRESHOLD:g} in size): the map {how} when the "
            "model's top layers are re-initialised, so it may show the input rather than what "
            "the model learned.")
    if details.get("stochastic") and values.get("stability_spearman", 1.0) < STABILITY_THRESHOLD:
        flags["unstable"] = (
            f"Unstable across seeds (mean rho {values['stability_spearman']:.2f}): raise the "
            "number of samples or read the map as rough.")
    if focus is not None and focus["flagged"]:
        flags["off_lungs"] = focus["message"]
    return flags


# --- ranking ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RankedMethod:
    """A method's place: rank 1 is best (equal mean ranks share a rank); ranks: criterion ->
    the method's rank on it (1 best, ties averaged); failed: the codes of the checks it fails
    (:data:`FAILING_FLAGS`), which put it below every method that passes."""

    method: str
    rank: int
    mean_rank: float
    ranks: dict[str, float]
    failed: tuple[str, ...] = ()

    @property
    def passes(self) -> bool:
        return not self.failed


def _goodness(name: str, value: float) -> float:
    better = VALUES[name].better
    return value if better == "higher" else -abs(value) if better == "zero" else -value


def rank_methods(scorecards: Mapping[str, Scorecard | Mapping[str, float]]) -> list[RankedMethod]:
    """Methods best first by the rule in the module docstring.

    scorecards: method -> its :class:`Scorecard` or a mapping of values (e.g. means over a
    data set). Criteria that some method lacks (or has as NaN) are left out for all. Scorecards
    with a failing flag rank after every method without one; plain mappings carry no flags.
    """
    methods = list(scorecards)
    failed = {k: tuple(f for f in FAILING_FLAGS if f in v.flags) if isinstance(v, Scorecard)
              else () for k, v in scorecards.items()}
    values = {k: (v.values if isinstance(v, Scorecard) else v) for k, v in scorecards.items()}
    used = [c for c in RANKING_CRITERIA
            if methods and all(np.isfinite(values[k].get(c, np.nan)) for k in methods)]
    ranks: dict[str, dict[str, float]] = {k: {} for k in methods}
    for c in used:
        order = m.rank_average([-_goodness(c, float(values[k][c])) for k in methods])
        for k, r in zip(methods, order):
            ranks[k][c] = float(r)
    mean = {k: float(np.mean(list(ranks[k].values()))) if used else 1.0 for k in methods}
    # stable: ties keep the given order
    ordered = sorted(methods, key=lambda k: (bool(failed[k]), mean[k]))
    out, place = [], 0
    for i, k in enumerate(ordered):
        prev = ordered[i - 1] if i else None
        if prev is None or mean[k] != mean[prev] or bool(failed[k]) != bool(failed[prev]):
            place = i + 1
        out.append(RankedMethod(k, place, mean[k], ranks[k], failed[k]))
    return out


@dataclass(frozen=True)
class Comparison:
    """Every method's scorecard for one input, their ranking and their agreement
    (:func:`~xai_platform.evaluation.metrics.agreement`; None with fewer than two methods)."""

    cards: dict[str, Scorecard]
    ranking: list[RankedMethod]
    agreement: dict[str, Any] | None


def compare(model: ModelHandle, explanations: Mapping[str, Explanation], *,
            metrics: Sequence[str] = COSTLY_METRICS, region_mask: np.ndarray | None = None,
            lung_mask: np.ndarray | None = None, batch_size: int | None = None,
            randomized: ModelHandle | None = None) -> Comparison:
    """Score the explanations of one input (method id -> Explanation, as on the comparison
    page), rank the methods and measure their agreement (``randomized``: see
    :func:`score_explanation`)."""
    if randomized is None and "randomization" in metrics:
        randomized = model.randomized(m.RANDOMIZE_LAYERS, seed=0)
    cards = {k: score_explanation(model, None, e, metrics=metrics, region_mask=region_mask,
                                  lung_mask=lung_mask, batch_size=batch_size,
                                  randomized=randomized)
             for k, e in explanations.items()}
    agreement = m.agreement({k: e.heatmap for k, e in explanations.items()}) \
        if len(explanations) > 1 else None
    return Comparison(cards, rank_methods(cards), agreement)


def json_safe(value: Any) -> Any:
    """``value`` (dicts, lists, tuples, numbers, NumPy scalars and arrays) as strict JSON: NaN
    and infinities as None (a metric that did not apply), NumPy as Python."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.generic, float)):
        item = value.item() if isinstance(value, np.generic) else value
        return item if not isinstance(item, float) or np.isfinite(item) else None
    return value


def comparison_record(cards: Mapping[str, Scorecard], heatmaps: Mapping[str, np.ndarray]
                      ) -> dict[str, Any]:
    """What the comparison page says below the cards, as JSON (the API's ``/compare`` and the
    CLI's ``explain --metrics``): ``trust``, the sentence on which maps may be trusted;
    ``ranking``, best first (rank, mean rank, the rank per criterion, whether the method passes
    the checks and, where not, which it fails); ``agreement`` between every two maps (methods,
    rank correlation, top-k IoU; with two or more maps). Without scorecards, only the
    agreement."""
    out: dict[str, Any] = {}
    if cards:
        ranking = rank_methods(cards)
        out["trust"] = trust_verdict(ranking).replace("**", "")
        out["ranking"] = [{"method": r.method, "rank": r.rank, "mean_rank": r.mean_rank,
                           "ranks": dict(r.ranks), "passes": r.passes,
                           "fails": [FAILING_FLAGS[f] for f in r.failed]} for r in ranking]
    if len(heatmaps) > 1:
        matrix = m.agreement(dict(heatmaps))
        out["agreement"] = {"methods": matrix["methods"],
                            "spearman": np.round(matrix["spearman"], 6).tolist(),
                            "top_k": matrix["top_k"],
                            "top_k_iou": np.round(matrix["top_k_iou"], 6).tolist()}
    return json_safe(out)


# --- rendering -------------------------------------------------------------------------------

def render_agreement(matrix: np.ndarray, labels: Sequence[str], *, title: str = "",
                     vmin: float | None = None) -> Figure:
    """An annotated heatmap of an (M, M) agreement matrix (top-k IoU in [0, 1] or rank
    correlation in [-1, 1]; ``vmin`` defaults to -1 when any entry is negative, else 0).
    Drawn on a :class:`matplotlib.figure.Figure`, never pyplot (thread-safe)."""
    from matplotlib.figure import Figure

    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] != len(labels):
        raise ValueError(f"need an (M, M) matrix for {len(labels)} labels, got {a.shape}")
    size = len(labels)
    lo = vmin if vmin is not None else (-1.0 if np.nanmin(a) < 0 else 0.0)
    fig = Figure(figsize=(2.2 + 0.75 * size, 1.6 + 0.7 * size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(a, vmin=lo, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(size), labels, rotation=40, ha="right")
    ax.set_yticks(range(size), labels)
    for i in range(size):
        for j in range(size):
            ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if a[i, j] > lo + 0.6 * (1.0 - lo) else "white")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def value_text(name: str, value: float) -> str:
    """A metric's value as the scorecards show it ("n/a" where it did not apply)."""
    if not np.isfinite(value):
        return "n/a"
    if name in ("randomization_passed", "pointing_game"):
        return "yes" if value >= 0.5 else "no"
    if name in ("mass_inside", "lung_share", "border_share"):
        return f"{value:.0%}"
    return f"{value:.2f}"


def _cost_text(cost: Cost | None) -> str:
    if cost is None:
        return ""
    return f"{cost.seconds:.2f} s, {counted(cost.evaluations, 'eval')}"


COMPACT_HIDDEN = ("randomization_ssim", "randomization_passed",
                  "stability_pixel_std")


def scorecard_markdown(card: Scorecard) -> str:
    """A compact Markdown table of the card (metric | value | better | cost) and its flags, for
    the comparison page."""
    rows = ["| Metric | Value | Better | Cost |", "|---|---|---|---|"]
    shown = [k for k in VALUES if k in card.values and k not in COMPACT_HIDDEN]
    last_group = None
    for name in shown:
        info = VALUES[name]
        value = value_text(name, card.values[name])
        if name == "randomization_rho":
            value += " (pass)" if card.values.get("randomization_passed") else " (fail)"
        if name in ("insertion_auc", "deletion_auc") and \
                card.details.get("faithfulness_scale") == "logit":
            value += " (log-odds)"
        if name.startswith("stability") and not card.details.get("stochastic", True):
            value = "exact" if name == "stability_spearman" else "0"
        group = info.group
        cost = _cost_text(card.costs.get(group)) if group != last_group else ""
        last_group = group
        better = {"zero": "near 0"}.get(info.better, info.better)
        rows.append(f"| {info.label} | {value} | {better} | {cost} |")
    total = card.metric_cost
    text = "\n".join(rows)
    text += f"\n\nMetrics cost {total.seconds:.2f} s and {counted(total.evaluations)}"
    if card.explanation is not None:
        text += f" (the explanation: {_cost_text(card.explanation)})"
    text += "."
    if card.flags:
        text += "\n\n" + "\n".join(f"- ⚠ {flag}" for flag in card.flags.values())
    return text


def ranking_markdown(ranking: Sequence[RankedMethod], labels: Mapping[str, str] | None = None
                     ) -> str:
    """The ranking as a Markdown table (rank | method | checks | mean rank | per-criterion
    ranks)."""
    if not ranking:
        return ""
    criteria = list(ranking[0].ranks)
    head = ["Rank", "Method", "Checks", "Mean rank"] + [VALUES[c].label for c in criteria]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ranking:
        checks = "passes" if r.passes else "fails: " + "; ".join(FAILING_FLAGS[f]
                                                                 for f in r.failed)
        cells = [str(r.rank), (labels or {}).get(r.method, r.method), checks,
                 f"{r.mean_rank:.2f}"]
        rows.append("| " + " | ".join(cells + [f"{r.ranks[c]:g}" for c in criteria]) + " |")
    return "\n".join(rows)


def trust_verdict(ranking: Sequence[RankedMethod]) -> str:
    """One sentence above the ranking: which maps may be trusted for this input."""
    if not ranking:
        return ""
    if not any(r.passes for r in ranking):
        return ("**No map here can be trusted for this input**: every method fails a check "
                "(the randomisation test, or deletion / insertion no better than chance).")
    failing = [r for r in ranking if not r.passes]
    if failing:
        return ("Methods that fail a check rank below every method that passes, whatever "
                "their other ranks.")
    return "Every method passes the checks that ran."
