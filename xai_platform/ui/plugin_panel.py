"""The Models tab's "plug in a model" panel: a YAML entry and a weights upload, checked the way
``python -m xai_platform check-model`` checks a config file.

The upload is copied into a private temporary folder that is removed after the check; the entry
is parsed with :func:`~xai_platform.config.parse_model` and checked by
:func:`~xai_platform.model_check.check_model` on a private manager, so nothing is registered
for other users. Weights load safely, as everywhere (``weights_only``, Keras safe mode,
onnxruntime); an entry that would run code (``package.module:callable``, a TorchScript program)
is refused here, since the person typing it is not the one running the app.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from ..config import parse_model
from ..errors import ConfigError
from ..model_check import check_model
from ..service import Service
from .common import user_errors

SOURCE = "plug-in panel"

EXAMPLE = """\
id: my-xray-model
name: My chest X-ray model
framework: keras            # torch | keras | onnx
modality: xray
architecture: keras_file    # a registered builder, keras_file, onnx or onnx2torch
weights: model.keras        # replaced by the uploaded file
labels: [normal, pneumonia]
output: logits
target_layer: xception/block14_sepconv2_act
input: {size: 150, channels: 3, normalize: minus1_1}
"""


def _entry(text: str) -> dict[str, Any]:
    """The one model entry of the YAML text (a bare entry, or a file with one ``models:``)."""
    try:
        data = yaml.safe_load(text or "")
    except yaml.YAMLError as exc:
        raise ConfigError(f"is not valid YAML: {getattr(exc, 'problem', exc)}.", source=SOURCE,
                          fix="fix the YAML syntax (see the example).") from None
    if isinstance(data, Mapping) and "models" in data:
        data = data["models"]
    if isinstance(data, list):
        if len(data) != 1:
            raise ConfigError(f"holds {len(data)} model entries.", source=SOURCE,
                              fix="paste one entry at a time.")
        data = data[0]
    if not isinstance(data, Mapping):
        raise ConfigError("is not a model entry.", source=SOURCE,
                          fix="paste one entry (id, name, framework, ...) as in the example.")
    return dict(data)


def check_plugin(yaml_text: str, weights_path: str | None, input_path: str | None, *,
                 service: Service) -> str:
    """The check report (Markdown) of a pasted entry with its uploaded weights."""
    from ..models.formats import get_format

    entry = _entry(yaml_text)
    folder = Path(tempfile.mkdtemp(prefix="xai-plugin-"))  # mode 0700: this request only
    try:
        if weights_path:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(weights_path).name)[-120:] or "weights"
            copy = folder / name
            shutil.copyfile(weights_path, copy)
            entry["weights"] = str(copy)
        elif entry.get("weights") is not None:
            raise ConfigError("names a file on the server.", source=SOURCE, key="weights",
                              fix="upload the weights file (or write weights: null for an "
                                  "untrained architecture).")
        spec = parse_model(entry, source=SOURCE, weights_dir=folder)
        fmt = get_format(spec.framework, source=SOURCE)
        fmt.check_spec(spec)
        fmt.check_untrusted(spec)
        report = check_model(spec, settings=service.settings, input_path=input_path or None,
                             device=service.manager.device)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    verdict = "Plugs in" if report.ok else "Does not plug in yet"
    return (f"**{verdict}.** Add the entry to a config file (`--config`) to use it.\n\n"
            f"```\n{report.to_text()}\n```")


def build(service: Service) -> None:
    """The panel's components, inside the Models tab."""
    with gr.Accordion("Plug in a model (check an entry and its weights)", open=False):
        gr.Markdown("Paste one config entry and upload its weights: the model is loaded on its "
                    "own (nobody else sees it), run on one input and checked. See SETUP.md, "
                    "'Bring your own model'.")
        with gr.Row():
            entry = gr.Code(EXAMPLE, language="yaml", label="Config entry (YAML)")
            with gr.Column():
                weights = gr.File(type="filepath", label="Weights (.pt, .keras, .weights.h5, "
                                                         ".onnx)")
                sample = gr.File(type="filepath", label="Input to run (optional)")
                run = gr.Button("Check the model")
        report = gr.Markdown()

    @user_errors
    def on_check(text, weights_path, input_path):
        return check_plugin(text, weights_path, input_path, service=service)

    run.click(on_check, [entry, weights, sample], report, api_visibility="private")
