"""Pipeline (windows, verdict rule, untrained marking) and the three-panel figure."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_torch, tone
from xai_platform.explanation import Prediction
from xai_platform.pipeline import analyse, explain, prepare


@needs_torch
def test_long_audio_gives_a_timeline_and_explains_the_window_behind_the_verdict(tmp_path,
                                                                               manager):
    import soundfile as sf

    path = tmp_path / "long.wav"
    sf.write(path, tone(3.0, sr=16000), 16000)
    handle = manager.get("tiny-torch-audio")
    prepared = prepare(path, handle.spec, settings=manager.config.app)  # no speech check on tones
    assert len(prepared.planes) > 4 and prepared.starts_s[-1] + 0.5 == pytest.approx(3.0, abs=0.01)
    analysis = analyse(handle, prepared)
    fake = analysis.window_probabilities[:, 1]
    np.testing.assert_allclose(analysis.prediction.probabilities[1], fake.mean(), rtol=1e-6)
    assert analysis.suspicious_window == int(np.argmax(fake))
    label = analysis.prediction.index
    assert analysis.default_window == int(np.argmax(analysis.window_probabilities[:, label]))
    expl = explain(handle, analysis, "gradcam")
    assert expl.extras["window"] == analysis.default_window and expl.target == label
    assert expl.axes.start_s == pytest.approx(prepared.starts_s[analysis.default_window])


@needs_torch
def test_short_audio_is_padded_and_says_so(tmp_path, manager):
    import soundfile as sf

    path = tmp_path / "short.wav"
    sf.write(path, tone(0.2, sr=16000), 16000)
    prepared = prepare(path, manager.spec("tiny-torch-audio"), settings=manager.config.app)
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
@pytest.mark.parametrize("model_id, fixture", [("tiny-torch-audio", "wav_file"),
                                               ("tiny-torch-xray", "png_file")])
@pytest.mark.parametrize("scale", [1e-7, 1.0, 1e5])
def test_figure_layout_clips_and_overlaps_nothing(request, manager, model_id, fixture, scale):
    """The figure's own layout (visualization.figure._place, measured from the tick labels'
    text): every panel, the colour bar and their tick labels, axis labels and titles lie inside
    the figure and apart from each other, for maps of very small and very large values (the
    colour bar's labels change width with them: '1e-7' above the bar, '100000' beside it)."""
    import dataclasses

    from xai_platform.visualization.figure import render

    handle = manager.get(model_id)
    analysis = analyse(handle, prepare(request.getfixturevalue(fixture), handle.spec,
                                       settings=manager.config.app))
    expl = explain(handle, analysis, "integrated_gradients", params={"n_steps": 4})
    expl = dataclasses.replace(expl, heatmap=expl.heatmap * scale + (scale if scale > 1 else 0))
    _assert_laid_out(render(expl, dpi=90))


@needs_torch
@pytest.mark.parametrize("shape", [(16, 64), (64, 16)])
def test_a_wide_or_tall_image_keeps_its_shape_and_its_colour_bar(manager, png_file, shape):
    """Square pixels whatever the shape (a modality plug-in's input need not be square): each
    panel keeps the image's aspect, the colour bar is as high as the heatmap, and the layout
    checks above hold."""
    import dataclasses

    from xai_platform.visualization.figure import render

    handle = manager.get("tiny-torch-xray")
    analysis = analyse(handle, prepare(png_file, handle.spec, settings=manager.config.app))
    expl = explain(handle, analysis, "saliency")
    rng = np.random.default_rng(0)
    expl = dataclasses.replace(expl, display=rng.random(shape).astype(np.float32),
                               heatmap=rng.random(shape).astype(np.float32))
    fig = render(expl, dpi=90)
    _assert_laid_out(fig)
    heat, bar = fig.axes[1].get_window_extent(), fig.axes[3].get_window_extent()
    assert heat.width / heat.height == pytest.approx(shape[1] / shape[0], rel=0.02)
    assert bar.height == pytest.approx(heat.height, abs=1.0) and bar.y0 == pytest.approx(
        heat.y0, abs=1.0)


@needs_torch
def test_the_cards_of_one_input_share_their_drawing_and_draw_as_a_whole_figure(
        manager, wav_file, png_file, tmp_path):
    """A card drawn over a kept background (the input panel, the frames, ticks and labels of an
    earlier card of the same input) is pixel for pixel the figure drawn whole: signed and
    unsigned maps, a colour bar whose labels need another layout, another input."""
    import dataclasses

    from xai_platform.visualization import figure

    def whole(expl):
        fig = figure.render(expl, dpi=90)
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3]

    built = []
    real = figure._Card.__init__

    def counting(self, *args, **kw):
        built.append(args[0].method)
        real(self, *args, **kw)

    import soundfile as sf

    other_wav = tmp_path / "other.wav"
    sf.write(other_wav, tone(1.2, sr=22050, freq=660.0), 22050)
    for model_id, path, other in (("tiny-torch-audio", wav_file, other_wav),
                                  ("tiny-torch-xray", png_file, None)):
        handle = manager.get(model_id)
        analysis = analyse(handle, prepare(path, handle.spec, settings=manager.config.app))
        saliency = explain(handle, analysis, "saliency")
        ig = explain(handle, analysis, "integrated_gradients", params={"n_steps": 4})
        wide = dataclasses.replace(ig, heatmap=ig.heatmap * 1e5 + 1e5)  # labels '100000'
        flipped = dataclasses.replace(saliency, heatmap=saliency.heatmap[::-1].copy(),
                                      method="flipped")
        cards = [saliency, ig, flipped, wide, saliency]
        if other is not None:
            cards.append(explain(handle, analyse(handle, prepare(
                other, handle.spec, settings=manager.config.app)), "saliency"))
        figure._cards.clear()
        built.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(figure._Card, "__init__", counting)
            drawn = [figure.to_rgb(e, dpi=90) for e in cards]
        for expl, image in zip(cards, drawn):
            assert np.array_equal(image, whole(expl)), (model_id, expl.method)
        # drawn whole: the first card, the one whose labels do not fit the kept layout, the
        # first after it (the kept card is the wide one's) and another input's
        assert built == ["saliency", "integrated_gradients", "saliency"] + (
            ["saliency"] if other is not None else []), built
    # A kept card holds the input it drew: a session's close (its user gone) drops them.
    from xai_platform.service import Session

    assert figure._cards._cards
    Session().close()
    assert not figure._cards._cards


def _assert_laid_out(fig) -> None:
    """Every panel, the colour bar and their tick labels, axis labels and titles lie inside the
    figure and apart from each other and from the figure's title."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()

    def drawn_labels(axis):  # the tick labels drawn: those of ticks inside the axis' limits
        low, high = sorted(axis.get_view_interval())
        return [label for tick in axis.get_major_ticks()
                if low - 1e-9 * (high - low) <= tick.get_loc() <= high + 1e-9 * (high - low)
                for label in (tick.label1, tick.label2)]

    def texts(ax):
        found = [*drawn_labels(ax.xaxis), *drawn_labels(ax.yaxis), ax.xaxis.label,
                 ax.yaxis.label, ax.title, ax.xaxis.offsetText, ax.yaxis.offsetText]
        return [t.get_window_extent(renderer) for t in found
                if t.get_visible() and t.get_text()]

    def apart(a, b, margin=-0.5):  # pixels between them at least (negative: may touch)
        return (max(a.x0, b.x0) - min(a.x1, b.x1) >= margin
                or max(a.y0, b.y0) - min(a.y1, b.y1) >= margin)

    title = fig._suptitle.get_window_extent(renderer)
    parts = [(ax.get_window_extent(renderer), texts(ax)) for ax in fig.axes]
    assert len(parts) == 4 and all(p[1] for p in parts[1:2])  # the heatmap's title at least
    for box in [title] + [b for panel, words in parts for b in [panel, *words]]:
        assert (box.x0 >= -0.5 and box.y0 >= -0.5 and box.x1 <= fig.bbox.x1 + 0.5
                and box.y1 <= fig.bbox.y1 + 0.5), f"{box} outside the figure"
    for i, (panel, words) in enumerate(parts):
        assert all(apart(w, title) for w in [panel, *words]), "runs into the figure's title"
        for other, other_words in parts[i + 1:]:
            for w in [panel, *words]:
                assert all(apart(w, o) for o in [other, *other_words]), (w, other)
            # Two panels' tick labels read apart, not as one number ("2.00.0"): a tenth of an
            # inch between them at least.
            for w in words:
                assert all(apart(w, o, 0.1 * fig.dpi) for o in other_words), (w, other)


@needs_torch
def test_a_drawn_figure_dies_young_and_the_collector_comes_back(manager, wav_file, monkeypatch):
    """The figure's objects stay in the youngest generation while it is drawn, so the first
    young collection frees it; otherwise the drawing's own collections promote them to where only
    a full collection (0.4-0.5 s in the app) frees them (visualization.figure.collector_paused)."""
    import gc
    import weakref

    from xai_platform.visualization import figure

    handle = manager.get("tiny-torch-audio")
    analysis = analyse(handle, prepare(wav_file, handle.spec, settings=manager.config.app))
    expl = explain(handle, analysis, "saliency")
    drawn = []
    real_render = figure._render

    def render(e, dpi):
        fig, boxes = real_render(e, dpi)
        drawn.append(weakref.ref(fig))
        return fig, boxes

    monkeypatch.setattr(figure, "_render", render)
    figure._cards.clear()
    def card(e):  # a Comparison card: another dpi, so a figure of its own
        return figure.to_rgb(e, dpi=90)

    for draw in (card, figure.to_png):
        gc.collect()
        draw(expl)
        assert gc.isenabled()
        gc.collect(0)
        alive = drawn.pop()()  # a card's figure, kept for the next explanation of the input
        kept = [card.fig for _, card in figure._cards._cards]
        assert alive is None or any(alive is fig for fig in kept), (
            f"{draw.__name__}: the figure outlived a young collection")
    gc.disable()  # a caller's choice is kept
    try:
        figure.to_rgb(expl)
        assert not gc.isenabled()
    finally:
        gc.enable()


@needs_torch
def test_a_map_that_shows_nothing_says_so(manager, png_file):
    """A model whose output ignores its input (all weights zero: saturated or dead) gives LIME a
    zero map; the user is told it is flat instead of being shown an empty picture as an answer."""
    import torch

    handle = manager.get("tiny-torch-xray")
    handle.use_framework_forward("parameters zeroed in place")  # the ONNX twin keeps the old ones
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


# --- partly synthetic recordings: the segment rule -----------------------------------------

def test_segment_rule_needs_consecutive_windows_and_merges_them():
    from xai_platform.pipeline import flagged_segments

    starts = np.arange(10) * 1.0  # 2 s windows every 1 s
    p = np.array([0.1, 0.95, 0.1, 0.95, 0.97, 0.99, 0.2, 0.91, 0.92, 0.93])
    # Runs whose windows overlap or touch merge into one stretch.
    assert flagged_segments(p, starts, 2.0, threshold=0.9, min_windows=3) == ((3.0, 11.0),)
    assert flagged_segments(p, starts, 0.5, threshold=0.9, min_windows=3) == \
        ((3.0, 5.5), (7.0, 9.5))
    assert flagged_segments(p, starts, 2.0, threshold=0.9, min_windows=4) == ()
    assert flagged_segments(p, starts, 2.0, threshold=0.9, min_windows=1) == ((1.0, 11.0),)
    assert flagged_segments(p[:1], starts[:1], 2.0, threshold=0.9, min_windows=1) == ()


def _middle_scores_positive(handle, monkeypatch):
    """Make the tiny audio model call windows with energy in the upper mel bands 'fake'."""
    import torch

    def predict(x):
        x = np.asarray(x, np.float32)
        if x.ndim == 4:  # (N, C, H, W) tensors in some backends
            x = x[:, 0]
        rows = x.shape[1]
        high = x[:, rows // 2:].mean(axis=(1, 2)) - x[:, :rows // 2].mean(axis=(1, 2))
        p = 1.0 / (1.0 + np.exp(-(high - 5.0)))
        return np.stack([1 - p, p], axis=1).astype(np.float32)

    handle.use_framework_forward("forward function replaced")  # not the exported graph
    monkeypatch.setattr(handle, "_predict_batch", predict)
    monkeypatch.setattr(handle, "untrained", False)  # a verdict, as from trained weights
    return torch


@needs_torch
def test_partly_synthetic_recording_is_flagged_and_the_headline_says_where(tmp_path, manager,
                                                                          monkeypatch):
    import soundfile as sf

    from xai_platform.config import AppSettings

    sr = 8000
    wave = np.concatenate([tone(2.0, sr=sr, freq=150.0), tone(1.5, sr=sr, freq=2500.0, seed=1),
                           tone(2.0, sr=sr, freq=150.0, seed=2)])
    path = tmp_path / "partly.wav"
    sf.write(path, wave, sr)
    handle = manager.get("tiny-torch-audio")
    _middle_scores_positive(handle, monkeypatch)
    prepared = prepare(path, handle.spec, settings=manager.config.app)  # no speech check on tones
    analysis = analyse(handle, prepared, settings=AppSettings(segment_windows=3))
    fake = analysis.window_probabilities[:, 1]
    p = analysis.prediction
    assert fake.mean() < 0.5 and (fake >= 0.5).sum() >= 3  # the mean alone would say "real"
    assert p.label == "fake" and len(p.segments) == 1
    start, end = p.segments[0]
    assert 1.5 <= start <= 2.5 and 3.0 <= end <= 4.0  # the middle 2.0-3.5 s
    assert p.verdict.startswith(f"fake: synthetic speech at {start:.1f}-{end:.1f} s")
    assert p.to_dict()["segments"] == [{"start_s": round(start, 3), "end_s": round(end, 3)}]
    # The default explanation explains the headline's class on the window driving it.
    assert analysis.default_window == int(np.argmax(fake))
    assert start <= prepared.starts_s[analysis.default_window] < end
    expl = explain(handle, analysis, "saliency")
    assert expl.target_label == "fake" and expl.extras["window"] == analysis.default_window
    # Asked for the other class, it explains a window where that class has evidence.
    other = explain(handle, analysis, "saliency", target="real")
    assert analysis.window_probabilities[other.extras["window"], 0] == \
        analysis.window_probabilities[:, 0].max()
    # A stricter rule (more windows than the stretch has) leaves it unflagged: real.
    strict = analyse(handle, prepared, settings=AppSettings(segment_windows=50))
    assert strict.prediction.segments == () and strict.prediction.label == "real"
    assert strict.prediction.verdict.startswith("real: p(fake) = ")
    real = analysis.window_probabilities[:, 0]
    assert real[strict.default_window] == real.max()  # the most clearly real window


def test_a_one_sided_detector_flags_but_never_confirms_the_other_label():
    """A detector measured to let most fakes unlike its training data through
    (``one_sided``) says "no fake found", never "real", on the label, the verdict, the figure
    and the record; its positive decisions read as before."""
    from xai_platform.visualization.figure import title

    kw = dict(positive=1, threshold=0.9, one_sided=True)
    low = Prediction(("real", "fake"), np.array([0.95, 0.05], np.float32), **kw)
    assert low.label == "real" and low.unconfirmed
    assert low.headline == "no fake found (cannot confirm real)"
    assert low.verdict.startswith("no fake found: p(fake) = 0.05, below this model's threshold "
                                  "of 0.90. This model cannot confirm 'real'")
    assert low.to_dict()["confirmed"] is False and low.to_dict()["one_sided"] is True
    high = Prediction(("real", "fake"), np.array([0.05, 0.95], np.float32), **kw)
    assert not high.unconfirmed and high.headline == "fake"
    assert high.verdict == "fake: p(fake) = 0.95, above this model's threshold of 0.90"
    flagged = Prediction(("real", "fake"), np.array([0.7, 0.3], np.float32), segments=((1.0, 3.0),),
                         segment_phrase="synthetic speech", **kw)
    assert not flagged.unconfirmed and flagged.verdict.startswith("fake: synthetic speech at")
    two_sided = Prediction(("real", "fake"), np.array([0.95, 0.05], np.float32), positive=1,
                           threshold=0.9)
    assert not two_sided.unconfirmed and two_sided.verdict.startswith("real: p(fake)")

    class Expl:  # what figure.title reads
        model_name, method_label, target_label, seconds, n_evaluations, seed = (
            "m", "Grad-CAM", "real", 0.1, 1, None)
        prediction = low
    assert "no fake found (cannot confirm real), p(fake) 5.0%" in title(Expl)
    assert "prediction real" not in title(Expl)


def test_a_model_unfit_for_a_verdict_never_gives_one(tmp_path, manager, monkeypatch):
    """A model configured with ``verdict: false`` (measured unfit for one, e.g. a detector
    that calls most real speech from new set-ups fake) withholds its verdict on every input,
    points to its notice (shown beside it) and still shows what it would answer, on the
    verdict, the label box and the figure title."""
    from dataclasses import replace

    import soundfile as sf

    from xai_platform.visualization.figure import title

    path = tmp_path / "voice.wav"
    sf.write(path, tone(1.0, sr=8000, freq=150.0), 8000)
    handle = manager.get("tiny-torch-audio")
    prepared = prepare(path, handle.spec, settings=manager.config.app)
    monkeypatch.setattr(handle, "untrained", False)  # as if trained: a verdict would be given
    judged = analyse(handle, prepared).prediction
    assert not judged.withheld and judged.verdict.startswith(judged.label)
    notice = "calls 82% of real speech from set-ups no corpus has fake"
    monkeypatch.setattr(handle, "spec", replace(handle.spec, verdict=False, notice=notice))

    def no_check(*_):
        raise AssertionError("the familiarity check ran for a model unfit for a verdict")

    monkeypatch.setattr("xai_platform.pipeline.familiar", no_check)
    analysis = analyse(handle, prepared)
    p = analysis.prediction
    assert p.withheld and p.familiarity is None and notice in analysis.notes
    assert p.verdict.startswith("verdict withheld: this model is not fit for a verdict; its "
                                "notice gives the measured figures. The model would answer "
                                f"{judged.label}")
    assert np.allclose(p.probabilities, judged.probabilities) and p.label == judged.label
    assert p.to_dict()["withheld"] is True
    expl = explain(handle, analysis, "saliency")
    assert "VERDICT WITHHELD: model not fit for a verdict" in title(expl)


def test_verdict_states_the_decision_and_the_probability_together():
    low = Prediction(("normal", "lesion"), np.array([0.83, 0.17], np.float32), positive=1,
                     threshold=0.11)
    assert low.verdict == "lesion: p(lesion) = 0.17, above this model's threshold of 0.11"
    below = Prediction(("normal", "lesion"), np.array([0.95, 0.05], np.float32), positive=1,
                       threshold=0.11)
    assert below.verdict == "normal: p(lesion) = 0.05, below this model's threshold of 0.11"
