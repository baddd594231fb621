"""Choosing the segment rule on validation recordings: the figures and the choice."""

from __future__ import annotations

import numpy as np

from training.audio.segments import Recording, RuleFigures, choose, evaluate, wilson_upper


def _recording(fake: tuple[float, float] | None, seconds: float = 20.0) -> Recording:
    return Recording("xx", np.zeros(int(seconds * 100), np.float32), 100, fake)


def test_figures_count_recordings_and_measure_the_boundaries():
    starts = np.arange(19, dtype=np.float64)  # 2 s windows, 1 s hop, 20 s
    partial = np.where((starts >= 6) & (starts <= 10), 0.95, 0.1)  # fake 6-12 s
    noisy_real = np.where(starts == 3, 0.95, 0.1)  # one stray window
    recs = [_recording((6.0, 12.0)), _recording(None)]
    scores = [(partial, starts), (noisy_real, starts)]
    one = evaluate(recs, scores, threshold=0.9, window_s=2.0, k=1)
    assert (one.detection, one.false_alarms) == (1.0, 1.0)
    three = evaluate(recs, scores, threshold=0.9, window_s=2.0, k=3)
    assert (three.detection, three.false_alarms) == (1.0, 0.0)
    assert three.start_error_s == 0.0 and three.end_error_s == 0.0  # windows 6..10 end at 12
    six = evaluate(recs, scores, threshold=0.9, window_s=2.0, k=6)
    assert six.detection == 0.0 and six.start_error_s is None
    mean_only = evaluate(recs, scores, threshold=0.9, window_s=2.0, k=None)
    assert mean_only.detection == 0.0


def test_the_choice_keeps_false_alarms_under_the_cap():
    figs = [RuleFigures(None, 0.2, 0.0, None, None, 10, 10),
            RuleFigures(1, 1.0, 0.3, 1, 1, 10, 10), RuleFigures(2, 0.9, 0.05, 1, 1, 10, 10),
            RuleFigures(3, 0.9, 0.0, 1, 1, 10, 10), RuleFigures(4, 0.6, 0.0, 1, 1, 10, 10)]
    assert choose(figs, 0.05).k == 3  # 2 and 3 detect as many: the stricter wins
    assert choose(figs, 0.5).k == 1
    assert choose([RuleFigures(2, 1.0, 0.5, 1, 1, 1, 1), RuleFigures(5, 1.0, 0.4, 1, 1, 1, 1)],
                  0.05).k == 5


def test_a_few_clean_real_recordings_do_not_license_a_one_window_rule():
    """0 false alarms in 40 real recordings of 18 windows each still allows ~0.5% stray
    windows: one window would then flag ~10% of recordings, two in a row almost none."""
    starts = np.arange(18, dtype=np.float64)
    recs = [_recording(None)] * 40 + [_recording((6.0, 12.0))]
    fake = np.where((starts >= 6) & (starts <= 10), 0.95, 0.1)
    scores = [(np.full(18, 0.1), starts)] * 40 + [(fake, starts)]
    figs = [evaluate(recs, scores, threshold=0.9, window_s=2.0, k=k) for k in (1, 2, 3)]
    assert [f.false_alarms for f in figs] == [0.0, 0.0, 0.0]
    assert figs[0].false_alarm_bound > 0.05 > figs[1].false_alarm_bound
    assert choose(figs, 0.05).k == 3  # 2 and 3 both detect it: the stricter wins
    assert abs(wilson_upper(0, 720) - 0.0053) < 0.0005
