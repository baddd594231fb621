"""The one service under every face: prepare -> predict -> explain -> readouts -> export.

The Gradio pages, the API endpoints, the CLI, ``evaluate`` and ``bench`` call this, so they
compute the same things and write the same record (weights sha256, library versions, seed,
parameters, timings). Nothing here imports Gradio, so it is tested without a browser.

Isolation between users: every request builds its own explainer context (seed, RNG, progress,
cancel flag); models are shared but their hooks are taken under the handle's lock and removed
before it is released; caches live in the :class:`Session` each browser tab owns.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import AppSettings, ModelSpec, shown_weights
from .errors import CancelledError, InputError
from .explainers import compatibility, get_method
from .explanation import Explanation
from .modalities import Readout, get_modality
from .models import ModelManager
from .files import sha256 as file_digest
from .files import write_atomic
from .pipeline import Analysis, analyse, explain, prepare

log = logging.getLogger(__name__)

#: Session folders live here; the app serves files from it (Gradio's allowed_paths), and every
#: folder has an unguessable random name.
SESSION_ROOT = Path(tempfile.gettempdir()) / "xai-platform-sessions"

_LIBRARIES = ("numpy", "torch", "torchvision", "tensorflow-cpu", "tensorflow", "keras", "captum",
              "grad-cam", "shap", "lime", "librosa", "torchxrayvision", "pydicom", "gradio",
              "onnx", "onnxruntime")


def library_versions() -> dict[str, str]:
    out = {"xai_platform": __version__}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


class Session:
    """One browser session's state: caches and a cancel flag. Kept in ``gr.State``, never in a
    module global, so no result or flag crosses users."""

    max_explanations = 64
    max_analyses = 16

    def __init__(self, folder: Path | None = None) -> None:
        self.explanations: OrderedDict[tuple, Explanation] = OrderedDict()
        self.analyses: OrderedDict[tuple, Analysis] = OrderedDict()
        self.scorecards: dict[tuple, Any] = {}
        self.cancel = threading.Event()
        self.computed = 0  # explanations actually computed (cache misses), for tests and stats
        self.scored = 0  # scorecards actually computed (the comparison page times these)
        self._dir: Path | None = folder
        self._own_dir = folder is None

    @property
    def dir(self) -> Path:
        """The folder for this session's exports (figures, JSON records, clips): the one given
        (the CLI's --out), else a private temporary one."""
        if self._dir is None:
            SESSION_ROOT.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix="s-", dir=SESSION_ROOT))
        return self._dir

    def release(self) -> None:
        """Drop the cached analyses, explanations and scorecards (the folder stays)."""
        self.explanations.clear()
        self.analyses.clear()
        self.scorecards.clear()

    def close(self) -> None:
        if self._dir is not None and self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        figure = sys.modules.get("xai_platform.visualization.figure")
        if figure is not None:  # drawn figures kept for the next card hold the inputs drawn
            figure.forget_kept()

    def __deepcopy__(self, memo: dict) -> Session:  # gr.State copies its initial value per user
        return Session()


@dataclass(frozen=True)
class ModelRow:
    id: str
    name: str
    modality: str
    framework: str
    state: str
    reason: str
    notice: str

    @property
    def label(self) -> str:
        tag = {"ready": "", "untrained": " (untrained: no verdict)",
               "unavailable": " (unavailable)"}[self.state]
        return f"{self.name}{tag}"


#: where the app keeps its pages' times between runs (``$XAI_TIMES_FILE``, else the cache)
TIMES_ENV = "XAI_TIMES_FILE"


def default_times_file() -> Path:
    """The app's times file: ``$XAI_TIMES_FILE``, else ``xai-platform/times.json`` in the user's
    cache folder."""
    if os.environ.get(TIMES_ENV):
        return Path(os.environ[TIMES_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xai-platform" / "times.json"


def machine_fingerprint() -> str:
    """This machine as the times depend on it: the CPU's model name and how many there are."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} x{os.cpu_count()}"


def run_order(methods: list[str]) -> list[str]:
    """The order a comparison runs its methods: fastest first."""
    return sorted(methods, key=lambda m: (get_method(m).speed, m))


def step_text(label: str, what: str) -> str:
    """A progress line: the method's label, then its step where it names one ("LIME:
    evaluating samples")."""
    return f"{label}: {what}" if what else label


class Pace:
    """How long a method has left from its own pace, where no earlier run of it says: its
    reports' fractions (an explainer reports evaluations done over its total) against the
    seconds since its first report, so loading the model and the first batch are left out.
    Says nothing until :data:`MIN_DONE` more of the method is done and :data:`MIN_SECONDS`
    have passed (a fast method never gets a countdown), nor under :data:`MIN_LEFT` before the
    end ("about 0 s left"), nor once the method is done (what follows, such as scoring, has no
    steps)."""

    MIN_DONE = 0.1
    MIN_SECONDS = 2.0
    MIN_LEFT = 1.0

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._first: tuple[float, float] | None = None  # (fraction, seconds) at the first report

    def left(self, f: float) -> float | None:
        """Seconds left at fraction ``f`` done, or None while it cannot tell."""
        now = self._clock()
        if self._first is None:
            self._first = (f, now)
            return None
        f0, t0 = self._first
        if f >= 1.0 or f - f0 < self.MIN_DONE or now - t0 < self.MIN_SECONDS:
            return None
        left = (now - t0) * (1.0 - f) / (f - f0)
        return left if left >= self.MIN_LEFT else None


class MethodTimes:
    """How long explanations took: a method's explanation per model and resolved parameters
    (recorded by :meth:`Service.explain` when it computes one), and its scoring per model,
    parameters and metrics (recorded by the Comparison page, the drawing of its card included).
    The latest computation counts; a cached result is not timed. From them the pages say how
    long a request will take and pace their progress bars. Shared by every session: a duration
    is not a result.

    ``file``: kept there between runs (JSON, written whole after each record), under this
    machine's :func:`machine_fingerprint`; a model is named with its weights and engine by the
    service, so other weights, another engine or another machine start without times. A file
    that cannot be read is ignored (logged) and rewritten."""

    def __init__(self, file: Path | None = None) -> None:
        self.file = file
        self._machine = machine_fingerprint()
        self._lock = threading.Lock()
        self._all: dict[str, Any] = {}
        self._times: dict[str, float] = {}
        if file is not None and file.is_file():
            try:
                self._all = json.loads(file.read_text(encoding="utf-8"))
                mine = self._all.get("machines", {}).get(self._machine, {})
                self._times = {str(k): float(v) for k, v in mine.items()
                               if isinstance(v, (int, float)) and v >= 0}
            except (OSError, ValueError, AttributeError) as exc:
                log.warning("times file %s unreadable (%s); starting without times", file, exc)
                self._all, self._times = {}, {}

    @staticmethod
    def _key(*parts: Any) -> str:
        return json.dumps(parts, sort_keys=True, default=str)

    def _set(self, key: str, seconds: float) -> None:
        with self._lock:
            self._times[key] = float(seconds)
            if self.file is None:
                return
            machines = self._all.get("machines")
            if not isinstance(machines, dict):
                machines = self._all["machines"] = {}
            machines[self._machine] = dict(self._times)
            try:
                write_atomic(self.file, json.dumps(self._all, indent=0, sort_keys=True))
            except OSError as exc:
                log.warning("times file %s not written (%s)", self.file, exc)

    def record_explain(self, model: str, method: str, params: dict[str, Any],
                       seconds: float) -> None:
        self._set(self._key("explain", model, method, params), seconds)

    def record_score(self, model: str, method: str, params: dict[str, Any],
                     metrics: tuple[str, ...], seconds: float) -> None:
        self._set(self._key("score", model, method, params, sorted(metrics)), seconds)

    def models(self, weights: str) -> list[str]:
        """The models (as :meth:`Service.timed_as` names them: id, weights, engine) with an
        explanation timed here whose name starts with ``weights`` (id and weights)."""
        with self._lock:
            keys = list(self._times)
        found = set()
        for key in keys:
            try:
                kind, model = json.loads(key)[:2]
            except (ValueError, TypeError):
                continue
            if kind == "explain" and isinstance(model, str) and model.startswith(weights + " "):
                found.add(model)
        return sorted(found)

    def explain_seconds(self, model: str, method: str, params: dict[str, Any]
                        ) -> float | None:
        """What the method took to explain on this model with these resolved parameters."""
        with self._lock:
            return self._times.get(self._key("explain", model, method, params))

    def comparison(self, model: str, params: dict[str, dict[str, Any]],
                   metrics: tuple[str, ...]) -> dict[str, tuple[float, float]] | None:
        """(explain, score) seconds of each method of ``params`` (method -> its resolved
        parameters) on ``model`` with these metrics; None unless each was timed (an estimate
        missing a method would mislead)."""
        found = {}
        with self._lock:
            for method, resolved in params.items():
                explain = self._times.get(self._key("explain", model, method, resolved))
                score = (self._times.get(self._key("score", model, method, resolved,
                                                   sorted(metrics))) if metrics else 0.0)
                if explain is None or score is None:
                    return None
                found[method] = (explain, score)
        return found or None


class Service:
    """The platform behind the UI: models, inputs, predictions, explanations, exports."""

    def __init__(self, manager: ModelManager, settings: AppSettings | None = None) -> None:
        self.manager = manager
        self.settings = settings or manager.config.app
        self._lock = threading.Lock()
        self._randomized: dict[str, tuple] = {}
        self.times = MethodTimes()  # the app keeps them between runs (ui.app.build_app)

    # --- catalogue ----------------------------------------------------------------------------
    def models(self, modality: str | None = None) -> list[ModelRow]:
        rows = []
        for spec in self.manager.specs:
            if modality and spec.modality != modality:
                continue
            status = self.manager.status(spec.id)
            rows.append(ModelRow(spec.id, spec.name, spec.modality, spec.framework, status.state,
                                 status.reason, spec.notice))
        return rows

    def timed_as(self, model_id: str) -> str:
        """The model as its times are kept: its id, weights and forward engine (other weights
        or another engine take other times)."""
        forward = self.manager.forward_path(model_id)
        engine = "not loaded" if forward is None else f"{forward.engine} {forward.precision}"
        return f"{self._weights_named(model_id)} {engine}"

    def _weights_named(self, model_id: str) -> str:
        return f"{model_id} {(self.manager.weights_hash(model_id) or 'no weights')[:16]}"

    def looked_up_as(self, model_id: str) -> str:
        """The model as its times are looked up: once loaded, as they are kept
        (:meth:`timed_as`). Before it loads (its engine is chosen then: the parity check, the
        precision flag), as it ran on this machine before, where its times were kept for one
        engine, or for one engine of the precision these settings ask for (the fast path off:
        of the model's own framework); else as not loaded, which has no times."""
        if self.loaded(model_id):
            return self.timed_as(model_id)
        weights = self._weights_named(model_id)
        ran = self.times.models(weights)
        if len(ran) > 1 and self.manager.fast_forward:
            ran = [m for m in ran if m.endswith(" " + self.manager.forward_precision)]
        elif len(ran) > 1:
            ran = [m for m in ran if m.split(" ")[-2] == self.spec(model_id).framework]
        return ran[0] if len(ran) == 1 else f"{weights} not loaded"

    def loaded(self, model_id: str | None) -> bool:
        """Whether the model is loaded (a request on it then starts without loading it)."""
        return bool(model_id) and self.manager.forward_path(model_id) is not None

    def resolved(self, model_id: str, method: str, params: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
        """The method's parameters for this model's inputs, defaults filled in (what
        :meth:`explain` runs it with)."""
        return get_method(method).resolve_params(params, modality=self.spec(model_id).modality)

    def spec(self, model_id: str) -> ModelSpec:
        return self.manager.spec(model_id)

    def methods(self, model_id: str) -> tuple[list[str], dict[str, str]]:
        """(ids of the methods that apply, {method label: why not} for the others)."""
        comp = compatibility(self.spec(model_id))
        return ([c.method.id for c in comp if c.ok],
                {c.method.label: c.reason for c in comp if not c.ok})

    # --- prediction ---------------------------------------------------------------------------
    def analyse(self, session: Session, path: str | Path | None, model_id: str) -> Analysis:
        if not path:
            raise InputError("No input yet: upload a file (or record audio) first.")
        path = Path(path)
        size_mb = path.stat().st_size / 1e6 if path.exists() else 0
        if size_mb > self.settings.max_upload_mb:
            raise InputError(f"The file is {size_mb:.0f} MB; the limit is "
                             f"{self.settings.max_upload_mb:.0f} MB (app.max_upload_mb).")
        key = (file_digest(path), model_id)
        if key not in session.analyses:
            handle = self.manager.get(model_id)
            prepared = prepare(path, handle.spec, settings=self.settings, name=path.name)
            session.analyses[key] = analyse(handle, prepared, settings=self.settings)
            while len(session.analyses) > session.max_analyses:
                session.analyses.popitem(last=False)
        session.analyses.move_to_end(key)
        return session.analyses[key]

    # --- explanation --------------------------------------------------------------------------
    def explain(self, session: Session, path: str | Path | None, model_id: str, method: str, *,
                params: dict[str, Any] | None = None, seed: int = 0, window: int | None = None,
                target: str | int | None = None, batch_size: int | None = None,
                progress: Callable[[float, str], None] | None = None,
                new_request: bool = True) -> Explanation:
        """One explanation, computed once per session for the same input, model, method,
        parameters, seed, window and target. ``new_request``: clear the session's cancel flag
        first (False for the second and later steps of a batch the caller started, so a
        Cancel pressed between steps is not lost)."""
        analysis = self.analyse(session, path, model_id)
        spec = self.spec(model_id)
        info = get_method(method)
        resolved = info.resolve_params(params, modality=spec.modality)
        used_seed = int(seed) if info.uses_seed(resolved) else None
        key = (file_digest(path), model_id, method, json.dumps(resolved, sort_keys=True),
               used_seed, window, target)
        cached = session.explanations.get(key)
        if cached is not None:
            session.explanations.move_to_end(key)
            return cached
        if new_request:
            session.cancel.clear()
        start = time.perf_counter()
        expl = explain(self.manager.get(model_id), analysis, method, window=window, target=target,
                       params=resolved, seed=int(seed), batch_size=batch_size,
                       progress=progress, cancel=session.cancel)
        self.times.record_explain(self.timed_as(model_id), method, resolved,
                                  time.perf_counter() - start)
        session.computed += 1
        session.explanations[key] = expl
        while len(session.explanations) > session.max_explanations:
            session.explanations.popitem(last=False)
        return expl

    # --- explanation quality -------------------------------------------------------------------
    def randomized(self, model_id: str):
        """The model with its top layers re-initialised (for the randomisation test), built once
        per loaded model and shared read-only. On the fast path, or where the network can split
        itself, it reuses the trained model's trunk from then on (:mod:`.models.shared_trunk`):
        build it before the explanations it will re-run, and their batches are not computed
        twice."""
        handle = self.manager.get(model_id)
        with self._lock:
            cached = self._randomized.get(model_id)
            if cached is None or cached[0] is not handle:
                from .evaluation.metrics import RANDOMIZE_LAYERS

                cached = (handle, handle.randomized(RANDOMIZE_LAYERS, seed=0))
                from .models.shared_trunk import can_share, share_trunk

                if can_share(handle):
                    share_trunk(handle, cached[1])
                self._randomized[model_id] = cached
        return cached[1]

    def compare(self, session: Session, path: str | Path | None, model_id: str,
                methods: list[str], *, seed: int = 0, metrics: tuple[str, ...] = (),
                progress: Callable[..., None] | None = None):
        """Several methods on one input and model, as the XAI Comparison page and ``/compare``
        run them: yield (done, total, method id, explanation, scorecard or None) as each
        method finishes, fastest first (:func:`run_order`); the scorecard when ``metrics``
        (any of :data:`~xai_platform.evaluation.scorecard.COSTLY_METRICS`) are asked for. The
        session's Cancel flag is cleared once at the start and checked between methods (and
        inside each explainer's batches): cancelling raises :class:`CancelledError` after the
        methods already done.

        Each explanation computed (not cached) is timed (:meth:`explain`), and each scorecard
        computed here, from the end of the explanation until the caller asks for the next
        method (so a page's drawing of the card counts); where every method has both times on
        this model, ``progress(fraction, text)`` advances by them and says how long is left,
        else by methods, with the time left in a long method from its own pace (:class:`Pace`)."""
        from .evaluation.scorecard import COSTLY_METRICS

        if not methods:
            raise InputError("No method to compare: name at least one.")
        unknown = [name for name in metrics if name not in COSTLY_METRICS]
        if unknown:  # before any method runs
            raise InputError(f"unknown metric '{unknown[0]}'; use any of: "
                             f"{', '.join(COSTLY_METRICS)}.")
        order = run_order(methods)
        defaults = {m: self.resolved(model_id, m) for m in order}  # what explain runs
        times = self.times.comparison(self.looked_up_as(model_id), defaults, metrics)
        weight = {m: sum(times[m]) if times else 1.0 for m in order}
        total_weight = sum(weight.values())
        session.cancel.clear()
        if progress is not None and not self.loaded(model_id):
            progress(0.0, f"Loading {self.spec(model_id).name}")  # the first request's wait
        self.prepare_scoring(model_id, order, metrics)
        before = 0.0
        for i, method in enumerate(order):
            def report(f: float, what: str, i=i, before=before, method=method,
                       pace=Pace()) -> None:
                if progress is None:
                    return
                text = step_text(get_method(method).label, what)
                if times is None:  # not timed yet: the bar counts methods, and says so
                    left = pace.left(f)
                    text += f" · method {i + 1} of {len(order)}"
                    progress((i + f) / len(order), text if left is None
                             else f"{text} · about {left:.0f} s left in this method")
                    return
                done = before + f * times[method][0]  # scoring (f = 1) has no steps of its own
                progress(done / total_weight,
                         f"{text} · about {max(total_weight - done, 0.0):.0f} s left")
            if session.cancel.is_set():
                raise CancelledError(f"cancelled after {i} of {len(order)} methods.")
            scored = session.scored
            expl = self.explain(session, path, model_id, method, seed=int(seed or 0),
                                progress=report, new_request=False)
            explained = time.perf_counter()
            if metrics:
                report(1.0, "scoring the explanation")
            card = self.score(session, expl, tuple(metrics)) if metrics else None
            before += weight[method]
            yield i + 1, len(order), method, expl, card
            # back from the caller, which drew the card: its time counts as the scoring's too
            if session.scored > scored:  # a cached scorecard took no time
                self.times.record_score(self.timed_as(model_id), method, defaults[method],
                                        tuple(metrics), time.perf_counter() - explained)

    def prepare_scoring(self, model_id: str, methods: list[str], metrics: tuple[str, ...]
                        ) -> None:
        """Before a run of ``methods`` scored with ``metrics``: where the randomisation check
        will re-run LIME or SHAP, build the randomised model first (:meth:`randomized`), so
        its re-runs reuse the trained run's trunk batches."""
        if "randomization" in metrics and any(get_method(m).uses_features for m in methods):
            try:
                self.randomized(model_id)
            except NotImplementedError:
                pass  # a format that cannot re-initialise: the scorecard says so

    def score(self, session: Session, expl: Explanation, metrics: tuple[str, ...], *,
              region_mask: np.ndarray | None = None):
        """The scorecard of one explanation (cached per session). ``region_mask``: (H, W) bool
        ground truth on the explained plane (a lesion), which adds localisation."""
        from .evaluation.scorecard import score_explanation

        region = None if region_mask is None else hashlib.sha256(
            np.ascontiguousarray(region_mask).tobytes()).hexdigest()
        key = (id(expl), tuple(sorted(metrics)), region)
        if key not in session.scorecards:
            randomized = self.randomized(expl.model_id) if "randomization" in metrics else None
            session.scorecards[key] = score_explanation(
                self.manager.get(expl.model_id), None, expl, metrics=metrics,
                randomized=randomized, region_mask=region_mask,
                lung_mask=expl.extras.get("focus_mask"))
            session.scored += 1
            while len(session.scorecards) > session.max_explanations:
                session.scorecards.pop(next(iter(session.scorecards)))
        return session.scorecards[key]

    # --- exports ------------------------------------------------------------------------------
    def record(self, expl: Explanation) -> dict[str, Any]:
        """The JSON record of an explanation: model and weights hash, method, parameters, seed,
        library versions, timings, and which engine ran the forward passes (``forward``: ONNX
        Runtime with its parity, or the framework and why). The CLI, the API and the download
        write this same record."""
        spec = self.spec(expl.model_id)
        record = expl.to_record()
        forward = self.manager.forward_path(expl.model_id)
        record.update({"weights": shown_weights(spec.weights),
                       "weights_sha256": self.manager.weights_hash(expl.model_id),
                       "framework": spec.framework, "libraries": library_versions(),
                       "forward": forward.to_dict() if forward is not None else None,
                       "heatmap_stats": heatmap_summary(expl)})
        return record

    def figure(self, session: Session, expl: Explanation, *, dpi: int = 110,
               stem: str | None = None) -> Path:
        """The explanation's three-panel figure as a PNG file in the session's folder, as the
        pages show it and the Classification page's download holds it: drawn at ``dpi``,
        compressed fast (:data:`~xai_platform.visualization.figure.FAST_PNG_LEVEL`; a page
        hands Gradio the file, which it would otherwise encode again from an array at level
        6). ``stem`` names it (default: model, method, a content hash, and the dpi unless 110);
        written whole or not at all."""
        from .visualization.figure import FAST_PNG_LEVEL, to_png

        stem = stem or (_stem(expl) + ("" if dpi == 110 else f"__{dpi}dpi"))
        return write_atomic(session.dir / f"{stem}.png",
                            to_png(expl, dpi=dpi, compress_level=FAST_PNG_LEVEL))

    def export(self, session: Session, expl: Explanation, *, stem: str | None = None,
               extra: dict[str, Any] | None = None) -> tuple[Path, Path, Path]:
        """Write the figure (PNG), the JSON record and the heatmap (``.npy``, float32) into the
        session's folder; ``stem`` names them (default: model, method and a content hash);
        ``extra`` adds fields to the record. Each file is written whole or not at all, the
        record last, so a record on disk means its figure and heatmap are complete."""
        import io

        stem = stem or _stem(expl)
        png = self.figure(session, expl, stem=stem)
        buf = io.BytesIO()
        np.save(buf, expl.heatmap)
        heatmap = write_atomic(session.dir / f"{stem}.npy", buf.getvalue())
        record = write_atomic(session.dir / f"{stem}.json", json.dumps(
            self.record(expl) | {"figure": str(png), "heatmap": str(heatmap)} | (extra or {}),
            indent=2, default=str))
        return png, record, heatmap

    def report(self, session: Session, path: str | Path, model_id: str,
               explanations: list[Explanation], *, cards: dict[str, Any] | None = None,
               stem: str | None = None, title: str | None = None) -> Path:
        """Write one self-contained HTML report (figures embedded, no external request) of
        ``explanations`` of the input at ``path`` into the session's folder: the input, the
        prediction with its threshold and calibration, the model card's summary, each method's
        figure and scorecard (``cards``: method -> Scorecard, where computed), the agreement
        between methods (two or more) and each explanation's record."""
        from .reports import ReportInput, explanation_report

        analysis = self.analyse(session, path, model_id)
        handle = self.manager.get(model_id)
        source = ReportInput.from_path(Path(path), get_modality(handle.spec.modality),
                                       settings=self.settings)
        html = explanation_report(
            source, analysis.prediction, spec=handle.spec, card=self.manager.card(model_id),
            calibration=handle.calibration, notes=analysis.notes, explanations=explanations,
            records=[self.record(e) for e in explanations], cards=cards or {}, title=title)
        name = stem or (f"{Path(path).stem}__{model_id}__"
                        f"{'-'.join(e.method for e in explanations)[:80]}__report")
        return write_atomic(session.dir / f"{name}.html", html)

    def readout(self, session: Session, path: str | Path, expl: Explanation, *,
                stem: str | None = None) -> Readout | None:
        """The modality's extra views of an explanation (audio: band and time profiles and two
        listening clips, re-scored by the model), files written into the session's folder
        under ``stem``."""
        analysis = self.analyse(session, path, expl.model_id)
        return get_modality(expl.modality).readout(self.manager.get(expl.model_id), expl,
                                                   analysis.prepared,
                                                   session.dir / (stem or _stem(expl)))

    def timeline(self, analysis: Analysis) -> list[tuple[float, float | None]]:
        """(window start in s, probability of the positive class) for each window; None for
        a window left out of the verdict (audio: no speech, ``prepared.unscored_label``)."""
        spec = self.spec(analysis.model_id)
        positive = spec.positive_index
        starts = analysis.prepared.starts_s
        if starts is None or positive is None:
            return []
        scored = analysis.prepared.scored_mask
        return [(float(s), float(p) if ok else None)
                for s, p, ok in zip(starts, analysis.window_probabilities[:, positive], scored)]

    def timeline_records(self, analysis: Analysis) -> list[dict[str, Any]]:
        """:meth:`timeline` as JSON records (the CLI and the API): ``start_s``, ``score``
        (None for a window left out) and, for those, ``skipped`` saying why ("no speech")."""
        why = analysis.prepared.unscored_label or "not scored"
        return [{"start_s": s, "score": p} | ({} if p is not None else {"skipped": why})
                for s, p in self.timeline(analysis)]


def _stem(expl: Explanation) -> str:
    """A file stem unique to the explanation: model, method and a hash of its record."""
    tag = hashlib.sha256(json.dumps(expl.to_record(), sort_keys=True, default=str)
                         .encode()).hexdigest()[:10]
    return f"{expl.model_id}__{expl.method}__{tag}"


def heatmap_summary(expl: Explanation) -> dict[str, Any]:
    stats = expl.heatmap_stats()
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in stats.items()}


__all__ = ["ModelRow", "Service", "Session", "file_digest", "heatmap_summary", "library_versions"]
