"""Pipeline (windows, verdict rule, untrained marking) and the three-panel figure."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_torch, tone
from xai_platform.explanation import Prediction
from xai_platform.pipeline import analyse, explain, prepare


@needs_torch
def test_long_audio_gives_a_timeline_and_explains_the_most_suspicious_window(tmp_path, manager):
    import soundfile as sf

    path = tmp_path / "long.wav"
    sf.write(path, tone(3.0, sr=16000), 16000)
    handle = manager.get("tiny-torch-audio")
    prepared = prepare(path, handle.spec)
    assert len(prepared.planes) > 4 and prepared.starts_s[-1] + 0.5 == pytest.approx(3.0, abs=0.01)
    analysis = analyse(handle, prepared)
    fake = analysis.window_probabilities[:, 1]
    np.testing.assert_allclose(analysis.prediction.probabilities[1], fake.mean(), rtol=1e-6)
    assert analysis.suspicious_window == int(np.argmax(fake))
    expl = explain(handle, analysis, "gradcam")
    assert expl.extras["window"] == analysis.suspicious_window
    assert expl.axes.start_s == pytest.approx(prepared.starts_s[analysis.suspicious_window])


@needs_torch
def test_short_audio_is_padded_and_says_so(tmp_path, manager):
    import soundfile as sf

    path = tmp_path / "short.wav"
    sf.write(path, tone(0.2, sr=16000), 16000)
    prepared = prepare(path, manager.spec("tiny-torch-audio"))
    assert len(prepared.planes) == 1 and any("padded" in n for n in prepared.notes)


def test_untrained_prediction_is_never_a_verdict():
    p = Prediction(("real", "fake"), np.array([0.1, 0.9], np.float32), untrained=True,
                   positive=1, threshold=0.5)
    assert p.verdict.startswith("no verdict") and "UNTRAINED" in p.verdict
    trained = Prediction(("real", "fake"), np.array([0.6, 0.4], np.float32), positive=1,
                         threshold=0.35)
    assert trained.label == "fake"  # the calibrated threshold decides, not the argmax


@needs_torch
@pytest.mark.parametrize("model_id, fixture", [("tiny-torch-audio", "wav_file"),
                                               ("tiny-torch-xray", "png_file")])
def test_figure_has_three_panels_and_a_title(request, manager, model_id, fixture):
    from xai_platform.visualization.figure import render, to_png

    handle = manager.get(model_id)
    analysis = analyse(handle, prepare(request.getfixturevalue(fixture), handle.spec,
                                       settings=manager.config.app))
    expl = explain(handle, analysis, "integrated_gradients", params={"n_steps": 8})
    fig = render(expl)
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == 3
    assert "UNTRAINED MODEL" in fig._suptitle.get_text()
    if model_id.endswith("audio"):
        assert axes[0].get_xlabel() == "time (s)" and "Hz" in axes[0].get_ylabel()
    png = to_png(expl)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@needs_torch
def test_a_map_that_shows_nothing_says_so(manager, png_file):
    """A model whose output ignores its input (all weights zero: saturated or dead) gives LIME a
    zero map; the user is told it is flat instead of being shown an empty picture as an answer."""
    import torch

    handle = manager.get("tiny-torch-xray")
    with torch.no_grad():
        for p in handle.net.parameters():
            p.zero_()
    analysis = analyse(handle, prepare(png_file, handle.spec, settings=manager.config.app))
    expl = explain(handle, analysis, "lime", params={"num_samples": 50})
    assert expl.flat
    assert any("map is flat" in n for n in expl.to_record()["notes"])
    assert explain(handle, analysis, "gradcam").flat  # gradients of a constant are zero too


@needs_torch
def test_a_live_map_is_not_called_flat(manager, png_file):
    handle = manager.get("tiny-torch-xray")
    expl = explain(handle, analyse(handle, prepare(png_file, handle.spec,
                                                   settings=manager.config.app)), "lime",
                   params={"num_samples": 50})
    assert not expl.flat and not any("flat" in n for n in expl.to_record()["notes"])
