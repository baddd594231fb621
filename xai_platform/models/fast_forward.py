"""The exact fast path for forward passes: export once, check parity, run on ONNX Runtime.

PyTorch eager is not the fastest exact forward pass on a CPU: ONNX Runtime runs the same
float32 graph 2-4x faster here (DenseNet-121 at 224 px, the audio CNN; docs/BENCHMARKS.md).
When a model loads, :func:`attach` exports its network to ONNX (the format's ``export_onnx``,
capability ``onnx_export``), caches the file by the sha256 of the weights as loaded
(:meth:`~xai_platform.models.formats.torch.TorchHandle.weights_fingerprint`), runs the graph
and the framework on example planes of the model's modality, and when the probabilities agree
to :data:`PARITY_TOLERANCE` hands every forward-only batch (``predict``, ``scores``: LIME, SHAP,
the deletion / insertion curves, the window timeline, the listening clips' re-scoring) to
ONNX Runtime. Gradients (Grad-CAM, saliency, IG, the familiarity features) stay with the
framework. Otherwise the model keeps its framework and
:attr:`~xai_platform.models.handle.ModelHandle.forward_path` says why (export failed, parity
failed, not on the CPU, ...); the record, the Models tab and ``check-model`` show it.
With ``precision="bf16"`` (opt-in) a graph that passed is then also tried on OpenVINO in
bfloat16 (:mod:`xai_platform.models.reduced_precision`).

Cache: ``$XAI_ONNX_CACHE``, else ``$XDG_CACHE_HOME/xai-platform/onnx``, else
``~/.cache/xai-platform/onnx`` (never beside the weights). Each graph ``KEY.onnx`` has a
``KEY.json`` beside it holding the graph's own sha256; a graph whose bytes no longer match is
exported again. The folder may be deleted at any time. Nothing from a cached file is executed:
ONNX Runtime reads a graph of operators.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import FORWARD_PRECISIONS
from ..errors import first_line
from ..files import sha256, write_atomic
from .handle import ForwardPath, ModelHandle, NO_EXPORT

#: the largest difference of probabilities (any class, any example plane) the fast path accepts
PARITY_TOLERANCE = 1e-5
CACHE_ENV = "XAI_ONNX_CACHE"
THREADS_ENV = "XAI_ONNX_THREADS"


def default_cache_dir() -> Path:
    """Where exported graphs are kept (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xai-platform" / "onnx"


def default_threads() -> int:
    """ONNX Runtime's intra-op threads: ``$XAI_ONNX_THREADS``, else as many as PyTorch uses
    (its default, ``OMP_NUM_THREADS`` or ``torch.set_num_threads``), so switching engines does
    not change how much of the machine a request takes."""
    try:
        if os.environ.get(THREADS_ENV):
            return max(1, int(os.environ[THREADS_ENV]))
    except ValueError:
        pass
    import torch

    return max(1, torch.get_num_threads())


def parity_planes(handle: ModelHandle) -> np.ndarray:
    """The example inputs of the parity check, (5, H, W) float32: three sample planes of the
    model's modality (different seeds), the modality's masked value of the first (what a
    perturbation puts in) and the half-way blend of the two. Five rows, where the export traced
    two, so the dynamic batch axis is checked too."""
    from ..modalities import get_modality

    modality = get_modality(handle.spec.modality)
    planes = [modality.sample_plane(handle.spec, np.random.default_rng(seed)) for seed in range(3)]
    masked = modality.masked_value(planes[0])
    planes += [masked, 0.5 * (planes[0] + masked)]
    return np.stack(planes).astype(np.float32)


def _fallback(handle: ModelHandle, reason: str, started: float, **extra: Any) -> ForwardPath:
    handle._fast = handle._exact = None
    handle.forward_path = ForwardPath(handle.framework, reason,
                                      seconds=time.perf_counter() - started, **extra)
    return handle.forward_path


def _cached(onnx_file: Path, meta_file: Path) -> tuple[bool, str]:
    """(usable, note): whether the cached graph is whole (its sha256 matches its record)."""
    if not onnx_file.is_file():
        return False, ""
    try:
        meta = json.loads(meta_file.read_text())
        if meta.get("onnx_sha256") == sha256(onnx_file):
            return True, ""
    except (OSError, ValueError, AttributeError):
        pass
    return False, "the cached graph failed its sha256 check and was exported again"


def _export(handle: ModelHandle, onnx_file: Path, meta_file: Path, key: str) -> float:
    """Export to a temporary file beside the cache entry, then move it in (a reader sees the
    old file or the whole new one); the record with the graph's sha256 is written last."""
    import torch  # the export's version goes into the record

    start = time.perf_counter()
    onnx_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{onnx_file.name}.", suffix=".part", dir=onnx_file.parent)
    os.close(fd)
    try:
        handle.export_onnx(Path(tmp))  # type: ignore[attr-defined]
        os.chmod(tmp, 0o644)
        os.replace(tmp, onnx_file)
    finally:
        Path(tmp).unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    write_atomic(meta_file, json.dumps({
        "key": key, "onnx_sha256": sha256(onnx_file), "model": handle.spec.id,
        "architecture": handle.spec.architecture, "torch": torch.__version__,
        "export_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
    return seconds


def _twin(handle: ModelHandle, onnx_file: Path, threads: int) -> ModelHandle:
    """An ONNX Runtime handle on the exported graph with the model's spec and calibration."""
    from .formats import onnx as onnx_format

    session = onnx_format.session(onnx_file, n_threads=threads)
    onnx_format.check_input(session, handle.spec)
    return onnx_format.OnnxHandle(handle.spec, session, calibration=handle.calibration,
                                  default_batch_size=handle.default_batch_size)


def parity(reference: tuple[np.ndarray, np.ndarray], fast: tuple[np.ndarray, np.ndarray]
           ) -> tuple[float, float]:
    """(max |p_framework - p_fast|, max |score_framework - score_fast|) of two engines'
    (probabilities, scores) on the same planes (inf where a shape differs or a value is not
    finite)."""
    (p_ref, s_ref), (p_fast, s_fast) = reference, fast
    if p_ref.shape != p_fast.shape or s_ref.shape != s_fast.shape:
        return float("inf"), float("inf")
    with np.errstate(invalid="ignore"):
        dp = float(np.max(np.abs(p_ref.astype(np.float64) - p_fast)))
        ds = float(np.max(np.abs(s_ref.astype(np.float64) - s_fast)))
    return (dp if np.isfinite(dp) else float("inf")), (ds if np.isfinite(ds) else float("inf"))


def attach(handle: ModelHandle, *, cache_dir: Path | str | None = None,
           threads: int | None = None, precision: str = "float32") -> ForwardPath:
    """Set up the fast path on ``handle`` (see the module docstring) and return its
    :class:`~xai_platform.models.handle.ForwardPath`, also kept as ``handle.forward_path``.
    ``precision``: ``float32`` (exact) or ``bf16`` (then OpenVINO, where its check passes).

    Never raises for a model that cannot take the fast path: the model keeps its framework and
    the reason is recorded. A cached graph that fails its sha256 check, does not load or fails
    parity is exported once more before giving up.
    """
    started = time.perf_counter()
    if precision not in FORWARD_PRECISIONS:
        raise ValueError(f"precision must be one of {FORWARD_PRECISIONS}, not {precision!r}")
    if not handle.capabilities.onnx_export:
        return _fallback(handle, NO_EXPORT, started)
    if handle.device != "cpu":
        return _fallback(handle, f"runs on {handle.device}; the ONNX Runtime path is for the "
                                 "CPU", started)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return _fallback(handle, "onnxruntime is not installed (pip install onnxruntime)", started)
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    n_threads = threads or default_threads()
    try:
        key = handle.weights_fingerprint()  # type: ignore[attr-defined]
        planes = parity_planes(handle)
        reference = handle._outputs_batch(planes)
    except Exception as exc:  # noqa: BLE001 - a foreign network may fail in any way
        return _fallback(handle, f"cannot prepare the export: {first_line(exc)[:200]}", started)
    onnx_file, meta_file = folder / f"{key[:40]}.onnx", folder / f"{key[:40]}.json"
    usable, note = _cached(onnx_file, meta_file)
    exported, last_error, dp, ds = False, "", None, None
    for attempt in range(2):
        if not usable or attempt == 1:
            try:
                _export(handle, onnx_file, meta_file, key)
                exported = True
            except Exception as exc:  # noqa: BLE001 - unsupported operators, tracing errors, disk
                return _fallback(handle, f"ONNX export failed: {first_line(exc)[:240]}", started)
        try:
            twin = _twin(handle, onnx_file, n_threads)
            dp, ds = parity(reference, twin._outputs_batch(planes))
        except Exception as exc:  # noqa: BLE001 - an invalid graph, a wrong output shape
            last_error = f"the exported graph does not run: {first_line(exc)[:240]}"
            if not exported:
                note = "the cached graph did not run and was exported again"
                continue
            return _fallback(handle, last_error, started, onnx_file=str(onnx_file))
        if dp <= PARITY_TOLERANCE:
            handle._fast = handle._exact = twin
            handle.forward_path = ForwardPath(
                "onnxruntime", note, max_abs_diff=dp, max_score_diff=ds,
                parity_inputs=len(planes), onnx_file=str(onnx_file), exported=exported,
                seconds=time.perf_counter() - started, threads=n_threads,
                tolerance=PARITY_TOLERANCE)
            if precision == "bf16":
                from .reduced_precision import attach_bf16

                attach_bf16(handle, planes, reference, started=started)
            return handle.forward_path
        if exported:
            break
        note = "the cached graph failed parity and was exported again"
    return _fallback(handle, f"parity failed: probabilities differ by up to {dp:.1e} (more than "
                             f"{PARITY_TOLERANCE:.0e}) on {len(planes)} example inputs",
                     started, max_abs_diff=dp, max_score_diff=ds, parity_inputs=len(planes),
                     onnx_file=str(onnx_file))
