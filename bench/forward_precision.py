"""Forward passes only: milliseconds per image on PyTorch eager, ONNX Runtime float32 and
OpenVINO bf16, with each engine's parity, measured in one run.

Each model loads with ``app.forward_precision: bf16`` (the opt-in reduced-precision path), so
the exported graph's parity (float32) and then OpenVINO's (bf16) are checked on the example
planes as the app checks them; the line printed after the load is the Models tab's. Then:

* **parity on a real input**: every plane (window) of the example file through each engine:
  the largest difference of probabilities from PyTorch, and how many decisions change (the
  positive class at the model's threshold;
  :func:`~xai_platform.models.reduced_precision.decisions`);
* **speed**: one batch of ``--batch`` planes of that input per engine, the engines taking turns
  for ``--repeats`` rounds after a warm-up round (so a change in the machine's load hits all of
  them alike); the median, in milliseconds per image.

    .venv/bin/python bench/forward_precision.py                    # DenseNet-121, audio CNN
    .venv/bin/python bench/forward_precision.py --model audio-cnn --repeats 3 --json

Defaults: DenseNet-121 at 224 px (``bench-densenet121`` of bench/models.yaml, random weights)
on examples/xray/rg1-chest-pa.dcm, and the shipped audio CNN (``audio-cnn``) on
examples/audio/fake_espeak_de_letters_long.wav; batch 16; PyTorch's threads (ONNX Runtime and
OpenVINO take as many).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CASES = {
    "bench-densenet121": ROOT / "examples/xray/rg1-chest-pa.dcm",
    "audio-cnn": ROOT / "examples/audio/fake_espeak_de_letters_long.wav",
}


def measure(service, model_id: str, path: Path, *, batch: int, repeats: int) -> dict:
    """Parity on ``path``'s planes and ms / image of each engine of ``model_id``."""
    import numpy as np

    from xai_platform.models.reduced_precision import decision_changes
    from xai_platform.service import Session

    t = time.perf_counter()
    handle = service.manager.get(model_id)
    loaded = time.perf_counter() - t
    print(f"\n{model_id}: loaded in {loaded:.1f} s; forward passes: "
          f"{handle.forward_path.describe()}", file=sys.stderr)
    session = Session()
    try:
        planes = service.analyse(session, path, model_id).prepared.planes
    finally:
        session.close()
    engines = handle.forward_engines()
    probs = {name: np.concatenate([fn(planes[i:i + batch]) for i in range(0, len(planes), batch)])
             for name, fn in engines.items()}
    ref = probs[handle.framework]
    parity = {name: {"max_abs_diff": float(np.max(np.abs(p.astype(np.float64) - ref))),
                     "decision_changes": decision_changes(handle, ref, p)}
              for name, p in probs.items() if name != handle.framework}
    x = np.resize(planes, (batch, *planes.shape[1:])).astype(np.float32)  # the planes, repeated
    times: dict[str, list[float]] = {name: [] for name in engines}
    for round_ in range(repeats + 1):
        for name, fn in engines.items():
            start = time.perf_counter()
            fn(x)
            if round_:  # round 0 warms up (allocations, kernel choice, shape compilation)
                times[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * statistics.median(v) / batch for name, v in times.items()}
    print(f"  {len(planes)} plane(s) of {path.name}; batch {batch}, median of {repeats}",
          file=sys.stderr)
    for name in engines:
        extra = "" if name == handle.framework else (
            f"  max |dp| {parity[name]['max_abs_diff']:.1e}, "
            f"{parity[name]['decision_changes']} of {len(planes)} decisions changed")
        print(f"  {name:<12} {ms[name]:8.2f} ms / image  ({ms[handle.framework] / ms[name]:.2f}x "
              f"{handle.framework}){extra}", file=sys.stderr)
    return {"model": model_id, "framework": handle.framework, "input": path.name,
            "planes": len(planes), "batch": batch, "repeats": repeats,
            "load_seconds": round(loaded, 2), "ms_per_image": ms, "parity_on_input": parity,
            "forward_path": handle.forward_path.to_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", choices=sorted(CASES),
                        help="model (repeatable; default: both)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    import torch

    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service

    config = load_config([ROOT / "bench/models.yaml"])
    config = replace(config, app=replace(config.app, forward_precision="bf16"))
    service = Service(ModelManager(config, device="cpu", cache_size=1), config.app)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, load average {load}", file=sys.stderr)
    results = [measure(service, model_id, CASES[model_id], batch=args.batch,
                       repeats=args.repeats) for model_id in args.model or list(CASES)]
    after = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"\nload average after: {after}", file=sys.stderr)
    if args.json:
        print(json.dumps({"machine": platform.platform(), "load_average": [load, after],
                          "results": results}, indent=2))
        return 0
    print("\n| model | engine | ms / image | speed-up | max abs diff of p on the input | "
          "decisions changed |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        ms, ref = r["ms_per_image"], r["ms_per_image"][r["framework"]]
        for name, v in ms.items():
            p = r["parity_on_input"].get(name)
            print(f"| {r['model']} | {name} | {v:.2f} | {ref / v:.2f} | "
                  + (f"{p['max_abs_diff']:.1e} | {p['decision_changes']} of {r['planes']} |"
                     if p else "(reference) | |"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
