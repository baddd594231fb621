"""Keras 3 models (``framework: keras``): a registered builder with ``.weights.h5`` weights, or
a whole ``.keras`` file loaded in safe mode; the capture of activations and gradients.

TensorFlow is imported when the first Keras model loads or is checked, never by importing this
file. torch (when installed) is imported before TensorFlow: the other order crashes the process
inside triton (see SETUP.md).

The target layer may sit inside a nested model (``backbone/Conv_1``). The model's functional
graph is replayed with that one layer's output recorded, so the tape sees the activation of the
very call that produced the score, however deep the nesting. Grad-CAM and gradient functions run
under ``tf.function``.

The exact fast path (:mod:`~xai_platform.models.fast_forward`, capability ``openvino_convert``)
converts the in-memory network with ``openvino.convert_model`` and runs forward-only batches on
the result where it matches Keras; gradients stay here.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from ...config import ModelSpec
from ...errors import ConfigError, ModelUnavailableError, first_line
from ..architectures import check_architecture, get_builder
from ..handle import (Calibration, FloatArray, LayerGradients, ModelHandle, normalization,
                      output_transforms)
from .base import Capabilities, ModelFormat, register_format

if TYPE_CHECKING:  # annotations only: TensorFlow loads with the first Keras model
    import tensorflow as tf

#: ``architecture:`` of a whole saved ``.keras`` model (no builder)
KERAS_FILE = "keras_file"
#: changes when the OpenVINO conversion changes, so graphs cached before are not reused
CONVERT_VERSION = 1



def _import_quietly():
    """Import TensorFlow with its C++ start-up log lines (absl / oneDNN notices, which no
    environment variable silences in TF 2.21) kept off the terminal; Python errors still raise."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import keras as _keras
            import tensorflow as _tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return _keras, _tf


@functools.cache
def _frameworks() -> tuple[Any, Any]:
    """(keras, tensorflow), imported on first use: torch and torchvision first (the other order
    segfaults inside triton, which torchvision pulls in through torch._dynamo; measured with
    TF 2.21, torch 2.14), TensorFlow's C++ chatter off the terminal."""
    debug = bool(os.environ.get("XAI_DEBUG"))  # --debug: let TensorFlow speak
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if importlib.util.find_spec("torch") is not None:
        import torch  # noqa: F401
    if importlib.util.find_spec("torchvision") is not None:
        import torchvision  # noqa: F401
    if debug:
        import keras as _keras
        import tensorflow as _tf

        return _keras, _tf
    return _import_quietly()


@functools.cache
def _ops() -> SimpleNamespace:
    _, tf = _frameworks()
    return SimpleNamespace(
        softmax=lambda t: tf.nn.softmax(t, axis=-1), sigmoid=tf.sigmoid, log=tf.math.log,
        clip=lambda t, lo, hi: tf.clip_by_value(t, lo, hi),
        concat=lambda ts: tf.concat(ts, axis=-1))


def resolve_device(requested: str = "auto") -> str:
    _, tf = _frameworks()
    gpus = tf.config.list_physical_devices("GPU")
    if requested == "auto":
        return "/GPU:0" if gpus else "/CPU:0"
    if requested.startswith("cuda"):
        if not gpus:
            raise ModelUnavailableError(f"device '{requested}' was asked for but TensorFlow sees "
                                        "no GPU; use --device cpu or install tensorflow[and-cuda].")
        index = requested.partition(":")[2] or "0"
        return f"/GPU:{index}"
    return "/CPU:0"


def _adapter(spec: ModelSpec) -> Callable[[tf.Tensor], tf.Tensor]:
    """(N, H, W) feature planes -> (N, H, W, C) normalised network input
    (:func:`xai_platform.models.handle.normalization`, as the PyTorch backend)."""
    _, tf = _frameworks()
    c = spec.input.channels
    scale, shift = normalization(spec)
    scale_t = tf.constant(scale, dtype=tf.float32)
    shift_t = tf.constant(shift, dtype=tf.float32)

    def adapt(x: tf.Tensor) -> tf.Tensor:
        x = tf.repeat(x[..., None], c, axis=-1) if c > 1 else x[..., None]
        return x * scale_t + shift_t

    return adapt


def _graph(model: Any) -> Any:
    """The functional graph of a model (a Sequential keeps one inside)."""
    if hasattr(model, "_run_through_graph"):
        return model
    inner = getattr(model, "_functional", None)
    if inner is not None and hasattr(inner, "_run_through_graph"):
        return inner
    raise ConfigError(f"model '{model.name}' is not a functional or Sequential Keras model, so its "
                      "layers cannot be addressed.", key="target_layer",
                      fix="declare no target_layer (gradient-free methods still apply), or save "
                          "the model as a functional model.")


def resolve_layer(model: Any, path: str, *, spec: ModelSpec) -> list[Any]:
    """The chain of layers named by ``outer/inner/...``, outermost first."""
    chain, current = [], model
    for part in path.split("/"):
        names = [layer.name for layer in getattr(current, "layers", [])]
        if part not in names:
            close = difflib.get_close_matches(part, names, n=3)
            nested = [n for n in names if hasattr(current.get_layer(n), "layers")]
            hint = f"close names: {', '.join(close)}. " if close else ""
            if nested:
                hint += f"Nested models here: {', '.join(nested)} (address inside as outer/inner)."
            raise ConfigError(f"layer '{part}' of '{path}' does not exist in '{current.name}'.",
                              source=f"{spec.source} (model '{spec.id}')", key="target_layer",
                              fix=hint or "use `python -m xai_platform layers --model ID`.")
        current = current.get_layer(part)
        chain.append(current)
    return chain


def call_capturing(model: Any, x: tf.Tensor, chain: list[Any], store: dict[str, tf.Tensor],
                   tape: tf.GradientTape | None) -> tf.Tensor:
    """Run ``model`` on ``x``; record the output of ``chain[-1]`` (reached through the nested
    models ``chain[:-1]``) in ``store['activation']``, watched by ``tape``."""
    target = chain[0]

    def operation_fn(op: Any) -> Any:
        if op is not target:
            return op
        if len(chain) == 1:
            def record(*args: Any, **kwargs: Any) -> Any:
                out = op(*args, **kwargs)
                if tape is not None:
                    tape.watch(out)
                store["activation"] = out
                return out
            return record
        return lambda inputs, *args, **kwargs: call_capturing(op, inputs, chain[1:], store, tape)

    out = _graph(model)._run_through_graph(x, operation_fn=operation_fn)
    # Functional.call unpacks a one-element output list (``keras.Model(inputs, [outputs])``,
    # kept by the .keras file); the replay does not. A list here once became a (1, N, K) stack
    # whose target gather failed in its gradient ("segment_ids[0] = 1 is out of range [0, 1)").
    return out[0] if isinstance(out, (list, tuple)) and len(out) == 1 else out


def _pick(scores: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    """Row i's score of class t[i]: (N, K), (N,) -> (N,), as a one-hot product (its gradient is
    the mask itself, where a batched ``tf.gather``'s is an UnsortedSegmentSum)."""
    _, tf = _frameworks()
    return tf.reduce_sum(scores * tf.one_hot(t, tf.shape(scores)[1], dtype=scores.dtype), axis=1)


class KerasHandle(ModelHandle):
    framework = "keras"

    def __init__(self, spec: ModelSpec, model: Any, *, device: str, untrained: bool,
                 default_batch_size: int = 32, calibration: Calibration | None = None) -> None:
        _, tf = _frameworks()
        super().__init__(spec, device=device, untrained=untrained,
                         default_batch_size=default_batch_size, calibration=calibration)
        self.model = model
        self._adapt = _adapter(spec)
        self._probs, self._scores = output_transforms(
            spec.output, _ops(), temperature=self.calibration.temperature)
        h, w = spec.input_shape
        x_sig = tf.TensorSpec([None, h, w], tf.float32)
        t_sig = tf.TensorSpec([None], tf.int32)
        self._predict_fn = tf.function(
            lambda x: self._probs(self.model(self._adapt(x), training=False)),
            input_signature=[x_sig], autograph=False)
        self._scores_fn = tf.function(
            lambda x: self._scores(self.model(self._adapt(x), training=False)),
            input_signature=[x_sig], autograph=False)
        self._outputs_fn = tf.function(self._outputs, input_signature=[x_sig], autograph=False)
        self._input_grad_fn = tf.function(self._input_grads, input_signature=[x_sig, t_sig],
                                          autograph=False)
        self._layer_fns: dict[str, Any] = {}
        self._sigs = (x_sig, t_sig)

    def _outputs(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raw = self.model(self._adapt(x), training=False)
        return self._probs(raw), self._scores(raw)

    def _input_grads(self, x: tf.Tensor, t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        _, tf = _frameworks()
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            scores = self._scores(self.model(self._adapt(x), training=False))
            picked = _pick(scores, t)
        return tape.gradient(picked, x), picked

    def _layer_fn(self, path: str) -> Any:
        _, tf = _frameworks()
        if path not in self._layer_fns:
            chain = resolve_layer(self.model, path, spec=self.spec)

            def fn(x: tf.Tensor, t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
                store: dict[str, tf.Tensor] = {}
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    raw = call_capturing(self.model, self._adapt(x), chain, store, tape)
                    picked = _pick(self._scores(raw), t)
                act = store["activation"]
                return act, tape.gradient(picked, act), picked

            self._layer_fns[path] = tf.function(fn, input_signature=list(self._sigs),
                                                autograph=False)
        return self._layer_fns[path]

    def _predict_batch(self, x: FloatArray) -> FloatArray:
        _, tf = _frameworks()
        with tf.device(self.device):
            return self._predict_fn(tf.constant(x)).numpy()

    @property
    def native(self) -> Any:
        return self.model

    def coalition_evaluator(self, x: FloatArray, baseline: FloatArray, segments: np.ndarray
                            ) -> Callable[[np.ndarray], FloatArray]:
        """On a GPU the perturbed batch is built there: only the 0/1 coalitions cross the bus."""
        if "GPU" in self.device:
            return self.device_coalition_evaluator(x, baseline, segments)
        return super().coalition_evaluator(x, baseline, segments)

    def device_coalition_evaluator(self, x: FloatArray, baseline: FloatArray,
                                   segments: np.ndarray) -> Callable[[np.ndarray], FloatArray]:
        """:meth:`coalition_evaluator` with each batch built by TensorFlow on the device."""
        _, tf = _frameworks()
        with tf.device(self.device):
            xt, bt = tf.constant(x), tf.constant(baseline)
            seg = tf.constant(segments)

        def evaluate(z: np.ndarray) -> FloatArray:
            with tf.device(self.device):
                keep = tf.gather(tf.constant(z), seg, axis=1)  # (b, H, W)
                return self._predict_fn(tf.where(keep, xt, bt)).numpy()

        return evaluate

    # --- the fast path's conversion (capability openvino_convert) ---------------------------
    def weights_fingerprint(self) -> str:
        """sha256 of what the converted graph depends on: the network's structure
        (:func:`structure`), every variable as loaded (path, dtype, shape, bytes), the
        architecture and its arguments, the input shape, and the Keras, TensorFlow, OpenVINO and
        package versions. Keys the graph cache, so an untrained (seeded) network and a randomised
        copy are keyed as well as a weights file."""
        from ... import __version__

        keras, tf = _frameworks()
        try:
            openvino = importlib.metadata.version("openvino")
        except importlib.metadata.PackageNotFoundError:
            openvino = None
        digest = hashlib.sha256(json.dumps(
            [CONVERT_VERSION, __version__, keras.__version__, tf.__version__, openvino,
             self.spec.architecture, dict(self.spec.arch_args), self.spec.input.channels,
             list(self.spec.input_shape), structure(self.model)],
            sort_keys=True, default=str).encode())
        for var in self.model.weights:
            value = np.ascontiguousarray(keras.ops.convert_to_numpy(var))
            digest.update(f"{var.path}|{value.dtype}|{value.shape}|".encode())
            digest.update(value.tobytes())
        return digest.hexdigest()

    def convert_openvino(self) -> Any:
        """The network, (N, H, W, C) float32 -> raw outputs (N, K), as an ``openvino.Model``
        converted from the model in memory by ``openvino.convert_model`` (no file is read)."""
        import logging

        import openvino as ov

        root = logging.getLogger()
        state = root.level, list(root.filters), list(root.handlers)
        try:
            with warnings.catch_warnings():
                # Keras warns that the traced input's structure ("inputs") is not the model's
                # input name; the conversion is right (the parity check runs on its result)
                warnings.simplefilter("ignore")
                return ov.convert_model(self.model)
        finally:
            # convert_model sets the root logger to ERROR (and may add a handler and a
            # filter) for the rest of the process: the app's own warnings would vanish
            root.setLevel(state[0])
            root.filters[:] = state[1]
            root.handlers[:] = state[2]

    def layers(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []

        def walk(model: Any, prefix: str = "") -> None:
            for layer in model.layers:
                out.append((f"{prefix}{layer.name}", type(layer).__name__))
                if hasattr(layer, "layers"):
                    walk(layer, prefix=f"{prefix}{layer.name}/")

        walk(self.model)
        return out

    def _scores_batch(self, x: FloatArray) -> FloatArray:
        _, tf = _frameworks()
        with tf.device(self.device):
            return self._scores_fn(tf.constant(x)).numpy()

    def _outputs_batch(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        _, tf = _frameworks()
        with tf.device(self.device):
            probs, scores = self._outputs_fn(tf.constant(x))
        return probs.numpy(), scores.numpy()

    def layer_gradients(self, x, targets, *, layer=None) -> LayerGradients:
        _, tf = _frameworks()
        path = layer or self.spec.target_layer
        if path is None:
            raise ConfigError("no target_layer is declared.", source=self.spec.source,
                              key="target_layer", fix="declare a convolutional layer.")
        x = self.check_batch(x)
        with tf.device(self.device):
            act, grads, picked = self._layer_fn(path)(
                tf.constant(x), tf.constant(np.asarray(targets, dtype=np.int32)))
        if len(act.shape) != 4:
            raise ConfigError(f"layer '{path}' outputs shape {tuple(act.shape)}, not a "
                              "convolutional feature map.", source=self.spec.source,
                              key="target_layer", fix="name a convolutional layer.")
        # NHWC -> NCHW so the shared CAM math sees one layout.
        return LayerGradients(np.transpose(act.numpy(), (0, 3, 1, 2)).astype(np.float32),
                              np.transpose(grads.numpy(), (0, 3, 1, 2)).astype(np.float32),
                              picked.numpy().astype(np.float32))

    def input_gradients(self, x, targets):
        _, tf = _frameworks()
        x = self.check_batch(x)
        with tf.device(self.device):
            grads, picked = self._input_grad_fn(
                tf.constant(x), tf.constant(np.asarray(targets, dtype=np.int32)))
        return grads.numpy().astype(np.float32), picked.numpy().astype(np.float32)

    def layer_output_shape(self, layer: str) -> tuple[int, ...]:
        return layer_output_shape(self.model, self.spec, layer)

    def randomized(self, n_layers: int, *, seed: int = 0) -> KerasHandle:
        keras, _ = _frameworks()
        clone = keras.models.clone_model(self.model)
        clone.set_weights(self.model.get_weights())
        layers = [la for la in _flat_layers(clone) if la.weights]
        with _seeded(seed):
            for layer in layers[len(layers) - n_layers:]:
                for var in layer.weights:
                    init = getattr(layer, f"{var.path.rsplit('/', 1)[-1]}_initializer", None)
                    if init is not None:
                        var.assign(init(var.shape, dtype=var.dtype))
        return self.derive_fast_forward(KerasHandle(
            self.spec, clone, device=self.device, untrained=True,
            default_batch_size=self.default_batch_size, calibration=self.calibration))


def structure(model: Any) -> str:
    """The network's structure as text: ``model.to_json()``, or for a model with a custom layer
    that cannot serialise its arguments, each layer's class and name (what such a layer holds
    outside its weights is then not in it: a cached graph of a model that differs only there
    fails the parity check and is converted again)."""
    try:
        return model.to_json()
    except Exception:  # noqa: BLE001 - NotImplementedError from a custom layer's get_config
        return json.dumps([[f"{type(layer).__module__}.{type(layer).__qualname__}", layer.name]
                           for layer in _flat_layers(model)])


def _flat_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.extend(_flat_layers(layer) if hasattr(layer, "layers") else [layer])
    return out


class _seeded:
    """Seed Keras' global generators for a block, restoring Python's and NumPy's state after."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        keras, _ = _frameworks()
        self._py, self._np = random.getstate(), np.random.get_state()
        keras.utils.set_random_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        random.setstate(self._py)
        np.random.set_state(self._np)


def layer_output_shape(model: Any, spec: ModelSpec, layer: str) -> tuple[int, ...]:
    chain = resolve_layer(model, layer, spec=spec)
    shape = tuple(chain[-1].output.shape[1:])
    return (shape[-1], *shape[:-1]) if len(shape) == 3 else shape


def build_network(spec: ModelSpec, *, seed: int = 0) -> Any:
    with _seeded(seed):
        return get_builder(spec.architecture)(spec)


def load_model_file(path: Path) -> Any:
    """A whole saved model, in safe mode: a Lambda layer or custom object that would run code
    from the file is refused."""
    keras, _ = _frameworks()
    if path.suffix != ".keras":
        raise ModelUnavailableError(f"{path}: only the .keras format loads as a whole model "
                                    "(legacy .h5 / SavedModel can carry code); re-save it with "
                                    "model.save('model.keras').")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except FileNotFoundError:
        raise ModelUnavailableError(f"weights file {path} not found.") from None
    except Exception as exc:  # keras raises ValueError/TypeError for unsafe or foreign content
        first = first_line(exc)
        raise ModelUnavailableError(f"{path} cannot be loaded in Keras safe mode: {first[:240]}") from None


def check_outputs(model: Any, spec: ModelSpec) -> None:
    """The network's last layer must have as many units as the config's ``output`` and
    ``labels`` imply: a one-unit head read as two classes would explain a class it never scores
    (and failed inside the gradient of the target gather)."""
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return
    if len(outputs) > 1:
        raise ModelUnavailableError(f"the model has {len(outputs)} outputs; the platform explains "
                                    "one: save a model whose only output is the class head.")
    width = outputs[0].shape[-1]
    if width is None or width == spec.num_outputs:
        return
    if width == 1:
        fix = ("a one-unit head is output: sigmoid (a logit) or output: sigmoid_probability "
               "(Dense(1, activation='sigmoid')), with two labels [negative, positive]")
    else:
        fix = f"declare {width} labels, or the output kind that matches the last layer"
    raise ModelUnavailableError(
        f"the model's last layer has {width} unit(s), but the config declares output: "
        f"{spec.output} with labels {list(spec.labels)} ({spec.num_outputs} unit(s)); {fix}.")


def load(spec: ModelSpec, *, device: str, default_batch_size: int = 32,
         calibration: Calibration | None = None) -> KerasHandle:
    if spec.architecture == KERAS_FILE:
        assert spec.weights is not None
        model = load_model_file(spec.weights)
    else:
        model = build_network(spec)
        if spec.weights is not None:
            if not spec.weights.name.endswith(".weights.h5"):
                raise ModelUnavailableError(f"{spec.weights}: Keras builder weights must be a "
                                            "'.weights.h5' file (model.save_weights(path)).")
            if not spec.weights.exists():
                raise ModelUnavailableError(f"weights file {spec.weights} not found.")
            try:
                model.load_weights(spec.weights)
            except Exception as exc:
                raise ModelUnavailableError(
                    f"weights file {spec.weights} does not fit architecture "
                    f"'{spec.architecture}': {str(exc).splitlines()[0][:200]}") from None
    expected = (None, *spec.input_shape, spec.input.channels)
    got = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
    if got is not None and tuple(got) != expected:
        raise ModelUnavailableError(f"model takes input {got}, but the config declares "
                                    f"{expected}; fix `input` in the config entry.")
    check_outputs(model, spec)
    return KerasHandle(spec, model, device=resolve_device(device),
                       untrained=spec.weights is None, default_batch_size=default_batch_size,
                       calibration=calibration)


def verify(spec: ModelSpec) -> None:
    """Check the target layer exists and is a conv map."""
    if spec.target_layer is None:
        return
    if spec.architecture == KERAS_FILE:
        if spec.weights is None or not spec.weights.exists():
            return  # reported as unavailable by the manager
        try:
            model = load_model_file(spec.weights)
        except ModelUnavailableError:
            return  # reported as unavailable when it is used
    else:
        model = build_network(spec)
    shape = layer_output_shape(model, spec, spec.target_layer)
    if len(shape) != 3:
        raise ConfigError(f"layer '{spec.target_layer}' outputs shape {shape}, not a "
                          "convolutional feature map.", source=f"{spec.source} (model '{spec.id}')",
                          key="target_layer", fix="name a convolutional layer.")


@register_format
class KerasFormat(ModelFormat):
    """A registered Keras builder with ``.weights.h5`` weights, or ``architecture: keras_file``
    and a whole ``.keras`` model loaded in safe mode."""

    name = "keras"
    label = "Keras"
    modules = ("tensorflow", "keras")
    install_hint = "pip install tensorflow-cpu (or tensorflow[and-cuda] on a GPU)"
    capabilities = Capabilities(device_batches=True, layer_gradients=True, input_gradients=True,
                                randomize=True, openvino_convert=True)

    def check_spec(self, spec: ModelSpec) -> None:
        where = f"{spec.source} (model '{spec.id}')"
        if getattr(spec.input, "waveform", False):
            raise ConfigError("raw-waveform models (input.kind: waveform) are not supported for "
                              "Keras models yet.", source=where, key="input.kind",
                              fix="export the network for framework: torch (a state_dict) or "
                                  "torchscript, or use a spectrogram input.")
        if spec.architecture != KERAS_FILE:
            check_architecture(spec, self.name, extra=(KERAS_FILE,))
        elif spec.weights is None:
            raise ConfigError(f"'{KERAS_FILE}' needs the .keras file.", source=where,
                              key="weights", fix="set weights: to the path of the saved .keras model.")

    def load(self, spec: ModelSpec, *, device: str, default_batch_size: int = 32,
             calibration: Calibration | None = None) -> KerasHandle:
        return load(spec, device=device, default_batch_size=default_batch_size,
                    calibration=calibration)

    def verify(self, spec: ModelSpec) -> None:
        verify(spec)

    def build_network(self, spec: ModelSpec, *, seed: int = 0) -> Any:
        return build_network(spec, seed=seed)
