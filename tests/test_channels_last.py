"""PyTorch networks with 2-D convolutions run channels-last on the CPU (``app.channels_last``,
:meth:`TorchHandle.use_channels_last`): the explanations a user sees stay those of the
default layout, the ONNX cache keeps its key, and networks without 2-D convolutions are left as
they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MODELS, model_entry, needs_torch, write_config

pytestmark = needs_torch

#: a one-channel input and a 1x1 convolution: weights whose default strides already count as
#: channels-last, so a conversion by ``contiguous`` would leave them in the other layout
ONE_CHANNEL = model_entry(id="tiny-densenet", name="Tiny DenseNet", modality="xray",
                          architecture="densenet121", target_layer="features.norm5",
                          labels=["normal", "lesion"], output="logits", arch_args={},
                          input={"size": 32, "channels": 1, "normalize": "imagenet"})
WAVE = model_entry(id="tiny-wave", architecture="rawnet2_slim", target_layer="blocks.2",
                   arch_args={"n_filters": 4, "kernel_size": 33, "widths": [4, 4, 8], "gru": 8},
                   input={"kind": "waveform", "sample_rate": 8000, "duration": 0.5,
                          "n_fft": 256, "hop_length": 64, "n_mels": 16, "fmax": 4000.0})


def _manager(tmp_path: Path, channels_last: bool, models: list[dict]):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    path = write_config(tmp_path / f"cl-{channels_last}.yaml", models,
                        {"channels_last": channels_last})
    return ModelManager(load_config([path], base=None), device="cpu", fast_forward=False)


def _pair(tmp_path: Path, model_id: str, models: list[dict]):
    return (_manager(tmp_path, False, models).get(model_id),
            _manager(tmp_path, True, models).get(model_id))


@pytest.mark.parametrize("model_id", ["tiny-torch-xray", "tiny-torch-audio", "tiny-densenet"])
def test_channels_last_weights_give_the_same_explanations(tmp_path, model_id):
    from xai_platform import explainers

    default, fast = _pair(tmp_path, model_id, [*TINY_MODELS[:2], ONE_CHANNEL])
    assert not default.channels_last and fast.channels_last
    for name, weight in fast.net.named_parameters():
        if weight.ndim == 4:  # every 4-D weight, the 1x1 and one-channel ones included
            assert weight.stride()[1] == 1, name
    assert default.weights_fingerprint() == fast.weights_fingerprint()  # the ONNX cache's key

    x = np.random.default_rng(0).random(default.input_shape, dtype=np.float32)
    if default.spec.modality == "audio":
        x = x * -80.0
    target = 1
    for method in ("gradcam", "saliency", "integrated_gradients"):
        want = explainers.run(method, default, x, target=target).attribution.heatmap
        got = explainers.run(method, fast, x, target=target).attribution.heatmap
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max(),
                                   err_msg=method)
    np.testing.assert_allclose(fast.predict(x[None]), default.predict(x[None]), atol=1e-6)


def test_a_network_without_2d_convolutions_keeps_its_layout(tmp_path):
    handle = _manager(tmp_path, True, [WAVE]).get("tiny-wave")
    assert not handle.channels_last
    assert all(p.is_contiguous() for p in handle.net.parameters())
