"""Source-balanced draws for the audio trainer (``--balance-sources``): a small source of real
voices is drawn more often, each class keeps its number of draws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.audio.data import Clip
from training.audio.features import FeatureSet, source_balancing
from training.audio.train import source_draws


def _set() -> FeatureSet:
    """Real: 90 windows of "big", 10 of "small"; fake: 60 windows of "big", 40 of "small"
    (one window per clip)."""
    clips = ([Clip(Path(f"r{i}"), "real", "train", source="big") for i in range(90)]
             + [Clip(Path(f"s{i}"), "real", "train", source="small") for i in range(10)]
             + [Clip(Path(f"f{i}"), "fake", "train", source="big") for i in range(60)]
             + [Clip(Path(f"g{i}"), "fake", "train", source="small") for i in range(40)])
    y = np.array([0 if c.label == "real" else 1 for c in clips])
    return FeatureSet(np.zeros((len(clips), 2, 2), np.float32), y, np.arange(len(clips)), clips, y)


def _share(fs: FeatureSet, w: np.ndarray, label: str, source: str) -> float:
    rows = np.array([c.label == label and c.source == source for c in fs.clips])
    return float(w[rows].sum() / w[np.array([c.label == label for c in fs.clips])].sum())


def test_the_exponent_moves_a_small_source_from_its_size_to_an_equal_share():
    fs = _set()
    assert _share(fs, source_balancing(fs, 0.0), "real", "small") == pytest.approx(0.10)
    assert _share(fs, source_balancing(fs, 1.0), "real", "small") == pytest.approx(0.50)
    half = _share(fs, source_balancing(fs, 0.5), "real", "small")
    assert half == pytest.approx(np.sqrt(10) / (np.sqrt(10) + np.sqrt(90)))  # 0.25
    for alpha in (0.0, 0.5, 1.0):
        w = source_balancing(fs, alpha)
        assert w[fs.y == 0].sum() == pytest.approx(100) and w[fs.y == 1].sum() == pytest.approx(100)
    with pytest.raises(ValueError, match="between 0 and 1"):
        source_balancing(fs, 1.5)


def test_balancing_on_top_of_other_weights_keeps_the_class_totals():
    fs = _set()
    other = np.where(np.arange(200) % 2 == 0, 2.0, 0.5)
    w = source_draws(fs, 1.0, other)
    assert w[fs.y == 0].sum() == pytest.approx(other[fs.y == 0].sum())
    assert w[fs.y == 1].sum() == pytest.approx(other[fs.y == 1].sum())
    assert _share(fs, w, "real", "small") > 0.4
    assert source_draws(fs, None, other) is other
