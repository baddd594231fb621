"""Batch explanation of a whole data set, resumable, with one index table.

    python -m xai_platform explain-batch INPUTS --model ID [--method ID ...] --out DIR

``INPUTS`` is a folder (every file of the model's modality under it, ``*.mask.*`` files left
out), a glob (``'data/**/*.png'``, quoted) or a CSV with a ``path`` column (relative to the
CSV's folder) and optional ``label`` and ``mask`` columns (``mask``: a ground-truth region, an
image or ``.npy`` over the input, as ``evaluate`` reads them; it adds localisation scores).

Every (input, method) goes through :class:`xai_platform.service.Service` as in the app and
writes, under ``DIR/items/``, the figure (PNG), the heatmap (``.npy``, float32) and the record
(``.json``: the service's record plus a ``batch`` part with the fingerprint, the scores and
the index row). ``DIR/index.parquet`` and ``DIR/index.csv`` hold one row per (input, method).

**Resume rule**: a (input, method) is skipped when its record exists and its fingerprint
(model, weights sha256, method, resolved parameters, seed, target, window, metrics, the
input's and the mask's sha256) equals this run's, and its figure and heatmap are there. Files
are written whole or not at all, the record last (:func:`xai_platform.files.write_atomic`), so
a killed run loses at most the input in flight. A failed input is a row with ``status ==
"error"`` and its error in one line; it has no record, so the next run tries it again.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, XAIError
from .explainers import get_method
from .files import sha256 as file_digest
from .files import write_atomic
from .modalities import get_modality
from .service import Service, Session

#: The first columns of the index, in this order; metric columns follow.
INDEX_COLUMNS = (
    "input", "label", "mask", "method", "status", "error", "resumed", "prediction", "score",
    "correct", "withheld", "confirmed", "decided", "untrained", "threshold", "verdict", "target",
    "window", "seed", "params", "metrics", "weights_sha256", "input_sha256", "explain_seconds",
    "n_evaluations", "score_seconds", "score_evaluations", "seconds", "figure", "heatmap",
    "record")
MASK_COLUMNS = ("mask", "mask_path", "lesion_mask", "lesion_mask_path")


@dataclass(frozen=True)
class BatchItem:
    """One input: its path, the name the index shows, and its optional ground truth."""

    path: Path
    name: str
    label: str | None = None
    mask: Path | None = None

    @property
    def stem(self) -> str:
        """A file stem unique to the input's name: readable, with a short hash so that two
        ``scan.png`` in different folders do not collide."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name.replace("/", "__"))[-60:]
        return f"{safe.strip('_') or 'input'}-{hashlib.sha1(self.name.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class BatchSettings:
    """What a batch run computes; every field is in each record's fingerprint."""

    model: str
    methods: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)  # shared; each method takes its own
    seed: int = 0
    target: str | None = None
    window: int | None = None
    metrics: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "methods": list(self.methods), "params": self.params,
                "seed": self.seed, "target": self.target, "window": self.window,
                "metrics": list(self.metrics)}


# --- inputs ------------------------------------------------------------------------------

def _accepts(path: Path, modality: str) -> bool:
    return get_modality(modality).accepts(path) and ".mask." not in path.name


def list_batch_inputs(inputs: str | Path, modality: str, *, exclude: Path | None = None
                      ) -> list[BatchItem]:
    """The inputs named by ``inputs`` (module docstring), in a stable order. ``exclude``: a
    folder whose files are never inputs (the run's own output, when it lies inside a folder
    of inputs: its figures are PNGs too)."""
    source = Path(inputs)
    skip = exclude.resolve() if exclude is not None else None

    def wanted(p: Path) -> bool:
        return p.is_file() and _accepts(p, modality) and (
            skip is None or not p.resolve().is_relative_to(skip))

    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if wanted(p))
        if not files:
            kind = get_modality(modality)
            raise InputError(f"{source}: no {modality} files ({', '.join(kind.extensions)}) "
                             "under this folder.")
        return [BatchItem(p, p.relative_to(source).as_posix()) for p in files]
    if source.suffix.lower() == ".csv" and source.is_file():
        return _from_csv(source)
    if source.suffix.lower() == ".csv":
        raise InputError(f"{source}: CSV file not found. Check the path.")
    matches = sorted(Path(p) for p in glob.glob(str(inputs), recursive=True))
    files = [p for p in matches if wanted(p)]
    if not files:
        raise InputError(f"{inputs}: no folder, CSV or {modality} files matching this glob "
                         "(quote a glob so the shell does not expand it).")
    return [BatchItem(p, p.as_posix()) for p in files]


def _from_csv(path: Path) -> list[BatchItem]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "path" not in rows[0]:
        raise InputError(f"{path}: needs a 'path' column and at least one row.")
    folder = path.parent
    items: dict[str, BatchItem] = {}
    for row in rows:
        name = (row.get("path") or "").strip()
        if not name:
            continue
        mask = next((row[c].strip() for c in MASK_COLUMNS if (row.get(c) or "").strip()), None)
        items.setdefault(name, BatchItem(
            folder / name, name, (row.get("label") or "").strip() or None,
            folder / mask if mask else None))
    if not items:
        raise InputError(f"{path}: every row's path is empty.")
    return list(items.values())


# --- the run -----------------------------------------------------------------------------

@dataclass
class BatchResult:
    rows: list[dict[str, Any]]
    index: tuple[Path, Path | None]  # (csv, parquet or None without pyarrow)
    computed: int  # (input, method) pairs computed by this run
    resumed: int  # pairs found done by an earlier run
    failed: int
    seconds: float

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], index: tuple[Path, Path | None],
                  seconds: float) -> BatchResult:
        """The result of a run from its index rows (one per input and method)."""
        return cls(rows, index,
                   computed=sum(1 for r in rows if r["status"] == "ok" and not r["resumed"]),
                   resumed=sum(1 for r in rows if r["resumed"]),
                   failed=sum(1 for r in rows if r["status"] != "ok"), seconds=seconds)


#: on_item(done, total, computed, name, status) after each input: inputs done and computed (not
#: resumed) so far, of total; status: ok, resumed or error
ItemCallback = Callable[[int, int, int, str, str], None]


def error_line(exc: BaseException) -> str:
    """An exception as one line for the index: a platform error's message, else its type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, XAIError):
        text = f"{type(exc).__name__}: {text}"
    return text[:400]


def item_status(rows: Sequence[dict[str, Any]]) -> str:
    """One input's status from its rows: error (any method failed), resumed (every method was
    done before) or ok."""
    if any(r["status"] != "ok" for r in rows):
        return "error"
    return "resumed" if all(r["resumed"] for r in rows) else "ok"


def run_batch(service: Service, items: Sequence[BatchItem], settings: BatchSettings, *,
              out: Path, on_item: ItemCallback | None = None, retries: int = 1) -> BatchResult:
    """Explain every item with every method (module docstring); returns the index rows and
    where the index was written. A failed input is tried ``retries`` more times. A
    KeyboardInterrupt writes the index of what finished, then propagates."""
    check_settings(service, settings)
    spec = service.spec(settings.model)
    out = Path(out)
    session = Session(folder=out / "items")
    weights = service.manager.weights_hash(spec.id)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    inputs_computed = 0
    try:
        for done, item in enumerate(items, 1):
            new = run_item(service, session, item, settings, weights=weights, retries=retries)
            session.release()  # one input's arrays at a time
            rows += new
            status = item_status(new)
            inputs_computed += status != "resumed"
            if on_item is not None:
                on_item(done, len(items), inputs_computed, item.name, status)
    finally:  # also on Ctrl-C: the index of what finished
        index = write_index(rows, out) if rows else (out / "index.csv", None)
    return BatchResult.from_rows(rows, index, time.perf_counter() - started)


def check_params(params: dict[str, Any], methods: Sequence[str], modality: str) -> None:
    """A shared ``--param`` list may name any chosen method's parameters; one that no chosen
    method takes is a typo (``nsamples`` for ``num_samples``), which would otherwise run with
    the default unnoticed."""
    taken = {m: [p.name for p in get_method(m).params_for(modality)] for m in methods}
    unknown = [k for k in params if not any(k in names for names in taken.values())]
    if unknown:
        offered = "; ".join(f"{get_method(m).label}: {', '.join(names) or 'none'}"
                            for m, names in taken.items())
        raise XAIError(f"no chosen method takes a parameter '{unknown[0]}' for {modality} "
                       f"inputs ({offered}).")


def check_settings(service: Service, settings: BatchSettings) -> None:
    """Fail before any input on what would fail for every input: a method that does not apply
    to the model, a parameter no chosen method takes or out of range."""
    spec = service.spec(settings.model)
    check_params(settings.params, settings.methods, spec.modality)
    for method in settings.methods:
        info = get_method(method)
        reason = info.reason_incompatible(spec)
        if reason:
            raise XAIError(f"method '{method}' does not apply to model '{spec.id}': {reason}")
        info.resolve_params(info.taken_from(settings.params, modality=spec.modality),
                            modality=spec.modality)


def run_item(service: Service, session: Session, item: BatchItem, settings: BatchSettings, *,
             weights: str | None, retries: int = 1) -> list[dict[str, Any]]:
    """One input's index rows (one per method): read back where done before, else computed;
    methods that failed are tried again up to ``retries`` times before their error stays."""
    rows = _run_item(service, session, item, settings, weights=weights)
    for _ in range(retries):
        if all(r["status"] == "ok" for r in rows):
            break
        session.release()
        again = _run_item(service, session, item, settings, weights=weights)
        rows = [b if a["status"] != "ok" else a for a, b in zip(rows, again)]
    return rows


def _fingerprint(service: Service, item: BatchItem, method: str, settings: BatchSettings, *,
                 weights: str | None, input_sha256: str | None) -> dict[str, Any]:
    spec = service.spec(settings.model)
    info = get_method(method)
    resolved = info.resolve_params(info.taken_from(settings.params, modality=spec.modality),
                                   modality=spec.modality)
    return {"model": spec.id, "weights_sha256": weights, "method": method, "params": resolved,
            "seed": settings.seed if info.uses_seed(resolved) else None, "target": settings.target,
            "window": settings.window, "metrics": sorted(settings.metrics),
            "input_sha256": input_sha256,
            "mask_sha256": file_digest(item.mask) if item.mask and item.mask.is_file() else None}


def _stored_row(record_path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The index row of a finished (input, method) with this fingerprint, else None."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    part = record.get("batch") or {}
    if part.get("fingerprint") != fingerprint:
        return None
    if not (Path(record.get("figure", "")).is_file() and Path(record.get("heatmap", "")).is_file()):
        return None
    return dict(part.get("row") or {}) or None


def _base_row(item: BatchItem, method: str) -> dict[str, Any]:
    return {"input": item.name, "label": item.label, "mask": str(item.mask) if item.mask else None,
            "method": method}


def _run_item(service: Service, session: Session, item: BatchItem, settings: BatchSettings, *,
              weights: str | None) -> list[dict[str, Any]]:
    spec = service.spec(settings.model)
    try:
        input_sha256 = file_digest(item.path) if item.path.is_file() else None
    except OSError:
        input_sha256 = None
    plans = []
    for method in settings.methods:
        fp = _fingerprint(service, item, method, settings, weights=weights,
                          input_sha256=input_sha256)
        record_path = session.dir / f"{item.stem}__{method}.json"
        stored = _stored_row(record_path, fp)
        plans.append((method, fp, stored))
    if all(stored is not None for _, _, stored in plans):
        return [stored | {"resumed": True} for _, _, stored in plans]  # type: ignore[operator]
    rows = []
    try:
        if input_sha256 is None:
            raise InputError(f"{item.path}: file not found. Check the path.")
        analysis = service.analyse(session, item.path, spec.id)
        region = get_modality(spec.modality).region_mask(item.mask, spec, service.settings) \
            if item.mask is not None else None
    except Exception as exc:  # noqa: BLE001 - reported in the index, the run goes on
        return [_base_row(item, m) | {"status": "error", "error": error_line(exc),
                                      "resumed": False} for m, _, _ in plans]
    for method, fp, stored in plans:
        if stored is not None:
            rows.append(stored | {"resumed": True})
            continue
        start = time.perf_counter()
        try:
            rows.append(_explain_one(service, session, item, method, settings, fp, analysis,
                                     region, start=start))
        except Exception as exc:  # noqa: BLE001 - reported in the index, the run goes on
            rows.append(_base_row(item, method) | {
                "status": "error", "error": error_line(exc), "resumed": False,
                "seconds": round(time.perf_counter() - start, 4)})
    return rows


def _explain_one(service: Service, session: Session, item: BatchItem, method: str,
                 settings: BatchSettings, fp: dict[str, Any], analysis: Any, region: Any, *,
                 start: float) -> dict[str, Any]:
    spec = service.spec(settings.model)
    expl = service.explain(session, item.path, spec.id, method, params=fp["params"],
                           seed=settings.seed, window=settings.window, target=settings.target)
    card = service.score(session, expl, settings.metrics, region_mask=region)
    p = analysis.prediction
    row = _base_row(item, method) | {
        "status": "ok", "error": None, "resumed": False, "prediction": p.label,
        "score": float(p.score),
        "correct": (p.label == item.label) if item.label and not p.undecided else None,
        # confirmed: false where a one-sided model's negative decision does not confirm the label
        "withheld": bool(p.withheld), "confirmed": not p.unconfirmed,
        "decided": not p.undecided,
        "untrained": bool(p.untrained), "threshold": p.threshold,
        "verdict": p.verdict, "target": expl.target_label, "window": expl.extras.get("window"),
        "seed": expl.seed, "params": json.dumps(expl.params, sort_keys=True, default=str),
        "metrics": " ".join(settings.metrics), "weights_sha256": fp["weights_sha256"],
        "input_sha256": fp["input_sha256"], "explain_seconds": round(expl.seconds, 4),
        "n_evaluations": expl.n_evaluations,
        "score_seconds": round(card.metric_cost.seconds, 4),
        "score_evaluations": card.metric_cost.evaluations}
    row |= {k: float(v) for k, v in card.values.items()}
    if "insertion_auc" in card.values and "deletion_auc" in card.values:
        row["faithfulness_margin"] = float(card.values["insertion_auc"]
                                           - card.values["deletion_auc"])
    row["flags"] = " ".join(card.flags)
    stem = f"{item.stem}__{method}"
    figure = session.dir / f"{stem}.png"
    row |= {"figure": str(figure), "heatmap": str(session.dir / f"{stem}.npy"),
            "record": str(session.dir / f"{stem}.json"),
            "seconds": round(time.perf_counter() - start, 4)}
    service.export(session, expl, stem=stem, extra={"batch": {
        "fingerprint": fp, "input": item.name, "label": item.label,
        "mask": str(item.mask) if item.mask else None,
        "scorecard": {k: v for k, v in card.to_dict().items() if k != "curves"}, "row": row}})
    return row


# --- the index ---------------------------------------------------------------------------

def index_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = dict.fromkeys(INDEX_COLUMNS)
    for row in rows:
        seen.update(dict.fromkeys(row))
    flags = ["flags"] if "flags" in seen else []
    return [c for c in seen if c != "flags"] + flags


def write_index(rows: Sequence[dict[str, Any]], out: Path) -> tuple[Path, Path | None]:
    """``index.csv`` and ``index.parquet`` (one row per input x method, the columns of
    :data:`INDEX_COLUMNS` then the scores), each written whole. Without pyarrow only the CSV
    is written (and None returned for the Parquet file)."""
    import io

    columns = index_columns(rows)
    full = [{c: row.get(c) for c in columns} for row in rows]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for row in full:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    csv_path = write_atomic(out / "index.csv", text.getvalue())
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return csv_path, None
    table = pa.Table.from_pylist(full)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return csv_path, write_atomic(out / "index.parquet", buf.getvalue().to_pybytes())


def read_index(path: Path) -> list[dict[str, Any]]:
    """The rows of an ``index.parquet`` (or of ``index.csv``, as strings)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


__all__ = ["BatchItem", "BatchResult", "BatchSettings", "check_settings", "item_status",
           "list_batch_inputs", "read_index", "run_batch", "run_item", "write_index"]
