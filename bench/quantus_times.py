"""Our metrics and Quantus 0.6's on the same model, input and map: both times, and the largest
difference of the values (issue 18, item 5; the agreement itself is tested in
tests/test_quantus_reference.py).

    .venv/bin/python bench/quantus_times.py [--model xray-cnn] [--input FILE] [--steps 16]

Deletion and insertion: our ``deletion_insertion`` (both curves, batched) against two
``quantus.PixelFlipping`` runs (Quantus has no insertion; it runs on the masked plane taking
pixels from the input) with ``features_in_step`` = pixels per step; pointing game; and the
model-parameter randomisation cascade: ``quantus.MPRT`` (top-down, every parameterised layer)
against ours on the same randomised models. Gradient saliency is the explained map. Times:
median of 3 runs after an untimed one (the cascades: one run after an untimed one).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402  (before TensorFlow, which Quantus imports)
import numpy as np  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="xray-cnn")
    ap.add_argument("--input", default="examples/xray/rg1-mass-lesion.png")
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args()

    import quantus
    from quantus.helpers.model.pytorch_model import PyTorchModel

    from xai_platform import explainers
    from xai_platform.config import load_config
    from xai_platform.evaluation.metrics import deletion_insertion, localisation, randomization_test
    from xai_platform.explainers.perturbation import masked_value
    from xai_platform.models import ModelManager
    from xai_platform.models.formats.torch import TorchHandle
    from xai_platform.pipeline import analyse, prepare

    config = load_config()
    handle = ModelManager(config, device="cpu").get(args.model)
    if handle.framework != "torch":
        raise SystemExit("Quantus' MPRT needs a torch model here; pick a torch model.")
    analysis = analyse(handle, prepare(ROOT / args.input, handle.spec, settings=config.app),
                       settings=config.app)
    x = analysis.prepared.planes[analysis.default_window]
    target = analysis.prediction.index
    heatmap = explainers.run("saliency", handle, x, target=target).attribution.heatmap
    base = masked_value(x, handle.spec.modality)

    class Probabilities(torch.nn.Module):  # what Quantus calls: (N, 1, H, W) -> our probabilities
        def __init__(self, net) -> None:
            super().__init__()
            self.net, self.adapter = net, handle.adapter

        def forward(self, t):
            return handle._probs(self.net(self.adapter(t[:, 0])))

    def take_from(source):
        flat = source.reshape(1, -1)

        def perturb(arr, indices, **_):
            out = arr.copy()
            out[np.arange(len(arr))[:, None], indices] = flat[0, indices]
            return out

        return perturb

    rows = []

    def timed(fn, repeats: int = 3):
        """(result, median seconds of ``repeats`` runs after one untimed run)."""
        out, times = fn(), []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return out, float(np.median(times))

    model, y, a = Probabilities(handle.net).eval(), np.array([target]), heatmap[None, None]
    ours, t_ours = timed(lambda: deletion_insertion(handle, x, heatmap, target=target,
                                                    steps=args.steps))
    kw = dict(features_in_step=x.size // args.steps, normalise=False, disable_warnings=True)

    def flip(start, source):
        return quantus.PixelFlipping(perturb_func=take_from(source), **kw)(
            model=model, x_batch=start[None, None], y_batch=y, a_batch=a, channel_first=True,
            softmax=False, device="cpu")[0]

    (deletion, insertion), t_q = timed(lambda: (flip(x, base), flip(base, x)))
    ours, t_ours = timed(lambda: deletion_insertion(handle, x, heatmap, target=target,
                                                    steps=args.steps))  # again: warm, same load
    diff = max(np.abs(ours.deletion[1:] - deletion).max(), np.abs(ours.insertion[1:] - insertion).max())
    rows.append((f"deletion + insertion ({args.steps} steps, scale {ours.scale})", t_ours, t_q, diff))

    region = np.zeros(x.shape, bool)
    h, w = x.shape
    region[h // 4:h // 2, w // 4:w // 2] = True
    pg, t_ours = timed(lambda: localisation(heatmap, region, signed=False)["pointing_game"])
    q, t_q = timed(lambda: quantus.PointingGame(disable_warnings=True)(
        model=model, x_batch=x[None, None], y_batch=y, a_batch=a, s_batch=region[None, None],
        channel_first=True, device="cpu")[0])
    rows.append(("pointing game", t_ours, t_q, abs(pg - float(q))))

    def explain(model, inputs, targets, **_):
        hh = TorchHandle(handle.spec, model.net, device="cpu", untrained=True)
        return np.stack([explainers.run("saliency", hh, p[0], target=int(t)).attribution.heatmap
                         for p, t in zip(inputs, targets)])[:, None]

    scores, t_q = timed(repeats=1, fn=lambda: quantus.MPRT(disable_warnings=True)(
        model=Probabilities(copy.deepcopy(handle.net)).eval(), x_batch=x[None, None], y_batch=y,
        a_batch=a, explain_func=explain, channel_first=True, device="cpu"))
    layers = [k for k in scores if k != "original"]

    def cascade():
        out = []
        gen = PyTorchModel(Probabilities(copy.deepcopy(handle.net)).eval()).get_random_layer_generator(
            order="top_down", seed=42)
        for _, m in gen:
            r = TorchHandle(handle.spec, copy.deepcopy(m.net), device="cpu", untrained=True)
            out.append(randomization_test(handle, x, "saliency", target=target, heatmap=heatmap,
                                          randomized=r)["spearman_abs"])
        return out

    mine, t_ours = timed(cascade, repeats=1)
    diff = max(abs(s - scores[k][0]) for s, k in zip(mine, layers))
    rows.append((f"randomisation cascade ({len(layers)} layers, saliency)", t_ours, t_q, diff))

    print(f"{args.model} on {args.input}, target {handle.spec.labels[target]}, "
          f"torch {torch.__version__}, quantus {quantus.__version__}")
    print("| metric | ours (s) | Quantus (s) | Quantus / ours | largest difference |")
    print("|---|---:|---:|---:|---:|")
    for name, t_o, t_qq, d in rows:
        print(f"| {name} | {t_o:.3f} | {t_qq:.3f} | {t_qq / max(t_o, 1e-9):.1f} | {d:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
