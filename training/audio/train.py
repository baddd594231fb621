"""Train a configured audio deepfake detector, calibrate it on validation, test it, write the card.

    python -m training.train_audio --model audio-cnn --data data/audio_corpus [--epochs N]
        [--time-limit S] [--seed S] [--config PATH] [--out weights/audio/audio-cnn.pt]

``--data`` is either the offline corpus (a folder with ``metadata.csv``, built by
:mod:`training.audio.corpus`) or the Fake-or-Real dataset (a folder holding ``for-norm``,
``for-2sec`` or ``for-rerec``, or one of those: ``training|validation|testing`` /
``real|fake``).

Features are made by the app's own inference path (:func:`xai_platform.preprocessing.audio.
load_for_model` -> :func:`~xai_platform.preprocessing.audio.model_inputs`: decode, resample,
windows, :func:`~xai_platform.preprocessing.audio.spectrogram`, or the windows' samples for a
waveform model), so the model is trained on exactly what it will be served; they are cached per split as ``.npy`` under a key of the feature settings and
the files. A clip longer than the window gives several training windows; a clip is scored as
the app scores a recording (mean of its windows' probabilities).

After training (resumable: the state after every epoch is checkpointed under ``runs/``) the
weights are saved and *loaded back* the way the app loads them, and everything below is
measured on the saved file:

* temperature scaling and the decision threshold (equal-error point), fitted on validation;
* on the test split: accuracy, EER, ROC AUC, false-alarm rate (real called fake) and miss rate
  at that threshold, per language and per generator too, and reliability diagrams (PNG beside
  the weights) before and after calibration;
* EER again after every test clip, real and fake alike, goes through the same degradation (8 kHz
  + loudness + MP3; low-bitrate Ogg Vorbis + loudness), to check the model learned voices, not
  recording artefacts;
* which mel bands Grad-CAM and Integrated Gradients point at on up to 100 test clips (a
  waveform model is explained on the window's log-mel, as the app does).
"""


from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xai_platform.config import ROOT, ModelSpec, load_config
from xai_platform.modalities.audio import AudioInput
from xai_platform.preprocessing import audio
from xai_platform.models.cards import (DataInfo, ModelCard, ReliabilityFigure, RobustnessCheck,
                                       SplitInfo, SplitMetrics, card_path, card_stem)

from .. import cards
from ..calibration import choose_threshold, fit_temperature, plot_reliability
from ..metrics import reliability, roc_auc
from ..trainer import PairRanking, TrainConfig, limit_threads, train
from ..weights import imagenet_init, load_saved, save_weights
from .augment import AUGMENTATIONS, augmentation
from .data import SPLITS, Clip, load_clips
from .digests import write_digests
from .evaluate import (DEGRADATIONS, band_calls, band_rates, band_report, band_summary,
                       clip_probabilities, report, speech_seconds, window_logits)
from .features import (FeatureSet, Transform, cap_per_language, feature_set,
                       limit_real_speakers, match_speech_duration, pair_index, per_class_totals,
                       resplit, source_balancing, twin_sampling)
from .room_tone import RoomTones
from .rooms import Rooms

VERDICT_RULE = "mean of window probabilities >= threshold"
SPLIT_RULE = "by language (offline corpus) / as distributed (Fake-or-Real)"


@dataclass(frozen=True)
class AudioOptions:
    """One audio training run: the data, where the weights go, the loop's settings and what
    to measure (the command line, parsed)."""

    data: Path
    out: Path
    train: TrainConfig
    command: str = ""
    cache_dir: Path | None = None
    checkpoint: Path | None = None  # resumed from when it exists
    subset: str | None = None  # Fake-or-Real: for-norm, for-2sec or for-rerec
    augment: str = "masks"  # a key of AUGMENTATIONS
    cap_per_language: int | None = None
    match_speech_duration: float | None = None  # bin width in seconds
    real_speakers: int | None = None  # train on the real clips of this many speakers
    init: str = "random"  # or "imagenet"
    train_languages: tuple[str, ...] | None = None
    validation_languages: tuple[str, ...] | None = None
    robustness: bool = True
    explain: tuple[str, ...] = ("gradcam", "integrated_gradients")
    explain_clips: int = 100
    pair_loss: float = 0.0  # weight of the ranking term on (vocoded copy, original) pairs
    twin_share: float | None = None  # share of the fake draws given to the twins
    room_tone: bool = False  # lend the synthetic training fakes real room tone (room_tone.py)
    rooms: float | None = None  # share of training clips heard through a simulated room
    balance_sources: float | None = None  # exponent of the source-balanced sampler
    nap: tuple[int, ...] = ()  # a read-out's set-up directions projected out: candidate counts
    nap_rule: str = "best"  # how the count is chosen (NAP_RULES)


def build(spec: ModelSpec, *, seed: int, threads: int) -> Any:
    """A seeded, untrained network for ``spec``, on ``threads`` CPU threads."""
    # The shipped audio models were trained with these settings (inter-op = threads, no
    # TensorFlow op determinism); X-ray training uses the defaults. Changing them here changes
    # the Keras results, so it waits for the next retraining of the audio models.
    limit_threads(spec.framework, threads, interop=threads, deterministic=False)
    if spec.framework == "torch":
        from xai_platform.models.formats.torch import build_network
    else:
        from xai_platform.models.formats.keras import build_network
    return build_network(spec, seed=seed)


def default_out(spec: ModelSpec) -> Path:
    """The config's weights path, or ``weights/audio/<id>.pt`` (``.weights.h5`` for Keras)."""
    if spec.weights is not None:
        return spec.weights
    ext = ".pt" if spec.framework == "torch" else ".weights.h5"
    return ROOT / "weights" / "audio" / f"{spec.id}{ext}"


def run(spec: ModelSpec, options: AudioOptions) -> ModelCard:
    """Train, save, reload, calibrate, evaluate and write the card. Returns the card."""
    if spec.modality != "audio" or not isinstance(spec.input, AudioInput):
        raise SystemExit(f"model '{spec.id}' is not an audio model.")
    if spec.positive_index is None or len(spec.labels) != 2:
        raise SystemExit(f"model '{spec.id}' must be binary with positive_label: fake.")
    if options.nap and spec.architecture not in READOUT_ARCHITECTURES:
        raise SystemExit(f"--nap projects a read-out's input; '{spec.id}' has no read-out "
                         f"(architectures with one: {', '.join(READOUT_ARCHITECTURES)})")
    t_start = time.time()
    clips, info = load_clips(options.data, options.subset, audio_digests=True)
    tones = room_tones(clips, options)
    rooms = Rooms(options.rooms, seed=options.train.seed) if options.rooms else None
    sets = training_sets(spec, clips, options, tones, rooms)
    network = build(spec, seed=options.train.seed, threads=options.train.threads)
    init = (imagenet_init(spec, network) if options.init == "imagenet"
            else "random (seeded)")
    ranking = pair_ranking(spec, sets["train"], options.pair_loss)
    sampling = twin_draws(spec, sets["train"], options.twin_share)
    sampling = source_draws(sets["train"], options.balance_sources, sampling)
    readout: dict[str, Any] = {}
    oos: np.ndarray | None = None
    if hasattr(network, "set_readout"):  # a frozen encoder: fit its linear read-out instead
        history, train_seconds, readout, oos = fit_readout(spec, network, sets, nap=options.nap,
                                                           nap_rule=options.nap_rule)
        this_session = train_seconds
        options = dataclasses.replace(options, augment="none",
                                      train=dataclasses.replace(options.train, epochs=0))
        init = ("frozen pretrained encoder (Whisper-base, arch_args.encoder); only the read-out "
                "is fitted (options.readout)")
    else:
        history, train_seconds, this_session = _train(spec, network, sets, options, ranking,
                                                      sampling)
    save_weights(spec, network, options.out)
    handle = load_saved(spec, options.out)  # every figure below is for the file as shipped

    z = {s: window_logits(handle, fs.x) for s, fs in sets.items()}
    pos = spec.positive_index
    temperature, threshold = calibrate(spec, z["validation"], sets["validation"])
    how: dict[str, Any] = {}
    speech: dict[str, np.ndarray] = {}
    if oos is not None:  # the threshold and a "cannot tell" band from sources held out in turn
        threshold, band = out_of_source_calibration(spec, oos, sets["train"], temperature)
        # and a wider one for recordings with little speech, where validation prefers it
        speech = {s: speech_seconds(fs.clips, spec.input) for s, fs in sets.items()}
        p_oos, ok = oos_clip_probabilities(oos, sets["train"], temperature)
        val = sets["validation"]
        p_val = clip_probabilities(z["validation"], val.clip, len(val.clips), temperature)
        band["short_speech"] = short_speech_band(
            ((sets["train"].y_clip == pos)[ok], p_oos[ok], speech["train"][ok]),
            (val.y_clip == pos, p_val, speech["validation"]), threshold=threshold,
            below=band["below"], above=band["above"])
        how = {"fitted_on": OOS_FITTED_ON, "method": OOS_METHOD, "band": band}
    metrics = {s: report(spec, z[s], sets[s], temperature=temperature, threshold=threshold,
                         breakdown=s == "test") for s in ("validation", "test")}
    if how:
        for s in metrics:
            # the test split's fakes (voices, languages and generators training never had)
            # are what the app quotes beside a verdict that found no fake
            below, above = band_edges(how["band"], speech[s])
            metrics[s]["band"] = band_report(spec, z[s], sets[s], temperature=temperature,
                                             below=below, above=above,
                                             keep=("fake",) if s == "test" else ())
    test = sets["test"]
    raw = reliability(clip_probabilities(z["test"], test.clip, len(test.clips), 1.0),
                      (test.y_clip == pos).astype(int))
    stem = card_stem(options.out)
    plot = plot_reliability(raw, metrics["test"]["reliability"],
                            stem.with_name(f"{stem.name}.reliability.png"),
                            title=f"{spec.id}: test split (T = {temperature:.2f})")
    robustness = (degraded_tests(handle, clips, options, temperature=temperature,
                                 threshold=threshold) if options.robustness else {})
    explanations = None
    if options.explain:
        explanations = band_summary(handle, test, z["test"], methods=options.explain,
                                    n_clips=options.explain_clips, seed=options.train.seed)
    card = ModelCard(
        model=cards.model_info(spec),
        data=DataInfo(
            kind=info["kind"], root=info["root"],
            command=(info.get("corpus") or {}).get("command"),
            split_rule=(info.get("corpus") or {}).get("split_rule") or SPLIT_RULE,
            generators_trained_on=tuple(sorted(
                {c.generator for c in clips if c.split == "train" and c.label == "fake"})),
            details=_details(info)),
        splits={s: _split_info(fs, pos) for s, fs in sets.items()},
        training=cards.training_info(
            options.train, history, command=options.command, seconds=train_seconds,
            augmentation=f"{options.augment}: {AUGMENTATIONS[options.augment]}, both classes",
            init=init, options={"cap_per_language": options.cap_per_language,
                                "match_speech_duration_s": options.match_speech_duration,
                                "real_speakers": options.real_speakers,
                                **({"pair_loss": options.pair_loss,
                                    "pairs": int(len(ranking.pairs))} if ranking else {}),
                                **({"twin_share": options.twin_share}
                                   if options.twin_share is not None else {}),
                                **({"room_tone": {"sources": tones.summary(),
                                                  "fakes_lent_per_source": tones.lent(clips)}}
                                   if tones is not None else {}),
                                **({"rooms": rooms.summary(clips)} if rooms is not None
                                   else {}),
                                **({"balance_sources": options.balance_sources}
                                   if options.balance_sources is not None else {}),
                                **({"readout": readout} if readout else {})},
            # this session's time outside training (a resumed run trained earlier too)
            other_seconds=time.time() - t_start - this_session,
            total_seconds=time.time() - t_start),
        metrics={s: SplitMetrics(**r) for s, r in metrics.items()},
        calibration=cards.calibration(temperature, threshold, verdict_rule=VERDICT_RULE, **how),
        reliability=ReliabilityFigure(file=plot.name, split="test",
                                      uncalibrated_ece=raw["ece"]),
        robustness=robustness, explanations=explanations,
        weights=cards.weights_info(spec, options.out))
    cards.write_card(options.out, card)
    if "clip_sha256" in info:  # which clips a rebuilt corpus changes (training.audio.digests)
        write_digests(stem.with_name(f"{stem.name}.clips.sha256.gz"), info["clip_sha256"])
    return card


def calibrate(spec: ModelSpec, z: np.ndarray, val: FeatureSet) -> tuple[float, float]:
    """(temperature, threshold) fitted on validation: the temperature on the windows' logits
    ``z`` (N,), the threshold at the equal-error point of the clips' calibrated probabilities
    (the app's verdict rule)."""
    pos = spec.positive_index
    if spec.output == "probabilities":
        temperature = 1.0  # the app does not rescale a softmax head
    else:
        temperature = fit_temperature(z, (val.y == pos).astype(float))
    p_val = clip_probabilities(z, val.clip, len(val.clips), temperature)
    return temperature, choose_threshold(p_val, (val.y_clip == pos).astype(int))


def degraded_tests(handle: Any, clips: Sequence[Clip], options: AudioOptions, *,
                   temperature: float, threshold: float) -> dict[str, RobustnessCheck]:
    """The test split scored again after each of :data:`DEGRADATIONS`, every clip alike."""
    out = {}
    for name, (transform, condition) in DEGRADATIONS.items():
        fs = feature_set(clips, handle.spec, "test", cache_dir=options.cache_dir, variant=name,
                         transform=transform)
        degraded = report(handle.spec, window_logits(handle, fs.x), fs,
                          temperature=temperature, threshold=threshold)
        out[name] = RobustnessCheck(condition=condition, metrics=SplitMetrics(**degraded))
    return out


def training_sets(spec: ModelSpec, clips: Sequence[Clip], options: AudioOptions,
                  tones: RoomTones | None = None, rooms: Rooms | None = None
                  ) -> dict[str, FeatureSet]:
    """Features of every split (the training fakes lent ``tones``' room tone and the training
    clips put in ``rooms``, when given), the languages regrouped as asked, the training set
    capped or matched as asked."""
    steps = [(f"roomtone-s{tones.seed}", tones.transform)] if tones is not None else []
    steps += [(rooms.variant, rooms.transform)] if rooms is not None else []
    train_options = ({"variant": "-".join(name for name, _ in steps),
                      "clip_transform": _chained([f for _, f in steps])} if steps else {})
    sets = {s: feature_set(clips, spec, s, cache_dir=options.cache_dir,
                           **(train_options if s == "train" else {}))
            for s in SPLITS}
    sets = resplit(sets, train=options.train_languages, validation=options.validation_languages)
    seed = options.train.seed
    sets["train"] = cap_per_language(sets["train"], options.cap_per_language, seed=seed)
    sets["train"] = match_speech_duration(sets["train"], options.match_speech_duration,
                                          seed=seed)
    sets["train"] = limit_real_speakers(sets["train"], options.real_speakers, seed=seed)
    return sets


def _chained(steps: Sequence[Callable[[Clip], Transform | None]]
             ) -> Callable[[Clip], Transform | None]:
    """One per-clip transform that runs each of ``steps``' transforms for the clip in turn."""
    def for_clip(clip: Clip) -> Transform | None:
        mine = [t for t in (step(clip) for step in steps) if t is not None]
        if not mine:
            return None

        def apply(wave: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
            for t in mine:
                wave, sr = t(wave, sr)
            return wave, sr

        return apply

    return for_clip


def room_tones(clips: Sequence[Clip], options: AudioOptions) -> RoomTones | None:
    """The training real recordings' room tone, for ``--room-tone``; None without it."""
    if not options.room_tone:
        return None
    tones = RoomTones.from_clips(clips, seed=options.train.seed)
    if not tones.by_source:
        raise SystemExit("--room-tone needs training real clips whose originals can be read "
                         "(the original column of a corpus v2 metadata.csv).")
    sys.stderr.write(f"  room tone, noise-to-speech per source: {tones.summary()}\n")
    return tones


def pair_ranking(spec: ModelSpec, train_set: FeatureSet, weight: float) -> PairRanking | None:
    """The pair-ranking term on the training split's (vocoded copy, original) window pairs;
    None when ``weight`` is 0."""
    if not weight:
        return None
    pairs = pair_index(train_set, spec.positive_index)
    if not len(pairs):
        raise SystemExit("--pair-loss needs training fakes paired with their originals "
                         "(a corpus built by python -m training.audio_paired).")
    sys.stderr.write(f"  pair ranking on {len(pairs)} window pairs, weight {weight:g}\n")
    return PairRanking(pairs, weight=weight)


def twin_draws(spec: ModelSpec, train_set: FeatureSet, share: float | None
               ) -> np.ndarray | None:
    """Sampling weights that draw the training split's twins as ``share`` of the fakes
    (:func:`twin_sampling`); None when no share is set."""
    if share is None:
        return None
    try:
        weights = twin_sampling(train_set, spec.positive_index, share)
    except ValueError as e:
        raise SystemExit(f"--twin-share: {e} (a corpus built by python -m "
                         "training.audio_paired has them)") from None
    sys.stderr.write(f"  twins drawn as {share:.0%} of the training fakes\n")
    return weights


def source_draws(train_set: FeatureSet, alpha: float | None, sampling: np.ndarray | None
                 ) -> np.ndarray | None:
    """``sampling`` (None: uniform) times the source-balanced weights of
    :func:`source_balancing` with exponent ``alpha``, each class keeping its number of draws;
    ``sampling`` itself when ``alpha`` is None."""
    if alpha is None:
        return sampling
    try:
        weights = source_balancing(train_set, alpha)
    except ValueError as e:
        raise SystemExit(f"--balance-sources: {e}") from None
    if sampling is not None:
        weights = per_class_totals(weights * sampling, train_set.y, sampling)
    real = np.array([train_set.clips[i].label == "real" for i in train_set.clip])
    sources = np.array([train_set.clips[i].source for i in train_set.clip])
    total = weights[real].sum()
    sys.stderr.write("  draws per real source: " + ", ".join(
        f"{s} {weights[real & (sources == s)].sum() / total:.1%}"
        for s in sorted(set(sources[real]))) + "\n")
    return weights


#: the logistic read-out's inverse L2 strengths; the one with the best validation AUC is kept
READOUT_C = (1e-3, 1e-2, 1e-1)
#: architectures whose networks are a frozen encoder with a fitted read-out (``set_readout``)
READOUT_ARCHITECTURES = ("whisper_readout",)


def readout_features(network: Any, x: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """A frozen-encoder network's features (before its read-out) of every window of ``x``."""
    import torch

    with torch.no_grad():
        return np.concatenate([network.features(torch.from_numpy(x[i:i + batch_size])).numpy()
                               for i in range(0, len(x), batch_size)])


def readout_scaling(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) that standardise a read-out's features, fitted on the windows ``x``."""
    return x.mean(axis=0), x.std(axis=0) + 1e-6


def nap_directions(z: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int, *,
                   min_windows: int = 20) -> np.ndarray:
    """(d, k) orthonormal directions of the recording set-up in the standardised features
    ``z``: the top ``k`` right singular vectors of each (group, class) mean's deviation from
    its class mean, over the (group, class) cells of at least ``min_windows`` windows. Removing
    them (nuisance attribute projection, as in speaker verification) leaves a read-out fewer
    ways to tell the classes apart by where they were recorded."""
    rows = []
    for cls in np.unique(y):
        in_class = y == cls
        class_mean = z[in_class].mean(axis=0)
        for group in np.unique(groups[in_class]):
            cell = in_class & (groups == group)
            if cell.sum() >= min_windows:
                rows.append(z[cell].mean(axis=0) - class_mean)
    if len(rows) <= k:
        raise ValueError(f"{k} set-up directions need more than {k} (source, class) cells of "
                         f"{min_windows} windows; there are {len(rows)}")
    _, _, vt = np.linalg.svd(np.asarray(rows, dtype=np.float64), full_matrices=False)
    return vt[:k].T


def projected_readout(z: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int,
                      c: float) -> tuple[np.ndarray, float]:
    """(weights, bias) of :func:`training.audio.probe.logistic` of strength ``c`` fitted on the
    standardised ``z`` with :func:`nap_directions` ``k`` projected out, folded into weights on
    ``z`` itself (w' = (I - U U^T) w: the projection is linear, so the shipped read-out keeps
    its form)."""
    from .probe import logistic

    u = nap_directions(z, y, groups, k)
    clf = logistic(c).fit(z - (z @ u) @ u.T, y)
    w = clf.coef_[0]
    return w - u @ (u.T @ w), float(clf.intercept_[0])


def fit_readout(spec: ModelSpec, network: Any, sets: dict[str, FeatureSet], *,
                nap: Sequence[int] = (), nap_rule: str = "best"
                ) -> tuple[dict[str, Any], float, dict[str, Any], np.ndarray | None]:
    """Fit a frozen-encoder network's read-out (``network.set_readout``): a logistic regression
    with balanced classes on the training windows' standardised features, its strength from
    :data:`READOUT_C` by the validation windows' ROC AUC. With at least
    :data:`OOS_MIN_SOURCES` sources in training, also every training window's logit from the
    same fit made without its source (:func:`out_of_source_logits`). Returns a trainer-style
    history (no epochs), the seconds taken, what was fitted (for the card) and those logits
    (None with fewer sources).

    ``nap``: candidate numbers of recording set-up directions (:func:`nap_directions`, from the
    training sources) to project out before the read-out, at the strength chosen without
    them; the count with the highest validation window AUC is kept (docs/AUDIO.md, twenty-sixth
    session, E16), or with ``nap_rule="within-se"`` the smallest count within one standard error
    of it (:func:`smallest_within_se`)."""
    from .probe import logistic_fits

    t0 = time.time()
    pos = spec.positive_index
    x_train, x_val = (readout_features(network, sets[s].x) for s in ("train", "validation"))
    y_train, y_val = ((sets[s].y == pos).astype(int) for s in ("train", "validation"))
    mean, scale = readout_scaling(x_train)
    z_train, z_val = (x_train - mean) / scale, (x_val - mean) / scale
    fits = logistic_fits(z_train, y_train, z_val, y_val, READOUT_C)
    auc, c, clf = max(fits, key=lambda f: f[0])
    weights, bias = clf.coef_[0], float(clf.intercept_[0])
    groups = window_sources(sets["train"])
    projection: dict[str, Any] = {}
    k = 0
    if nap:
        if groups is None:
            raise SystemExit(f"--nap needs at least {OOS_MIN_SOURCES} training sources; "
                             "the corpus names fewer")
        by_k = {}
        for cand in nap:
            w, b = projected_readout(z_train, y_train, groups, cand, c)
            by_k[cand] = (float(roc_auc(z_val @ w + b, y_val)), w, b)
        k = max(by_k, key=lambda cand: by_k[cand][0])  # the first best
        within: dict[str, Any] = {}
        if nap_rule == "within-se":
            k, se = smallest_within_se({cand: z_val @ v[1] + v[2] for cand, v in by_k.items()},
                                       y_val, sets["validation"].clip)
            within = {"rule": NAP_RULES[nap_rule],
                      "standard_error_to_best_by_k": {str(c): round(v, 4) for c, v in se.items()}}
        elif nap_rule != "best":
            raise ValueError(f"unknown nap_rule {nap_rule!r}; one of {', '.join(NAP_RULES)}")
        auc, weights, bias = by_k[k]
        projection = {"nap": {
            "method": ("the top k directions of the training sources' (source, class) means "
                       "about their class means, projected out of the standardised features "
                       "and folded into the read-out's weights"),
            "k": int(k), "validation_auc_by_k": {str(cand): round(v[0], 4)
                                                 for cand, v in by_k.items()}, **within}}
    network.set_readout(mean, scale, weights, bias)
    oos = (None if groups is None
           else out_of_source_logits(x_train, y_train, groups, c, nap_k=k))
    seconds = time.time() - t0
    info = {"model": "logistic regression, balanced classes, standardised features",
            "features": int(x_train.shape[1]), "windows": {"train": len(x_train),
                                                           "validation": len(x_val)},
            "validation_auc_by_c": {str(cc): round(float(a), 4) for a, cc, _ in fits},
            "c": c, **projection,
            **({"out_of_source": {"sources": sorted(set(groups.tolist())),
                                  "window_auc": round(float(roc_auc(oos[~np.isnan(oos)],
                                                                    y_train[~np.isnan(oos)])),
                                                      4)}}
               if oos is not None else {})}
    return {"epochs": [], "best_epoch": 0, "best_metric": float(auc)}, seconds, info, oos


#: a read-out's threshold and band come from out-of-source logits when training has at least
#: this many sources (one held out in turn); otherwise from validation, like any model
OOS_MIN_SOURCES = 3
#: the band's target: at most this share of the training sources' real clips called fake, and
#: of their fakes called real, when each source is scored by a fit that never saw it
BAND_TARGET = 0.05
#: (read "fitted on <this> data") every training source's clips scored by the read-out fitted
#: without that source
OOS_FITTED_ON = "out-of-source training"
OOS_METHOD = ("temperature scaling of the positive logit on validation; every training "
              "source's clips scored by the read-out fitted without that source; threshold at "
              "the equal-error point of those scores; 'cannot tell' band where at most "
              f"{BAND_TARGET:.0%} of their real clips are called fake and {BAND_TARGET:.0%} of "
              "their fakes real")


#: how ``--nap``'s count is chosen among its candidates
NAP_RULES = {
    "best": "the highest validation window AUC (the first of equals)",
    "within-se": ("the smallest count whose validation window AUC is within one standard error "
                  "of the best's (the paired difference over 200 bootstrap resamples of the "
                  "validation clips, seed 0)"),
}


def smallest_within_se(scores: dict[int, np.ndarray], y: np.ndarray, clip: np.ndarray, *,
                       draws: int = 200, seed: int = 0) -> tuple[int, dict[int, float]]:
    """The smallest candidate whose window AUC is within one standard error of the best's, the
    error of the paired difference (best minus candidate) over ``draws`` resamples of the clips
    (``clip``: each window's clip; its windows go with it). ``scores``: candidate -> (N,)
    scores. Returns it and every candidate's standard error. A difference of a ten-thousandth
    between counts, as on the default card's corpus, then no longer decides (docs/AUDIO.md,
    forty-fifth session)."""
    ks = sorted(scores)
    auc = {k: float(roc_auc(scores[k], y)) for k in ks}
    best = max(ks, key=lambda k: auc[k])
    rng = np.random.default_rng(seed)
    clips = np.unique(clip)
    rows = [np.flatnonzero(clip == c) for c in clips]
    diffs = {k: [] for k in ks}
    for _ in range(draws):
        idx = np.concatenate([rows[i] for i in rng.integers(0, len(clips), len(clips))])
        if len(np.unique(y[idx])) < 2:
            continue
        top = roc_auc(scores[best][idx], y[idx])
        for k in ks:
            diffs[k].append(top - roc_auc(scores[k][idx], y[idx]))
    se = {k: float(np.std(diffs[k], ddof=1)) for k in ks}
    return min(k for k in ks if auc[best] - auc[k] <= se[k]), se


def window_sources(fs: FeatureSet) -> np.ndarray | None:
    """(N,) the source of each window's clip ("" where unknown), or None with fewer than
    :data:`OOS_MIN_SOURCES` known sources."""
    clips = getattr(fs, "clips", None)
    if clips is None:
        return None
    sources = np.array([c.source or "" for c in clips])[fs.clip]
    return sources if len(set(sources.tolist()) - {""}) >= OOS_MIN_SOURCES else None


def out_of_source_logits(x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                         c: float, *, nap_k: int = 0) -> np.ndarray:
    """(N,) each window's logit from the read-out (standardised, balanced logistic regression
    of strength ``c``) fitted on the windows of every other group; NaN for a group whose
    complement lacks a class. Scores that stand in for recording set-ups never heard: a
    threshold chosen on them carries over to an unseen set-up better than one chosen on
    validation (docs/AUDIO.md, twenty-fourth session). ``nap_k``: the read-out projects that
    many set-up directions out (:func:`projected_readout`), found without the held-out group."""
    from .probe import logistic

    out = np.full(len(x), np.nan)
    for group in np.unique(groups):
        hold = groups == group
        rest = ~hold
        if len(np.unique(y[rest])) < 2:
            continue
        mean, scale = readout_scaling(x[rest])
        z_rest, z_hold = (x[rest] - mean) / scale, (x[hold] - mean) / scale
        if nap_k:
            w, b = projected_readout(z_rest, y[rest], groups[rest], nap_k, c)
            out[hold] = z_hold @ w + b
        else:
            out[hold] = logistic(c).fit(z_rest, y[rest]).decision_function(z_hold)
    return out


def oos_clip_probabilities(z_oos: np.ndarray, train: FeatureSet, temperature: float
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(p, ok): each training clip's calibrated probability from its windows' out-of-source
    logits (the app's rule), and whether every window of it was scored (a clip of a source
    whose complement lacks a class is not)."""
    n = len(train.clips)
    p = clip_probabilities(np.nan_to_num(z_oos), train.clip, n, temperature)
    return p, np.bincount(train.clip, np.isnan(z_oos), minlength=n) == 0


def out_of_source_calibration(spec: ModelSpec, z_oos: np.ndarray, train: FeatureSet,
                              temperature: float, *, target: float = BAND_TARGET
                              ) -> tuple[float, dict[str, Any]]:
    """(threshold, band) on the clips' calibrated probabilities (the app's rule: mean of the
    window probabilities) from out-of-source logits: the threshold at their equal-error
    point; the band from where at most ``target`` of the real clips lie above it to where at
    most ``target`` of the fakes lie below it (widened to hold the threshold), and what that
    pooled band does to each training source's real clips (``out_of_source``: one set-up can
    sit far above the pool), with those clips' probabilities (``real_scores``, sorted, per
    source), from which the app tells a user how often real voices of set-ups the model never
    heard reach the score of their input. Clips with a window left unscored are left out."""
    from .probe import two_thresholds

    pos = spec.positive_index
    p, ok = oos_clip_probabilities(z_oos, train, temperature)
    y = (train.y_clip == pos).astype(int)
    threshold = float(choose_threshold(p[ok], y[ok]))
    t_real, t_fake = two_thresholds(y[ok], p[ok], target)
    below, above = float(min(t_real, threshold)), float(max(t_fake, threshold))
    # what a set-up the read-out never heard can expect: each training source's real clips,
    # scored by the fit without it, against the pooled band
    kept = np.flatnonzero(ok)
    rates = band_rates(p[kept], y[kept], [train.clips[i] for i in kept], below=below,
                       above=above, keep=("real",))
    return threshold, {"below": below, "above": above, "target": target,
                       "clips": int(ok.sum()), "fitted_on": OOS_FITTED_ON,
                       "method": OOS_METHOD,
                       "out_of_source": {"reals_called_fake": rates["reals_called_fake"],
                                         "fakes_called_real": rates["fakes_called_real"],
                                         "by_source": rates["by_source"],
                                         "real_scores": rates["real_scores"]}}


#: speech lengths (s) under which a recording may get a wider band, tried in turn; the short
#: clips of each must number at least SHORT_MIN_CLIPS per class out of source; one is adopted
#: only with SHORT_MIN_FEWER fewer validation errors at most SHORT_MAX_VERDICTS_LOST fewer
#: verdicts (docs/AUDIO.md, forty-first session, rule S41-B)
SHORT_SPEECH_S = (0.5, 0.75, 1.0, 1.5, 2.0)
SHORT_MIN_CLIPS = 150
SHORT_MIN_FEWER = 3
SHORT_MAX_VERDICTS_LOST = 0.05
SHORT_METHOD = ("a recording with less speech (Silero VAD) than below_s gets the pooled band "
                "widened to hold the band fitted the same way on the out-of-source training "
                "clips with that little speech (at least "
                f"{SHORT_MIN_CLIPS} of each class); below_s is the one of "
                f"{', '.join(f'{v:g}' for v in SHORT_SPEECH_S)} s with the fewest validation "
                "errors (real clips called fake plus fakes called real), adopted only with at "
                f"least {SHORT_MIN_FEWER} fewer than the pooled band and at most "
                f"{SHORT_MAX_VERDICTS_LOST * 100:g} points fewer verdicts")


def band_edges(band: dict[str, Any], speech: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(below, above) per clip with ``speech`` seconds: the band the app gives such a clip from
    this card block (:func:`xai_platform.models.cards.band_calibration`, then
    :meth:`~xai_platform.models.handle.Calibration.band_for`), so that the card's figures are
    the app's rule."""
    from xai_platform.models.cards import band_calibration

    calibration = band_calibration(band)
    edges = np.array([calibration.band_for(float(s)) for s in speech],
                     dtype=np.float64).reshape(-1, 2)
    return edges[:, 0], edges[:, 1]


def short_speech_band(oos: tuple[np.ndarray, np.ndarray, np.ndarray],
                      val: tuple[np.ndarray, np.ndarray, np.ndarray], *, threshold: float,
                      below: float, above: float, target: float = BAND_TARGET
                      ) -> dict[str, Any]:
    """A wider "cannot tell" band for recordings with little speech (S40-B: their verdicts on
    set-ups never heard are wrong more often), by :data:`SHORT_METHOD`. ``oos`` and ``val``:
    (y, calibrated p, speech seconds) of the out-of-source training clips and of the
    validation clips. Returns the card's ``band.short_speech``: ``adopted``, and where it is,
    ``below_s``, ``below`` and ``above``; what each candidate did on validation either way."""
    from .probe import two_thresholds

    y_o, p_o, s_o = (np.asarray(a) for a in oos)
    y_v, p_v, s_v = (np.asarray(a) for a in val)
    y_o, y_v = y_o.astype(bool), y_v.astype(bool)

    def errors(lo: np.ndarray | float, hi: np.ndarray | float) -> tuple[int, float]:
        fake, real = band_calls(p_v, lo, hi)
        return int(np.sum(fake & ~y_v) + np.sum(real & y_v)), float(np.mean(fake | real))

    pooled = errors(below, above)
    out: dict[str, Any] = {"adopted": False, "method": SHORT_METHOD, "target": target,
                           "validation_pooled": {"errors": pooled[0], "verdicts": pooled[1]},
                           "candidates": {}}
    best = None
    for limit in SHORT_SPEECH_S:
        few = s_o < limit
        n_real, n_fake = int(np.sum(few & ~y_o)), int(np.sum(few & y_o))
        row: dict[str, Any] = {"clips": {"real": n_real, "fake": n_fake}}
        out["candidates"][f"{limit:g}"] = row
        if min(n_real, n_fake) < SHORT_MIN_CLIPS:
            continue
        t_real, t_fake = two_thresholds(y_o[few], p_o[few], target)
        lo, hi = min(below, t_real, threshold), max(above, t_fake, threshold)
        short_v = s_v < limit
        n_err, verdicts = errors(np.where(short_v, lo, below), np.where(short_v, hi, above))
        row.update(below=float(lo), above=float(hi), validation={"errors": n_err,
                                                                  "verdicts": verdicts})
        key = (n_err, -verdicts, limit)
        if best is None or key < best[0]:
            best = (key, limit, lo, hi, n_real, n_fake)
    if best is not None:
        (n_err, neg_verdicts, _), limit, lo, hi, n_real, n_fake = best
        if (n_err <= pooled[0] - SHORT_MIN_FEWER
                and -neg_verdicts >= pooled[1] - SHORT_MAX_VERDICTS_LOST):
            out.update(adopted=True, below_s=float(limit), below=float(lo), above=float(hi),
                       clips={"real": n_real, "fake": n_fake})
    return out


def _train(spec: ModelSpec, network: Any, sets: dict[str, FeatureSet],
           options: AudioOptions, ranking: PairRanking | None = None,
           sampling: np.ndarray | None = None) -> tuple[dict[str, Any], float, float]:
    """The shared loop; returns the history, the training seconds summed over the sessions of
    a resumed run (``timing.json`` beside the checkpoint: checkpoints keep no clock) and this
    session's."""
    checkpoint = options.checkpoint
    timing = checkpoint.with_name("timing.json") if checkpoint is not None else None
    earlier = (json.loads(timing.read_text())["train_seconds"]
               if timing is not None and timing.is_file() and checkpoint.exists() else 0.0)
    t_train = time.time()
    history = train(spec, network, sets["train"].x, sets["train"].y,
                    sets["validation"].x, sets["validation"].y, options.train,
                    checkpoint=checkpoint, ranking=ranking, sampling=sampling,
                    augment=augmentation(options.augment, spec.input.top_db,
                                         waveform=spec.input.waveform,
                                         centers_hz=(None if spec.input.waveform
                                                     else audio.band_centers_hz(spec.input))))
    this_session = time.time() - t_train
    if timing is not None:
        timing.parent.mkdir(parents=True, exist_ok=True)
        timing.write_text(json.dumps({"train_seconds": earlier + this_session}) + "\n")
    return history, earlier + this_session, this_session


def _split_info(fs: FeatureSet, pos: int) -> SplitInfo:
    return SplitInfo(n=int(len(fs.y_clip)), n_positive=int((fs.y_clip == pos).sum()),
                     windows=int(len(fs.x)),
                     languages=tuple(sorted({c.language for c in fs.clips if c.language})),
                     generators=tuple(sorted({c.generator for c in fs.clips})))


def _details(info: dict[str, Any]) -> dict[str, Any]:
    """What the data source recorded, less what the card names elsewhere."""
    details = {k: v for k, v in info.items() if k not in ("kind", "root", "clip_sha256")}
    if "corpus" in details:
        details["corpus"] = {k: v for k, v in details["corpus"].items() if k != "command"}
    return details


# --------------------------------------------------------------------------------------------
# Command line


def _languages(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(w.strip() for w in text.split(",") if w.strip())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m training.train_audio``."""
    parser = argparse.ArgumentParser(prog="python -m training.train_audio",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model id from the config")
    parser.add_argument("--config", action="append", default=[],
                        help="extra config file or folder (repeatable)")
    parser.add_argument("--data", type=Path, default=Path("data/audio_corpus"),
                        help="offline corpus (metadata.csv) or Fake-or-Real root")
    parser.add_argument("--for-subset", default=None, help="for-norm, for-2sec or for-rerec")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--time-limit", type=float, default=None,
                        help="stop after the epoch that crosses S seconds of training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help="weights file (default: the config's weights path)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="feature cache (default: data/feature_cache)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="checkpoint folder (default: runs/audio/<model>-seed<seed>-<hash "
                             "of the data and training settings>)")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--augment", choices=tuple(AUGMENTATIONS), default=None,
                        help="augmentation of both classes (default: masks; wave for a "
                             "waveform model)")
    parser.add_argument("--cap-per-language", type=int, default=None, metavar="N",
                        help="train on at most N clips per language and label (seeded choice)")
    parser.add_argument("--match-speech-duration", type=float, default=None, metavar="BIN_S",
                        help="train on as many real as fake clips per language and BIN_S-second "
                             "bin of speech length (offline corpus; a seeded choice)")
    parser.add_argument("--real-speakers", type=int, default=None, metavar="N",
                        help="train on the real clips of N speakers only (seeded choice; every "
                             "fake kept): the learning curve against the number of speakers")
    parser.add_argument("--train-languages", default=None, metavar="L1,L2",
                        help="train on these languages of the training and validation splits "
                             "(folds, learning curves; test languages are refused)")
    parser.add_argument("--validation-languages", default=None, metavar="L1,L2",
                        help="validate (best epoch, temperature, threshold) on these languages "
                             "of the training and validation splits")
    parser.add_argument("--init", choices=("random", "imagenet"), default="random",
                        help="imagenet: start from the ImageNet weights shipped in a registry "
                             "package (efficientnet_lite0 only; see training.weights.IMAGENET_INIT)")
    parser.add_argument("--pair-loss", type=float, default=0.0, metavar="W",
                        help="add W times a ranking loss that scores each vocoded training copy "
                             "above its original recording (a corpus with pair_of, built by "
                             "python -m training.audio_paired; PyTorch models)")
    parser.add_argument("--average-from", type=int, default=None, metavar="EPOCH",
                        help="from this epoch on, keep the running mean of the weights after "
                             "every step (stochastic weight averaging) and ship the averaged "
                             "network at its best validated epoch (PyTorch models)")
    parser.add_argument("--twin-share", type=float, default=None, metavar="S",
                        help="draw the training fakes with pair_of (the twins of "
                             "python -m training.audio_paired) as S of the fake class, the "
                             "other fakes as the rest (a weighted sampler; e.g. 0.18 keeps "
                             "corpus v3t's share of vocoded copies)")
    parser.add_argument("--room-tone", action="store_true",
                        help="give each synthetic training fake, under its speech, the room "
                             "tone of a real training recording of its source at that "
                             "recording's noise-to-speech ratio (training.audio.room_tone); "
                             "validation and test stay as they are")
    parser.add_argument("--rooms", type=float, default=None, metavar="P",
                        help="hear each training clip, real and fake alike, through a simulated "
                             "shoebox room with probability P (training.audio.rooms; image "
                             "sources, RT60 0.15-0.9 s); validation and test stay as they are")
    parser.add_argument("--balance-sources", type=float, default=None, metavar="ALPHA",
                        help="draw each training window with weight n**-ALPHA, n the windows of "
                             "its label and source (0.5: square-root balancing of the sources; "
                             "each class keeps its number of draws)")
    parser.add_argument("--nap", default="", metavar="K1,K2",
                        help="a frozen encoder's read-out only: project the top K directions "
                             "of the recording set-up (the training sources' means) out of its "
                             "input; several: the K with the best validation window AUC")
    parser.add_argument("--nap-rule", choices=sorted(NAP_RULES), default="best",
                        help="how --nap's count is chosen: " + "; ".join(
                            f"{k}: {v}" for k, v in NAP_RULES.items()))
    parser.add_argument("--no-robustness", action="store_true")
    parser.add_argument("--explain", default="gradcam,integrated_gradients",
                        help="methods for the band summary ('' for none)")
    parser.add_argument("--explain-clips", type=int, default=100)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> ModelCard:
    """Parse the command line, train, print the test figures; returns the card."""
    args = parse_args(argv)
    spec = load_config(args.config).model(args.model)
    out = (args.out or default_out(spec)).resolve()
    args.augment = args.augment or ("wave" if spec.input.waveform else "masks")
    if spec.framework == "keras" and not out.name.endswith(".weights.h5"):
        raise SystemExit("Keras weights must be a .weights.h5 file; fix --out.")
    # One checkpoint folder per set of training settings: a run with other settings never
    # resumes from a checkpoint made under different ones (its schedule would not fit).
    settings = json.dumps([str(args.data.resolve()), args.epochs, args.batch_size, args.lr,
                           args.augment, args.for_subset]
                          + ([args.cap_per_language] if args.cap_per_language else [])
                          + ([args.init] if args.init != "random" else [])
                          + ([args.match_speech_duration] if args.match_speech_duration else [])
                          + ([f"speakers={args.real_speakers}"] if args.real_speakers else [])
                          + ([f"pair_loss={args.pair_loss:g}"] if args.pair_loss else [])
                          + ([f"twin_share={args.twin_share:g}"] if args.twin_share else [])
                          + (["room_tone"] if args.room_tone else [])
                          + ([f"rooms={args.rooms:g}"] if args.rooms else [])
                          + ([f"balance_sources={args.balance_sources:g}"]
                             if args.balance_sources is not None else [])
                          + ([f"average_from={args.average_from}"] if args.average_from else [])
                          + ([args.train_languages, args.validation_languages]
                             if args.train_languages or args.validation_languages else []))
    tag = hashlib.sha256(settings.encode()).hexdigest()[:8]
    run_dir = args.run_dir or ROOT / "runs" / "audio" / f"{spec.id}-seed{args.seed}-{tag}"
    checkpoint = run_dir / ("checkpoint.pt" if spec.framework == "torch"
                            else "checkpoint.weights.h5")
    if args.fresh:
        for stale in (checkpoint, checkpoint.with_suffix(".json")):
            stale.unlink(missing_ok=True)
    words = ["python", "-m", "training.train_audio", *(sys.argv[1:] if argv is None else argv)]
    options = AudioOptions(
        data=args.data, out=out, command=shlex.join(words),
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, threads=args.threads, time_limit_s=args.time_limit,
                          average_from=args.average_from),
        cache_dir=args.cache_dir or ROOT / "data" / "feature_cache", checkpoint=checkpoint,
        subset=args.for_subset, augment=args.augment, cap_per_language=args.cap_per_language,
        match_speech_duration=args.match_speech_duration, init=args.init,
        real_speakers=args.real_speakers,
        train_languages=_languages(args.train_languages),
        validation_languages=_languages(args.validation_languages),
        robustness=not args.no_robustness,
        explain=tuple(m for m in args.explain.split(",") if m), explain_clips=args.explain_clips,
        pair_loss=args.pair_loss, twin_share=args.twin_share, room_tone=args.room_tone,
        rooms=args.rooms, balance_sources=args.balance_sources,
        nap=tuple(int(k) for k in args.nap.split(",") if k.strip()), nap_rule=args.nap_rule)
    card = run(spec, options)
    t, pct = card.metrics["test"], cards.pct
    print(f"{spec.id}: test EER {pct(t.eer)}, AUC {t.roc_auc:.4f}, accuracy "
          f"{pct(t.accuracy)}, false alarms {pct(t.false_alarm_rate)}, misses "
          f"{pct(t.miss_rate)} at threshold {card.calibration.threshold:.3f}")
    for name, check in card.robustness.items():
        r = check.metrics
        print(f"  {name}: EER {pct(r.eer)}, false alarms {pct(r.false_alarm_rate)}, "
              f"misses {pct(r.miss_rate)}")
    print(f"weights: {out}\ncard: {card_path(out)}")
    return card


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
