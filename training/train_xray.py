"""Train a configured binary chest X-ray model (normal vs lesion), PyTorch or Keras.

    python -m training.train_xray --model xray-mobilenetv2 --data data/xray_benchmark
    python -m training.train_xray --model xray-densenet121 --data ~/CheXpert-v1.0-small

``--data`` is either the lesion benchmark that :mod:`training.xray_benchmark` writes (its own
train / val / test splits, plus the held-out ``real`` split) or the CheXpert-v1.0-small folder
(``train.csv``, ``valid.csv``): "Lung Lesion" = 1 is a lesion, "No Finding" = 1 (and no
lesion mention) is normal, every other study is left out. Uncertain lesion labels (-1) follow
``--uncertain``: ``ignore`` (U-Ignore, the default: such studies are dropped), ``ones``
(U-Ones: counted as lesions) or ``zeros`` (U-Zeros: counted as "no lesion", which still is not
"normal" without "No Finding", so in practice the same as ignore). Irvin et al., "CheXpert",
AAAI 2019, compare these policies. Frontal views only; patients of ``train.csv`` are split
into train and validation (``--val-fraction``), and ``valid.csv`` (radiologists' consensus) is
the test set.

Images go through the app's own preprocessing (:func:`load_image`, :func:`to_model_plane`), and
the network trains behind the app's input adapter (:func:`training.common.train`). After
training, a temperature and a decision threshold are fitted on the validation split; the test
metrics, a reliability diagram and the model card (with this exact command) are written beside
the weights.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training import common
from xai_platform.config import ModelSpec, load_config
from xai_platform.models.cards import card_stem
from xai_platform.models.manager import sha256
from xai_platform.preprocessing.image import load_image, to_model_plane

ROOT = Path(__file__).resolve().parent.parent
UNCERTAIN_POLICIES = ("ignore", "ones", "zeros")


@dataclass
class Split:
    """x: (N, H, W) float16 planes in [0, 1]; y: (N,) class index in ``spec.labels``."""

    x: np.ndarray
    y: np.ndarray
    ids: list[str]
    masks: np.ndarray | None = None  # (N, H, W) bool lesion masks (benchmark, on request)

    def counts(self, positive: int) -> dict[str, int]:
        return {"n": int(len(self.y)), "n_positive": int((self.y == positive).sum())}


@dataclass
class Dataset:
    kind: str
    root: Path
    splits: dict[str, Split]
    details: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Data


def _plane(path: Path, shape: tuple[int, int]) -> np.ndarray:
    return to_model_plane(load_image(path).pixels, shape).astype(np.float16)


def _progress(label: str, i: int, n: int) -> None:
    if i % 200 == 0 or i == n:
        sys.stderr.write(f"\r  loading {label}: {i}/{n}   ")
        if i == n:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _load_split(label: str, items: list[tuple[Path, bool, str]], spec: ModelSpec) -> Split:
    """items: (image path, is_positive, id)."""
    positive = spec.positive_index
    x = np.zeros((len(items), *spec.input_shape), np.float16)
    for i, (path, _, _) in enumerate(items):
        x[i] = _plane(path, spec.input_shape)
        _progress(label, i + 1, len(items))
    y = np.array([positive if pos else 1 - positive for _, pos, _ in items], np.int64)
    return Split(x, y, [item_id for _, _, item_id in items])


def _lesion_masks(root: Path, rows: list[dict[str, str]], shape: tuple[int, int]) -> np.ndarray:
    """Each row's lesion mask on the model's grid (the same crop and resize as the image),
    all False for a normal image."""
    out = np.zeros((len(rows), *shape), bool)
    for i, row in enumerate(rows):
        if row.get("lesion_mask_path"):
            out[i] = to_model_plane(load_image(root / row["lesion_mask_path"]).pixels, shape) > 0.5
    return out


def read_benchmark(root: Path, spec: ModelSpec, *, limit: int | None = None,
                   masks: bool = False) -> Dataset:
    """The lesion benchmark's splits (``limit``: at most that many images per split, for tests
    and quick checks; ``masks``: the training split's lesion masks too)."""
    with open(root / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    splits = {}
    for name in ("train", "val", "test", "real"):
        chosen = [r for r in rows if r["split"] == name][:limit]
        items = [(root / r["path"], r["label"] == "lesion", r["id"]) for r in chosen]
        if items:
            splits[name] = _load_split(name, items, spec)
            if masks and name == "train":
                splits[name].masks = _lesion_masks(root, chosen, spec.input_shape)
    info = root / "benchmark.json"
    summary = json.loads(info.read_text()) if info.exists() else {}
    details = {k: summary[k] for k in ("command", "seed", "size", "images", "lung_masks",
                                       "lung_mask_groups", "real_background", "lesion_types",
                                       "contrast", "edges") if k in summary}
    return Dataset("xray_benchmark", root, splits, details)


def chexpert_label(row: dict[str, str], uncertain: str) -> bool | None:
    """True = lesion, False = normal, None = left out (see the module docstring)."""
    def value(key: str) -> float | None:
        text = (row.get(key) or "").strip()
        return float(text) if text else None

    lesion, no_finding = value("Lung Lesion"), value("No Finding")
    if lesion == 1.0 or (lesion == -1.0 and uncertain == "ones"):
        return True
    if lesion == -1.0 and uncertain == "ignore":
        return None
    if no_finding == 1.0:
        return False
    return None


def _chexpert_path(root: Path, text: str) -> Path:
    rel = Path(text)
    if rel.parts and rel.parts[0] == root.name:  # "CheXpert-v1.0-small/train/patient..."
        return root.parent / rel
    return root / rel


def _patient(text: str) -> str:
    return next((p for p in Path(text).parts if p.startswith("patient")), text)


def read_chexpert(root: Path, spec: ModelSpec, *, uncertain: str = "ignore",
                  val_fraction: float = 0.1, max_images: int | None = None,
                  seed: int = 0) -> Dataset:
    """CheXpert-v1.0-small: train.csv split by patient into train / val, valid.csv as test.
    ``max_images`` caps the training split (a seeded sample keeping the class balance)."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_POLICIES}")
    rng = np.random.default_rng(seed)

    def read(name: str) -> list[tuple[Path, bool, str]]:
        items = []
        with open(root / name, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("Frontal/Lateral", "Frontal") != "Frontal":
                    continue
                label = chexpert_label(row, uncertain)
                if label is not None:
                    items.append((_chexpert_path(root, row["Path"]), label, row["Path"]))
        return items

    train_items, test_items = read("train.csv"), read("valid.csv")
    patients = sorted({_patient(i[2]) for i in train_items})
    val_patients = set(rng.permutation(patients)[:max(1, int(round(len(patients) * val_fraction)))])
    val_items = [i for i in train_items if _patient(i[2]) in val_patients]
    train_items = [i for i in train_items if _patient(i[2]) not in val_patients]
    if max_images is not None and len(train_items) > max_images:
        keep = rng.permutation(len(train_items))[:max_images]
        train_items = [train_items[k] for k in sorted(keep)]
    splits = {name: _load_split(name, items, spec) for name, items in
              (("train", train_items), ("val", val_items), ("test", test_items)) if items}
    details = {"uncertain_policy": uncertain, "finding": "Lung Lesion", "negative": "No Finding",
               "views": "frontal", "val_fraction": val_fraction, "max_images": max_images,
               "test": "valid.csv", "val_patients": len(val_patients)}
    return Dataset("chexpert", root, splits, details)


def read_data(root: Path, spec: ModelSpec, args: argparse.Namespace) -> Dataset:
    if (root / "metadata.csv").exists():
        return read_benchmark(root, spec, limit=args.limit, masks=args.mask_weight > 0)
    if (root / "train.csv").exists() and (root / "valid.csv").exists():
        if args.mask_weight > 0:
            raise SystemExit("--mask-weight needs lesion masks, which only the lesion benchmark "
                             "has; CheXpert gives image-level labels.")
        return read_chexpert(root, spec, uncertain=args.uncertain, val_fraction=args.val_fraction,
                             max_images=args.max_images, seed=args.seed)
    raise SystemExit(f"{root} is neither the lesion benchmark (metadata.csv; make it with "
                     "`python -m training.xray_benchmark`) nor CheXpert-v1.0-small "
                     "(train.csv and valid.csv).")


# --------------------------------------------------------------------------------------------
# Training


def augment(x: np.ndarray, rng: np.random.Generator, *, masks: np.ndarray | None = None):
    """Online augmentation of a batch (B, H, W) in [0, 1]: shifts, flips, gamma, contrast,
    noise. None of them moves a lesion out of the image or changes the label. With ``masks``
    (B, H, W) the same shifts and flips move them too, and ``(x, masks)`` is returned; the
    random draws are the same either way."""
    b, h, w = x.shape
    out = np.empty_like(x)
    pad = max(1, h // 25)
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    moved = None if masks is None else np.empty_like(masks)
    padded_masks = None if masks is None else np.pad(masks, ((0, 0), (pad, pad), (pad, pad)))
    for i in range(b):
        dy, dx = rng.integers(0, 2 * pad + 1, size=2)
        out[i] = padded[i, dy:dy + h, dx:dx + w]
        if moved is not None:
            moved[i] = padded_masks[i, dy:dy + h, dx:dx + w]
    flip = rng.random(b) < 0.5
    out[flip] = out[flip, :, ::-1]
    if moved is not None:
        moved[flip] = moved[flip, :, ::-1]
    out = np.clip(out, 0, 1) ** np.exp(rng.normal(0, 0.15, (b, 1, 1))).astype(np.float32)
    out = (out - 0.5) * rng.uniform(0.9, 1.1, (b, 1, 1)) + 0.5 + rng.uniform(-0.04, 0.04, (b, 1, 1))
    out += rng.normal(0, 1, out.shape).astype(np.float32) * rng.uniform(0, 0.012, (b, 1, 1))
    out = np.clip(out, 0, 1).astype(np.float32)
    return out if moved is None else (out, moved)


def _warm_up(spec: ModelSpec, net: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Curriculum: train first on an easier benchmark (``--warmup-data``, e.g. made with
    ``--contrast 0.35 0.6``), keeping its best epoch, so that networks which do not pick up
    small lesions from scratch start from a lesion detector."""
    t0 = time.time()
    warm = read_data(args.warmup_data.expanduser(), spec, args)
    cfg = common.TrainConfig(epochs=args.warmup_epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, seed=args.seed, threads=args.threads)
    sys.stderr.write(f"  warm-up on {args.warmup_data} for {args.warmup_epochs} epochs\n")
    history = common.train(spec, net, warm.splits["train"].x, warm.splits["train"].y,
                           warm.splits["val"].x, warm.splits["val"].y, cfg,
                           augment=None if args.no_augment else augment,
                           masks=_mask_supervision(spec, warm.splits["train"], args))
    return {"data": str(args.warmup_data), "kind": warm.kind, **warm.details,
            "epochs": args.warmup_epochs, "best_epoch": history["best_epoch"],
            "best_val_auc": history["best_metric"], "history": history["epochs"],
            "seconds": round(time.time() - t0, 1)}


def _mask_supervision(spec: ModelSpec, split: Split,
                      args: argparse.Namespace) -> common.MaskSupervision | None:
    if args.mask_weight <= 0:
        return None
    layers = tuple(args.mask_layer or [spec.target_layer])
    return common.MaskSupervision(split.masks, layers, args.mask_weight)


def _checkpoint(spec: ModelSpec, run_dir: Path) -> Path:
    name = "checkpoint.pt" if spec.framework == "torch" else "checkpoint.weights.h5"
    return run_dir / spec.id / name


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "tensorflow", "keras", "numpy"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


def _markdown(card: dict[str, Any]) -> str:
    lines = [f"# {card['name']} (`{card['model']}`)", ""]
    if card.get("notice"):
        lines += [f"**{card['notice']}**", ""]
    data = card["data"]
    lines += [f"- Architecture: `{card['architecture']}` ({card['framework']}), input "
              f"{card['input']['size'][0]} px, {card['input']['channels']} channel(s), "
              f"normalize `{card['input']['normalize']}`",
              f"- Data: {data['kind']} at `{data['root']}`",
              *([f"- Warm-up: {card['warmup']['epochs']} epochs on `{card['warmup']['data']}` "
                 f"(contrast {card['warmup'].get('contrast')}), best validation AUC "
                 f"{card['warmup']['best_val_auc']:.3f}"] if card.get("warmup") else []),
              *([f"- Mask supervision (training only): layers "
                 f"{', '.join(f'`{x}`' for x in card['mask_supervision']['layers'])}, "
                 f"weight {card['mask_supervision']['weight']:g}; "
                 f"{card['mask_supervision']['what'].split(': ', 1)[1]}"]
                if card.get("mask_supervision") else []),
              f"- Trained {card['training']['epochs_run']} epochs in "
              f"{card['training']['seconds']:.0f} s (best epoch {card['training']['best_epoch']})",
              f"- Calibration (validation): temperature {card['calibration']['temperature']:.3f}, "
              f"threshold {card['calibration']['threshold']:.3f}",
              f"- Weights: `{card['weights']['file']}`, {card['weights']['bytes'] / 1e6:.1f} MB",
              "", "| split | n | positives | ROC AUC | accuracy | sens. @ 90 % spec. | "
                  "false alarms | misses |", "|---|---|---|---|---|---|---|---|"]
    for split, m in card["metrics"].items():
        lines.append(f"| {split} | {m['n']} | {m['n_positive']} | {m['roc_auc']:.3f} | "
                     f"{m['accuracy']:.3f} | {m['sensitivity_at_90_specificity']:.3f} | "
                     f"{m['false_alarm_rate']:.3f} | {m['miss_rate']:.3f} |")
    lines += ["", "Reproduce:", "", "```", card["command"], "```", ""]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(args.config or ())
    spec = config.model(args.model)
    if spec.modality != "xray" or spec.positive_index is None or len(spec.labels) != 2:
        raise SystemExit(f"'{spec.id}' is not a binary X-ray model (labels {list(spec.labels)}, "
                         f"output {spec.output}). TorchXRayVision models are not trained here: "
                         "see `python -m xai_platform.models.architectures.xrv_nets list`.")
    if args.mask_weight > 0 and spec.framework != "torch":
        raise SystemExit("--mask-weight is implemented for PyTorch models only.")
    weights = args.out or spec.weights
    if weights is None:
        raise SystemExit(f"'{spec.id}' has `weights: null`; set a path in its config entry "
                         "(e.g. xray/<id>.pt) or pass --out.")
    command = "python -m training.train_xray " + " ".join(shlex.quote(a) for a in args.argv)
    t_start = time.time()

    from xai_platform.models.formats import get_format

    common.limit_threads(spec.framework, args.threads)
    data = read_data(args.data.expanduser(), spec, args)
    if not {"train", "val", "test"} <= set(data.splits):
        raise SystemExit(f"{args.data} gives splits {sorted(data.splits)}; train, val and test "
                         "are all needed.")
    positive = spec.positive_index
    for name, split in data.splits.items():
        counts = split.counts(positive)
        if counts["n_positive"] in (0, counts["n"]):
            raise SystemExit(f"the {name} split has only one class ({counts}); use more data.")

    net = get_format(spec.framework).build_network(spec, seed=args.seed)
    if spec.framework == "torch":  # about 3x faster convolutions on a CPU (measured)
        import torch

        net = net.to(memory_format=torch.channels_last)
    checkpoint = _checkpoint(spec, args.run_dir)
    if checkpoint.exists() and not args.resume:
        checkpoint.unlink()
        checkpoint.with_suffix(".json").unlink(missing_ok=True)
    cfg = common.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, seed=args.seed, threads=args.threads,
                             time_limit_s=args.time_limit)
    warmup = _warm_up(spec, net, args) if args.warmup_data is not None else None
    train_split, val_split = data.splits["train"], data.splits["val"]
    t_train = time.time()
    supervision = _mask_supervision(spec, train_split, args)
    history = common.train(spec, net, train_split.x, train_split.y, val_split.x, val_split.y, cfg,
                           checkpoint=checkpoint, augment=None if args.no_augment else augment,
                           masks=supervision)
    train_seconds = time.time() - t_train

    weights = Path(weights)
    common.save_weights(spec, net, weights)
    handle = common.load_saved(spec, weights)  # every figure below is for the file as shipped
    scores = {name: handle.scores(split.x, batch_size=64) for name, split in data.splits.items()}
    truth = {name: (split.y == positive).astype(np.int64) for name, split in data.splits.items()}
    z_val = common.positive_logit(spec, scores["val"])
    temperature = common.fit_temperature(z_val, truth["val"])
    threshold = common.choose_threshold(common.sigmoid(z_val / temperature), truth["val"])
    metrics = {name: common.binary_report(spec, scores[name], truth[name],
                                          temperature=temperature, threshold=threshold)
               for name in data.splits}
    raw_val = common.reliability(common.sigmoid(z_val), truth["val"])

    stem = card_stem(weights)
    figure = stem.with_name(f"{stem.name}.reliability.png")
    common.plot_reliability(raw_val, metrics["val"]["reliability"], figure,
                            title=f"{spec.id}: validation reliability")
    epochs_run = len(history["epochs"])
    card = {
        "model": spec.id, "name": spec.name, "architecture": spec.architecture,
        "framework": spec.framework, "arch_args": dict(spec.arch_args),
        "input": {"size": list(spec.input.size), "channels": spec.input.channels,
                  "normalize": spec.input.normalize},
        "labels": list(spec.labels), "positive_label": spec.labels[positive],
        "notice": spec.notice,
        "data": {"kind": data.kind, "root": str(args.data), **data.details},
        "splits": {name: split.counts(positive) for name, split in data.splits.items()},
        "warmup": warmup,
        "mask_supervision": None if supervision is None else {
            "layers": list(supervision.layers), "weight": supervision.weight,
            "what": "training only: a 1x1 convolution on each of these layers predicted which "
                    "cells hold the lesion (benchmark masks), their loss added to the "
                    "classification loss; the heads are not in the weights. Explanations at "
                    "these layers were trained towards the lesions: their localisation scores "
                    "are not a fair test."},
        "metrics": metrics,
        "calibration": {"temperature": temperature, "threshold": threshold, "fitted_on": "val"},
        "training": {"epochs": args.epochs, "epochs_run": epochs_run,
                     "best_epoch": history["best_epoch"], "best_val_auc": history["best_metric"],
                     "stopped_by_time_limit": epochs_run < args.epochs,
                     "history": history["epochs"], "seconds": round(train_seconds, 1),
                     "seconds_per_epoch": round(train_seconds / max(epochs_run, 1), 1),
                     "batch_size": args.batch_size, "lr": args.lr,
                     "weight_decay": args.weight_decay, "augment": not args.no_augment,
                     "seed": args.seed, "threads": args.threads, "time_limit_s": args.time_limit},
        "weights": {"file": weights.name, "bytes": weights.stat().st_size,
                    "sha256": sha256(weights) if weights.is_file() else None,
                    "dtype": "float16" if spec.framework == "torch" else "float32"},
        "reliability_figure": figure.name,
        "command": command, "environment": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "total_seconds": round(time.time() - t_start, 1),
    }
    common.write_card(weights, card, _markdown(card))
    return card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.train_xray",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a binary X-ray model id from the config")
    parser.add_argument("--config", action="append", type=Path,
                        help="extra config file or folder (repeatable)")
    parser.add_argument("--data", type=Path, default=Path("data/xray_benchmark"),
                        help="the lesion benchmark or a CheXpert-v1.0-small folder")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--time-limit", type=float, default=None,
                        help="stop after the epoch that crosses this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (the default suits a shared machine)")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in --run-dir after an interruption")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "xray",
                        help="where per-epoch checkpoints go (default: runs/xray/<model>/)")
    parser.add_argument("--warmup-data", type=Path, default=None,
                        help="an easier benchmark to train on first (curriculum)")
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--mask-weight", type=float, default=0.0,
                        help="benchmark, PyTorch: add a training-only loss that predicts the "
                             "lesion mask from --mask-layer's cells, times this weight (0: off)")
    parser.add_argument("--mask-layer", action="append", default=None,
                        help="a layer for --mask-weight (repeatable; default: the model's "
                             "target_layer)")
    parser.add_argument("--out", type=Path, default=None,
                        help="weights file (default: the config entry's `weights`)")
    parser.add_argument("--limit", type=int, default=None,
                        help="benchmark: at most this many images per split (quick checks)")
    parser.add_argument("--uncertain", choices=UNCERTAIN_POLICIES, default="ignore",
                        help="CheXpert: policy for uncertain (-1) Lung Lesion labels")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="CheXpert: share of train.csv's patients used for validation")
    parser.add_argument("--max-images", type=int, default=None,
                        help="CheXpert: cap on training images (seeded sample)")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    card = run(parse_args(argv))
    test = card["metrics"]["test"]
    print(f"{card['model']}: test AUC {test['roc_auc']:.4f}, accuracy {test['accuracy']:.4f}, "
          f"sensitivity@90%spec {test['sensitivity_at_90_specificity']:.4f} "
          f"-> {card['weights']['file']} ({card['weights']['bytes'] / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
