"""The app: page handlers as plain functions, every API endpoint through gradio_client, and
isolation of concurrent requests on one shared model."""

from __future__ import annotations

import dataclasses
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import HAS_TORCH, ROOT, chest_like, tone

pytestmark = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")


@pytest.fixture
def service(manager):
    from xai_platform.service import Service

    return Service(manager)


@pytest.fixture
def session():
    from xai_platform.service import Session

    s = Session()
    yield s
    s.close()


def test_model_list_marks_untrained_models(service):
    rows = service.models("audio")
    assert {r.id for r in rows} == {"tiny-torch-audio", "tiny-keras-audio"}
    assert all(r.state == "untrained" and "untrained" in r.label for r in rows)


def test_prediction_of_an_untrained_model_is_not_a_verdict(service, session, wav_file):
    from xai_platform.ui.common import prediction_outputs

    label, verdict, _ = prediction_outputs(service, session, str(wav_file), "tiny-torch-audio")
    assert set(label) == {"real", "fake"} and abs(sum(label.values()) - 1) < 1e-5
    assert verdict.startswith("### No verdict") and "not a verdict" in verdict
    # whose prediction it is, as a paragraph of its own (it ran into the next line's words)
    assert f"\nFor `{wav_file.name}`\n\n" in verdict


def test_a_one_sided_model_says_so_and_never_answers_the_other_label(tmp_path, session, wav_file):
    """The model panel says a one-sided detector cannot confirm 'real'; a prediction under its
    threshold shows "no fake found (cannot confirm real)" in the label box and the headline."""
    from conftest import model_entry, write_config
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service
    from xai_platform.ui.common import model_status_markdown, prediction_outputs

    config = load_config([write_config(tmp_path / "c.yaml", [model_entry(
        one_sided=True, positive_label="fake")])], base=None)
    service = Service(ModelManager(config, device="cpu"))
    assert "**One-sided:** it can flag 'fake' but not confirm 'real'" in model_status_markdown(
        service, "tiny-torch-audio")
    untrained = service.analyse(session, str(wav_file), "tiny-torch-audio")
    label, verdict, _ = prediction_outputs(service, session, str(wav_file), "tiny-torch-audio")
    assert isinstance(label, dict) and verdict.startswith("### No verdict")  # untrained: none

    # the same model with weights whose mean p(fake) is under its threshold
    real = dataclasses.replace(untrained.prediction, untrained=False, threshold=0.9, segments=(),
                               probabilities=np.array([0.8, 0.2], np.float32))
    service.analyse = lambda *a, **k: dataclasses.replace(untrained, prediction=real)
    label, verdict, _ = prediction_outputs(service, session, str(wav_file), "tiny-torch-audio")
    assert label == "no fake found (cannot confirm real)"
    assert verdict.startswith("### no fake found: p(fake) = 0.20, below this model's threshold")


def test_records_and_reports_do_not_lay_out_the_server_s_folders(service, session, png_file,
                                                                 tmp_path):
    """The explanation record (the page's JSON, the downloads, the API) and the HTML report
    named the weights by their absolute path on the server ("/home/.../weights/x.pt"); a share
    link may be public. They name it from the project's root, or by file name outside it; the
    sha256 beside it identifies the file."""
    from xai_platform.config import ROOT, load_config, shown_weights
    from xai_platform.reports import card_section

    assert shown_weights(ROOT / "weights" / "audio" / "audio-cnn.pt") == \
        "weights/audio/audio-cnn.pt"
    assert shown_weights(tmp_path / "private" / "mine.pt") == "mine.pt"
    assert shown_weights(None) is None
    spec = service.spec
    service.spec = lambda model_id: dataclasses.replace(spec(model_id),
                                                        weights=tmp_path / "private" / "mine.pt")
    expl = service.explain(session, png_file, "tiny-torch-xray", "gradcam")
    record = service.record(expl)
    assert record["weights"] == "mine.pt" and str(tmp_path) not in repr(record)
    shipped = load_config().model("audio-cnn")
    html = card_section(shipped, None, weights_sha256="ab12")
    assert "Weights: weights/audio/audio-cnn.pt; sha256" in html and str(ROOT) not in html

def test_same_request_is_computed_once_per_session(service, session, png_file):
    kw = dict(params={"num_samples": 100}, seed=1)
    a = service.explain(session, str(png_file), "tiny-torch-xray", "lime", **kw)
    b = service.explain(session, str(png_file), "tiny-torch-xray", "lime", **kw)
    assert a is b and session.computed == 1
    service.explain(session, str(png_file), "tiny-torch-xray", "lime", params={"num_samples": 100},
                    seed=2)
    service.explain(session, str(png_file), "tiny-torch-xray", "gradcam", seed=1)
    service.explain(session, str(png_file), "tiny-torch-xray", "gradcam", seed=2)  # seed unused
    assert session.computed == 3


def test_classification_handler_returns_figure_record_and_downloads(service, session, wav_file):
    from xai_platform.ui.classification import collect_params, param_slots, run_explain

    values = [s.param.default for s in param_slots()]
    out = run_explain(service, session, "audio", str(wav_file), None, "tiny-torch-audio",
                      "integrated_gradients", 0, None, None, values)
    figure, summary, record, downloads, readouts, kept, removed, clips_md = out
    # the page shows the download itself (one figure drawn and encoded): a whole PNG file
    assert figure == downloads[0] and Path(figure).parent == session.dir
    from PIL import Image

    with Image.open(figure) as shown:
        assert shown.format == "PNG" and shown.mode == "RGB" and shown.width > 800
    assert "Integrated Gradients" in summary and "Untrained model" in summary
    assert f"`{wav_file.name}`" in summary  # it stays on the page when another file is chosen
    assert record["method"] == "integrated_gradients" and "libraries" in record
    assert record["libraries"]["xai_platform"] and "torch" in record["libraries"]
    assert len(downloads) == 2 and downloads[0].endswith(".png") and downloads[1].endswith(".json")
    assert readouts is not None and kept.endswith("_kept.wav") and removed.endswith("_removed.wav")
    assert "Listen" in clips_md
    assert collect_params("lime", "xray", values) == {"num_samples": 1000, "kernel_width": 0.25,
                                                      "sampling": "orthogonal",
                                                      "adaptive": False, "n_segments": 60,
                                                      "compactness": 0.2}
    assert collect_params("shap", "xray", values) == {"n_evaluations": 500,
                                                      "estimator": "partition",
                                                      "adaptive": False, "n_segments": 60,
                                                      "compactness": 0.2}


def test_comparison_runs_fastest_first(service, session, png_file):
    from xai_platform.ui.comparison import compare

    results = list(compare(service, session, "xray", None, str(png_file), "tiny-torch-xray",
                           ["lime", "gradcam", "shap"], 0, metrics=("faithfulness", "randomization")))
    assert [method for _, _, method, _, _ in results] == ["gradcam", "shap", "lime"]
    cards = {method: card for _, _, method, _, card in results}
    for card in cards.values():  # a scorecard under each figure, with its cost
        assert {"deletion_auc", "insertion_auc", "randomization_rho"} <= set(card.values)
        assert card.metric_cost.evaluations > 0
    from xai_platform.ui.comparison import summary_outputs

    text, figure = summary_outputs({m: e for _, _, m, e, _ in results}, cards)
    assert "Which explanation to trust" in text and "Grad-CAM" in text
    assert figure is not None  # the agreement matrix
    # Scores are cached with the explanations: asking again computes nothing.
    computed = session.computed
    list(compare(service, session, "xray", None, str(png_file), "tiny-torch-xray", ["gradcam"], 0,
                 metrics=("faithfulness", "randomization")))
    assert session.computed == computed


def test_a_comparison_says_how_long_it_will_take_from_what_it_took_before(service, png_file):
    """The first comparison on a model has no estimate and its bar moves by methods; the
    methods' times are kept (not a cached rerun's), and the next comparison on a fresh session
    is paced by them and counts down; another set of metrics was never timed. The
    Classification page counts down a method that ran with the same parameters before."""
    import re

    from xai_platform.service import Session
    from xai_platform.ui.classification import paced
    from xai_platform.ui.comparison import compare, estimate_text, timed

    model, methods, metrics = "tiny-torch-xray", ["lime", "gradcam"], ("faithfulness",)

    def run(session):
        seen = []
        list(compare(service, session, "xray", None, str(png_file), model, methods, 0,
                     progress=lambda f, desc="": seen.append((f, desc)), metrics=metrics))
        return seen

    assert estimate_text(timed(service, model, methods, metrics), methods) == ""
    # no model yet: no estimate, and no error here
    assert estimate_text(timed(service, None, methods, metrics), methods) == ""
    first = Session()
    # Grad-CAM explained on the Classification page first: its scorecard is still timed
    service.explain(first, str(png_file), model, "gradcam")
    seen = run(first)
    # no time for the whole comparison; at most a long method's own (see test_pace...)
    assert not any("left" in desc.replace("left in this method", "") for _, desc in seen)
    assert 0.5 <= min(f for f, desc in seen if desc.startswith("LIME")) < 0.55  # by methods
    # the label once; the bar counts methods, and says so
    assert any(desc == "LIME: evaluating samples · method 2 of 2" for _, desc in seen)
    times = timed(service, model, methods, metrics)
    assert set(times) == {"gradcam", "lime"} and all(e > 0 and s > 0 for e, s in times.values())
    assert estimate_text(timed(service, model, methods, metrics), methods).startswith("about ")
    run(first)  # cached: nothing computed, nothing re-timed
    assert timed(service, model, methods, metrics) == times
    unscored = metrics + ("randomization",)
    assert estimate_text(timed(service, model, methods, unscored), methods) == ""

    # Grad-CAM took 2 s, LIME 8 s (6 explaining, 2 scoring): LIME starts at 20% with 8 s left
    for method, explain_s, score_s in (("gradcam", 1.0, 1.0), ("lime", 6.0, 2.0)):
        defaults = service.resolved(model, method)
        service.times.record_explain(service.timed_as(model), method, defaults, explain_s)
        service.times.record_score(service.timed_as(model), method, defaults, metrics, score_s)
    text = estimate_text(timed(service, model, methods, metrics), methods)
    assert text.startswith("about 10 s") and "LIME 8 s, Grad-CAM 2 s" in text
    seen = run(Session())
    lime = [(f, desc) for f, desc in seen if desc.startswith("LIME")]
    assert lime[0][0] == pytest.approx(0.2, abs=0.03) and lime[0][1].endswith("about 8 s left")
    assert lime[-1] == (pytest.approx(0.8), "LIME: scoring the explanation · about 2 s left")
    left = [int(re.search(r"about (\d+) s left", desc).group(1)) for _, desc in seen]
    assert left == sorted(left, reverse=True)
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)

    # the Classification page: LIME's explanation time with these parameters, not others'
    lime_s = service.times.explain_seconds(service.timed_as(model), "lime",
                                           service.resolved(model, "lime"))
    assert lime_s is not None and lime_s > 0
    assert service.times.explain_seconds(service.timed_as(model), "lime", service.resolved(
        model, "lime", {"num_samples": 200})) is None
    # ... and says it above the Explain button, for these settings only
    from xai_platform.ui.classification import expected_text, param_slots

    values = [slot.param.default for slot in param_slots()]
    said = expected_text(service, model, "lime", "xray", values)
    took = "under a second" if lime_s < 1 else f"about {lime_s:.0f} s"
    assert said == (f"*Expected: {took}, as long as LIME took on this model before with these "
                    "settings.*")
    fewer = [200 if (slot.method, slot.param.name) == ("lime", "num_samples") else value
             for slot, value in zip(param_slots(), values)]
    assert expected_text(service, model, "lime", "xray", fewer) == ""
    assert expected_text(service, model, None, "xray", values) == ""
    shown = []
    report = paced(lambda f, desc: shown.append(desc), "LIME", 40.0)
    report(0.25, "evaluating samples")
    assert shown == ["LIME: evaluating samples · about 30 s left"]
    paced(lambda f, desc: shown.append(desc), "LIME", None)(0.5, "evaluating samples")
    assert shown[-1] == "LIME: evaluating samples"
    assert paced(None, "LIME", 40.0) is None


def test_a_method_never_timed_counts_down_from_its_own_pace(service, png_file, monkeypatch):
    """Without an earlier run, a long method's time left comes from its reports so far: the
    pace after its first report (loading and the first batch left out), nothing before a
    tenth of it and two seconds have passed, nothing under a second, nothing once it is done.
    The first comparison on a model and the Classification page both say it."""
    from xai_platform.service import Pace, Session
    from xai_platform.ui.classification import paced
    from xai_platform.ui.comparison import compare

    now = [100.0]
    pace = Pace(clock=lambda: now[0])
    said = []
    for t, f in ((100.0, 0.02), (101.0, 0.06), (101.5, 0.15), (104.0, 0.22), (106.0, 0.42),
                 (110.0, 0.82), (111.5, 0.95), (112.0, 1.0)):
        now[0] = t
        said.append(pace.left(f))
    # 0.02 done at the first report; 0.2 more in 4 s: 0.78 left at that pace is 15.6 s
    assert said[:3] == [None, None, None] and said[3] == pytest.approx(15.6)
    assert said[4] == pytest.approx(6.0 * 0.58 / 0.4) and said[5] == pytest.approx(10 * 0.18 / 0.8)
    assert said[6] is None  # 0.6 s: not "about 0 s left"
    assert said[7] is None  # done: what follows (scoring) has no steps to pace

    shown = []
    now[0] = 0.0
    report = paced(lambda f, desc: shown.append(desc), "LIME", None, Pace(lambda: now[0]))
    for t, f in ((0.0, 0.1), (2.0, 0.3), (6.0, 0.4)):
        now[0] = t
        report(f, "evaluating samples")
    assert shown == ["LIME: evaluating samples", "LIME: evaluating samples · about 7 s left",
                     "LIME: evaluating samples · about 12 s left"]

    # through a first comparison (the bar by methods), with the thresholds lowered so that a
    # tiny model's LIME is long enough
    monkeypatch.setattr(Pace, "MIN_SECONDS", 0.0)
    monkeypatch.setattr(Pace, "MIN_LEFT", 0.0)
    seen = []
    list(compare(service, Session(), "xray", None, str(png_file), "tiny-torch-xray",
                 ["lime", "gradcam"], 0, progress=lambda f, desc="": seen.append(desc)))
    counted = [d for d in seen if d.startswith("LIME: evaluating samples · method 2 of 2 · about")]
    assert counted and all(d.endswith(" s left in this method") for d in counted)
    assert not any("left" in d for d in seen if d.startswith("Grad-CAM"))


def test_the_estimate_is_there_before_the_model_loads(service, png_file):
    """A fresh page lists the methods before the model loads, and the engine (chosen at load)
    names the times: until then the estimate takes the engine the model ran on here before and
    says loading comes first; with times of two engines it waits for the load."""
    from xai_platform.service import Session
    from xai_platform.ui.classification import paced_for
    from xai_platform.ui.comparison import compare, estimate_text, timed

    model, methods, metrics = "tiny-torch-xray", ["gradcam"], ("faithfulness",)
    list(compare(service, Session(), "xray", None, str(png_file), model, methods, 0,
                 metrics=metrics))
    loaded = estimate_text(timed(service, model, methods, metrics), methods,
                           not service.loaded(model))
    assert loaded.startswith("about ") and "loading" not in loaded
    ran_as = service.timed_as(model)

    service.manager.unload(model)  # as after a restart: the times are kept, the model is not
    seen = []  # the comparison says what it waits for before the first method
    list(compare(service, Session(), "xray", None, str(png_file), model, methods, 0,
                 progress=lambda f, desc="": seen.append(desc), metrics=metrics))
    assert seen[0] == f"Loading {service.spec(model).name}" and len(seen) > 1
    service.manager.unload(model)
    assert service.timed_as(model).endswith(" not loaded") and not service.loaded(model)
    assert service.looked_up_as(model) == ran_as
    text = estimate_text(timed(service, model, methods, metrics), methods,
                         not service.loaded(model))
    assert text.startswith("about ") and "after loading the model" in text
    shown = []  # the Classification page's countdown too
    paced_for(service, lambda f, desc: shown.append(desc), model, "gradcam", {})(0.5, "computing")
    assert shown[-1].startswith("Grad-CAM: computing · about ")

    # times of the same weights at another precision: these settings' precision decides
    assert service.manager.fast_forward and service.manager.forward_precision == "float32"
    weights = ran_as.rsplit(" ", 2)[0]
    service.times.record_explain(weights + " openvino bf16", "gradcam",
                                 service.resolved(model, "gradcam"), 1.0)
    assert service.looked_up_as(model) == ran_as
    # ... and of a second engine at this precision: which one loads is not known yet
    other = ran_as.replace("onnxruntime", "openvino") if "onnxruntime" in ran_as else \
        ran_as.rsplit(" ", 2)[0] + " onnxruntime float32"
    service.times.record_explain(other, "gradcam", service.resolved(model, "gradcam"), 1.0)
    assert estimate_text(timed(service, model, methods, metrics), methods) == ""
    # the fast path off: the model's own framework runs it
    service.times.record_explain(weights + " torch float32", "gradcam",
                                 service.resolved(model, "gradcam"), 1.0)
    service.manager.fast_forward = False
    try:
        assert service.looked_up_as(model) == weights + " torch float32"
    finally:
        service.manager.fast_forward = True
    service.manager.get(model)
    assert timed(service, model, methods, metrics) is not None


def test_the_app_keeps_its_times_between_runs_per_machine_and_model(tmp_path, monkeypatch,
                                                                     caplog):
    """A restarted app reads the times it wrote; another machine, model weights or engine
    starts without them; an unreadable file is ignored and rewritten."""
    from xai_platform import service as service_module
    from xai_platform.service import MethodTimes

    file = tmp_path / "cache" / "times.json"
    params = {"num_samples": 1000}
    times = MethodTimes(file)
    times.record_explain("m sha1 onnxruntime float32", "lime", params, 12.5)
    times.record_score("m sha1 onnxruntime float32", "lime", params, ("faithfulness",), 3.0)
    again = MethodTimes(file)
    assert again.explain_seconds("m sha1 onnxruntime float32", "lime", params) == 12.5
    assert again.comparison("m sha1 onnxruntime float32", {"lime": params},
                            ("faithfulness",)) == {"lime": (12.5, 3.0)}
    assert again.models("m sha1") == ["m sha1 onnxruntime float32"]
    assert again.models("m sha") == again.models("m sha2") == []
    assert again.explain_seconds("m sha2 onnxruntime float32", "lime", params) is None
    assert again.explain_seconds("m sha1 torch float32", "lime", params) is None
    monkeypatch.setattr(service_module, "machine_fingerprint", lambda: "another CPU x64")
    elsewhere = MethodTimes(file)
    assert elsewhere.explain_seconds("m sha1 onnxruntime float32", "lime", params) is None
    elsewhere.record_explain("m sha1 onnxruntime float32", "lime", params, 1.0)
    monkeypatch.undo()
    assert MethodTimes(file).explain_seconds("m sha1 onnxruntime float32", "lime", params) == 12.5
    file.write_text("{not json")
    broken = MethodTimes(file)
    assert broken.explain_seconds("m sha1 onnxruntime float32", "lime", params) is None
    assert "unreadable" in caplog.text
    broken.record_explain("m sha1 onnxruntime float32", "lime", params, 2.0)
    assert MethodTimes(file).explain_seconds("m sha1 onnxruntime float32", "lime", params) == 2.0


def test_progress_reaches_the_page_at_most_twice_a_second(monkeypatch):
    """Every batch reports progress; the page gets the first report and then one per interval
    (each update makes the browser re-render, which slowed a comparison on two cores)."""
    from xai_platform.ui import common

    clock = [100.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: clock[0])
    seen = []
    report = common.throttled(lambda f, desc="": seen.append((f, desc)), interval=0.5)
    for i in range(8):  # eight batches 0.125 s apart
        report(i / 8, desc=f"LIME: batch {i + 1}")
        clock[0] += 0.125
    assert [d for _, d in seen] == ["LIME: batch 1", "LIME: batch 5"]
    clock[0] += 1.0
    report(1.0, desc="scoring the explanation")
    assert seen[-1] == (1.0, "scoring the explanation")
    assert common.throttled(None) is None


def test_errors_reach_the_user_as_messages(service, session, tmp_path, caplog):
    import logging

    import gradio as gr

    from xai_platform.ui.common import user_errors

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00not really audio")

    @user_errors
    def handler():
        return service.analyse(session, str(bad), "tiny-torch-audio")

    with caplog.at_level(logging.WARNING, logger="xai_platform.ui"):
        with pytest.raises(gr.Error, match="broken.wav") as info:
            handler()
    # Titled by what happened; one log line, no traceback (an input problem, not a bug).
    assert info.value.title == "Input not usable" and not info.value.print_exception
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is None
    assert "\n" not in caplog.records[0].getMessage().strip()

    @user_errors
    def crashing():
        raise ZeroDivisionError("boom")

    with pytest.raises(gr.Error, match="still running") as info:
        crashing()
    assert info.value.title == "Unexpected error (ZeroDivisionError)"



def test_a_button_pressed_with_nothing_uploaded_says_where_the_file_goes():
    """Seen in Chromium: a DICOM dropped on the audio box (the first modality) is turned away
    by the box, and Predict then said only "No input yet: upload a file (or record audio)
    first". The message names the modality whose box is shown and how to get the other's."""
    import gradio as gr

    from xai_platform.ui.common import input_path, user_errors

    assert input_path("audio", "voice.wav", None) == "voice.wav"
    assert input_path("xray", "voice.wav", "chest.png") == "chest.png"
    with pytest.raises(gr.Error) as info:
        user_errors(input_path)("audio", None, "chest.dcm")  # the X-ray box's file is not used
    assert "upload a file for 'Audio: real or synthetic voice?'" in str(info.value)
    assert "microphone" in str(info.value)
    assert "For 'Chest X-ray', choose it under Modality first" in str(info.value)
    with pytest.raises(gr.Error, match="choose it under Modality first") as info:
        user_errors(input_path)("xray", "voice.wav", None)
    assert "upload a file for 'Chest X-ray'" in str(info.value)
    assert "microphone" not in str(info.value)

def test_a_choice_sent_before_the_page_changed_its_list_is_no_error(tmp_path):
    """Seen in Chromium: a user who picks "Chest X-ray" as the page loads got an error toast,
    "Value: audio-whisper-readout is not in the list of choices: [...]", and sometimes no
    method description. The page's load events carry the audio model; the modality's update
    had changed the model list before the server handled them. Here the same order of events
    goes through Gradio's own processing."""
    import asyncio

    import gradio as gr
    from gradio.state_holder import SessionState

    from conftest import TINY_MODELS, write_config
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.ui.app import build_app
    from xai_platform.ui.common import STALE_MESSAGE

    models = [m for m in TINY_MODELS if m["framework"] == "torch"]
    config = load_config([write_config(tmp_path / "tiny.yaml", models)], base=None)
    demo = build_app(ModelManager(config, device="cpu"), config.app)

    def handler(name, n_outputs=None):
        return next(f for f in demo.fns.values()
                    if f.name == name and n_outputs in (None, len(f.outputs)))

    async def events():
        state = SessionState(demo)
        update = await demo.process_api(handler("on_modality"), ["xray"], state)
        assert update["data"][0]["value"] == "tiny-torch-xray"
        # sent before that update: the page's own events skip theirs, with no error
        skipped = [await demo.process_api(handler(name, n), inputs, state) for name, n, inputs in (
            ("on_model_status", None, ["tiny-torch-audio"]),
            ("on_method", None, ["tiny-torch-audio", "gradcam"]),
            ("on_model", 3, ["tiny-torch-audio"]),  # the Classification page's
            ("on_model", 2, ["tiny-torch-audio"]))]  # the Comparison page's
        # a pressed button asks to be pressed again
        with pytest.raises(gr.Error, match="press the button again") as info:
            await demo.process_api(handler("on_predict"),
                                   [None, "xray", None, None, "tiny-torch-audio"], state)
        return skipped, info.value

    skipped, error = asyncio.run(events())
    assert all(out == {"__type__": "update"} for result in skipped for out in result["data"])
    assert str(error).strip("'") == STALE_MESSAGE and error.title == "Choices changed"
    # drawn by the page as Gradio's own components
    model = handler("on_model_status").inputs[0]
    methods = handler("on_model", 2).outputs[0]
    assert (model.get_block_name(), methods.get_block_name()) == ("dropdown", "checkboxgroup")
    # and Gradio wrote no type stub beside the module that defines them
    assert not list((ROOT / "xai_platform" / "ui").glob("*.pyi"))

def test_another_model_clears_what_predict_showed(tmp_path):
    """The window timeline and the window list are the last model's (its windows, its
    scores): a model change empties them with the probabilities and the headline, as another
    file or modality does."""
    import asyncio

    from gradio.state_holder import SessionState

    from conftest import TINY_MODELS, write_config
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.ui.app import build_app
    from xai_platform.ui.classification import AUTO_WINDOW

    models = [m for m in TINY_MODELS if m["framework"] == "torch"]
    config = load_config([write_config(tmp_path / "tiny.yaml", models)], base=None)
    demo = build_app(ModelManager(config, device="cpu"), config.app)
    fn = next(f for f in demo.fns.values() if f.name == "on_model_status")
    out = asyncio.run(demo.process_api(fn, ["tiny-torch-audio"], SessionState(demo)))["data"]
    label, verdict, timeline, window = out[1:]
    assert not label and verdict == ""  # the label drawn empty
    assert timeline.get("visible") is False and timeline.get("value") is None
    assert window.get("value") == AUTO_WINDOW
    assert window.get("choices") == [[AUTO_WINDOW, AUTO_WINDOW]]


# --- the served app, through gradio_client ---------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from conftest import TINY_MODELS, write_config
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.ui.app import build_app, launch

    folder = tmp_path_factory.mktemp("app")
    torch_models = [m for m in TINY_MODELS if m["framework"] == "torch"]
    config = load_config([write_config(folder / "tiny.yaml", torch_models)], base=None)
    manager = ModelManager(config, device="cpu")
    demo = build_app(manager, config.app)
    port = _free_port()
    launch(demo, host="127.0.0.1", port=port, share=False, auth=None, concurrency=4,
           prevent_thread_lock=True)
    yield f"http://127.0.0.1:{port}/", folder
    demo.close()


@pytest.fixture(scope="module")
def inputs(served):
    import soundfile as sf
    from PIL import Image

    _, folder = served
    wav = folder / "voice.wav"
    sf.write(wav, tone(1.5, sr=16000), 16000)
    pngs = []
    for seed in (0, 1):
        path = folder / f"chest{seed}.png"
        Image.fromarray((chest_like(96, seed=seed) * 255).astype(np.uint8)).save(path)
        pngs.append(path)
    return wav, pngs


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_api_models_and_predict(served, inputs):
    from gradio_client import handle_file

    url, _ = served
    client = _client(url)
    models = client.predict(api_name="/models")["models"]
    assert {m["id"] for m in models} == {"tiny-torch-audio", "tiny-torch-xray"}
    result = client.predict(handle_file(str(inputs[0])), "tiny-torch-audio", api_name="/predict")
    assert result["prediction"]["untrained"] is True
    assert set(result["prediction"]["probabilities"]) == {"real", "fake"}
    # the familiarity fields travel through the API (no check fitted here: never withheld)
    assert result["prediction"]["withheld"] is False and result["prediction"]["reason"] is None
    assert len(result["timeline"]) >= 2


def test_api_page_lists_only_the_named_endpoints(served):
    url, _ = served
    api = _client(url).view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/predict", "/explain", "/compare", "/models"}
    assert not api["unnamed_endpoints"]


def test_api_explain_returns_record_figure_and_heatmap(served, inputs):
    from gradio_client import handle_file

    url, _ = served
    record, figure, heatmap = _client(url).predict(
        handle_file(str(inputs[1][0])), "tiny-torch-xray", "lime", {"num_samples": 100}, 5,
        api_name="/explain")
    assert record["method"] == "lime" and record["seed"] == 5
    assert record["params"]["num_samples"] == 100 and "heatmap_stats" in record
    assert open(figure, "rb").read(4) == b"\x89PNG"
    assert np.load(heatmap).shape == (32, 32)


def test_api_compare_and_errors(served, inputs):
    from gradio_client import handle_file

    url, _ = served
    client = _client(url)
    summary, figures = client.predict(handle_file(str(inputs[1][0])), "tiny-torch-xray",
                                      ["saliency", "gradcam"], 0, api_name="/compare")
    assert [r["method"] for r in summary["results"]] == ["gradcam", "saliency"]  # fastest first
    assert len(figures) == 2
    assert "ranking" not in summary and "scorecard" not in summary["results"][0]
    assert summary["agreement"]["methods"] == ["gradcam", "saliency"]
    # what the page shows below its cards: scorecards, the ranking, which maps to trust
    scored, _ = client.predict(handle_file(str(inputs[1][0])), "tiny-torch-xray",
                               ["gradcam", "saliency"], 0, ["faithfulness", "randomization"],
                               api_name="/compare")
    cards = {r["method"]: r["scorecard"] for r in scored["results"]}
    assert all({"insertion_auc", "deletion_auc", "randomization_rho"} <= set(c["values"])
               for c in cards.values())
    assert sorted(r["method"] for r in scored["ranking"]) == ["gradcam", "saliency"]
    assert scored["ranking"][0]["rank"] == 1 and scored["trust"]
    for r in scored["ranking"]:
        failing = {"fails_randomization": "the randomisation check",
                   "chance_order": "deletion / insertion no better than chance"}
        assert r["passes"] == (not r["fails"])
        assert set(r["fails"]) == {failing[f] for f in cards[r["method"]]["flags"]
                                   if f in failing}
    assert len(scored["agreement"]["spearman"]) == 2
    with pytest.raises(Exception, match="unknown metric 'speed'"):
        client.predict(handle_file(str(inputs[1][0])), "tiny-torch-xray", ["gradcam"], 0,
                       ["speed"], api_name="/compare")
    with pytest.raises(Exception, match="unknown method"):
        client.predict(handle_file(str(inputs[1][0])), "tiny-torch-xray", "magic", None, 0,
                       api_name="/explain")
    # The app goes on serving after an error.
    assert client.predict(api_name="/models")["models"]


def test_concurrent_clients_get_the_heatmaps_they_get_alone(served, inputs):
    from gradio_client import handle_file

    url, _ = served
    jobs = [(inputs[1][0], "lime", 11), (inputs[1][1], "integrated_gradients", 0),
            (inputs[1][1], "lime", 12), (inputs[1][0], "gradcam", 0)]

    def run(path, method, seed):
        _, _, heatmap = _client(url).predict(handle_file(str(path)), "tiny-torch-xray", method,
                                             {"num_samples": 200} if method == "lime" else None,
                                             seed, api_name="/explain")
        return np.load(heatmap)

    alone = [run(*job) for job in jobs]
    together: list = [None] * len(jobs)

    def worker(i):
        together[i] = run(*jobs[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(alone, together):
        assert np.array_equal(a, b)


def test_api_calls_drop_their_caches_and_keep_only_recent_folders(service, png_file):
    from xai_platform.ui.app import ApiSessions

    sessions, used = ApiSessions(keep=3), []
    for seed in range(5):
        with sessions.open() as sess:
            service.explain(sess, str(png_file), "tiny-torch-xray", "lime",
                            params={"num_samples": 100}, seed=seed)
            (sess.dir / "figure.png").write_bytes(b"png")
        used.append(sess)
    with pytest.raises(ZeroDivisionError), sessions.open() as sess:  # a failed call too
        service.analyse(sess, str(png_file), "tiny-torch-xray")
        used.append(sess)
        1 / 0
    try:
        # Nothing of a finished call stays in memory: an API call never asks again.
        assert all(not s.analyses and not s.explanations and not s.scorecards for s in used)
        # Its files stay until `keep` calls later (Gradio copies them out first).
        assert [(s.dir / "figure.png").exists() for s in used[:5]] == [False] * 3 + [True] * 2
    finally:
        for s in used:
            s.close()


def test_a_running_explanation_can_be_cancelled(service, session, png_file):
    from xai_platform.errors import CancelledError

    calls = []

    def progress(fraction, what):  # the Cancel button sets the session's flag mid-run
        calls.append(fraction)
        if len(calls) == 2:
            session.cancel.set()

    with pytest.raises(CancelledError, match="cancelled"):
        service.explain(session, str(png_file), "tiny-torch-xray", "lime",
                        params={"num_samples": 2000}, progress=progress)
    assert 2 <= len(calls) < 10  # stopped at the next batch, not after 2000 samples
    # Nothing half-done was cached, and the next request runs normally.
    result = service.explain(session, str(png_file), "tiny-torch-xray", "gradcam")
    assert result.heatmap.shape == (32, 32) and session.computed == 1


def test_a_cancelled_comparison_keeps_what_finished_and_ranks_it(service, session, png_file):
    from xai_platform.errors import CancelledError
    from xai_platform.ui.comparison import cancelled_status, compare, summary_outputs

    finished = {}

    def progress(fraction, desc=""):  # Cancel pressed while the second method (LIME) runs
        if finished and desc.startswith("LIME"):
            session.cancel.set()

    run = compare(service, session, "xray", None, str(png_file), "tiny-torch-xray",
                  ["lime", "gradcam", "saliency"], 0, progress=progress,
                  metrics=("faithfulness",))
    with pytest.raises(CancelledError, match="cancelled"):
        for done, total, method, expl, card in run:
            finished[method] = (expl, card)
    assert list(finished) == ["gradcam", "saliency"]  # the fast ones, before LIME
    text, _ = summary_outputs({k: e for k, (e, _) in finished.items()},
                              {k: c for k, (_, c) in finished.items()},
                              partial="partial: 2 of 3 methods")
    assert "(partial: 2 of 3 methods)" in text and "Grad-CAM" in text and "| 1 |" in text
    assert cancelled_status(2, 3).startswith("**Cancelled after 2 of 3 methods.**")
    # A cancel pressed while a method is being scored is not lost by the next one's start ...
    def while_scoring(fraction, desc=""):
        if "scoring" in desc:
            session.cancel.set()

    got = []
    with pytest.raises(CancelledError, match="after 1 of 2"):
        for result in compare(service, session, "xray", None, str(png_file), "tiny-torch-xray",
                              ["gradcam", "integrated_gradients"], 0, progress=while_scoring,
                              metrics=("faithfulness",)):
            got.append(result)
    assert len(got) == 1
    # ... and the next comparison starts afresh.
    assert len(list(compare(service, session, "xray", None, str(png_file), "tiny-torch-xray",
                            ["gradcam"], 0))) == 1


def test_the_ranking_puts_a_method_failing_its_checks_last(service, session, png_file):
    from dataclasses import replace

    from xai_platform.evaluation.scorecard import FLAGS
    from xai_platform.ui.comparison import compare, summary_outputs

    results = list(compare(service, session, "xray", None, str(png_file), "tiny-torch-xray",
                           ["gradcam", "saliency"], 0, metrics=("faithfulness",)))
    expls = {m: e for _, _, m, e, _ in results}
    cards = {m: c for _, _, m, _, c in results}
    # (an untrained tiny model: set the checks' outcome by hand)
    failing = replace(cards["gradcam"], flags={"fails_randomization": FLAGS["fails_randomization"]})
    passing = replace(cards["saliency"], flags={})
    text, _ = summary_outputs(expls, {"gradcam": failing, "saliency": passing})
    rows = [r for r in text.splitlines() if r.startswith("| ") and "Rank" not in r]
    assert "Gradient saliency | passes" in rows[0] and "Grad-CAM | fails" in rows[1]
    text, _ = summary_outputs({"gradcam": expls["gradcam"]}, {"gradcam": failing})
    assert "No map here can be trusted for this input" in text


def test_examples_offered_are_inputs_not_masks():
    from xai_platform.ui.common import example_files

    xray = [Path(p).name for p in example_files("xray")]
    assert "rg1-chest-pa.dcm" in xray and any(n.endswith("-lesion.png") for n in xray)
    assert not any(n.endswith(".mask.png") or n.endswith(".csv") for n in xray)
    assert example_files("audio") and all(Path(p).suffix in (".wav", ".flac", ".ogg", ".mp3")
                                          for p in example_files("audio"))


def test_every_figure_reaches_the_page_as_drawn(manager):
    """The page's figures and plots travel as PNG: Gradio's default (lossy WebP at quality 80,
    colour at half resolution) smeared a heatmap's single cells."""
    import base64
    import io

    import gradio as gr
    from matplotlib.figure import Figure
    from PIL import Image

    from xai_platform.ui.app import build_app

    demo = build_app(manager, manager.config.app)
    shown = [b for b in demo.blocks.values()
             if isinstance(b, gr.Plot) or (isinstance(b, gr.Image) and not b.interactive)]
    images = [b for b in shown if isinstance(b, gr.Image)]
    plots = [b for b in shown if isinstance(b, gr.Plot)]
    # the preview, the classification figure, one card per method; the timeline, the band
    # read-outs, the agreement matrix
    assert len(images) >= 3 and len(plots) >= 3
    # one-pixel cells of saturated colours: what chroma subsampling and lossy coding smear
    cells = (np.random.default_rng(0).random((40, 60, 3)) > 0.5).astype(np.uint8) * 255
    for image in images:
        sent = image.postprocess(cells)
        assert Path(sent.path).suffix == ".png", image.label
        assert np.array_equal(np.asarray(Image.open(sent.path).convert("RGB")), cells), image.label
    figure = Figure(figsize=(2, 2), dpi=50)
    figure.subplots().imshow(cells, interpolation="nearest")
    for plot in plots:
        header, data = plot.postprocess(figure).plot.split(",", 1)
        assert header == "data:image/png;base64", plot.label
        assert Image.open(io.BytesIO(base64.b64decode(data))).format == "PNG"
