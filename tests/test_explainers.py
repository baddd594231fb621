"""Explainers: the registry's contract, known answers, reproducibility and the known traps."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import HAS_TF, HAS_TORCH, TINY_MODELS, needs_torch
from region_models import region_handle, region_input, region_mask
from xai_platform import explainers
from xai_platform.errors import ExplainerError
from xai_platform.explainers import all_methods, compatibility, get_method

FAST = {"lime": {"num_samples": 300}, "shap": {"n_evaluations": 200},
        "integrated_gradients": {"n_steps": 16}}
FRAMEWORKS = [pytest.param("torch", marks=pytest.mark.skipif(not HAS_TORCH, reason="no torch")),
              pytest.param("keras", marks=pytest.mark.skipif(not HAS_TF, reason="no tensorflow"))]


def test_registry_declares_everything_the_ui_needs():
    from xai_platform.modalities import modality_names
    from xai_platform.models.formats import get_format

    methods = {m.id: m for m in all_methods()}
    assert {"gradcam", "gradcampp", "lime", "shap", "integrated_gradients", "saliency"} <= set(methods)
    for m in methods.values():
        assert m.label and m.description and "20" in m.paper
        assert m.kind in ("gradient", "perturbation")
        assert m.specificity in ("model-specific", "model-agnostic")
        # every method runs on both built-in formats (their capabilities cover its needs)
        assert all(not get_format(f).capabilities.missing(m.needs) for f in ("torch", "keras"))
        for p in {p for modality in modality_names() for p in m.params_for(modality)}:
            assert p.kind in ("int", "float", "choice", "bool")
            p.validate(p.default, method=m.id)  # defaults lie in their declared range
    with pytest.raises(ValueError, match="already registered"):
        explainers.register_method(id="gradcam", label="x", description="x", paper="x",
                                   kind="gradient", specificity="model-specific")(lambda: None)


def test_compatibility_gives_reasons(tiny_config):
    from dataclasses import replace

    spec = replace(tiny_config.model("tiny-torch-xray"), target_layer=None)
    reasons = {c.method.id: c.reason for c in compatibility(spec)}
    assert reasons["gradcam"] == ("Grad-CAM needs a convolutional target layer; model "
                                  "'tiny-torch-xray' declares none (set target_layer in its "
                                  "config entry).")
    assert reasons["lime"] is None and reasons["integrated_gradients"] is None


def test_parameters_are_checked_against_declared_ranges(manager):
    pytest.importorskip("torch")
    handle = manager.get("tiny-torch-xray")
    x = np.zeros(handle.input_shape, np.float32)
    with pytest.raises(ExplainerError, match=r"'num_samples' must lie in \[50, 10000\]"):
        explainers.run("lime", handle, x, target=0, params={"num_samples": 3})
    with pytest.raises(ExplainerError, match="no parameter 'patch_bands' for xray"):
        explainers.run("lime", handle, x, target=0, params={"patch_bands": 4})
    with pytest.raises(ExplainerError, match="one of"):
        explainers.run("integrated_gradients", handle, x, target=0, params={"baseline": "noise"})
    steps = {p.name: p for p in get_method("integrated_gradients").params_for("xray")}["n_steps"]
    assert (steps.label, steps.minimum, steps.default) == ("Steps", 4, 50)


@pytest.mark.parametrize("model_id", [m["id"] for m in TINY_MODELS])
@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "saliency", "integrated_gradients",
                                    "lime", "shap"])
def test_every_method_on_every_model_kind(manager, model_id, method):
    """Finite, non-constant heatmap of the input's shape for every compatible pair."""
    from conftest import chest_like

    spec = manager.spec(model_id)
    pytest.importorskip("torch" if spec.framework == "torch" else "tensorflow")
    handle = manager.get(model_id)
    h, w = spec.input_shape
    x = chest_like(max(h, w))[:h, :w]
    if spec.modality == "audio":
        x = (x - 1.0) * 80.0
    target = int(np.argmax(handle.predict(x[None])[0]))
    result = explainers.run(method, handle, x, target=target, params=FAST.get(method), seed=3)
    h = result.attribution.heatmap
    assert h.shape == spec.input_shape and h.dtype == np.float32
    assert np.isfinite(h).all() and h.std() > 0
    assert result.attribution.n_evaluations >= 1


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("modality", ["xray", "audio"])
@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "saliency", "integrated_gradients",
                                    "lime", "shap"])
def test_known_region_gets_most_attribution(framework, modality, method):
    handle = region_handle(framework, modality)
    x = region_input(modality)
    params = {"xray": {"n_segments": 40}, "audio": {"patch_bands": 4, "patch_frames": 4}}[modality]
    params = {k: v for k, v in params.items() if method in ("lime", "shap")}
    # Perturbation methods at their default budgets: with fewer samples the surrogate's noise
    # on the irrelevant features is not small against the region's weight.
    result = explainers.run(method, handle, x, target=1, params=params, seed=0)
    # Mass of the evidence *for* the class (the positive part of signed maps). The 3x3
    # convolution reaches one pixel past the region (hence dilate=1).
    mass = np.maximum(result.attribution.heatmap, 0)
    inside = mass[region_mask(dilate=1)].sum() / mass.sum()
    assert inside > 0.85, inside


@pytest.mark.parametrize("method, extra", [("lime", {}), ("shap", {"estimator": "kernel"})])
def test_stochastic_methods_are_reproducible_and_record_the_seed(manager, method, extra):
    pytest.importorskip("torch")
    handle = manager.get("tiny-torch-audio")
    x = region_input("audio")[:16, :32]
    x = np.resize(x, handle.input_shape).astype(np.float32)
    kw = dict(target=1, params={**FAST[method], **extra})
    a = explainers.run(method, handle, x, seed=7, **kw)
    b = explainers.run(method, handle, x, seed=7, **kw)
    c = explainers.run(method, handle, x, seed=8, **kw)
    assert a.seed == 7
    assert np.array_equal(a.attribution.heatmap, b.attribution.heatmap)  # bitwise
    assert not np.array_equal(a.attribution.heatmap, c.attribution.heatmap)


def test_shap_by_default_draws_no_random_numbers(manager):
    """The partition estimator (the default) gives the same map whatever the seed and the batch
    size, records no seed, and its values still sum to p(input) - p(all masked)."""
    pytest.importorskip("torch")
    handle = manager.get("tiny-torch-audio")
    x = np.resize(region_input("audio")[:16, :32], handle.input_shape).astype(np.float32)
    a = explainers.run("shap", handle, x, target=1, seed=7, params=FAST["shap"])
    b = explainers.run("shap", handle, x, target=1, seed=8, params=FAST["shap"])
    c = explainers.run("shap", handle, x, target=1, seed=7, params=FAST["shap"], batch_size=5)
    assert a.seed is None and a.params["estimator"] == "partition"
    assert np.array_equal(a.attribution.heatmap, b.attribution.heatmap)
    assert np.array_equal(a.attribution.heatmap, c.attribution.heatmap)  # any batch size
    extras = a.attribution.extras
    phi = np.bincount(extras["segments"].ravel(), a.attribution.heatmap.ravel().astype(np.float64),
                      extras["n_features"]) / np.bincount(extras["segments"].ravel(),
                                                          minlength=extras["n_features"])
    assert phi.sum() == pytest.approx(extras["full_value"] - extras["base_value"], abs=1e-5)
    assert a.attribution.n_evaluations <= FAST["shap"]["n_evaluations"] + 1


def test_lime_orthogonal_sample_is_balanced_folded_and_uniform_per_row():
    """Each block of the default LIME sample (2 x 64 rows for 60 features) holds every feature
    in half its rows, every pair of features in each of its four states equally often, and
    every coalition's complement; the first coalition is complete; a seed repeats it."""
    from xai_platform.explainers.lime_explainer import orthogonal_coalitions

    z = orthogonal_coalitions(1000, 60, np.random.default_rng(3))
    assert z.shape == (1000, 60) and z[0].all()
    block = z[128:256].astype(np.int64)
    assert np.all(block.sum(axis=0) == 64)
    both = block.T @ block  # rows where features i and j are both present
    assert np.all(both[~np.eye(60, dtype=bool)] == 32)
    assert {r.tobytes() for r in z[128:256]} == {(~r).tobytes() for r in z[128:256]}
    assert np.array_equal(z, orthogonal_coalitions(1000, 60, np.random.default_rng(3)))
    assert abs(z[1:].mean() - 0.5) < 0.01
    assert orthogonal_coalitions(5, 600, np.random.default_rng(0)).shape == (5, 600)


def test_adaptive_sampling_needs_the_kernel_estimator(manager):
    pytest.importorskip("torch")
    handle = manager.get("tiny-torch-audio")
    x = np.zeros(handle.input_shape, np.float32)
    with pytest.raises(ExplainerError, match="estimator to 'kernel'"):
        explainers.run("shap", handle, x, target=1, params={"adaptive": True})


def test_deterministic_methods_record_no_seed(manager):
    pytest.importorskip("torch")
    handle = manager.get("tiny-torch-xray")
    result = explainers.run("gradcam", handle, np.zeros(handle.input_shape, np.float32),
                            target=0, seed=5)
    assert result.seed is None


@needs_torch
def test_no_hook_left_after_an_error(manager):
    handle = manager.get("tiny-torch-xray")
    layer = handle.net.get_submodule(handle.spec.target_layer)
    x = np.zeros((1, *handle.input_shape), np.float32)
    with pytest.raises(RuntimeError):
        handle.layer_gradients(x, np.array([7]))  # no class 7: gather fails inside the hook
    assert len(layer._forward_hooks) == 0
    assert all(len(m._forward_hooks) == 0 and len(m._backward_hooks) == 0
               for m in handle.net.modules())


@needs_torch
def test_densenet_inplace_relu_does_not_corrupt_the_activation(monkeypatch):
    """torchvision's DenseNet applies F.relu(features, inplace=True) right after the usual
    Grad-CAM layer (features.norm5). The captured activation must be norm5's output, not its
    ReLU, and the map must equal that of the same network without in-place ops."""
    import torch
    import torch.nn.functional as F
    from torchvision.models import densenet as tv_densenet

    from xai_platform.config import parse_model
    from xai_platform.models.formats.torch import load

    spec = parse_model({"id": "d", "name": "d", "framework": "torch", "modality": "xray",
                        "architecture": "densenet121", "weights": None,
                        "labels": ["a", "b"], "output": "logits",
                        "target_layer": "features.norm5",
                        "input": {"size": 64, "channels": 1, "normalize": "unit"}}, source="t")
    handle = load(spec, device="cpu")
    x = np.random.default_rng(0).random((1, 64, 64), dtype=np.float32)
    with torch.no_grad():
        norm5 = handle.net.features(handle.adapter(torch.from_numpy(x))).numpy()
    got = handle.layer_gradients(x, np.array([1]))
    np.testing.assert_allclose(got.activations, norm5, rtol=1e-5, atol=1e-5)
    assert (got.activations < 0).any()  # pre-ReLU values survived the in-place ReLU
    cam_inplace = explainers.run("gradcam", handle, x[0], target=1).attribution.heatmap

    real_relu = F.relu
    monkeypatch.setattr(tv_densenet.F, "relu", lambda t, inplace=False: real_relu(t))
    cam_plain = explainers.run("gradcam", handle, x[0], target=1).attribution.heatmap
    np.testing.assert_allclose(cam_inplace, cam_plain, atol=1e-6)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_nested_keras_and_one_channel_models(manager, framework):
    """LIME and SHAP on one-channel X-ray and three-channel models: no channel mismatch;
    Grad-CAM through a nested Keras model (backbone/Conv_1)."""
    model_id = {"torch": "tiny-torch-xray", "keras": "tiny-keras-xray"}[framework]
    handle = manager.get(model_id)
    x = region_input("xray")
    for method in ("lime", "shap"):
        h = explainers.run(method, handle, x, target=1, params=FAST[method]).attribution.heatmap
        assert h.shape == (32, 32)
    if framework == "keras":
        from xai_platform.config import parse_model
        from xai_platform.models.formats.keras import load

        spec = parse_model({"id": "nested", "name": "n", "framework": "keras", "modality": "xray",
                            "architecture": "keras_mobilenet_v2", "weights": None,
                            "labels": ["a", "b"], "output": "logits",
                            "target_layer": "backbone/Conv_1", "arch_args": {"alpha": 0.35},
                            "input": {"size": 64, "channels": 3, "normalize": "minus1_1"}},
                           source="t")
        nested = load(spec, device="cpu")
        captured = nested.layer_gradients(np.stack([region_input("xray", 1)] * 2).repeat(2, 1)
                                          .repeat(2, 2), np.array([0, 1]))
        assert captured.activations.shape == (2, 1280, 2, 2)
        assert np.abs(captured.gradients).sum() > 0


def test_progress_and_cancel(manager):
    import threading

    from xai_platform.errors import CancelledError

    pytest.importorskip("torch")
    handle = manager.get("tiny-torch-xray")
    seen = []
    explainers.run("lime", handle, region_input("xray"), target=1,
                   params={"num_samples": 200}, batch_size=50,
                   progress=lambda f, what: seen.append(f))
    assert seen[-1] == 1.0 and len(seen) >= 4
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        explainers.run("lime", handle, region_input("xray"), target=1,
                       params={"num_samples": 200}, cancel=cancel)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_perturbations_built_on_the_device_match_the_numpy_path(framework):
    """The GPU path (perturbed inputs built by the framework) gives the same probabilities as
    the NumPy path; run here on the CPU, where both exist."""
    from xai_platform.explainers.perturbation import grid_segments, masked_value

    handle = region_handle(framework, "xray")
    x = region_input("xray")
    base = masked_value(x, "xray")
    segments = grid_segments(x.shape, patch_rows=4, patch_cols=4)
    z = np.random.default_rng(0).integers(0, 2, (8, int(segments.max()) + 1)).astype(bool)
    expected = handle.predict(np.where(z[:, segments], x[None], base[None]).astype(np.float32))
    np.testing.assert_allclose(handle.device_coalition_evaluator(x, base, segments)(z), expected,
                               atol=1e-6)


CHEAP = {"lime": {"num_samples": 50}, "shap": {"n_evaluations": 32},
         "integrated_gradients": {"n_steps": 4}}


def _configured_pairs():
    from xai_platform.config import load_config

    config = load_config()
    return [(spec.id, m.id) for spec in config.models for m in explainers.compatible_methods(spec)]


@pytest.mark.parametrize("model_id, method", _configured_pairs())
def test_every_configured_model_and_compatible_method(model_id, method):
    """The issue's contract on the shipped config: finite, non-constant heatmap of the input's
    shape (cheap parameters: this checks wiring, not quality)."""
    from xai_platform.bench import sample_input
    from xai_platform.config import load_config

    manager = _shared_manager(load_config)
    status = manager.status(model_id)
    if not status.usable:
        pytest.skip(f"{model_id} is {status}")
    handle = manager.get(model_id)
    x = sample_input(handle)
    target = int(np.argmax(handle.predict(x[None])[0]))
    h = explainers.run(method, handle, x, target=target, params=CHEAP.get(method), seed=0)
    heatmap = h.attribution.heatmap
    assert heatmap.shape == handle.input_shape and np.isfinite(heatmap).all()
    if method in ("gradcam", "gradcampp") and h.attribution.extras.get("no_positive_evidence"):
        # A CAM keeps positive evidence only (ReLU): where no cell of the layer raises the
        # target's score, the map is zero by definition, and the app says why. Accept that only
        # when the captured layer confirms it.
        from xai_platform.explainers.cam import gradcam_weights, gradcampp_weights

        weigh = gradcam_weights if method == "gradcam" else gradcampp_weights
        captured = handle.layer_gradients(x[None], np.array([target]))
        raw = (weigh(captured.activations, captured.gradients)[:, :, None, None]
               * captured.activations).sum(axis=1)
        assert raw.max() <= 0 and not heatmap.any()
        return
    assert heatmap.std() > 0


_MANAGERS: dict = {}


def _shared_manager(load_config):
    from xai_platform.models import ModelManager

    if "project" not in _MANAGERS:
        _MANAGERS["project"] = ModelManager(load_config(), device="cpu", cache_size=2)
    return _MANAGERS["project"]
