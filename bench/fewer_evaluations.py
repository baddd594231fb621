"""The same LIME and Kernel SHAP map from fewer evaluations? (issue 18, item 3)

    .venv/bin/python bench/fewer_evaluations.py [--quick]

For each model and input (the shipped audio-cnn and xray-cnn weights on example files), it
computes the reference, the fixed estimator at 4x today's default budget (LIME 4,000 samples,
SHAP 2,000 evaluations, seed 100), and prints the Spearman rho over pixels between the reference
and: the adaptive estimator capped at a quarter of today's default (evaluations used shown),
the fixed estimator at the default budget, and the fixed one at a quarter of it. ``ceiling`` is
rho between two references (seeds 100 and 101): no map, not even the exact one, is expected to
agree with a noisy reference much better than the reference agrees with itself. ``non-null``
repeats the rho over the pixels of features that change the input when removed (patches of
silence at the floor are null features: every estimator ties them or ranks them by noise).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402,F401  (before TensorFlow)

from xai_platform import explainers  # noqa: E402
from xai_platform.config import load_config  # noqa: E402
from xai_platform.evaluation.metrics import spearman  # noqa: E402
from xai_platform.explainers.perturbation import masked_value  # noqa: E402
from xai_platform.explainers.sampling import null_features  # noqa: E402
from xai_platform.models import ModelManager  # noqa: E402
from xai_platform.pipeline import analyse, prepare  # noqa: E402

CASES = [("audio-cnn", "examples/audio/real_klettres_de_b.wav"),
         ("audio-cnn", "examples/audio/fake_espeak_it_ba.wav"),
         ("xray-cnn", "examples/xray/rg1-mass-lesion.png"),
         ("xray-cnn", "examples/xray/synthetic-nodule-lesion.png")]
METHODS = {"lime": ("num_samples", 1000), "shap": ("n_evaluations", 500)}
FIXED = {"lime": {"sampling": "uniform"}, "shap": {"estimator": "kernel"}}
"""The estimators these benches call fixed: lime_image's and shap.KernelExplainer's samples."""


def load_case(manager: ModelManager, config, model_id: str, path: str):
    """The bench case's model handle, the plane explained (the analysis' default window) and
    the predicted class: (handle, x, target)."""
    handle = manager.get(model_id)
    analysis = analyse(handle, prepare(ROOT / path, handle.spec, settings=config.app),
                       settings=config.app)
    return handle, analysis.prepared.planes[analysis.default_window], analysis.prediction.index


def live_pixels(x, modality: str, segments):
    """(H, W) bool: the pixels of features whose removal changes the input (the rest, e.g.
    silence at the floor, are null features, whose rank among ties is noise)."""
    return ~null_features(x, masked_value(x, modality), segments)[segments]


def timed_runner(method: str, key: str, handle, x, target: int):
    """``run(budget, seed, adaptive)`` -> (the app's attribution, seconds), the budget passed
    as the method's parameter ``key``; SHAP with its kernel estimator and LIME with lime_image's
    uniform draws, the fixed estimators these benches compare with the adaptive ones (the
    defaults, SHAP's partition estimator and LIME's orthogonal sample, are measured by
    ``estimator_noise.py --partition`` and ``--lime-sampling``)."""
    fixed = FIXED.get(method, {})

    def run(n: int, seed: int, adaptive: bool):
        start = time.perf_counter()
        result = explainers.run(method, handle, x, target=target, seed=seed,
                                params={key: n, "adaptive": adaptive, **fixed})
        return result.attribution, time.perf_counter() - start

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="first audio and X-ray case only")
    args = ap.parse_args()
    config = load_config()
    manager = ModelManager(config, device="cpu")
    cases = CASES[::2] if args.quick else CASES
    print("| model | input | method | adaptive: evaluations | adaptive rho | fixed, default: "
          "rho | fixed, quarter: rho | ceiling | non-null: adaptive / default / quarter / "
          "ceiling | seconds adaptive / default |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|---|")
    for model_id, path in cases:
        handle, x, target = load_case(manager, config, model_id, path)
        for method, (key, default) in METHODS.items():
            run = timed_runner(method, key, handle, x, target)
            ref_a, _ = run(4 * default, 100, False)
            ref_b, _ = run(4 * default, 101, False)
            new, t_new = run(default // 4, 0, True)
            old, t_old = run(default, 0, False)
            quarter, _ = run(default // 4, 0, False)
            segments = ref_a.extras["segments"]
            live = live_pixels(x, handle.spec.modality, segments)

            def rho(a, b, keep=None):
                a, b = a.heatmap, b.heatmap
                return spearman(a, b) if keep is None else spearman(a[keep], b[keep])

            nonnull = " / ".join(f"{rho(m, ref_a, live):.2f}" for m in (new, old, quarter)) \
                + f" / {rho(ref_a, ref_b, live):.2f}"
            print(f"| {model_id} | {Path(path).name} | {method} | {new.n_evaluations} "
                  f"(of {default // 4}) | {rho(new, ref_a):.2f} | {rho(old, ref_a):.2f} | "
                  f"{rho(quarter, ref_a):.2f} | {rho(ref_a, ref_b):.2f} | {nonnull} "
                  f"({int(live.mean() * 100)}% of pixels) | {t_new:.1f} / {t_old:.1f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
