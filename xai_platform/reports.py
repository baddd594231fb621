"""Reports people can send: one self-contained HTML file each.

Everything is inside the file: figures and the input are ``data:`` URIs, the style is inline,
there is no script and a Content-Security-Policy that forbids any fetch, so the report opens
offline, in a mail client or an archive, and tells nobody that it was opened.

Two kinds, one style:

* :func:`explanation_report`: one input, one model, one or more methods (the Classification
  and XAI Comparison pages' "Download report", ``explain --report``): the input, the
  prediction with its threshold and calibration, the model card's summary (training data, test
  figures, what the model was never trained on), each method's figure and scorecard where
  computed, the ranking and agreement matrix for two or more methods, and every record.
* :func:`batch_report`: a whole ``explain-batch`` run: counts, failures with their errors,
  the distribution of each score per method, the worst cases with their figures, and what
  reproduces the run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import shown_weights
from .explanation import Explanation, Prediction, counted

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .config import AppSettings, ModelSpec
    from .evaluation.scorecard import Scorecard
    from .modalities.base import Modality
    from .models.cards import ModelCard
    from .models.handle import Calibration

#: Inputs up to this size are embedded (audio becomes a player); larger ones are named only.
EMBED_LIMIT_BYTES = 8_000_000
CSP = ("default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'; "
       "form-action 'none'; base-uri 'none'")
STYLE = """
body{font-family:"DejaVu Sans",Arial,sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;
color:#1d1d1f;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ccc;
padding-bottom:.2em;margin-top:1.6em}h3{font-size:1.05em;margin-bottom:.3em}
.meta{color:#555;font-size:.9em}.warn{background:#fff4e5;border-left:4px solid #e08a00;
padding:.5em .8em;margin:.6em 0}.bad{color:#b2182b;font-weight:bold}
.verdict{font-size:1.15em;font-weight:bold}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #d0d0d0;
padding:.25em .55em;text-align:left;vertical-align:top}th{background:#f3f3f3}
img{max-width:100%;height:auto}img.input{min-height:160px;max-height:320px;border:1px solid #ddd;image-rendering:pixelated}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em;white-space:pre-wrap}
.grid{display:flex;flex-wrap:wrap;gap:16px}.grid>div{flex:1 1 340px}
"""


# --- embedding ---------------------------------------------------------------------------

def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_uri(fig: Figure, *, dpi: int = 100) -> str:
    """A matplotlib figure as a PNG ``data:`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return data_uri(buf.getvalue(), "image/png")


def picture_uri(pixels: np.ndarray) -> str:
    """An (H, W) or (H, W, 3) uint8 picture as a PNG ``data:`` URI."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buf, format="PNG")
    return data_uri(buf.getvalue(), "image/png")


def file_uri(path: Path, mime: str = "image/png") -> str | None:
    """A file on disk as a ``data:`` URI (None when it is missing)."""
    try:
        return data_uri(Path(path).read_bytes(), mime)
    except OSError:
        return None


_AUDIO_MIME = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg",
               ".mp3": "audio/mpeg", ".m4a": "audio/mp4"}


@dataclass(frozen=True)
class ReportInput:
    """What a report shows of the input: its name, digest and size, a picture (an image
    input as loaded) and, for a small enough recording, the recording itself."""

    name: str
    sha256: str
    size_bytes: int
    picture: np.ndarray | None = None  # (H, W) or (H, W, 3) uint8
    audio: tuple[str, bytes] | None = None  # (MIME type, file bytes)

    @classmethod
    def from_path(cls, path: Path, modality: Modality, *, settings: AppSettings) -> ReportInput:
        from .files import sha256

        size = path.stat().st_size
        picture = audio = None
        if modality.input_kind == "audio":
            mime = _AUDIO_MIME.get(path.suffix.lower())
            if mime and size <= EMBED_LIMIT_BYTES:
                audio = (mime, path.read_bytes())
        else:
            try:
                picture = modality.preview(path, settings)
            except Exception:  # noqa: BLE001 - the picture is a courtesy; the figures show it
                picture = None
        return cls(path.name, sha256(path), size, picture, audio)


# --- building blocks ----------------------------------------------------------------------

def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], *, raw: bool = False) -> str:
    cell = (lambda v: str(v)) if raw else esc
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                      for row in rows) + "</table>")


def _num(value: Any, digits: str = ".3f") -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return esc(value) if value not in (None, "") else "–"
    return f"{v:{digits}}" if math.isfinite(v) else "n/a"


def page(title: str, body: Sequence[str]) -> str:
    """The whole document: inline style, no script, a policy that forbids any fetch."""
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=\"meta\">Written by the XAI Platform on {made}. "
            "Self-contained: every figure is inside this file.</p>"
            + "\n".join(body) + "</body></html>\n")


def input_section(source: ReportInput) -> str:
    parts = ["<h2>Input</h2>",
             f"<p><b>{esc(source.name)}</b> · {source.size_bytes / 1e3:,.1f} kB · sha256 "
             f"<code>{esc(source.sha256)}</code></p>"]
    if source.picture is not None:
        parts.append(f"<img class=\"input\" alt=\"the input as loaded\" "
                     f"src=\"{picture_uri(source.picture)}\">")
    if source.audio is not None:
        mime, raw = source.audio
        parts.append(f"<p><audio controls src=\"{data_uri(raw, mime)}\"></audio></p>")
    return "\n".join(parts)


def prediction_section(prediction: Prediction, *, calibration: Calibration | None,
                       card: ModelCard | None, notes: Sequence[str] = ()) -> str:
    """The verdict, every class's probability, the decision threshold and the calibration."""
    p = prediction
    parts = ["<h2>Prediction</h2>",
             f"<p class=\"verdict{' bad' if p.untrained or p.withheld or p.undecided else ''}\">"
             f"{esc(p.verdict)}</p>"]
    rows = [[label, f"{float(v):.4f}"] for label, v in p.ranked()]
    parts.append(_table(["Class", "Probability"], rows))
    parts += _shares_tables(p)
    lines = []
    if p.threshold is not None and p.positive is not None:
        lines.append(f"Decision threshold on p({esc(p.labels[p.positive])}): "
                     f"<b>{p.threshold:.3f}</b>"
                     + (" (the default 0.5: the model has no calibrated threshold)"
                        if card is None or card.calibration.threshold is None else
                        f" (chosen on {esc(card.calibration.fitted_on)} data)"))
    elif p.multilabel:
        lines.append("Multi-label: each finding at or above 0.5 after the library's calibration.")
    if p.band is not None and p.positive is not None:
        fitted = (card.calibration.band or {}).get("fitted_on") if card is not None else None
        lines.append(f"'Cannot tell' band on p({esc(p.labels[p.positive])}): "
                     f"<b>{p.band[0]:.3f}-{p.band[1]:.3f}</b>, no verdict inside it"
                     + (f" (fitted on {esc(fitted)})" if fitted else ""))
    if calibration is not None and calibration.temperature != 1.0:
        how = card.calibration.method if card is not None and card.calibration.method else \
            "temperature scaling"
        lines.append(f"Calibration: {esc(how)}; temperature {calibration.temperature:.3f}"
                     + (f", fitted on {esc(card.calibration.fitted_on)} data" if card else ""))
    else:
        lines.append("Calibration: none (probabilities as the model outputs them).")
    if card is not None and card.calibration.verdict_rule:
        lines.append(f"Verdict rule: {esc(card.calibration.verdict_rule)}")
    if p.withheld:
        lines.append(f"<span class=\"bad\">Verdict withheld</span>: {esc(p.reason)}")
    parts.append("<ul>" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>")
    if notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes)
                     + "</ul>")
    return "\n".join(parts)


def _shares_tables(p: Prediction) -> list[str]:
    """Where the card has them, both sides whatever the verdict: how often real voices of
    set-ups the model never heard reached this score, and how often its test split's fakes
    scored as low, group by group (the verdict quotes only the pool and the worst group)."""
    if p.positive is None:
        return []
    pos = p.labels[p.positive]
    parts = []
    for rates, caption, group in (
            (p.real_shares, f"Real voices at or above this p({pos}), by recording set-up, each "
             "scored by a fit that never heard it", "set-up"),
            (p.fake_shares, f"Test split clips labelled {pos} at or below this p({pos}), by "
             "generator", "generator")):
        if not rates:
            continue
        by = sorted(rates["by_group"].items(), key=lambda kv: (-kv[1]["share"], kv[0]))
        rows = [[name, r["n"], f"{r['share']:.1%}"] for name, r in by]
        rows.append(["all", sum(r["n"] for _, r in by), f"{rates['pooled']:.1%}"])
        parts += [f"<h3>{esc(caption)}</h3>", _table([group, "clips", "share"], rows)]
    return parts


def never_trained_on(spec: ModelSpec, card: ModelCard | None) -> list[str]:
    """What the model never saw in training, read from its card and config entry."""
    if card is None:
        return ["No model card: nothing records what this model was trained on."]
    out = []
    train = card.splits.get("train")
    seen = set(train.languages or ()) if train is not None else set()
    for split in ("validation", "test"):
        info = card.splits.get(split)
        unseen = sorted(set(info.languages or ()) - seen) if info is not None else []
        if unseen and seen:
            out.append(f"languages of the {split} split, never heard in training: "
                       f"{', '.join(unseen)}")
    if card.data.generators_trained_on:
        out.append("synthetic voices from any generator other than "
                   f"{', '.join(card.data.generators_trained_on)}")
    background = card.data.details.get("real_background")
    if isinstance(background, Mapping) and background.get("file"):
        out.append("real radiographs from any patient, scanner or hospital: its real images "
                   f"were all built on one radiograph ({background['file']})")
    out.append(f"any data unlike its training set ({card.data.kind}, {card.data.root})")
    if card.mask_supervision is not None:
        out.append("(not a gap, a caveat) its layers "
                   f"{', '.join(card.mask_supervision.layers)} were trained towards the "
                   "benchmark's lesion masks, so maps read there are not an independent test")
    if spec.notice:
        out.append(spec.notice)
    return out


def card_section(spec: ModelSpec, card: ModelCard | None, *, weights_sha256: str | None) -> str:
    """The model card's summary: training data, test figures, what it was never trained on."""
    parts = ["<h2>Model</h2>",
             f"<p><b>{esc(spec.name)}</b> (<code>{esc(spec.id)}</code>, {esc(spec.framework)}, "
             f"{esc(spec.modality)}). {esc(spec.description or '')}</p>",
             "<p class=\"meta\">Weights: "
             f"{esc(shown_weights(spec.weights) or 'none (untrained)')}; sha256 "
             f"<code>{esc(weights_sha256 or '–')}</code></p>"]
    if card is None:
        parts.append("<p class=\"warn\">No model card: this model has no recorded training "
                     "data, test figures or calibration. Read its outputs as untested.</p>")
    else:
        d = card.data
        parts.append(f"<h3>Training data</h3><p>{esc(d.kind)} at <code>{esc(d.root)}</code>"
                     + (f", split {esc(d.split_rule)}" if d.split_rule else "")
                     + (f". Built with <code>{esc(d.command)}</code>" if d.command else "")
                     + ".</p>")
        languages = any(s.languages for s in card.splits.values())
        rows = [[name, s.n, s.n_positive] + ([", ".join(s.languages or ()) or "–"]
                                             if languages else [])
                for name, s in card.splits.items()]
        parts.append(_table(["Split", "Items", "Positive"] + (["Languages"] if languages else []),
                            rows))
        test = card.metrics.get("test")
        if test is not None:
            parts.append("<h3>Test figures</h3>" + _table(
                ["ROC AUC", "EER", "Accuracy", "Sensitivity at 90% specificity",
                 "False alarms", "Misses", "Threshold", "n"],
                [[_num(test.roc_auc), _num(test.eer), _num(test.accuracy),
                  _num(test.sensitivity_at_90_specificity), _num(test.false_alarm_rate),
                  _num(test.miss_rate), _num(test.threshold), test.n]]))
    parts.append("<h3>Never trained on</h3><ul>"
                 + "".join(f"<li>{esc(x)}</li>" for x in never_trained_on(spec, card))
                 + "</ul>")
    return "\n".join(parts)


def scorecard_table(card: Scorecard) -> str:
    """A scorecard as an HTML table (metric | value | better) with its flags and cost."""
    from .evaluation.scorecard import VALUES

    rows = []
    for name, info in VALUES.items():
        if name in card.values:
            rows.append([info.label, _num(card.values[name]),
                         {"zero": "near 0"}.get(info.better, info.better)])
    cost = card.metric_cost
    text = _table(["Metric", "Value", "Better"], rows)
    text += f"<p class=\"meta\">Metrics cost {cost.seconds:.2f} s, {counted(cost.evaluations)}.</p>"
    if card.flags:
        text += "".join(f"<p class=\"warn\">⚠ {esc(f)}</p>" for f in card.flags.values())
    return text


def method_section(expl: Explanation, card: Scorecard | None) -> str:
    from .visualization.figure import to_png

    head = (f"<h3>{esc(expl.method_label)}</h3><p class=\"meta\">explaining "
            f"'{esc(expl.target_label)}' · {expl.seconds:.2f} s · {counted(expl.n_evaluations)}"
            + (f" · seed {expl.seed}" if expl.seed is not None else "") + "</p>")
    flat = f"<p class=\"warn\">{esc(expl.flat_note)}</p>" if expl.flat else ""
    figure = (f"<img alt=\"{esc(expl.method_label)}: input | heatmap | overlay\" "
              f"src=\"{data_uri(to_png(expl, dpi=90), 'image/png')}\">")
    score = scorecard_table(card) if card is not None else \
        "<p class=\"meta\">No scorecard computed for this method.</p>"
    return head + flat + figure + score


def comparison_section(explanations: Sequence[Explanation],
                       cards: Mapping[str, Scorecard]) -> str:
    """The ranking (where every method has a scorecard) and the agreement matrix."""
    from .evaluation.metrics import agreement
    from .evaluation.scorecard import FAILING_FLAGS, rank_methods, render_agreement, trust_verdict

    labels = {e.method: e.method_label for e in explanations}
    parts = ["<h2>Comparison</h2>"]
    if cards and all(e.method in cards for e in explanations):
        ranking = rank_methods({e.method: cards[e.method] for e in explanations})
        parts.append(f"<p>{esc(trust_verdict(ranking).replace('**', ''))}</p>")
        parts.append(_table(["Rank", "Method", "Checks", "Mean rank"], [
            [r.rank, labels[r.method],
             "passes" if r.passes else "fails: " + "; ".join(FAILING_FLAGS[f] for f in r.failed),
             f"{r.mean_rank:.2f}"] for r in ranking]))
    matrix = agreement({e.method: e.heatmap for e in explanations})
    names = [labels[k] for k in matrix["methods"]]
    fig = render_agreement(matrix["spearman"], names, title="Rank correlation between maps")
    parts.append("<h3>Agreement between methods</h3><p>Rank correlation between every two maps "
                 "(1: the same order of cells; near 0: unrelated); top-10% IoU in brackets.</p>")
    parts.append(f"<img alt=\"agreement matrix\" src=\"{figure_uri(fig)}\">")
    rho, iou = matrix["spearman"], matrix["top_k_iou"]
    parts.append(_table([""] + names, [[names[i]] + [f"{rho[i, j]:.2f} ({iou[i, j]:.2f})"
                                                     for j in range(len(names))]
                                       for i in range(len(names))]))
    return "\n".join(parts)


def records_section(records: Sequence[Mapping[str, Any]], *, heading: str = "Reproducibility"
                    ) -> str:
    """Each record (model, weights hash, method, parameters, seed, library versions, timings)
    in full, folded."""
    parts = [f"<h2>{esc(heading)}</h2>",
             "<p>Everything needed to compute the same maps again: the weights' sha256, the "
             "method, its parameters and seed, and the library versions.</p>"]
    for record in records:
        name = record.get("method_label") or record.get("method") or "record"
        parts.append(f"<details open><summary>{esc(name)}</summary><pre>"
                     f"{esc(json.dumps(record, indent=2, default=str))}</pre></details>")
    return "\n".join(parts)


# --- the two reports ----------------------------------------------------------------------

def explanation_report(source: ReportInput, prediction: Prediction, *, spec: ModelSpec,
                       card: ModelCard | None, calibration: Calibration | None,
                       explanations: Sequence[Explanation],
                       records: Sequence[Mapping[str, Any]],
                       cards: Mapping[str, Scorecard] | None = None,
                       notes: Sequence[str] = (), title: str | None = None) -> str:
    """The report of one input (module docstring); returns the HTML text."""
    cards = cards or {}
    weights = next((r.get("weights_sha256") for r in records if r.get("weights_sha256")), None)
    body = [input_section(source),
            prediction_section(prediction, calibration=calibration, card=card, notes=notes),
            card_section(spec, card, weights_sha256=weights),
            "<h2>Explanations</h2>"]
    body += [method_section(e, cards.get(e.method)) for e in explanations]
    if len(explanations) > 1:
        body.append(comparison_section(explanations, cards))
    body.append(records_section(records))
    return page(title or f"{source.name}: {spec.name}", body)


def _distribution_figure(values: Mapping[str, Sequence[float]], title: str) -> Figure:
    """A box plot with the points of one score per method."""
    from matplotlib.figure import Figure

    names = list(values)
    fig = Figure(figsize=(1.8 + 1.1 * len(names), 3.0), layout="constrained")
    ax = fig.add_subplot()
    data = [np.asarray(values[k], dtype=float) for k in names]
    ax.boxplot(data, showfliers=False)
    rng = np.random.default_rng(0)  # fixed jitter: the same report for the same run
    for i, v in enumerate(data, 1):
        ax.plot(i + rng.uniform(-0.12, 0.12, v.size), v, "o", ms=3, alpha=0.6, color="#4c72b0")
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


#: The index columns whose distribution the batch report draws, with how "worse" reads.
SCORE_COLUMNS = {"score": ("Probability of the predicted class", None),
                 "insertion_auc": ("Insertion AUC (higher is better)", "low"),
                 "deletion_auc": ("Deletion AUC (lower is better)", "high"),
                 "faithfulness_margin": ("Insertion minus deletion AUC", "low"),
                 "randomization_rho": ("Randomisation rho (near 0 is better)", "abs"),
                 "stability_spearman": ("Seed rank correlation (higher is better)", "low"),
                 "mass_inside": ("Share inside the region (higher is better)", "low"),
                 "lung_share": ("Share inside the lungs (higher is better)", "low"),
                 "explain_seconds": ("Explanation time (s)", None)}


def _finite(rows: Sequence[Mapping[str, Any]], column: str) -> list[float]:
    out = []
    for r in rows:
        try:
            v = float(r.get(column))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            out.append(v)
    return out


def worst_cases(rows: Sequence[Mapping[str, Any]], method: str, *, n: int = 3
                ) -> tuple[str | None, list[Mapping[str, Any]]]:
    """(the column that ranks them, the ``n`` worst rows of ``method``): the lowest
    insertion-minus-deletion margin where faithfulness ran, else the largest |randomisation
    rho|, else the lowest seed agreement; (None, []) when no score was computed."""
    own = [r for r in rows if r.get("method") == method and r.get("status") == "ok"]
    for column in ("faithfulness_margin", "randomization_rho", "stability_spearman",
                   "mass_inside", "lung_share"):
        scored = [r for r in own if _finite([r], column)]
        if scored:
            how = SCORE_COLUMNS[column][1]
            key = (lambda r: -abs(float(r[column]))) if how == "abs" else \
                (lambda r: -float(r[column])) if how == "high" else (lambda r: float(r[column]))
            return column, sorted(scored, key=key)[:n]
    return None, []


def batch_report(rows: Sequence[Mapping[str, Any]], *, spec: ModelSpec, card: ModelCard | None,
                 methods: Sequence[str], labels: Mapping[str, str], settings: Mapping[str, Any],
                 command: str, libraries: Mapping[str, str], weights_sha256: str | None,
                 worst_n: int = 3) -> str:
    """The summary of an ``explain-batch`` run (module docstring) from its index rows."""
    inputs = sorted({r["input"] for r in rows})
    failed = [r for r in rows if r.get("status") != "ok"]
    ok = [r for r in rows if r.get("status") == "ok"]
    reused = sum(1 for r in ok if r.get("resumed"))
    body = [f"<p>{len(inputs)} inputs × {len(methods)} methods: <b>{len(ok)}</b> explanations, "
            f"<b>{len(failed)}</b> failed, {reused} reused from an earlier run.</p>"]
    if any(r.get("untrained") is True for r in ok):
        body.append("<p class=\"warn\"><b>Untrained model</b>: its outputs are random "
                    "weights' outputs, never a verdict; the maps show how the methods behave, "
                    "not what a trained model uses.</p>")
    withheld = sum(1 for r in ok if r.get("withheld") is True) // max(len(methods), 1)
    if withheld:
        body.append(f"<p class=\"warn\">{withheld} input(s) had their verdict withheld "
                    "(unlike the model's training data).</p>")
    predicted: dict[str, int] = {}
    for r in ok:
        if r.get("method") == methods[0]:
            predicted[str(r.get("prediction"))] = predicted.get(str(r.get("prediction")), 0) + 1
    if predicted:
        body.append("<h2>Predictions</h2>" + _table(["Predicted", "Inputs"],
                                                    sorted(predicted.items())))
    body.append(card_section(spec, card, weights_sha256=weights_sha256))
    body.append("<h2>Scores per method</h2>")
    graphs = []
    for column, (title, _) in SCORE_COLUMNS.items():
        values = {labels[m]: _finite([r for r in ok if r.get("method") == m], column)
                  for m in methods}
        if any(values.values()):
            graphs.append(f"<div><img alt=\"{esc(title)}\" src=\""
                          f"{figure_uri(_distribution_figure(values, title))}\"></div>")
            rows_ = [[k, len(v), _num(np.mean(v)) if v else "–", _num(np.median(v)) if v else "–",
                      _num(min(v)) if v else "–", _num(max(v)) if v else "–"]
                     for k, v in values.items()]
            graphs.append(f"<div><h3>{esc(title)}</h3>"
                          + _table(["Method", "n", "Mean", "Median", "Min", "Max"], rows_)
                          + "</div>")
    body.append("<div class=\"grid\">" + "".join(graphs) + "</div>")
    body.append("<h2>Worst cases</h2>")
    for m in methods:
        column, worst = worst_cases(rows, m, n=worst_n)
        if column is None:
            body.append(f"<h3>{esc(labels[m])}</h3><p class=\"meta\">No quality score computed "
                        "(run with --metrics faithfulness, or masks in the CSV): nothing ranks "
                        "the cases.</p>")
            continue
        body.append(f"<h3>{esc(labels[m])}: the {len(worst)} worst by "
                    f"{esc(SCORE_COLUMNS[column][0])}</h3>")
        for r in worst:
            uri = file_uri(Path(str(r.get("figure"))))
            body.append(f"<p><b>{esc(r['input'])}</b>: {esc(column)} {_num(r[column])}; "
                        f"predicted {esc(r.get('prediction'))} ({_num(r.get('score'))})</p>"
                        + (f"<img alt=\"{esc(r['input'])}\" src=\"{uri}\">" if uri else
                           "<p class=\"meta\">(figure missing)</p>"))
    if failed:
        body.append(f"<h2>Failed ({len(failed)})</h2>"
                    + _table(["Input", "Method", "Error"],
                             [[r["input"], r.get("method", ""), r.get("error", "")]
                              for r in failed]))
    record = {"command": command, "model": spec.id, "weights_sha256": weights_sha256,
              **settings, "libraries": dict(libraries)}
    body.append(records_section([record | {"method_label": "the run"}]))
    return page(f"Batch explanations: {spec.name} ({len(inputs)} inputs)", body)


__all__ = ["ReportInput", "batch_report", "data_uri", "explanation_report", "never_trained_on",
           "page", "worst_cases"]
