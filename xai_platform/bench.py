"""Benchmark: what each explanation costs, against plain forward passes of the same model.

For every model and method it prints the median seconds over ``repeats`` runs, the number of
model evaluations, and the ratio to the time of the same number of plain batched forward passes
measured in the same run (for Grad-CAM: one forward pass) on the engine the method's passes run
on (``engine``: ONNX Runtime for forward-only methods when the fast path is on, the framework
for gradients). Each row also has the **fastest exact forward budget** for the same number of
evaluations, measured in the same run: the minimum over every exact engine the model has
(PyTorch eager and ONNX Runtime, Keras and OpenVINO f32,
:meth:`~xai_platform.models.handle.ModelHandle.forward_engines`),
at the same batch size (``fastest_forward_s``, ``ratio_to_fastest``). With ``--baselines`` it
also times the methods called the way the libraries are usually called: ``lime_image`` with
its default batch size of 10 and quickshift segmentation, ``shap.KernelExplainer`` on the same
features, shap's usual image call (``shap.Explainer`` with an ``Image`` masker over pixels,
which runs its ``PartitionExplainer``, with the modality's masked value) and pytorch-grad-cam
(which backpropagates to the input).

    python -m xai_platform bench --model audio-cnn --model xray-densenet121 [--baselines]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from unittest import mock

import numpy as np

from . import explainers
from .modalities import get_modality
from .models.handle import ModelHandle
from .preload import preload
from .service import Service

DEFAULT_PARAMS = {"lime": {"num_samples": 1000}, "shap": {"n_evaluations": 500},
                  "integrated_gradients": {"n_steps": 50}}


@dataclass
class Row:
    model: str
    method: str
    seconds: float
    evaluations: int
    forward_seconds: float  #: the same evaluations as plain forward passes on ``engine``
    ratio: float
    note: str = ""
    engine: str = ""  #: where the method's model evaluations ran
    fastest_forward_s: float = float("nan")  #: min over every exact engine, same evaluations
    ratio_to_fastest: float = float("nan")
    #: the forward budget of each engine (name -> seconds), measured in the same run
    engine_forward_s: dict[str, float] = field(default_factory=dict)


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
                    repeats: int, predict: Callable[[np.ndarray], Any] | None = None) -> float:
    """Median seconds of ``n`` plain forward passes of ``x`` in batches of ``batch_size``,
    through ``handle.predict`` or one engine's one-batch ``predict``."""
    batch = np.repeat(x[None], min(n, batch_size), axis=0)
    one = predict or (lambda b: handle.predict(b, batch_size=len(b)))

    def run() -> None:
        done = 0
        while done < n:
            take = min(batch_size, n - done)
            one(batch[:take])
            done += take

    return _median_time(run, repeats)[0]


class ForwardBudgets:
    """Forward budgets of every exact engine of one model, measured once per (evaluations,
    batch size) in this run (so rows with the same count share them)."""

    def __init__(self, handle: ModelHandle, x: np.ndarray, repeats: int) -> None:
        self.handle, self.x, self.repeats = handle, x, repeats
        self.engines = handle.forward_engines()
        self._seen: dict[tuple[int, int], dict[str, float]] = {}

    def __call__(self, n: int, batch_size: int, repeats: int | None = None) -> dict[str, float]:
        key = (n, batch_size)
        if key not in self._seen:
            self._seen[key] = {name: forward_seconds(self.handle, self.x, n, batch_size,
                                                     repeats or self.repeats, fn)
                               for name, fn in self.engines.items()}
        return self._seen[key]

    def row(self, model: str, method: str, seconds: float, n: int, engine: str,
            budgets: dict[str, float]) -> Row:
        ref, fastest = budgets[engine], min(budgets.values())
        return Row(model, method, seconds, n, ref, seconds / ref, engine=engine,
                   fastest_forward_s=fastest, ratio_to_fastest=seconds / fastest,
                   engine_forward_s=dict(budgets))


def engine_speeds(budgets: ForwardBudgets, batch_size: int) -> dict[str, float]:
    """Milliseconds per model evaluation of each engine at ``batch_size`` (two batches)."""
    times = budgets(2 * batch_size, batch_size, max(budgets.repeats, 3))
    return {name: 1e3 * t / (2 * batch_size) for name, t in times.items()}


def bench_model(handle: ModelHandle, methods: Sequence[str], *, repeats: int, batch_size: int,
                params: dict[str, dict[str, Any]], baselines: bool,
                speeds: dict[str, Any] | None = None) -> list[Row]:
    """The rows of one model; ``speeds`` (if given) receives each engine's milliseconds per
    evaluation and the forward path."""
    preload()  # a timed call measures the method, not the imports it makes the first time
    x = sample_input(handle)
    target = int(np.argmax(handle.predict(x[None])[0]))
    explainers.run("gradcam" if handle.spec.target_layer else "saliency", handle, x, target=target)
    budgets = ForwardBudgets(handle, x, repeats)
    for fn in budgets.engines.values():  # warm-up (tracing, allocations) of every engine
        fn(np.repeat(x[None], batch_size, axis=0))
    forward_engine = handle.forward_engine
    ms = engine_speeds(budgets, batch_size)
    exact = handle.exact_engine
    print(f"  forward passes: {handle.forward_path.describe()}", file=sys.stderr)
    print("  ms per evaluation at batch " f"{batch_size}: "
          + ", ".join(f"{name} {v:.2f}" for name, v in ms.items())
          + (f"; {handle.framework} / {exact} = {ms[handle.framework] / ms[exact]:.2f}"
             if exact in ms else ""), file=sys.stderr)
    if speeds is not None:
        speeds.update({"ms_per_evaluation": ms, "batch_size": batch_size,
                       "forward_path": handle.forward_path.to_dict()})
    rows = []
    one = budgets(1, 1, max(repeats, 5))
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
        engine = handle.framework if info.kind == "gradient" else forward_engine
        row = budgets.row(handle.spec.id, method, seconds, n, engine,
                          one if n == 1 else budgets(n, batch_size))
        rows.append(row)
        print(f"  {method:<22} {seconds:8.3f} s  {n:6d} evals  forward {row.forward_seconds:8.3f} "
              f"s ({engine})  ratio {row.ratio:5.2f}  fastest {row.fastest_forward_s:8.3f} s  "
              f"ratio {row.ratio_to_fastest:5.2f}", file=sys.stderr)
    if baselines:
        rows += baseline_rows(handle, x, target, params=params, repeats=max(1, repeats // 2),
                              budgets=budgets, one=one, batch_size=batch_size,
                              engine=forward_engine)
    return rows


def baseline_rows(handle: ModelHandle, x: np.ndarray, target: int, *, params, repeats: int,
                  budgets: ForwardBudgets, one: dict[str, float], batch_size: int,
                  engine: str) -> list[Row]:
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
    rows.append(budgets.row(handle.spec.id, "lime (lime_image, batch 10, quickshift)", seconds,
                            n_lime, engine, budgets(n_lime, batch_size, 1)))

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
    rows.append(budgets.row(handle.spec.id, "shap (KernelExplainer)", seconds, n_shap, engine,
                            budgets(n_shap, batch_size, 1)))

    def plain_partition():  # shap's usual image call, with the modality's masked value
        masker = shap.maskers.Image(base[..., None].astype(np.float64), (*x.shape, 1))
        explainer = shap.Explainer(lambda imgs: handle.predict(
            imgs[..., 0].astype(np.float32), batch_size=batch_size)[:, target], masker)
        return explainer(x[None, ..., None].astype(np.float64), max_evals=n_shap,
                         batch_size=batch_size, silent=True)

    seconds, _ = _median_time(plain_partition, repeats)
    rows.append(budgets.row(handle.spec.id, "shap (PartitionExplainer, pixels)", seconds, n_shap,
                            engine, budgets(n_shap, batch_size, 1)))

    if handle.capabilities.reference_cam and handle.spec.target_layer:
        seconds, _ = _median_time(lambda: handle.reference_gradcam(x, target), max(repeats, 3))
        rows.append(budgets.row(handle.spec.id, "gradcam (pytorch-grad-cam)", seconds, 1,
                                handle.framework, one))
    for row in rows:
        print(f"  {row.method:<40} {row.seconds:8.3f} s  ratio {row.ratio:5.2f}  ratio to "
              f"fastest {row.ratio_to_fastest:5.2f}", file=sys.stderr)
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| model | method | seconds | model evaluations | engine | plain forward (s) | "
             "ratio | fastest exact forward (s) | ratio to fastest |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.method} | {r.seconds:.3f} | {r.evaluations} | "
                     f"{r.engine} | {r.forward_seconds:.3f} | {r.ratio:.2f} | "
                     f"{r.fastest_forward_s:.3f} | {r.ratio_to_fastest:.2f} |")
    return "\n".join(lines)


def totals(rows: list[Row], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per model, the methods' median seconds and model evaluations added up (the library
    baselines left out): what running every method once on one input costs."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.method in methods:
            t = out.setdefault(r.model, {"seconds": 0.0, "evaluations": 0, "methods": []})
            t["seconds"] += r.seconds
            t["evaluations"] += r.evaluations
            t["methods"].append(r.method)
    return out


def _load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (None where the OS gives none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_bench(service: Service, model_ids: Sequence[str], *, methods: Sequence[str] | None,
              repeats: int, batch_size: int | None, params: dict[str, dict[str, Any]],
              baselines: bool, as_json: bool) -> int:
    import platform

    rows: list[Row] = []
    speeds: dict[str, dict[str, Any]] = {}
    methods = list(methods or [m.id for m in explainers.all_methods()])
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, load average {_load_average()}",
          file=sys.stderr)
    for model_id in model_ids:
        handle = service.manager.get(model_id)
        bs = batch_size or handle.default_batch_size
        print(f"{model_id} ({handle.framework}, {handle.device}, input {handle.input_shape}, "
              f"batch {bs})", file=sys.stderr)
        rows += bench_model(handle, methods, repeats=repeats, batch_size=bs,
                            params={**DEFAULT_PARAMS, **params}, baselines=baselines,
                            speeds=speeds.setdefault(model_id, {}))
    total = totals(rows, methods)
    for model_id, t in total.items():
        print(f"{model_id}: {len(t['methods'])} methods in {t['seconds']:.3f} s together "
              f"({t['evaluations']} model evaluations)", file=sys.stderr)
    if as_json:
        print(json.dumps({"machine": platform.platform(), "load_average": _load_average(),
                          "models": speeds, "rows": [asdict(r) for r in rows],
                          "totals": total}, indent=2))
    else:
        print(table(rows))
    return 0
