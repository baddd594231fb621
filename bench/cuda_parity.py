"""How far a model's probabilities on a GPU are from the same model's on the CPU.

The fast path's bound for an exact engine is 1e-5 in probability (max abs difference, SETUP.md).
PyTorch runs float32 convolutions on an NVIDIA GPU in TF32 unless told otherwise, which keeps
only 10 mantissa bits of each operand: this script measures what that does to the
probabilities, against the same weights on the CPU in float32, with TF32 on (PyTorch's default)
and off, and the seconds per evaluation of each on the GPU.

    python bench/cuda_parity.py --config bench/models.yaml --model bench-densenet121 [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xai_platform.bench import forward_seconds, sample_input  # noqa: E402
from xai_platform.config import load_config  # noqa: E402
from xai_platform.modalities import get_modality  # noqa: E402
from xai_platform.models import ModelManager  # noqa: E402


def set_tf32(torch, on: bool) -> None:
    """Convolutions' and matrix products' float32 mode (PyTorch >= 2.9 names it fp32_precision;
    older versions only have allow_tf32)."""
    try:
        torch.backends.cudnn.conv.fp32_precision = "tf32" if on else "ieee"
        torch.backends.cuda.matmul.fp32_precision = "tf32" if on else "ieee"
    except AttributeError:
        torch.backends.cudnn.allow_tf32 = on
        torch.backends.cuda.matmul.allow_tf32 = on


def inputs(handle, n: int, examples: Path | None, settings) -> np.ndarray:
    """``n`` structured planes of the model's modality, each from its own seed, and the planes
    of every file in ``examples`` that the modality reads."""
    planes = [sample_input(handle, seed) for seed in range(n)]
    if examples is not None:
        modality = get_modality(handle.spec.modality)
        for path in sorted(examples.iterdir()):
            if modality.accepts(path) and ".mask." not in path.name:
                prepared = modality.prepare(path, handle.spec, settings=settings, name=path.name)
                planes.extend(prepared.planes)
    return np.stack(planes).astype(np.float32)


def per_evaluation_ms(handle, x: np.ndarray, batch: int, repeats: int = 5) -> float:
    """Milliseconds per evaluation of one full batch (the bench's :func:`forward_seconds`,
    after a warm-up batch in which cuDNN picks its kernels for this shape)."""
    forward_seconds(handle, x[0], batch, batch, 1)
    return 1e3 * forward_seconds(handle, x[0], batch, batch, repeats) / batch


def main(argv=None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--model", default="bench-densenet121")
    p.add_argument("--inputs", type=int, default=16, help="generated inputs")
    p.add_argument("--examples", type=Path, default=None,
                   help="a folder of the modality's files, compared too (e.g. examples/xray)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cuda", help="the device compared with the CPU "
                   "(cpu compares the CPU with itself: a check of this script)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to compare", file=sys.stderr)
        return 2
    config = load_config(args.config)
    # PyTorch on both sides: the CPU's ONNX Runtime path is not what is compared here
    config = replace(config, app=replace(config.app, fast_forward=False))
    torch.manual_seed(0)
    cpu = ModelManager(config, device="cpu").get(args.model)
    gpu = ModelManager(config, device=args.device).get(args.model)
    gpu.net.load_state_dict(cpu.net.state_dict())  # the same weights (random ones for bench-*)
    x = inputs(cpu, args.inputs, args.examples, config.app)
    ref = cpu._predict_batch(x)  # PyTorch on the CPU, float32: the reference
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    out = {"model": args.model, "device": name, "torch": torch.__version__,
           "inputs": len(x), "cpu_probabilities": ref.round(6).tolist(), "modes": {}}
    for mode, on in (("tf32", True), ("ieee float32", False)):
        set_tf32(torch, on)
        probs = gpu._predict_batch(x)
        diff = float(np.abs(probs - ref).max())
        flips = int((probs.argmax(1) != ref.argmax(1)).sum())
        ms = per_evaluation_ms(gpu, x, args.batch_size)
        out["modes"][mode] = {"max_abs_diff": diff, "decisions_changed": flips,
                              "ms_per_evaluation": ms, "batch_size": args.batch_size}
        print(f"{args.model} on {out['device']}, {mode:>12}: max |p_gpu - p_cpu| = {diff:.1e} "
              f"over {len(x)} inputs ({'within' if diff <= 1e-5 else 'over'} the 1e-5 bound), "
              f"{flips} decisions changed; {ms:.3f} ms per evaluation at batch {args.batch_size}",
              file=sys.stderr)
    set_tf32(torch, True)
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
