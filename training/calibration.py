"""Calibration fitted on validation data: a temperature on the positive logit and a decision
threshold (stored in the model card, where :class:`xai_platform.models.ModelManager` reads
them), and the reliability diagram before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .metrics import equal_error_rate


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T minimising the validation log-loss of sigmoid(logit / T) (Guo et al., 2017)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0, s) - y * s))

    best = minimize_scalar(nll, bounds=(-4, 4), method="bounded")
    return float(np.exp(best.x))


def choose_threshold(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Decision threshold chosen on validation data: the equal-error point (false alarms and
    misses equally likely), so the verdict users see is balanced, not only the ranking."""
    return float(np.clip(equal_error_rate(probabilities, labels)[1], 1e-4, 1 - 1e-4))


def plot_reliability(before: dict[str, Any], after: dict[str, Any], path: Path, *, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.4, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
    for data, label, style in ((before, "raw", "o-"), (after, "calibrated", "s-")):
        xs = [r["mean_probability"] for r in data["bins"]]
        ys = [r["fraction_positive"] for r in data["bins"]]
        ax.plot(xs, ys, style, ms=4, label=f"{label} (ECE {data['ece']:.3f})")
    ax.set_xlabel("predicted probability of the positive class")
    ax.set_ylabel("observed fraction positive")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
