"""ONNX models (``framework: onnx``, ``weights: model.onnx``) run by onnxruntime.

Two architectures:

* ``architecture: onnx``: the graph runs in onnxruntime. Predictions, the perturbation methods
  (LIME, SHAP) and the quality metrics apply; gradient methods do not (onnxruntime's inference
  sessions give no gradients) and are listed with that reason.
* ``architecture: onnx2torch``: the graph is converted to a PyTorch module by onnx2torch when
  the model loads and runs as a PyTorch model, so every method applies; ``target_layer`` names a
  module of the converted graph (``python -m xai_platform layers --model ID`` lists them). A
  graph with an operator onnx2torch does not convert is reported as unavailable with the
  operator's name; ``architecture: onnx`` still runs it.

The network input is (N, C, H, W) float32, the feature plane repeated to C channels and
normalised as every other format does (:func:`~xai_platform.models.handle.normalization`).
onnxruntime executes no Python from the file; only ``.onnx`` files are accepted. onnxruntime and
onnx are imported when the first ONNX model loads, never by importing this file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...config import ModelSpec
from ...errors import ConfigError, ModelUnavailableError, first_line
from ..handle import Calibration, FloatArray, ForwardPath, ModelHandle, normalization
from .base import Capabilities, ModelFormat, register_format

#: ``architecture:`` values this format accepts
RUNTIME, CONVERTED = "onnx", "onnx2torch"

#: intra-op threads of an onnxruntime session (``XAI_ONNX_THREADS`` overrides)
DEFAULT_THREADS = 2


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warning for large |z|


def numpy_outputs(kind: str, raw: np.ndarray, *, temperature: float = 1.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, explained scores) of raw network outputs (N, K), as
    :func:`~xai_platform.models.handle.output_transforms` defines them, in NumPy."""
    raw = raw.astype(np.float64)
    eps = 1e-7
    if kind == "logits":
        return _softmax(raw / temperature), raw
    if kind == "probabilities":
        return raw, np.log(np.clip(raw, eps, 1.0))
    if kind == "sigmoid":
        p = _sigmoid(raw[:, :1] / temperature)
        return np.concatenate([1.0 - p, p], axis=1), np.concatenate([-raw[:, :1], raw[:, :1]], 1)
    if kind == "sigmoid_probability":
        p = np.clip(raw[:, :1], eps, 1.0 - eps)
        z = np.log(p) - np.log(1.0 - p)
        p = _sigmoid(z / temperature) if temperature != 1.0 else raw[:, :1]
        return np.concatenate([1.0 - p, p], axis=1), np.concatenate([-z, z], axis=1)
    if kind == "multilabel":
        p = np.clip(raw, eps, 1.0 - eps)
        return raw, np.log(p) - np.log(1.0 - p)
    raise ValueError(f"unknown output kind {kind!r}")


class GraphHandle(ModelHandle):
    """A network graph run by an inference engine, the network input built in NumPy; a
    subclass runs one batch (:meth:`_run`). ``channels_last``: the graph takes (n, H, W, C)
    (a Keras network's layout) instead of (n, C, H, W)."""

    #: the inference engine's name (the fast path's ``ForwardPath.engine``)
    engine: str = ""

    def __init__(self, spec: ModelSpec, *, default_batch_size: int = 32,
                 calibration: Calibration | None = None, device: str = "cpu",
                 channels_last: bool = False) -> None:
        super().__init__(spec, device=device, untrained=False,
                         default_batch_size=default_batch_size, calibration=calibration)
        c = spec.input.channels
        scale, shift = normalization(spec)
        self.channels_last = channels_last
        shape = (1, 1, 1, c) if channels_last else (1, c, 1, 1)
        self._scale = np.asarray(scale, dtype=np.float32).reshape(shape)
        self._shift = np.asarray(shift, dtype=np.float32).reshape(shape)
        #: a raw-waveform network (only as the fast path's twin of a PyTorch one)
        self.waveform = bool(getattr(spec.input, "waveform", False))

    def network_input(self, x: FloatArray) -> FloatArray:
        """(n, H, W) feature planes -> (n, C, H, W) float32 network input ((n, H, W, C) when
        :attr:`channels_last`), scaled and shifted as every format does; a waveform network's
        (n, 1, n_samples) -> (n, n_samples), as PyTorch's input adapter gives it."""
        x = np.asarray(x, dtype=np.float32)
        if self.waveform:
            return x[:, 0] * self._scale.flat[0] + self._shift.flat[0]
        c = self.spec.input.channels
        if self.channels_last:
            out = np.empty((*x.shape, c), dtype=np.float32)
            np.multiply(x[..., None], self._scale, out=out)
        else:
            out = np.empty((len(x), c, *x.shape[1:]), dtype=np.float32)
            np.multiply(x[:, None], self._scale, out=out)  # broadcast to C channels: one pass
        out += self._shift
        return out

    def _run(self, net_input: FloatArray) -> np.ndarray:
        """The graph's first output for one batch (n, C, H, W); called under :attr:`lock`."""
        raise NotImplementedError

    def raw_outputs(self, x: FloatArray) -> FloatArray:
        with self.lock:
            return np.asarray(self._run(self.network_input(x)))

    def _raw(self, x: FloatArray) -> np.ndarray:
        out = self.raw_outputs(x)
        if out.ndim != 2 or out.shape[1] != self.spec.num_outputs:
            raise ModelUnavailableError(
                f"model '{self.spec.id}' outputs shape {out.shape}, but its config declares "
                f"{self.spec.num_outputs} output(s) ({self.spec.output}, labels "
                f"{list(self.spec.labels)}); fix `labels` / `output` in the config entry.")
        return out

    def _predict_batch(self, x: FloatArray) -> FloatArray:
        probs, _ = numpy_outputs(self.spec.output, self._raw(x),
                                 temperature=self.calibration.temperature)
        return probs.astype(np.float32)

    def _scores_batch(self, x: FloatArray) -> FloatArray:
        return numpy_outputs(self.spec.output, self._raw(x))[1].astype(np.float32)

    def _outputs_batch(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        raw = self._raw(x)
        probs = numpy_outputs(self.spec.output, raw, temperature=self.calibration.temperature)[0]
        return probs.astype(np.float32), numpy_outputs(self.spec.output, raw)[1].astype(np.float32)


class OnnxHandle(GraphHandle):
    """An onnxruntime session."""

    framework = "onnx"
    engine = "onnxruntime"

    def __init__(self, spec: ModelSpec, session: Any, *, default_batch_size: int = 32,
                 calibration: Calibration | None = None, device: str = "cpu") -> None:
        super().__init__(spec, default_batch_size=default_batch_size, calibration=calibration,
                         device=device)
        self.session = session
        self.forward_path = ForwardPath("onnxruntime", "an ONNX model: ONNX Runtime runs it")
        self.input_name = session.get_inputs()[0].name

    def _run(self, net_input: FloatArray) -> np.ndarray:
        return self.session.run(None, {self.input_name: net_input})[0]

    @property
    def native(self) -> Any:
        return self.session


def threads() -> int:
    try:
        return max(1, int(os.environ.get("XAI_ONNX_THREADS", DEFAULT_THREADS)))
    except ValueError:
        return DEFAULT_THREADS


def _check_file(path: Path | None) -> Path:
    if path is None or path.suffix != ".onnx":
        raise ModelUnavailableError(f"{path}: an ONNX model is one '.onnx' file "
                                    "(torch.onnx.export(model, x, 'model.onnx')).")
    if not path.is_file():
        raise ModelUnavailableError(f"weights file {path} not found.")
    return path


def session(path: Path | bytes, *, n_threads: int | None = None) -> Any:
    """An onnxruntime inference session on the CPU (``n_threads`` intra-op threads) on the
    graph file at ``path``, or on a serialised graph (``bytes``, e.g. one built in memory)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = n_threads or threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no graph-optimisation notices on the terminal
    # Idle worker threads sleep instead of spinning. A request runs several sessions in turn
    # (the trained graph, the randomised copy's head and its whole graph), and each one's
    # spinning threads took the cores from the next: with two cores the randomisation check of
    # SHAP took 0.87 s instead of 0.41 s (docs/BENCHMARKS.md, thirty-fourth session). A single
    # session loses nothing at 16 rows or more a batch, about 0.2 ms at one row.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(path if isinstance(path, bytes) else str(path),
                                    sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / ...
        first = first_line(exc)
        what = "the graph" if isinstance(path, bytes) else str(path)
        raise ModelUnavailableError(f"{what} is not a valid ONNX model: {first[:240]}") from None


def check_input(sess: Any, spec: ModelSpec) -> None:
    """The graph's input must be (N, C, H, W) as the config declares (symbolic dims pass); a
    waveform network's (the fast path's graph of a PyTorch one), (N, n_samples)."""
    shape = list(sess.get_inputs()[0].shape)
    if getattr(spec.input, "waveform", False):
        n = spec.input_shape[-1]
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n):
            raise ModelUnavailableError(f"the ONNX graph takes input {shape}, but the waveform "
                                        f"model's config declares [N, {n}] samples.")
        return
    expected = [spec.input.channels, *spec.input_shape]
    fixed = [d if isinstance(d, int) else None for d in shape[1:]]
    if len(shape) != 4 or any(d is not None and d != e for d, e in zip(fixed, expected)):
        raise ModelUnavailableError(
            f"the ONNX graph takes input {shape}, but the config declares "
            f"[N, {expected[0]}, {expected[1]}, {expected[2]}] (channels first); fix `input` "
            "in the config entry.")


def convert(spec: ModelSpec) -> Any:
    """The graph converted to a PyTorch module by onnx2torch (raises
    :class:`ModelUnavailableError` with the reason when it cannot be converted)."""
    path = _check_file(spec.weights)
    try:
        import onnx
        from onnx2torch import convert as onnx2torch_convert
    except ImportError:
        raise ModelUnavailableError("architecture 'onnx2torch' needs onnx2torch: pip install "
                                    "onnx2torch (or use architecture: onnx).") from None
    try:
        graph = onnx.load(str(path))
        return onnx2torch_convert(graph)
    except Exception as exc:  # NotImplementedError for an operator without a converter
        first = first_line(exc)
        raise ModelUnavailableError(f"{path} cannot be converted to PyTorch by onnx2torch: "
                                    f"{first[:240]}; use architecture: onnx (predictions and "
                                    "perturbation methods only).") from None


@register_format
class OnnxFormat(ModelFormat):
    """An ``.onnx`` file run by onnxruntime, or converted to PyTorch (``onnx2torch``)."""

    name = "onnx"
    label = "ONNX"
    modules = ("onnxruntime",)
    install_hint = "pip install onnxruntime onnx"
    capabilities = Capabilities()  # onnxruntime: predictions only
    #: an onnx2torch-converted graph runs as a PyTorch module
    converted = Capabilities(device_batches=True, layer_gradients=True, input_gradients=True,
                             randomize=True, reference_cam=True)

    def capabilities_for(self, spec: ModelSpec) -> Capabilities:
        return self.converted if spec.architecture == CONVERTED else self.capabilities

    def check_spec(self, spec: ModelSpec) -> None:
        where = f"{spec.source} (model '{spec.id}')"
        if spec.architecture not in (RUNTIME, CONVERTED):
            raise ConfigError(f"'{spec.architecture}' is not an ONNX architecture.", source=where,
                              key="architecture",
                              fix=f"use {RUNTIME} (onnxruntime) or {CONVERTED} (converted to "
                                  "PyTorch: gradient methods too).")
        if getattr(spec.input, "waveform", False):
            raise ConfigError("raw-waveform models (input.kind: waveform) are not supported for "
                              "ONNX models yet.", source=where, key="input.kind",
                              fix="export the network for framework: torch (a state_dict) or "
                                  "torchscript, or use a spectrogram input.")
        if spec.weights is None or spec.weights.suffix != ".onnx":
            raise ConfigError("an ONNX model needs its '.onnx' file.", source=where,
                              key="weights", fix="set weights: to the path of model.onnx.")
        if spec.architecture == RUNTIME and spec.target_layer:
            raise ConfigError("onnxruntime gives no gradients of inner layers, so a target layer "
                              "is never used.", source=where, key="target_layer",
                              fix=f"remove target_layer, or use architecture: {CONVERTED}.")

    def load(self, spec: ModelSpec, *, device: str, default_batch_size: int = 32,
             calibration: Calibration | None = None) -> ModelHandle:
        if spec.architecture == CONVERTED:
            from . import torch as torch_format

            net = convert(spec)
            return torch_format.TorchHandle(spec, net, device=torch_format.resolve_device(device),
                                            untrained=False, default_batch_size=default_batch_size,
                                            calibration=calibration)
        sess = session(_check_file(spec.weights))
        check_input(sess, spec)
        return OnnxHandle(spec, sess, default_batch_size=default_batch_size,
                          calibration=calibration)

    def verify(self, spec: ModelSpec) -> None:
        if spec.architecture != CONVERTED or not spec.target_layer:
            return
        try:
            net = convert(spec)
        except ModelUnavailableError:
            return  # reported as unavailable when it is used
        from . import torch as torch_format

        shape = torch_format.layer_output_shape(net, spec, spec.target_layer)
        if len(shape) != 3:
            raise ConfigError(f"layer '{spec.target_layer}' outputs shape {shape}, not a "
                              "convolutional feature map (C, h, w).",
                              source=f"{spec.source} (model '{spec.id}')", key="target_layer",
                              fix="name a convolutional layer of the converted graph.")
