"""Registry of network builders, known by name without importing any framework.

A config entry names its ``architecture``; the registry maps the name to its framework and the
module that defines it, so the config can be validated before torch or TensorFlow is imported.
Builders register at their definition site with :func:`register_architecture`; the table below
says which module to import for each built-in name. A builder is called as
``builder(spec) -> network`` and reads everything it needs from the :class:`ModelSpec`
(``num_outputs``, ``input``, ``arch_args``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

_TORCH = "xai_platform.models.architectures.torch_nets"
_KERAS = "xai_platform.models.architectures.keras_nets"
_XRV = "xai_platform.models.architectures.xrv_nets"

# name -> (framework, module that registers it)
_BUILTIN: dict[str, tuple[str, str]] = {
    "custom_cnn": ("torch", _TORCH),
    "mobilenet_v2": ("torch", _TORCH),
    "vgg16_slim": ("torch", _TORCH),
    "resnet18": ("torch", _TORCH),
    "alexnet": ("torch", _TORCH),
    "densenet121": ("torch", _TORCH),
    "efficientnet_lite0": ("torch", _TORCH),
    "xrv_densenet121": ("torch", _XRV),
    "xrv_resnet50": ("torch", _XRV),
    "keras_cnn": ("keras", _KERAS),
    "keras_mobilenet_v2": ("keras", _KERAS),
}
_BUILDERS: dict[str, tuple[str, Callable[..., Any]]] = {}


def register_architecture(name: str, *, framework: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``builder(spec) -> network`` under ``name``. A duplicate raises."""

    def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _BUILDERS:
            raise ValueError(f"architecture '{name}' is already registered")
        expected = _BUILTIN.get(name)
        if expected is not None and expected[0] != framework:
            raise ValueError(f"architecture '{name}' is declared as {expected[0]}, not {framework}")
        _BUILDERS[name] = (framework, builder)
        return builder

    return decorate


def known_architectures() -> dict[str, str]:
    """Every architecture name -> its framework, without importing any framework."""
    known = {name: fw for name, (fw, _) in _BUILTIN.items()}
    known.update({name: fw for name, (fw, _) in _BUILDERS.items()})
    return known


def get_builder(name: str) -> Callable[..., Any]:
    """The builder for ``name``, importing its module (and so its framework) on first use."""
    if name not in _BUILDERS and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name][1])
    if name not in _BUILDERS:
        raise KeyError(f"architecture '{name}' is not registered")
    return _BUILDERS[name][1]
