"""Check a model entry before plugging it in: it loads, runs one input, and what applies.

``python -m xai_platform check-model CONFIG.yaml [--input FILE]`` and the Models tab's "plug in a
model" panel call :func:`check_model`, which works on a private :class:`ModelManager` holding
only the entry being checked (nothing is registered for anyone else). The report lists the
output shape and labels, the prediction for the input (or for the modality's sample plane),
the methods that apply and why the others do not, and candidate target layers.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import AppSettings, ModelSpec, PlatformConfig
from .errors import XAIError

#: layer types whose output is usually a convolutional feature map (cheap pre-filter)
_CONV_LIKE = re.compile(r"conv|relu|activation|act$|block|bottleneck|stage|layer|features|"
                        r"sequential|add|concatenate|batchnorm|pool", re.IGNORECASE)

#: modules whose (C, L) output is a 1-D convolutional map over time (not a (T, C) sequence)
_CONV_1D = re.compile(r"conv|block|pool|batchnorm1d|fms|relu", re.IGNORECASE)


@dataclass
class ModelCheck:
    """What :func:`check_model` found; ``ok`` when the model loaded and predicted."""

    model_id: str
    framework: str
    modality: str
    labels: list[str]
    ok: bool = False
    status: str = ""
    #: which engine runs its forward-only batches and why (ForwardPath.to_dict())
    forward: dict[str, Any] | None = None
    forward_text: str = ""
    error: str | None = None
    input: str = ""
    output_shape: list[int] | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    methods: list[str] = field(default_factory=list)
    not_applicable: dict[str, str] = field(default_factory=dict)
    target_layer: str | None = None
    target_layer_error: str | None = None
    candidate_layers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def to_text(self) -> str:
        """The report as plain lines (the CLI prints it; the panel shows it as Markdown)."""
        lines = [f"model '{self.model_id}' ({self.framework}, {self.modality}): "
                 f"{'OK' if self.ok else 'FAILED'}"]
        if self.error:
            lines.append(f"  error: {self.error}")
        lines.append(f"  status: {self.status}")
        if self.forward_text:
            lines.append(f"  forward passes: {self.forward_text}")
        if self.output_shape is not None:
            lines.append(f"  input: {self.input}")
            lines.append(f"  output: probabilities of shape {tuple(self.output_shape)} over labels "
                         f"{', '.join(self.labels)}")
            lines.append("  prediction: " + ", ".join(f"{k} {v:.3f}"
                                                     for k, v in self.probabilities.items()))
        lines.append(f"  methods that apply: {', '.join(self.methods) or 'none'}")
        for method, reason in self.not_applicable.items():
            lines.append(f"  not {method}: {reason}")
        if self.target_layer:
            lines.append(f"  target layer {self.target_layer}: "
                         f"{self.target_layer_error or 'a convolutional feature map (OK)'}")
        if self.candidate_layers:
            lines.append("  candidate target layers (last convolutional feature maps):")
            lines += [f"    {c['name']:<40} {c['type']:<22} {tuple(c['shape'])}"
                      for c in self.candidate_layers]
        elif self.ok:
            lines.append("  candidate target layers: none (this format exposes no inner layers)")
        return "\n".join(lines)


def candidate_layers(handle: Any, *, limit: int = 5) -> list[dict[str, Any]]:
    """The last ``limit`` layers whose output is a (C, h, w) feature map, or the (C, L) map
    over time of a 1-D convolution (waveform models), deepest last."""
    found: list[dict[str, Any]] = []
    try:
        layers = handle.layers()
    except Exception:  # noqa: BLE001 - a format without layers lists none
        return found
    for name, kind in reversed(layers):
        if len(found) >= limit:
            break
        if not _CONV_LIKE.search(kind) and not _CONV_LIKE.search(name.rsplit("/", 1)[-1]):
            continue
        try:
            shape = tuple(int(s) for s in handle.layer_output_shape(name))
        except Exception:  # noqa: BLE001 - a layer that cannot be measured is no candidate
            continue
        if (len(shape) == 3 and min(shape[1:]) > 1) or (len(shape) == 2 and shape[1] > 1
                                                         and _CONV_1D.search(kind)):
            found.append({"name": name, "type": kind, "shape": list(shape)})
    return found[::-1]


def check_model(spec: ModelSpec, *, settings: AppSettings | None = None,
                input_path: str | Path | None = None, device: str = "cpu",
                debug: bool = False) -> ModelCheck:
    """Load ``spec`` in a private manager, run one input and list what applies.

    Problems the user can fix (a :class:`~xai_platform.errors.XAIError`) are reported in the
    result, not raised; anything else too, with its type (the traceback when ``debug``).
    """
    from .bench import sample_input
    from .explainers import compatibility
    from .models import ModelManager
    from .models.formats import get_format
    from .service import Service, Session

    settings = settings or AppSettings()
    report = ModelCheck(spec.id, spec.framework, spec.modality, list(spec.labels),
                        target_layer=spec.target_layer)
    manager = None
    try:
        manager = ModelManager(PlatformConfig(models=(spec,), app=settings), device=device,
                               cache_size=1)
        comp = compatibility(spec)
        report.methods = [c.method.id for c in comp if c.ok]
        report.not_applicable = {c.method.id: c.reason or "" for c in comp if not c.ok}
        status = manager.status(spec.id)
        report.status = str(status)
        if not status.usable:
            report.error = status.reason
            return report
        handle = manager.get(spec.id)
        report.forward = handle.forward_path.to_dict()
        report.forward_text = handle.forward_path.describe()
        if input_path is not None:
            session = Session()
            try:
                analysis = Service(manager, settings).analyse(session, input_path, spec.id)
            finally:
                session.close()
            probs = np.asarray(analysis.prediction.probabilities, dtype=np.float32)[None]
            report.input = f"{Path(input_path).name} ({len(analysis.window_probabilities)} "\
                           f"window(s) of {handle.input_shape[0]} x {handle.input_shape[1]})"
        else:
            x = sample_input(handle)
            probs = handle.predict(x[None])
            report.input = (f"the {spec.modality} sample plane, {x.shape[0]} x {x.shape[1]} "
                            "(pass an input file to check preprocessing too)")
        if not np.isfinite(probs).all():
            raise XAIError("the model returned non-finite outputs (NaN or inf); check "
                           "`input` (size, normalisation) in the entry.")
        report.output_shape = list(probs.shape)
        report.probabilities = {label: float(p) for label, p in zip(spec.labels, probs[0])}
        report.ok = True
        if spec.target_layer:
            try:
                get_format(spec.framework).verify(spec)
            except XAIError as exc:
                report.target_layer_error = str(exc)
                report.ok = False
        report.candidate_layers = candidate_layers(handle)
    except XAIError as exc:
        report.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a foreign model can fail in any way: report it
        report.error = f"{type(exc).__name__}: {exc}"
        if debug:
            report.error += "\n" + traceback.format_exc()
    if report.error and manager is not None:
        # the state after the attempt ("unavailable" once a load failed; the error says why),
        # not the one read before it, which only saw the weights file there
        report.status = manager.status(spec.id).state
    return report
