"""Gradient batches of a PyTorch model are split into ``app.gradient_batch_size`` rows
(xai_platform/models/formats/torch.py): the same gradients as one big batch, no backward pass
over more rows than the setting, and the setting reaches every handle and its randomised copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_MODELS, needs_torch, write_config

pytestmark = needs_torch


def _handle(tmp_path: Path, rows: int, model_id: str = "tiny-torch-xray"):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    path = write_config(tmp_path / f"tiny-{rows}.yaml", TINY_MODELS[:2],
                        {"gradient_batch_size": rows})
    return ModelManager(load_config([path], base=None), device="cpu",
                        fast_forward=False).get(model_id)


def _batches_seen(handle) -> list[int]:
    seen: list[int] = []
    handle.net.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    return seen


@pytest.mark.parametrize("model_id", ["tiny-torch-xray", "tiny-torch-audio"])
def test_split_gradient_batches_give_the_gradients_of_one_batch(tmp_path, model_id):
    split, whole = _handle(tmp_path, 3, model_id), _handle(tmp_path, 64, model_id)
    rng = np.random.default_rng(0)
    x = rng.random((8, *split.input_shape), dtype=np.float32)
    if split.spec.modality == "audio":
        x = x * -80.0
    targets = np.array([0, 1] * 4)
    seen = _batches_seen(split)
    grads, scores = split.input_gradients(x, targets)
    assert seen == [3, 3, 2]
    expected_grads, expected_scores = whole.input_gradients(x, targets)
    np.testing.assert_allclose(grads, expected_grads, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-7)

    seen.clear()
    got, expected = split.layer_gradients(x, targets), whole.layer_gradients(x, targets)
    assert seen == [3, 3, 2]
    for field in ("activations", "gradients", "scores"):
        np.testing.assert_allclose(getattr(got, field), getattr(expected, field),
                                   rtol=1e-5, atol=1e-7)


def test_integrated_gradients_map_does_not_depend_on_the_gradient_batch(tmp_path):
    from xai_platform import explainers

    split, whole = _handle(tmp_path, 4), _handle(tmp_path, 64)
    x = np.random.default_rng(1).random(split.input_shape, dtype=np.float32)
    seen = _batches_seen(split)
    got = explainers.run("integrated_gradients", split, x, target=1, params={"n_steps": 10})
    assert max(seen) <= 4
    expected = explainers.run("integrated_gradients", whole, x, target=1,
                              params={"n_steps": 10})
    np.testing.assert_allclose(got.attribution.heatmap, expected.attribution.heatmap,
                               rtol=1e-5, atol=1e-8)


def test_the_setting_reaches_the_randomised_copy_and_is_checked(tmp_path):
    from xai_platform.config import load_config
    from xai_platform.errors import ConfigError

    handle = _handle(tmp_path, 5)
    assert handle.gradient_batch_size == 5
    assert handle.randomized(1, seed=0).gradient_batch_size == 5
    path = write_config(tmp_path / "bad.yaml", TINY_MODELS[:1], {"gradient_batch_size": 0})
    with pytest.raises(ConfigError, match="gradient_batch_size"):
        load_config([path], base=None)
