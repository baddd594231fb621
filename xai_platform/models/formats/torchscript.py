"""TorchScript models (``framework: torchscript``, ``architecture: torchscript``): one file
saved by ``torch.jit.save`` of a scripted or traced module, loaded with ``torch.jit.load``.

A ScriptModule runs like any PyTorch module (predictions, batches built on the GPU, gradients
with respect to the input), but PyTorch refuses forward hooks on ScriptModules
("register_forward_hook is not supported on ScriptModules"), so the activation of an inner
layer cannot be captured: Grad-CAM and Grad-CAM++ are listed as not applicable. Script modules
keep no ``reset_parameters``; the sanity check re-initialises their convolution and linear
weights as PyTorch's defaults do (Kaiming-uniform, a = sqrt(5)).

The archive holds TorchScript code, which runs in the TorchScript interpreter (no Python from
the file is executed); load archives from sources you trust as you would any program.
torch is imported when the first model loads, never by importing this file.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any

from ...config import ModelSpec
from ...errors import ConfigError, ModelUnavailableError, first_line
from ..handle import Calibration
from . import torch as torch_format
from .base import Capabilities, ModelFormat, register_format

ARCHITECTURE = "torchscript"
SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")


class TorchScriptHandle(torch_format.TorchHandle):
    framework = "torchscript"

    def layer_gradients(self, x, targets, *, layer=None):
        raise NotImplementedError("TorchScript modules accept no forward hooks, so inner "
                                  "layers cannot be captured")

    def reference_gradcam(self, x, target):
        raise NotImplementedError("pytorch-grad-cam needs forward hooks")

    def layer_output_shape(self, layer: str) -> tuple[int, ...]:
        raise NotImplementedError("TorchScript modules accept no forward hooks")

    def randomized(self, n_layers: int, *, seed: int = 0) -> TorchScriptHandle:
        torch = torch_format._torch()
        net = copy.deepcopy(self.net).cpu()
        layers = [m for _, m in net.named_modules()
                  if any(p.ndim >= 2 for _, p in m.named_parameters(recurse=False))]
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            with torch.no_grad():
                for module in layers[len(layers) - n_layers:]:
                    reinitialise(module)
        finally:
            torch.random.set_rng_state(state)
        return TorchScriptHandle(self.spec, net, device=self.device, untrained=True,
                                 default_batch_size=self.default_batch_size,
                                 calibration=self.calibration)


def reinitialise(module: Any) -> None:
    """PyTorch's default initialisation of a Conv / Linear layer, for a module whose
    ``reset_parameters`` was not compiled: weight Kaiming-uniform (a = sqrt(5)), bias uniform
    in +-1/sqrt(fan_in)."""
    nn = torch_format._torch().nn
    params = dict(module.named_parameters(recurse=False))
    weight = params.get("weight")
    if weight is None or weight.ndim < 2:
        return
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    bias = params.get("bias")
    if bias is not None:
        fan_in = weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
        nn.init.uniform_(bias, -bound, bound)


def load_script(path: Path | None) -> Any:
    torch = torch_format._torch()
    if path is None or path.suffix not in SUFFIXES:
        raise ModelUnavailableError(f"{path}: a TorchScript model is one file saved with "
                                    "torch.jit.save (.pt, .pth, .ts).")
    if not path.is_file():
        raise ModelUnavailableError(f"weights file {path} not found.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated"
            return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        first = first_line(exc)
        raise ModelUnavailableError(f"{path} is not a TorchScript archive: {first[:200]} (a "
                                    "state_dict belongs to framework: torch).") from None


@register_format
class TorchScriptFormat(ModelFormat):
    """A scripted or traced module saved with ``torch.jit.save``."""

    name = "torchscript"
    label = "TorchScript"
    modules = ("torch",)
    install_hint = "pip install torch (see SETUP.md for the build to pick)"
    capabilities = Capabilities(device_batches=True, input_gradients=True, randomize=True)

    def check_spec(self, spec: ModelSpec) -> None:
        where = f"{spec.source} (model '{spec.id}')"
        if spec.architecture != ARCHITECTURE:
            raise ConfigError(f"'{spec.architecture}' is not a TorchScript architecture.",
                              source=where, key="architecture",
                              fix=f"write architecture: {ARCHITECTURE} (the network is in the file).")
        if spec.weights is None:
            raise ConfigError("a TorchScript model needs its file.", source=where, key="weights",
                              fix="set weights: to the file saved by torch.jit.save.")
        if spec.target_layer:
            raise ConfigError("TorchScript modules accept no forward hooks, so a target layer "
                              "is never used.", source=where, key="target_layer",
                              fix="remove target_layer, or export a state_dict and use "
                                  "framework: torch for Grad-CAM.")

    def check_untrusted(self, spec: ModelSpec) -> None:
        raise ConfigError("a TorchScript file is a program (TorchScript code), not plain "
                          "weights, so an uploaded one is not run.",
                          source=f"{spec.source} (model '{spec.id}')", key="framework",
                          fix="upload a state_dict (framework: torch) or an ONNX export, or "
                              "check the file with `python -m xai_platform check-model`.")

    def load(self, spec: ModelSpec, *, device: str, default_batch_size: int = 32,
             calibration: Calibration | None = None) -> TorchScriptHandle:
        net = load_script(spec.weights)
        return TorchScriptHandle(spec, net, device=torch_format.resolve_device(device),
                                 untrained=False, default_batch_size=default_batch_size,
                                 calibration=calibration)
