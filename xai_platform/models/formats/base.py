"""What a model format is: the declared interface, its capabilities, and the registry.

A format (PyTorch, Keras, ...) is one file under ``models/formats/`` holding a
:class:`ModelFormat` subclass, registered where it is defined, and the
:class:`~xai_platform.models.handle.ModelHandle` it loads. Importing a format file imports no
framework: the framework is imported when the first model of that format loads, so the package
and the app start fast and a user with one framework installed still runs that one's models.

Explainers declare the capabilities they need (``needs=("layer_gradients",)``); the registry
explains an incompatibility from the format's :class:`Capabilities` ("this model's format gives
no gradients of inner layers"), never from a format's name.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar

from ...registry import Registry

if TYPE_CHECKING:
    from ...config import ModelSpec
    from ..handle import Calibration, ModelHandle


@dataclass(frozen=True)
class Capabilities:
    """What a loaded model of a format can do."""

    predict: bool = True  #: probabilities of numpy batches (every format)
    device_batches: bool = False  #: builds perturbed batches on its own device (GPU)
    layer_gradients: bool = False  #: activations and gradients of a named inner layer
    input_gradients: bool = False  #: gradients of a score with respect to the input
    randomize: bool = False  #: a copy with its top layers re-initialised (sanity check)
    reference_cam: bool = False  #: Grad-CAM from pytorch-grad-cam on the same model (bench)
    #: its forward pass exports to ONNX (the exact fast path, :mod:`..fast_forward`)
    onnx_export: bool = False
    #: its forward pass converts to an OpenVINO model (the exact fast path for Keras)
    openvino_convert: bool = False

    @property
    def forward_graph(self) -> bool:
        """Its forward pass becomes a graph the exact fast path can run (ONNX or OpenVINO)."""
        return self.onnx_export or self.openvino_convert

    def missing(self, needs: tuple[str, ...]) -> list[str]:
        """The capabilities in ``needs`` this format lacks."""
        known = {f.name for f in fields(self)}
        unknown = [n for n in needs if n not in known]
        if unknown:
            raise ValueError(f"unknown capability {unknown[0]!r}; known: {sorted(known)}")
        return [n for n in needs if not getattr(self, n)]


#: how a missing capability reads in "Grad-CAM needs ...; this model's format gives none"
CAPABILITY_TEXT = {
    "predict": "predictions",
    "device_batches": "batches built on its device",
    "layer_gradients": "gradients of an inner layer",
    "input_gradients": "gradients with respect to its input",
    "randomize": "re-initialisation of its layers",
    "reference_cam": "a pytorch-grad-cam reference",
    "onnx_export": "an ONNX export of its forward pass",
    "openvino_convert": "an OpenVINO conversion of its forward pass",
}


class ModelFormat(ABC):
    """One way of storing and running a model. Subclasses set the class attributes."""

    name: ClassVar[str]  #: the config's ``framework:`` value
    label: ClassVar[str]
    modules: ClassVar[tuple[str, ...]]  #: Python modules the format needs installed
    install_hint: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def capabilities_for(self, spec: ModelSpec) -> Capabilities:
        """The capabilities of this model (default: the format's)."""
        return self.capabilities

    @abstractmethod
    def check_spec(self, spec: ModelSpec) -> None:
        """Check the entry's model side (architecture, weights kind) without importing any
        framework; raise :class:`ConfigError` naming the file, the key and the fix."""

    @abstractmethod
    def load(self, spec: ModelSpec, *, device: str, default_batch_size: int = 32,
             calibration: Calibration | None = None) -> ModelHandle:
        """The loaded model (weights loaded safely: no code from a weights file runs);
        problems raise :class:`~xai_platform.errors.ModelUnavailableError`."""

    def weights_found(self, spec: ModelSpec) -> bool:
        """Whether the entry's weights are there (default: ``weights`` is a file)."""
        return spec.weights is not None and spec.weights.is_file()

    def check_untrusted(self, spec: ModelSpec) -> None:
        """Raise :class:`ConfigError` if loading this entry from an untrusted person (the
        app's "plug in a model" panel) could run code named by the entry or stored in the file.
        Default: nothing to refuse (the weights load safely)."""

    def verify(self, spec: ModelSpec) -> None:
        """Check the target layer exists and is convolutional (may build the network)."""

    def layers(self, spec: ModelSpec) -> list[tuple[str, str]]:
        """(name, type) of every addressable layer, for ``target_layer`` (may load)."""
        return []


_FORMATS: Registry[ModelFormat] = Registry("model format", key="framework")


def register_format(cls: type[ModelFormat]) -> type[ModelFormat]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``. A duplicate
    raises."""
    _FORMATS.register(cls.name, cls())
    return cls


unregister_format = _FORMATS.unregister
all_formats = _FORMATS.all


def get_format(name: str, *, source: str | None = None) -> ModelFormat:
    """The registered format ``name``; an unknown one raises :class:`ConfigError`."""
    return _FORMATS.get(name, source=source)
