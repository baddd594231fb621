"""The exact fast path for forward passes: export once, check parity, run on a faster engine.

PyTorch eager is not the fastest exact forward pass on a CPU: ONNX Runtime runs the same
float32 graph 2-4x faster here (DenseNet-121 at 224 px, the audio CNN; docs/BENCHMARKS.md), and
OpenVINO in float32 runs a Keras network's graph faster than ``tf.function``. When a model
loads, :func:`attach` turns its network into a graph (a PyTorch model: the format's
``export_onnx``, capability ``onnx_export``, run by ONNX Runtime; a Keras model: its
``convert_openvino``, capability ``openvino_convert``, saved as OpenVINO IR and compiled for the
CPU in f32), caches the graph by the sha256 of the weights as loaded (the handle's
``weights_fingerprint``), runs the graph and the framework on example planes of the model's
modality, and when the probabilities agree to :data:`PARITY_TOLERANCE` hands every
forward-only batch (``predict``, ``scores``: LIME, SHAP, the deletion / insertion curves, the
window timeline, the listening clips' re-scoring) to the graph's engine. Gradients (Grad-CAM,
saliency, IG, the familiarity features) stay with the framework. Otherwise the model keeps its
framework and :attr:`~xai_platform.models.handle.ModelHandle.forward_path` says why (export or
conversion failed, parity failed, not on the CPU, ...); the record, the Models tab and
``check-model`` show it. With ``precision="bf16"`` (opt-in) a graph that passed is then also
tried on OpenVINO in bfloat16 (:mod:`xai_platform.models.reduced_precision`).

Cache: ``$XAI_ONNX_CACHE``, else ``$XDG_CACHE_HOME/xai-platform/onnx``, else
``~/.cache/xai-platform/onnx`` (never beside the weights). Each graph (``KEY.onnx``, or
OpenVINO IR ``KEY.xml`` and ``KEY.bin``) has a ``KEY.json`` beside it holding the sha256 of each
of its files; a graph whose bytes no longer match is exported again. The folder may be deleted
at any time. Nothing from a cached file is executed: ONNX Runtime and OpenVINO read a graph of
operators (and no OpenVINO extension library is loaded).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import FORWARD_PRECISIONS
from ..errors import ModelUnavailableError, first_line
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
    """The fast path's intra-op threads: ``$XAI_ONNX_THREADS``, else as many as PyTorch uses
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


# --- the two kinds of graph -------------------------------------------------------------------
@dataclass(frozen=True)
class GraphKind:
    """How one kind of graph is made, cached and run."""

    engine: str  #: ``ForwardPath.engine`` once its parity passed
    label: str  #: the engine in messages
    made: str  #: "exported" / "converted"
    what: str  #: making it, in messages ("ONNX export")
    module: str  #: the engine's Python module (its absence is a reason)
    install: str
    suffixes: tuple[str, ...]  #: its files; the first is the one the engine reads
    field: str  #: the ForwardPath field naming the graph's first file
    #: write the graph of ``handle`` at a path with the first suffix; returns what the record
    #: keeps of it (the versions that made it)
    write: Callable[[ModelHandle, Path], dict[str, Any]]
    #: a handle running the graph file with ``threads`` threads
    twin: Callable[[ModelHandle, Path, int], ModelHandle]


def _write_onnx(handle: ModelHandle, path: Path) -> dict[str, Any]:
    import torch  # the export's version goes into the record

    handle.export_onnx(path)  # type: ignore[attr-defined]
    return {"torch": torch.__version__}


def _onnx_twin(handle: ModelHandle, onnx_file: Path, threads: int) -> ModelHandle:
    """An ONNX Runtime handle on the exported graph with the model's spec and calibration."""
    from .formats import onnx as onnx_format

    session = onnx_format.session(onnx_file, n_threads=threads)
    onnx_format.check_input(session, handle.spec)
    return onnx_format.OnnxHandle(handle.spec, session, calibration=handle.calibration,
                                  default_batch_size=handle.default_batch_size)


def _write_ir(handle: ModelHandle, path: Path) -> dict[str, Any]:
    """Convert and save as OpenVINO IR (``path`` and its ``.bin``), the weights kept in f32
    (``save_model`` would compress them to f16 by default, which is not exact)."""
    import openvino as ov

    ov.save_model(handle.convert_openvino(), str(path),  # type: ignore[attr-defined]
                  compress_to_fp16=False)
    return {"openvino": ov.__version__}


def _ir_twin(handle: ModelHandle, xml_file: Path, threads: int) -> ModelHandle:
    """An OpenVINO handle on the converted graph, compiled for the CPU in f32 (checked), taking
    (n, H, W, C) as the Keras network does."""
    from .reduced_precision import EXACT, OpenVinoHandle, compile_cpu

    compiled = compile_cpu(xml_file, threads=threads, precision=EXACT)
    shape = compiled.inputs[0].get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape]
    expected = [*handle.spec.input_shape, handle.spec.input.channels]
    if len(dims) != 4 or any(d is not None and d != e for d, e in zip(dims[1:], expected)):
        raise ModelUnavailableError(f"the converted graph takes input {shape}, not "
                                    f"[N, {expected[0]}, {expected[1]}, {expected[2]}]")
    return OpenVinoHandle(handle.spec, compiled, default_batch_size=handle.default_batch_size,
                          calibration=handle.calibration, channels_last=True)


ONNX = GraphKind("onnxruntime", "ONNX Runtime", "exported", "ONNX export",
                 "onnxruntime", "pip install onnxruntime", (".onnx",), "onnx_file",
                 _write_onnx, _onnx_twin)
OPENVINO = GraphKind("openvino", "OpenVINO", "converted", "OpenVINO conversion",
                     "openvino", "pip install openvino", (".xml", ".bin"), "ir_file",
                     _write_ir, _ir_twin)


def graph_kind(handle: ModelHandle) -> GraphKind | None:
    """The kind of graph ``handle``'s format makes (None: it makes none)."""
    capabilities = handle.capabilities
    return ONNX if capabilities.onnx_export else OPENVINO if capabilities.openvino_convert else None


def _fallback(handle: ModelHandle, reason: str, started: float, **extra: Any) -> ForwardPath:
    handle._fast = handle._exact = None
    handle.forward_path = ForwardPath(handle.framework, reason,
                                      seconds=time.perf_counter() - started, **extra)
    return handle.forward_path


def _files(kind: GraphKind, folder: Path, key: str) -> tuple[list[Path], Path]:
    """(the graph's files, its record) in the cache."""
    stem = key[:40]
    return [folder / f"{stem}{suffix}" for suffix in kind.suffixes], folder / f"{stem}.json"


def _cached(kind: GraphKind, files: list[Path], meta_file: Path) -> tuple[bool, str]:
    """(usable, note): whether the cached graph is whole (each file's sha256 matches its
    record: ``onnx_sha256``; ``xml_sha256`` and ``bin_sha256``)."""
    if not all(f.is_file() for f in files):
        return False, ""
    try:
        meta = json.loads(meta_file.read_text())
        if all(meta.get(f"{f.suffix[1:]}_sha256") == sha256(f) for f in files):
            return True, ""
    except (OSError, ValueError, AttributeError):
        pass
    return False, f"the cached graph failed its sha256 check and was {kind.made} again"


def _export(kind: GraphKind, handle: ModelHandle, files: list[Path], meta_file: Path,
            key: str) -> float:
    """Write the graph to temporary files beside the cache entry, then move them in (the file
    read first last: a reader sees the old graph, the whole new one, or a mix its sha256
    check refuses); the record with each file's sha256 is written last."""
    start = time.perf_counter()
    folder = files[0].parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, first = tempfile.mkstemp(prefix=f".{files[0].name}.", suffix=f".part{files[0].suffix}",
                                 dir=folder)
    os.close(fd)
    parts = [Path(first).with_suffix(f.suffix) for f in files]
    try:
        made = kind.write(handle, parts[0])
        for part, final in reversed(list(zip(parts, files))):
            os.chmod(part, 0o644)
            os.replace(part, final)
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    write_atomic(meta_file, json.dumps({
        "key": key, **{f"{f.suffix[1:]}_sha256": sha256(f) for f in files},
        "model": handle.spec.id, "architecture": handle.spec.architecture, **made,
        "export_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
    return seconds


def onnx_graph(handle: ModelHandle, *, cache_dir: Path | str | None = None,
               fresh: bool = False) -> Path:
    """The ONNX graph of the PyTorch model ``handle`` in the cache, exported and recorded as
    :func:`attach` does where the cache has no whole copy (``fresh``: exported again even so,
    for a whole graph its caller could not load). For a network whose outputs are not a
    classifier's (the lung segmenter's per-pixel logits), which :func:`attach` cannot check:
    its caller checks parity on what it uses. Raises what the export raises."""
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = handle.weights_fingerprint()  # type: ignore[attr-defined]
    files, meta_file = _files(ONNX, folder, key)
    if fresh or not _cached(ONNX, files, meta_file)[0]:
        _export(ONNX, handle, files, meta_file, key)
    return files[0]


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
    parity is exported (converted) once more before giving up.
    """
    started = time.perf_counter()
    if precision not in FORWARD_PRECISIONS:
        raise ValueError(f"precision must be one of {FORWARD_PRECISIONS}, not {precision!r}")
    kind = graph_kind(handle)
    if kind is None:
        return _fallback(handle, NO_EXPORT, started)
    if "cpu" not in handle.device.lower():
        return _fallback(handle, f"runs on {handle.device}; the {kind.label} path is for the "
                                 "CPU", started)
    if importlib.util.find_spec(kind.module) is None:
        return _fallback(handle, f"{kind.module} is not installed ({kind.install})", started)
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    n_threads = threads or default_threads()
    try:
        key = handle.weights_fingerprint()  # type: ignore[attr-defined]
        planes = parity_planes(handle)
        reference = handle._outputs_batch(planes)
    except Exception as exc:  # noqa: BLE001 - a foreign network may fail in any way
        return _fallback(handle, f"cannot prepare the {kind.what}: {first_line(exc)[:200]}",
                         started)
    files, meta_file = _files(kind, folder, key)
    graph_file = {kind.field: str(files[0])}
    usable, note = _cached(kind, files, meta_file)
    exported, last_error, dp, ds = False, "", None, None
    for attempt in range(2):
        if not usable or attempt == 1:
            try:
                _export(kind, handle, files, meta_file, key)
                exported = True
            except Exception as exc:  # noqa: BLE001 - unsupported operators, tracing errors, disk
                return _fallback(handle, f"{kind.what} failed: {first_line(exc)[:240]}", started)
        try:
            twin = kind.twin(handle, files[0], n_threads)
            dp, ds = parity(reference, twin._outputs_batch(planes))
        except Exception as exc:  # noqa: BLE001 - an invalid graph, a wrong output shape
            last_error = f"the {kind.made} graph does not run: {first_line(exc)[:240]}"
            if not exported:
                note = f"the cached graph did not run and was {kind.made} again"
                continue
            return _fallback(handle, last_error, started, **graph_file)
        if dp <= PARITY_TOLERANCE:
            handle._fast = handle._exact = twin
            handle.forward_path = ForwardPath(
                kind.engine, note, max_abs_diff=dp, max_score_diff=ds,
                parity_inputs=len(planes), exported=exported,
                seconds=time.perf_counter() - started, threads=n_threads,
                tolerance=PARITY_TOLERANCE, **graph_file)
            if precision == "bf16":
                from .reduced_precision import attach_bf16

                attach_bf16(handle, planes, reference, started=started)
            return handle.forward_path
        if exported:
            break
        note = f"the cached graph failed parity and was {kind.made} again"
    return _fallback(handle, f"parity failed: probabilities differ by up to {dp:.1e} (more than "
                             f"{PARITY_TOLERANCE:.0e}) on {len(planes)} example inputs",
                     started, max_abs_diff=dp, max_score_diff=ds, parity_inputs=len(planes),
                     **graph_file)
