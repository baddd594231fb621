"""Test models whose output depends on one known region of the input only.

x -> 3x3 conv (positive weights) -> ReLU -> multiply by a fixed region mask (layer ``gate``,
the Grad-CAM target) -> global average pooling -> [-s, s] logits. Outside the region nothing
reaches the output, so a faithful explanation puts its mass inside the region (give or take the
one-pixel reach of the 3x3 convolution).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from xai_platform.config import ModelSpec, parse_model
from xai_platform.modalities.xray import ImageInput

SIZE = 32
REGION = (8, 20, 12, 24)  # rows r0:r1, cols c0:c1, aligned to 4-pixel patches


def region_mask(shape=(SIZE, SIZE), region=REGION, *, dilate: int = 0) -> np.ndarray:
    r0, r1, c0, c1 = region
    m = np.zeros(shape, dtype=bool)
    m[max(0, r0 - dilate):r1 + dilate, max(0, c0 - dilate):c1 + dilate] = True
    return m


def region_spec(framework: str, modality: str) -> ModelSpec:
    if modality == "audio":
        inp = {"sample_rate": 8000, "duration": (SIZE - 1) * 64 / 8000, "n_fft": 256,
               "hop_length": 64, "n_mels": SIZE, "fmin": 0.0, "fmax": 4000.0, "top_db": 80.0,
               "normalize": "db"}
    else:
        inp = {"size": SIZE, "channels": 1, "normalize": "unit"}
    entry = {"id": f"region-{framework}-{modality}", "name": f"Region model ({framework})",
             "framework": framework, "modality": modality,
             "architecture": "custom_cnn" if framework == "torch" else "keras_cnn",
             "weights": None, "labels": ["other", "region"], "output": "logits",
             "target_layer": "gate", "input": inp}
    spec = parse_model(entry, source="tests/region_models.py")
    assert spec.input_shape == (SIZE, SIZE), spec.input_shape
    return spec


def region_input(modality: str, seed: int = 0) -> np.ndarray:
    """Textured input with a brighter square on the region (so superpixels can follow it)."""
    rng = np.random.default_rng(seed)
    x = 0.3 + 0.2 * rng.random((SIZE, SIZE))
    x[region_mask()] += 0.4
    x = x.astype(np.float32)
    return (x - 1.0) * 80.0 if modality == "audio" else x  # audio: dB in [-80, 0]


def torch_region_handle(modality: str):
    import torch
    from torch import nn

    from xai_platform.models.formats.torch import TorchHandle

    class Gate(nn.Module):
        def __init__(self, mask: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("mask", torch.from_numpy(mask.astype(np.float32))[None, None])

        def forward(self, a: torch.Tensor) -> torch.Tensor:
            return a * self.mask

    class RegionNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
            with torch.no_grad():
                self.features[0].weight.copy_(torch.linspace(0.5, 1.5, 4).view(4, 1, 1, 1)
                                              * torch.full((4, 1, 3, 3), 1 / 9))
                self.features[0].bias.zero_()
            self.gate = Gate(region_mask())
            self.scale = 40.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.gate(self.features(x)).mean(dim=(1, 2, 3)) * self.scale - 2.0
            return torch.stack([-s, s], dim=1)

    spec = region_spec("torch", modality)
    return TorchHandle(spec, RegionNet(), device="cpu", untrained=False, default_batch_size=64)


def keras_region_handle(modality: str):
    import keras

    from xai_platform.models.formats.keras import KerasHandle

    class Gate(keras.layers.Layer):
        def __init__(self, mask: np.ndarray, **kw) -> None:
            super().__init__(**kw)
            self.mask = keras.ops.convert_to_tensor(mask.astype(np.float32)[None, :, :, None])

        def call(self, a):
            return a * self.mask

    inputs = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")
    a = Gate(region_mask(), name="gate")(conv(inputs))
    s = keras.layers.GlobalAveragePooling2D()(a)
    s = keras.layers.Dense(1, name="sum")(s)
    logits = keras.layers.Concatenate()([keras.layers.Rescaling(-1.0, offset=2.0)(s),
                                         keras.layers.Rescaling(1.0, offset=-2.0)(s)])
    model = keras.Model(inputs, logits)
    kernel = (np.linspace(0.5, 1.5, 4)[None, None, None, :] * np.full((3, 3, 1, 4), 1 / 9))
    conv.set_weights([kernel.astype(np.float32), np.zeros(4, np.float32)])
    model.get_layer("sum").set_weights([np.full((4, 1), 10.0, np.float32), np.zeros(1, np.float32)])
    spec = region_spec("keras", modality)
    return KerasHandle(spec, model, device="/CPU:0", untrained=False, default_batch_size=64)


def region_handle(framework: str, modality: str):
    return (torch_region_handle if framework == "torch" else keras_region_handle)(modality)


def with_spec(handle, **changes):
    handle.spec = dataclasses.replace(handle.spec, **changes)
    return handle


__all__ = ["ImageInput", "REGION", "SIZE", "region_handle", "region_input", "region_mask",
           "region_spec", "with_spec"]


def wrapped_network(handle):
    """A torch handle's network as the reference libraries (pytorch-grad-cam, captum, Quantus)
    see it: (N, 1, H, W) -> raw outputs."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.adapter = handle.net, handle.adapter

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(self.adapter(x[:, 0]))

    return Wrapped().eval()


def exact_shapley(game, m: int) -> np.ndarray:
    """Shapley values (m,) of ``game`` (bool coalitions (n, m) -> values (n,)) by enumerating
    every coalition: the reference for the sampled estimators."""
    from itertools import combinations
    from math import factorial

    phi = np.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for k in range(m):
            for subset in combinations(others, k):
                z = np.zeros(m, bool)
                z[list(subset)] = True
                with_i = z.copy()
                with_i[i] = True
                w = factorial(k) * factorial(m - k - 1) / factorial(m)
                phi[i] += w * (game(with_i[None])[0] - game(z[None])[0])
    return phi


def assert_same_map(fast, plain, x: np.ndarray, method: str, params: dict) -> None:
    """``method`` (LIME or SHAP, seeded) gives the same map on the fast-path handle as on the
    framework's: the same evaluations, every pixel within 1e-4 of the map's largest value
    (measured on ONNX Runtime: at most 1.2e-5, probabilities differing by ~1e-7), and the same
    ranking."""
    from xai_platform import explainers
    from xai_platform.evaluation.metrics import spearman

    a = explainers.run(method, fast, x, target=1, params=params, seed=3)
    b = explainers.run(method, plain, x, target=1, params=params, seed=3)
    assert a.attribution.n_evaluations == b.attribution.n_evaluations
    top = float(np.abs(b.attribution.heatmap).max())
    assert top > 1e-3
    np.testing.assert_allclose(a.attribution.heatmap, b.attribution.heatmap, atol=1e-4 * top,
                               rtol=0)
    assert spearman(a.attribution.heatmap, b.attribution.heatmap) > 0.999
