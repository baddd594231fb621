"""The opt-in reduced-precision forward path: the fast path's graph on OpenVINO in bfloat16.

With ``app.forward_precision: bf16`` (``--bf16``), once a model's graph has passed the exact
path's check (:mod:`xai_platform.models.fast_forward`), OpenVINO compiles the same cached file
(a PyTorch model's ``.onnx``, a Keras model's OpenVINO IR ``.xml``) for the CPU with the
``bf16`` inference-precision hint and as many threads as the exact engine. On a CPU with bf16
instructions (AVX512_BF16, AMX) this runs DenseNet-121 about twice as fast as ONNX Runtime in
float32 (docs/BENCHMARKS.md). bfloat16 keeps 8 bits of mantissa, so probabilities move by
about 1e-3: the check is looser than the exact path's 1e-5. On the same example planes the
probabilities must stay within :data:`TOLERANCE` of the framework's and no example's decision
may change (the positive class at the model's threshold, each label at 0.5 for a multi-label
model, else the argmax). Otherwise, and when openvino is not installed or the CPU has no bf16,
the exact path stays and :attr:`~xai_platform.models.handle.ModelHandle.forward_path` says why.
Gradients stay with the framework, as on the exact path.

Nothing from the graph is executed: OpenVINO reads a graph of operators, and no extension
library is loaded.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ModelSpec
from ..errors import first_line
from .fast_forward import parity
from .formats.onnx import GraphHandle
from .handle import Calibration, FloatArray, ForwardPath, ModelHandle

#: the largest difference of probabilities (any class, any example plane) bf16 may make
TOLERANCE = 1e-2
PRECISION = "bf16"
#: OpenVINO's name of the exact path's inference precision (a Keras model's converted graph)
EXACT = "f32"


@lru_cache(maxsize=1)
def _core() -> Any:
    import openvino as ov

    return ov.Core()


def unavailable() -> str:
    """Why bf16 cannot run on this machine ("" when it can)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "openvino is not installed (pip install openvino)"
    try:
        capabilities = [str(c) for c in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception as exc:  # noqa: BLE001 - a CPU plugin that does not load
        return f"OpenVINO cannot use the CPU: {first_line(exc)[:200]}"
    if "BF16" not in capabilities:
        return (f"this CPU has no bf16 instructions (OpenVINO's CPU capabilities: "
                f"{', '.join(capabilities)})")
    return ""


def compile_cpu(graph_file: Path | str, *, threads: int, precision: str = PRECISION,
                extra_outputs: list[str] | None = None) -> Any:
    """The graph (an ``.onnx`` file or OpenVINO IR ``.xml``) compiled by OpenVINO for the CPU
    with the inference-precision hint ``precision`` (``bf16``, or ``f32`` for the exact path)
    and ``threads`` threads (one stream, so a batch gets them all, as on ONNX Runtime); raises
    when the CPU plugin reports another precision (e.g. bf16 on a CPU without it).
    ``extra_outputs``: tensor names the compiled graph also returns, after its own outputs."""
    core = _core()
    model = core.read_model(str(graph_file))
    if extra_outputs:
        model.add_outputs(list(extra_outputs))
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": int(threads),
        "PERFORMANCE_HINT": "LATENCY"})
    got = compiled.get_property("INFERENCE_PRECISION_HINT")
    name = got.to_string() if hasattr(got, "to_string") else str(got)
    if name != precision:
        raise RuntimeError(f"its CPU plugin compiled it for {name}, not {precision}")
    return compiled


def compile_bf16(graph_file: Path | str, *, threads: int) -> Any:
    """:func:`compile_cpu` in bfloat16."""
    return compile_cpu(graph_file, threads=threads, precision=PRECISION)


class OpenVinoHandle(GraphHandle):
    """A graph compiled by OpenVINO (:func:`compile_cpu`); one inference request, used under
    the handle's lock. ``channels_last``: the graph takes (n, H, W, C) (a converted Keras
    network)."""

    framework = engine = "openvino"

    def __init__(self, spec: ModelSpec, compiled: Any, *, default_batch_size: int = 32,
                 calibration: Calibration | None = None, channels_last: bool = False) -> None:
        super().__init__(spec, default_batch_size=default_batch_size, calibration=calibration,
                         channels_last=channels_last)
        self.compiled = compiled
        self._request = compiled.create_infer_request()

    def _run(self, net_input: FloatArray) -> np.ndarray:
        return self._request.infer({0: net_input})[0]

    @property
    def native(self) -> Any:
        return self.compiled


def decisions(handle: ModelHandle, probs: np.ndarray) -> np.ndarray:
    """Each row's decision, (N, ...): the positive class at or above the model's threshold
    (0.5 without one) for a binary model, each label at or above 0.5 for a multi-label one,
    else the argmax. probs: (N, K)."""
    spec = handle.spec
    if spec.output == "multilabel":
        return probs >= 0.5
    positive = spec.positive_index
    if positive is not None:
        threshold = handle.calibration.threshold
        return probs[:, positive] >= (0.5 if threshold is None else threshold)
    return np.argmax(probs, axis=1)


def decision_changes(handle: ModelHandle, reference: np.ndarray, probs: np.ndarray) -> int:
    """How many rows' decisions (:func:`decisions`) differ between two engines' probabilities
    (N, K) of the same inputs."""
    changed = decisions(handle, reference) != decisions(handle, probs)
    return int(np.any(changed.reshape(len(changed), -1), axis=1).sum())


def attach_bf16(handle: ModelHandle, planes: np.ndarray,
                reference: tuple[np.ndarray, np.ndarray], *, started: float) -> ForwardPath:
    """Move ``handle``'s forward-only batches from its exact twin (ONNX Runtime, or OpenVINO in
    f32) to OpenVINO in bf16 when the check in the module docstring passes on ``planes``
    (N, H, W), whose framework (probabilities, scores) are ``reference``; else keep the exact
    path and add the reason to it. Returns the new ``handle.forward_path``; never raises."""
    exact = handle.forward_path

    def keep_exact(why: str) -> ForwardPath:
        reason = f"bf16 not used: {why}; the exact path runs"
        handle.forward_path = exact.with_reason(reason, seconds=time.perf_counter() - started)
        return handle.forward_path

    why = unavailable()
    if why:
        return keep_exact(why)
    try:
        graph_file = exact.onnx_file or exact.ir_file
        twin = OpenVinoHandle(handle.spec, compile_bf16(graph_file, threads=exact.threads),
                              default_batch_size=handle.default_batch_size,
                              calibration=handle.calibration,
                              channels_last=bool(getattr(handle._exact, "channels_last", False)))
        fast = twin._outputs_batch(planes)
    except Exception as exc:  # noqa: BLE001 - an operator OpenVINO lacks, a compile error
        return keep_exact(f"OpenVINO could not compile or run the graph in {PRECISION}: "
                          f"{first_line(exc)[:240]}")
    dp, ds = parity(reference, fast)
    changed = decision_changes(handle, reference[0], fast[0])
    if dp > TOLERANCE or changed:
        return keep_exact(f"its parity failed: probabilities differ by up to {dp:.1e} (bound "
                          f"{TOLERANCE:.0e}) and {changed} of {len(planes)} example decisions "
                          "change")
    handle._fast = twin
    handle.forward_path = replace(exact, engine="openvino", precision=PRECISION, max_abs_diff=dp,
                                  max_score_diff=ds, tolerance=TOLERANCE, decision_changes=0,
                                  seconds=time.perf_counter() - started)
    return handle.forward_path
