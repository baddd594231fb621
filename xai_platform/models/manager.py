"""ModelManager: lazy loading, a bounded LRU cache, device choice, one load per model.

Frameworks are imported by the backend module of the first model that needs them, so
``import xai_platform`` stays framework-free and a user with only one framework installed can
use that framework's models (the others are listed as unavailable, with the reason).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import PlatformConfig, ModelSpec
from ..errors import ModelUnavailableError
from .cards import ModelCard, calibration_from_card, read_card
from .handle import ModelHandle

_BACKENDS = {"torch": "xai_platform.models.torch_backend",
             "keras": "xai_platform.models.keras_backend"}
_FRAMEWORK_MODULES = {"torch": ("torch",), "keras": ("tensorflow", "keras")}
_INSTALL_HINT = {"torch": "pip install torch torchvision (see SETUP.md for the build to pick)",
                 "keras": "pip install tensorflow-cpu (or tensorflow[and-cuda] on a GPU)"}


@dataclass(frozen=True)
class ModelStatus:
    """``ready`` (trained weights), ``untrained`` (no trained weights: outputs are not a verdict)
    or ``unavailable`` (cannot load; ``reason`` says why and what to do)."""

    state: Literal["ready", "untrained", "unavailable"]
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.state != "unavailable"

    def __str__(self) -> str:
        return f"{self.state}: {self.reason}" if self.reason else self.state


def framework_installed(framework: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in _FRAMEWORK_MODULES[framework])


def backend(framework: str):
    """The backend module of a framework (imports the framework)."""
    return importlib.import_module(_BACKENDS[framework])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelManager:
    """Loads models on first use and keeps the ``cache_size`` most recently used."""

    def __init__(self, config: PlatformConfig, *, device: str | None = None,
                 cache_size: int | None = None, batch_size: int | None = None) -> None:
        self.config = config
        self.device = device or config.app.device
        self.cache_size = cache_size or config.app.model_cache_size
        self.batch_size = batch_size or config.app.batch_size
        self._cache: OrderedDict[str, ModelHandle] = OrderedDict()
        self._failures: dict[str, str] = {}
        self._hashes: dict[str, str] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}

    # --- catalogue ----------------------------------------------------------------------------
    @property
    def specs(self) -> tuple[ModelSpec, ...]:
        return self.config.models

    def spec(self, model_id: str) -> ModelSpec:
        return self.config.model(model_id)

    def status(self, model_id: str) -> ModelStatus:
        """The model's state without loading it (a failed load is remembered)."""
        spec = self.spec(model_id)
        if not framework_installed(spec.framework):
            return ModelStatus("unavailable", f"{spec.framework} is not installed; "
                                              f"{_INSTALL_HINT[spec.framework]}")
        if spec.weights is not None and not spec.weights.is_file():
            how = (f"needs training: run `{spec.train_command}`" if spec.train_command
                   else "put the trained weights there or fix `weights` in the config entry")
            return ModelStatus("unavailable", f"weights file {spec.weights} not found; {how}")
        if model_id in self._failures:
            return ModelStatus("unavailable", self._failures[model_id])
        if spec.weights is None:
            return ModelStatus("untrained", "no trained weights: outputs are not a verdict")
        return ModelStatus("ready")

    def verify(self) -> None:
        """Check every model's target layer exists and is convolutional (builds architectures,
        so imports the frameworks in use). Raises :class:`ConfigError` on the first problem."""
        for spec in self.specs:
            if spec.target_layer and framework_installed(spec.framework):
                backend(spec.framework).verify(spec)

    # --- loading ------------------------------------------------------------------------------
    def get(self, model_id: str) -> ModelHandle:
        """The loaded model; loads it once even when several threads ask at the same moment."""
        with self._lock:
            handle = self._cache.get(model_id)
            if handle is not None:
                self._cache.move_to_end(model_id)
                return handle
            load_lock = self._load_locks.setdefault(model_id, threading.Lock())
        with load_lock:
            with self._lock:  # another thread may have finished loading while we waited
                if model_id in self._cache:
                    self._cache.move_to_end(model_id)
                    return self._cache[model_id]
            status = self.status(model_id)
            if not status.usable:
                raise ModelUnavailableError(f"model '{model_id}' is unavailable: {status.reason}")
            spec = self.spec(model_id)
            try:
                handle = backend(spec.framework).load(
                    spec, device=self.device, default_batch_size=self.batch_size,
                    calibration=calibration_from_card(read_card(spec.weights)))
            except ModelUnavailableError as exc:
                self._failures[model_id] = str(exc)
                raise ModelUnavailableError(f"model '{model_id}' is unavailable: {exc}") from None
            with self._lock:
                self._cache[model_id] = handle
                self._cache.move_to_end(model_id)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return handle

    def unload(self, model_id: str | None = None) -> None:
        """Drop one model (or all) from the cache; the next request loads it again."""
        with self._lock:
            if model_id is None:
                self._cache.clear()
            else:
                self._cache.pop(model_id, None)

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._cache)

    def card(self, model_id: str) -> ModelCard | None:
        """The model card training wrote beside the weights (None if there is none)."""
        return read_card(self.spec(model_id).weights)

    def weights_hash(self, model_id: str) -> str | None:
        """sha256 of the weights file (None for a model without weights)."""
        spec = self.spec(model_id)
        if spec.weights is None or not spec.weights.is_file():
            return None
        if model_id not in self._hashes:
            self._hashes[model_id] = sha256(spec.weights)
        return self._hashes[model_id]
