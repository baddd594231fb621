"""Batch evaluation: every metric for every input and method, as a CSV, a report and plots.

    python -m xai_platform evaluate --model ID --data DIR|benchmark [--method ID ...] [--n N]
                                    --out DIR [--seed S] [--metrics NAME ...] [--split NAME]
                                    [--ray auto|ADDRESS] [--ray-workers N]

``DIR`` is a folder of audio or image files, or one with a ``metadata.csv`` (columns ``path``
and optionally ``label``, ``split``, ``lesion_mask`` and ``lung_mask``, or their ``*_path``
forms; paths relative to the folder). With a ``split`` column only ``split == test`` (or
``--split``) is evaluated. Masks (PNG/JPEG/DICOM or ``.npy``; for audio, over the explained
window's spectrogram) go through the model's own image geometry (center crop, resize) and give
localisation and lung focus. ``benchmark`` is the benchmark the model's modality declares
(``data/xray_benchmark``, ``data/audio_corpus``).

Each input goes through :class:`xai_platform.service.Service` as in the app. The explained class is the
input's ``label`` when the model has it (localisation scores the evidence for the lesion that
is there), else the prediction. ``--n`` draws that many inputs at random from ``--seed``.

Output under ``--out``: ``metrics.csv`` (one row per input x method), ``report.md`` (per method
the mean and a 95 % percentile-bootstrap interval of each metric and of the runtime, the
ranking, the agreement between methods, the exact command) and ``plots/*.png``.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import explainers
from ..config import ROOT, PlatformConfig
from ..errors import InputError, XAIError
from ..explanation import Explanation
from ..modalities import get_modality
from ..models.handle import ModelHandle
from ..service import Service, Session
from . import metrics as m
from .metrics import RANDOMIZE_LAYERS
from .scorecard import (COSTLY_METRICS, FLAGS, VALUES, Scorecard, rank_methods,
                        ranking_markdown, render_agreement, score_explanation)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..models import ModelManager
    from ..models.cards import ModelCard

DATA_DIR = ROOT / "data"
FAMILIES = COSTLY_METRICS + ("localisation", "xray_focus")
N_BOOTSTRAP = 2000


# --- inputs ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One input to evaluate and its ground truth, if any."""

    path: Path
    label: str | None = None
    lesion_mask: Path | None = None
    lung_mask: Path | None = None


def resolve_data(data: str | Path, modality: str) -> Path:
    """The folder to evaluate: ``data`` itself, or the shipped benchmark of ``modality``."""
    if str(data) == "benchmark":
        if get_modality(modality).benchmark is None:
            raise InputError(f"{modality} inputs have no shipped benchmark; pass --data DIR.")
        name, build = get_modality(modality).benchmark
        folder = DATA_DIR / name
        if not (folder / "metadata.csv").is_file():
            state = "incomplete (no metadata.csv)" if folder.is_dir() else "missing"
            raise InputError(f"the {modality} benchmark is {state} at {folder}; build it with "
                             f"`{build}` or pass --data DIR.")
        return folder
    folder = Path(data)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; pass a folder of inputs or 'benchmark'.")
    return folder


def _field(row: dict[str, str], *names: str) -> str | None:
    for name in names:
        value = (row.get(name) or "").strip()
        if value:
            return value
    return None


def list_inputs(folder: Path, modality: str, *, split: str = "test") -> list[Item]:
    """The inputs of ``folder`` (see the module docstring; rows of ``split`` where the metadata
    has a split column), in file order."""
    meta = folder / "metadata.csv"
    if not meta.is_file():
        kind = get_modality(modality)
        files = sorted(p for p in folder.rglob("*") if kind.accepts(p))
        if not files:
            raise InputError(f"{folder}: no {modality} files "
                             f"({', '.join(kind.extensions)}) and no metadata.csv.")
        return [Item(p) for p in files]
    with meta.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "path" not in rows[0]:
        raise InputError(f"{meta}: needs a 'path' column and at least one row.")
    if "split" in rows[0]:
        rows = [r for r in rows if (r.get("split") or "").strip() == split]
        if not rows:
            raise InputError(f"{meta}: has a split column but no row with split == {split}.")

    def path(value: str | None) -> Path | None:
        return folder / value if value else None

    return [Item(folder / r["path"], _field(r, "label"),
                 path(_field(r, "lesion_mask", "lesion_mask_path")),
                 path(_field(r, "lung_mask", "lung_mask_path"))) for r in rows]


def select(items: list[Item], n: int | None, seed: int) -> list[Item]:
    """``n`` items drawn without replacement from ``seed``, in their original order."""
    if n is None or n >= len(items):
        return items
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}.")
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
    return [items[i] for i in keep]


# --- statistics ------------------------------------------------------------------------------

def bootstrap_ci(values: Sequence[float], *, seed: int = 0, level: float = 0.95,
                 n_boot: int = N_BOOTSTRAP) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite ``values``: percentile bootstrap interval of the mean
    (Efron and Tibshirani, An Introduction to the Bootstrap, 1993). NaNs when none is finite."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    means = v[np.random.default_rng(seed).integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(v.mean()), float(low), float(high), int(v.size)


# --- the run ---------------------------------------------------------------------------------

def command_line(model_id: str, data: str | Path, *, methods: Sequence[str] | None,
                 n: int | None, out: str | Path, seed: int, metrics: Sequence[str],
                 split: str = "test", n_layers: int = RANDOMIZE_LAYERS, configs: Sequence[str] = (),
                 params: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The exact command that reproduces a run."""
    parts = ["python", "-m", "xai_platform", "evaluate", "--model", model_id, "--data", str(data)]
    for c in configs:
        parts += ["--config", str(c)]
    for method in methods or ():
        parts += ["--method", method]
    for method, given in (params or {}).items():
        for name, value in given.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            parts += ["--param", f"{method}.{name}={text}"]
    if n is not None:
        parts += ["--n", str(n)]
    if split != "test":
        parts += ["--split", split]
    if n_layers != RANDOMIZE_LAYERS:
        parts += ["--randomize-layers", str(n_layers)]
    parts += ["--out", str(out), "--seed", str(seed), "--metrics", *metrics]
    return shlex.join(parts)


def evaluate(manager: ModelManager, model_id: str, data: str | Path, *,
             methods: Sequence[str] | None = None, n: int | None = None, out: str | Path,
             seed: int = 0, metrics: Sequence[str] = COSTLY_METRICS, split: str = "test",
             n_layers: int = RANDOMIZE_LAYERS, progress: bool = True, batch_size: int | None = None,
             command: str | None = None, ray: str | None = None,
             ray_workers: int | None = None,
             params: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Evaluate ``methods`` (default: every compatible one) of model ``model_id`` on ``data``.

    ``n_layers``: how many top parameterised layers the randomisation test re-initialises
    (batch-norm layers count: see ``ModelHandle.randomized``). ``ray``: run the inputs on Ray
    Data (``auto`` or a cluster's address; ``ray_workers`` actors, each loading the model
    once), with the same results as in-process. ``params``: parameters by method id (e.g.
    ``{"shap": {"estimator": "kernel"}}``), checked before any input is read; the rest default.

    An input that cannot be read is skipped (named in the report), not fatal. Returns the
    written paths: ``{"csv": Path, "report": Path, "plots": [Path, ...]}``.
    """
    spec = manager.spec(model_id)
    metrics = tuple(metrics)
    unknown = [x for x in metrics if x not in COSTLY_METRICS]
    if unknown:
        raise XAIError(f"unknown metric '{unknown[0]}'; use any of: {', '.join(COSTLY_METRICS)}.")
    methods = list(methods or [x.id for x in explainers.compatible_methods(spec)])
    for method in methods:
        reason = explainers.get_method(method).reason_incompatible(spec)
        if reason:
            raise XAIError(f"method '{method}' does not apply to model '{spec.id}': {reason}")
    params = {k: dict(v) for k, v in (params or {}).items()}
    for method, given in params.items():
        if method not in methods:
            raise XAIError(f"--param for method '{method}', which this run does not evaluate "
                           f"({', '.join(methods)}).")
        explainers.get_method(method).resolve_params(given, modality=spec.modality)
    folder = resolve_data(data, spec.modality)
    items = select(list_inputs(folder, spec.modality, split=split), n, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    command = command or command_line(model_id, data, methods=methods, n=n, out=out, seed=seed,
                                      metrics=metrics, split=split, n_layers=n_layers,
                                      params=params)
    rows: list[dict[str, Any]] = []
    agreements: list[dict[str, Any]] = []
    skipped: list[str] = []
    started = time.perf_counter()
    if ray:  # imported only here: without --ray nothing of Ray is loaded
        from ..batch_ray import evaluate_ray

        outcomes = evaluate_ray(manager, model_id, items, folder, methods, metrics=metrics,
                                seed=seed, batch_size=batch_size, n_layers=n_layers,
                                address=ray, workers=ray_workers, params=params)
    else:
        outcomes = evaluate_items(manager, model_id, items, folder, methods, metrics=metrics,
                                  seed=seed, batch_size=batch_size, n_layers=n_layers,
                                  progress=progress, params=params)
    for item, new_rows, agreement, error in outcomes:
        if error is not None:
            skipped.append(f"{item.path}: {error}")
            continue
        rows += new_rows
        if agreement is not None:
            agreements.append(agreement)
    if not rows:
        raise InputError(f"no input of {folder} could be evaluated: {skipped[0]}")
    if progress:
        sys.stderr.write(f"evaluated {len(items) - len(skipped)} inputs x {len(methods)} methods "
                         f"in {time.perf_counter() - started:.1f} s\n")
    csv_path = write_csv(rows, out / "metrics.csv")
    plots = write_plots(rows, methods, agreements, out / "plots", seed=seed)
    report = write_report(rows, methods, agreements, out / "report.md", spec=spec,
                          folder=folder, command=command, metrics=metrics, seed=seed,
                          plots=plots, skipped=skipped, n_layers=n_layers,
                          mask_supervision=_mask_supervision(manager.card(model_id)))
    return {"csv": csv_path, "report": report, "plots": plots}


def evaluate_items(manager: ModelManager, model_id: str, items: Sequence[Item], folder: Path,
                   methods: Sequence[str], *, metrics: Sequence[str], seed: int,
                   batch_size: int | None, n_layers: int, progress: bool = False,
                   randomized: ModelHandle | None = None,
                   params: Mapping[str, Mapping[str, Any]] | None = None):
    """Yield (item, rows, agreement or None, error or None) for each item, in order: the
    in-process loop, and what each Ray worker runs on its share (``evaluate --ray``).
    ``randomized``: the randomisation test's model, when already built; ``params``: by method."""
    service = Service(manager)
    handle = manager.get(model_id)
    # one re-initialised copy per run (or per worker: the same, from ``seed``)
    if randomized is None and "randomization" in metrics:
        randomized = handle.randomized(n_layers, seed=seed)
        from ..models.shared_trunk import can_share, share_trunk

        if can_share(handle):  # LIME / SHAP re-runs reuse the trunk's batches
            share_trunk(handle, randomized)
    for i, item in enumerate(items, 1):
        say = (lambda text, i=i, item=item: sys.stderr.write(
            f"[{i}/{len(items)}] {item.path.name} {text}\n")) if progress else (lambda text: None)
        try:
            new_rows, agreement = _evaluate_item(service, handle, item, folder, methods,
                                                 metrics=metrics, seed=seed,
                                                 batch_size=batch_size, say=say,
                                                 randomized=randomized, params=params or {})
        except InputError as exc:
            say(f"skipped: {exc}")
            yield item, [], None, str(exc)
            continue
        yield item, new_rows, agreement, None


def _evaluate_item(service: Service, handle: ModelHandle, item: Item, folder: Path,
                   methods: Sequence[str], *, metrics: Sequence[str], seed: int,
                   batch_size: int | None, say: Callable[[str], Any],
                   randomized: ModelHandle | None, params: Mapping[str, Mapping[str, Any]]
                   ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One input through the app's service: a CSV row per method, and the methods'
    agreement (None for one method)."""
    spec = handle.spec
    session = Session()  # caches this input's analysis; writes no files
    service.analyse(session, item.path, spec.id)
    modality, settings = get_modality(spec.modality), service.settings
    lesion = modality.region_mask(item.lesion_mask, spec, settings) if item.lesion_mask else None
    if lesion is not None and not lesion.any():
        lesion = None  # e.g. a normal image's empty mask: nothing to localise
    lungs = modality.region_mask(item.lung_mask, spec, settings) if item.lung_mask else None
    target = spec.labels.index(item.label) if item.label in spec.labels else None
    rows, heatmaps = [], {}
    control = None
    for method in methods:
        expl = service.explain(session, item.path, spec.id, method, target=target, seed=seed,
                               batch_size=batch_size, params=dict(params.get(method, {})))
        if lesion is not None and control is None:
            control = m.localisation(m.input_control(expl.display), lesion, signed=False)
        card = score_explanation(handle, None, expl, metrics=metrics, region_mask=lesion,
                                 lung_mask=lungs if lungs is not None
                                 else expl.extras.get("focus_mask"), batch_size=batch_size, randomized=randomized)
        heatmaps[method] = expl.heatmap
        rows.append(_row(item, folder, expl, card))
        if control is not None:  # the same for every method of this input
            rows[-1].update({f"control_{k}": control[k] for k in CONTROL})
            rows[-1]["region_fraction"] = control["region_fraction"]
        say(f"{method}: explained in {expl.seconds:.2f} s, scored in "
            f"{card.metric_cost.seconds:.2f} s")
    if len(methods) < 2:
        return rows, None
    agreement = m.agreement(heatmaps)
    for j, row in enumerate(rows):
        others = [k for k in range(len(methods)) if k != j]
        row["agreement_rho"] = float(agreement["spearman"][j, others].mean())
        row["agreement_iou"] = float(agreement["top_k_iou"][j, others].mean())
    return rows, agreement


def _row(item: Item, folder: Path, expl: Explanation, card: Scorecard) -> dict[str, Any]:
    try:
        name = item.path.relative_to(folder).as_posix()
    except ValueError:
        name = str(item.path)
    row: dict[str, Any] = {
        "input": name, "label": item.label or "", "target": expl.target_label,
        "prediction": expl.prediction.label, "score": float(expl.prediction.score),
        "window": expl.extras.get("window", 0), "method": expl.method,
        "seed": "" if expl.seed is None else expl.seed,
        "explain_seconds": expl.seconds, "explain_evaluations": expl.n_evaluations}
    row.update(card.values)
    for family in FAMILIES:
        cost = card.costs.get(family)
        if cost is not None:
            row[f"{family}_seconds"] = cost.seconds
            row[f"{family}_evaluations"] = cost.evaluations
    row["flags"] = " ".join(card.flags)  # codes; the messages are in FLAGS
    return row


# --- outputs ---------------------------------------------------------------------------------

def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    flags = ["flags"] if "flags" in seen else []
    return [c for c in seen if c != "flags"] + flags


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """One row per input x method; floats with 6 significant digits; missing cells empty."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_columns(rows), restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def _numbers(rows: list[dict[str, Any]], method: str, column: str) -> list[float]:
    return [float(r[column]) for r in rows if r["method"] == method and column in r]


def _metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    present = set(_columns(rows))
    return [c for c in list(VALUES) + list(AGREEMENT) if c in present]


AGREEMENT = {"agreement_rho": "Rank correlation with the other methods",
             "agreement_iou": "Top-10% IoU with the other methods"}
PLOTTED = ("insertion_auc", "deletion_auc", "randomization_rho", "stability_spearman",
           "pointing_game", "top_k_iou", "mass_inside", "lung_share", "border_share",
           "agreement_rho")


def _label(column: str) -> str:
    return VALUES[column].label if column in VALUES else AGREEMENT[column]


def _method_labels(methods: Sequence[str]) -> dict[str, str]:
    return {k: explainers.get_method(k).label for k in methods}


def _bar_chart(stats: dict[str, tuple[float, float, float, int]], title: str,
               labels: dict[str, str]) -> Figure:
    from matplotlib.figure import Figure

    names = list(stats)
    means = np.array([stats[k][0] for k in names])
    err = np.array([[max(stats[k][0] - stats[k][1], 0.0), max(stats[k][2] - stats[k][0], 0.0)]
                    for k in names]).T
    fig = Figure(figsize=(1.6 + 0.9 * len(names), 3.2), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(range(len(names)), np.nan_to_num(means), yerr=np.nan_to_num(err), capsize=4,
           color="#4c72b0")
    ax.set_xticks(range(len(names)), [labels[k] for k in names], rotation=30, ha="right")
    ax.set_title(f"{title} (mean, 95% CI)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


def write_plots(rows: list[dict[str, Any]], methods: Sequence[str],
                agreements: list[dict[str, Any]], folder: Path, *, seed: int) -> list[Path]:
    """A bar chart of the method means with 95 % CIs per metric of :data:`PLOTTED` and for the
    explanation runtime, and the mean agreement matrices. Returns the PNG paths."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = _method_labels(methods)
    charts = [(c, _label(c)) for c in _metric_columns(rows) if c in PLOTTED]
    paths = []
    for column, title in charts + [("explain_seconds", "Explanation runtime (s)")]:
        stats = {k: bootstrap_ci(_numbers(rows, k, column), seed=seed) for k in methods}
        path = folder / f"{'runtime' if column == 'explain_seconds' else column}.png"
        _bar_chart(stats, title, labels).savefig(path, dpi=100)
        paths.append(path)
    for key, title in (("spearman", "Rank correlation"), ("top_k_iou", "Top-10% IoU")):
        if agreements:
            mean = np.mean([a[key] for a in agreements], axis=0)
            path = folder / f"agreement_{key}.png"
            render_agreement(mean, list(labels.values()),
                             title=f"{title}, mean over inputs").savefig(path, dpi=100)
            paths.append(path)
    return paths


def _cell(stats: tuple[float, float, float, int], n_inputs: int, digits: str = ".3f") -> str:
    mean, low, high, n = stats
    if n == 0:
        return "–"
    text = f"{mean:{digits}} [{low:{digits}}, {high:{digits}}]"
    return text if n == n_inputs else f"{text} (n={n})"


def _table(head: Sequence[str], body: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(row) + " |" for row in body])


CONTROL = {"pointing_game": "Pointing game", "top_k_iou": "Top-k IoU with region",
           "mass_inside": "Share inside region"}


def _control_section(rows: list[dict[str, Any]], methods: Sequence[str],
                     stats: dict[tuple[str, str], tuple[float, float, float, int]],
                     n_inputs: int, seed: int) -> list[str]:
    """Localisation of two maps that ignore the model, beside the methods' (where masks exist):
    a uniform map (chance: the region's area share) and the input's own intensity
    (:func:`~xai_platform.evaluation.metrics.input_control`)."""
    first = methods[0]
    own = [r for r in rows if r["method"] == first and "control_pointing_game" in r]
    if not own:
        return []
    chance = bootstrap_ci([float(r["region_fraction"]) for r in own], seed=seed)
    body = []
    for key, label in CONTROL.items():
        control = bootstrap_ci([float(r[f"control_{key}"]) for r in own], seed=seed)
        # Rows with a control have a region mask, so every method has this column.
        scored = [k for k in methods if np.isfinite(stats[k, key][0])]
        best = max(scored, key=lambda k: stats[k, key][0]) if scored else None
        body.append([label, _cell(control, n_inputs),
                     "" if key == "pointing_game" else _cell(chance, n_inputs),
                     f"{_method_labels([best])[best]}: {_cell(stats[best, key], n_inputs)}"
                     if best else ""])
    return (["", "## Controls: maps that ignore the model", "",
             "The same localisation scores for the input's own intensity (dB above the window's "
             "floor for audio, brightness for an X-ray) and for a uniform map (chance: the "
             "region's share of the plane). A method that localises no better than the input "
             "control points at what is loud or bright, which need not be what the model "
             "used. The metrics table above also scores each method's map of the randomised "
             "model (\"randomised model (control)\"): a method that finds the region as well "
             "without what the model learned shows the input's structure there.", ""]
            + _table(["Metric", "Input intensity", "Uniform (chance)", "Best method"], body))


def write_report(rows: list[dict[str, Any]], methods: Sequence[str],
                 agreements: list[dict[str, Any]], path: Path, *, spec, folder: Path,
                 command: str, metrics: Sequence[str], seed: int, plots: list[Path],
                 skipped: Sequence[str] = (), n_layers: int = RANDOMIZE_LAYERS,
                 mask_supervision: dict[str, Any] | None = None) -> Path:
    """The Markdown report (see the module docstring). ``mask_supervision`` (from the model
    card) adds a warning that the model was trained towards the ground-truth regions."""
    labels = _method_labels(methods)
    names = list(labels.values())
    columns = _metric_columns(rows)
    n_inputs = len({r["input"] for r in rows})
    stats = {(k, c): bootstrap_ci(_numbers(rows, k, c), seed=seed)
             for k in methods for c in columns + ["explain_seconds"]}
    means = {k: {c: stats[k, c][0] for c in columns} for k in methods}
    for k in methods:  # rank on the mean |rho|: +0.9 and -0.9 on two inputs is no pass
        if "randomization_rho" in means[k]:
            means[k]["randomization_rho"] = float(np.mean(np.abs(
                _numbers(rows, k, "randomization_rho"))))
    lines = [f"# Explanation quality: {spec.name} (`{spec.id}`)", "",
             f"{n_inputs} inputs from `{folder}`; methods: {', '.join(names)}; "
             f"metrics: {', '.join(metrics)}; seed {seed}"
             + (f"; the randomisation test re-initialises the top {n_layers} parameterised "
                f"layer(s)" if "randomization" in metrics else "") + ". Reproduce with:", "",
             f"    {command}", "",
             *_supervision_warning(mask_supervision),
             "## Ranking", "",
             "Mean rank over insertion AUC (high), deletion AUC (low), mean randomisation "
             "|rho| (low) and, where ground truth exists, pointing game, top-k IoU, share "
             "inside the region and share inside the lungs (high), computed on the method "
             "means (`xai_platform.evaluation.scorecard.rank_methods`).", "",
             ranking_markdown(rank_methods(means), labels), "",
             "## Metrics", "",
             f"Mean [95 % percentile-bootstrap interval, {N_BOOTSTRAP} resamples] over the "
             "inputs; (n=...) where a metric applies to fewer inputs.", ""]
    better = {c: {"zero": "near 0"}.get(VALUES[c].better, VALUES[c].better) if c in VALUES
              else "" for c in columns}
    lines += _table(["Metric", "Better"] + names,
                    [[_label(c), better[c]] + [_cell(stats[k, c], n_inputs) for k in methods]
                     for c in columns])
    lines += ["", "## Cost per input", "",
              "Mean seconds [95 % CI] and model evaluations of the explanation and of each "
              "metric.", ""]
    present = set(_columns(rows))
    body = [["Explanation"] + [f"{_cell(stats[k, 'explain_seconds'], n_inputs, '.3g')} s, "
                               f"{np.mean(_numbers(rows, k, 'explain_evaluations')):.0f} evals"
                               for k in methods]]
    for family in FAMILIES:
        if f"{family}_seconds" in present:
            body.append([family.replace("_", " ").capitalize()] + [
                f"{np.mean(_numbers(rows, k, f'{family}_seconds')):.3g} s, "
                f"{np.mean(_numbers(rows, k, f'{family}_evaluations')):.0f} evals"
                for k in methods])
    lines += _table(["Computed"] + names, body)
    counts = {k: Counter(code for r in rows if r["method"] == k for code in r["flags"].split())
              for k in methods}
    if any(counts.values()):
        lines += ["", "## Flags", "", "Inputs flagged, per method:", ""]
        codes = [c for c in FLAGS if any(counts[k][c] for k in methods)]
        lines += _table(["Flag"] + names,
                        [[FLAGS[c]] + [f"{counts[k][c]} of {n_inputs}" for k in methods]
                         for c in codes])
    if agreements:
        rho = np.mean([a["spearman"] for a in agreements], axis=0)
        iou = np.mean([a["top_k_iou"] for a in agreements], axis=0)
        lines += ["", "## Agreement between methods", "",
                  "Mean over inputs of the pairwise rank correlation (top-10 % IoU).", ""]
        lines += _table([""] + names,
                        [[names[i]] + [f"{rho[i, j]:.2f} ({iou[i, j]:.2f})"
                                       for j in range(len(methods))]
                         for i in range(len(methods))])
    lines += _control_section(rows, methods, stats, n_inputs, seed)
    if skipped:
        lines += ["", f"## Skipped inputs ({len(skipped)})", ""] + [f"- {x}" for x in skipped]
    lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    path.write_text("\n".join(lines))
    return path


def _mask_supervision(card: ModelCard | None) -> dict[str, Any] | None:
    return None if card is None or card.mask_supervision is None else {
        "layers": list(card.mask_supervision.layers), "weight": card.mask_supervision.weight}


def _supervision_warning(mask_supervision: dict[str, Any] | None) -> list[str]:
    if not mask_supervision:
        return []
    layers = ", ".join(f"`{x}`" for x in mask_supervision.get("layers", ())) or "(unnamed)"
    return [f"> **Localisation here is not an independent test.** This model was trained with "
            f"the benchmark's lesion masks as a second loss at {layers} (weight "
            f"{mask_supervision.get('weight')}): maps read at these layers, or after them, were "
            "trained towards the very regions they are scored against.", ""]


# --- command line ----------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``evaluate`` subcommand's options (the CLI adds --config, --device and --debug)."""
    parser.add_argument("--model", required=True, help="model id (see `models`)")
    parser.add_argument("--data", required=True, metavar="DIR|benchmark",
                        help="folder of inputs (optionally with metadata.csv) or 'benchmark'")
    parser.add_argument("--method", action="append", default=None,
                        help="method id (repeatable; default: every compatible method)")
    parser.add_argument("--n", type=int, default=None, help="evaluate N inputs drawn at random")
    parser.add_argument("--out", required=True, help="folder for metrics.csv, report.md, plots/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metrics", nargs="+", default=list(COSTLY_METRICS),
                        choices=COSTLY_METRICS, help="costly metrics to run (default: all); "
                        "localisation and lung focus run wherever masks exist")
    parser.add_argument("--split", default="test",
                        help="metadata split to evaluate (default: test; e.g. real)")
    parser.add_argument("--randomize-layers", type=int, default=RANDOMIZE_LAYERS, metavar="N",
                        help="top parameterised layers the randomisation test re-initialises "
                             f"(default {RANDOMIZE_LAYERS}: the classifier and the last "
                             "convolution with its normalisation)")
    parser.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                        help="a method's parameter (repeatable), e.g. --param "
                             "shap.estimator=kernel; the others keep their defaults")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                        help="run on Ray Data ('auto': a local Ray), one model per worker")
    parser.add_argument("--ray-workers", type=int, default=None, metavar="N",
                        help="workers in the pool (default: the cluster's CPUs)")
    return parser


def method_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--param METHOD.NAME=VALUE`` items as ``{method: {name: value}}`` (values typed as
    ``explain --param`` types them)."""
    from ..cli import _parse_value

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.strip().partition(".")
        if not sep or not dot or not method or not name:
            raise XAIError(f"--param takes METHOD.NAME=VALUE (e.g. shap.estimator=kernel), "
                           f"got '{item}'.")
        out.setdefault(method, {})[name] = _parse_value(value.strip())
    return out


def main(args: argparse.Namespace, config: PlatformConfig) -> int:
    """Run ``evaluate`` from parsed arguments; prints the written paths."""
    from ..models import ModelManager

    manager = ModelManager(config, device=getattr(args, "device", None),
                           batch_size=getattr(args, "batch_size", None))
    metrics = tuple(getattr(args, "metrics", None) or COSTLY_METRICS)
    configs = getattr(args, "config", None) or ()
    params = method_params(getattr(args, "param", None) or ())
    command = command_line(args.model, args.data, methods=args.method, n=args.n, out=args.out,
                           seed=args.seed, metrics=metrics, split=args.split,
                           n_layers=args.randomize_layers, configs=configs, params=params)
    paths = evaluate(manager, args.model, args.data, methods=args.method, n=args.n,
                     out=args.out, seed=args.seed, metrics=metrics, split=args.split,
                     n_layers=args.randomize_layers,
                     progress=not getattr(args, "quiet", False),
                     batch_size=getattr(args, "batch_size", None), command=command,
                     ray=getattr(args, "ray", None), ray_workers=getattr(args, "ray_workers", None),
                     params=params)
    print(f"metrics: {paths['csv']}\nreport:  {paths['report']}\nplots:   "
          f"{len(paths['plots'])} in {paths['report'].parent / 'plots'}")
    return 0
