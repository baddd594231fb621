"""The Gradio Blocks app: a shared input header, the Classification and XAI Comparison pages,
a Models page, and named API endpoints (/predict, /explain, /compare, /models)."""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np
from gradio import FileData

from ..config import AppSettings
from ..errors import XAIError
from ..explainers import get_method
from ..memory import pin_mmap_threshold, release_free_memory
from ..models import ModelManager
from . import classification, comparison
from .common import (IMAGE_TYPES, MODALITY_LABELS, example_files, input_path, model_choices,
                     model_status_markdown, prediction_outputs, user_errors)
from .service import SESSION_ROOT, Service, Session, heatmap_summary

log = logging.getLogger("xai_platform.ui")

INTRO = """# XAI Platform
Upload a **voice recording** (real or synthetic?) or a **chest X-ray** (PNG, JPEG or DICOM), pick a
model, see its prediction and **why**: Grad-CAM, Grad-CAM++, LIME, SHAP, Integrated Gradients and
gradient saliency, each as input | heatmap | overlay."""


def _preview(path: str | None, max_pixels: int) -> np.ndarray | None:
    if not path:
        return None
    from ..preprocessing.image import load_image

    pixels = load_image(path, max_pixels=max_pixels).pixels
    return (np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def models_table(service: Service) -> str:
    lines = ["| model | modality | framework | status | methods |", "|---|---|---|---|---|"]
    for row in service.models():
        ok, _ = service.methods(row.id)
        status = row.state if not row.reason or row.state == "ready" else f"{row.state}: {row.reason}"
        lines.append(f"| {row.name} (`{row.id}`) | {row.modality} | {row.framework} | {status} | "
                     f"{', '.join(ok)} |")
    return "\n".join(lines)


def build_app(manager: ModelManager, settings: AppSettings | None = None) -> gr.Blocks:
    service = Service(manager, settings)
    first_modality = "audio" if service.models("audio") else "xray"
    choices, default_model = model_choices(service, first_modality)

    with gr.Blocks(title="XAI Platform", delete_cache=(3600, 86400)) as demo:
        session = gr.State(Session(), delete_callback=lambda s: s.close())
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                modality = gr.Radio([(v, k) for k, v in MODALITY_LABELS.items()],
                                    value=first_modality, label="Modality")
                model = gr.Dropdown(choices=choices, value=default_model, label="Model")
                status = gr.Markdown(model_status_markdown(service, default_model))
            with gr.Column(scale=1):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                 label="Audio (WAV, FLAC, OGG, MP3 or microphone)",
                                 visible=first_modality == "audio")
                image = gr.File(file_types=IMAGE_TYPES, type="filepath",
                                label="X-ray (PNG, JPEG or DICOM)",
                                visible=first_modality == "xray")
                preview = gr.Image(label="X-ray as loaded", type="numpy", interactive=False,
                                   height=220, visible=False)
            with gr.Column(scale=1):
                predict_btn = gr.Button("Predict", variant="primary")
                label = gr.Label(label="Model output (probabilities)", num_top_classes=6,
                                 show_heading=False)
                verdict = gr.Markdown()
        timeline = gr.Plot(label="Score per window", visible=False)
        with gr.Row():
            audio_examples = example_files("audio")
            image_examples = example_files("xray")
            if audio_examples:
                with gr.Column(visible=first_modality == "audio") as audio_ex_col:
                    gr.Examples([[p] for p in audio_examples], [audio], label="Example recordings")
            else:
                audio_ex_col = gr.Column(visible=False)
            if image_examples:
                with gr.Column(visible=first_modality == "xray") as image_ex_col:
                    gr.Examples([[p] for p in image_examples], [image], label="Example X-rays")
            else:
                image_ex_col = gr.Column(visible=False)
        header = {"modality": modality, "model": model, "audio": audio, "image": image}
        with gr.Tabs():
            with gr.Tab("Classification", id="classification"):
                cls = classification.build(service, header, session)
            with gr.Tab("XAI Comparison", id="comparison"):
                cmp = comparison.build(service, header, session)
            with gr.Tab("Models", id="models"):
                gr.Markdown(models_table(service))

        @user_errors
        def on_modality(mod):
            new_choices, value = model_choices(service, mod)
            return (gr.update(choices=new_choices, value=value), gr.update(visible=mod == "audio"),
                    gr.update(visible=mod == "xray"), gr.update(visible=False),
                    gr.update(visible=mod == "audio"), gr.update(visible=mod == "xray"),
                    None, "", gr.update(visible=False),
                    gr.update(visible=mod == "audio", choices=[classification.AUTO_WINDOW],
                              value=classification.AUTO_WINDOW))

        @user_errors
        def on_model_status(model_id):
            return model_status_markdown(service, model_id), None, ""

        @user_errors
        def on_image(path):
            return gr.update(value=_preview(path, service.settings.max_image_pixels),
                             visible=bool(path))

        @user_errors
        def on_predict(sess, mod, audio_path, image_path, model_id):
            path = input_path(mod, audio_path, image_path)
            label_v, verdict_v, fig = prediction_outputs(service, sess, path, model_id)
            windows = classification.window_choices(service, sess, path, model_id)
            return (label_v, verdict_v, gr.update(value=fig, visible=fig is not None),
                    gr.update(choices=windows, value=windows[0]))

        modality.change(on_modality, [modality],
                        [model, audio, image, preview, audio_ex_col, image_ex_col, label, verdict,
                         timeline, cls["window"]], api_visibility="private")
        model.change(on_model_status, [model], [status, label, verdict], api_visibility="private")
        image.change(on_image, [image], [preview], api_visibility="private")
        predict_btn.click(on_predict, [session, modality, audio, image, model],
                          [label, verdict, timeline, cls["window"]], api_visibility="private")
        demo.load(lambda m: (*cls["on_model"](m), *cmp["on_model"](m)), [model],
                  [cls["method"], cls["hidden"], cls["target"], cmp["methods"], cmp["hidden"]],
                  api_visibility="private")
        register_api(service)
    return demo


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
                raise gr.Error(str(exc)) from None
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
                    "timeline": [{"start_s": s, "score": p}
                                 for s, p in service.timeline(analysis)]}

    def explain(file: FileData, model: str, method: str, params: dict | None = None,
                seed: int = 0, target: str | None = None,
                window: int | None = None) -> tuple[dict, FileData, FileData]:
        """Explain one prediction with one method: the JSON record (prediction, method,
        parameters, seed, heatmap statistics, timings, weights hash, library versions), the
        figure (PNG) and the heatmap itself (.npy, float32)."""
        with sessions.open() as sess:
            expl = service.explain(sess, path_of(file), model, method, params=params, seed=seed,
                                   target=target, window=window)
            png, _ = service.export(sess, expl)
            heatmap = png.with_suffix(".npy")
            np.save(heatmap, expl.heatmap)
            out = service.record(expl) | {"heatmap_stats": heatmap_summary(expl)}
            return out, FileData(path=str(png)), FileData(path=str(heatmap))

    def compare(file: FileData, model: str, methods: list[str] | None = None,
                seed: int = 0) -> tuple[dict, list[FileData]]:
        """Several methods on the same input and model (default: all that apply), fastest
        first: one record and one figure per method."""
        chosen = methods or service.methods(model)[0]
        chosen = sorted(chosen, key=lambda m: (get_method(m).speed, m))
        records, figures = [], []
        with sessions.open() as sess:
            for method in chosen:
                expl = service.explain(sess, path_of(file), model, method, seed=seed)
                png, _ = service.export(sess, expl)
                records.append(service.record(expl) | {"heatmap_stats": heatmap_summary(expl)})
                figures.append(FileData(path=str(png)))
        return {"model": model, "results": records}, figures

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


def launch(demo: gr.Blocks, *, host: str, port: int, share: bool, auth: Any, concurrency: int,
           prevent_thread_lock: bool = False) -> gr.Blocks:
    pin_mmap_threshold()  # memory freed by requests goes back to the system (xai_platform.memory)
    demo.queue(default_concurrency_limit=concurrency)
    SESSION_ROOT.mkdir(parents=True, exist_ok=True)
    demo.launch(server_name=host, server_port=port, share=share, auth=auth, show_error=False,
                quiet=False, prevent_thread_lock=True, footer_links=["api", "gradio"],
                allowed_paths=[str(SESSION_ROOT)])
    local = f"http://{host}:{port}"
    if share and not getattr(demo, "share_url", None):
        print(f"[xai] The public share link could not be created (no internet or the tunnel is "
              f"blocked). The app runs locally at {local}.", flush=True)
    elif share:
        print(f"[xai] Public link: {demo.share_url}"
              + ("" if auth else "  (no --auth: anyone with the link can use the app)"), flush=True)
    print(f"[xai] Serving on {local}", flush=True)
    if not prevent_thread_lock:
        demo.block_thread()
    return demo
