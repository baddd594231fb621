"""The one interface both frameworks answer through.

A :class:`ModelHandle` takes a batch of *feature planes* ``x: (N, H, W) float32`` (a grayscale
X-ray in [0, 1] at the model's size, or a log-mel spectrogram in dB) and returns class
probabilities ``(N, K)``. Channel repetition and normalisation happen inside the framework, so
gradients reach the feature plane and perturbation methods never see channels.

Explainers also get what they need from it: activations and gradients of a layer
(:meth:`layer_gradients`), gradients with respect to the input (:meth:`input_gradients`). The
*explained score* of class ``k`` depends on the declared output:

==============  =============================  ===============================================
``output``      probabilities shown            score a gradient method differentiates
==============  =============================  ===============================================
logits          softmax(z)                     z_k (the logit)
probabilities   p (the model's softmax)        log p_k
sigmoid         [1 - s(z), s(z)]               -z for class 0, +z for class 1
sigmoid_prob.   [1 - p, p] (the model's s(z))  -logit(p) for class 0, +logit(p) for class 1
multilabel      p (per-label, independent)     logit(p_k)
==============  =============================  ===============================================

(``sigmoid_prob.`` is ``sigmoid_probability``: one output unit with its sigmoid inside the model,
as Keras' ``Dense(1, activation="sigmoid")``.)

so that explaining the negative class of a sigmoid model attributes the negated logit.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt

from ..config import AppSettings, ModelSpec
from ..explanation import ScoreShares
from ..familiarity import Familiarity

FloatArray = npt.NDArray[np.float32]
_EPS = 1e-7
#: why a model's forward passes stay with its framework when its format cannot export them
NO_EXPORT = "its format gives no ONNX export or OpenVINO conversion"


@dataclass(frozen=True)
class LayerGradients:
    """Activations and gradients of one layer, channels first.

    activations, gradients: (N, C, h, w) float32; scores: (N,) float32, the explained score of
    each row's target.
    """

    activations: FloatArray
    gradients: FloatArray
    scores: FloatArray


@dataclass(frozen=True)
class ForwardPath:
    """Which engine runs a model's forward-only batches, and why (see
    :mod:`xai_platform.models.fast_forward`).

    ``engine`` is ``onnxruntime`` when a PyTorch model's exported graph passed its parity check,
    ``openvino`` (``precision`` ``float32``) when a Keras model's converted graph did,
    ``openvino`` with ``precision`` ``bf16`` when the reduced-precision path was asked for and
    passed its looser check too (:mod:`xai_platform.models.reduced_precision`), else the
    model's framework, with ``reason`` saying why the fast path is not used (or why bf16 is
    not). ``max_abs_diff``: the largest difference of probabilities between the engine and the
    framework on the ``parity_inputs`` example planes, held to ``tolerance``;
    ``max_score_diff`` the same for the explained scores (e.g. logits); ``decision_changes``:
    how many of those examples' decisions differ (checked for reduced precision only).
    """

    engine: str
    reason: str = ""
    max_abs_diff: float | None = None
    max_score_diff: float | None = None
    parity_inputs: int = 0
    onnx_file: str | None = None  #: the cached ONNX graph (PyTorch models)
    ir_file: str | None = None  #: the cached OpenVINO IR ``.xml`` (Keras; its ``.bin`` beside)
    exported: bool = False  #: this load exported (or converted) the graph, not the cache
    seconds: float = 0.0  #: export (if any), session and parity check
    threads: int | None = None  #: intra-op threads of the engine
    precision: str = "float32"  #: what the forward-only batches compute in
    tolerance: float | None = None  #: the bound ``max_abs_diff`` was held to
    decision_changes: int | None = None

    @property
    def fast(self) -> bool:
        return self.engine in ("onnxruntime", "openvino")

    @property
    def reduced(self) -> bool:
        """Forward-only batches run below float32 (the opt-in bf16 path)."""
        return self.precision != "float32"

    def with_reason(self, text: str, **changes: Any) -> ForwardPath:
        """A copy with ``text`` appended to :attr:`reason` (after "; ") and ``changes``."""
        return replace(self, reason="; ".join(filter(None, [self.reason, text])), **changes)

    def describe(self) -> str:
        """One line for the Models tab, ``check-model`` and logs."""
        if not self.fast or self.max_abs_diff is None:  # the framework, or an ONNX model
            return f"{self.engine}" + (f" ({self.reason})" if self.reason else "")
        how = ("converted" if self.ir_file else "exported") if self.exported else "cached graph"
        note = f"; {self.reason}" if self.reason else ""
        if self.reduced:
            changed = f"{self.decision_changes or 'no'} decision changed"
            return (f"OpenVINO {self.precision}, reduced precision ({how}, parity "
                    f"{self.max_abs_diff:.1e} within {self.tolerance:.0e} on "
                    f"{self.parity_inputs} example inputs, {changed}, {self.threads} "
                    f"threads{note})")
        engine = "ONNX Runtime" if self.engine == "onnxruntime" else "OpenVINO f32"
        return (f"{engine} ({how}, parity {self.max_abs_diff:.1e} on {self.parity_inputs} "
                f"example inputs, {self.threads} threads{note})")

    def note(self) -> str:
        """What a user reading a result should know about its forward passes ("" when they
        were exact)."""
        if not self.reduced:
            return ""
        return (f"Reduced precision: the prediction and the perturbation methods' model "
                f"evaluations ran on OpenVINO in {self.precision} (probabilities within "
                f"{self.max_abs_diff:.1e} of the exact model on {self.parity_inputs} example "
                f"inputs, no decision changed); gradient methods ran in float32. "
                f"app.forward_precision: float32 (no --bf16) gives exact results.")

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "reason": self.reason,
                "max_abs_diff": self.max_abs_diff, "max_score_diff": self.max_score_diff,
                "parity_inputs": self.parity_inputs, "onnx_file": self.onnx_file,
                "ir_file": self.ir_file,
                "exported": self.exported, "seconds": round(self.seconds, 3),
                "threads": self.threads, "precision": self.precision,
                "tolerance": self.tolerance, "decision_changes": self.decision_changes}


@dataclass(frozen=True)
class Calibration:
    """Post-hoc calibration fitted on validation data (from the model card): probabilities are
    computed from logits / ``temperature``; ``threshold`` is the decision threshold on the
    positive class; ``band`` (below, above), where the card has one, is the "cannot tell" band
    on the positive class's calibrated probability (:class:`xai_platform.explanation.
    Prediction`); ``unseen_reals`` and ``test_fakes``, where the card has them, how real voices
    of recording set-ups the model never heard scored and how the fakes of its test split did
    (:class:`xai_platform.explanation.ScoreShares`). ``short_band`` (seconds, below, above),
    where the card adopted one: the wider band for inputs holding less than that many seconds
    of what the model judges (audio: speech; ``PreparedInput.judged_seconds``). Explained
    scores (gradients) are not rescaled."""

    temperature: float = 1.0
    threshold: float | None = None
    band: tuple[float, float] | None = None
    short_band: tuple[float, float, float] | None = None
    unseen_reals: ScoreShares | None = None
    test_fakes: ScoreShares | None = None

    def band_for(self, seconds: float | None) -> tuple[float, float] | None:
        """The band an input holding ``seconds`` of what the model judges gets: the short-input
        band below its limit (strictly), else the pooled band; None without a band. The one
        rule for the app's verdicts and the audio trainer's test figures."""
        if (self.band is not None and self.short_band is not None and seconds is not None
                and seconds < self.short_band[0]):
            return self.short_band[1:]
        return self.band


def output_transforms(kind: str, ops: SimpleNamespace, *, temperature: float = 1.0
                      ) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(probabilities(raw), scores(raw)) for a declared output kind, written once for any tensor
    library. ``ops`` provides softmax, sigmoid, log, clip and concat with the usual meanings.
    ``temperature`` divides logits (``logits`` and ``sigmoid`` outputs) before the probabilities.
    """
    inv_t = 1.0 / float(temperature)
    if kind == "logits":
        return (lambda raw: ops.softmax(raw * inv_t)), (lambda raw: raw)
    if kind == "probabilities":
        return (lambda raw: raw), (lambda raw: ops.log(ops.clip(raw, _EPS, 1.0)))
    if kind == "sigmoid":
        def probabilities(raw):
            p = ops.sigmoid(raw[:, :1] * inv_t)
            return ops.concat([1.0 - p, p])

        return probabilities, (lambda raw: ops.concat([-raw[:, :1], raw[:, :1]]))
    if kind == "sigmoid_probability":
        def logit(raw):
            p = ops.clip(raw[:, :1], _EPS, 1.0 - _EPS)
            return ops.log(p) - ops.log(1.0 - p)

        def probabilities(raw):
            p = ops.sigmoid(logit(raw) * inv_t) if temperature != 1.0 else raw[:, :1]
            return ops.concat([1.0 - p, p])

        return probabilities, (lambda raw: ops.concat([-logit(raw), logit(raw)]))
    if kind == "multilabel":
        def scores(raw):
            p = ops.clip(raw, _EPS, 1.0 - _EPS)
            return ops.log(p) - ops.log(1.0 - p)

        return (lambda raw: raw), scores
    raise ValueError(f"unknown output kind {kind!r}")


_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _declared_normalization(spec_input: Any, c: int) -> tuple[list[float], list[float]] | None:
    """(scale, shift) from an input spec's ``range``, ``mean``, ``std``, ``channel_order``
    (None when it declares none of range / mean / std)."""
    lo_hi = getattr(spec_input, "range", None)
    mean = getattr(spec_input, "mean", None)
    std = getattr(spec_input, "std", None)
    if lo_hi is None and mean is None and std is None:
        return None
    lo, hi = lo_hi or (0.0, 1.0)
    means = list(mean or (0.0,)) * (c if len(mean or (0.0,)) == 1 else 1)
    stds = list(std or (1.0,)) * (c if len(std or (1.0,)) == 1 else 1)
    if getattr(spec_input, "channel_order", "rgb") == "bgr":
        means, stds = means[::-1], stds[::-1]
    return ([(hi - lo) / s for s in stds], [(lo - m) / s for m, s in zip(means, stds)])


def normalization(spec: ModelSpec) -> tuple[list[float], list[float]]:
    """Per-channel (scale, shift) so that network input = plane * scale + shift, for the
    config's ``input.normalize`` (both backends apply exactly this):

    imagenet: (x - mean) / std (gray: the channel means); xrv: [0, 1] -> [-1024, 1024]
    (torchxrayvision); minus1_1: [0, 1] -> [-1, 1]; centered: [0, 1] -> [-0.5, 0.5];
    db: [-top_db, 0] dB -> [0, 1]; unit / none: unchanged. An input spec that declares
    ``range`` / ``mean`` / ``std`` (image inputs) gets (lo + (hi - lo) x - mean_c) / std_c, the
    lists reversed for ``channel_order: bgr``.
    """
    c, norm = spec.input.channels, spec.input.normalize
    declared = _declared_normalization(spec.input, c)
    if declared is not None:
        return declared
    if norm == "imagenet":
        mean = _IMAGENET_MEAN if c == 3 else (sum(_IMAGENET_MEAN) / 3,)
        std = _IMAGENET_STD if c == 3 else (sum(_IMAGENET_STD) / 3,)
        return [1.0 / s for s in std], [-m / s for m, s in zip(mean, std)]
    if norm == "xrv":
        return [2048.0] * c, [-1024.0] * c
    if norm == "minus1_1":
        return [2.0] * c, [-1.0] * c
    if norm == "centered":
        return [1.0] * c, [-0.5] * c
    if norm == "db":
        return [1.0 / spec.input.top_db] * c, [1.0] * c
    return [1.0] * c, [0.0] * c


class ModelHandle(ABC):
    """A loaded model of any format. Thread-safe: calls on one handle are serialised where the
    framework keeps per-call state on the module (hooks).

    What a format's handle can do beyond predicting is declared by its format's
    :class:`~xai_platform.models.formats.Capabilities` (:attr:`capabilities`); a method the
    format lacks raises :class:`NotImplementedError` here.
    """

    framework: str = ""
    #: rows per backward pass where a format splits gradient batches (``app.gradient_batch_size``)
    gradient_batch_size: int = AppSettings.gradient_batch_size

    def __init__(self, spec: ModelSpec, *, device: str, untrained: bool,
                 default_batch_size: int = 32, calibration: Calibration | None = None) -> None:
        self.spec = spec
        self.device = device
        self.untrained = untrained
        self.default_batch_size = default_batch_size
        self.calibration = calibration or Calibration()
        #: the training distribution of this model's features (set by the manager from the
        #: model card; None: no familiarity check), see :mod:`xai_platform.familiarity`
        self.familiarity: Familiarity | None = None
        self.lock = threading.RLock()
        #: which engine runs forward-only batches (:meth:`use_fast_forward`)
        self.forward_path = ForwardPath(self.framework, NO_EXPORT)
        self._fast: ModelHandle | None = None  # runs forward batches, once its parity passed
        self._exact: ModelHandle | None = None  # the exact graph's twin (also under bf16)
        self._fast_options: dict[str, Any] | None = None
        self._fast_pending = False

    def use_channels_last(self) -> bool:
        """Lay the network's weights out for the CPU's convolution kernels where the format
        gains from it (PyTorch: :meth:`TorchHandle.use_channels_last`); True when it did. The
        results stay the same to float rounding."""
        return False

    # --- the exact fast path for forward passes ----------------------------------------------
    def use_fast_forward(self, *, cache_dir: Any = None, threads: int | None = None,
                         precision: str = "float32", lazy: bool = False) -> ForwardPath:
        """Run forward-only batches (:meth:`predict`, :meth:`scores`, and so LIME, SHAP, the
        deletion / insertion curves, the window timeline) through ONNX Runtime (PyTorch) or
        OpenVINO in float32 (Keras) when the graph matches this model on example inputs
        (:func:`xai_platform.models.fast_forward.attach`); gradients stay with the framework.
        ``precision="bf16"``: then through OpenVINO in bfloat16, if its looser check passes
        (:mod:`xai_platform.models.reduced_precision`). ``lazy``: export on the first forward
        batch instead of now (a derived copy, e.g. the randomised model, that may only ever be
        asked for gradients)."""
        self._fast_options = {"cache_dir": cache_dir, "threads": threads, "precision": precision}
        if lazy:
            self._fast_pending = True
            self.forward_path = ForwardPath(self.framework, "fast path set up on the first "
                                                            "forward batch")
            return self.forward_path
        from .fast_forward import attach

        return attach(self, cache_dir=cache_dir, threads=threads, precision=precision)

    def use_framework_forward(self, reason: str = "turned off") -> None:
        """Run forward-only batches on the framework again, dropping the fast twins: their
        graph was exported from the parameters at load, so a network changed in place (or a
        forward function replaced) afterwards would no longer be what it runs."""
        with self.lock:
            self._fast = self._exact = self._fast_options = None
            self._fast_pending = False
            self.forward_path = ForwardPath(self.framework, reason)

    def derive_fast_forward(self, other: ModelHandle) -> ModelHandle:
        """Give ``other`` (a copy derived from this model) the same fast-path settings, set up
        lazily, or, where this model has none (the switch is off, the format exports nothing),
        the reason it has none; returns ``other``."""
        if self._fast_options is not None:
            other.use_fast_forward(**self._fast_options, lazy=True)
        else:
            other.forward_path = ForwardPath(other.framework, self.forward_path.reason)
        return other

    def _forward_engine(self) -> ModelHandle:
        """The handle whose ``_predict_batch`` / ``_scores_batch`` run forward-only batches."""
        if self._fast_pending:
            with self.lock:
                if self._fast_pending:
                    self._fast_pending = False
                    from .fast_forward import attach

                    attach(self, **(self._fast_options or {}))
        return self._fast or self

    @property
    def exact_engine(self) -> str | None:
        """The engine of the exact fast path (``onnxruntime``, or ``openvino`` for a Keras
        model), None while it runs no forward batches."""
        return None if self._exact is None else getattr(self._exact, "engine", None)

    @property
    def forward_engine(self) -> str:
        """The name, in :meth:`forward_engines`, of the engine forward-only batches run on: the
        framework, the exact engine, or the reduced-precision one (``openvino``; ``openvino-bf16``
        where OpenVINO in f32 is the exact engine)."""
        if self._fast is None:
            return self.framework
        name = self.forward_path.engine
        if self._fast is not self._exact and name == self.exact_engine:
            return f"{name}-{self.forward_path.precision}"
        return name

    def forward_engines(self) -> dict[str, Callable[[FloatArray], FloatArray]]:
        """Every engine this model's probabilities can come from, name -> one-batch predict
        function (the framework's own, the exact fast path's (:attr:`exact_engine`) when it is
        on, and the bf16 one when it runs (:attr:`forward_engine`)); the benchmark times each."""
        fast = self._forward_engine()
        engines = {self.framework: self._predict_batch}
        if self._exact is not None:
            engines[self.exact_engine or "exact"] = self._exact._predict_batch
        if fast is not self and fast is not self._exact:
            engines[self.forward_engine] = fast._predict_batch
        return engines

    # --- the framework-specific part -------------------------------------------------------
    @abstractmethod
    def _predict_batch(self, x: FloatArray) -> FloatArray:
        """Probabilities (n, K) for one batch (n, H, W), in inference mode."""

    @abstractmethod
    def _scores_batch(self, x: FloatArray) -> FloatArray:
        """Explained scores (n, K) for one batch (see the module docstring), in inference mode."""

    def _outputs_batch(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(probabilities, explained scores) of one batch; a format overrides it to take both
        from one forward pass (:meth:`outputs`: the fast path's parity check, the faithfulness
        curves on the log-odds)."""
        return self._predict_batch(x), self._scores_batch(x)

    def layer_gradients(self, x: FloatArray, targets: npt.NDArray[np.int64], *,
                        layer: str | None = None) -> LayerGradients:
        """Activations and gradients of ``layer`` (default: the configured target layer) for
        the explained score of ``targets[i]`` on row ``i``. Backpropagates to the layer only.
        (capability ``layer_gradients``)"""
        raise NotImplementedError(f"{self.framework} models give no layer gradients")

    def input_gradients(self, x: FloatArray, targets: npt.NDArray[np.int64]) -> tuple[FloatArray, FloatArray]:
        """(d score / d x: (N, H, W) float32, scores: (N,) float32) for each row's target
        (capability ``input_gradients``)."""
        raise NotImplementedError(f"{self.framework} models give no input gradients")

    def embeddings(self, x: np.ndarray, *, layer: str | None = None,
                   batch_size: int | None = None) -> FloatArray:
        """The activations of ``layer`` (default: the target layer) averaged over space,
        (N, C) float32: the features the familiarity check describes. Taken through
        :meth:`layer_gradients` (capability ``layer_gradients``), whose backward pass stops at
        the layer, so it costs about one forward pass."""
        def pooled(batch: FloatArray) -> FloatArray:
            grads = self.layer_gradients(batch, np.zeros(len(batch), np.int64), layer=layer)
            return grads.activations.mean(axis=(2, 3))

        return self._batched(pooled, x, batch_size, None)

    def layer_output_shape(self, layer: str) -> tuple[int, ...]:
        """Shape of ``layer``'s output for one input, channels first, e.g. (C, h, w)."""
        raise NotImplementedError(f"{self.framework} models have no addressable layers")

    def randomized(self, n_layers: int, *, seed: int = 0) -> ModelHandle:
        """A copy whose last ``n_layers`` parameterised layers are re-initialised (for the
        model-parameter randomisation test; capability ``randomize``)."""
        raise NotImplementedError(f"{self.framework} models cannot be re-initialised")

    def layers(self) -> list[tuple[str, str]]:
        """(name, type) of every layer a ``target_layer`` can name."""
        return []

    def raw_outputs(self, x: FloatArray) -> FloatArray:
        """The network's own output for feature planes (N, H, W), whatever its shape (e.g.
        (N, K, H, W) logits of a segmenter), float32, in inference mode."""
        raise NotImplementedError(f"{self.framework} models give no raw outputs")

    @property
    def native(self) -> Any:
        """The framework's own model object (for library baselines), or None."""
        return None

    def method_note(self, method: Any) -> str:
        """A note on what ``method`` (a :class:`~xai_platform.explainers.MethodInfo`) computes
        on this model beyond its description, for the explanation's notes ("" for none)."""
        return ""

    @property
    def capabilities(self):
        """What this model can do (its format's capabilities)."""
        from .formats import get_format

        return get_format(self.framework).capabilities_for(self.spec)

    def coalition_evaluator(self, x: FloatArray, baseline: FloatArray, segments: np.ndarray
                            ) -> Callable[[np.ndarray], FloatArray]:
        """A function: coalitions (b, M) bool -> probabilities (b, K), where feature ``m`` of
        ``segments`` (H, W) keeps ``x`` where True and takes ``baseline`` where False. This
        default builds each batch in NumPy; a format with ``device_batches`` builds it on its
        device."""
        def evaluate(z: np.ndarray) -> FloatArray:
            batch = np.where(z[:, segments], x[None], baseline[None]).astype(np.float32)
            return self.predict(batch, batch_size=len(batch))

        return evaluate

    # --- shared ------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, int]:
        return self.spec.input_shape

    def check_batch(self, x: np.ndarray) -> FloatArray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"model '{self.spec.id}' takes (N, {self.input_shape[0]}, "
                             f"{self.input_shape[1]}) feature planes, got {x.shape}")
        return np.ascontiguousarray(x)

    def _batched(self, fn: Callable[[FloatArray], FloatArray], x: np.ndarray,
                 batch_size: int | None, progress: Callable[[int, int], None] | None) -> FloatArray:
        x = self.check_batch(x)
        size = batch_size or self.default_batch_size
        out = []
        for start in range(0, len(x), size):
            out.append(fn(x[start:start + size]))
            if progress is not None:
                progress(min(start + size, len(x)), len(x))
        return np.concatenate(out, axis=0).astype(np.float32, copy=False)

    def predict(self, x: np.ndarray, *, batch_size: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> FloatArray:
        """Class probabilities (N, K) float32 for feature planes (N, H, W), in batches (through
        ONNX Runtime when the fast path is on, see :meth:`use_fast_forward`)."""
        return self._batched(self._forward_engine()._predict_batch, x, batch_size, progress)

    def scores(self, x: np.ndarray, *, batch_size: int | None = None) -> FloatArray:
        """Explained scores (N, K) float32, e.g. logits, before any calibration (training and
        calibration use these; ONNX Runtime when the fast path is on)."""
        return self._batched(self._forward_engine()._scores_batch, x, batch_size, None)

    def outputs(self, x: np.ndarray, *, batch_size: int | None = None
                ) -> tuple[FloatArray, FloatArray]:
        """(:meth:`predict`, :meth:`scores`) of feature planes (N, H, W), each (N, K) float32:
        from one forward pass per batch where the engine gives both
        (:attr:`outputs_in_one_pass`), else from two."""
        x = self.check_batch(x)
        engine, size = self._forward_engine(), batch_size or self.default_batch_size
        parts = [engine._outputs_batch(x[i:i + size]) for i in range(0, len(x), size)]
        return tuple(np.concatenate([part[k] for part in parts]).astype(np.float32, copy=False)
                     for k in (0, 1))  # type: ignore[return-value]

    @property
    def outputs_in_one_pass(self) -> bool:
        """Whether :meth:`outputs` costs one forward pass a row (the forward engine takes both
        from the same raw outputs), not two."""
        return type(self._forward_engine())._outputs_batch is not ModelHandle._outputs_batch
