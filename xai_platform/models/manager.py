"""ModelManager: lazy loading, a bounded LRU cache, device choice, one load per model.

Each entry's ``framework`` names a registered model format (:mod:`.formats`); frameworks are
imported by the format of the first model that needs them, so ``import xai_platform`` stays
framework-free and a user with only one framework installed can use that framework's models
(the others are listed as unavailable, with the reason).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import ModelSpec, PlatformConfig
from ..errors import ModelUnavailableError, XAIError
from ..familiarity import read as read_familiarity
from ..files import folder_sha256, sha256
from .cards import ModelCard, read_card, read_serving
from .architectures import fetch_needed, get_fetcher
from .formats import get_format
from .handle import ForwardPath, ModelHandle


#: the forward path's reason when the switch is off
FAST_FORWARD_OFF = "fast path off (app.fast_forward: false or --no-fast-forward)"


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


def check_models(config: PlatformConfig) -> None:
    """Check the model side of every entry: its format is registered and accepts the entry
    (architecture, weights kind). Imports no framework; raises :class:`ConfigError`."""
    for spec in config.models:
        get_format(spec.framework, source=f"{spec.source} (model '{spec.id}')").check_spec(spec)


class ModelManager:
    """Loads models on first use and keeps the ``cache_size`` most recently used."""

    def __init__(self, config: PlatformConfig, *, device: str | None = None,
                 cache_size: int | None = None, batch_size: int | None = None,
                 fast_forward: bool | None = None, onnx_cache: Path | str | None = None,
                 forward_precision: str | None = None) -> None:
        """``fast_forward``: run forward-only batches on ONNX Runtime (PyTorch) or OpenVINO in
        f32 (Keras) where the graph passes its parity check (default ``app.fast_forward``);
        ``onnx_cache``: where the
        graphs are kept (default: :func:`~xai_platform.models.fast_forward.default_cache_dir`);
        ``forward_precision``: ``bf16`` runs them on OpenVINO in bfloat16 where that passes its
        looser check (default ``app.forward_precision``;
        :mod:`~xai_platform.models.reduced_precision`).
        """
        check_models(config)
        self.config = config
        self.device = device or config.app.device
        self.cache_size = cache_size or config.app.model_cache_size
        self.batch_size = batch_size or config.app.batch_size
        self.fast_forward = config.app.fast_forward if fast_forward is None else fast_forward
        self.onnx_cache = onnx_cache
        self.forward_precision = forward_precision or config.app.forward_precision
        self._cache: OrderedDict[str, ModelHandle] = OrderedDict()
        self._failures: dict[str, str] = {}
        self._hashes: dict[str, str] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._checks: dict[str, str | None] = {}  # model id -> None (passed) or the error
        self._pending: set[str] = set()  # models whose check runs in the background

    # --- catalogue ----------------------------------------------------------------------------
    @property
    def specs(self) -> tuple[ModelSpec, ...]:
        return self.config.models

    def spec(self, model_id: str) -> ModelSpec:
        return self.config.model(model_id)

    def status(self, model_id: str) -> ModelStatus:
        """The model's state without loading it (a failed load is remembered)."""
        spec = self.spec(model_id)
        fmt = get_format(spec.framework)
        if not fmt.installed():
            return ModelStatus("unavailable", f"{fmt.label} is not installed; {fmt.install_hint}")
        if spec.weights is not None and not fmt.weights_found(spec):
            # A command that downloads published weights ("... fetch NAME") is not training.
            download = spec.train_command and " fetch " in f" {spec.train_command} "
            how = (f"fetch weights (needs internet): the Models tab's Fetch button, or "
                   f"`python -m xai_platform fetch {spec.id}`, or `{spec.train_command}`"
                   if download and self.fetchable(model_id) else
                   f"fetch weights: run `{spec.train_command}`" if download else
                   f"needs training: run `{spec.train_command}`" if spec.train_command
                   else "put the trained weights there or fix `weights` in the config entry")
            return ModelStatus("unavailable", f"weights file {spec.weights} not found; {how}")
        if spec.weights is not None and fetch_needed(spec, weights_found=True):
            # e.g. a pretrained encoder its builder reads (a file check, nothing loads)
            return ModelStatus("unavailable", "a pretrained file it reads is not on this machine; "
                               "fetch it once (needs internet): the Models tab's Fetch weights "
                               f"button, or `python -m xai_platform fetch {spec.id}`")
        if model_id in self._failures:
            return ModelStatus("unavailable", self._failures[model_id])
        if self._checks.get(model_id):
            return ModelStatus("unavailable", self._checks[model_id] or "")
        if spec.weights is None:
            return ModelStatus("untrained", "no trained weights: outputs are not a verdict")
        return ModelStatus("ready")

    def fetchable(self, model_id: str) -> bool:
        """Whether the entry's published weights can be fetched from the app or the CLI: its
        architecture declares a fetcher, and the weights file is missing or the architecture
        says a file it reads is (e.g. Whisper's encoder under a committed read-out)."""
        spec = self.spec(model_id)
        return spec.weights is not None and fetch_needed(
            spec, weights_found=get_format(spec.framework).weights_found(spec))

    def fetch(self, model_id: str, *, progress: Callable[[float, str], None] | None = None
              ) -> Path:
        """Download and safely convert the entry's published weights (see the architecture's
        fetcher); the model is then ready. Raises :class:`ModelUnavailableError` with what to
        do (e.g. without internet: where to copy the file by hand)."""
        spec = self.spec(model_id)
        fetcher = get_fetcher(spec.architecture)
        if fetcher is None:
            raise ModelUnavailableError(f"model '{model_id}' has no published weights to fetch; "
                                        f"{self.status(model_id).reason}")
        path = fetcher(spec, progress=progress)
        with self._lock:
            self._failures.pop(model_id, None)
            self._cache.pop(model_id, None)
            self._checks.pop(model_id, None)  # a check that failed for want of the file
        return path

    def verify(self) -> None:
        """Check every model's target layer exists and is convolutional (builds architectures,
        so imports the frameworks in use). Raises :class:`ConfigError` on the first problem; a
        model whose builder needs a file that is not here (e.g. a pretrained encoder to fetch)
        is listed as unavailable with what to do, and the others are checked."""
        for spec in self.specs:
            fmt = get_format(spec.framework)
            if spec.target_layer and fmt.installed():
                try:
                    fmt.verify(spec)
                except ModelUnavailableError as exc:
                    with self._lock:
                        self._checks[spec.id] = str(exc)

    def verify_in_background(self, *, start: bool = True) -> threading.Thread:
        """Run the target-layer checks in a thread, one model at a time; a model that fails is
        listed as unavailable with the error (file, key and fix), the others as they were.
        :meth:`checking` says which are still pending (from this call on, also before a thread
        made with ``start=False`` is started)."""
        todo = [s for s in self.specs if s.target_layer and get_format(s.framework).installed()]
        with self._lock:
            self._pending = {s.id for s in todo}

        def run() -> None:
            for spec in todo:
                try:
                    get_format(spec.framework).verify(spec)
                    error = None
                except Exception as exc:  # noqa: BLE001 - reported in the model's status
                    error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, XAIError) \
                        else str(exc)
                with self._lock:
                    self._checks[spec.id] = error
                    self._pending.discard(spec.id)

        thread = threading.Thread(target=run, name="xai-verify", daemon=True)
        if start:
            thread.start()
        return thread

    def checking(self, model_id: str | None = None) -> bool:
        """Whether the background check of ``model_id`` (or of any model) is still running."""
        with self._lock:
            return bool(self._pending) if model_id is None else model_id in self._pending

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
                calibration, familiarity_info = read_serving(spec.weights)
                handle = get_format(spec.framework).load(
                    spec, device=self.device,
                    default_batch_size=spec.batch_size or self.batch_size,
                    calibration=calibration)
                handle.familiarity = read_familiarity(spec.weights, familiarity_info)
                handle.gradient_batch_size = self.config.app.gradient_batch_size
                if self.config.app.channels_last:
                    handle.use_channels_last()
                if not self.fast_forward:
                    reduced = self.forward_precision != "float32"
                    handle.forward_path = ForwardPath(handle.framework, FAST_FORWARD_OFF + (
                        f"; {self.forward_precision} runs on its graph, so it is off too"
                        if reduced else ""))
                elif handle.capabilities.forward_graph:
                    handle.use_fast_forward(cache_dir=self.onnx_cache,
                                            precision=self.forward_precision)
            except ModelUnavailableError as exc:
                self._failures[model_id] = str(exc)
                raise ModelUnavailableError(f"model '{model_id}' is unavailable: {exc}") from None
            with self._lock:
                self._cache[model_id] = handle
                self._cache.move_to_end(model_id)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return handle

    def forward_path(self, model_id: str) -> ForwardPath | None:
        """Which engine runs the model's forward-only batches (None while it is not loaded)."""
        with self._lock:
            handle = self._cache.get(model_id)
        return None if handle is None else handle.forward_path

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
        if spec.weights is None or not get_format(spec.framework).weights_found(spec):
            return None
        if model_id not in self._hashes:
            self._hashes[model_id] = (sha256(spec.weights) if spec.weights.is_file()
                                      else folder_sha256(spec.weights))
        return self._hashes[model_id]
