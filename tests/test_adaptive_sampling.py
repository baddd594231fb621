"""The adaptive LIME and Kernel SHAP estimators: exactness where the answer is known, the
stopping rule, and honest evaluation counts (issue 18, item 3)."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest

from conftest import needs_torch
from region_models import exact_shapley
from xai_platform.explainers import sampling
from xai_platform.explainers.kernel_shap import adaptive_shapley
from xai_platform.explainers.lime_explainer import adaptive_lime, averaged_fit, fit_surrogate


class Counted:
    """A game (coalitions (n, M) bool -> values (n,)) that counts the rows it evaluates."""

    def __init__(self, fn) -> None:
        self.fn, self.rows = fn, 0

    def __call__(self, z: np.ndarray) -> np.ndarray:
        self.rows += len(z)
        return self.fn(np.asarray(z, bool))


def linear_game(m: int, seed: int = 0):
    w = np.random.default_rng(seed).normal(size=m)
    return w, Counted(lambda z: 0.3 + z @ w)


def hard_game(m: int, seed: int = 0):
    """High-order interactions everywhere: no ranking settles from a few hundred coalitions."""
    r = np.random.default_rng(seed).normal(size=m)
    return Counted(lambda z: np.sin(97.0 * (z @ r)) + 0.01 * (z @ r))


def test_paired_sampling_is_exact_on_an_additive_game():
    m = 40  # 2^40 coalitions: sampled, not enumerated
    w, game = linear_game(m)
    phi, n, info = adaptive_shapley(game, np.ones(m, bool), 200, np.random.default_rng(1),
                                    batch_size=32, stop=False)
    np.testing.assert_allclose(phi, w, atol=1e-9)  # additive game: phi_i = w_i
    assert info["stopped"] == "budget" and n == game.rows <= 200


def test_adaptive_shap_equals_exact_shapley_values_with_null_players():
    m = 7
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=m), rng.normal(size=(m, m))
    null = np.zeros(m, bool)
    null[[1, 4]] = True

    def value(z):
        z = z & ~null  # features 1 and 4 change nothing
        zf = z.astype(float)
        return np.tanh(zf @ a + np.einsum("ni,ij,nj->n", zf, b, zf) / m)

    exact = exact_shapley(value, m)
    game = Counted(value)
    phi, n, info = adaptive_shapley(game, ~null, 64, np.random.default_rng(0), batch_size=32)
    assert info["null_features"] == 2 and info["stopped"] == "exact"
    np.testing.assert_allclose(phi, exact, atol=1e-9)
    assert np.all(phi[null] == 0.0)
    assert n == game.rows == 2 ** 5  # the reduced game's coalitions, ends included


@pytest.mark.parametrize("method", ["shap", "lime"])
def test_stopping_rule_stops_early_on_an_easy_model_and_spends_the_cap_on_a_hard_one(method):
    m, cap = 30, 1000

    def estimate(game):
        if method == "shap":
            return adaptive_shapley(game, np.ones(m, bool), cap, np.random.default_rng(0),
                                    batch_size=32)
        return adaptive_lime(game, np.ones(m, bool), cap, np.random.default_rng(0),
                             kernel_width=0.25, batch_size=32)

    _, easy = linear_game(m)
    _, n_easy, info = estimate(easy)
    assert info["stopped"] == "stable" and info["rounds"] == sampling.MIN_ROUNDS
    assert n_easy == easy.rows < cap / 2
    hard = hard_game(m)
    _, n_hard, info = estimate(hard)
    assert info["stopped"] == "budget" and n_hard == hard.rows and n_hard >= cap - 1


def test_stable_needs_rank_agreement_and_the_same_top_features():
    a = np.arange(20.0)
    assert sampling.stable(a, a + 0.01)
    swapped = a.copy()
    swapped[[19, 10]] = swapped[[10, 19]]  # the top feature leaves the top 5
    assert not sampling.stable(a, swapped)
    assert not sampling.stable(a, np.random.default_rng(0).permutation(a))


def test_stratified_sizes_follow_the_distribution_in_every_prefix():
    """Every prefix of the stream holds each size within 2.5 draws of its expected count (i.i.d.
    draws, numpy seed 0, miss by 4 within 32), also when drawn in rounds."""
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    for shift in (0.0, 0.37, 0.81):
        draws = np.concatenate([sampling.stratified_choice(probs, 16, start=s, shift=shift)
                                for s in range(0, 64, 16)])
        for n in range(1, 65):
            assert np.abs(np.bincount(draws[:n], minlength=4) - n * probs).max() <= 2.5


def test_averaged_fit_without_null_features_is_limes_own_surrogate():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2, size=(300, 12)).astype(bool)
    z[0] = True
    y = np.tanh(z @ rng.normal(size=12))
    ours, _, intercept, r2 = averaged_fit(z, y, 0, kernel_width=0.25)
    theirs, their_intercept, their_r2 = fit_surrogate(z, np.c_[1 - y, y], 1, kernel_width=0.25,
                                                      seed=0)
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    assert intercept == pytest.approx(their_intercept) and r2 == pytest.approx(their_r2)


def test_averaged_fit_equals_the_fit_over_every_setting_of_the_null_features():
    """Averaging the null bits out in closed form = sklearn's weighted ridge over every row
    repeated with each of the 2^n_null settings of the null features (weight / 2^n_null)."""
    from sklearn.linear_model import Ridge

    from xai_platform.explainers.lime_explainer import cosine_distance_to_full, lime_kernel

    rng = np.random.default_rng(1)
    a, n_null = 5, 3
    active = rng.integers(0, 2, size=(40, a)).astype(bool)
    y = np.tanh(active @ rng.normal(size=a))
    coef, null_coef, intercept, _ = averaged_fit(active, y, n_null, kernel_width=0.25)
    settings = np.array(list(product([False, True], repeat=n_null)))
    rows = np.array([np.r_[r, s] for r in active for s in settings])
    weights = lime_kernel(0.25)(cosine_distance_to_full(rows)) / len(settings)
    ridge = Ridge(alpha=1.0, fit_intercept=True).fit(rows.astype(float), np.repeat(y, len(settings)),
                                                     sample_weight=weights)
    np.testing.assert_allclose(coef, ridge.coef_[:a], atol=1e-9)
    np.testing.assert_allclose(ridge.coef_[a:], null_coef, atol=1e-9)
    assert intercept == pytest.approx(ridge.intercept_, abs=1e-9)


def test_null_features_are_the_ones_equal_to_the_masked_value():
    x = np.zeros((4, 4), np.float32)
    x[:2, :2] = 1.0
    segments = (np.arange(4)[:, None] // 2) * 2 + np.arange(4)[None, :] // 2
    assert sampling.null_features(x, np.zeros_like(x), segments).tolist() == [False, True, True, True]


@needs_torch
@pytest.mark.parametrize("method, key, extra", [
    ("shap", "n_evaluations", {"adaptive": True, "estimator": "kernel"}),
    ("shap", "n_evaluations", {"estimator": "partition"}),
    ("lime", "num_samples", {"adaptive": True})])
def test_reported_evaluations_are_the_model_evaluations_made(method, key, extra):
    from region_models import region_handle, region_input
    from xai_platform import explainers

    handle = region_handle("torch", "audio")
    x = region_input("audio")
    x[:, :8] = x.min()  # silent columns: null features
    counted = [0]
    evaluator = handle.coalition_evaluator

    def counting(x_, baseline, segments):
        inner = evaluator(x_, baseline, segments)

        def evaluate(z):
            counted[0] += len(z)
            return inner(z)

        return evaluate

    handle.coalition_evaluator = counting
    params = {key: 160, "patch_bands": 4, "patch_frames": 4, **extra}
    result = explainers.run(method, handle, x, target=1, params=params, seed=0)
    a = result.attribution
    assert a.n_evaluations == counted[0] <= 160
    assert a.extras["null_features"] == 16  # 2 of 8 patch columns, 8 patch rows
    assert a.extras["budget"] == 160
    assert a.extras.get("rounds", 1) >= 1 and a.extras.get("expanded", 1) >= 1
    segments = a.extras["segments"]
    values = [float(a.heatmap[segments == i][0]) for i in range(int(segments.max()) + 1)]
    null_values = {values[i] for i in range(len(values)) if i % 8 < 2}
    assert len(null_values) == 1  # null features share one value (0 for SHAP)
    if method == "shap":
        assert null_values == {0.0}
        assert np.sum(values) == pytest.approx(a.extras["full_value"] - a.extras["base_value"],
                                               abs=1e-5)
