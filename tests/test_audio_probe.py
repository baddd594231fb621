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


def test_the_strength_is_chosen_on_validation_and_unseen_clips_get_the_same_fit():
    rng = np.random.default_rng(2)
    n, d = 300, 200  # few clips, many dimensions: strong shrinkage should win on validation
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d))
    x[:, :5] += 0.8 * y[:, None]
    split = np.array(["train", "validation", "test"])[np.arange(n) % 3]
    extra = rng.normal(size=(40, d))
    extra[20:, :5] += 0.8
    r = probe.linear_probe(x, y, split, c=[1e-3, 1e-2, 1e2], extra=extra)
    aucs = {c: probe.linear_probe(x, y, split, c=c)["validation_auc"] for c in (1e-3, 1e-2, 1e2)}
    assert r["c"] == max(aucs, key=aucs.get) and r["validation_auc"] == max(aucs.values())
    assert r["extra_scores"].shape == (40,)
    assert r["extra_scores"][20:].mean() > r["extra_scores"][:20].mean()  # the same direction


def test_wild_clips_are_reported_per_source_at_the_validation_threshold():
    from pathlib import Path

    from training.audio.data import Clip

    rng = np.random.default_rng(3)
    n = 600
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 4))
    x[:, 0] += 3.0 * y
    splits = ["train", "validation", "test"]
    kept = [Clip(path=Path(f"c{i}.wav"), label="fake" if y[i] else "real",
                 split=splits[i % 3], source="s", generator="g" if y[i] else "")
            for i in range(n)]
    wild = [Clip(path=Path(f"w{i}.wav"), label="real", split="wild", source=src)
            for i, src in enumerate(["like-real"] * 30 + ["like-fake"] * 30)]
    x_wild = rng.normal(size=(60, 4))
    x_wild[30:, 0] += 3.0  # the second source sounds like the fakes
    r = probe.split_report(kept, x, wild=wild, x_wild=x_wild)
    assert r["wild_called_fake"]["like-real"] < 0.2 < 0.8 < r["wild_called_fake"]["like-fake"]
    assert 0.6 < r["wild_auc"] < 0.9  # half of the wild clips look fake
