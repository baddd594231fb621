"""Gradient passes of PyTorch models with their weights channels-last (``app.channels_last``)
against PyTorch's default layout, measured in one run.

For each model both set-ups are loaded (the fast path off: only PyTorch runs), and then they
take turns, ``--rounds`` times, over the same random input rows: input gradients (saliency,
Integrated Gradients' steps) and the target layer's gradients (Grad-CAM), ``--rows`` rows a
call, as many as ``app.gradient_batch_size``. It prints the median milliseconds per row, the
ratio, and how far the channels-last gradients are from the default layout's (the largest
difference relative to the largest magnitude, and the share of values that differ by more
than 1e-4 of it); the same for the default layout run with one thread against two, the
difference a user already gets between machines.

    .venv/bin/python bench/channels_last.py                           # the shipped PyTorch CNNs
    .venv/bin/python bench/channels_last.py --model bench-densenet121 --rounds 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_MODELS = ("bench-densenet121", "xray-densenet121", "xray-mobilenetv2", "xray-cnn",
                  "xray-efficientnet-lite0", "audio-cnn", "audio-resnet18", "audio-vgg16",
                  "audio-mobilenetv2", "audio-rawnet2")


def differs(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(largest |a - b| relative to max |a|, share of values differing by more than 1e-4 of
    it)."""
    scale = float(np.abs(a).max()) or 1.0
    rel = np.abs(a - b) / scale
    return float(rel.max()), float(np.mean(rel > 1e-4))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="model id (repeatable)")
    parser.add_argument("--rows", type=int, default=8, help="rows a gradient call (default 8)")
    parser.add_argument("--rounds", type=int, default=6, help="turns per set-up (default 6)")
    args = parser.parse_args(argv)

    import torch

    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    config = load_config([ROOT / "bench/models.yaml"])
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; {args.rows} rows a call, "
          f"{args.rounds} rounds, medians", file=sys.stderr)
    print("| model | input | default (ms / row) | channels-last (ms / row) | ratio | "
          "Grad-CAM's layer gradients: default / channels-last (ms / row) | channels-last "
          "vs default: max diff, share > 1e-4 | 1 vs 2 threads: max diff, share > 1e-4 |")
    print("|---|---|---:|---:|---:|---|---|---|")
    for model_id in args.model or DEFAULT_MODELS:
        handles = {}
        try:
            for on in (False, True):
                cfg = replace(config, app=replace(config.app, channels_last=on))
                handles[on] = ModelManager(cfg, device="cpu", fast_forward=False).get(model_id)
        except Exception as exc:  # a model whose weights are not here
            print(f"{model_id}: skipped ({str(exc)[:120]})", file=sys.stderr)
            continue
        if handles[False].framework != "torch":
            print(f"{model_id}: skipped ({handles[False].framework}, not PyTorch)",
                  file=sys.stderr)
            continue
        x = np.random.default_rng(0).random((args.rows, *handles[False].input_shape),
                                            dtype=np.float32)
        if handles[False].spec.modality == "audio":
            x = x * -80.0  # dB-scaled planes
        targets = np.ones(args.rows, dtype=np.int64)
        layer = handles[False].spec.target_layer
        times: dict[tuple[bool, str], list[float]] = {}
        for on, handle in handles.items():  # warm-up: first-call allocations, kernel choice
            handle.input_gradients(x, targets)
        for _ in range(args.rounds):
            for on, handle in handles.items():
                t = time.perf_counter()
                handle.input_gradients(x, targets)
                times.setdefault((on, "input"), []).append(time.perf_counter() - t)
                if layer:
                    t = time.perf_counter()
                    handle.layer_gradients(x, targets)
                    times.setdefault((on, "layer"), []).append(time.perf_counter() - t)
        ms = {key: 1000 * statistics.median(v) / args.rows for key, v in times.items()}
        default, _ = handles[False].input_gradients(x, targets)
        fast, _ = handles[True].input_gradients(x, targets)
        torch.set_num_threads(1)
        one_thread, _ = handles[False].input_gradients(x, targets)
        torch.set_num_threads(threads)
        d_cl, d_threads = differs(default, fast), differs(default, one_thread)
        layer_ms = (f"{ms[(False, 'layer')]:.1f} / {ms[(True, 'layer')]:.1f}" if layer
                    else "no target layer")
        shape = "x".join(str(s) for s in handles[False].input_shape)
        note = "" if handles[True].channels_last else " (no 2-D convolution: left as it is)"
        print(f"| {model_id}{note} | {shape} | {ms[(False, 'input')]:.1f} | "
              f"{ms[(True, 'input')]:.1f} | {ms[(False, 'input')] / ms[(True, 'input')]:.2f} | "
              f"{layer_ms} | {d_cl[0]:.1e}, {d_cl[1]:.4f} | {d_threads[0]:.1e}, "
              f"{d_threads[1]:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
