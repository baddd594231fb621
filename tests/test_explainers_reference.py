"""Our methods against the reference libraries, on the same model, layer and input.

Tolerances (stated, and why):
* Grad-CAM / Grad-CAM++ vs pytorch-grad-cam: max |difference| <= 1e-4 on maps in [0, 1] (same
  math in float32; pytorch-grad-cam rescales once more after resizing).
* Integrated Gradients vs captum (same baseline, steps and Gauss-Legendre rule): relative
  error <= 1e-4 of the largest attribution (float32 summation order).
* Kernel SHAP: exactly the Shapley values (1e-6) when the budget covers every coalition; against
  shap.KernelExplainer with the same budget, Pearson correlation >= 0.95 (both sample).
* Partition SHAP (Owen values, the default): shap.PartitionExplainer's values with the same
  hierarchy and budget, to 1e-9 on a dense game at budgets that stop part-way (neither samples;
  only float summation order differs) and to 1e-5 on a model, fully expanded (float32 model).
* LIME vs lime_image (same features, masked value and sample count; different random samples,
  ours from either sampler): Pearson correlation of the feature weights >= 0.9.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_torch
from region_models import exact_shapley, region_handle, region_input, wrapped_network
from xai_platform import explainers
from xai_platform.explainers.kernel_shap import (kernel_coalitions, solve_shapley,
                                                 weighted_least_squares)
from xai_platform.explainers.perturbation import evaluate_coalitions, grid_segments, masked_value
from xai_platform.explainers.registry import ExplainContext

pytestmark = needs_torch


@pytest.mark.parametrize("ours, theirs", [("gradcam", "GradCAM"), ("gradcampp", "GradCAMPlusPlus")])
def test_cam_matches_pytorch_grad_cam(manager, ours, theirs):
    import pytorch_grad_cam
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    handle = manager.get("tiny-torch-xray")  # logits output: the explained score is the raw logit
    for p in handle.net.parameters():  # pytorch-grad-cam backpropagates through parameters
        p.requires_grad_(True)
    x = region_input("xray", seed=3)
    wrapped = wrapped_network(handle)
    layer = handle.net.get_submodule(handle.spec.target_layer)
    with getattr(pytorch_grad_cam, theirs)(model=wrapped, target_layers=[layer]) as cam:
        reference = cam(torch.from_numpy(x)[None, None], targets=[ClassifierOutputTarget(1)])[0]
    mine = explainers.run(ours, handle, x, target=1).attribution.heatmap
    assert reference.shape == mine.shape
    assert np.abs(reference - mine).max() <= 1e-4


def test_integrated_gradients_matches_captum(manager):
    import torch
    from captum.attr import IntegratedGradients

    handle = manager.get("tiny-torch-xray")
    x = region_input("xray", seed=4)
    base = masked_value(x, "xray")
    wrapped = wrapped_network(handle)
    ig = IntegratedGradients(lambda t: wrapped(t))
    reference = ig.attribute(torch.from_numpy(x)[None, None], baselines=torch.from_numpy(base)[None, None],
                             target=1, n_steps=50, method="gausslegendre").detach().numpy()[0, 0]
    mine = explainers.run("integrated_gradients", handle, x, target=1,
                          params={"n_steps": 50, "baseline": "masked"})
    h = mine.attribution.heatmap
    assert np.abs(reference - h).max() <= 1e-4 * np.abs(reference).max()
    assert abs(mine.attribution.extras["completeness_error"]) < 0.05 * abs(
        mine.attribution.extras["score_difference"]) + 1e-3


def _coalition_values(handle, x, segments, target):
    ctx = ExplainContext(spec=handle.spec, batch_size=64)
    base = masked_value(x, handle.spec.modality)

    def f(z):
        return evaluate_coalitions(handle, x, base, segments, np.asarray(z, bool), ctx)[:, target]

    return f


def test_kernel_shap_is_exact_when_every_coalition_fits():
    handle = region_handle("torch", "audio")
    x = region_input("audio")
    segments = grid_segments(x.shape, patch_rows=16, patch_cols=11)  # 2 x 3 = 6 features
    m = int(segments.max()) + 1
    f = _coalition_values(handle, x, segments, target=1)
    exact = exact_shapley(f, m)
    coalitions, weights = kernel_coalitions(m, 2 ** m, np.random.default_rng(0))
    assert len(coalitions) == 2 ** m - 2
    values = f(coalitions)
    ends = f(np.array([np.zeros(m, bool), np.ones(m, bool)]))
    phi = solve_shapley(coalitions, weights, values, ends[0], ends[1])
    np.testing.assert_allclose(phi, exact, atol=1e-6)


def _lstsq(design, y, weights):
    sw = np.sqrt(weights)[:, None]
    return np.linalg.lstsq(design * sw, y * sw[:, 0], rcond=None)[0]


def test_weighted_least_squares_matches_lstsq_on_kernel_shap_problems():
    """The fast solve (Cholesky of the Gram matrix) gives numpy lstsq's answer on a Kernel SHAP
    design of the audio CNN's size, and lstsq's minimum-norm answer when the coalitions leave
    values undetermined (fewer coalitions than features, or a feature that never varies)."""
    rng = np.random.default_rng(3)
    m = 128
    coalitions, weights = kernel_coalitions(m, 478, rng)
    z = coalitions.astype(np.float64)
    design = z[:, :-1] - z[:, -1:]
    y = design @ rng.normal(size=m - 1) + 0.01 * rng.normal(size=len(z))
    np.testing.assert_allclose(weighted_least_squares(design, y, weights),
                               _lstsq(design, y, weights), atol=1e-8)
    few = slice(0, 40)  # 40 coalitions for 127 unknowns
    np.testing.assert_allclose(weighted_least_squares(design[few], y[few], weights[few]),
                               _lstsq(design[few], y[few], weights[few]), atol=1e-8)
    constant = design.copy()
    constant[:, 5] = constant[:, 6]  # two features always together: rank deficient
    np.testing.assert_allclose(weighted_least_squares(constant, y, weights),
                               _lstsq(constant, y, weights), atol=1e-8)


def test_kernel_shap_agrees_with_shap_kernel_explainer():
    import shap

    handle = region_handle("torch", "audio")
    x = region_input("audio")
    result = explainers.run("shap", handle, x, target=1,
                            params={"n_evaluations": 500, "patch_bands": 8, "patch_frames": 8,
                                    "estimator": "kernel"},
                            seed=0)
    segments = grid_segments(x.shape, patch_rows=8, patch_cols=8)
    m = int(segments.max()) + 1
    ours = np.array([result.attribution.heatmap[segments == i][0] for i in range(m)])
    f = _coalition_values(handle, x, segments, target=1)
    np.random.seed(0)  # shap samples with NumPy's global state
    explainer = shap.KernelExplainer(f, np.zeros((1, m)))
    theirs = np.asarray(explainer.shap_values(np.ones((1, m)), nsamples=500, silent=True)).ravel()
    assert np.corrcoef(ours, theirs)[0, 1] >= 0.95
    np.testing.assert_allclose(ours.sum(), theirs.sum(), rtol=1e-4, atol=1e-6)  # efficiency


@pytest.mark.parametrize("budget", [40, 100, 300])
def test_owen_values_match_shap_partition_explainer_part_way_and_in_full(budget):
    """A dense game with interactions on a 4 x 4 grid of features: our recursion and shap's give
    the same values wherever the budget stops (172 evaluations expand this tree fully)."""
    import shap

    from xai_platform.explainers.owen import owen_values, spatial_hierarchy

    rng = np.random.default_rng(0)
    segments = grid_segments((8, 8), patch_rows=2, patch_cols=2)
    m = 16
    linear, pairs = rng.normal(size=m), rng.normal(size=(m, m)) * 0.3

    def game(z):
        z = np.asarray(z, np.float64)
        return z @ linear + np.einsum("ni,ij,nj->n", z, pairs, z) + np.tanh(z[:, :4].sum(1))

    tree = spatial_hierarchy(segments, np.arange(m))
    ours, used, info = owen_values(game, m, np.arange(m), tree, budget, batch_size=10)
    explainer = shap.PartitionExplainer(lambda z: game(z > 0.5),
                                        shap.maskers.Partition(np.zeros((1, m)), clustering=tree))
    theirs = explainer(np.ones((1, m)), max_evals=budget, batch_size=10, silent=True).values[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    assert used == min(budget, 172) and info["complete"] == (budget >= 172)
    total = game(np.ones((1, m)))[0] - game(np.zeros((1, m)))[0]
    assert ours.sum() == pytest.approx(total, abs=1e-9)
    rows = []  # an odd budget: the evaluations reported are the evaluations made
    _, used, _ = owen_values(lambda z: rows.append(len(z)) or game(z), m, np.arange(m), tree,
                             budget + 1, batch_size=10)
    assert used == sum(rows) == min(budget, 172)


def test_partition_shap_matches_shap_partition_explainer_on_a_model():
    import shap

    from xai_platform.explainers.owen import spatial_hierarchy
    from xai_platform.explainers.sampling import null_features

    handle = region_handle("torch", "audio")
    x = region_input("audio")
    x[:, :8] = x.min()  # silent columns: null features, which get exactly 0
    params = {"n_evaluations": 10000, "patch_bands": 8, "patch_frames": 8}
    result = explainers.run("shap", handle, x, target=1, params=params, seed=0)
    assert result.attribution.extras["complete"]
    segments = grid_segments(x.shape, patch_rows=8, patch_cols=8)
    m = int(segments.max()) + 1
    ours = np.array([result.attribution.heatmap[segments == i][0] for i in range(m)])
    live = np.flatnonzero(~null_features(x, masked_value(x, "audio"), segments))
    assert 0 < len(live) < m and np.all(ours[np.setdiff1d(np.arange(m), live)] == 0)
    f = _coalition_values(handle, x, segments, target=1)

    def game(z):
        full = np.zeros((len(z), m), bool)
        full[:, live] = np.asarray(z) > 0.5
        return f(full)

    explainer = shap.PartitionExplainer(game, shap.maskers.Partition(
        np.zeros((1, len(live))), clustering=spatial_hierarchy(segments, live)))
    theirs = explainer(np.ones((1, len(live))), max_evals=10000, silent=True).values[0]
    np.testing.assert_allclose(ours[live], theirs, atol=1e-5)


@pytest.mark.parametrize("sampling", ["orthogonal", "uniform"])
def test_lime_agrees_with_lime_image(sampling):
    """Both samplers estimate lime_image's surrogate: the orthogonal array (the default) only
    balances the same uniform coalitions."""
    from lime import lime_image

    handle = region_handle("torch", "audio")
    x = region_input("audio")
    params = {"num_samples": 2000, "patch_bands": 8, "patch_frames": 8, "sampling": sampling}
    ours_map = explainers.run("lime", handle, x, target=1, params=params, seed=0).attribution.heatmap
    segments = grid_segments(x.shape, patch_rows=8, patch_cols=8)
    m = int(segments.max()) + 1
    ours = np.array([ours_map[segments == i][0] for i in range(m)])

    explainer = lime_image.LimeImageExplainer(random_state=0)
    # lime_image works on RGB copies; our masked value for audio is the constant floor, which is
    # lime's hide_color.
    explanation = explainer.explain_instance(
        x, lambda images: handle.predict(images[..., 0]), labels=(1,), top_labels=None,
        hide_color=float(x.min()), num_features=m, num_samples=2000, batch_size=100,
        segmentation_fn=lambda image: segments)
    theirs = np.zeros(m)
    for feature, weight in explanation.local_exp[1]:
        theirs[feature] = weight
    assert np.corrcoef(ours, theirs)[0, 1] >= 0.9
