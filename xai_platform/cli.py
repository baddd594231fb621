"""Command line: the app's pipeline without a browser.

    python -m xai_platform models [--json]
    python -m xai_platform methods [--json]
    python -m xai_platform layers --model ID
    python -m xai_platform fetch MODEL... [--force]    (published weights; needs internet)
    python -m xai_platform check-model CONFIG.yaml [--input FILE] [--model ID] [--json]
    python -m xai_platform explain INPUT... --model ID [--method ID ...] [--out DIR]
                                   [--seed N] [--param NAME=VALUE ...] [--target LABEL]
                                   [--window N] [--metrics NAME ...] [--report] [--json]
        --metrics: each explanation's scorecard and, per input, the comparison page's
        ranking (which maps to trust) and the agreement between the maps.
    python -m xai_platform explain-batch INPUTS --model ID [--method ID ...] --out DIR
                                   [--seed N] [--param NAME=VALUE ...] [--metrics NAME ...]
                                   [--target LABEL] [--window N] [--report] [--quiet]
                                   [--retries N] [--ray auto|ADDRESS] [--ray-workers N]
        INPUTS: a folder, a quoted glob, or a CSV with a path column (optional label, mask);
        writes DIR/items/ (figure, heatmap, record per input and method), DIR/index.parquet
        and DIR/index.csv, DIR/report.html with --report. Re-running resumes: what is done
        with the same parameters and weights is skipped.
    python -m xai_platform bench [--model ID ...] [--baselines]
    python -m xai_platform evaluate --model ID --data DIR|benchmark [--method ID ...] [--n N]
                                    --out DIR [--ray auto|ADDRESS] [--ray-workers N]

Errors a user can fix exit with status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import __version__
from .config import AppSettings, PlatformConfig, load_config
from .errors import XAIError


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _params(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise XAIError(f"--param takes NAME=VALUE, got '{item}'.")
        out[name.strip()] = _parse_value(value.strip())
    return out


class _Progress:
    """A one-line progress bar on stderr (stdout stays clean for --json)."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label, self.enabled, self.last = label, enabled, -1.0

    def __call__(self, fraction: float, what: str = "") -> None:
        if not self.enabled or (fraction - self.last < 0.02 and fraction < 1.0):
            return
        self.last = fraction
        filled = int(fraction * 24)
        sys.stderr.write(f"\r  {self.label:<22} [{'#' * filled}{'.' * (24 - filled)}] "
                         f"{fraction:4.0%} {what[:40]:<40}")
        sys.stderr.flush()

    def done(self, seconds: float) -> None:
        if self.enabled:
            sys.stderr.write(f"\r  {self.label:<22} done in {seconds:.2f} s{' ' * 60}\n")


class _BatchProgress:
    """The batch run's line on stderr: a bar, inputs done of total, the rate of the inputs
    computed by this run (resumed ones are skipped, not timed) and the time left. On a terminal
    it redraws one line; into a log it writes a line per input."""

    def __init__(self, enabled: bool, *, tty: bool) -> None:
        self.enabled, self.tty = enabled, tty
        self.start = time.perf_counter()

    def line(self, done: int, total: int, computed: int, name: str, status: str) -> str:
        elapsed = time.perf_counter() - self.start
        rate = computed / elapsed if elapsed > 0 and computed else 0.0
        left = (total - done) / rate if rate else None
        eta = "--:--" if left is None else f"{int(left // 60):02d}:{int(left % 60):02d}"
        filled = int(24 * done / max(total, 1))
        return (f"[{'#' * filled}{'.' * (24 - filled)}] {done}/{total} "
                f"{rate:.2f} inputs/s ETA {eta}  {name[-40:]} {status}")

    def __call__(self, done: int, total: int, computed: int, name: str, status: str) -> None:
        if not self.enabled:
            return
        text = self.line(done, total, computed, name, status)
        if self.tty:
            sys.stderr.write(f"\r{text:<110}" + ("\n" if done == total else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _manager(args: argparse.Namespace, config: PlatformConfig):
    from .models import ModelManager

    return ModelManager(config, device=args.device)


def cmd_models(args: argparse.Namespace, config: PlatformConfig) -> int:
    from .explainers import compatibility

    manager = _manager(args, config)
    if not args.no_verify:
        manager.verify()
    rows = []
    for spec in manager.specs:
        comp = compatibility(spec)
        rows.append({
            "id": spec.id, "name": spec.name, "framework": spec.framework,
            "modality": spec.modality, "status": str(manager.status(spec.id)),
            "state": manager.status(spec.id).state, "labels": list(spec.labels),
            "weights": str(spec.weights) if spec.weights else None,
            "methods": [c.method.id for c in comp if c.ok],
            "not_applicable": {c.method.id: c.reason for c in comp if not c.ok},
            "notice": spec.notice, "source": spec.source,
        })
    if args.json:
        print(json.dumps({"models": rows}, indent=2))
        return 0
    for r in rows:
        print(f"{r['id']:<24} {r['framework']:<6} {r['modality']:<6} {r['status']}")
        print(f"{'':<24} methods: {', '.join(r['methods']) or 'none'}")
        for method, reason in r["not_applicable"].items():
            print(f"{'':<24} not {method}: {reason}")
    return 0


def cmd_methods(args: argparse.Namespace, config: PlatformConfig) -> int:
    from .explainers import all_methods

    methods = [m.to_dict() for m in all_methods()]
    if args.json:
        print(json.dumps({"methods": methods}, indent=2))
        return 0
    for m in methods:
        print(f"{m['id']:<22} {m['label']:<22} {m['kind']}, {m['specificity']}: {m['description']}")
    return 0


def cmd_layers(args: argparse.Namespace, config: PlatformConfig) -> int:
    handle = _manager(args, config).get(args.model)
    layers = handle.layers()
    if not layers:
        print(f"model '{args.model}' has no addressable layers ({handle.framework}).")
    for name, kind in layers:
        print(f"{name:<40} {kind}")
    return 0


def cmd_check_model(args: argparse.Namespace, config: PlatformConfig) -> int:
    """Load each model of one config file, run one input, list what applies (exit 1 if any
    model fails)."""
    from .model_check import check_model

    if args.file is None and not args.model:
        raise XAIError("name the model to check (--model ID, see `models`), or pass the config "
                       "file with its entry.")
    # a configured model (config/ and --config) is checked as the app would load it
    own = load_config([args.file], base=None) if args.file else config
    specs = [own.model(args.model)] if args.model else list(own.models)
    if not specs:
        raise XAIError(f"{args.file} declares no models.")
    if args.input and not Path(args.input).is_file():
        raise XAIError(f"{args.input}: file not found. Check the path.")
    # The checked file's own app settings (its defaults where it declares none): the
    # settings the model would run with.
    settings = forward_flags(own.app, no_fast_forward=args.no_fast_forward, bf16=args.bf16)
    reports = [check_model(spec, settings=settings, input_path=args.input,
                           device=args.device or own.app.device, debug=args.debug)
               for spec in specs]
    if args.json:
        print(json.dumps({"models": [r.to_dict() for r in reports]}, indent=2))
    else:
        print("\n\n".join(r.to_text() for r in reports))
    return 0 if all(r.ok for r in reports) else 1


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem)[:80] or "input"


def cmd_fetch(args: argparse.Namespace, config: PlatformConfig) -> int:
    from .models.formats import get_format

    manager = _manager(args, config)
    for model_id in args.models:
        spec = manager.spec(model_id)
        found = get_format(spec.framework).weights_found(spec)
        if spec.weights is not None and found and not manager.fetchable(model_id) \
                and not args.force:
            print(f"{model_id}: weights already there ({spec.weights})")
            continue
        _fetch(manager, model_id, quiet=args.quiet)
    return 0


def _fetch(manager: Any, model_id: str, *, quiet: bool) -> None:
    bar = _Progress(f"fetching {model_id}", enabled=not quiet and sys.stderr.isatty())
    t0 = time.perf_counter()
    path = manager.fetch(model_id, progress=bar)
    bar.done(time.perf_counter() - t0)
    print(f"{model_id}: ready ({path})")


def _offer_fetch(manager: Any, model_id: str, *, interactive: bool) -> None:
    """On a terminal, offer to fetch a model's missing published weights before using it."""
    if not (interactive and manager.fetchable(model_id) and sys.stdin.isatty()):
        return
    answer = input(f"Weights of '{model_id}' are not here. Fetch them now? This needs "
                   "internet access. [y/N] ")
    if answer.strip().lower() in ("y", "yes"):
        _fetch(manager, model_id, quiet=False)


def scores_line(card) -> str:
    """A scorecard's main values on one line (the faithfulness curves' areas, the
    randomisation check, stability), what they cost, and its flags' titles (the JSON record
    has their whole text)."""
    from .evaluation.scorecard import FLAGS, VALUES, value_text
    from .explanation import counted

    parts = []
    for name in ("insertion_auc", "deletion_auc", "randomization_rho", "stability_spearman"):
        value = card.values.get(name)
        if value is None:
            continue
        text = f"{VALUES[name].label} {value_text(name, value)}"
        if name == "randomization_rho":
            text += " (pass)" if card.values.get("randomization_passed") else " (fail)"
        parts.append(text)
    cost = card.metric_cost
    flags = "".join(f"; {FLAGS.get(code, code).lower()}" for code in card.flags)
    return ("; ".join(parts) + f" ({cost.seconds:.2f} s, {counted(cost.evaluations, 'evaluation')})"
            + flags)


def comparison_lines(record: dict[str, Any], labels: dict[str, str]) -> str:
    """The ranking of :func:`~xai_platform.evaluation.scorecard.comparison_record` as lines:
    which maps to trust, then the methods best first."""
    lines = [record["trust"]]
    for r in record["ranking"]:
        why = f" (fails {'; '.join(r['fails'])})" if r["fails"] else ""
        lines.append(f"  {r['rank']}. {labels.get(r['method'], r['method'])}: mean rank "
                     f"{r['mean_rank']:.2f}{why}")
    return "\n  ".join(lines)


def cmd_explain(args: argparse.Namespace, config: PlatformConfig) -> int:
    from .batch import BatchSettings, check_settings
    from .evaluation.scorecard import comparison_record, json_safe
    from .explainers import compatible_methods, get_method
    from .explanation import counted
    from .service import Service, Session

    service = Service(_manager(args, config), config.app)
    _offer_fetch(service.manager, args.model, interactive=not (args.json or args.quiet))
    spec = service.spec(args.model)
    methods = args.method or [m.id for m in compatible_methods(spec)][:1] or []
    params = _params(args.param)
    # as explain-batch: a method that does not apply, a parameter no chosen method takes or out
    # of range, before anything loads
    check_settings(service, BatchSettings(model=spec.id, methods=tuple(methods), params=params))
    for source in args.inputs:  # before loading the model: a typo should fail fast
        if not Path(source).is_file():
            raise XAIError(f"{source}: file not found. Check the path.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    session = Session(folder=out)
    show = not args.json and not args.quiet
    metrics = tuple(args.metrics or ())
    service.prepare_scoring(spec.id, methods, metrics)
    results = []
    for source in args.inputs:
        analysis = service.analyse(session, source, spec.id)
        if show:
            print(f"{source}: {analysis.prediction.verdict}")
            for note in analysis.notes:
                print(f"  note: {note}")
        entry: dict[str, Any] = {
            "input": str(source), "model": spec.id,
            "prediction": analysis.prediction.to_dict(), "notes": list(analysis.notes),
        }
        timeline = service.timeline_records(analysis)
        if len(timeline) > 1:
            entry["timeline"] = timeline
        explanations, cards, heatmaps = [], {}, {}
        stem = _safe_stem(analysis.prepared.name)
        for method in methods:
            # Only this method's parameters (a shared --param list may name others').
            own = get_method(method).taken_from(params, modality=spec.modality)
            bar = _Progress(get_method(method).label, enabled=not args.quiet and sys.stderr.isatty())
            start = time.perf_counter()
            expl = service.explain(session, source, spec.id, method, window=args.window,
                                   target=args.target, params=own, seed=args.seed, progress=bar)
            bar.done(time.perf_counter() - start)
            if expl.flat and not args.quiet:
                print(f"  warning: {expl.flat_note}", file=sys.stderr)
            focus = expl.extras.get("focus") or {}
            if focus.get("flagged") and not args.quiet:  # e.g. a map on silence (a shortcut)
                print(f"  warning: {focus['message']}", file=sys.stderr)
            base = f"{stem}__{spec.id}__{method}"
            figure, _, heatmap = service.export(session, expl, stem=base)
            record = service.record(expl) | {"figure": str(figure), "heatmap": str(heatmap)}
            readout = service.readout(session, source, expl, stem=base)
            if readout is not None and readout.record:
                record["listening"] = dict(readout.record)
                if show:
                    print(f"    {readout.text}")
            heatmaps[method] = expl.heatmap
            card = service.score(session, expl, metrics) if metrics else None
            if card is not None:
                cards[method] = card
                record["scorecard"] = json_safe(card.to_dict())
            explanations.append(record)
            if show:
                print(f"  {expl.method_label}: {figure} ({expl.seconds:.2f} s, "
                      f"{counted(expl.n_evaluations, 'evaluation')})")
                if card is not None:
                    print(f"    scores: {scores_line(card)}")
        entry["explanations"] = explanations
        if cards:
            entry["comparison"] = comparison_record(cards, heatmaps)
            if show:
                print("  " + comparison_lines(entry["comparison"], {
                    r["method"]: r["method_label"] for r in explanations}))
        if args.report:
            done = [service.explain(session, source, spec.id, m, window=args.window,
                                    target=args.target, seed=args.seed,
                                    params=get_method(m).taken_from(params,
                                                                    modality=spec.modality))
                    for m in methods]  # cached: computed above
            entry["report"] = str(service.report(session, source, spec.id, done, cards=cards,
                                                 stem=f"{stem}__{spec.id}__report"))
            if show:
                print(f"  report: {entry['report']}")
        results.append(entry)
    if args.json:
        print(json.dumps({"results": results}, indent=2))
    return 0


def _batch_command(args: argparse.Namespace) -> str:
    """The command line that reproduces (and resumes) a batch run."""
    import shlex

    parts = ["python", "-m", "xai_platform", "explain-batch", args.inputs, "--model", args.model]
    for c in args.config:
        parts += ["--config", c]
    for m in args.method or ():
        parts += ["--method", m]
    for p in args.param:
        parts += ["--param", p]
    if args.metrics:
        parts += ["--metrics", *args.metrics]
    if args.target:
        parts += ["--target", args.target]
    if args.window is not None:
        parts += ["--window", str(args.window)]
    if args.ray:
        parts += ["--ray", args.ray]
    parts += ["--seed", str(args.seed), "--out", args.out] + (["--report"] if args.report else [])
    return shlex.join(parts)


def cmd_explain_batch(args: argparse.Namespace, config: PlatformConfig) -> int:
    """Explain a data set with resume and an index table (xai_platform.batch)."""
    from .batch import BatchSettings, check_settings, list_batch_inputs, run_batch
    from .explainers import compatible_methods
    from .service import Service, library_versions

    service = Service(_manager(args, config), config.app)
    spec = service.spec(args.model)
    methods = tuple(args.method or [m.id for m in compatible_methods(spec)][:1])
    settings = BatchSettings(model=spec.id, methods=methods, params=_params(args.param),
                             seed=args.seed, target=args.target, window=args.window,
                             metrics=tuple(args.metrics or ()))
    check_settings(service, settings)  # before the inputs are listed: a typo fails fast
    out = Path(args.out)
    items = list_batch_inputs(args.inputs, spec.modality, exclude=out)
    out.mkdir(parents=True, exist_ok=True)
    bar = _BatchProgress(not args.quiet, tty=sys.stderr.isatty())
    if args.ray:  # imported only here: without --ray nothing of Ray is loaded
        try:
            from .batch_ray import run_batch_ray
        except ImportError as exc:
            raise XAIError(f"--ray needs Ray ({exc}); install it with "
                           "`pip install -r requirements.txt`.") from None
        result = run_batch_ray(config, items, settings, out=out, address=args.ray,
                               workers=args.ray_workers, device=args.device,
                               retries=args.retries, on_item=bar)
    else:
        result = run_batch(service, items, settings, out=out, on_item=bar, retries=args.retries)
    csv_path, parquet = result.index
    lines = [f"{len(items)} inputs x {len(methods)} methods: {result.computed} computed, "
             f"{result.resumed} reused from an earlier run, {result.failed} failed "
             f"({result.seconds:.1f} s)",
             f"index:   {parquet or '(no pyarrow: CSV only)'}", f"         {csv_path}"]
    if args.report:
        from .explainers import get_method
        from .reports import batch_report
        from .files import write_atomic

        html = batch_report(result.rows, spec=spec, card=service.manager.card(spec.id),
                            methods=methods, labels={m: get_method(m).label for m in methods},
                            settings=settings.to_dict(), command=_batch_command(args),
                            libraries=library_versions(),
                            weights_sha256=service.manager.weights_hash(spec.id))
        lines.append(f"report:  {write_atomic(out / 'report.html', html)}")
    errors = [r for r in result.rows if r["status"] != "ok"]
    for r in errors[:5]:
        lines.append(f"failed:  {r['input']} ({r['method']}): {r['error']}")
    if len(errors) > 5:
        lines.append(f"failed:  ... {len(errors) - 5} more (see the index's error column)")
    if not args.quiet:
        print("\n".join(lines))
    return 1 if errors and len(errors) == len(result.rows) else 0


def cmd_bench(args: argparse.Namespace, config: PlatformConfig) -> int:
    from .bench import run_bench
    from .service import Service

    manager = _manager(args, config)
    models = args.model or [s.id for s in manager.specs if manager.status(s.id).usable][:2]
    params: dict[str, dict[str, Any]] = {
        "lime": {"num_samples": args.lime_samples}, "shap": {"n_evaluations": args.shap_evals},
        "integrated_gradients": {"n_steps": args.ig_steps}}
    return run_bench(Service(manager, config.app), models, methods=args.method, repeats=args.repeats,
                     batch_size=args.batch_size, params=params, baselines=args.baselines,
                     as_json=args.json)


def cmd_evaluate(args: argparse.Namespace, config: PlatformConfig) -> int:
    from .evaluation.report import main as evaluate_main

    return evaluate_main(args, config)


def add_forward_flags(parser: argparse.ArgumentParser) -> None:
    """``--no-fast-forward`` and ``--bf16``, for the app and every command
    (:func:`forward_flags` applies them)."""
    parser.add_argument("--no-fast-forward", action="store_true",
                        help="keep every forward pass in the model's framework (default: "
                             "PyTorch models' forward-only batches run on ONNX Runtime, Keras "
                             "models' on OpenVINO in f32, when the graph matches to 1e-5; "
                             "app.fast_forward)")
    parser.add_argument("--bf16", action="store_true",
                        help="run forward-only batches on OpenVINO in bfloat16 (reduced "
                             "precision, opt-in: used where the probabilities stay within 1e-2 "
                             "and no example decision changes, else the exact path; "
                             "app.forward_precision)")


def forward_flags(settings: AppSettings, *, no_fast_forward: bool, bf16: bool) -> AppSettings:
    """``settings`` with ``--no-fast-forward`` / ``--bf16`` applied."""
    if no_fast_forward and bf16:
        raise XAIError("--bf16 runs the fast path's exported graph on OpenVINO, and "
                       "--no-fast-forward turns that graph off; drop one of them.")
    if no_fast_forward:
        return replace(settings, fast_forward=False)
    return replace(settings, forward_precision="bf16") if bf16 else settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xai_platform",
                                     description="Explain audio deepfake and chest X-ray models.")
    parser.add_argument("--version", action="version", version=f"xai_platform {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", action="append", default=[], metavar="PATH",
                        help="extra model config file or folder (repeatable)")
    common.add_argument("--device", default=None, help="auto (default), cpu, cuda or cuda:N")
    add_forward_flags(common)
    common.add_argument("--debug", action="store_true",
                        help="show tracebacks and the frameworks' and decoders' own messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", parents=[common], help="list configured models and their status")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-verify", action="store_true",
                   help="skip building architectures to check target layers")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("fetch", parents=[common],
                       help="download and safely convert a model's published weights "
                            "(needs internet; e.g. the TorchXRayVision models)")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model id (see `models`)")
    p.add_argument("--force", action="store_true", help="fetch even if the weights are there")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("methods", parents=[common], help="list explanation methods")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("layers", parents=[common], help="list a model's layers (for target_layer)")
    p.add_argument("--model", required=True)
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("check-model", parents=[common],
                       help="check a model entry: it loads, predicts, and which methods apply")
    p.add_argument("file", metavar="CONFIG.yaml", nargs="?", default=None,
                   help="a config file with the model entry (default: the configured models; "
                        "then name one with --model)")
    p.add_argument("--input", default=None, metavar="FILE",
                   help="an input to run (default: the modality's sample plane)")
    p.add_argument("--model", default=None, help="check only this model id of the file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check_model)

    from .evaluation.scorecard import COSTLY_METRICS

    p = sub.add_parser("explain", parents=[common], help="predict and explain inputs")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio or image files")
    p.add_argument("--model", required=True)
    p.add_argument("--method", action="append", help="method id (repeatable; default: the "
                                                     "first compatible, see `methods`)")
    p.add_argument("--out", default="out", help="folder for figures and heatmaps (default: out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="method parameter (repeatable), e.g. --param num_samples=500")
    p.add_argument("--target", default=None, help="label to explain (default: the prediction)")
    p.add_argument("--window", type=int, default=None,
                   help="audio window to explain (default: the most suspicious)")
    p.add_argument("--metrics", nargs="+", default=[], choices=COSTLY_METRICS,
                   help="score each explanation (the comparison page ticks faithfulness and "
                        "randomization) and rank the methods per input: which maps to trust")
    p.add_argument("--report", action="store_true",
                   help="also write one self-contained HTML report per input (all its methods)")
    p.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("explain-batch", parents=[common],
                       help="explain a data set: resumable, one index table, a summary report")
    p.add_argument("inputs", metavar="INPUTS",
                   help="a folder, a quoted glob, or a CSV with a path column (optional label "
                        "and mask columns; paths relative to the CSV)")
    p.add_argument("--model", required=True)
    p.add_argument("--method", action="append", help="method id (repeatable; default: the "
                                                     "first compatible, see `methods`)")
    p.add_argument("--out", required=True, help="folder for items/, index.parquet, index.csv "
                                                "and report.html; re-running resumes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="method parameter (repeatable), e.g. --param num_samples=500")
    p.add_argument("--metrics", nargs="+", default=[], choices=COSTLY_METRICS,
                   help="quality metrics per explanation (default: none; localisation runs "
                        "wherever the CSV gives a mask)")
    p.add_argument("--target", default=None, help="label to explain (default: the prediction)")
    p.add_argument("--window", type=int, default=None,
                   help="audio window to explain (default: the one behind the verdict)")
    p.add_argument("--report", action="store_true",
                   help="write DIR/report.html: score distributions and the worst cases")
    p.add_argument("--retries", type=int, default=1,
                   help="tries again per failed input before its error goes in the index")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="run on Ray Data: 'auto' a local Ray, else a cluster's address; one "
                        "model per worker, the same results as without")
    p.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="workers in the pool (default: the cluster's CPUs, or GPUs on CUDA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(func=cmd_explain_batch)

    p = sub.add_parser("bench", parents=[common], help="time every method against plain forward "
                                                      "passes of the same model")
    p.add_argument("--model", action="append", help="model id (repeatable; default: two models)")
    p.add_argument("--method", action="append", help="method id (repeatable; default: all)")
    p.add_argument("--repeats", type=int, default=3, help="runs per method (median reported)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lime-samples", type=int, default=1000)
    p.add_argument("--shap-evals", type=int, default=500)
    p.add_argument("--ig-steps", type=int, default=50)
    p.add_argument("--baselines", action="store_true",
                   help="also time lime_image (batch 10, quickshift), shap.KernelExplainer, "
                        "shap's PartitionExplainer over pixels and pytorch-grad-cam called the "
                        "usual way")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    from .evaluation.report import add_arguments as evaluate_arguments

    p = sub.add_parser("evaluate", parents=[common],
                       help="score explanation quality over a data set (CSV + report)")
    evaluate_arguments(p)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        os.environ["XAI_DEBUG"] = "1"
    try:
        config = load_config(args.config)
        # in the config, so Ray workers and evaluate follow the flags too
        config = replace(config, app=forward_flags(
            config.app, no_fast_forward=args.no_fast_forward, bf16=args.bf16))
        return int(args.func(args, config) or 0)
    except XAIError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: still one line unless --debug
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the "
              "traceback and report it)", file=sys.stderr)
        return 1
