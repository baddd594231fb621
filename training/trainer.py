"""The shared training loop, for both frameworks: resumable (a checkpoint after every epoch),
seeded, the best validation epoch kept.

Training runs over feature planes ``(N, H, W)``, the network behind the *same* input adapter
the app uses (channel repetition, normalisation), so what is trained is exactly what is served.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xai_platform.config import ModelSpec

from .metrics import positive_logit, roc_auc

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class TrainConfig:
    """What the loop needs: epochs, batch, optimiser settings, seed, threads, a time limit."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int | None = None
    time_limit_s: float | None = None  # stop after the epoch that crosses it
    average_from: int | None = None  # PyTorch: keep the running mean of the weights from here


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
    from xai_platform.models.formats.keras import _frameworks  # imports torch first, then TF

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


@dataclass
class PairRanking:
    """Training-only ranking of matched pairs: each step also scores ``per_step`` pairs of
    windows (a fake and the real recording it was made from, e.g. a vocoded copy and its
    original: the same speaker, text and room) and adds ``weight`` times the logistic ranking
    loss ``softplus(z_real - z_fake)`` on the positive-class logits. Within a pair only the
    synthesis differs, so the term pushes the network towards synthesis evidence and away from
    the recording set-up, which the pair shares (a RankNet-style pairwise loss, Burges et al.,
    ICML 2005).

    pairs: (P, 2) int rows of the training windows, (positive-class window, other window).
    """

    pairs: np.ndarray
    weight: float = 1.0
    per_step: int = 8


class WeightAverage:
    """The running mean of a network's state after every optimiser step (stochastic weight
    averaging, Izmailov et al., UAI 2018; taken densely, every step, as in SWAD, Cha et al.,
    NeurIPS 2021): floating-point parameters and buffers are averaged (batch-norm running
    statistics too, so no pass over the data is needed afterwards), integer buffers keep the
    latest value. A flat region of the loss, which the mean of a stretch of the trajectory
    finds, tends to hold on data from set-ups training never saw."""

    def __init__(self) -> None:
        self.n = 0
        self.state: dict[str, Any] | None = None

    def add(self, net) -> None:
        current = net.state_dict()
        if self.state is None:
            self.state = {k: v.detach().clone() for k, v in current.items()}
        else:
            for k, v in current.items():
                mean = self.state[k]
                if mean.is_floating_point():
                    mean.add_((v.detach() - mean) / (self.n + 1))
                else:
                    mean.copy_(v)
        self.n += 1

    def snapshot(self) -> dict[str, Any]:
        if self.state is None:
            raise RuntimeError("no step has been averaged yet")
        return {k: v.clone() for k, v in self.state.items()}


def _labels_for_loss(spec: ModelSpec, y: np.ndarray) -> np.ndarray:
    return y.astype(np.float32) if spec.output == "sigmoid" else y.astype(np.int64)


def train(spec: ModelSpec, network: Any, train_x: np.ndarray, train_y: np.ndarray,
          val_x: np.ndarray, val_y: np.ndarray, config: TrainConfig, *,
          checkpoint: Path | None = None, augment: Augment | None = None,
          masks: MaskSupervision | None = None,
          ranking: PairRanking | None = None,
          sampling: np.ndarray | None = None) -> dict[str, Any]:
    """Train ``network`` (a torch module or Keras model built from ``spec``) on feature planes.

    x: (N, H, W) float32 feature planes; y: (N,) int class indices. Resumable: with a
    ``checkpoint`` path the state after every epoch is saved there, and a later call continues
    from it. The weights of the epoch with the best validation ROC AUC (binary) or accuracy are
    kept. ``masks`` (PyTorch only) adds :class:`MaskSupervision`; ``augment`` must then take
    and return the masks too (``augment(x, rng, masks=m) -> (x, m)``), moving them with the
    image. ``ranking`` (PyTorch, binary models only) adds :class:`PairRanking`. With
    ``config.average_from`` (PyTorch) a :class:`WeightAverage` runs from that epoch on, and the
    kept network is the averaged one at its best validated epoch. ``sampling``:
    (N,) non-negative weights; each epoch then draws its N rows with replacement in proportion
    to them (a weighted sampler) instead of a permutation. Returns the training history.
    """
    if sampling is not None:
        sampling = np.asarray(sampling, np.float64)
        if sampling.shape != (len(train_x),) or np.any(sampling < 0) or not sampling.sum() > 0:
            raise ValueError("sampling needs one non-negative weight per training row, "
                             "not all zero")
    if config.average_from is not None and not 1 <= config.average_from <= config.epochs:
        raise ValueError(f"average_from must be an epoch from 1 to {config.epochs}, "
                         f"not {config.average_from}")
    if ranking is not None and (spec.positive_index is None or len(spec.labels) != 2):
        raise ValueError("pair ranking needs a binary model with a positive label")
    if spec.framework == "torch":
        return _train_torch(spec, network, train_x, train_y, val_x, val_y, config, checkpoint,
                            augment, masks, ranking, sampling)
    if masks is not None:
        raise ValueError("mask supervision is implemented for PyTorch models only")
    if ranking is not None:
        raise ValueError("pair ranking is implemented for PyTorch models only")
    if config.average_from is not None:
        raise ValueError("weight averaging is implemented for PyTorch models only")
    return _train_keras(spec, network, train_x, train_y, val_x, val_y, config, checkpoint, augment,
                        sampling)


def _epoch_batches(train_x: np.ndarray, n_batches: int, batch_size: int, augment, rng,
                   masks: np.ndarray | None = None, sampling: np.ndarray | None = None):
    """One epoch's shuffled batches, augmented: (index, rows, float32 batch, masks or None).
    Both frameworks draw the permutation (or, with ``sampling`` weights, N rows with
    replacement), then each batch's augmentation, from ``rng`` in this order (resuming restores
    ``rng``, so a resumed run sees the same batches)."""
    n = len(train_x)
    order = (rng.permutation(n) if sampling is None
             else rng.choice(n, size=n, replace=True, p=sampling / sampling.sum()))
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


def _ranking_loss(spec: ModelSpec, model, train_x: np.ndarray, ranking: PairRanking,
                  augment, rng):
    """:class:`PairRanking`'s term for one step: ``per_step`` pairs drawn from ``rng``,
    augmented like the training batches."""
    import torch
    import torch.nn.functional as F

    rows = ranking.pairs[rng.integers(0, len(ranking.pairs), ranking.per_step)]
    xb = train_x[np.concatenate([rows[:, 0], rows[:, 1]])].astype(np.float32)
    if augment is not None:
        xb = augment(xb, rng)
    out = model(torch.from_numpy(xb))
    pos = spec.positive_index
    if spec.output == "sigmoid":
        z = out[:, 0] if pos == 1 else -out[:, 0]
    else:
        z = out[:, pos] - out[:, 1 - pos]
    n = len(rows)
    return ranking.weight * F.softplus(z[n:] - z[:n]).mean()


def _val_torch(spec: ModelSpec, net, val_x: np.ndarray, val_y: np.ndarray) -> float:
    from xai_platform.models.formats.torch import TorchHandle

    handle = TorchHandle(spec, net, device="cpu", untrained=False)
    metric = _val_metric(spec, handle.scores(val_x, batch_size=64), val_y)
    for p in net.parameters():  # the handle froze them for inference
        p.requires_grad_(True)
    net.train()
    return metric


def _train_torch(spec, net, train_x, train_y, val_x, val_y, config, checkpoint, augment,
                 masks=None, ranking=None, sampling=None):
    import torch
    from torch import nn

    from xai_platform.models.formats.torch import InputAdapter

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
    average = None if config.average_from is None else WeightAverage()
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own file
        net.load_state_dict(state["net"])
        if average is not None and state.get("average") is not None:
            average.n, average.state = state["average"]["n"], state["average"]["state"]
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
                                     None if masks is None else masks.masks, sampling)
            for i, idx, xb, mb in batches:
                out = model(torch.from_numpy(xb))
                yb = torch.from_numpy(targets[idx])
                loss = loss_fn(out[:, 0], yb) if spec.output == "sigmoid" else loss_fn(out, yb)
                if head is not None:
                    loss = loss + head.loss(mb)
                if ranking is not None:
                    loss = loss + _ranking_loss(spec, model, train_x, ranking, augment, rng)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                if average is not None and epoch >= config.average_from:
                    average.add(net)
                losses.append(loss.item())
                progress.batch(epoch, i + 1, n_batches, float(np.mean(losses[-20:])))
            metric = _val_torch(spec, net, val_x, val_y)
            row = {"epoch": epoch, "loss": float(np.mean(losses)), "val": metric}
            candidate = None
            if average is None:
                candidate = metric, {k: v.detach().clone() for k, v in net.state_dict().items()}
            elif average.n:  # the averaged network is validated, and kept if it is the best
                current = {k: v.detach().clone() for k, v in net.state_dict().items()}
                net.load_state_dict(average.state)
                row["val_averaged"] = _val_torch(spec, net, val_x, val_y)
                net.load_state_dict(current)
                candidate = row["val_averaged"], average.snapshot()
            history["epochs"].append(row)
            if candidate is not None and candidate[0] > history["best_metric"]:
                history["best_metric"], history["best_epoch"] = candidate[0], epoch
                best_state = candidate[1]
            progress.epoch(epoch, {k: v for k, v in row.items() if k != "epoch"})
            if checkpoint is not None:
                checkpoint.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(),
                            "sched": sched.state_dict(),
                            "mask_head": None if head is None else head.convs.state_dict(),
                            "average": None if average is None else {"n": average.n,
                                                                     "state": average.state},
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


def _train_keras(spec, model, train_x, train_y, val_x, val_y, config, checkpoint, augment,
                 sampling=None):
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
        for i, idx, xb, _ in _epoch_batches(train_x, steps, config.batch_size, augment, rng,
                                            sampling=sampling):
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
