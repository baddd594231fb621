"""Benchmark: what each explanation costs, against plain forward passes of the same model.

For every model and method it prints the median seconds over ``repeats`` runs, the number of
model evaluations, and the ratio to the time of the same number of plain batched forward passes
measured in the same run (for Grad-CAM: one forward pass). With ``--baselines`` it also times
the methods called the way the libraries are usually called: ``lime_image`` with its default
batch size of 10 and quickshift segmentation, ``shap.KernelExplainer`` on the same features,
and pytorch-grad-cam (which backpropagates to the input).

    python -m xai_platform bench --model audio-cnn --model xray-densenet121 [--baselines]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from unittest import mock

import numpy as np

from . import explainers
from .modalities import get_modality
from .models.handle import ModelHandle
from .service import Service

DEFAULT_PARAMS = {"lime": {"num_samples": 1000}, "shap": {"n_evaluations": 500},
                  "integrated_gradients": {"n_steps": 50}}


@dataclass
class Row:
    model: str
    method: str
    seconds: float
    evaluations: int
    forward_seconds: float
    ratio: float
    note: str = ""


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def sample_input(handle: ModelHandle, seed: int = 0) -> np.ndarray:
    """A structured feature plane of the model's modality (e.g. a chest-like image, a harmonic
    spectrogram in dB): (H, W) float32."""
    return get_modality(handle.spec.modality).sample_plane(handle.spec,
                                                           np.random.default_rng(seed))


def forward_seconds(handle: ModelHandle, x: np.ndarray, n: int, batch_size: int,
                    repeats: int) -> float:
    batch = np.repeat(x[None], min(n, batch_size), axis=0)

    def run() -> None:
        done = 0
        while done < n:
            take = min(batch_size, n - done)
            handle.predict(batch[:take], batch_size=take)
            done += take

    return _median_time(run, repeats)[0]


def bench_model(handle: ModelHandle, methods: Sequence[str], *, repeats: int, batch_size: int,
                params: dict[str, dict[str, Any]], baselines: bool) -> list[Row]:
    x = sample_input(handle)
    target = int(np.argmax(handle.predict(x[None])[0]))
    explainers.run("gradcam" if handle.spec.target_layer else "saliency", handle, x, target=target)
    handle.predict(np.repeat(x[None], batch_size, axis=0))  # warm-up (tracing, allocations)
    rows = []
    one_forward = forward_seconds(handle, x, 1, 1, max(repeats, 5))
    for method in methods:
        info = explainers.get_method(method)
        if info.reason_incompatible(handle.spec):
            continue
        p = params.get(method, {})
        def call():
            return explainers.run(method, handle, x, target=target, params=p, seed=0,
                                  batch_size=batch_size)

        if info.kind == "gradient":  # one untimed call: tf.function tracing, first allocations
            call()
        seconds, result = _median_time(call, repeats)
        n = result.attribution.n_evaluations
        ref = one_forward if n == 1 else forward_seconds(handle, x, n, batch_size, repeats)
        rows.append(Row(handle.spec.id, method, seconds, n, ref, seconds / ref))
        print(f"  {method:<22} {seconds:8.3f} s  {n:6d} evals  forward {ref:8.3f} s  "
              f"ratio {seconds / ref:5.2f}", file=sys.stderr)
    if baselines:
        rows += baseline_rows(handle, x, target, params=params, repeats=max(1, repeats // 2),
                              one_forward=one_forward, batch_size=batch_size)
    return rows


def baseline_rows(handle: ModelHandle, x: np.ndarray, target: int, *, params, repeats: int,
                  one_forward: float, batch_size: int) -> list[Row]:
    """The methods called the way the libraries are usually called."""
    from lime import lime_image

    rows = []
    n_lime = params.get("lime", {}).get("num_samples", 1000)

    modality = get_modality(handle.spec.modality)

    def plain_lime():
        explainer = lime_image.LimeImageExplainer(random_state=0)
        img = modality.to_unit(x)  # lime_image segments images in [0, 1]
        # lime_image draws an unconditional tqdm bar into the printed table; mute only that.
        with mock.patch.object(lime_image, "tqdm", lambda items, **_: items):
            return explainer.explain_instance(
                img.astype(np.float64), lambda imgs: handle.predict(
                    modality.from_unit(imgs[..., 0], x), batch_size=10),
                top_labels=None, labels=(target,), num_samples=n_lime, batch_size=10)

    seconds, _ = _median_time(plain_lime, repeats)
    ref = forward_seconds(handle, x, n_lime, batch_size, 1)
    rows.append(Row(handle.spec.id, "lime (lime_image, batch 10, quickshift)", seconds, n_lime,
                    ref, seconds / ref))

    import shap

    from .explainers.perturbation import evaluate_coalitions, features, masked_value
    from .explainers.registry import ExplainContext

    n_shap = params.get("shap", {}).get("n_evaluations", 500)
    ctx = ExplainContext(spec=handle.spec, batch_size=batch_size)
    seg_params = {p.name: p.default for p in explainers.get_method("shap").params_for(
        handle.spec.modality) if p.name != "n_evaluations"}
    segments = features(x, ctx, seg_params)
    m = int(segments.max()) + 1
    base = masked_value(x, handle.spec.modality)

    def plain_shap():
        f = lambda z: evaluate_coalitions(handle, x, base, segments, z.astype(bool), ctx)[:, target]  # noqa: E731
        np.random.seed(0)
        return shap.KernelExplainer(f, np.zeros((1, m))).shap_values(np.ones((1, m)),
                                                                     nsamples=n_shap, silent=True)

    seconds, _ = _median_time(plain_shap, repeats)
    ref = forward_seconds(handle, x, n_shap, batch_size, 1)
    rows.append(Row(handle.spec.id, "shap (KernelExplainer)", seconds, n_shap, ref, seconds / ref))

    if handle.capabilities.reference_cam and handle.spec.target_layer:
        seconds, _ = _median_time(lambda: handle.reference_gradcam(x, target), max(repeats, 3))
        rows.append(Row(handle.spec.id, "gradcam (pytorch-grad-cam)", seconds, 1, one_forward,
                        seconds / one_forward))
    for row in rows:
        print(f"  {row.method:<40} {row.seconds:8.3f} s  ratio {row.ratio:5.2f}", file=sys.stderr)
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| model | method | seconds | model evaluations | plain forward (s) | ratio |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.method} | {r.seconds:.3f} | {r.evaluations} | "
                     f"{r.forward_seconds:.3f} | {r.ratio:.2f} |")
    return "\n".join(lines)


def run_bench(service: Service, model_ids: Sequence[str], *, methods: Sequence[str] | None,
              repeats: int, batch_size: int | None, params: dict[str, dict[str, Any]],
              baselines: bool, as_json: bool) -> int:
    import platform

    rows: list[Row] = []
    methods = list(methods or [m.id for m in explainers.all_methods()])
    for model_id in model_ids:
        handle = service.manager.get(model_id)
        bs = batch_size or handle.default_batch_size
        print(f"{model_id} ({handle.framework}, {handle.device}, input {handle.input_shape}, "
              f"batch {bs})", file=sys.stderr)
        rows += bench_model(handle, methods, repeats=repeats, batch_size=bs,
                            params={**DEFAULT_PARAMS, **params}, baselines=baselines)
    if as_json:
        print(json.dumps({"machine": platform.platform(), "rows": [asdict(r) for r in rows]},
                         indent=2))
    else:
        print(table(rows))
    return 0
