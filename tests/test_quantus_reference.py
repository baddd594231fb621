"""Our metrics against Quantus 0.6 on the same model, input and maps (issue 18, item 5).

Settings are aligned so that both compute the same numbers; what remains is float32 noise of
forward passes run in different batch compositions:

* Deletion / insertion vs ``quantus.PixelFlipping`` and ``quantus.RegionPerturbation``: the
  same masked plane (Quantus' ``perturb_func`` takes its pixels from it; for insertion Quantus
  starts from the masked plane and takes pixels from the input), ``features_in_step`` = pixels
  per step of ours, and maps without ties (Quantus orders with an unstable argsort, ours keeps
  row-major order among ties). Tolerance: 1e-5 absolute on probabilities.
* Pointing game vs ``quantus.PointingGame``: identical (tolerance 0) on maps whose maximum is
  unique. With a tied maximum Quantus counts a hit when any maximal pixel is inside the region,
  ours looks at the first in row-major order; the last test pins that difference.
* Model-parameter randomisation vs ``quantus.MPRT`` (top-down cascade, Spearman of absolute
  normalised maps): our ``spearman_abs`` on each of Quantus' randomised models agrees to 1e-6;
  our own ``randomized(n)`` re-initialises the same top ``n`` layers (different random values:
  Quantus seeds each layer with ``seed + 1``).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from conftest import needs_torch
from region_models import wrapped_network

pytestmark = needs_torch

TOL = 1e-5


@pytest.fixture(scope="module")
def quantus():
    import torch  # noqa: F401  (before TensorFlow, which Quantus imports)

    return pytest.importorskip("quantus", minversion="0.6")


def _take_from(source: np.ndarray):
    """A Quantus perturb_func: the perturbed pixels take ``source``'s values (our masked plane,
    or the input for insertion)."""
    flat = source.reshape(1, -1)

    def perturb(arr: np.ndarray, indices: np.ndarray, **_: object) -> np.ndarray:
        out = arr.copy()
        rows = np.arange(len(arr))[:, None]
        out[rows, indices] = flat[np.zeros_like(rows), indices]
        return out

    return perturb


@pytest.fixture
def case(manager):
    from region_models import region_input

    handle = manager.get("tiny-torch-xray")
    x = region_input("xray", seed=5)
    probs = handle.predict(x[None])[0]
    target = int(np.argmax(probs))
    assert 0.02 < probs[target] < 0.98  # not saturated: our curves stay on probabilities
    heatmap = np.random.default_rng(0).random(x.shape).astype(np.float32)
    return handle, x, target, heatmap


def test_deletion_and_insertion_match_pixel_flipping(quantus, case):
    from xai_platform.evaluation.metrics import deletion_insertion
    from xai_platform.explainers.perturbation import masked_value

    handle, x, target, heatmap = case
    steps = 16
    ours = deletion_insertion(handle, x, heatmap, target=target, steps=steps)
    assert ours.scale == "probability"
    base = masked_value(x, "xray")
    kw = dict(features_in_step=x.size // steps, disable_warnings=True, normalise=False)
    model, y, a = wrapped_network(handle), np.array([target]), heatmap[None, None]
    deletion = quantus.PixelFlipping(perturb_func=_take_from(base), **kw)(
        model=model, x_batch=x[None, None], y_batch=y, a_batch=a, channel_first=True,
        softmax=True, device="cpu")[0]
    insertion = quantus.PixelFlipping(perturb_func=_take_from(x), **kw)(
        model=model, x_batch=base[None, None], y_batch=y, a_batch=a, channel_first=True,
        softmax=True, device="cpu")[0]
    np.testing.assert_allclose(ours.deletion[1:], deletion, atol=TOL)
    np.testing.assert_allclose(ours.insertion[1:], insertion, atol=TOL)


def test_deletion_matches_region_perturbation_on_patch_maps(quantus, case):
    from xai_platform.evaluation.metrics import deletion_insertion
    from xai_platform.explainers.perturbation import masked_value

    handle, x, target, _ = case
    patch = 4
    cells = np.random.default_rng(1).permutation((x.shape[0] // patch) * (x.shape[1] // patch))
    heatmap = np.kron(cells.reshape(x.shape[0] // patch, -1),
                      np.ones((patch, patch))).astype(np.float32)  # one value per 4x4 patch
    n_patches = cells.size
    ours = deletion_insertion(handle, x, heatmap, target=target, steps=n_patches)
    theirs = quantus.RegionPerturbation(patch_size=patch, regions_evaluation=n_patches,
                                        perturb_func=_take_from(masked_value(x, "xray")),
                                        normalise=False, disable_warnings=True)(
        model=wrapped_network(handle), x_batch=x[None, None], y_batch=np.array([target]),
        a_batch=heatmap[None, None], channel_first=True, softmax=True, device="cpu")[0]
    # Quantus reports f(x) - f(x with the first k patches removed)
    np.testing.assert_allclose(ours.deletion[0] - ours.deletion[1:], theirs, atol=TOL)


def test_pointing_game_matches(quantus, case):
    from xai_platform.evaluation.metrics import localisation

    handle, x, target, _ = case
    rng = np.random.default_rng(2)
    maps = rng.normal(size=(40, *x.shape)).astype(np.float32)
    regions = np.zeros(maps.shape, dtype=bool)
    for region in regions:
        r, c = rng.integers(0, 24, size=2)
        region[r:r + rng.integers(3, 9), c:c + rng.integers(3, 9)] = True
    maps[:10][regions[:10]] += 5.0  # some hits for sure
    ours = [localisation(h, s, signed=True)["pointing_game"] for h, s in zip(maps, regions)]
    theirs = quantus.PointingGame(disable_warnings=True)(
        model=wrapped_network(handle), x_batch=np.repeat(x[None, None], len(maps), axis=0),
        y_batch=np.full(len(maps), target), a_batch=maps[:, None], s_batch=regions[:, None],
        channel_first=True, device="cpu")
    assert 10 <= sum(ours) < len(maps)
    assert ours == [float(t) for t in theirs]


def test_pointing_game_ties_are_the_one_documented_difference(quantus, case):
    from xai_platform.evaluation.metrics import localisation

    handle, x, target, _ = case
    heatmap = np.zeros(x.shape, np.float32)
    heatmap[0, 0] = heatmap[20, 20] = 1.0  # tied maximum, first in row-major order outside
    region = np.zeros(x.shape, bool)
    region[18:23, 18:23] = True
    theirs = quantus.PointingGame(disable_warnings=True)(
        model=wrapped_network(handle), x_batch=x[None, None], y_batch=np.array([target]),
        a_batch=heatmap[None, None], s_batch=region[None, None], channel_first=True,
        device="cpu")
    assert localisation(heatmap, region, signed=True)["pointing_game"] == 0.0
    assert float(theirs[0]) == 1.0


def test_randomisation_matches_mprt(quantus, case):
    from quantus.helpers.model.pytorch_model import PyTorchModel

    from xai_platform import explainers
    from xai_platform.evaluation.metrics import randomization_test
    from xai_platform.models.formats.torch import TorchHandle

    handle, x, target, _ = case

    def as_handle(wrapped):
        return TorchHandle(handle.spec, wrapped.net, device="cpu", untrained=True)

    def explain(model, inputs, targets, **_):
        h = as_handle(model)
        return np.stack([explainers.run("saliency", h, plane[0], target=int(t)).attribution.heatmap
                         for plane, t in zip(inputs, targets)])[:, None]

    original = explain(wrapped_network(handle), x[None, None], [target])
    scores = quantus.MPRT(disable_warnings=True)(
        model=wrapped_network(handle), x_batch=x[None, None], y_batch=np.array([target]),
        a_batch=original, explain_func=explain, channel_first=True, device="cpu")
    layers = [name for name in scores if name != "original"]
    models = [copy.deepcopy(m) for _, m in
              PyTorchModel(wrapped_network(handle)).get_random_layer_generator(order="top_down", seed=42)]
    assert len(models) == len(layers) >= 3
    for name, randomized in zip(layers, models):
        ours = randomization_test(handle, x, "saliency", target=target,
                                  heatmap=original[0, 0], randomized=as_handle(randomized))
        assert ours["spearman_abs"] == pytest.approx(scores[name][0], abs=1e-6), name

    # our own randomisation re-initialises the same top layers as Quantus' cascade (every
    # tensor moved off its initial value first, so that a reset always shows, e.g. a
    # BatchNorm's weight of 1)
    import torch

    net = copy.deepcopy(handle.net)
    with torch.no_grad():
        for t in list(net.parameters()) + [b for b in net.buffers() if b.is_floating_point()]:
            t.add_(0.5)
    moved = TorchHandle(handle.spec, net, device="cpu", untrained=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for n in (1, 3):
        ours = moved.randomized(n, seed=0).net.state_dict()
        changed = {k.rsplit(".", 1)[0] for k in before
                   if before[k].is_floating_point() and not torch.equal(before[k], ours[k])}
        assert changed == {name.removeprefix("net.") for name in layers[:n]}
