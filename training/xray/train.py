"""Train a configured binary chest X-ray model (normal vs lesion), PyTorch or Keras.

    python -m training.train_xray --model xray-mobilenetv2 --data data/xray_benchmark
    python -m training.train_xray --model xray-densenet121 --data ~/CheXpert-v1.0-small

``--data`` is either the lesion benchmark that :mod:`training.xray.benchmark` writes (its own
train / val (read as validation) / test splits, plus the held-out ``real`` split) or the CheXpert-v1.0-small folder
(``train.csv``, ``valid.csv``): "Lung Lesion" = 1 is a lesion, "No Finding" = 1 (and no
lesion mention) is normal, every other study is left out. Uncertain lesion labels (-1) follow
``--uncertain``: ``ignore`` (U-Ignore, the default: such studies are dropped), ``ones``
(U-Ones: counted as lesions) or ``zeros`` (U-Zeros: counted as "no lesion", which still is not
"normal" without "No Finding", so in practice the same as ignore). Irvin et al., "CheXpert",
AAAI 2019, compare these policies. Frontal views only; patients of ``train.csv`` are split
into train and validation (``--val-fraction``), and ``valid.csv`` (radiologists' consensus) is
the test set.

Images go through the app's own preprocessing (:func:`load_image`, :func:`to_model_plane`), and
the network trains behind the app's input adapter (:func:`training.trainer.train`). After
training, a temperature and a decision threshold are fitted on the validation split; the test
metrics, a reliability diagram and the model card (with this exact command) are written beside
the weights.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xai_platform.config import ModelSpec, load_config
from xai_platform.models.cards import (DataInfo, MaskSupervisionInfo, ModelCard,
                                       ReliabilityFigure, SplitInfo, SplitMetrics, card_stem)

from .. import cards
from ..calibration import choose_threshold, fit_temperature, plot_reliability
from ..metrics import binary_report, positive_logit, reliability, sigmoid
from ..trainer import MaskSupervision, TrainConfig, limit_threads, train
from ..weights import imagenet_init, load_saved, save_weights
from .augment import augment
from .data import UNCERTAIN_POLICIES, Dataset, Split, read_data

ROOT = Path(__file__).resolve().parents[2]
AUGMENTATION = "online: shifts, flips, gamma, contrast, noise (masks move with the image)"
MASK_SUPERVISION = (
    "training only: a 1x1 convolution on each of these layers predicted which cells hold the "
    "lesion (benchmark masks), their loss added to the classification loss; the heads are not "
    "in the weights. Explanations at these layers were trained towards the lesions: their "
    "localisation scores are not a fair test.")


@dataclass(frozen=True)
class XrayOptions:
    """One X-ray training run: the data, where the weights go, the loop's settings, the
    curriculum and the mask supervision (the command line, parsed)."""

    data: Path
    train: TrainConfig
    command: str = ""
    out: Path | None = None  # default: the config entry's weights
    run_dir: Path = ROOT / "runs" / "xray"
    resume: bool = False
    augment: bool = True
    warmup_data: Path | None = None
    warmup_epochs: int = 3
    mask_weight: float = 0.0
    mask_layers: tuple[str, ...] = ()  # default: the model's target_layer
    limit: int | None = None  # benchmark: images per split
    uncertain: str = "ignore"  # CheXpert
    val_fraction: float = 0.1  # CheXpert
    max_images: int | None = None  # CheXpert
    init: str = "random"  # or "imagenet" (training.weights.IMAGENET_INIT)

    def read(self, root: Path, spec: ModelSpec) -> Dataset:
        """The data at ``root`` as these options ask."""
        return read_data(root.expanduser(), spec, limit=self.limit, masks=self.mask_weight > 0,
                         uncertain=self.uncertain, val_fraction=self.val_fraction,
                         max_images=self.max_images, seed=self.train.seed)


def _warm_up(spec: ModelSpec, net: Any, options: XrayOptions) -> dict[str, Any]:
    """Curriculum: train first on an easier benchmark (``--warmup-data``, e.g. made with
    ``--contrast 0.35 0.6``), keeping its best epoch, so that networks which do not pick up
    small lesions from scratch start from a lesion detector."""
    t0 = time.time()
    warm = options.read(options.warmup_data, spec)
    cfg = TrainConfig(epochs=options.warmup_epochs, batch_size=options.train.batch_size,
                      lr=options.train.lr, weight_decay=options.train.weight_decay,
                      seed=options.train.seed, threads=options.train.threads)
    sys.stderr.write(f"  warm-up on {options.warmup_data} for {options.warmup_epochs} epochs\n")
    history = train(spec, net, warm.splits["train"].x, warm.splits["train"].y,
                    warm.splits["validation"].x, warm.splits["validation"].y, cfg,
                    augment=augment if options.augment else None,
                    masks=_mask_supervision(spec, warm.splits["train"], options))
    return {"data": str(options.warmup_data), "kind": warm.kind, **warm.details,
            "epochs": options.warmup_epochs, "best_epoch": history["best_epoch"],
            "best_validation_auc": history["best_metric"], "history": history["epochs"],
            "seconds": round(time.time() - t0, 1)}


def _mask_supervision(spec: ModelSpec, split: Split,
                      options: XrayOptions) -> MaskSupervision | None:
    if options.mask_weight <= 0:
        return None
    layers = tuple(options.mask_layers or [spec.target_layer])
    return MaskSupervision(split.masks, layers, options.mask_weight)


def _checkpoint(spec: ModelSpec, run_dir: Path) -> Path:
    name = "checkpoint.pt" if spec.framework == "torch" else "checkpoint.weights.h5"
    return run_dir / spec.id / name


def _check(spec: ModelSpec, options: XrayOptions) -> Path:
    """The weights path; refuses a model or options this trainer cannot serve."""
    if spec.modality != "xray" or spec.positive_index is None or len(spec.labels) != 2:
        raise SystemExit(f"'{spec.id}' is not a binary X-ray model (labels {list(spec.labels)}, "
                         f"output {spec.output}). TorchXRayVision models are not trained here: "
                         "see `python -m xai_platform.models.architectures.xrv_nets list`.")
    if options.mask_weight > 0 and spec.framework != "torch":
        raise SystemExit("--mask-weight is implemented for PyTorch models only.")
    weights = options.out or spec.weights
    if weights is None:
        raise SystemExit(f"'{spec.id}' has `weights: null`; set a path in its config entry "
                         "(e.g. xray/<id>.pt) or pass --out.")
    return Path(weights)


def _read(spec: ModelSpec, options: XrayOptions) -> Dataset:
    data = options.read(options.data, spec)
    if not {"train", "validation", "test"} <= set(data.splits):
        raise SystemExit(f"{options.data} gives splits {sorted(data.splits)}; train, validation "
                         "and test are all needed.")
    for name, split in data.splits.items():
        counts = split.counts(spec.positive_index)
        if counts["n_positive"] in (0, counts["n"]):
            raise SystemExit(f"the {name} split has only one class ({counts}); use more data.")
    return data


def _network(spec: ModelSpec, *, seed: int) -> Any:
    from xai_platform.models.formats import get_format

    net = get_format(spec.framework).build_network(spec, seed=seed)
    if spec.framework == "torch":  # about 3x faster convolutions on a CPU (measured)
        import torch

        net = net.to(memory_format=torch.channels_last)
    return net


def calibrate(z: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(temperature, threshold) fitted on the validation logits ``z`` (N,) and labels (N,)
    in {0, 1}: the threshold at the equal-error point of the calibrated probabilities."""
    temperature = fit_temperature(z, truth)
    return temperature, choose_threshold(sigmoid(z / temperature), truth)


def run(spec: ModelSpec, options: XrayOptions) -> ModelCard:
    """Train, save, reload, calibrate, evaluate every split and write the card."""
    weights = _check(spec, options)
    t_start = time.time()
    limit_threads(spec.framework, options.train.threads)
    data = _read(spec, options)
    positive = spec.positive_index
    net = _network(spec, seed=options.train.seed)
    init = (imagenet_init(spec, net) if options.init == "imagenet" else "random (seeded)")
    checkpoint = _checkpoint(spec, options.run_dir)
    if checkpoint.exists() and not options.resume:
        checkpoint.unlink()
        checkpoint.with_suffix(".json").unlink(missing_ok=True)
    warmup = _warm_up(spec, net, options) if options.warmup_data is not None else None
    train_split, val_split = data.splits["train"], data.splits["validation"]
    t_train = time.time()
    supervision = _mask_supervision(spec, train_split, options)
    history = train(spec, net, train_split.x, train_split.y, val_split.x, val_split.y,
                    options.train, checkpoint=checkpoint,
                    augment=augment if options.augment else None, masks=supervision)
    train_seconds = time.time() - t_train

    save_weights(spec, net, weights)
    handle = load_saved(spec, weights)  # every figure below is for the file as shipped
    scores = {name: handle.scores(split.x, batch_size=64) for name, split in data.splits.items()}
    truth = {name: (split.y == positive).astype(np.int64) for name, split in data.splits.items()}
    z_val = positive_logit(spec, scores["validation"])
    temperature, threshold = calibrate(z_val, truth["validation"])
    metrics = {name: binary_report(spec, scores[name], truth[name], temperature=temperature,
                                   threshold=threshold) for name in data.splits}
    raw_val = reliability(sigmoid(z_val), truth["validation"])

    stem = card_stem(weights)
    figure = plot_reliability(raw_val, metrics["validation"]["reliability"],
                              stem.with_name(f"{stem.name}.reliability.png"),
                              title=f"{spec.id}: validation reliability")
    details = {k: v for k, v in data.details.items() if k != "command"}
    card = ModelCard(
        model=cards.model_info(spec),
        data=DataInfo(kind=data.kind, root=str(options.data),
                      command=data.details.get("command"), details=details),
        splits={name: SplitInfo(**split.counts(positive)) for name, split in data.splits.items()},
        training=cards.training_info(
            options.train, history, command=options.command, seconds=round(train_seconds, 1),
            augmentation=AUGMENTATION if options.augment else "none", warmup=warmup,
            init=init,
            total_seconds=round(time.time() - t_start, 1)),
        metrics={name: SplitMetrics(**m) for name, m in metrics.items()},
        calibration=cards.calibration(temperature, threshold),
        reliability=ReliabilityFigure(file=figure.name, split="validation",
                                      uncalibrated_ece=raw_val["ece"]),
        mask_supervision=None if supervision is None else MaskSupervisionInfo(
            layers=tuple(supervision.layers), weight=supervision.weight,
            what=MASK_SUPERVISION),
        weights=cards.weights_info(spec, weights))
    cards.write_card(weights, card)
    return card


# --------------------------------------------------------------------------------------------
# Command line


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
    parser.add_argument("--init", choices=("random", "imagenet"), default="random",
                        help="imagenet: start from the ImageNet weights shipped in a registry "
                             "package (efficientnet_lite0 only; see "
                             "training.weights.IMAGENET_INIT)")
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


def options_from(args: argparse.Namespace) -> XrayOptions:
    """The options of a parsed command line."""
    return XrayOptions(
        data=args.data, out=args.out, run_dir=args.run_dir, resume=args.resume,
        command="python -m training.train_xray " + " ".join(shlex.quote(a) for a in args.argv),
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          weight_decay=args.weight_decay, seed=args.seed, threads=args.threads,
                          time_limit_s=args.time_limit),
        augment=not args.no_augment, warmup_data=args.warmup_data,
        warmup_epochs=args.warmup_epochs, mask_weight=args.mask_weight,
        mask_layers=tuple(args.mask_layer or ()), limit=args.limit, uncertain=args.uncertain,
        val_fraction=args.val_fraction, max_images=args.max_images, init=args.init)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, train, print the test figures."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    spec = load_config(args.config or ()).model(args.model)
    card = run(spec, options_from(args))
    test = card.metrics["test"]
    print(f"{card.model.id}: test AUC {test.roc_auc:.4f}, accuracy {test.accuracy:.4f}, "
          f"sensitivity@90%spec {test.sensitivity_at_90_specificity:.4f} "
          f"-> {card.weights.file} ({card.weights.bytes / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
