"""Figures for binary detectors: ROC AUC, EER, sensitivity at a specificity, false-alarm and
miss rates at a threshold, reliability (ECE), and the report of one split for a model card."""

from __future__ import annotations

from typing import Any

import numpy as np

from xai_platform.config import ModelSpec


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(EER, threshold at which false-alarm and miss rates are equal), by interpolating the ROC."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    # Interpolate between the two ROC points around the crossing.
    j = min(i + 1, len(fpr) - 1)
    d0, d1 = fnr[i] - fpr[i], fnr[j] - fpr[j]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    w = float(np.clip(w, 0.0, 1.0))
    eer = (fpr[i] + w * (fpr[j] - fpr[i]) + fnr[i] + w * (fnr[j] - fnr[i])) / 2
    threshold = float(thresholds[i]) if np.isfinite(thresholds[i]) else float(thresholds[j])
    return float(eer), threshold


def sensitivity_at_specificity(scores: np.ndarray, labels: np.ndarray,
                               specificity: float = 0.9) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= 1.0 - specificity
    return float(tpr[ok].max()) if ok.any() else 0.0


def rates_at(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """false_alarm: negatives called positive (real speech called fake, normal called lesion);
    miss: positives called negative."""
    predicted = probabilities >= threshold
    neg, pos = labels == 0, labels == 1
    return {"false_alarm_rate": float(predicted[neg].mean()) if neg.any() else float("nan"),
            "miss_rate": float((~predicted[pos]).mean()) if pos.any() else float("nan"),
            "accuracy": float((predicted == pos).mean())}


def positive_logit(spec: ModelSpec, scores: np.ndarray) -> np.ndarray:
    """The logit of the positive class from a handle's explained scores (N, K): the logit itself
    for a sigmoid model (scores are [-z, z]), the logit difference for a 2-way softmax (log-
    probability difference for a probabilities head). The app divides this by the card's
    temperature."""
    positive = spec.positive_index
    if positive is None or scores.shape[1] != 2:
        raise ValueError("binary models only")
    if spec.output == "sigmoid":
        return scores[:, positive].astype(np.float64)
    return (scores[:, positive] - scores[:, 1 - positive]).astype(np.float64)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Reliability diagram data and the expected calibration error."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = idx == b
        if not sel.any():
            continue
        conf, acc = float(probabilities[sel].mean()), float(labels[sel].mean())
        rows.append({"bin": [float(edges[b]), float(edges[b + 1])], "count": int(sel.sum()),
                     "mean_probability": conf, "fraction_positive": acc})
        ece += sel.mean() * abs(conf - acc)
    return {"bins": rows, "ece": float(ece)}


def binary_report(spec: ModelSpec, scores: np.ndarray, labels: np.ndarray, *,
                  temperature: float, threshold: float) -> dict[str, Any]:
    """Every figure a card reports for one split, from a handle's explained scores.
    ``labels``: 1 for the positive class."""
    z = positive_logit(spec, scores)
    p = sigmoid(z / temperature)
    eer, _ = equal_error_rate(z, labels)
    return {"n": int(len(labels)), "n_positive": int(labels.sum()), "roc_auc": roc_auc(z, labels),
            "eer": eer, "sensitivity_at_90_specificity": sensitivity_at_specificity(z, labels, 0.9),
            **rates_at(p, labels, threshold), "threshold": threshold,
            "reliability": reliability(p, labels)}
