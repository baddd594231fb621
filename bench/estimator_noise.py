"""How far are today's LIME and Kernel SHAP maps from what they converge to, and does explaining
the log-odds instead of the probability make the game easier? (issue 18, item 3)

    .venv/bin/python bench/estimator_noise.py [--quick]
    .venv/bin/python bench/estimator_noise.py --adaptive [--quick]
    .venv/bin/python bench/estimator_noise.py --regression-adjusted [--quick]
    .venv/bin/python bench/estimator_noise.py --partition [--quick]
    .venv/bin/python bench/estimator_noise.py --lime-sampling [--quick]
    .venv/bin/python bench/estimator_noise.py --budgets [--quick]

``--adaptive`` prints another table: the app's fixed and adaptive estimators (``explainers.run``
with ``adaptive`` off and on) at the default budget and at a quarter of it, seeds 0-2, each
against the fixed estimator at 8x (seed 7; a page caps a budget at 10,000), with the
evaluations the adaptive one used, the seconds at the default budget, and how alike the fixed
estimator's maps of seeds 0-2 are over all pixels (the mean rho of the three pairs: what a user
who reruns with another seed sees).

``--regression-adjusted`` probes Kernel SHAP with a learnt control variate (Witter et al.,
"Regression-adjusted Monte Carlo estimators for Shapley values and probabilistic values",
2025): a tree ensemble g is fitted to half of the evaluated coalitions and its residual taken
on the other half (and the other way round); the answer is g's Shapley values (from 20,000 of
its own coalitions: g is cheap) plus Kernel SHAP of the residual game on the evaluated
coalitions. At a quarter and at today's budget, seeds 0-2, against the fixed 16x map and
between seeds ("self": the mean rho of the three pairs), beside the fixed estimator.

``--partition`` measures SHAP's default estimator, Owen values over a spatial hierarchy
(``explainers.run("shap")``, deterministic): at a quarter of the default budget, at the default
and at 4x, each against its own 4x map and its fully refined map (the budget raised until the
tree is expanded to its leaves; the evaluations that took are shown), beside the kernel
estimator at the default budget against its 16x map and between seeds 0-2 (the same columns
as the main table), and the seconds of one run of each at the default budget.

``--lime-sampling`` measures LIME's default sampler, a randomised fold-over orthogonal array
(``sampling="orthogonal"``), against lime_image's independent draws (``"uniform"``): the app's
runs at a quarter of the default budget and at the default, seeds 0-2, each against the
uniform estimator at 16x (seed 7), and how alike the three seeds' maps are.

``--budgets`` asks how far the default budgets could fall and keep the maps the app gave before
the eighteenth session: each method's default estimator (LIME's orthogonal sample, SHAP's
partition estimator) at a quarter, a half and the whole default budget against its converged
map (LIME: the uniform estimator at 16x, seed 7; SHAP: Owen values refined to the leaves),
beside the estimator the app used before (LIME's uniform sample, Kernel SHAP) at the whole
default budget against its own (the uniform estimator at 16x; Kernel SHAP at 16x, seed 7),
and how alike seeds 0-2 are (LIME; the partition estimator is deterministic).

The cases are those of ``bench/fewer_evaluations.py``. For each case, method and explained
quantity (``prob``: the target probability, as the app explains it; ``logit``: its log-odds,
shap's ``link="logit"``), the fixed estimator runs at 16x today's default budget (seed 7),
twice at 4x (seeds 100, 101), and three times each at the default and at a quarter of it
(seeds 0-2). It prints the Spearman rho of each pair over the pixels of features whose removal
changes the input (all of an X-ray; on audio, patches of silence at the floor are null
features, whose exact value is 0 and whose rank among ties is noise), and R^2, the share of the
output's variance over LIME's uniform coalitions that an additive model of the features
explains (LIME's weighted ridge at 16x). With R^2 below 1 the sampling noise of a linear
estimator is the game's interactions, which no reweighting of the same samples removes.

Two maps of the same budget and different seeds agree with rho about S / (S + N / n) (signal
variance S, noise N / n; as for Pearson's correlation), so "4x vs 4x" measures the 4x map's
reliability r4. From it: the most any map, even the exact one, can agree with one 4x map is
sqrt(r4) (``best possible vs 4x``), and the fixed estimator's budget to agree 0.95 with the
exact map is 4 x default x (1 / r4 - 1) / (1 / 0.95^2 - 1) (``budget for 0.95``). Both
are approximations (ranks, not values), to read as orders of magnitude.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402,F401  (before TensorFlow)
import numpy as np  # noqa: E402

from fewer_evaluations import CASES, METHODS, live_pixels, load_case, timed_runner  # noqa: E402
from xai_platform import explainers  # noqa: E402
from xai_platform.config import load_config  # noqa: E402
from xai_platform.evaluation.metrics import spearman  # noqa: E402
from xai_platform.explainers.kernel_shap import kernel_coalitions, solve_shapley  # noqa: E402
from xai_platform.explainers.lime_explainer import (cosine_distance_to_full,  # noqa: E402
                                                    lime_kernel, weighted_ridge)
from xai_platform.explainers.perturbation import (evaluate_coalitions, features,  # noqa: E402
                                                  masked_value, paint)
from xai_platform.explainers.registry import ExplainContext  # noqa: E402
from xai_platform.explainers.sampling import null_features  # noqa: E402
from xai_platform.models import ModelManager  # noqa: E402

KERNEL_WIDTH = 0.25
"""LIME's default kernel width (the app's)."""
TARGET_RHO = 0.95


class Game:
    """The target's probability or log-odds on coalitions of one input's features."""

    def __init__(self, handle, x: np.ndarray, target: int, segments: np.ndarray) -> None:
        self.ctx = ExplainContext(spec=handle.spec)
        self.handle, self.x, self.target, self.segments = handle, x, target, segments
        self.baseline = masked_value(x, self.ctx.modality)
        self.m = int(segments.max()) + 1

    def per_feature(self, heatmap: np.ndarray) -> np.ndarray:
        """Each feature's value (M,) read back from a map painted over its pixels."""
        return np.array([heatmap[self.segments == i][0] for i in range(self.m)])

    def explain(self, method: str, seed: int, **params) -> np.ndarray:
        """The app's map of ``method`` (``explainers.run``) on this input, per feature."""
        a = explainers.run(method, self.handle, self.x, target=self.target, seed=seed,
                           params=params).attribution
        return self.per_feature(a.heatmap)

    def __call__(self, z: np.ndarray, link: str) -> np.ndarray:
        p = evaluate_coalitions(self.handle, self.x, self.baseline, self.segments, z,
                                self.ctx)[:, self.target].astype(np.float64)
        if link == "prob":
            return p
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p))


def seeds_agree(maps: list, rho) -> float:
    """How alike the maps of seeds 0-2 are: the mean ``rho`` of the three pairs."""
    return float(np.mean([rho(maps[i], maps[j]) for i, j in ((0, 1), (0, 2), (1, 2))]))


def case_game(manager: ModelManager, config, model_id: str, path: str):
    """The case's :class:`Game` on the app's features, and ``rho(values_a, values_b)``: the
    Spearman rho of two per-feature maps over the pixels of non-null features."""
    handle, x, target = load_case(manager, config, model_id, path)
    modality = handle.spec.modality
    segments = features(x, ExplainContext(spec=handle.spec),
                        explainers.get_method("lime").resolve_params({}, modality=modality))
    game = Game(handle, x, target, segments)
    live = live_pixels(x, modality, segments)

    def rho(a: np.ndarray, b: np.ndarray) -> float:
        return spearman(paint(segments, a)[live], paint(segments, b)[live])

    return game, rho


def lime_map(game: Game, n: int, seed: int, link: str) -> tuple[np.ndarray, float]:
    """lime_image's fixed estimator (uniform coalitions, the first complete): weights, R^2."""
    z = np.random.default_rng(seed).integers(0, 2, size=(n, game.m)).astype(bool)
    z[0] = True
    weights = lime_kernel(KERNEL_WIDTH)(cosine_distance_to_full(z))
    beta, _, r2 = weighted_ridge(z.astype(np.float64), game(z, link), weights,
                                 np.full(game.m, 1.0))
    return beta, r2


def shap_map(game: Game, n: int, seed: int, link: str) -> tuple[np.ndarray, float]:
    """shap.KernelExplainer's fixed estimator (enumerated sizes, paired samples)."""
    z, weights = kernel_coalitions(game.m, n - 2, np.random.default_rng(seed))
    ends = game(np.array([np.zeros(game.m, bool), np.ones(game.m, bool)]), link)
    return solve_shapley(z, weights, game(z, link), float(ends[0]), float(ends[1])), float("nan")


def budget_for(r4: float, default: int) -> float:
    """The fixed estimator's budget to agree ``TARGET_RHO`` with the exact map, from the
    agreement ``r4`` of two maps at 4x ``default`` (module docstring)."""
    if r4 <= 0:
        return float("inf")
    return 4 * default * (1 / r4 - 1) / (1 / TARGET_RHO ** 2 - 1)


def adaptive_table(manager: ModelManager, config, cases) -> None:
    """Fixed against adaptive, at the default budget and a quarter of it (module docstring)."""
    print("| model | input | method | fixed, default | adaptive, default budget (evaluations "
          "used) | adaptive, quarter | fixed, quarter | seconds fixed / adaptive, default | "
          "fixed, default: seeds agree (all pixels) |")
    print("|---|---|---|---:|---:|---:|---:|---|---:|")
    for model_id, path in cases:
        handle, x, target = load_case(manager, config, model_id, path)
        for method, (key, default) in METHODS.items():
            run = timed_runner(method, key, handle, x, target)
            reference, _ = run(8 * default, 7, False)
            segments = reference.extras["segments"]
            live = live_pixels(x, handle.spec.modality, segments)
            cells = {}
            for name, n, adaptive in (("fixed", default, False), ("adaptive", default, True),
                                      ("adaptive quarter", default // 4, True),
                                      ("fixed quarter", default // 4, False)):
                runs = [run(n, seed, adaptive) for seed in range(3)]
                cells[name] = (np.mean([spearman(a.heatmap[live], reference.heatmap[live])
                                        for a, _ in runs]),
                               np.mean([a.n_evaluations for a, _ in runs]),
                               np.mean([s for _, s in runs]),
                                              seeds_agree([a.heatmap for a, _ in runs], spearman))
            print(f"| {model_id} | {Path(path).name} | {method} | {cells['fixed'][0]:.2f} | "
                  f"{cells['adaptive'][0]:.2f} ({cells['adaptive'][1]:.0f}) | "
                  f"{cells['adaptive quarter'][0]:.2f} ({cells['adaptive quarter'][1]:.0f}) | "
                  f"{cells['fixed quarter'][0]:.2f} | {cells['fixed'][2]:.1f} / "
                  f"{cells['adaptive'][2]:.1f} | {cells['fixed'][3]:.2f} |", flush=True)


def regression_adjusted(game: Game, n: int, seed: int, kind: str) -> np.ndarray:
    """Kernel SHAP with a cross-fitted tree surrogate as control variate (module docstring)."""
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

    m, rng = game.m, np.random.default_rng(seed)
    ends = game(np.array([np.zeros(m, bool), np.ones(m, bool)]), "prob")
    z, weights = kernel_coalitions(m, n - 2, rng)
    y = game(z, "prob")
    many, many_weights = kernel_coalitions(m, 20_000, np.random.default_rng(999))
    fold = rng.permutation(len(z)) % 2
    residual, parts = np.empty_like(y), []
    for k in (0, 1):
        train = np.concatenate([z[fold != k], [np.zeros(m, bool), np.ones(m, bool)]])
        target = np.concatenate([y[fold != k], ends])
        g = (RandomForestRegressor(200, min_samples_leaf=2, max_features=0.3, random_state=seed)
             if kind == "forest" else
             HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, min_samples_leaf=5,
                                           random_state=seed)).fit(train.astype(float), target)
        residual[fold == k] = y[fold == k] - g.predict(z[fold == k].astype(float))
        g_none, g_all = g.predict(np.array([np.zeros(m), np.ones(m)]))
        parts.append((solve_shapley(many, many_weights, g.predict(many.astype(float)), g_none,
                                    g_all), g_none, g_all))
    phi_g, g_none, g_all = (np.mean([p[i] for p in parts], axis=0) for i in range(3))
    return phi_g + solve_shapley(z, weights, residual, float(ends[0] - g_none),
                                 float(ends[1] - g_all))


def regression_adjusted_table(manager: ModelManager, config, cases) -> None:
    default = METHODS["shap"][1]
    print("| model | input | estimator | quarter: vs 16x / self | default: vs 16x / self |")
    print("|---|---|---|---|---|")
    for model_id, path in cases:
        game, rho = case_game(manager, config, model_id, path)

        reference, _ = shap_map(game, 16 * default, 7, "prob")
        estimators = {"fixed": lambda n, seed: shap_map(game, n, seed, "prob")[0],
                      "adjusted, forest": lambda n, seed: regression_adjusted(game, n, seed,
                                                                              "forest"),
                      "adjusted, boosting": lambda n, seed: regression_adjusted(game, n, seed,
                                                                                "boosting")}
        for name, estimate in estimators.items():
            cells = []
            for n in (default // 4, default):
                maps = [estimate(n, seed) for seed in range(3)]
                own = seeds_agree(maps, rho)
                cells.append(f"{np.mean([rho(a, reference) for a in maps]):.2f} / {own:.2f}")
            print(f"| {model_id} | {Path(path).name} | {name} | {cells[0]} | {cells[1]} |",
                  flush=True)


def partition_table(manager: ModelManager, config, cases) -> None:
    """SHAP's partition estimator against itself and the kernel estimator (docstring)."""
    default = METHODS["shap"][1]
    print("| model | input | non-null features | partition: quarter vs 4x | default vs 4x | "
          "quarter vs refined | default vs refined | 4x vs refined | evaluations to refine | "
          "kernel: default vs 16x | kernel: seeds agree | seconds partition / kernel, default |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for model_id, path in cases:
        game, rho = case_game(manager, config, model_id, path)
        handle, x, target, segments = game.handle, game.x, game.target, game.segments

        def values(n: int, estimator: str = "partition", seed: int = 0):
            start = time.perf_counter()
            a = explainers.run("shap", handle, x, target=target, seed=seed,
                               params={"n_evaluations": n, "estimator": estimator}).attribution
            assert np.array_equal(a.extras["segments"], segments)
            return a, time.perf_counter() - start

        runs = {n: values(n) for n in (default // 4, default, 4 * default, 10000)}
        maps = {n: game.per_feature(a.heatmap) for n, (a, _) in runs.items()}
        refined = runs[10000][0]
        if not refined.extras["complete"]:
            print(f"(not refined to the leaves within 10,000 evaluations: {model_id})")
        kernel = [values(default, "kernel", s) for s in range(3)]
        long = shap_map(game, 16 * default, 7, "prob")[0]
        k_maps = [game.per_feature(a.heatmap) for a, _ in kernel]
        live = int((~null_features(x, game.baseline, segments)).sum())
        q, d, f = default // 4, default, 4 * default
        print(f"| {model_id} | {Path(path).name} | {live} | {rho(maps[q], maps[f]):.2f} | "
              f"{rho(maps[d], maps[f]):.2f} | {rho(maps[q], maps[10000]):.2f} | "
              f"{rho(maps[d], maps[10000]):.2f} | {rho(maps[f], maps[10000]):.2f} | "
              f"{refined.n_evaluations:,} | "
              f"{np.mean([rho(k, long) for k in k_maps]):.2f} | "
              f"{seeds_agree(k_maps, rho):.2f} | "
              f"{runs[d][1]:.1f} / {kernel[0][1]:.1f} |", flush=True)


def lime_sampling_table(manager: ModelManager, config, cases) -> None:
    """LIME's orthogonal-array sample against the uniform one (module docstring)."""
    default = METHODS["lime"][1]
    print("| model | input | sampling | quarter: vs 16x | quarter: seeds agree | default: vs 16x "
          "| default: seeds agree | seconds, default |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for model_id, path in cases:
        game, rho = case_game(manager, config, model_id, path)
        long, _ = lime_map(game, 16 * default, 7, "prob")
        for sampling in ("orthogonal", "uniform"):
            cells = []
            for n in (default // 4, default):
                maps, seconds = [], []
                for seed in range(3):
                    start = time.perf_counter()
                    maps.append(game.explain("lime", seed, num_samples=n, sampling=sampling))
                    seconds.append(time.perf_counter() - start)
                cells += [np.mean([rho(v, long) for v in maps]), seeds_agree(maps, rho)]
            print(f"| {model_id} | {Path(path).name} | {sampling} | {cells[0]:.2f} | "
                  f"{cells[1]:.2f} | {cells[2]:.2f} | {cells[3]:.2f} | {np.mean(seconds):.1f} |",
                  flush=True)


def budget_table(manager: ModelManager, config, cases) -> None:
    """Today's estimators at fractions of the default budget against the old ones (docstring)."""
    print("| model | input | method | before: default vs converged | quarter | half | default | "
          "seeds agree: half / default |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for model_id, path in cases:
        game, rho = case_game(manager, config, model_id, path)

        default = METHODS["lime"][1]
        long, _ = lime_map(game, 16 * default, 7, "prob")
        before = [game.explain("lime", s, num_samples=default, sampling="uniform")
                  for s in range(3)]
        now = {f: [game.explain("lime", s, num_samples=int(default * f)) for s in range(3)]
               for f in (0.25, 0.5, 1.0)}
        cells = " | ".join(f"{np.mean([rho(m, long) for m in now[f]]):.2f}" for f in now)
        print(f"| {model_id} | {Path(path).name} | lime | "
              f"{np.mean([rho(m, long) for m in before]):.2f} | {cells} | "
              f"{seeds_agree(now[0.5], rho):.2f} / {seeds_agree(now[1.0], rho):.2f} |", flush=True)

        default = METHODS["shap"][1]
        refined = game.explain("shap", 0, n_evaluations=10000)
        long, _ = shap_map(game, 16 * default, 7, "prob")
        before = [game.explain("shap", s, n_evaluations=default, estimator="kernel")
                  for s in range(3)]
        at = {f: game.explain("shap", 0, n_evaluations=int(default * f)) for f in (0.25, 0.5, 1.0)}
        cells = " | ".join(f"{rho(at[f], refined):.2f}" for f in at)
        print(f"| {model_id} | {Path(path).name} | shap | "
              f"{np.mean([rho(m, long) for m in before]):.2f} | {cells} | 1 / 1 |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="first audio and X-ray case only")
    ap.add_argument("--adaptive", action="store_true",
                    help="fixed against adaptive estimators instead (module docstring)")
    ap.add_argument("--regression-adjusted", action="store_true",
                    help="Kernel SHAP with a tree surrogate as control variate (docstring)")
    ap.add_argument("--partition", action="store_true",
                    help="SHAP's default partition estimator against itself and the kernel one")
    ap.add_argument("--lime-sampling", action="store_true",
                    help="LIME's orthogonal-array sample against lime_image's uniform one")
    ap.add_argument("--budgets", action="store_true",
                    help="today's estimators at 1/4, 1/2 and 1x the default budget, beside the old")
    args = ap.parse_args()
    config = load_config()
    manager = ModelManager(config, device="cpu")
    cases = CASES[::2] if args.quick else CASES
    tables = {"adaptive": adaptive_table, "regression_adjusted": regression_adjusted_table,
              "partition": partition_table, "lime_sampling": lime_sampling_table,
              "budgets": budget_table}
    for flag, table in tables.items():
        if getattr(args, flag):
            table(manager, config, cases)
            return 0
    estimators = {"lime": lime_map, "shap": shap_map}
    print("| model | input | method | link | R^2 (additive) | 4x vs 4x | best possible vs 4x | "
          "quarter vs 4x | default vs 16x | quarter vs 16x | 4x vs 16x | budget for 0.95 | "
          "16x: prob vs logit | seconds |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model_id, path in cases:
        game, rho = case_game(manager, config, model_id, path)

        for method, (_, default) in METHODS.items():
            estimate = estimators[method]
            long = {}
            for link in ("prob", "logit"):
                start = time.perf_counter()
                conv, r2 = estimate(game, 16 * default, 7, link)
                long[link] = conv
                ref_a, _ = estimate(game, 4 * default, 100, link)
                ref_b, _ = estimate(game, 4 * default, 101, link)
                full = [estimate(game, default, s, link)[0] for s in range(3)]
                quarter = [estimate(game, default // 4, s, link)[0] for s in range(3)]
                r4 = rho(ref_a, ref_b)
                cross = f"{rho(long['prob'], conv):.2f}" if link == "logit" else ""
                print(f"| {model_id} | {Path(path).name} | {method} | {link} | {r2:.2f} | "
                      f"{r4:.2f} | {np.sqrt(max(r4, 0)):.2f} | "
                      f"{np.mean([rho(a, ref_a) for a in quarter]):.2f} | "
                      f"{np.mean([rho(a, conv) for a in full]):.2f} | "
                      f"{np.mean([rho(a, conv) for a in quarter]):.2f} | {rho(ref_a, conv):.2f} | "
                      f"{budget_for(r4, default):,.0f} | {cross} | "
                      f"{time.perf_counter() - start:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
