"""The cross-set-up probe: a linear read-out fitted on train, its threshold from validation,
and ROC AUC within each source."""

from __future__ import annotations

import numpy as np

from training.audio import probe


def test_within_source_auc_separates_a_set_up_shift_from_no_signal():
    # Two sources: in "a" fakes score higher than reals (AUC 1); in "b" every clip sits higher
    # (a set-up shift) with no order inside it (AUC 0.5). Pooled, the shift would look like
    # signal; within each source it does not.
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9, 5.0, 5.0, 5.0, 5.0])
    src = np.array(["a"] * 4 + ["b"] * 4)
    assert probe.within_source_auc(y, s, src) == {"a": 1.0, "b": 0.5}


def test_the_linear_probe_finds_a_direction_that_holds_across_splits():
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 8))
    x[:, 0] += 3.0 * y  # one direction carries the label in every split
    split = np.array(["train", "validation", "test"])[np.arange(n) % 3]
    r = probe.linear_probe(x, y, split)
    assert r["test_eer"] < 0.1 and r["validation_auc"] > 0.95
    noise = probe.linear_probe(rng.normal(size=(n, 8)), y, split)
    assert noise["test_eer"] > 0.35  # nothing to find: near chance
    from training.metrics import equal_error_rate

    eer, thr = equal_error_rate(r["scores"][split == "validation"], y[split == "validation"])
    assert abs(eer - r["validation_eer"]) < 1e-12 and thr == r["threshold"]


def test_a_cannot_tell_band_keeps_each_verdicts_validation_errors_in_bound():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    p = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.2, len(y)), 0, 1)
    t_real, t_fake = probe.two_thresholds(y, p, 0.05)
    assert t_real < t_fake
    v = probe.band_verdicts(y, p, t_real, t_fake)
    assert v["reals_called_fake"] <= 0.05 + 1e-9 and v["fakes_called_real"] <= 0.05 + 1e-9
    assert 0 < v["coverage"] < 1
    # where the scores carry nothing, the band covers almost everything: no verdict
    flat = probe.band_verdicts(y, rng.random(len(y)), *probe.two_thresholds(y, rng.random(len(y)), 0.05))
    assert flat["coverage"] < 0.25
