"""The Models tab's "fetch published weights" row: models whose weights are published (the
TorchXRayVision classifiers; Whisper's encoder under the research read-out) but not on this
machine, fetched with progress and converted or checked safely, the way ``python -m
xai_platform fetch MODEL`` does.

Fetching needs internet access; without it the row says so and where to copy the file by hand.
The address is the one the architecture's release table names, never one a user types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from ..errors import ModelUnavailableError
from ..service import Service

NOTE = ("These models' weights (or a pretrained encoder they read) are published but not on "
        "this machine. Fetching downloads them once (**this needs internet access**), checks "
        "or converts them without running code from the file, and the model is then ready.")


def missing(service: Service) -> list[str]:
    """Ids of the models whose published weights can be fetched."""
    return [row.id for row in service.models() if service.manager.fetchable(row.id)]


def fetch_weights(service: Service, model_id: str | None,
                  progress: Callable[[float, str], None] | None = None) -> str:
    """Fetch one model's weights; the Markdown to show (a failure is a message, not an error:
    without internet it says what to do instead)."""
    if not model_id:
        return "Pick a model first."
    try:
        path = service.manager.fetch(model_id, progress=progress)
    except ModelUnavailableError as exc:
        return f"**Could not fetch `{model_id}`.** {exc}"
    return f"**`{model_id}` is ready** (weights: `{path}`). Pick it in the Model list above."


def build(service: Service, table: Any, render_table: Callable[[Service], str]) -> None:
    """The row, inside the Models tab; ``table`` is refreshed after a fetch."""
    ids = missing(service)
    with gr.Group(visible=bool(ids)):
        gr.Markdown(NOTE)
        with gr.Row():
            pick = gr.Dropdown(choices=ids, value=ids[0] if ids else None,
                               label="Model with published weights", scale=3)
            go = gr.Button("Fetch weights (needs internet)", scale=1)
        message = gr.Markdown()

    def on_fetch(model_id, progress=gr.Progress()):
        progress(0.0, desc=f"fetching {model_id}")
        text = fetch_weights(service, model_id,
                             progress=lambda f, what: progress(f, desc=what))
        left = missing(service)
        return (text, render_table(service),
                gr.update(choices=left, value=left[0] if left else None))

    go.click(on_fetch, [pick], [message, table, pick], api_visibility="private")
