"""Raw-waveform audio models (``input.kind: waveform``): scored on the samples, explained on the
window's log-mel spectrogram through the resynthesis with the window's own phase."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import model_entry, needs_torch, tone, write_config
from xai_platform import explainers
from xai_platform.errors import ConfigError

WAVE_INPUT = {"kind": "waveform", "sample_rate": 8000, "duration": 0.5, "n_fft": 256,
              "hop_length": 64, "n_mels": 16, "fmax": 4000.0}
WAVE_ENTRY = model_entry(id="tiny-wave", architecture="rawnet2_slim", target_layer="blocks.2",
                         arch_args={"n_filters": 4, "kernel_size": 33, "widths": [4, 4, 8],
                                    "gru": 8},
                         input=dict(WAVE_INPUT))
CHEAP = {"lime": {"num_samples": 60}, "shap": {"n_evaluations": 40},
         "integrated_gradients": {"n_steps": 16}}
METHOD_IDS = [m.id for m in explainers.all_methods()]


@pytest.fixture(scope="module")
def wave_manager(tmp_path_factory):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    folder = tmp_path_factory.mktemp("wave")
    config = load_config([write_config(folder / "wave.yaml", [WAVE_ENTRY])], base=None)
    manager = ModelManager(config, device="cpu", batch_size=16)
    manager.verify()  # blocks.2 is a 1-D convolutional map (C, L)
    return manager


@pytest.fixture
def voice(tmp_path) -> Path:
    import soundfile as sf

    path = tmp_path / "voice.wav"
    sf.write(path, tone(1.2, sr=8000, freq=300.0), 8000)
    return path


def _window(spec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(wave (n_samples,), its log-mel plane)."""
    from xai_platform.preprocessing import audio

    wave = tone(spec.input.duration, sr=spec.input.sample_rate, freq=300.0, seed=seed)
    return wave, audio.spectrogram(wave, spec.input)


def _view(manager, seed: int = 0):
    from xai_platform.models.resynthesis import SpectrogramView

    handle = manager.get("tiny-wave")
    wave, plane = _window(handle.spec, seed)
    return handle, SpectrogramView(handle, wave, plane), wave, plane


# --- configuration ------------------------------------------------------------------------------

def test_waveform_input_spec_shapes_and_mistakes(tmp_path):
    from xai_platform.config import load_config

    spec = load_config([write_config(tmp_path / "w.yaml", [WAVE_ENTRY])], base=None
                       ).model("tiny-wave")
    assert spec.input.waveform and spec.input.normalize == "none"
    assert spec.input_shape == (1, 4000) and spec.input.plane_shape == (16, 63)
    for bad, key in (({"normalize": "db"}, "input.normalize"), ({"channels": 3}, "input.channels"),
                     ({"kind": "wave"}, "input.kind")):
        entry = model_entry(**{**WAVE_ENTRY, "input": {**WAVE_INPUT, **bad}})
        with pytest.raises(ConfigError, match=f"key '{key}'"):
            load_config([write_config(tmp_path / "bad.yaml", [entry])], base=None)


# --- the view: what the methods explain ----------------------------------------------------------

@needs_torch
def test_view_of_the_window_itself_is_the_waveform_model(wave_manager):
    handle, view, wave, plane = _view(wave_manager)
    assert view.input_shape == plane.shape
    np.testing.assert_allclose(view.waveforms(plane[None])[0, 0], wave, atol=2e-5)
    np.testing.assert_allclose(view.predict(plane[None]), handle.predict(wave[None, None]),
                               atol=1e-5)
    # both outputs of one resynthesis and one forward pass (the faithfulness curves' log-odds)
    probs, scores = view.outputs(plane[None])
    assert view.outputs_in_one_pass == handle.outputs_in_one_pass
    np.testing.assert_allclose(probs, view.predict(plane[None]), atol=1e-6)
    np.testing.assert_allclose(scores, view.scores(plane[None]), atol=1e-5)
    # a plane at the floor everywhere turns every cell down: far quieter, same length
    floor = np.full_like(plane, plane.min())
    quiet = view.waveforms(floor[None])[0, 0]
    assert quiet.shape == wave.shape
    assert np.sqrt(np.mean(quiet ** 2)) < 0.05 * np.sqrt(np.mean(wave ** 2))


@needs_torch
def test_view_gradients_are_the_chain_rule_through_the_resynthesis(wave_manager):
    """d score / d P equals an end-to-end torch autograd (plane -> istft -> network -> score)
    and a central difference along a random direction."""
    import torch

    from xai_platform.models.resynthesis import resynthesise

    handle, view, wave, plane = _view(wave_manager, seed=3)
    grads, scores = view.input_gradients(plane[None], np.array([1]))
    p = torch.from_numpy(plane[None].copy()).requires_grad_(True)
    with torch.enable_grad():
        for q in handle.net.parameters():
            q.requires_grad_(False)
        waves = resynthesise(p, torch.from_numpy(plane), view._stft, handle.spec.input)
        logit = handle.net(handle.adapter(waves[:, None]))[:, 0]  # sigmoid output: class 1 = +z
        (want,) = torch.autograd.grad(logit.sum(), p)
    np.testing.assert_allclose(scores, logit.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(grads, want.numpy(), atol=1e-6 + 1e-4 * np.abs(want.numpy()).max())
    direction = np.random.default_rng(0).standard_normal(plane.shape).astype(np.float32)
    eps = 0.05
    s = view.scores(np.stack([plane + eps * direction, plane - eps * direction]))[:, 1]
    numeric = (s[0] - s[1]) / (2 * eps)
    assert numeric == pytest.approx(float((grads[0] * direction).sum()), rel=0.05, abs=1e-6)


@needs_torch
def test_integrated_gradients_on_the_view_keep_completeness(wave_manager):
    _, view, _, plane = _view(wave_manager, seed=1)
    result = explainers.run("integrated_gradients", view, plane, target=1,
                            params={"n_steps": 64})
    extras = result.attribution.extras
    assert abs(extras["completeness_error"]) <= 0.02 * abs(extras["score_difference"]) + 1e-6


# --- every method through the service ------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("method", METHOD_IDS)
def test_every_method_explains_a_waveform_model_on_its_spectrogram(wave_manager, voice, method):
    """The contract for the waveform kind: a finite map on the (bands, frames) plane, a note
    saying how the method met the waveform, and a scorecard computed on the same function."""
    from xai_platform.service import Service, Session

    service = Service(wave_manager)
    session = Session()
    try:
        expl = service.explain(session, voice, "tiny-wave", method, params=CHEAP.get(method),
                               target="fake")
        assert expl.heatmap.shape == (16, 63) and np.isfinite(expl.heatmap).all()
        assert expl.display.shape == (16, 63)
        note = " ".join(expl.notes)
        if method in ("gradcam", "gradcampp"):
            assert "time only" in note
            assert np.allclose(expl.heatmap, expl.heatmap[:1])  # the same at every frequency
        elif method in ("saliency", "integrated_gradients"):
            assert "inverse STFT" in note and expl.heatmap.std() > 0
        else:
            assert "original phase" in note and expl.heatmap.std() > 0
        if method in ("integrated_gradients", "lime"):
            card = service.score(session, expl, ("faithfulness", "randomization"))
            assert np.isfinite(card.values["insertion_auc"])
            assert np.isfinite(card.values["randomization_rho"])
    finally:
        session.close()


@needs_torch
def test_prediction_windows_and_listening_clips_use_the_samples(wave_manager, voice):
    from xai_platform.preprocessing import audio
    from xai_platform.service import Service, Session

    service = Service(wave_manager)
    session = Session()
    handle = wave_manager.get("tiny-wave")
    try:
        analysis = service.analyse(session, voice, "tiny-wave")
        windows = audio.load_for_model(voice, handle.spec.input)
        np.testing.assert_allclose(analysis.window_probabilities,
                                   handle.predict(windows.windows[:, None]), atol=1e-6)
        assert analysis.prepared.planes.shape[1:] == (16, 63)
        expl = service.explain(session, voice, "tiny-wave", "lime", params=CHEAP["lime"])
        readout = service.readout(session, voice, expl)
        w = expl.extras["window"]
        assert readout.record["score_original"] == pytest.approx(
            float(analysis.window_probabilities[w, expl.target]), abs=1e-5)
        assert all(Path(clip).is_file() for clip in readout.clips)
    finally:
        session.close()


@needs_torch
def test_band_readout_names_no_band_for_a_map_over_time_only(wave_manager, voice):
    """Grad-CAM from a 1-D layer repeats one curve in every band: its readout must not call the
    lowest bands the strongest (they tie), nor draw equal bars as if every band mattered."""
    from xai_platform.service import Service, Session

    service = Service(wave_manager)
    session = Session()
    try:
        cam = service.explain(session, voice, "tiny-wave", "gradcampp")
        assert cam.heatmap.max() > 0 and np.ptp(cam.heatmap, axis=0).max() == 0
        text = service.readout(session, voice, cam).text
        assert "Strongest bands" not in text and " Hz (" not in text
        assert "No band stands out: the map is the same in every band" in text
        assert "top 20% of the time frames kept" in text
        band_axes = service.readout(session, voice, cam).figure.axes[0]
        assert not band_axes.patches  # no bars, a note instead
        assert "no band stands out" in band_axes.texts[0].get_text()
        # this untrained model's Grad-CAM finds no evidence for its class: no band either
        empty = service.explain(session, voice, "tiny-wave", "gradcam")
        assert empty.extras.get("no_positive_evidence")
        assert ("No band stands out: the map has no evidence for the class in any band"
                in service.readout(session, voice, empty).text)

        lime = service.explain(session, voice, "tiny-wave", "lime", params=CHEAP["lime"])
        text = service.readout(session, voice, lime).text
        assert "Strongest bands: " in text and "time-frequency cells" in text
        assert service.readout(session, voice, lime).figure.axes[0].patches
    finally:
        session.close()


@needs_torch
def test_check_model_runs_a_waveform_model(tmp_path, voice, capsys):
    from xai_platform.cli import main

    config = write_config(tmp_path / "mine.yaml", [WAVE_ENTRY])
    assert main(["check-model", str(config), "--input", str(voice)]) == 0
    text = capsys.readouterr().out
    assert "model 'tiny-wave' (torch, audio): OK" in text
    assert "target layer blocks.2: a convolutional feature map (OK)" in text
    assert "blocks.2" in text.split("candidate target layers")[1]
    assert main(["check-model", str(config)]) == 0
    assert "the audio sample plane, 1 x 4000" in capsys.readouterr().out
