"""TorchXRayVision models: label mapping, operating points, offline status, safe weight files.

A locally saved file stands in for the library's download: a DenseNet built with
``weights=None`` and pickled whole in PyTorch's legacy format, as the released files are (with
the THNN backend attribute PyTorch < 1.6 pickled into every module).
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_torch, write_config
from xai_platform.config import load_config
from xai_platform.errors import ConfigError, ModelUnavailableError
from xai_platform.models import ModelManager

pytestmark = needs_torch
xrv = pytest.importorskip("torchxrayvision")

CHEX = "densenet121-res224-chex"


def xrv_entry(model_id: str, key: str, weights: Path, **overrides) -> dict:
    from xai_platform.models.architectures.xrv_nets import release

    rel = release(key)
    arch = "xrv_densenet121" if key.startswith("densenet") else "xrv_resnet50"
    entry = {"id": model_id, "name": model_id, "framework": "torch", "modality": "xray",
             "architecture": arch, "arch_args": {"weights": key}, "weights": str(weights),
             "labels": list(rel.used_labels), "output": "multilabel",
             "target_layer": "features.norm5" if arch == "xrv_densenet121" else "layer4",
             "input": {"size": rel.resolution, "channels": 1, "normalize": "xrv"},
             "train_command": f"python -m xai_platform.models.architectures.xrv_nets fetch {key}"}
    entry.update(overrides)
    return entry


class _OldBackend:
    """What PyTorch < 1.6 pickled as every module's ``_backend``."""

    def __reduce__(self):
        import torch.nn.backends.thnn as thnn

        return (thnn._get_thnn_function_backend, ())


def released_densenet(path: Path, *, seed: int = 0):
    """An 18-output xrv DenseNet with random weights and distinct output biases, saved the way
    the library's releases are (whole model, legacy format). Returns the model."""
    import torch

    torch.manual_seed(seed)
    model = xrv.models.DenseNet(weights=None, num_classes=18, in_channels=1)
    with torch.no_grad():  # keep untrained activations O(1) on xrv's [-1024, 1024] scale
        model.features.conv0.weight.mul_(1 / 1024)
        model.classifier.bias.copy_(torch.linspace(-3.0, 1.0, 18))
    for module in model.modules():
        module._backend = _OldBackend()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model, path, _use_new_zipfile_serialization=False)
    for module in model.modules():
        del module._backend
    return model.eval()


@pytest.fixture(scope="module")
def chex_setup(tmp_path_factory):
    """A converted 'chex' release in a temporary cache folder and a config pointing at it."""
    from xai_platform.models.architectures.xrv_nets import fetch, release

    tmp = tmp_path_factory.mktemp("xrv")
    cache = tmp / "models_data"
    rel = release(CHEX)
    model = released_densenet(cache / rel.filename)
    converted = fetch(CHEX, cache_dir=cache, download_missing=False)
    config = load_config([write_config(tmp / "xrv.yaml", [
        xrv_entry("xrv-chex", CHEX, converted)])], base=None)
    return rel, model, converted, ModelManager(config, device="cpu")


@pytest.fixture(scope="module")
def chex_outputs(chex_setup):
    """Our handle's outputs and the library's on the same two images, computed once.

    library: xrv's forward with op_threshs (features2 -> classifier -> sigmoid -> op_norm),
    raw: the sigmoid before op_norm; both (2, 18) in the library's output order."""
    import torch

    rel, model, _, manager = chex_setup
    handle = manager.get("xrv-chex")
    x = np.random.default_rng(0).random((2, 224, 224), dtype=np.float32)
    with torch.no_grad():
        raw = torch.sigmoid(model.classifier(model.features2(
            torch.from_numpy(x[:, None] * 2048 - 1024))))
        library = xrv.models.op_norm(raw, torch.tensor(rel.thresholds))
    return handle, x, handle.predict(x), handle.scores(x), raw.numpy(), library.numpy()


def test_used_outputs_drop_placeholders_in_library_order():
    from xai_platform.models.architectures.xrv_nets import release

    for key in ("densenet121-res224-all", CHEX, "densenet121-res224-nih", "resnet50-res512-all"):
        rel = release(key)
        table = xrv.models.model_urls[key]
        assert len(rel.labels) == len(rel.thresholds) == 18
        expected = [i for i, (name, t) in enumerate(zip(table["labels"], table["op_threshs"]))
                    if name != "" and not math.isnan(t)]
        assert list(rel.used) == expected
        assert list(rel.used_labels) == [table["labels"][i] for i in expected]
        assert "" not in rel.used_labels
    assert len(release("densenet121-res224-all").used) == 18
    assert len(release(CHEX).used) == 11  # 7 placeholders ('')
    # ResNet-50: 'Lung Lesion' is named but has no operating point (a constant 0.5 in xrv)
    assert "Lung Lesion" not in release("resnet50-res512-all").used_labels


def test_repo_config_labels_match_the_library():
    from xai_platform.models.architectures.xrv_nets import DEFAULT_RELEASE, release

    config = load_config()
    specs = [s for s in config.models if s.architecture.startswith("xrv_")]
    assert {s.architecture for s in specs} == {"xrv_densenet121", "xrv_resnet50"}
    for spec in specs:
        rel = release(spec.arch_args.get("weights", DEFAULT_RELEASE[spec.architecture]))
        assert spec.labels == rel.used_labels
        assert spec.output == "multilabel" and spec.input.normalize == "xrv"
        assert spec.input.size == (rel.resolution, rel.resolution) and spec.input.channels == 1
        assert spec.weights.parent == rel.cache_dir()
        assert spec.weights.name == rel.weights_path().name
        assert rel.filename.removesuffix(".pt") in spec.weights.name


def test_wrong_labels_are_refused_with_the_right_list(tmp_path):
    from xai_platform.models.formats.torch import build_network

    entry = xrv_entry("bad", CHEX, tmp_path / "w.pt")
    entry["labels"][0], entry["labels"][1] = entry["labels"][1], entry["labels"][0]
    spec = load_config([write_config(tmp_path / "c.yaml", [entry])], base=None).model("bad")
    with pytest.raises(ConfigError, match="labels do not match.*Lung Lesion"):
        build_network(spec)


def test_offline_status_names_the_file_and_folder(tmp_path):
    from xai_platform.models.architectures.xrv_nets import fetch, release

    rel = release(CHEX)
    cache = tmp_path / "models_data"
    target = rel.weights_path(cache)
    config = load_config([write_config(tmp_path / "c.yaml", [
        xrv_entry("xrv-chex", CHEX, target)])], base=None)
    status = ModelManager(config).status("xrv-chex")
    assert status.state == "unavailable"
    assert str(cache) in status.reason and target.name in status.reason
    assert f"fetch {CHEX}" in status.reason
    with pytest.raises(ModelUnavailableError) as err:  # converting without the download
        fetch(CHEX, cache_dir=cache, download_missing=False)
    assert rel.filename in str(err.value) and str(cache) in str(err.value)
    assert rel.url in str(err.value)


def test_weights_placed_there_load_and_map_labels(chex_setup, chex_outputs):
    _, _, _, manager = chex_setup
    assert manager.status("xrv-chex").state == "ready"
    handle, _, probs, _, _, library = chex_outputs
    assert probs.shape == (2, 11)
    assert probs.min() >= 0.0 and probs.max() <= 1.0
    library_labels = xrv.models.model_urls[CHEX]["labels"]
    for j, name in enumerate(handle.spec.labels):
        np.testing.assert_allclose(probs[:, j], library[:, library_labels.index(name)], atol=1e-5)
    assert len(set(np.round(probs[0], 4))) == probs.shape[1]  # distinct outputs: no mix-up hides


def test_operating_points_make_one_half_the_decision(chex_setup, chex_outputs):
    rel = chex_setup[0]
    _, _, probs, scores, raw, _ = chex_outputs
    for j, i in enumerate(rel.used):
        assert np.array_equal(probs[:, j] >= 0.5, raw[:, i] >= rel.thresholds[i])
    decided = probs >= 0.5
    assert decided.any() and not decided.all()  # both sides of 0.5 occur: not vacuous
    p = np.clip(probs, 1e-7, 1 - 1e-7)  # explained score: logit of the calibrated probability
    np.testing.assert_allclose(scores, np.log(p) - np.log1p(-p), rtol=1e-3, atol=1e-3)


def test_grad_cam_layer_works_with_the_inplace_relu(chex_outputs):
    handle, x, _, _, _, _ = chex_outputs
    x = x[:1]
    target = handle.spec.labels.index("Lung Lesion")
    grads = handle.layer_gradients(x, np.array([target]))
    assert grads.activations.shape == (1, 1024, 7, 7)
    assert np.isfinite(grads.gradients).all() and np.abs(grads.gradients).sum() > 0
    assert grads.activations.min() < 0  # norm5's output, before the ReLU overwrote it


def test_converted_file_is_a_plain_state_dict(chex_setup):
    import torch

    _, model, converted, _ = chex_setup
    state = torch.load(converted, map_location="cpu", weights_only=True)
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_xrv_file",))


def test_release_reader_runs_no_code(tmp_path, monkeypatch):
    from xai_platform.models.architectures.xrv_nets import read_release

    monkeypatch.chdir(tmp_path)
    for i, payload in enumerate(({"features.conv0.weight": _Exploit()}, _Exploit())):
        path = tmp_path / f"evil{i}.pt"
        with open(path, "wb") as fh:
            pickle.dump(payload, fh, protocol=2)
        with pytest.raises(ModelUnavailableError, match="not allowed"):
            read_release(path)
    assert not (tmp_path / "pwned_by_xrv_file").exists()


def test_resnet50_state_dict_loads_as_downloaded(tmp_path):
    import torch
    import torchvision

    from xai_platform.models.architectures.xrv_nets import release

    key = "resnet50-res512-all"
    rel = release(key)
    torch.manual_seed(0)
    body = torchvision.models.resnet50(num_classes=18, weights=None)
    body.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    path = rel.weights_path(tmp_path / "models_data")
    assert path.name == rel.filename  # used as downloaded, no conversion
    path.parent.mkdir(parents=True)
    torch.save(body.state_dict(), path, _use_new_zipfile_serialization=False)
    config = load_config([write_config(tmp_path / "c.yaml", [xrv_entry("rn", key, path)])],
                         base=None)
    handle = ModelManager(config, device="cpu").get("rn")
    x = np.random.default_rng(0).random((1, 512, 512), dtype=np.float32)
    probs = handle.predict(x)
    body.eval()
    with torch.no_grad():
        raw = torch.sigmoid(body(torch.from_numpy(x[:, None] * 2048 - 1024)))
        ref = xrv.models.op_norm(raw, torch.tensor(rel.thresholds)).numpy()
    np.testing.assert_allclose(probs, ref[:, list(rel.used)], atol=1e-5)
    assert probs.shape == (1, 16) and "Lung Lesion" not in handle.spec.labels


# --- fetching from the app and the CLI --------------------------------------------------------


def _fetchable(tmp_path: Path, monkeypatch, url: str) -> ModelManager:
    """A manager whose xrv-chex entry's weights are missing and whose release address is
    ``url`` (a local file:// address stands in for GitHub's)."""
    import dataclasses

    from xai_platform.models.architectures import xrv_nets

    real = xrv_nets.release
    monkeypatch.setattr(xrv_nets, "release",
                        lambda key: dataclasses.replace(real(key), url=url))
    target = real(CHEX).weights_path(tmp_path / "models_data")
    config = load_config([write_config(tmp_path / "c.yaml", [
        xrv_entry("xrv-chex", CHEX, target)])], base=None)
    return ModelManager(config, device="cpu")


def test_fetch_downloads_with_progress_converts_and_the_model_is_ready(tmp_path, monkeypatch):
    from xai_platform.models.architectures.xrv_nets import release
    from xai_platform.service import Service
    from xai_platform.ui.fetch_panel import fetch_weights, missing

    published = tmp_path / "published" / release(CHEX).filename
    released_densenet(published)
    manager = _fetchable(tmp_path, monkeypatch, published.as_uri())
    service = Service(manager)
    assert manager.status("xrv-chex").state == "unavailable"
    assert "python -m xai_platform fetch xrv-chex" in manager.status("xrv-chex").reason
    assert missing(service) == ["xrv-chex"]
    seen: list[tuple[float, str]] = []
    text = fetch_weights(service, "xrv-chex", progress=lambda f, what: seen.append((f, what)))
    assert text.startswith("**`xrv-chex` is ready**")
    assert seen[-1] == (1.0, "converting to a plain state_dict")
    assert any("downloaded" in what and "MB" in what for _, what in seen)
    assert manager.status("xrv-chex").state == "ready" and missing(service) == []
    assert manager.get("xrv-chex").predict(np.zeros((1, 224, 224), np.float32)).shape == (1, 11)


def test_fetch_without_internet_says_so_and_leaves_no_partial_file(tmp_path, monkeypatch):
    from xai_platform.service import Service
    from xai_platform.ui.fetch_panel import fetch_weights

    manager = _fetchable(tmp_path, monkeypatch, "http://127.0.0.1:9/weights.pt")
    text = fetch_weights(Service(manager), "xrv-chex")
    assert text.startswith("**Could not fetch `xrv-chex`.**")
    assert "needs internet access" in text and "copy " in text
    assert not list((tmp_path / "models_data").glob("*.partial"))
    assert manager.status("xrv-chex").state == "unavailable"


def test_the_cli_fetch_command(tmp_path, monkeypatch, capsys):
    from xai_platform.cli import main
    from xai_platform.models.architectures.xrv_nets import release

    published = tmp_path / "published" / release(CHEX).filename
    released_densenet(published)
    _fetchable(tmp_path, monkeypatch, published.as_uri())
    config = str(tmp_path / "c.yaml")
    assert main(["fetch", "xrv-chex", "--config", config, "--quiet"]) == 0
    assert "xrv-chex: ready" in capsys.readouterr().out
    assert main(["fetch", "xrv-chex", "--config", config]) == 0
    assert "weights already there" in capsys.readouterr().out
