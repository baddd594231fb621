"""Explainers: one method family per module, a registry with declared compatibility.

:func:`run` is the one entry point: it checks the method applies to the model, validates the
parameters against their declared ranges, seeds, times and runs the method.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ExplainerError
from ..models.handle import ModelHandle
from .registry import (Attribution, Compatibility, ExplainContext, MethodInfo, Param,
                       all_methods, compatibility, compatible_methods, get_method,
                       register_method)

from . import cam, gradients, kernel_shap, lime_explainer  # noqa: E402,F401  (each registers)

__all__ = ["Attribution", "Compatibility", "ExplainContext", "MethodInfo", "Param", "RunResult",
           "all_methods", "compatibility", "compatible_methods", "get_method",
           "register_method", "run"]


class RunResult:
    """An attribution with the parameters it was computed with and what it cost.

    ``seed`` is the seed used, or None for a deterministic method (which ignores it)."""

    def __init__(self, method: MethodInfo, attribution: Attribution, params: dict[str, Any],
                 seed: int | None, seconds: float) -> None:
        self.method = method
        self.attribution = attribution
        self.params = params
        self.seed = seed
        self.seconds = seconds


def run(method_id: str, model: ModelHandle, x: np.ndarray, *, target: int,
        params: dict[str, Any] | None = None, seed: int = 0, batch_size: int | None = None,
        progress: Callable[[float, str], None] | None = None,
        cancel: threading.Event | None = None) -> RunResult:
    """Explain ``model``'s score for ``target`` on one feature plane ``x: (H, W)``."""
    method = get_method(method_id)
    reason = method.reason_incompatible(model.spec)
    if reason:
        raise ExplainerError(reason)
    resolved = method.resolve_params(params, modality=model.spec.modality)
    x = model.check_batch(x)[0]
    if not 0 <= int(target) < len(model.spec.labels):
        raise ExplainerError(f"target {target} is not a class of model '{model.spec.id}' "
                             f"(0..{len(model.spec.labels) - 1}).")
    ctx = ExplainContext(spec=model.spec, seed=seed, progress=progress, cancel=cancel,
                         batch_size=batch_size or model.default_batch_size)
    start = time.perf_counter()
    attribution = method.fn(model, x, target=int(target), ctx=ctx, **resolved)
    seconds = time.perf_counter() - start
    heatmap = np.asarray(attribution.heatmap, dtype=np.float32)
    if heatmap.shape != x.shape:
        raise ExplainerError(f"{method.label} returned a {heatmap.shape} map for a {x.shape} input.")
    if not np.all(np.isfinite(heatmap)):
        raise ExplainerError(f"{method.label} produced non-finite values for this input; "
                             "try other parameters or another method.")
    signed = method.signed if attribution.signed is None else attribution.signed
    attribution = Attribution(heatmap, attribution.n_evaluations, attribution.extras, signed)
    return RunResult(method, attribution, resolved, seed if method.uses_seed(resolved) else None,
                     seconds)
