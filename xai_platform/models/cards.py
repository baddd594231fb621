"""Model cards: what training wrote beside a weights file.

``<weights stem>.card.json`` holds the machine-readable part (data, splits, metrics,
calibration, the training command); ``<weights stem>.card.md`` the same for people. The
manager reads the calibration (temperature, decision threshold) from the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .handle import Calibration

_WEIGHT_SUFFIXES = (".weights.h5", ".keras", ".pt", ".pth", ".h5", ".safetensors")


def card_stem(weights: Path) -> Path:
    name = weights.name
    for suffix in _WEIGHT_SUFFIXES:
        if name.endswith(suffix):
            return weights.with_name(name[: -len(suffix)])
    return weights.with_name(weights.stem)


def card_path(weights: Path, *, kind: str = "json") -> Path:
    stem = card_stem(weights)
    return stem.with_name(f"{stem.name}.card.{kind}")


def read_card(weights: Path | None) -> dict[str, Any] | None:
    """The JSON model card beside ``weights``, or None when there is none (or it is unreadable:
    a card is documentation, never a reason not to load a model)."""
    if weights is None:
        return None
    path = card_path(weights)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def calibration_from_card(card: dict[str, Any] | None) -> Calibration:
    cal = (card or {}).get("calibration") or {}
    try:
        temperature = float(cal.get("temperature", 1.0))
        threshold = cal.get("threshold")
        threshold = None if threshold is None else float(threshold)
    except (TypeError, ValueError):
        return Calibration()
    if not temperature > 0:
        temperature = 1.0
    return Calibration(temperature=temperature, threshold=threshold)
