"""PyTorch models (``framework: torch``): a registered builder and a ``state_dict`` loaded with
``weights_only=True``, and the capture of activations and gradients.

torch is imported when the first PyTorch model loads or is checked, never by importing this
file, so the format registry stays framework-free.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import importlib
import json
import pickle
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

if TYPE_CHECKING:
    import torch
    from torch import nn


def _torch() -> Any:
    import torch  # noqa: F811 - the framework, imported on first use

    return torch


@functools.cache
def _ops() -> SimpleNamespace:
    torch = _torch()
    return SimpleNamespace(
        softmax=lambda t: torch.softmax(t, dim=-1), sigmoid=torch.sigmoid, log=torch.log,
        clip=lambda t, lo, hi: torch.clamp(t, lo, hi), concat=lambda ts: torch.cat(ts, dim=-1))


def resolve_device(requested: str = "auto") -> str:
    torch = _torch()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError(f"device '{requested}' was asked for but PyTorch sees no CUDA "
                                    "GPU; use --device cpu or install a CUDA build (SETUP.md).")
    return requested


@functools.cache
def _adapter_class() -> type:
    nn = _torch().nn

    class _InputAdapter(nn.Module):
        def __init__(self, spec: ModelSpec) -> None:
            super().__init__()
            torch = _torch()
            self.waveform = bool(getattr(spec.input, "waveform", False))
            self.channels = c = spec.input.channels
            scale, shift = normalization(spec)
            self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(1, c, 1, 1))
            self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32).view(1, c, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.waveform:  # (N, 1, n_samples) -> (N, n_samples), as waveform nets take it
                return x[:, 0] * self.scale[0, 0, 0] + self.shift[0, 0, 0]
            x = x.unsqueeze(1).expand(-1, self.channels, -1, -1)
            return x * self.scale + self.shift

    return _InputAdapter


def InputAdapter(spec: ModelSpec) -> nn.Module:  # noqa: N802 - used as a class
    """(N, H, W) feature planes -> (N, C, H, W) network input, normalised as the config says
    (:func:`xai_platform.models.handle.normalization`); a waveform model's (N, 1, n_samples)
    -> (N, n_samples)."""
    return _adapter_class()(spec)


def layer_names(net: nn.Module) -> list[str]:
    return [name for name, _ in net.named_modules() if name]


def find_layer(net: nn.Module, name: str, *, spec: ModelSpec) -> nn.Module:
    try:
        return net.get_submodule(name)
    except AttributeError:
        close = difflib.get_close_matches(name, layer_names(net), n=3)
        hint = f"e.g. {', '.join(close)}" if close else "run `python -m xai_platform layers --model ID`"
        raise ConfigError(f"layer '{name}' does not exist in {spec.architecture}.",
                          source=f"{spec.source} (model '{spec.id}')", key="target_layer",
                          fix=f"name a module by its dotted path ({hint}).") from None


@contextmanager
def capture(layer: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Capture ``layer``'s output as a fresh leaf that gradients stop at.

    The hook replaces the output by ``leaf.clone()``: backpropagation from the score ends at the
    leaf (no gradient to the input or earlier layers), and an in-place op after the layer
    (DenseNet's ``F.relu(..., inplace=True)``, AlexNet's ``ReLU(inplace=True)``) modifies the
    clone, never the captured activation. The hook is removed on exit, also after an error.
    """
    torch = _torch()
    store: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"target layer returns {type(output).__name__}, not a tensor")
        leaf = output.detach().requires_grad_(True)
        store["activation"] = leaf
        return leaf.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


class TorchHandle(ModelHandle):
    framework = "torch"

    def __init__(self, spec: ModelSpec, net: nn.Module, *, device: str, untrained: bool,
                 default_batch_size: int = 32, calibration: Calibration | None = None) -> None:
        super().__init__(spec, device=device, untrained=untrained,
                         default_batch_size=default_batch_size, calibration=calibration)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net.to(device)
        self.adapter = InputAdapter(spec).to(device)
        #: the 4-D weights are stored channels-last (:meth:`use_channels_last`)
        self.channels_last = False
        self._probs, self._scores = output_transforms(
            spec.output, _ops(), temperature=self.calibration.temperature)

    @property
    def native(self) -> nn.Module:
        return self.net

    def use_channels_last(self) -> bool:
        """On the CPU, store the 4-D weights of a network with 2-D convolutions channels-last
        (``torch.channels_last``): oneDNN's convolutions then run without reordering each
        layer's input and output, and PyTorch carries the layout through the network from the
        first convolution (its output follows the weight's layout). Measured with two threads,
        one gradient row: DenseNet-121 at 224 px 85 -> 61 ms, the shipped 2-D CNNs 1.2-1.6x
        (docs/BENCHMARKS.md). The same operators on the same numbers in another order: the
        gradients agree to float rounding (as they do between thread counts), except where a
        max-pooling window or a ReLU is at a tie, whose gradient either side is a valid one.
        Networks without 2-D convolutions (the Whisper read-out, RawNet2) are left as they are:
        their layers gain nothing. The weights' bytes, and so the ONNX cache's key, do not
        change (:meth:`weights_fingerprint` hashes them contiguous)."""
        torch = _torch()
        if self.channels_last:
            return True
        if self.device != "cpu" or not any(isinstance(m, torch.nn.Conv2d)
                                           for m in self.net.modules()):
            return False
        with self.lock, torch.no_grad():
            for tensor in [*self.net.parameters(), *self.net.buffers()]:
                # 4-D only (Conv3d / Conv1d weights keep their layout); ``to``, not
                # ``contiguous``: a 1x1 kernel's or a one-channel input's weight counts as
                # channels-last either way and ``contiguous`` leaves its strides, but PyTorch
                # reads them to choose each convolution's layout (a layer in one layout between
                # two in the other reorders its input and output: slower than neither)
                if tensor.ndim == 4:
                    tensor.data = tensor.data.to(memory_format=torch.channels_last)
        self.channels_last = True
        return True

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        torch = _torch()
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapter(x))

    def _predict_batch(self, x: FloatArray) -> FloatArray:
        torch = _torch()
        with self.lock, torch.inference_mode():
            return self._probs(self._raw(self._tensor(x))).float().cpu().numpy()

    def _scores_batch(self, x: FloatArray) -> FloatArray:
        torch = _torch()
        with self.lock, torch.inference_mode():
            return self._scores(self._raw(self._tensor(x))).float().cpu().numpy()

    def _outputs_batch(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        torch = _torch()
        with self.lock, torch.inference_mode():
            raw = self._raw(self._tensor(x))
            return (self._probs(raw).float().cpu().numpy(),
                    self._scores(raw).float().cpu().numpy())

    def coalition_evaluator(self, x: FloatArray, baseline: FloatArray, segments: np.ndarray
                            ) -> Callable[[np.ndarray], FloatArray]:
        """On a GPU the perturbed batch is built there: only the 0/1 coalitions cross the bus."""
        if self.device.startswith("cuda"):
            return self.device_coalition_evaluator(x, baseline, segments)
        return super().coalition_evaluator(x, baseline, segments)

    def device_coalition_evaluator(self, x: FloatArray, baseline: FloatArray,
                                   segments: np.ndarray) -> Callable[[np.ndarray], FloatArray]:
        """:meth:`coalition_evaluator` with each batch built by torch on the model's device."""
        torch = _torch()
        xt, bt = (torch.from_numpy(a).to(self.device) for a in (x, baseline))
        seg = torch.from_numpy(segments).to(self.device)

        def evaluate(z: np.ndarray) -> FloatArray:
            keep = torch.from_numpy(z).to(self.device)[:, seg]  # (b, H, W)
            with self.lock, torch.inference_mode():
                return self._probs(self._raw(torch.where(keep, xt, bt))).float().cpu().numpy()

        return evaluate

    def layers(self) -> list[tuple[str, str]]:
        return [(name, type(m).__name__) for name, m in self.net.named_modules() if name]

    # --- the fast path's export (capability onnx_export) ---------------------------------------
    def weights_fingerprint(self) -> str:
        """sha256 of what the exported graph depends on: every parameter and buffer as loaded
        (names, dtypes, shapes, bytes), the architecture and its arguments, the input shape,
        and the torch and package versions. Keys the ONNX cache, so an untrained network (seeded)
        and a randomised copy are keyed as well as a weights file. Tensors a network leaves out
        of its own ``state_dict`` (the Whisper read-out's frozen encoder) are hashed too: the
        graph holds them."""
        from ... import __version__

        torch = _torch()
        digest = hashlib.sha256(json.dumps(
            [EXPORT_VERSION, __version__, torch.__version__, type(self.net).__qualname__,
             self.spec.architecture, dict(self.spec.arch_args), self.spec.input.channels,
             list(self.spec.input_shape)], sort_keys=True, default=str).encode())
        with self.lock:
            for name, t in torch.nn.Module.state_dict(self.net).items():
                t = t.detach().to("cpu").contiguous()
                digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def export_onnx(self, path: Path) -> None:
        """Write the network, (N, C, H, W) float32 (a waveform model: (N, n_samples)) -> raw
        outputs (N, K), to ``path`` as ONNX with a dynamic batch axis. torch 2.14's default
        exporter (``dynamo=True``) needs onnxscript, which is not installed; the
        TorchScript-based one exports our networks (measured: DenseNet-121 at 224 px in 5 s
        against 20 s, the same ONNX Runtime speed and parity), so it is used, its deprecation
        notice silenced. A network that computes differently for the export says so through
        ``torch.onnx.is_in_onnx_export()`` (the Whisper read-out's STFT)."""
        torch = _torch()
        example = example_input(self.spec, device=self.device).repeat_interleave(2, dim=0)
        with self.lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(self.net, (example,), str(path), dynamo=False,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "n"}, "output": {0: "n"}},
                              opset_version=EXPORT_OPSET)

    def raw_outputs(self, x: FloatArray) -> FloatArray:
        torch = _torch()
        with self.lock, torch.inference_mode():
            return self._raw(self._tensor(np.asarray(x, dtype=np.float32))).float().cpu().numpy()

    def reference_gradcam(self, x: FloatArray, target: int) -> FloatArray:
        """Grad-CAM of one plane (H, W) computed by pytorch-grad-cam the way it is usually
        called (backpropagating to the input): the library reference for tests and the bench.
        pytorch-grad-cam indexes the raw outputs, so a one-logit model has only index 0."""
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        torch = _torch()
        handle = self

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net, self.adapter = handle.net, handle.adapter

            def forward(self, t):
                return self.net(self.adapter(t[:, 0]))

        layer = find_layer(self.net, self.spec.target_layer, spec=self.spec)
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
        with self.lock:
            for p in self.net.parameters():
                p.requires_grad_(True)
            try:
                with GradCAM(model=Wrapped().eval(), target_layers=[layer]) as cam:
                    out = cam(tensor.to(self.device), targets=[ClassifierOutputTarget(
                        min(int(target), self.spec.num_outputs - 1))])
            finally:
                for p in self.net.parameters():
                    p.requires_grad_(False)
        return np.asarray(out[0], dtype=np.float32)

    def _in_gradient_batches(self, fn: Callable[..., Any], x: np.ndarray,
                             targets: Any) -> list[Any]:
        """``fn(rows, their targets)`` over ``x`` in batches of at most
        :attr:`gradient_batch_size` rows (each row's gradient depends on that row only)."""
        targets = np.asarray(targets, dtype=np.int64)
        step = max(1, int(self.gradient_batch_size))
        return [fn(x[i:i + step], targets[i:i + step]) for i in range(0, len(x), step)]

    def layer_gradients(self, x, targets, *, layer=None) -> LayerGradients:
        x = self.check_batch(x)
        if len(x) > self.gradient_batch_size:
            parts = self._in_gradient_batches(
                lambda rows, t: self.layer_gradients(rows, t, layer=layer), x, targets)
            return LayerGradients(*(np.concatenate([getattr(p, f) for p in parts])
                                    for f in ("activations", "gradients", "scores")))
        name = layer or self.spec.target_layer
        if name is None:
            raise ConfigError("no target_layer is declared.", source=self.spec.source,
                              key="target_layer", fix="declare a convolutional layer.")
        module = find_layer(self.net, name, spec=self.spec)
        torch = _torch()
        t = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=self.device)
        with self.lock, torch.enable_grad(), capture(module) as store:
            scores = self._scores(self._raw(self._tensor(x)))
            picked = scores.gather(1, t[:, None])[:, 0]
            act = store["activation"]
            (grads,) = torch.autograd.grad(picked.sum(), act)
        if act.ndim == 3:  # a 1-D convolution (N, C, L): a feature map one row high
            act, grads = act[:, :, None], grads[:, :, None]
        if act.ndim != 4:
            raise ConfigError(f"layer '{name}' outputs shape {tuple(act.shape)}, not a "
                              "convolutional feature map (N, C, h, w).", source=self.spec.source,
                              key="target_layer", fix="name a convolutional layer or block.")
        return LayerGradients(act.detach().float().cpu().numpy(),
                              grads.detach().float().cpu().numpy(),
                              picked.detach().float().cpu().numpy())

    def input_gradients(self, x, targets):
        x = self.check_batch(x)
        if len(x) > self.gradient_batch_size:
            parts = self._in_gradient_batches(self.input_gradients, x, targets)
            return (np.concatenate([g for g, _ in parts]),
                    np.concatenate([scores for _, scores in parts]))
        torch = _torch()
        t = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=self.device)
        with self.lock, torch.enable_grad():
            xt = self._tensor(x).requires_grad_(True)
            picked = self._scores(self._raw(xt)).gather(1, t[:, None])[:, 0]
            (grads,) = torch.autograd.grad(picked.sum(), xt)
        return grads.float().cpu().numpy(), picked.detach().float().cpu().numpy()

    def layer_output_shape(self, layer: str) -> tuple[int, ...]:
        return layer_output_shape(self.net, self.spec, layer)

    def randomized(self, n_layers: int, *, seed: int = 0) -> TorchHandle:
        torch = _torch()
        # re-initialised in PyTorch's default layout, so the seed gives the same weights with
        # app.channels_last on or off: torch's own layers draw the same either way, but a
        # tensor's uniform_ fills it in storage order (other values in a channels-last one)
        net = copy.deepcopy(self.net).cpu().to(memory_format=torch.contiguous_format)
        layers = [m for m in net.modules() if hasattr(m, "reset_parameters")
                  and any(True for _ in m.parameters(recurse=False))]
        gen_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            for module in layers[len(layers) - n_layers:]:
                module.reset_parameters()
        finally:
            torch.random.set_rng_state(gen_state)
        fresh = type(self)(self.spec, net, device=self.device, untrained=True,
                           default_batch_size=self.default_batch_size,
                           calibration=self.calibration)
        fresh.gradient_batch_size = self.gradient_batch_size
        if self.channels_last:
            fresh.use_channels_last()
        return self.derive_fast_forward(fresh)


#: the ONNX opset of exported graphs, and the version of the export (both key the cache)
EXPORT_OPSET = 18
EXPORT_VERSION = 1


def layer_output_shape(net: nn.Module, spec: ModelSpec, layer: str) -> tuple[int, ...]:
    """Output shape of ``layer`` for one input, found by a forward pass on the meta device."""
    torch = _torch()
    module = find_layer(net, layer, spec=spec)
    shapes: list[tuple[int, ...]] = []
    hook = module.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:]))
                                        if isinstance(out, torch.Tensor) else None)
    try:
        param = next(net.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            net(example_input(spec, device=device))
    finally:
        hook.remove()
    if not shapes:
        raise ConfigError(f"layer '{layer}' is never called in the forward pass.",
                          source=f"{spec.source} (model '{spec.id}')", key="target_layer",
                          fix="name a module the network's forward uses.")
    return shapes[0]


def example_input(spec: ModelSpec, *, device: Any = "cpu") -> torch.Tensor:
    """A zero network input for one example: (1, C, H, W), or (1, n_samples) for a waveform
    model (what :func:`InputAdapter` gives)."""
    torch = _torch()
    h, w = spec.input_shape
    if getattr(spec.input, "waveform", False):
        return torch.zeros(1, w, device=device)
    return torch.zeros(1, spec.input.channels, h, w, device=device)


#: ``architecture: package.module:callable`` of an installed package (no registered builder)
PACKAGE_CALLABLE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def check_package_callable(spec: ModelSpec) -> None:
    """Check the syntax of ``package.module:callable`` without importing anything."""
    if not PACKAGE_CALLABLE.match(spec.architecture):
        raise ConfigError(f"'{spec.architecture}' is not of the form package.module:callable.",
                          source=f"{spec.source} (model '{spec.id}')", key="architecture",
                          fix="write e.g. torchvision.models:resnet18 (arguments go in "
                              "arch_args).")


def package_builder(spec: ModelSpec) -> Callable[[ModelSpec], nn.Module]:
    """The builder of ``architecture: package.module:callable``: the module is imported with
    importlib (never ``eval``) and the callable called with ``arch_args`` as keywords."""
    module_name, _, attr = spec.architecture.partition(":")
    where = f"{spec.source} (model '{spec.id}')"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelUnavailableError(f"architecture '{spec.architecture}': module '{module_name}' "
                                    f"cannot be imported ({exc}); install the package that "
                                    "provides it.") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"'{module_name}' has no callable '{attr}'.", source=where,
                          key="architecture", fix="name a function or class of that module.")

    def build(spec: ModelSpec) -> nn.Module:
        try:
            net = fn(**dict(spec.arch_args))
        except TypeError as exc:
            raise ConfigError(f"{spec.architecture}(**arch_args) failed: {exc}.", source=where,
                              key="arch_args", fix="pass the callable's keyword arguments.") from None
        if not isinstance(net, _torch().nn.Module):
            raise ConfigError(f"{spec.architecture} returned {type(net).__name__}, not a "
                              "torch.nn.Module.", source=where, key="architecture",
                              fix="name a callable that builds a network.")
        return net

    return build


def _builder(spec: ModelSpec) -> Callable[[ModelSpec], nn.Module]:
    return package_builder(spec) if ":" in spec.architecture else get_builder(spec.architecture)


def build_network(spec: ModelSpec, *, seed: int = 0, meta: bool = False) -> nn.Module:
    """The architecture, randomly initialised from ``seed`` (so an untrained model is the same
    network every time), or on the meta device (shapes only, no memory) for verification."""
    builder = _builder(spec)
    torch = _torch()
    if meta:
        with torch.device("meta"):
            return builder(spec)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return builder(spec)
    finally:
        torch.random.set_rng_state(state)


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    torch = _torch()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {k.removeprefix("module."): v for k, v in obj.items()}
    raise ModelUnavailableError(f"{path} does not hold a state_dict (a mapping of parameter "
                                "names to tensors); save weights with torch.save(model.state_dict(), path).")


def load_weights(net: nn.Module, spec: ModelSpec, path: Path) -> None:
    torch = _torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelUnavailableError(f"weights file {path} not found.") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = first_line(exc)
        raise ModelUnavailableError(
            f"weights file {path} cannot be loaded safely (weights_only=True): {first[:200]}. "
            "Only plain state_dicts load; a file that pickles code is refused.") from None
    state = _state_dict(obj, path)
    expected = net.state_dict()
    wrong = [f"{name} is {list(t.shape)} in the file, {list(expected[name].shape)} in the "
             "architecture" for name, t in state.items()
             if name in expected and tuple(t.shape) != tuple(expected[name].shape)]
    if wrong:
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise ModelUnavailableError(
            f"weights file {path} does not fit architecture '{spec.architecture}': {wrong[0]}"
            f"{more}; check `arch_args`, `labels` and `input.channels` in the config entry.")
    missing, unexpected = [], []
    try:
        result = net.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as exc:
        raise ModelUnavailableError(f"weights file {path} does not fit architecture "
                                    f"'{spec.architecture}': {first_line(exc)[:240]}") from None
    if missing or unexpected:
        raise ModelUnavailableError(
            f"weights file {path} does not fit architecture '{spec.architecture}' "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); check `architecture`, "
            "`arch_args`, `labels` and `input.channels` in the config entry.")


def load(spec: ModelSpec, *, device: str, default_batch_size: int = 32,
         calibration: Calibration | None = None) -> TorchHandle:
    net = build_network(spec)
    if spec.weights is not None:
        load_weights(net, spec, spec.weights)
    return TorchHandle(spec, net, device=resolve_device(device), untrained=spec.weights is None,
                       default_batch_size=default_batch_size, calibration=calibration)


def verify(spec: ModelSpec) -> None:
    """Build the architecture on the meta device and check the target layer is a conv map."""
    if spec.target_layer is None:
        return
    try:
        net = build_network(spec, meta=True)
        shape = layer_output_shape(net, spec, spec.target_layer)
    except ConfigError:
        raise
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: use the CPU
        net = build_network(spec)
        shape = layer_output_shape(net, spec, spec.target_layer)
    if len(shape) not in (2, 3):  # (C, L) of a 1-D convolution, (C, h, w) of a 2-D one
        raise ConfigError(f"layer '{spec.target_layer}' outputs shape {shape}, not a "
                          "convolutional feature map (C, h, w) or (C, L).",
                          source=f"{spec.source} (model '{spec.id}')", key="target_layer",
                          fix="name a convolutional layer or block.")


@register_format
class TorchFormat(ModelFormat):
    """A registered PyTorch builder, or ``package.module:callable`` of an installed package
    (``architecture``, called with ``arch_args``), and its ``state_dict`` (``weights``)."""

    name = "torch"
    label = "PyTorch"
    modules = ("torch",)
    install_hint = "pip install torch torchvision (see SETUP.md for the build to pick)"
    capabilities = Capabilities(device_batches=True, layer_gradients=True, input_gradients=True,
                                randomize=True, reference_cam=True, onnx_export=True)

    def capabilities_for(self, spec: ModelSpec) -> Capabilities:
        """A raw-waveform network takes (N, n_samples), not the (N, C, H, W) planes the
        pytorch-grad-cam reference feeds it; its export takes the samples."""
        if getattr(spec.input, "waveform", False):
            from dataclasses import replace

            return replace(self.capabilities, reference_cam=False)
        return self.capabilities

    def check_spec(self, spec: ModelSpec) -> None:
        if ":" in spec.architecture:
            check_package_callable(spec)
        else:
            check_architecture(spec, self.name)

    def check_untrusted(self, spec: ModelSpec) -> None:
        if ":" in spec.architecture:
            raise ConfigError(f"'{spec.architecture}' would import and call code named by the "
                              "entry, which only a trusted config file may do.",
                              source=f"{spec.source} (model '{spec.id}')", key="architecture",
                              fix="use a registered architecture here, or check the entry with "
                                  "`python -m xai_platform check-model CONFIG.yaml`.")

    def load(self, spec: ModelSpec, *, device: str, default_batch_size: int = 32,
             calibration: Calibration | None = None) -> TorchHandle:
        return load(spec, device=device, default_batch_size=default_batch_size,
                    calibration=calibration)

    def verify(self, spec: ModelSpec) -> None:
        verify(spec)

    def build_network(self, spec: ModelSpec, *, seed: int = 0) -> nn.Module:
        return build_network(spec, seed=seed)
