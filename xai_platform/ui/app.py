"""The Gradio Blocks app: a shared input header, the Classification and XAI Comparison pages,
a Models page, and named API endpoints (/predict, /explain, /compare, /models)."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio import FileData

from ..config import AppSettings
from ..errors import XAIError
from ..explainers import get_method
from ..memory import pin_mmap_threshold, release_free_memory
from ..modalities import all_modalities, get_modality
from ..models import ModelManager
from ..preload import warm_up as warm_up_app
from ..service import SESSION_ROOT, MethodTimes, Service, Session, default_times_file
from . import classification, comparison, fetch_panel, plugin_panel
from .common import (FIGURE_FORMAT, CurrentDropdown, example_files, file_types, input_kind,
                     input_path, model_choices, model_status_markdown, prediction_outputs,
                     skip_stale, user_error, user_errors)

log = logging.getLogger("xai_platform.ui")

INTRO = """# XAI Platform
Upload a **voice recording** (real or synthetic?) or a **chest X-ray** (PNG, JPEG or DICOM), pick a
model, see its prediction and **why**: Grad-CAM, Grad-CAM++, LIME, SHAP, Integrated Gradients and
gradient saliency, each as input | heatmap | overlay."""


#: Markdown tables (the ranking, the scorecards): Gradio's prose style lets a word break
#: anywhere (word-break: break-word), so the browser sized the ranking's first column below its
#: header and showed "Ran" over "k". Words now break only where a cell cannot hold them.
PAGE_CSS = ".prose th, .prose td { word-break: normal; overflow-wrap: break-word; }"


def _preview(modality: str, path: str | None, settings: AppSettings) -> np.ndarray | None:
    return get_modality(modality).preview(path, settings) if path else None


def models_table(service: Service) -> str:
    """The Models tab: three columns (model with its modality and framework, status, methods),
    so no column is squeezed until its heading wraps letter by letter."""
    lines = ["| Model | Status | Methods that apply |", "|---|---|---|"]
    for row in service.models():
        ok, _ = service.methods(row.id)
        status = row.state if not row.reason or row.state == "ready" else f"{row.state}: {row.reason}"
        if service.manager.checking(row.id):
            status += " (checking its target layer...)"
        forward = service.manager.forward_path(row.id)
        if forward is not None:
            status += f"<br>forward passes: {forward.describe()}"
        labels = ", ".join(get_method(m).label for m in ok)
        lines.append(f"| **{row.name}**<br>`{row.id}` · {row.modality} · {row.framework} | "
                     f"{status} | {labels} |")
    return "\n".join(lines)


def build_app(manager: ModelManager, settings: AppSettings | None = None) -> gr.Blocks:
    service = Service(manager, settings)
    # the pages' times kept between runs, so that a restarted app still says how long they take
    service.times = MethodTimes(default_times_file())
    modalities = [m for m in all_modalities() if service.models(m.name)] or all_modalities()
    first_modality = modalities[0].name
    first_kind = input_kind(first_modality)
    choices, default_model = model_choices(service, first_modality)

    with gr.Blocks(title="XAI Platform", delete_cache=(3600, 86400)) as demo:
        session = gr.State(Session(), delete_callback=lambda s: s.close())
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                modality = gr.Radio([(m.label, m.name) for m in modalities],
                                    value=first_modality, label="Modality")
                model = CurrentDropdown(choices=choices, value=default_model, label="Model")
                status = gr.Markdown(model_status_markdown(service, default_model))
            with gr.Column(scale=1):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                 label="Audio (WAV, FLAC, OGG, MP3, M4A or microphone)",
                                 visible=first_kind == "audio")
                image = gr.File(file_types=file_types("file"), type="filepath",
                                label="File (X-ray: PNG, JPEG or DICOM)",
                                visible=first_kind == "file")
                preview = gr.Image(label="Input as loaded", type="numpy", interactive=False,
                                   height=220, visible=False, format=FIGURE_FORMAT)
            with gr.Column(scale=1):
                predict_btn = gr.Button("Predict", variant="primary")
                label = gr.Label(label="Model output (probabilities)", num_top_classes=6,
                                 show_heading=False)
                verdict = gr.Markdown()
        timeline = gr.Plot(label="Score per window", visible=False, format=FIGURE_FORMAT)
        example_columns = {}
        with gr.Row():
            for m in modalities:
                files = example_files(m.name)
                with gr.Column(visible=bool(files) and m.name == first_modality) as col:
                    if files:
                        # A plain list of names, not gr.Examples: that one probes every audio
                        # example with ffprobe while the page is built (about 1 s of start-up);
                        # here a file is handed to the input only when clicked.
                        picker = gr.Dataset(components=["textbox"], type="index",
                                            samples=[[Path(p).name] for p in files],
                                            label=f"Examples: {m.label}", samples_per_page=12)
                        picker.click(lambda i, files=files: files[i], [picker],
                                     [audio if input_kind(m.name) == "audio" else image],
                                     api_visibility="private")
                example_columns[m.name] = (col, bool(files))
        header = {"modality": modality, "model": model, "audio": audio, "image": image,
                  "first_modality": first_modality}
        with gr.Tabs():
            with gr.Tab("Classification", id="classification") as classification_tab:
                cls = classification.build(service, header, session)
            with gr.Tab("XAI Comparison", id="comparison") as comparison_tab:
                cmp = comparison.build(service, header, session)
            with gr.Tab("Models", id="models"):
                table = gr.Markdown(models_table(service))
                # The target-layer checks run in the background after start-up: refresh the
                # table until they are done.
                timer = gr.Timer(1.0, active=manager.checking())
                fetch_panel.build(service, table, models_table)
                plugin_panel.build(service)

        @user_errors
        def on_modality(mod):
            new_choices, value = model_choices(service, mod)
            kind = input_kind(mod)
            windowed = get_modality(mod).window_label is not None
            return (gr.update(choices=new_choices, value=value), gr.update(visible=kind == "audio"),
                    gr.update(visible=kind == "file"), gr.update(visible=False),
                    *[gr.update(visible=has and name == mod)
                      for name, (_, has) in example_columns.items()],
                    *cleared_prediction(visible=windowed,
                                        label=get_modality(mod).window_label or "Window"),
                    gr.update(visible=get_modality(mod).has_readout))

        def on_tick():
            return models_table(service), gr.Timer(active=manager.checking())

        timer.tick(on_tick, None, [table, timer], api_visibility="private")

        @skip_stale
        @user_errors
        def on_model_status(model_id):
            return model_status_markdown(service, model_id), *cleared_prediction()

        @user_errors
        def on_image(mod, path):
            picture = _preview(mod, path, service.settings)
            return gr.update(value=picture, visible=picture is not None,
                             label=f"{get_modality(mod).label} as loaded")

        @user_errors
        def on_predict(sess, mod, audio_path, image_path, model_id):
            path = input_path(mod, audio_path, image_path)
            label_v, verdict_v, fig = prediction_outputs(service, sess, path, model_id)
            windows = classification.window_choices(service, sess, path, model_id)
            return (label_v, verdict_v, gr.update(value=fig, visible=fig is not None),
                    gr.update(choices=windows, value=windows[0]))

        shown = [label, verdict, timeline, cls["window"]]  # what Predict shows
        modality.change(on_modality, [modality],
                        [model, audio, image, preview,
                         *[col for col, _ in example_columns.values()], *shown,
                         cls["readout_row"]], api_visibility="private")
        model.change(on_model_status, [model], [status, *shown], api_visibility="private")
        image.change(on_image, [modality, image], [preview], api_visibility="private")
        for source in (audio, image):
            # Another file (uploaded, recorded or an example): the prediction shown was the last
            # file's, beside this one's preview (seen in Chromium: "lesion: p(lesion) = 1.00"
            # stayed above the next image, whose explanation then said "prediction normal
            # 93.4%"). Unqueued: done at once, well before a Predict pressed after the upload.
            source.change(cleared_prediction, None, shown, queue=False, show_progress="hidden",
                          api_visibility="private")
        predict_btn.click(on_predict, [session, modality, audio, image, model], shown,
                          show_progress_on=[label],
                          api_visibility="private"  # one spinner, not one per output
                          ).then(cmp["on_expected"], *cmp["expecting"], show_progress="hidden",
                                 api_visibility="private"
                                 ).then(cls["on_expected"], *cls["expecting"],
                                        show_progress="hidden", api_visibility="private")
        # the model may have loaded since the methods were listed (its engine, then known,
        # names its times): the comparison's estimate as the tab opens
        comparison_tab.select(cmp["on_expected"], *cmp["expecting"], show_progress="hidden",
                              api_visibility="private")
        classification_tab.select(cls["on_expected"], *cls["expecting"], show_progress="hidden",
                                  api_visibility="private")
        demo.load(skip_stale(lambda m: (*cls["on_model"](m), *cmp["on_model"](m))), [model],
                  [cls["method"], cls["hidden"], cls["target"], cmp["methods"], cmp["hidden"]],
                  api_visibility="private")
        register_api(service)
    return demo


def cleared_prediction(**window: Any) -> tuple[Any, ...]:
    """What Predict shows (the probabilities, the headline, the window timeline, the window
    list), emptied: after another file, model or modality it was about the last one (a model's
    windows and their scores are its own). ``window``: more of the window list's update (a
    modality's label and visibility)."""
    auto = classification.AUTO_WINDOW
    return (None, "", gr.update(value=None, visible=False),
            gr.update(choices=[auto], value=auto, **window))


class ApiSessions:
    """The Sessions of API calls: one per call, nothing shared between calls but the models.

    When a call returns, its caches are dropped at once (an API call never asks again) and the
    allocator's free memory goes back to the system; its folder, which holds the files the call
    returns, is kept until ``keep`` calls later (Gradio has copied them out by then)."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._folders: collections.deque[Session] = collections.deque()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def open(self) -> Iterator[Session]:
        sess = Session()
        try:
            yield sess
        finally:
            sess.release()
            with self._lock:
                self._folders.append(sess)
                old = self._folders.popleft() if len(self._folders) > self.keep else None
            if old is not None:
                old.close()
            release_free_memory()


def register_api(service: Service) -> None:
    """Named endpoints for gradio_client. Each call gets its own Session (:class:`ApiSessions`):
    nothing is shared between API calls but the loaded models."""
    sessions = ApiSessions()

    def path_of(file: FileData | dict | str) -> str:
        if isinstance(file, str):
            return file
        return file["path"] if isinstance(file, dict) else file.path

    def api_errors(fn):
        def wrapped(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except XAIError as exc:
                raise user_error(exc, f"/{fn.__name__}") from None
        wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
        wrapped.__annotations__ = fn.__annotations__
        wrapped.__wrapped__ = fn
        return wrapped

    def predict(file: FileData, model: str) -> dict:
        """Predict one input (audio or image file) with one model: label, probabilities,
        verdict, notes and, for long audio, the per-window timeline."""
        with sessions.open() as sess:
            analysis = service.analyse(sess, path_of(file), model)
            return {"model": model, "prediction": analysis.prediction.to_dict(),
                    "notes": list(analysis.notes),
                    "timeline": service.timeline_records(analysis)}

    def explain(file: FileData, model: str, method: str, params: dict | None = None,
                seed: int = 0, target: str | None = None,
                window: int | None = None) -> tuple[dict, FileData, FileData]:
        """Explain one prediction with one method: the JSON record (prediction, method,
        parameters, seed, heatmap statistics, timings, weights hash, library versions), the
        figure (PNG) and the heatmap itself (.npy, float32)."""
        with sessions.open() as sess:
            expl = service.explain(sess, path_of(file), model, method, params=params, seed=seed,
                                   target=target, window=window)
            png, _, heatmap = service.export(sess, expl)
            return service.record(expl), FileData(path=str(png)), FileData(path=str(heatmap))

    def compare(file: FileData, model: str, methods: list[str] | None = None,
                seed: int = 0, metrics: list[str] | None = None
                ) -> tuple[dict, list[FileData]]:
        """Several methods on the same input and model (default: all that apply), fastest
        first: one record and one figure per method. ``metrics`` (any of faithfulness,
        randomization, stability; the page ticks the first two): each record gets its
        scorecard, and the summary the page's ranking ("trust", "ranking") and the agreement
        between maps."""
        from ..evaluation.scorecard import comparison_record, json_safe

        chosen = methods or service.methods(model)[0]
        records, figures, cards, heatmaps = [], [], {}, {}
        with sessions.open() as sess:
            for _, _, method, expl, card in service.compare(
                    sess, path_of(file), model, list(chosen), seed=seed,
                    metrics=tuple(metrics or ())):
                png, _, _ = service.export(sess, expl)
                record = service.record(expl)
                if card is not None:
                    cards[method] = card
                    record["scorecard"] = json_safe(card.to_dict())
                records.append(record)
                heatmaps[method] = expl.heatmap
                figures.append(FileData(path=str(png)))
        return {"model": model, "results": records,
                **comparison_record(cards, heatmaps)}, figures

    def models() -> dict:
        """Every configured model with its status and the methods that apply."""
        out = []
        for row in service.models():
            ok, why_not = service.methods(row.id)
            out.append({"id": row.id, "name": row.name, "modality": row.modality,
                        "framework": row.framework, "status": row.state, "reason": row.reason,
                        "methods": ok, "not_applicable": why_not})
        return {"models": out}

    for fn in (predict, explain, compare, models):
        gr.api(api_errors(fn), api_name=fn.__name__)


def set_concurrency(demo: gr.Blocks, limit: int) -> None:
    """Run at most ``limit`` events of one kind at a time (``queue(default_concurrency_limit=)``).

    ``gr.Blocks()`` has made its queue already, and ``demo.queue()`` would make another and
    rebuild the FastAPI app, which ``launch()`` builds once more: 0.04-0.1 s of start-up spent
    on an app that is thrown away. The limit is read when the first event is queued, so setting
    it on the existing queue is enough; a Gradio without that queue gets ``demo.queue()``.
    """
    queue = getattr(demo, "_queue", None)
    if queue is not None and hasattr(queue, "default_concurrency_limit"):
        queue.default_concurrency_limit = limit
    else:
        demo.queue(default_concurrency_limit=limit)


def launch(demo: gr.Blocks, *, host: str, port: int, share: bool, auth: Any, concurrency: int,
           prevent_thread_lock: bool = False, warm_up: bool = False,
           gate: bool = False) -> gr.Blocks:
    """Serve ``demo``. ``warm_up`` (``python app.py``): once the page is served, import in a
    background thread what the first request would otherwise wait for
    (:func:`xai_platform.preload.warm_up`; ``gate``: also the X-ray gate's lung segmenter) and
    print a line when done. Tests that launch a page leave it off: they import what they use."""
    pin_mmap_threshold()  # memory freed by requests goes back to the system (xai_platform.memory)
    set_concurrency(demo, concurrency)
    SESSION_ROOT.mkdir(parents=True, exist_ok=True)
    demo.launch(server_name=host, server_port=port, share=share, auth=auth, show_error=False,
                quiet=False, prevent_thread_lock=True, footer_links=["api", "gradio"],
                allowed_paths=[str(SESSION_ROOT)], css=PAGE_CSS)
    local = f"http://{host}:{port}"
    if share and not getattr(demo, "share_url", None):
        print(f"[xai] The public share link could not be created (no internet or the tunnel is "
              f"blocked). The app runs locally at {local}.", flush=True)
    elif share:
        print(f"[xai] Public link: {demo.share_url}"
              + ("" if auth else "  (no --auth: anyone with the link can use the app)"), flush=True)
    print(f"[xai] Serving on {local}", flush=True)
    if warm_up:
        threading.Thread(target=lambda: print(warm_up_app(gate=gate), flush=True),
                         name="xai-preload", daemon=True).start()
    if not prevent_thread_lock:
        demo.block_thread()
    return demo
