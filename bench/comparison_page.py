"""Time the XAI Comparison page's request, from upload to last figure, with the fast path off
and on (and, when asked, in bf16).

It drives the same calls the page's Compare button makes (``ui.comparison.compare``: every
method that applies, fastest first, each scored with the page's default metrics, then the
ranking and the agreement figure; ``ui.common.figure_file`` draws each card and writes the
PNG the page hands Gradio; before the thirty-ninth session it drew an array, which Gradio then
encoded off the clock), on a fresh session, so nothing is cached between the two runs. The
model is loaded and warmed up before the clock starts (a running app has it loaded; the load,
with the ONNX export or the cached graph, is printed on its own line). Per method it prints
the explanation's seconds and model evaluations, the metrics' seconds and evaluations and the
card's figure's seconds; then the request's wall-clock total, with the cards' figures and the
summary (ranking and agreement figure) in it.
With several set-ups (the fast path off and on, ``--channels-last both``) each is loaded and
warmed up first, and then they take turns, request by request, so their ratios come from one
run. The C allocator is set as ``app.py`` sets it (``xai_platform.memory``; before the thirty-sixth
session the script left glibc's default, which the app does not run with).

    .venv/bin/python bench/comparison_page.py                       # both models, off then on
    .venv/bin/python bench/comparison_page.py --model audio-cnn --only on
    .venv/bin/python bench/comparison_page.py --model audio-cnn --only on --requests 4
    .venv/bin/python bench/comparison_page.py --only bf16           # OpenVINO bf16 (opt-in path)
    .venv/bin/python bench/comparison_page.py --only on --channels-last both --requests 3
    .venv/bin/python bench/comparison_page.py --json > out/comparison.json

Defaults: DenseNet-121 at 224 px (``bench-densenet121`` of bench/models.yaml: the shipped
architecture with random weights; what a request costs does not depend on what the weights
learned) on examples/xray/rg1-chest-pa.dcm, and the shipped audio CNN (``audio-cnn``) on
examples/audio/fake_espeak_de_letters_long.wav. ``--model audio-whisper-readout``: the app's
default audio model on the same recording ("on": its whole graph, encoder and STFT included,
on ONNX Runtime).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = {
    "bench-densenet121": ("xray", ROOT / "examples/xray/rg1-chest-pa.dcm"),
    "audio-cnn": ("audio", ROOT / "examples/audio/fake_espeak_de_letters_long.wav"),
    # the default audio model (its encoder fetched by scripts/setup.sh)
    "audio-whisper-readout": ("audio", ROOT / "examples/audio/fake_espeak_de_letters_long.wav"),
}


def run_request(service, model_id: str, modality: str, path: Path, metrics: tuple[str, ...]
                ) -> dict:
    """One Compare press on a fresh session: (per-method rows, total seconds)."""
    from xai_platform.service import Session
    from xai_platform.ui.common import figure_file
    from xai_platform.ui.comparison import compare, summary_outputs

    session = Session()
    audio, image = (str(path), None) if modality == "audio" else (None, str(path))
    methods, _ = service.methods(model_id)
    rows, explanations, cards = [], {}, {}
    start = time.perf_counter()
    try:
        service.analyse(session, path, model_id)  # the upload: decode, prepare, predict
        upload = time.perf_counter() - start
        last = time.perf_counter()
        for _, _, method, expl, card in compare(service, session, modality, audio, image,
                                                model_id, methods, 0, metrics=metrics):
            drawn = time.perf_counter()
            figure_file(service, session, expl)
            explanations[method], cards[method] = expl, card
            now = time.perf_counter()
            costs = card.costs if card is not None else {}
            rows.append({
                "method": method, "seconds": round(now - last, 3),
                "explain_seconds": round(expl.seconds, 3), "explain_evaluations": expl.n_evaluations,
                "metrics_seconds": round(sum(c.seconds for c in costs.values()), 3),
                "metrics_evaluations": int(sum(c.evaluations for c in costs.values())),
                "figure_seconds": round(now - drawn, 3)})
            last = now
        summary_start = time.perf_counter()
        summary_outputs(explanations, cards)  # ranking and the agreement figure
        total = time.perf_counter() - start
    finally:
        session.close()
    return {"upload_seconds": round(upload, 3), "methods": rows, "total_seconds": round(total, 3),
            "figures_seconds": round(sum(r["figure_seconds"] for r in rows), 3),
            "summary_seconds": round(start + total - summary_start, 3),
            "evaluations": sum(r["explain_evaluations"] + r["metrics_evaluations"] for r in rows)}


def warm_up(service, model_id: str, path: Path) -> None:
    """What a running app has done before: imported what the page imports once it is served
    (``xai_platform.preload``), decoded an input, run a full batch forward on each engine and a
    gradient pass (first-call allocations, kernel selection)."""
    import numpy as np

    from xai_platform import explainers
    from xai_platform.service import Session
    from xai_platform.preload import preload

    preload()

    session = Session()
    handle = service.manager.get(model_id)
    try:
        analysis = service.analyse(session, path, model_id)
        if getattr(handle.spec.input, "waveform", False):
            # its forward takes samples, not the plane it is explained on: warm up through the
            # service, which maps between them
            service.explain(session, path, model_id, "saliency")
            return
    finally:
        session.close()
    plane = analysis.prepared.planes[0]
    for fn in handle.forward_engines().values():
        fn(np.repeat(plane[None], handle.default_batch_size, axis=0))
    explainers.run("saliency", handle, plane, target=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", choices=sorted(CASES),
                        help="model (repeatable; default: bench-densenet121 and audio-cnn)")
    parser.add_argument("--only", choices=("off", "on", "bf16"), default=None,
                        help="run only with the fast path off, on (float32, ONNX Runtime) or in "
                             "bf16 (OpenVINO, app.forward_precision) (default: off, then on)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows per forward batch for every model (app.batch_size and the "
                             "entries' batch_size; default: the config's)")
    parser.add_argument("--gradient-batch-size", type=int, default=None,
                        help="rows per backward pass (app.gradient_batch_size; default: the "
                             "config's)")
    parser.add_argument("--requests", type=int, default=1,
                        help="Compare presses in a row on the same loaded model, each on a fresh "
                             "session (default 1). The first one also makes the randomisation "
                             "test's copy of the model, as an app's first request does; the "
                             "others are what a running app answers")
    parser.add_argument("--channels-last", choices=("on", "off", "both"), default="on",
                        help="PyTorch 2-D CNNs' weights channels-last (app.channels_last; "
                             "default on, as the app runs); both: a set-up with each, their "
                             "requests taking turns")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    from xai_platform.memory import pin_mmap_threshold

    pin_mmap_threshold()  # as app.py, before anything is loaded: the app's allocator
    import torch  # noqa: F401  (before TensorFlow, which the page's imports may load)

    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service
    from xai_platform.ui.comparison import DEFAULT_METRICS

    config = load_config([ROOT / "bench/models.yaml"])
    metrics = tuple(DEFAULT_METRICS)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, load average {load}; metrics {', '.join(metrics)}",
          file=sys.stderr)
    results = []
    layouts = {"on": [True], "off": [False], "both": [False, True]}[args.channels_last]
    for model_id in args.model or ["bench-densenet121", "audio-cnn"]:
        modality, path = CASES[model_id]
        setups = []  # (fast path, channels-last, service, handle, load seconds)
        for mode in ([args.only] if args.only else ["off", "on"]):
            for channels_last in layouts:
                cfg = replace(config, app=replace(
                    config.app, fast_forward=mode != "off", channels_last=channels_last,
                    forward_precision="bf16" if mode == "bf16" else "float32",
                    batch_size=args.batch_size or config.app.batch_size,
                    gradient_batch_size=args.gradient_batch_size
                    or config.app.gradient_batch_size))
                if args.batch_size:  # the flag also overrides a model entry's own batch_size
                    cfg = replace(cfg, models=tuple(replace(s, batch_size=None)
                                                    for s in cfg.models))
                manager = ModelManager(cfg, device="cpu")
                service = Service(manager, cfg.app)
                t = time.perf_counter()
                handle = manager.get(model_id)
                loaded = time.perf_counter() - t
                print(f"\n{model_id}, fast path {mode}, channels-last weights "
                      f"{'on' if handle.channels_last else 'off'}: loaded in {loaded:.1f} s; "
                      f"forward passes: {handle.forward_path.describe()}", file=sys.stderr)
                warm_up(service, model_id, path)
                setups.append((mode, service, handle, loaded))
        # the set-ups take turns, request by request: a slower spell of the machine falls on
        # all of them, so their ratios are measured in one run
        for request in range(1, args.requests + 1):
            for mode, service, handle, loaded in setups:
                result = run_request(service, model_id, modality, path, metrics)
                result |= {"model": model_id, "fast_forward": mode,
                           "channels_last": handle.channels_last, "request": request,
                           "load_seconds": round(loaded, 2),
                           "forward_path": handle.forward_path.to_dict()}
                results.append(result)
                print(f"  {model_id}, fast path {mode}, channels-last "
                      f"{'on' if handle.channels_last else 'off'}, request {request}: upload "
                      f"(decode, prepare, predict) {result['upload_seconds']:.2f} s",
                      file=sys.stderr)
                for r in result["methods"]:
                    print(f"  {r['method']:<22} {r['seconds']:7.2f} s  explain "
                          f"{r['explain_seconds']:7.2f} s / {r['explain_evaluations']:5d} evals  "
                          f"metrics {r['metrics_seconds']:7.2f} s / "
                          f"{r['metrics_evaluations']:5d} evals  figure "
                          f"{r['figure_seconds']:5.2f} s", file=sys.stderr)
                print(f"  total {result['total_seconds']:.1f} s ({result['evaluations']} model "
                      f"evaluations; the cards' figures {result['figures_seconds']:.2f} s, the "
                      f"ranking and agreement figure {result['summary_seconds']:.2f} s)",
                      file=sys.stderr)
    if args.json:
        print(json.dumps({"machine": platform.platform(), "load_average": load,
                          "metrics": list(metrics), "results": results}, indent=2))
    else:
        for model_id in dict.fromkeys(r["model"] for r in results):
            mine = [r for r in results if r["model"] == model_id]
            print(f"\n| {model_id}: fast path | channels-last | request | upload (s) | "
                  + " | ".join(r["method"] for r in mine[0]["methods"])
                  + " | figures (s) | summary (s) | total (s) | evaluations |")
            print("|---|---|" + "---:|" * (len(mine[0]["methods"]) + 6))
            for res in mine:
                print(f"| {res['fast_forward']} | {'on' if res['channels_last'] else 'off'} | "
                      f"{res['request']} | {res['upload_seconds']:.2f} | "
                      + " | ".join(f"{r['seconds']:.2f}" for r in res["methods"])
                      + f" | {res['figures_seconds']:.2f} | {res['summary_seconds']:.2f}"
                      + f" | {res['total_seconds']:.1f} | {res['evaluations']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
