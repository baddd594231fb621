"""No verdict without speech: voice activity detection (Silero VAD) in the audio path.

A recording with less speech than ``app.min_speech_s`` is refused; windows without speech are
left out of the verdict and the timeline; an explanation whose mass lies on silence or padding
is flagged. Real speech comes from ``examples/audio`` (KLettres, GPL-2+).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, TINY_AUDIO, model_entry, needs_torch, tone, write_config
from xai_platform.errors import ConfigError, InputError

SPEECH = ROOT / "examples" / "audio" / "real_klettres_de_b.wav"  # 1.2 s, about 0.4 s of voice
SR = 16000
NEEDS = r"the detector needs at least 0\.3 s of a voice"


def _service(tmp_path: Path, *, app: dict | None = None, **entry):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service

    path = write_config(tmp_path / "vad.yaml", [model_entry(**entry)],
                        app={"check_inputs": True, **(app or {})})
    return Service(ModelManager(load_config([path], base=None), device="cpu"))


def _wav(path: Path, wave: np.ndarray, sr: int = SR) -> Path:
    sf.write(path, np.asarray(wave, np.float32), sr)
    return path


def _speech_silence_speech(tmp_path: Path, gap_s: float = 2.5) -> tuple[Path, float]:
    """A KLettres clip, ``gap_s`` of faint room noise, the clip again: (path, gap start s)."""
    voice, sr = sf.read(SPEECH, dtype="float32")
    assert sr == SR
    room = 0.002 * np.random.default_rng(0).standard_normal(int(gap_s * SR)).astype(np.float32)
    return _wav(tmp_path / "pause.wav", np.concatenate([voice, room, voice])), len(voice) / SR


# --- the detector itself ----------------------------------------------------------------------

def test_vad_numbers_are_silero_s_own():
    """The sequence model read from the wheel gives the streaming model's probabilities."""
    silero = pytest.importorskip("silero_vad")
    import torch

    from xai_platform.preprocessing.vad import speech_probabilities

    wave, _ = sf.read(SPEECH, dtype="float32")
    ours = speech_probabilities(wave)
    theirs = silero.load_silero_vad(onnx=True).audio_forward(torch.from_numpy(wave), SR)
    np.testing.assert_allclose(ours, theirs.numpy().reshape(-1), atol=1e-6)
    assert ours.max() > 0.9 and ours[:3].max() < 0.5  # a voice, after a short lead-in


def test_vad_finds_the_voice_and_nothing_in_tones_or_noise():
    from xai_platform.preprocessing.vad import detect_speech

    wave, _ = sf.read(SPEECH, dtype="float32")
    speech = detect_speech(wave, SR)
    assert 0.3 < speech.seconds < 0.6 and speech.intervals[0][0] > 0.05
    assert speech.seconds_in(0.0, 0.1) == 0.0
    rng = np.random.default_rng(0)
    for other in (tone(2.0, sr=SR), 0.1 * rng.standard_normal(2 * SR).astype(np.float32)):
        assert detect_speech(other, SR).seconds == 0.0


# --- refusals -----------------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("case, wave, message", [
    ("0.02 s of noise", 0.1 * np.random.default_rng(1).standard_normal(320),
     r"found 0\.00 s of speech in 0\.02 s of audio; " + NEEDS),
    ("a one-sample WAV", np.array([0.3]), r"found 0\.00 s of speech in 0\.00 s of audio"),
    ("silence", np.zeros(2 * SR), r"silent"),
    ("2 s of a harmonic tone", tone(2.0, sr=SR), r"found 0\.00 s of speech in 2\.00 s.*" + NEEDS
     + r".*upload a recording with speech"),
    ("2 s of white noise", 0.1 * np.random.default_rng(2).standard_normal(2 * SR),
     r"found 0\.00 s of speech in 2\.00 s"),
])
def test_no_verdict_without_speech(tmp_path, case, wave, message):
    from xai_platform.service import Session

    service = _service(tmp_path)
    path = _wav(tmp_path / "input.wav", wave)
    with pytest.raises(InputError, match=message):
        service.analyse(Session(folder=tmp_path), path, "tiny-torch-audio")


@needs_torch
def test_a_voice_passes_and_the_minimum_is_the_setting(tmp_path):
    from xai_platform.service import Session

    session = Session(folder=tmp_path)
    analysis = _service(tmp_path).analyse(session, SPEECH, "tiny-torch-audio")
    assert any(n.startswith("Speech found: 0.") for n in analysis.notes)
    strict = _service(tmp_path, app={"min_speech_s": 2.0})
    with pytest.raises(InputError, match=r"needs at least 2 s of a voice"):
        strict.analyse(Session(folder=tmp_path), SPEECH, "tiny-torch-audio")
    # 0 turns the refusal off: a tone gets scored again.
    off = _service(tmp_path, app={"min_speech_s": 0})
    path = _wav(tmp_path / "tone.wav", tone(2.0, sr=SR))
    assert off.analyse(Session(folder=tmp_path), path, "tiny-torch-audio").prepared.scored is None


def test_min_speech_may_be_zero_but_not_negative(tmp_path):
    from xai_platform.config import load_config

    ok = write_config(tmp_path / "a.yaml", [model_entry()], app={"min_speech_s": 0})
    assert load_config([ok], base=None).app.min_speech_s == 0.0
    assert load_config([], base=ROOT / "config").app.min_speech_s == 0.3
    bad = write_config(tmp_path / "b.yaml", [model_entry()], app={"min_speech_s": -0.1})
    with pytest.raises(ConfigError, match=r"app\.min_speech_s.*>= 0"):
        load_config([bad], base=None)


# --- windows without speech ----------------------------------------------------------------------

@needs_torch
def test_windows_without_speech_leave_the_timeline_and_the_verdict(tmp_path, monkeypatch):
    from xai_platform.pipeline import prepare
    from xai_platform.service import Session

    service = _service(tmp_path)
    path, gap = _speech_silence_speech(tmp_path)
    handle = service.manager.get("tiny-torch-audio")
    first = prepare(path, handle.spec, settings=service.settings)
    speech, starts, length = first.data["speech"], first.starts_s, TINY_AUDIO["duration"]
    held = np.array([speech.seconds_in(s, s + length) for s in starts])
    np.testing.assert_array_equal(first.scored_mask, held >= 0.3)
    inside_pause = (starts >= gap) & (starts + length <= gap + 2.5)
    assert inside_pause.sum() >= 4 and not first.scored_mask[inside_pause].any()
    assert first.scored_mask.sum() >= 2
    # The model calls every window without speech fake (as a silence shortcut would): the
    # verdict must not hear it.
    real_predict = handle.predict

    def predict(planes):
        probs = real_predict(planes)
        probs[:, 1] = np.where(first.scored_mask, 0.05, 0.99)
        probs[:, 0] = 1 - probs[:, 1]
        return probs

    monkeypatch.setattr(handle, "predict", predict)
    session = Session(folder=tmp_path)
    analysis = service.analyse(session, path, "tiny-torch-audio")
    prepared = analysis.prepared
    scored = prepared.scored_mask
    np.testing.assert_array_equal(scored, first.scored_mask)
    probs = analysis.window_probabilities
    assert probs[~scored, 1].min() > 0.9  # they would have said "fake"...
    np.testing.assert_allclose(analysis.prediction.probabilities, probs[scored].mean(axis=0),
                               rtol=1e-6)
    assert analysis.prediction.label == "real" and analysis.prediction.segments == ()
    assert scored[analysis.default_window]
    assert any("left out of the verdict" in n for n in analysis.notes)
    timeline = service.timeline(analysis)
    assert [p is None for _, p in timeline] == list(~scored)
    records = service.timeline_records(analysis)
    assert {r["skipped"] for r in records if r["score"] is None} == {"no speech"}
    from xai_platform.modalities import get_modality

    names = get_modality("audio").window_names(handle.spec, prepared)
    assert [n.endswith("(no speech)") for n in names] == list(~scored)


@needs_torch
def test_the_timeline_figure_draws_a_gap_where_there_is_no_speech(tmp_path):
    from xai_platform.service import Session
    from xai_platform.ui.common import prediction_outputs

    service = _service(tmp_path)
    path, _ = _speech_silence_speech(tmp_path)
    _, verdict, figure = prediction_outputs(service, Session(folder=tmp_path), str(path),
                                            "tiny-torch-audio")
    assert figure is not None and "no speech" in verdict
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert "no speech" in labels


# --- explanations on silence ----------------------------------------------------------------------

@needs_torch
def test_a_map_on_silence_is_flagged_and_a_map_on_speech_is_not(tmp_path):
    from xai_platform.modalities import get_modality
    from xai_platform.service import Session

    service = _service(tmp_path, input={**TINY_AUDIO, "duration": 2.0})  # one padded window
    analysis = service.analyse(Session(folder=tmp_path), SPEECH, "tiny-torch-audio")
    prepared, audio = analysis.prepared, get_modality("audio")
    speech = prepared.data["speech"]
    (a, b), = speech.intervals
    shape = prepared.planes[0].shape
    times = np.arange(shape[1]) * prepared.data["frame_s"]
    on_speech = np.zeros(shape, np.float32)
    on_speech[:, (times > a + 0.05) & (times < b - 0.05)] = 1.0
    on_padding = np.zeros(shape, np.float32)
    on_padding[:, times > 1.5] = 1.0  # the recording is 1.2 s: this is padding
    on_lead_in = np.zeros(shape, np.float32)
    on_lead_in[:, times < a - 0.05] = 1.0
    on_lead_in[:, (times > a + 0.05) & (times < b - 0.05)] = 0.2  # a little on the voice

    found, mask = audio.focus(prepared, on_speech, signed=True)
    assert not found["flagged"] and found["speech_share"] == 1.0 and found["message"] == ""
    assert mask.shape == shape and mask[:, times < a - 0.05].sum() == 0
    for heatmap in (on_padding, on_lead_in):
        found, _ = audio.focus(prepared, heatmap, signed=True)
        assert found["flagged"] and found["speech_share"] < 0.5
        assert "the map points mostly at silence or padding" in found["message"]
        assert "shortcut" in found["message"]
    # Negative attribution is not mass for a signed map.
    found, _ = audio.focus(prepared, on_speech - 2 * on_padding, signed=True)
    assert not found["flagged"]


@needs_torch
def test_the_flag_reaches_the_record_the_page_and_the_cli(tmp_path, capsys):
    from xai_platform.cli import main
    from xai_platform.service import Session
    from xai_platform.ui.classification import focus_markdown

    service = _service(tmp_path)
    path, gap = _speech_silence_speech(tmp_path)
    session = Session(folder=tmp_path)
    starts = service.analyse(session, path, "tiny-torch-audio").prepared.starts_s
    silent = int(np.flatnonzero((starts > gap + 0.1) & (starts + 0.5 < gap + 2.4))[0])
    # Asked for a window in the pause, the map can only point at silence.
    expl = service.explain(session, path, "tiny-torch-audio", "saliency", window=silent)
    focus = service.record(expl)["focus"]
    assert focus["flagged"] and focus["speech_share"] == 0.0 and focus["silence_share"] == 1.0
    assert focus["message"] in expl.notes
    assert "**Warning: Only 0% of the attribution lies on speech" in focus_markdown(expl)
    # the comparison page's card says it too
    from xai_platform.ui.comparison import caption

    assert "**Warning: Only 0% of the attribution lies on speech" in caption(expl)
    card = service.score(session, expl, ("faithfulness",))  # no speech share in it: kept
    assert "**Warning: Only 0% of the attribution lies on speech" in caption(expl, card)
    # The default window holds speech: its record carries the share too.
    default = service.explain(session, path, "tiny-torch-audio", "saliency")
    assert 0.0 <= service.record(default)["focus"]["speech_share"] <= 1.0
    config = tmp_path / "vad.yaml"
    code = main(["explain", str(path), "--model", "tiny-torch-audio", "--method", "saliency",
                 "--window", str(silent), "--out", str(tmp_path / "cli"), "--config",
                 str(config)])
    err = capsys.readouterr().err
    assert code == 0 and "warning: Only 0% of the attribution lies on speech" in err
