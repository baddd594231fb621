"""ModelManager and the two framework handles."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import ROOT, TINY_MODELS, model_entry, needs_tf, needs_torch, write_config
from xai_platform.config import load_config
from xai_platform.errors import ModelUnavailableError
from xai_platform.models import ModelManager


def test_import_loads_no_framework():
    code = ("import sys, xai_platform, xai_platform.config, xai_platform.models, "
            "xai_platform.explainers, xai_platform.pipeline, xai_platform.cli;"
            "from xai_platform.explainers import all_methods; all_methods();"
            "bad = [m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_status_of_missing_weights_names_the_file_and_what_to_do(tmp_path):
    config = load_config([write_config(tmp_path / "c.yaml", [
        model_entry(id="gone", weights=str(tmp_path / "nope.pt"),
                    train_command="python -m training.audio --model gone"),
        model_entry(id="published", weights=str(tmp_path / "published.pt"),
                    train_command="python -m some.nets fetch densenet121-res224-all"),
        model_entry(id="fresh")])], base=None)
    manager = ModelManager(config)
    status = manager.status("gone")
    assert status.state == "unavailable"
    assert "nope.pt" in status.reason and "needs training: run" in status.reason
    # Downloading published weights is not training.
    assert "fetch weights: run `python -m some.nets fetch" in manager.status("published").reason
    assert manager.status("fresh").state == "untrained"
    with pytest.raises(ModelUnavailableError, match="nope.pt"):
        manager.get("gone")


@needs_torch
def test_loads_once_under_concurrent_requests(manager, monkeypatch):
    from xai_platform.models import manager as manager_module

    real = manager_module.get_format
    calls = []

    class Slow:
        def __init__(self, mod):
            self.mod = mod

        def __getattr__(self, name):
            return getattr(self.mod, name)

        def load(self, spec, **kw):
            calls.append(spec.id)
            time.sleep(0.3)
            return self.mod.load(spec, **kw)

    monkeypatch.setattr(manager_module, "get_format", lambda fw, **kw: Slow(real(fw)))
    handles = []
    threads = [threading.Thread(target=lambda: handles.append(manager.get("tiny-torch-audio")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["tiny-torch-audio"]
    assert len({id(h) for h in handles}) == 1


@needs_torch
def test_lru_cache_and_unload(tiny_config):
    manager = ModelManager(tiny_config, device="cpu", cache_size=1)
    first = manager.get("tiny-torch-audio")
    manager.get("tiny-torch-xray")
    assert manager.loaded() == ["tiny-torch-xray"]
    assert manager.get("tiny-torch-audio") is not first  # evicted, loaded again
    manager.unload()
    assert manager.loaded() == []


@needs_torch
def test_torch_weights_round_trip_and_hash(tmp_path, tiny_config):
    import torch

    manager = ModelManager(tiny_config, device="cpu")
    net = manager.get("tiny-torch-xray").net
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    config = load_config([write_config(tmp_path / "c.yaml", [
        TINY_MODELS[1] | {"weights": str(path)}])], base=None)
    trained = ModelManager(config, device="cpu")
    assert trained.status("tiny-torch-xray").state == "ready"
    x = np.random.default_rng(0).random((2, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(trained.get("tiny-torch-xray").predict(x),
                               manager.get("tiny-torch-xray").predict(x), atol=1e-6)
    assert len(trained.weights_hash("tiny-torch-xray")) == 64


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_weights",))


@needs_torch
def test_pickled_code_in_weights_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": _Exploit()}, fh)
    config = load_config([write_config(tmp_path / "c.yaml", [
        model_entry(weights=str(path))])], base=None)
    manager = ModelManager(config)
    with pytest.raises(ModelUnavailableError, match="cannot be loaded safely"):
        manager.get("tiny-torch-audio")
    assert not (tmp_path / "pwned_by_weights").exists()
    assert manager.status("tiny-torch-audio").state == "unavailable"  # remembered, app goes on


@needs_torch
def test_mismatched_weights_say_what_to_check(tmp_path, tiny_config):
    import torch

    net = ModelManager(tiny_config, device="cpu").get("tiny-torch-xray").net
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    config = load_config([write_config(tmp_path / "c.yaml", [
        TINY_MODELS[1] | {"weights": str(path), "arch_args": {"width": 8, "depth": 2}}])],
        base=None)
    # which tensor, both shapes, what to check (not torch's message as a Python list)
    with pytest.raises(ModelUnavailableError, match=r"does not fit architecture 'custom_cnn': "
                       r"\S+ is \[\d+(, \d+)*\] in the file, \[\d+(, \d+)*\] in the architecture"
                       r" \(and \d+ more\); check `arch_args`"):
        ModelManager(config).get("tiny-torch-xray")


@needs_tf
def test_keras_file_with_code_is_refused_in_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    path = tmp_path / "lambda.keras"
    model.save(path)
    config = load_config([write_config(tmp_path / "c.yaml", [model_entry(
        id="evil", framework="keras", architecture="keras_file", weights=str(path),
        modality="xray", output="logits", target_layer=None,
        input={"size": 32, "channels": 1, "normalize": "unit"})])], base=None)
    with pytest.raises(ModelUnavailableError, match="safe mode"):
        ModelManager(config).get("evil")


@needs_tf
def test_keras_file_loads_and_explains(tmp_path):
    import keras

    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    path = tmp_path / "ok.keras"
    model.save(path)
    config = load_config([write_config(tmp_path / "c.yaml", [model_entry(
        id="user-keras", framework="keras", architecture="keras_file", weights=str(path),
        modality="xray", labels=["a", "b"], output="probabilities", target_layer="c1",
        input={"size": 32, "channels": 1, "normalize": "unit"})])], base=None)
    manager = ModelManager(config)
    manager.verify()
    handle = manager.get("user-keras")
    x = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(handle.predict(x), model(x[..., None]).numpy(), atol=1e-5)


@pytest.mark.parametrize("model_id", [m["id"] for m in TINY_MODELS])
def test_handle_contract(manager, model_id):
    spec = manager.spec(model_id)
    pytest.importorskip("torch" if spec.framework == "torch" else "tensorflow")
    handle = manager.get(model_id)
    x = np.random.default_rng(0).random((5, *spec.input_shape), dtype=np.float32)
    if spec.modality == "audio":
        x = -80.0 * x
    p = handle.predict(x, batch_size=2)
    assert p.shape == (5, 2) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    grads, scores = handle.input_gradients(x[:2], np.array([0, 1]))
    assert grads.shape == (2, *spec.input_shape) and np.isfinite(grads).all()
    captured = handle.layer_gradients(x[:2], np.array([1, 1]))
    assert captured.activations.ndim == 4 and captured.activations.shape == captured.gradients.shape
    np.testing.assert_allclose(captured.scores, handle.input_gradients(x[:2], np.array([1, 1]))[1],
                               rtol=1e-4, atol=1e-5)


@needs_torch
def test_sigmoid_model_explains_the_negated_logit_for_class_zero(manager):
    handle = manager.get("tiny-torch-audio")  # one sigmoid logit: [real, fake]
    x = -80.0 * np.random.default_rng(1).random((1, *handle.input_shape), dtype=np.float32)
    g_real, s_real = handle.input_gradients(x, np.array([0]))
    g_fake, s_fake = handle.input_gradients(x, np.array([1]))
    np.testing.assert_allclose(s_real, -s_fake)
    np.testing.assert_allclose(g_real, -g_fake)
    p = handle.predict(x)[0]
    np.testing.assert_allclose(p[1], 1 / (1 + np.exp(-s_fake[0])), rtol=1e-5)


@needs_torch
def test_custom_cnn_time_norm_ignores_a_stationary_channel_colouring():
    """With ``time_norm`` a constant gain per band (a telephone band, a microphone's response:
    an offset per row in dB) leaves the output unchanged; without it the output moves."""
    import torch

    from xai_platform.models.architectures.torch_layers import CustomCNN

    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 40) * 10 - 40
    colour = torch.linspace(-20, 5, 16)[None, None, :, None]  # dB per band
    for time_norm, same in ((True, True), (False, False)):
        net = CustomCNN(1, 1, width=4, depth=2, time_norm=time_norm).eval()
        with torch.no_grad():
            moved = (net(x) - net(x + colour)).abs().max().item()
        assert (moved < 1e-4) is same


def test_inception_slim_is_four_branches_and_explains_at_its_last_block():
    """The Inception-style network concatenates its four branches (so each block's output has
    ``c_out`` channels, a quarter from each), and Grad-CAM's layer ``features.<3 * stages>``
    is the last block, with its resolution after ``stages`` poolings."""
    import torch

    from xai_platform.config import parse_model
    from xai_platform.models.architectures.torch_layers import InceptionBlock
    from xai_platform.models.formats.torch import load

    spec = parse_model({"id": "m", "name": "m", "framework": "torch", "modality": "audio",
                        "architecture": "inception_slim", "weights": None,
                        "arch_args": {"width": 16, "stages": 3},
                        "labels": ["real", "fake"], "positive_label": "fake",
                        "output": "sigmoid", "target_layer": "features.9",
                        "input": {"sample_rate": 8000, "duration": 1.0, "n_fft": 256,
                                  "hop_length": 128, "n_mels": 32}}, source="t")
    handle = load(spec, device="cpu")
    block = handle.net.features[9]
    assert isinstance(block, InceptionBlock)
    with torch.no_grad():
        parts = [b(torch.zeros(1, 128, 8, 8)) for b in
                 (block.branch1, block.branch3, block.branch5, block.pool)]
    assert [p.shape[1] for p in parts] == [32, 32, 32, 32]
    x = np.random.default_rng(0).standard_normal((2, *spec.input.shape)).astype(np.float32)
    grads = handle.layer_gradients(x, np.array([1, 0]))
    assert grads.activations.shape == (2, 128, 32 // 8, spec.input.n_frames // 8)
    assert handle.predict(x).shape == (2, 2)


def test_mobilenet_v2_stem_and_pool_options():
    """arch_args declared in config change the network as documented: stem_stride 1 keeps twice
    the resolution at the Grad-CAM layer, pool: max reads the strongest location; a bad value
    is refused with the allowed ones."""
    import torch

    from xai_platform.config import parse_model
    from xai_platform.models.formats.torch import load

    def spec(**arch_args):
        return parse_model({"id": "m", "name": "m", "framework": "torch", "modality": "xray",
                            "architecture": "mobilenet_v2", "weights": None,
                            "arch_args": {"width_mult": 0.35, **arch_args},
                            "labels": ["normal", "lesion"], "output": "logits",
                            "target_layer": "features.18",
                            "input": {"size": 64, "channels": 1, "normalize": "unit"}},
                           source="t")

    x = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    plain = load(spec(), device="cpu")
    fine = load(spec(stem_stride=1), device="cpu")
    assert plain.layer_gradients(x, np.array([1, 1])).activations.shape[-2:] == (2, 2)
    assert fine.layer_gradients(x, np.array([1, 1])).activations.shape[-2:] == (4, 4)
    maxed = load(spec(pool="max"), device="cpu")
    with torch.no_grad():
        feats = maxed.net.features(maxed.adapter(torch.from_numpy(x)))
        expected = maxed.net.classifier(feats.amax(dim=(2, 3)))
        np.testing.assert_allclose(maxed.net(maxed.adapter(torch.from_numpy(x))).numpy(),
                                   expected.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="'avg' or 'max'"):
        load(spec(pool="median"), device="cpu")


@needs_torch
def test_background_check_lists_a_broken_entry_with_its_key_and_fix(tmp_path):
    config = load_config([write_config(tmp_path / "c.yaml", [
        model_entry(id="broken", target_layer="features.9"), model_entry(id="fine")])], base=None)
    manager = ModelManager(config, device="cpu")
    thread = manager.verify_in_background(start=False)
    assert manager.checking() and manager.checking("broken")
    assert manager.status("broken").state == "untrained"  # not judged before its check
    thread.start()
    thread.join(timeout=120)
    assert not manager.checking()
    status = manager.status("broken")
    assert status.state == "unavailable"
    assert "c.yaml" in status.reason and "key 'target_layer'" in status.reason
    assert "Fix:" in status.reason
    assert manager.status("fine").state == "untrained"
