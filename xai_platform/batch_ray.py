"""``explain-batch --ray`` and ``evaluate --ray``: the same runs through Ray Data, one model
per worker.

Imported only when ``--ray`` is given, so nothing of Ray is loaded otherwise.

Each worker is an actor of a Ray Data actor pool (``map_batches`` with a callable class and
``concurrency``): its constructor builds the model manager and the service once, and every
input it receives goes through :func:`xai_platform.batch.run_item`, the very function of the
in-process run: same resume check, same files, same record, same seeds, so the heatmaps and
scores equal the in-process run's bit for bit (tests/test_batch_ray.py). A worker gets one
input at a time (``batch_size=1``), so a killed run loses only the inputs in flight. An input
that fails is tried again (``retries``) before its error goes into the index.

``--ray auto`` starts a local Ray (or joins the one ``RAY_ADDRESS`` names); ``--ray ADDRESS``
joins a cluster (``ray://head:10001`` or ``head:6379``). Every node needs this repository at
the same path (its weights and configs; a container image does this) and ``--out`` on a shared
file system, since workers write the items themselves.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .batch import (BatchItem, BatchResult, BatchSettings, ItemCallback, item_status,
                    write_index)
from .config import ROOT, PlatformConfig


class BatchWorker:
    """One Ray actor: loads the model once, then explains the inputs it is handed."""

    def __init__(self, *, config: PlatformConfig, device: str | None, settings: BatchSettings,
                 out: str, retries: int) -> None:
        from .models import ModelManager
        from .service import Service, Session

        self.service = Service(ModelManager(config, device=device), config.app)
        self.service.manager.get(settings.model)  # load now, once per worker
        self.session = Session(folder=Path(out) / "items")
        self.settings, self.retries = settings, retries
        self.weights = self.service.manager.weights_hash(settings.model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        from .batch import run_item

        order, rows = [], []
        for i, path, name, label, mask in zip(batch["i"], batch["path"], batch["name"],
                                              batch["label"], batch["mask"]):
            item = BatchItem(Path(str(path)), str(name), str(label) or None,
                             Path(str(mask)) if str(mask) else None)
            done = run_item(self.service, self.session, item, self.settings,
                            weights=self.weights, retries=self.retries)
            self.session.release()
            order.append(int(i))
            rows.append(json.dumps(done, default=str))
        return {"i": order, "rows": rows}


class EvaluateWorker:
    """One Ray actor of ``evaluate --ray``: the model (and its randomised copy) once, then
    :func:`xai_platform.evaluation.report.evaluate_items` on each input it is handed."""

    def __init__(self, *, config: PlatformConfig, device: str | None, batch_size: int | None,
                 model_id: str, items: list[Any], folder: str, methods: list[str],
                 options: dict[str, Any]) -> None:
        from .models import ModelManager

        self.manager = ModelManager(config, device=device, batch_size=batch_size)
        handle = self.manager.get(model_id)
        self.model_id, self.items, self.folder = model_id, items, Path(folder)
        self.methods, self.options = methods, dict(options)
        if "randomization" in options["metrics"]:  # once per worker, from the run's seed
            self.options["randomized"] = handle.randomized(options["n_layers"],
                                                           seed=options["seed"])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        import pickle

        from .evaluation.report import evaluate_items

        order, out = [], []
        for i in batch["i"]:
            ((_, rows, agreement, error),) = list(evaluate_items(
                self.manager, self.model_id, [self.items[int(i)]], self.folder, self.methods,
                **self.options))
            order.append(int(i))
            out.append(pickle.dumps((rows, agreement, error)))
        return {"i": order, "outcome": out}


def evaluate_ray(manager: Any, model_id: str, items: Sequence[Any], folder: Path,
                 methods: Sequence[str], *, metrics: Sequence[str], seed: int,
                 batch_size: int | None, n_layers: int, address: str = "auto",
                 workers: int | None = None, params: Any = None):
    """``evaluate --ray``: yield (item, rows, agreement, error) in the items' order, as
    :func:`xai_platform.evaluation.report.evaluate_items` does in-process."""
    import pickle

    import ray.data

    started = _start(address)
    try:
        gpus = _gpus(manager.device)
        workers = workers or _default_workers(gpus)
        source = ray.data.from_items([{"i": i} for i in range(len(items))],
                                     override_num_blocks=max(1, min(len(items), 4 * workers)))
        results = source.map_batches(
            EvaluateWorker, batch_size=1, concurrency=workers, num_cpus=1, num_gpus=gpus,
            batch_format="numpy", fn_constructor_kwargs={
                "config": manager.config, "device": manager.device,
                "batch_size": manager.batch_size, "model_id": model_id, "items": list(items),
                "folder": str(folder), "methods": list(methods),
                "options": {"metrics": tuple(metrics), "seed": seed, "batch_size": batch_size,
                            "n_layers": n_layers, "params": params or {}}})
        done = {int(r["i"]): pickle.loads(r["outcome"]) for r in results.iter_rows()}
    finally:
        if not started:
            import ray

            ray.shutdown()
    for i, item in enumerate(items):
        rows, agreement, error = done[i]
        yield item, rows, agreement, error


def _start(address: str) -> bool:
    """Start (or join) Ray unless it runs already; returns whether it did run already."""
    import ray
    import ray.data

    started = ray.is_initialized()
    if not started:
        # Workers import this package from the repository (module docstring).
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        ray.init(address=None if address == "auto" else address, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    if not os.environ.get("XAI_DEBUG"):  # Ray Data's own execution notes, unless --debug
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours is the one line on stderr
    context.execution_options.verbose_progress = False
    return started


def _default_workers(gpus: float) -> int:
    import ray

    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU", 0) if gpus else resources.get("CPU", 1)))


def _gpus(device: str | None) -> float:
    """1 GPU per worker when the run is on CUDA (asked, or 'auto' on a cluster with GPUs)."""
    import ray

    if device and device.startswith("cuda"):
        return 1.0
    if device in (None, "auto"):
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return 0.0


def run_batch_ray(config: PlatformConfig, items: Sequence[BatchItem], settings: BatchSettings,
                  *, out: Path, address: str = "auto", workers: int | None = None,
                  device: str | None = None, retries: int = 1,
                  on_item: ItemCallback | None = None) -> BatchResult:
    """:func:`xai_platform.batch.run_batch` on Ray (module docstring). ``workers``: actors in
    the pool (default: the cluster's GPUs when on CUDA, else its CPUs)."""
    import ray
    import ray.data

    out = Path(out)
    (out / "items").mkdir(parents=True, exist_ok=True)
    started = _start(address)
    try:
        gpus = _gpus(device)
        workers = workers or _default_workers(gpus)
        source = ray.data.from_items(
            [{"i": i, "path": str(it.path), "name": it.name, "label": it.label or "",
              "mask": str(it.mask) if it.mask else ""} for i, it in enumerate(items)],
            override_num_blocks=max(1, min(len(items), 4 * workers)))
        results = source.map_batches(
            BatchWorker, batch_size=1, concurrency=workers, num_cpus=1, num_gpus=gpus,
            batch_format="numpy",
            fn_constructor_kwargs={"config": config, "device": device, "settings": settings,
                                   "out": str(out), "retries": retries})
        return _collect(results, items, out=out, on_item=on_item)
    finally:
        if not started:
            ray.shutdown()


def _collect(results: Any, items: Sequence[BatchItem], *, out: Path,
             on_item: ItemCallback | None) -> BatchResult:
    """Stream the workers' rows as inputs finish (progress), in the inputs' order at the end;
    on Ctrl-C, the index of what finished."""
    begun = time.perf_counter()
    by_item: dict[int, list[dict[str, Any]]] = {}
    computed = 0
    try:
        for record in results.iter_rows():
            new = json.loads(record["rows"])
            by_item[int(record["i"])] = new
            status = item_status(new)
            computed += status != "resumed"
            if on_item is not None:
                on_item(len(by_item), len(items), computed, items[int(record["i"])].name,
                        status)
    finally:
        rows = [r for i in sorted(by_item) for r in by_item[i]]
        index = write_index(rows, out) if rows else (out / "index.csv", None)
    return BatchResult.from_rows(rows, index, time.perf_counter() - begun)


__all__ = ["BatchWorker", "EvaluateWorker", "evaluate_ray", "run_batch_ray"]
