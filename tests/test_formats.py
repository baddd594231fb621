"""Bring your own model: ONNX, TorchScript and a PyTorch model from an installed package, each
made by the test from a tiny torch network (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conftest import chest_like, model_entry, needs_torch, write_config
from xai_platform import explainers
from xai_platform.errors import ConfigError, ModelUnavailableError

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and \
    importlib.util.find_spec("onnx") is not None
HAS_O2T = importlib.util.find_spec("onnx2torch") is not None
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime / onnx are not installed")

SIZE = 32
IMAGE = {"size": SIZE, "channels": 3, "normalize": "imagenet"}
CHEAP = {"lime": {"num_samples": 60, "n_segments": 8}, "shap": {"n_evaluations": 40,
                                                                   "n_segments": 8},
         "integrated_gradients": {"n_steps": 8}}


def tiny_net():
    """A small CNN for (N, 3, 32, 32) input: conv, ReLU, conv, ReLU, pool, linear (2 logits)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).eval()


def _entry(**overrides) -> dict:
    return model_entry(**{"modality": "xray", "labels": ["normal", "lesion"], "output": "logits",
                          "input": dict(IMAGE), "arch_args": {}, "target_layer": None,
                          **overrides})


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The tiny network as a state_dict, an ONNX export, a TorchScript (scripted and traced)."""
    torch = pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("byom")
    net = tiny_net()
    out = {"state_dict": folder / "tiny.pt"}
    torch.save(net.state_dict(), out["state_dict"])
    example = torch.zeros(1, 3, SIZE, SIZE)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["script"] = folder / "tiny-script.pt"
        torch.jit.save(torch.jit.script(net), out["script"])
        out["trace"] = folder / "tiny-trace.pt"
        torch.jit.save(torch.jit.trace(net, example), out["trace"])
        if HAS_ORT:
            out["onnx"] = folder / "tiny.onnx"
            with torch.no_grad():
                torch.onnx.export(net, (example,), str(out["onnx"]), input_names=["x"],
                                  output_names=["logits"], dynamic_axes={"x": {0: "n"}},
                                  dynamo=False)
    return out


def _manager(tmp_path: Path, entries: list[dict]):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    config = load_config([write_config(tmp_path / "byom.yaml", entries)], base=None)
    return ModelManager(config, device="cpu", batch_size=16)


def _reference(x: np.ndarray) -> np.ndarray:
    """The torch network's softmax on the same planes, normalised by hand (ImageNet)."""
    import torch

    mean = np.array([0.485, 0.456, 0.406], np.float32)[None, :, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[None, :, None, None]
    net_in = (np.repeat(x[:, None], 3, axis=1) - mean) / std
    with torch.no_grad():
        return torch.softmax(tiny_net()(torch.from_numpy(net_in.astype(np.float32))), 1).numpy()


def _planes(n: int = 3) -> np.ndarray:
    return np.stack([chest_like(SIZE, seed=i) for i in range(n)])


# --- ONNX ---------------------------------------------------------------------------------------

@needs_torch
@needs_ort
def test_onnx_predicts_as_the_torch_model_and_explains_by_perturbation(files, tmp_path, png_file):
    from xai_platform.service import Service, Session

    manager = _manager(tmp_path, [_entry(id="tiny-onnx", framework="onnx", architecture="onnx",
                                         weights=str(files["onnx"]))])
    handle = manager.get("tiny-onnx")
    x = _planes()
    np.testing.assert_allclose(handle.predict(x), _reference(x), atol=1e-5)
    service = Service(manager)
    ok, why_not = service.methods("tiny-onnx")
    assert set(ok) == {"lime", "shap"}
    assert why_not["Grad-CAM"] == ("Grad-CAM needs gradients of an inner layer, which this "
                                   "model's format (ONNX) does not give.")
    assert "gradients with respect to its input" in why_not["Integrated Gradients"]
    session = Session()
    try:
        for method in ("lime", "shap"):
            expl = service.explain(session, png_file, "tiny-onnx", method,
                                   params=CHEAP[method])
            assert expl.heatmap.shape == (SIZE, SIZE) and np.isfinite(expl.heatmap).all()
        card = service.score(session, expl, ("faithfulness", "stability"))
        assert np.isfinite(card.values["insertion_auc"])
    finally:
        session.close()


@needs_torch
@needs_ort
def test_onnx_entries_and_files_are_checked(files, tmp_path):
    with pytest.raises(ConfigError, match=r"key 'target_layer'.*onnx2torch"):
        _manager(tmp_path, [_entry(id="o", framework="onnx", architecture="onnx",
                                   weights=str(files["onnx"]), target_layer="1")])
    with pytest.raises(ConfigError, match=r"key 'architecture'.*use onnx"):
        _manager(tmp_path, [_entry(id="o", framework="onnx", architecture="resnet",
                                   weights=str(files["onnx"]))])
    with pytest.raises(ConfigError, match=r"key 'weights'"):
        _manager(tmp_path, [_entry(id="o", framework="onnx", architecture="onnx",
                                   weights=str(files["state_dict"]))])
    manager = _manager(tmp_path, [_entry(id="o", framework="onnx", architecture="onnx",
                                         weights=str(files["onnx"]), input={**IMAGE, "size": 40})])
    with pytest.raises(ModelUnavailableError, match=r"takes input \[.*3, 32, 32\].*declares"):
        manager.get("o")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(ModelUnavailableError, match="not a valid ONNX model"):
        _manager(tmp_path, [_entry(id="o", framework="onnx", architecture="onnx",
                                   weights=str(bad))]).get("o")


@needs_torch
@needs_ort
@pytest.mark.skipif(not HAS_O2T, reason="onnx2torch is not installed")
def test_onnx_converted_to_torch_gives_every_method(files, tmp_path):
    manager = _manager(tmp_path, [_entry(id="tiny-o2t", framework="onnx",
                                         architecture="onnx2torch", weights=str(files["onnx"]))])
    handle = manager.get("tiny-o2t")
    x = _planes()
    np.testing.assert_allclose(handle.predict(x), _reference(x), atol=1e-5)
    conv = [name for name, kind in handle.layers() if kind == "Conv2d"][-1]
    from dataclasses import replace

    spec = replace(handle.spec, target_layer=conv)
    assert explainers.compatible_methods(spec)  # every method applies
    assert {m.id for m in explainers.compatible_methods(spec)} >= {"gradcam", "saliency"}
    got = handle.layer_gradients(x[:1], np.array([1]), layer=conv)
    assert got.activations.shape == (1, 8, SIZE, SIZE) and np.abs(got.gradients).sum() > 0


# --- TorchScript ------------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("kind", ["script", "trace"])
def test_torchscript_predicts_and_explains_without_hooks(files, tmp_path, kind, png_file):
    from xai_platform.service import Service, Session

    manager = _manager(tmp_path, [_entry(id="tiny-ts", framework="torchscript",
                                         architecture="torchscript", weights=str(files[kind]))])
    handle = manager.get("tiny-ts")
    x = _planes()
    np.testing.assert_allclose(handle.predict(x), _reference(x), atol=1e-5)
    service = Service(manager)
    ok, why_not = service.methods("tiny-ts")
    assert set(ok) == {"lime", "shap", "saliency", "integrated_gradients"}
    assert why_not["Grad-CAM"].startswith("Grad-CAM needs gradients of an inner layer")
    assert [name for name, _ in handle.layers()][:2] == ["0", "1"]
    session = Session()
    try:
        expl = service.explain(session, png_file, "tiny-ts", "saliency")
        assert expl.heatmap.std() > 0
        card = service.score(session, expl, ("randomization",))
        assert np.isfinite(card.values["randomization_rho"])
    finally:
        session.close()
    rand = handle.randomized(2, seed=0)
    assert not np.allclose(rand.predict(x), handle.predict(x))
    np.testing.assert_allclose(handle.predict(x), _reference(x), atol=1e-5)  # original intact


@needs_torch
def test_torchscript_refuses_a_state_dict_and_a_target_layer(files, tmp_path):
    with pytest.raises(ConfigError, match=r"key 'target_layer'.*no forward hooks"):
        _manager(tmp_path, [_entry(id="t", framework="torchscript", architecture="torchscript",
                                   weights=str(files["script"]), target_layer="2")])
    manager = _manager(tmp_path, [_entry(id="t", framework="torchscript",
                                         architecture="torchscript",
                                         weights=str(files["state_dict"]))])
    with pytest.raises(ModelUnavailableError, match="not a TorchScript archive"):
        manager.get("t")


# --- a PyTorch model from an installed package --------------------------------------------------

@needs_torch
def test_package_callable_architecture_builds_with_arch_args(tmp_path):
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=2).eval()
    weights = tmp_path / "resnet18.pt"
    torch.save(net.state_dict(), weights)
    entry = _entry(id="pkg-resnet", architecture="torchvision.models:resnet18",
                   arch_args={"num_classes": 2}, weights=str(weights), target_layer="layer4",
                   input={"size": 64, "channels": 3, "normalize": "imagenet"})
    manager = _manager(tmp_path, [entry])
    manager.verify()  # layer4 is a conv map, found on the meta device
    handle = manager.get("pkg-resnet")
    x = np.stack([chest_like(64, seed=i) for i in range(2)])
    ok = {m.id for m in explainers.compatible_methods(handle.spec)}
    assert {"gradcam", "gradcampp", "saliency", "integrated_gradients", "lime", "shap"} <= ok
    for method in ("gradcam", "integrated_gradients"):
        result = explainers.run(method, handle, x[0], target=1, params=CHEAP.get(method))
        assert result.attribution.heatmap.shape == (64, 64)
    with torch.no_grad():
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        want = torch.softmax(net((torch.from_numpy(x)[:, None].expand(-1, 3, -1, -1) - mean)
                                 / std), 1).numpy()
    np.testing.assert_allclose(handle.predict(x), want, atol=1e-5)


@needs_torch
def test_package_callable_is_checked_without_importing_and_fails_clearly(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'architecture'.*package.module:callable"):
        _manager(tmp_path, [_entry(id="p", architecture="torchvision.models:resnet18()")])
    manager = _manager(tmp_path, [_entry(id="p", architecture="no_such_pkg.models:net")])
    with pytest.raises(ModelUnavailableError, match="'no_such_pkg.models' cannot be imported"):
        manager.get("p")
    manager = _manager(tmp_path, [_entry(id="q", architecture="torchvision.models:resnet18",
                                         arch_args={"no_such_arg": 1})])
    with pytest.raises(ConfigError, match=r"key 'arch_args'"):
        manager.get("q")


# --- check-model and the "plug in a model" panel ------------------------------------------------

@needs_torch
@needs_ort
def test_check_model_cli_reports_shape_labels_methods_and_layers(files, tmp_path, png_file,
                                                                  capsys):
    import json

    from xai_platform.cli import main

    config = write_config(tmp_path / "mine.yaml", [
        _entry(id="mine-onnx", framework="onnx", architecture="onnx", weights=str(files["onnx"])),
        _entry(id="mine-torch", architecture="custom_cnn", arch_args={"width": 4, "depth": 2},
               target_layer="features.1", input={"size": SIZE, "channels": 1}),
    ])
    assert main(["check-model", str(config), "--model", "mine-onnx", "--input",
                 str(png_file)]) == 0
    text = capsys.readouterr().out
    assert "model 'mine-onnx' (onnx, xray): OK" in text
    assert "output: probabilities of shape (1, 2) over labels normal, lesion" in text
    assert "methods that apply: shap, lime" in text
    assert "not gradcam: Grad-CAM needs gradients of an inner layer" in text
    assert "chest.png" in text
    assert main(["check-model", str(config), "--model", "mine-torch", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["models"]
    assert report["ok"] and report["output_shape"] == [1, 2]
    assert "gradcam" in report["methods"] and report["target_layer_error"] is None
    assert report["candidate_layers"] and all(len(c["shape"]) == 3
                                              for c in report["candidate_layers"])
    missing = write_config(tmp_path / "missing.yaml", [
        _entry(id="gone", framework="onnx", architecture="onnx",
               weights=str(tmp_path / "gone.onnx"))])
    assert main(["check-model", str(missing)]) == 1
    failed = capsys.readouterr().out
    assert "model 'gone' (onnx, xray): FAILED" in failed and "gone.onnx not found" in failed


@needs_torch
@needs_ort
def test_plugin_panel_checks_an_upload_privately_and_refuses_code(files, manager, tmp_path):
    import yaml

    from xai_platform.service import Service
    from xai_platform.ui.plugin_panel import check_plugin

    service = Service(manager)
    before = [row.id for row in service.models()]
    upload = tmp_path / "upload" / "my model.onnx"
    upload.parent.mkdir()
    upload.write_bytes(files["onnx"].read_bytes())
    text = yaml.safe_dump(_entry(id="panel-onnx", framework="onnx", architecture="onnx",
                                 weights="model.onnx"))
    out = check_plugin(text, str(upload), None, service=service)
    assert out.startswith("**Plugs in.**") and "methods that apply: shap, lime" in out
    assert [row.id for row in service.models()] == before  # nobody else sees it
    assert upload.exists()  # the upload itself is untouched; the private copy is gone
    # weights that do not load: the report's status says so too (it said "ready", from
    # before the load, under "FAILED")
    wrong = yaml.safe_dump(_entry(id="panel-onnx", framework="onnx", architecture="onnx",
                                  weights="model.onnx", input={**IMAGE, "size": 40}))
    out = check_plugin(wrong, str(upload), None, service=service)
    assert "FAILED" in out and "declares" in out
    assert "status: unavailable" in out and "status: ready" not in out
    with pytest.raises(ConfigError, match="names a file on the server"):
        check_plugin(text, None, None, service=service)
    script = tmp_path / "upload" / "net.pt"
    script.write_bytes(files["script"].read_bytes())
    with pytest.raises(ConfigError, match="TorchScript code"):
        check_plugin(yaml.safe_dump(_entry(id="p", framework="torchscript",
                                           architecture="torchscript", weights="x.pt")),
                     str(script), None, service=service)
    with pytest.raises(ConfigError, match="only a trusted config file"):
        check_plugin(yaml.safe_dump({"models": [_entry(id="p", architecture="os:system",
                                                       arch_args={"command": "true"})]}),
                     str(files["state_dict"]), None, service=service)
    with pytest.raises(ConfigError, match="one entry at a time"):
        check_plugin(yaml.safe_dump({"models": [_entry(id="a"), _entry(id="b")]}), None, None,
                     service=service)


def test_the_models_tab_holds_the_plugin_panel(manager):
    from xai_platform.ui.app import build_app

    demo = build_app(manager)
    labels = {getattr(block, "label", None) for block in demo.blocks.values()}
    assert {"Plug in a model (check an entry and its weights)", "Config entry (YAML)"} <= labels


# --- the contract on every format made here ------------------------------------------------------

BYOM_KINDS = ["onnx", "onnx2torch", "torchscript", "package", "keras-nested"]
METHOD_IDS = [m.id for m in explainers.all_methods()]


@pytest.fixture(scope="module")
def byom_manager(files, tmp_path_factory):
    """One manager holding a model of every new format (and a nested Keras model)."""
    import torch
    import torchvision

    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    folder = tmp_path_factory.mktemp("contract")
    torch.manual_seed(0)
    resnet = folder / "resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), resnet)
    entries = [_entry(id="torchscript", framework="torchscript", architecture="torchscript",
                      weights=str(files["script"])),
               _entry(id="package", architecture="torchvision.models:resnet18",
                      arch_args={"num_classes": 2}, weights=str(resnet), target_layer="layer4",
                      input={"size": 64, "channels": 3, "normalize": "imagenet"})]
    if HAS_ORT:
        entries.append(_entry(id="onnx", framework="onnx", architecture="onnx",
                              weights=str(files["onnx"])))
        if HAS_O2T:
            entries.append(_entry(id="onnx2torch", framework="onnx", architecture="onnx2torch",
                                  weights=str(files["onnx"]), target_layer="3/Relu"))
    if importlib.util.find_spec("tensorflow") is not None:
        from test_keras_nesting import deep_model

        model, path = deep_model()
        model.save(folder / "deep.keras")
        entries.append(_entry(id="keras-nested", framework="keras", architecture="keras_file",
                              weights=str(folder / "deep.keras"), target_layer=path,
                              output="sigmoid", input={"size": 32, "channels": 3}))
    config = load_config([write_config(folder / "contract.yaml", entries)], base=None)
    return ModelManager(config, device="cpu", cache_size=len(entries))


@needs_torch
@pytest.mark.parametrize("method", METHOD_IDS)
@pytest.mark.parametrize("kind", BYOM_KINDS)
def test_every_new_format_and_compatible_method(byom_manager, kind, method):
    """Finite, non-constant heatmap of the input's shape for every compatible pair; an
    incompatible pair names the capability the format lacks."""
    if kind not in {s.id for s in byom_manager.specs}:
        pytest.skip(f"{kind}: its framework is not installed")
    spec = byom_manager.spec(kind)
    reason = explainers.get_method(method).reason_incompatible(spec)
    if reason is not None:
        assert "which this model's format" in reason or "target layer" in reason
        return
    handle = byom_manager.get(kind)
    h, w = spec.input_shape
    x = chest_like(max(h, w), seed=5)[:h, :w]
    target = int(np.argmax(handle.predict(x[None])[0]))
    result = explainers.run(method, handle, x, target=target, params=CHEAP.get(method), seed=0)
    heatmap = result.attribution.heatmap
    assert heatmap.shape == (h, w) and np.isfinite(heatmap).all()
    if result.attribution.extras.get("no_positive_evidence"):
        assert not heatmap.any()
        return
    assert heatmap.std() > 0
