"""Train a configured audio deepfake detector, calibrate it on validation, test it, write the card.

    python -m training.train_audio --model audio-cnn --data data/audio_corpus [--epochs N]
        [--time-limit S] [--seed S] [--config PATH] [--out weights/audio/audio-cnn.pt]

``--data`` is either the offline corpus (a folder with ``metadata.csv``, built by
:mod:`training.audio_corpus`) or the Fake-or-Real dataset (a folder holding ``for-norm``,
``for-2sec`` or ``for-rerec``, or one of those: ``training|validation|testing`` /
``real|fake``).

Features are made by the app's own inference path (:func:`xai_platform.preprocessing.audio.
load_for_model` -> :func:`~xai_platform.preprocessing.audio.features`: decode, resample, windows,
:func:`~xai_platform.preprocessing.audio.log_mel`), so the model is trained on exactly what it
will be served; they are cached per split as ``.npy`` under a key of the feature settings and
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
* which mel bands Grad-CAM and Integrated Gradients point at on up to 100 test clips.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
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
import soundfile as sf

from xai_platform.config import ROOT, ModelSpec, load_config
from xai_platform.modalities.audio import AudioInput
from xai_platform.errors import InputError
from xai_platform.models.cards import card_stem
from xai_platform.models.manager import sha256
from xai_platform.preprocessing import audio

from . import common

FEATURE_VERSION = 1  # bump when the feature path changes, to invalidate caches
FOR_SUBSETS = ("for-norm", "for-2sec", "for-rerec", "for-original")
FOR_SPLITS = {"training": "train", "validation": "validation", "testing": "test"}
SPLITS = ("train", "validation", "test")
_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".oga", ".opus")


# --------------------------------------------------------------------------------------------
# Data sources


@dataclass(frozen=True)
class Clip:
    """One labelled recording: ``label`` is real or fake; ``split`` is train, validation or
    test (the offline corpus splits by ``language``)."""

    path: Path
    label: str
    split: str
    language: str = ""
    generator: str = ""
    speaker: str = ""
    speech_seconds: float | None = None  # trimmed speech length (the corpus's metadata)


def load_corpus(root: Path) -> list[Clip]:
    """The offline corpus's ``metadata.csv`` (see :mod:`training.audio_corpus`)."""
    with open(root / "metadata.csv", newline="", encoding="utf-8") as fh:
        return [Clip(root / r["path"], r["label"], r["split"], r.get("language", ""),
                     r.get("generator", ""), r.get("speaker", ""),
                     float(r["speech_duration"]) if r.get("speech_duration") else None)
                for r in csv.DictReader(fh)]


def find_for_subset(root: Path, subset: str | None = None) -> Path:
    """The Fake-or-Real folder holding ``training|validation|testing``: ``root`` itself, or
    ``root/<subset>`` (default: the first of for-norm, for-2sec, for-rerec, for-original)."""
    if all((root / s).is_dir() for s in FOR_SPLITS) and subset is None:
        return root
    names = [subset] if subset else list(FOR_SUBSETS)
    for name in names:
        if all((root / name / s).is_dir() for s in FOR_SPLITS):
            return root / name
    raise SystemExit(f"{root} is neither the offline corpus (no metadata.csv) nor a "
                     "Fake-or-Real folder: expected training/, validation/ and testing/ "
                     f"(each with real/ and fake/) in it or in one of {', '.join(FOR_SUBSETS)}.")


def load_fake_or_real(root: Path, subset: str | None = None) -> list[Clip]:
    """Every audio file under ``<subset>/{training,validation,testing}/{real,fake}/``."""
    base = find_for_subset(root, subset)
    clips = []
    for folder, split in FOR_SPLITS.items():
        for label in ("real", "fake"):
            for path in sorted((base / folder / label).rglob("*")):
                if path.is_file() and path.suffix.lower() in _AUDIO_SUFFIXES:
                    clips.append(Clip(path, label, split, "en", f"for:{base.name}"))
    return clips


def load_clips(data: Path, subset: str | None = None) -> tuple[list[Clip], dict[str, Any]]:
    """The clips and a description of the source for the model card."""
    data = Path(data)
    if (data / "metadata.csv").is_file():
        clips = load_corpus(data)
        info: dict[str, Any] = {"kind": "offline corpus", "root": str(data),
                                "metadata_sha256": sha256(data / "metadata.csv")}
        summary = data / "corpus.json"
        if summary.is_file():
            corpus = json.loads(summary.read_text(encoding="utf-8"))
            info["corpus"] = {k: corpus.get(k) for k in (
                "command", "seed", "generators", "split_rule", "test_languages",
                "validation_languages", "tools", "n_clips", "trim_top_db")}
    else:
        clips = load_fake_or_real(data, subset)
        info = {"kind": "Fake-or-Real", "root": str(find_for_subset(data, subset))}
    for split in SPLITS:
        labels = {c.label for c in clips if c.split == split}
        if labels != {"real", "fake"}:
            raise SystemExit(f"the {split} split of {data} has labels {sorted(labels)}; every "
                             "split needs both real and fake clips.")
    return clips, info


# --------------------------------------------------------------------------------------------
# Features (the app's path) and their cache

Transform = Callable[[np.ndarray, int], tuple[np.ndarray, int]]


def clip_features(source: Path, spec: AudioInput, *, transform: Transform | None = None,
                  max_seconds: float = 600.0) -> np.ndarray:
    """(n_windows, n_mels, n_frames) float32 dB planes of one file, as the app computes them.

    Without ``transform`` this *is* the inference path (``load_for_model`` -> ``features``).
    ``transform(wave, sr) -> (wave, sr)`` alters the decoded audio first (codec checks).
    """
    if transform is None:
        windows = audio.load_for_model(source, spec, max_seconds=max_seconds)
    else:
        wave, sr = audio.decode_audio(source, max_seconds=max_seconds)
        wave, sr = transform(wave, sr)
        audio.check_not_silent(wave)
        windows = audio.split_windows(audio.resample(wave, sr, spec.sample_rate), spec)
    return audio.features(windows, spec)


@dataclass
class FeatureSet:
    """Windows of one split: x (N, H, W) float32 dB, y (N,) class index, clip (N,) index of
    the window's clip in ``clips``; ``y_clip`` (C,) the clips' class indices."""

    x: np.ndarray
    y: np.ndarray
    clip: np.ndarray
    clips: list[Clip]
    y_clip: np.ndarray


def _cache_key(spec: AudioInput, clips: Sequence[Clip], variant: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"input": dataclasses.asdict(spec), "variant": variant,
                         "version": FEATURE_VERSION}, sort_keys=True).encode())
    for c in clips:
        st = c.path.stat()
        h.update(f"{c.path}|{c.label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def feature_set(clips: Sequence[Clip], spec: ModelSpec, split: str, *, cache_dir: Path | None,
                variant: str = "clean", transform: Transform | None = None) -> FeatureSet:
    """Features of every clip of ``split``, from the cache when its key matches."""
    mine = [c for c in clips if c.split == split]
    index = {label: i for i, label in enumerate(spec.labels)}
    missing = {c.label for c in mine} - set(index)
    if missing:
        raise SystemExit(f"model '{spec.id}' has labels {list(spec.labels)} but the data has "
                         f"{sorted(missing)}; use a model labelled [real, fake].")
    key = _cache_key(spec.input, mine, variant)
    x_path = meta_path = None
    if cache_dir is not None:
        x_path = cache_dir / f"{split}-{variant}-{key}.npy"
        meta_path = x_path.with_suffix(".npz")
        if x_path.is_file() and meta_path.is_file():
            meta = np.load(meta_path)
            keep = [mine[i] for i in meta["kept"]]
            return FeatureSet(np.load(x_path), meta["y"], meta["clip"], keep,
                              np.array([index[c.label] for c in keep], np.int64))
    planes, ys, owners, kept, skipped = [], [], [], [], 0
    start = time.time()
    for i, c in enumerate(mine):
        try:
            f = clip_features(c.path, spec.input, transform=transform)
        except InputError:
            skipped += 1  # silent or undecodable: the app would refuse it too
            continue
        owners.extend([len(kept)] * len(f))
        kept.append(i)
        planes.append(f)
        ys.extend([index[c.label]] * len(f))
        if (i + 1) % 100 == 0 or i + 1 == len(mine):
            sys.stderr.write(f"\r  features {split} ({variant}): {i + 1}/{len(mine)} clips "
                             f"[{time.time() - start:.0f} s]   ")
            sys.stderr.flush()
    sys.stderr.write(f"\n" + (f"  skipped {skipped} silent or unreadable clips\n" if skipped else ""))
    x = np.concatenate(planes).astype(np.float32)
    y, clip = np.asarray(ys, np.int64), np.asarray(owners, np.int64)
    if x_path is not None and meta_path is not None:
        x_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(x_path, x)
        np.savez(meta_path, y=y, clip=clip, kept=np.asarray(kept, np.int64))
    keep = [mine[i] for i in kept]
    return FeatureSet(x, y, clip, keep, np.array([index[c.label] for c in keep], np.int64))


def cap_per_language(fs: FeatureSet, n: int | None, *, seed: int) -> FeatureSet:
    """At most ``n`` clips of each (language, label) in ``fs`` (a seeded choice; all their
    windows kept), so that one large language (Malayalam: 28% of the corpus) does not set what
    "real" sounds like. ``None``: ``fs`` unchanged."""
    if n is None:
        return fs
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(fs.clips):
        groups.setdefault((c.language, c.label), []).append(i)
    keep = sorted(i for key in sorted(groups) for i in (
        groups[key] if len(groups[key]) <= n else rng.choice(groups[key], n, replace=False)))
    return _keep_clips(fs, keep)


def match_speech_duration(fs: FeatureSet, bin_s: float | None, *, seed: int) -> FeatureSet:
    """Within each language, as many real as fake clips in every ``bin_s``-second bin of
    trimmed speech length (a seeded choice of the larger class; all their windows kept), so
    that how long the speech lasts carries no label. The corpus matches the synthesisers' rate
    to the real clip, but eSpeak NG cannot speak slower than 80 words per minute: Malayalam,
    Hungarian and Arabic reals are far longer than their fakes, and speech length alone
    separates the training classes (ROC AUC 0.64; docs/AUDIO.md). ``None``: ``fs`` unchanged."""
    if bin_s is None:
        return fs
    if any(c.speech_seconds is None for c in fs.clips):
        raise SystemExit("--match-speech-duration needs the speech length of every clip (the "
                         "offline corpus's speech_duration column); this data has none.")
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, int], dict[str, list[int]]] = {}
    for i, c in enumerate(fs.clips):
        bin_ = int(c.speech_seconds // bin_s)
        groups.setdefault((c.language, bin_), {"real": [], "fake": []})[c.label].append(i)
    keep: list[int] = []
    for key in sorted(groups):
        n = min(len(v) for v in groups[key].values())
        for label in ("real", "fake"):
            ids = groups[key][label]
            keep.extend(ids if len(ids) == n else rng.choice(ids, n, replace=False).tolist())
    return _keep_clips(fs, sorted(keep))


def resplit(sets: dict[str, FeatureSet], *, train: Sequence[str] | None = None,
            validation: Sequence[str] | None = None) -> dict[str, FeatureSet]:
    """The training and validation languages chosen anew from those two splits (for
    folds over languages and learning curves); the test split is never touched, and a test
    language cannot be moved into training or validation. ``None`` keeps a split's languages;
    a language listed in neither is left out."""
    if train is None and validation is None:
        return sets
    pool = {s: sets[s] for s in ("train", "validation")}
    known = {c.language for fs in pool.values() for c in fs.clips}
    held_out = {c.language for c in sets["test"].clips}
    chosen = {split: list(langs) if langs is not None else
              sorted({c.language for c in pool[split].clips})
              for split, langs in (("train", train), ("validation", validation))}
    for split, langs in chosen.items():
        bad = sorted(set(langs) & held_out)
        if bad:
            raise SystemExit(f"{', '.join(bad)} are test languages; the test split stays "
                             "unseen, so they cannot go into training or validation.")
        unknown = sorted(set(langs) - known)
        if unknown:
            raise SystemExit(f"no clips for {', '.join(unknown)} in the training or validation "
                             f"split; the languages there are {', '.join(sorted(known))}.")
    both = sorted(set(chosen["train"]) & set(chosen["validation"]))
    if both:
        raise SystemExit(f"{', '.join(both)} would be in training and validation at once.")
    out = dict(sets)
    for split, langs in chosen.items():
        parts = [_keep_clips(fs, [i for i, c in enumerate(fs.clips) if c.language in langs])
                 for fs in pool.values()]
        out[split] = _concat(parts)
        labels = set(out[split].y_clip.tolist())
        if len(labels) != 2:
            raise SystemExit(f"the new {split} split ({', '.join(langs)}) needs real and fake "
                             "clips.")
    return out


def _concat(parts: Sequence[FeatureSet]) -> FeatureSet:
    offsets = np.cumsum([0] + [len(p.clips) for p in parts[:-1]])
    return FeatureSet(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                      np.concatenate([p.clip + o for p, o in zip(parts, offsets)]),
                      [c for p in parts for c in p.clips],
                      np.concatenate([p.y_clip for p in parts]))


def _keep_clips(fs: FeatureSet, keep: Sequence[int]) -> FeatureSet:
    """``fs`` restricted to the clips ``keep`` (indices into ``fs.clips``, sorted), with all
    their windows."""
    new_index = np.full(len(fs.clips), -1, np.int64)
    new_index[keep] = np.arange(len(keep))
    sel = new_index[fs.clip] >= 0
    return FeatureSet(fs.x[sel], fs.y[sel], new_index[fs.clip[sel]], [fs.clips[i] for i in keep],
                      fs.y_clip[keep])


# Degradations applied alike to real and fake test clips (the artefact check).


def _encode_round_trip(wave: np.ndarray, sr: int, *, fmt: str, subtype: str,
                       level: float) -> np.ndarray:
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wave, np.float32), sr, format=fmt, subtype=subtype,
             compression_level=level)
    buf.seek(0)
    out, _ = sf.read(buf, dtype="float32")
    return np.asarray(out, np.float32)


def telephone_mp3(wave: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """8 kHz, loudness -23 dBFS, MP3 at 8 kHz (about 24 kbit/s); the feature path resamples back."""
    wave = audio.normalize_loudness(audio.resample(wave, sr, 8000), target_dbfs=-23.0)
    return _encode_round_trip(wave, 8000, fmt="MP3", subtype="MPEG_LAYER_III", level=0.6), 8000


def low_vorbis(wave: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
    """Loudness -30 dBFS and the lowest-quality Ogg Vorbis at 16 kHz."""
    wave = audio.normalize_loudness(audio.resample(wave, sr, 16000), target_dbfs=-30.0)
    return _encode_round_trip(wave, 16000, fmt="OGG", subtype="VORBIS", level=1.0), 16000


DEGRADATIONS: dict[str, tuple[Transform, str]] = {
    "telephone_mp3": (telephone_mp3, "resampled to 8 kHz, loudness -23 dBFS, MP3 at 8 kHz "
                                     "(about 24 kbit/s), back to 16 kHz"),
    "low_vorbis": (low_vorbis, "loudness -30 dBFS, Ogg Vorbis at its lowest quality"),
}


# --------------------------------------------------------------------------------------------
# Models


def build(spec: ModelSpec, *, seed: int, threads: int) -> Any:
    # The shipped audio models were trained with these settings (inter-op = threads, no
    # TensorFlow op determinism); X-ray training uses the defaults. Changing them here changes
    # the Keras results, so it waits for the next retraining of the audio models.
    common.limit_threads(spec.framework, threads, interop=threads, deterministic=False)
    if spec.framework == "torch":
        from xai_platform.models.formats.torch import build_network
    else:
        from xai_platform.models.formats.keras import build_network
    return build_network(spec, seed=seed)


def default_out(spec: ModelSpec) -> Path:
    if spec.weights is not None:
        return spec.weights
    ext = ".pt" if spec.framework == "torch" else ".weights.h5"
    return ROOT / "weights" / "audio" / f"{spec.id}{ext}"


AUGMENTATIONS = {
    "masks": "SpecAugment masks (one band <= 8 mel bins, one span <= 16 frames, p = 0.5 each)",
    "warp": "SpecAugment masks, plus a shift of +-2 mel bands and a time stretch of 0.85-1.15 "
            "(p = 0.5 each; vocal-tract-length and speaking-rate perturbation)",
    "channel": "SpecAugment masks, plus recording-channel variation (p = 0.5 each): a random "
               "EQ (tilt +-6 dB over the bands and one +-6 dB bump), a noise floor 40-70 dB "
               "below the peak, a noise gate (frames quieter than 35-60 dB below the peak set "
               "to the floor, p = 0.25) and a time shift of up to +-0.5 s",
    "channel_warp": "channel, plus warp's band shift and time stretch",
    "none": "none",
}


def _warp(x: np.ndarray, rng: np.random.Generator, floor: float) -> np.ndarray:
    """x: (H, W) dB plane; a +-2 band shift and a 0.85-1.15 time stretch, p = 0.5 each."""
    h, w = x.shape
    if rng.random() < 0.5:
        k = int(rng.choice([-2, -1, 1, 2]))
        x = np.roll(x, k, axis=0)
        if k > 0:  # the bands rolled round to the other edge repeat the edge band
            x[:k] = x[k]
        else:
            x[k:] = x[k - 1]
    if rng.random() < 0.5:
        factor = rng.uniform(0.85, 1.15)
        src = np.arange(w) * factor
        lo = np.clip(np.floor(src).astype(int), 0, w - 1)
        hi = np.clip(lo + 1, 0, w - 1)
        frac = (src - np.floor(src)).astype(np.float32)
        row = x[:, lo] * (1 - frac)[None, :] + x[:, hi] * frac[None, :]
        x = np.where(src[None, :] <= w - 1, row, floor).astype(np.float32)
    return x


def _channel(x: np.ndarray, rng: np.random.Generator, floor: float) -> np.ndarray:
    """x: (H, W) dB plane relative to its peak, floored at ``floor``; recording-channel
    variation that carries no label: EQ, a noise floor, a noise gate and a time shift. The
    plane is re-referenced to its peak and floored again, as :func:`log_mel` would."""
    h, w = x.shape
    live = x > floor + 1e-3  # digital silence stays silent under EQ
    if rng.random() < 0.5:
        bands = np.linspace(-1.0, 1.0, h, dtype=np.float32)
        curve = rng.uniform(-6, 6) * bands
        centre, width = rng.uniform(-1, 1), rng.uniform(0.1, 0.4)
        curve += rng.uniform(-6, 6) * np.exp(-0.5 * ((bands - centre) / width) ** 2)
        x = np.where(live, x + curve[:, None].astype(np.float32), floor)
    if rng.random() < 0.5:
        level = rng.uniform(-70, -40) + x.max()
        noise = level + rng.normal(0, 3, size=x.shape)
        x = 10 * np.log10(10 ** (x / 10) + 10 ** (noise / 10))
    if rng.random() < 0.25:
        gate = x.max() + rng.uniform(-60, -35)
        x = np.where(x.max(axis=0, keepdims=True) < gate, floor, x)
    if rng.random() < 0.5:
        k = int(rng.integers(-w // 4, w // 4 + 1))
        x = np.roll(x, k, axis=1)
        if k > 0:
            x[:, :k] = floor
        elif k < 0:
            x[:, k:] = floor
    return np.clip(x - x.max(), floor, 0).astype(np.float32)


def augmentation(kind: str, top_db: float) -> common.Augment | None:
    """Feature-domain augmentation applied alike to both classes (see :data:`AUGMENTATIONS`).

    x: (N, H, W) float32 dB planes in [-top_db, 0]; returned in the same range. Masks follow
    SpecAugment (Park et al., 2019), set to the dB floor. ``warp`` adds a small shift along
    the mel axis and a time stretch, which mimic other speakers and speaking rates (the
    training set has few real speakers; test speakers are all new). ``channel`` varies what a
    recording set-up changes (EQ, noise floor, noise gate, where the speech sits), so that
    none of it can stand in for the label.
    """
    if kind not in AUGMENTATIONS:
        raise SystemExit(f"unknown augmentation '{kind}'; use one of {', '.join(AUGMENTATIONS)}.")
    if kind == "none":
        return None
    floor = -float(top_db)

    def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = x.copy()
        n, h, w = x.shape
        for i in range(n):
            if kind in ("warp", "channel_warp"):
                x[i] = _warp(x[i], rng, floor)
            if kind in ("channel", "channel_warp"):
                x[i] = _channel(x[i], rng, floor)
            if rng.random() < 0.5:
                f = int(rng.integers(1, 9))
                f0 = int(rng.integers(0, h - f + 1))
                x[i, f0:f0 + f] = floor
            if rng.random() < 0.5:
                t = int(rng.integers(1, 17))
                t0 = int(rng.integers(0, w - t + 1))
                x[i, :, t0:t0 + t] = floor
        return x

    return augment


# --------------------------------------------------------------------------------------------
# Evaluation


def window_logits(handle: Any, x: np.ndarray) -> np.ndarray:
    """(N,) positive-class logit of every window (before calibration)."""
    return common.positive_logit(handle.spec, handle.scores(x, batch_size=64))


def clip_probabilities(z: np.ndarray, owner: np.ndarray, n_clips: int,
                       temperature: float) -> np.ndarray:
    """The app's verdict rule: the mean over a clip's windows of sigmoid(logit / T)."""
    p = common.sigmoid(z / temperature)
    total = np.bincount(owner, weights=p, minlength=n_clips)
    count = np.bincount(owner, minlength=n_clips)
    return total / np.maximum(count, 1)


def as_scores(spec: ModelSpec, p_clip: np.ndarray, temperature: float) -> np.ndarray:
    """(C, 2) scores whose positive logit / T gives back ``p_clip`` (for binary_report)."""
    p = np.clip(p_clip, 1e-7, 1 - 1e-7)
    z = temperature * np.log(p / (1 - p))
    scores = np.zeros((len(z), 2))
    pos = spec.positive_index
    if spec.output == "sigmoid":
        scores[:, pos], scores[:, 1 - pos] = z, -z
    else:
        scores[:, pos] = z
    return scores


def report(spec: ModelSpec, z: np.ndarray, fs: FeatureSet, *, temperature: float,
           threshold: float, breakdown: bool = False) -> dict[str, Any]:
    """Clip-level figures for one split (see :func:`training.common.binary_report`)."""
    pos = spec.positive_index
    y = (fs.y_clip == pos).astype(int)
    p = clip_probabilities(z, fs.clip, len(fs.clips), temperature)
    out = common.binary_report(spec, as_scores(spec, p, temperature), y,
                               temperature=temperature, threshold=threshold)
    if breakdown:
        out["by_language"] = {}
        for lang in sorted({c.language for c in fs.clips}):
            sel = np.array([c.language == lang for c in fs.clips])
            row: dict[str, Any] = {"n_real": int((sel & (y == 0)).sum()),
                                   "n_fake": int((sel & (y == 1)).sum()),
                                   **common.rates_at(p[sel], y[sel], threshold)}
            if len(np.unique(y[sel])) == 2:
                row["eer"] = common.equal_error_rate(p[sel], y[sel])[0]
            out["by_language"][lang] = row
        out["by_generator"] = {}
        for gen in sorted({c.generator for c in fs.clips}):
            sel = np.array([c.generator == gen for c in fs.clips])
            rates = common.rates_at(p[sel], y[sel], threshold)
            key = "false_alarm_rate" if y[sel].max() == 0 else "miss_rate"
            out["by_generator"][gen] = {"n": int(sel.sum()), key: rates[key]}
    return out


def band_summary(handle: Any, fs: FeatureSet, z: np.ndarray, *, methods: Sequence[str],
                 n_clips: int, seed: int, top: int = 5) -> dict[str, Any]:
    """Which mel bands the explanations point at, on up to ``n_clips`` test clips (half real,
    half fake), each explained on its most suspicious window for its true class: attribution
    (positive part) summed over time per band, normalised per clip, averaged."""
    from xai_platform import explainers

    spec = handle.spec
    centres = audio.mel_centers_hz(spec.input)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for cls in range(len(spec.labels)):
        ids = np.flatnonzero(fs.y_clip == cls)
        picked.extend(rng.choice(ids, size=min(len(ids), n_clips // 2), replace=False).tolist())
    out: dict[str, Any] = {"n_clips": len(picked), "target": "each clip's true class",
                           "window": "the clip's most suspicious window (as the app picks)"}
    for method in methods:
        profiles: dict[str, list[np.ndarray]] = {label: [] for label in spec.labels}
        start = time.time()
        for k, ci in enumerate(picked):
            windows = np.flatnonzero(fs.clip == ci)
            w = windows[int(np.argmax(z[windows]))]
            target = int(fs.y_clip[ci])
            params = {"n_steps": 16} if method == "integrated_gradients" else None
            heat = explainers.run(method, handle, fs.x[w], target=target, params=params,
                                  seed=seed).attribution.heatmap
            band = np.maximum(heat, 0).sum(axis=1)
            if band.sum() > 0:
                profiles[spec.labels[target]].append(band / band.sum())
            sys.stderr.write(f"\r  explaining with {method}: {k + 1}/{len(picked)} "
                             f"[{time.time() - start:.0f} s]   ")
        sys.stderr.write("\n")
        result: dict[str, Any] = {}
        for label, rows in profiles.items():
            if not rows:
                continue
            mean = np.mean(rows, axis=0)
            order = np.argsort(mean)[::-1][:top]
            result[label] = {
                "n": len(rows),
                "top_bands": [{"band": int(b), "centre_hz": round(float(centres[b])),
                               "share": round(float(mean[b]), 4)} for b in order],
                "share_below_1khz": round(float(mean[centres < 1000].sum()), 3),
                "share_1_to_4khz": round(float(mean[(centres >= 1000) & (centres < 4000)].sum()), 3),
                "share_above_4khz": round(float(mean[centres >= 4000].sum()), 3),
            }
        out[method] = result
    return out


# --------------------------------------------------------------------------------------------
# The card


def _pct(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f}%"


def markdown_card(card: dict[str, Any]) -> str:
    m, t = card["metrics"], card["metrics"]["test"]
    lines = [
        f"# Model card: {card['model']['name']} (`{card['model']['id']}`)", "",
        f"{card['model']['description']}", "",
        "## Verdict quality on test languages never seen in training", "",
        "| split | clips (real / fake) | accuracy | EER | ROC AUC | false alarms | misses |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for split in ("validation", "test"):
        r = m[split]
        lines.append(f"| {split} | {r['n'] - r['n_positive']} / {r['n_positive']} | "
                     f"{_pct(r['accuracy'])} | {_pct(r['eer'])} | {r['roc_auc']:.4f} | "
                     f"{_pct(r['false_alarm_rate'])} | {_pct(r['miss_rate'])} |")
    for name, r in m.get("robustness", {}).items():
        lines.append(f"| test, {name} | {r['n'] - r['n_positive']} / {r['n_positive']} | "
                     f"{_pct(r['accuracy'])} | {_pct(r['eer'])} | {r['roc_auc']:.4f} | "
                     f"{_pct(r['false_alarm_rate'])} | {_pct(r['miss_rate'])} |")
    cal = card["calibration"]
    lines += [
        "", f"False alarms: real speech called fake; misses: fake speech called real, both at "
            f"the decision threshold {cal['threshold']:.3f} (the equal-error point on validation, "
            f"after temperature scaling with T = {cal['temperature']:.3f}). Expected "
            f"calibration error on test: {t['reliability']['ece']:.3f} after, "
            f"{card['metrics']['test_uncalibrated_ece']:.3f} before; "
            f"reliability diagram: `{card['reliability_diagram']}`. The probabilities are "
            f"calibrated for validation's class mix ({_pct(m['validation']['n_positive'] / m['validation']['n'])} "
            "fake); where fakes are rarer, read them as too high.", "",
    ]
    if m.get("robustness"):
        lines += ["Robustness rows: every test clip, real and fake alike, degraded the same way "
                  "before scoring:"]
        lines += [f"- {k}: {v}" for k, v in card["robustness_conditions"].items()]
        lines.append("")
    lines += ["### Per test language", "", "| language | real / fake | EER | false alarms | misses |",
              "| --- | --- | --- | --- | --- |"]
    for lang, r in t.get("by_language", {}).items():
        lines.append(f"| {lang} | {r['n_real']} / {r['n_fake']} | {_pct(r.get('eer'))} | "
                     f"{_pct(r['false_alarm_rate'])} | {_pct(r['miss_rate'])} |")
    lines += ["", "### Per generator (test)", ""]
    for gen, r in t.get("by_generator", {}).items():
        what = "false alarms" if "false_alarm_rate" in r else "misses"
        rate = r.get("false_alarm_rate", r.get("miss_rate"))
        lines.append(f"- {gen}: {r['n']} clips, {what} {_pct(rate)}")
    bands = card.get("explanations", {})
    if bands:
        lines += ["", "## What the explanations point at", "",
                  f"{bands['n_clips']} test clips, explained for their true class on their most "
                  "suspicious window; attribution summed per mel band, averaged over clips.", ""]
        for method in card["explanations_methods"]:
            for label, r in bands.get(method, {}).items():
                tops = ", ".join(f"{b['centre_hz']} Hz ({100 * b['share']:.1f}%)"
                                 for b in r["top_bands"])
                lines.append(f"- {method}, {label} clips: top bands {tops}; below 1 kHz "
                             f"{_pct(r['share_below_1khz'])}, 1-4 kHz {_pct(r['share_1_to_4khz'])}, "
                             f"above 4 kHz {_pct(r['share_above_4khz'])}")
    d, tr = card["data"], card["training"]
    lines += ["", "## Data", "", f"- source: {d['kind']} (`{d['root']}`)"]
    if d.get("corpus", {}).get("command"):
        lines.append(f"- built by: `{d['corpus']['command']}` (seeded per clip; the split is "
                     "by language, see docs/AUDIO.md)")
    for split, s in d["splits"].items():
        lines.append(f"- {split}: {s['real']} real / {s['fake']} fake clips, {s['windows']} "
                     f"windows; languages {', '.join(s['languages']) or 'n/a'}; generators "
                     f"{', '.join(s['generators'])}")
    lines += [f"- generators seen in training: {', '.join(card['generators_trained_on'])}; any "
              "other kind of synthetic speech is unseen",
              "", "## Training", "",
              f"- command: `{tr['command']}`", f"- seed {tr['seed']}; {tr['epochs_run']} of "
              f"{tr['epochs']} epochs (best validation AUC at epoch {tr['best_epoch']}); batch "
              f"{tr['batch_size']}, lr {tr['lr']}; {tr['threads']} CPU thread(s)",
              f"- initialisation: {tr.get('init', 'random (seeded)')}",
              f"- augmentation (training windows only): {tr.get('augmentation', 'n/a')}"
              + (f"; at most {tr['cap_per_language']} clips per language and label"
                 if tr.get("cap_per_language") else "")
              + (f"; as many real as fake clips per language and "
                 f"{tr['match_speech_duration_s']} s bin of speech length"
                 if tr.get("match_speech_duration_s") else ""),
              f"- training time {tr['train_seconds']:.0f} s ({tr['seconds_per_epoch']:.0f} s per "
              f"epoch), feature extraction and evaluation {tr['other_seconds']:.0f} s",
              f"- weights: `{card['weights']['file']}` ({card['weights']['bytes'] / 1e6:.2f} MB, "
              f"sha256 {card['weights']['sha256'][:16]}...)",
              f"- architecture `{card['model']['architecture']}` {card['model']['arch_args']}, "
              f"input {card['model']['input']['n_mels']} mel bands x "
              f"{card['model']['input']['duration']} s at {card['model']['input']['sample_rate']} Hz",
              ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main


def run(spec: ModelSpec, data: Path, *, out: Path, epochs: int, seed: int = 0,
        time_limit: float | None = None, batch_size: int = 32, lr: float = 1e-3,
        threads: int = 1, cache_dir: Path | None = None, checkpoint: Path | None = None,
        subset: str | None = None, robustness: bool = True, augment: str = "masks",
        cap_language: int | None = None, init: str = "random",
        match_duration: float | None = None,
        train_languages: Sequence[str] | None = None,
        validation_languages: Sequence[str] | None = None,
        explain: Sequence[str] = ("gradcam", "integrated_gradients"), explain_clips: int = 100,
        command: str = "") -> dict[str, Any]:
    """Train, save, reload, calibrate, evaluate and write the card. Returns the card."""
    if spec.modality != "audio" or not isinstance(spec.input, AudioInput):
        raise SystemExit(f"model '{spec.id}' is not an audio model.")
    if spec.positive_index is None or len(spec.labels) != 2:
        raise SystemExit(f"model '{spec.id}' must be binary with positive_label: fake.")
    t_start = time.time()
    clips, info = load_clips(data, subset)
    sets = {s: feature_set(clips, spec, s, cache_dir=cache_dir) for s in SPLITS}
    sets = resplit(sets, train=train_languages, validation=validation_languages)
    sets["train"] = cap_per_language(sets["train"], cap_language, seed=seed)
    sets["train"] = match_speech_duration(sets["train"], match_duration, seed=seed)
    network = build(spec, seed=seed, threads=threads)
    init_note = common.imagenet_init(spec, network) if init == "imagenet" else "random (seeded)"
    config = common.TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                threads=threads, time_limit_s=time_limit)
    # Training seconds summed over the sessions of a resumed run (checkpoints keep no clock).
    timing = checkpoint.with_name("timing.json") if checkpoint is not None else None
    earlier = (json.loads(timing.read_text())["train_seconds"]
               if timing is not None and timing.is_file() and checkpoint.exists() else 0.0)
    t_train = time.time()
    history = common.train(spec, network, sets["train"].x, sets["train"].y,
                           sets["validation"].x, sets["validation"].y, config,
                           checkpoint=checkpoint, augment=augmentation(augment, spec.input.top_db))
    this_session = time.time() - t_train
    train_seconds = earlier + this_session
    if timing is not None:
        timing.parent.mkdir(parents=True, exist_ok=True)
        timing.write_text(json.dumps({"train_seconds": train_seconds}) + "\n")
    common.save_weights(spec, network, out)
    handle = common.load_saved(spec, out)  # every figure below is for the file as shipped

    z = {s: window_logits(handle, fs.x) for s, fs in sets.items()}
    val = sets["validation"]
    pos = spec.positive_index
    if spec.output == "probabilities":
        temperature = 1.0  # the app does not rescale a softmax head
    else:
        temperature = common.fit_temperature(z["validation"], (val.y == pos).astype(float))
    p_val = clip_probabilities(z["validation"], val.clip, len(val.clips), temperature)
    threshold = common.choose_threshold(p_val, (val.y_clip == pos).astype(int))
    metrics: dict[str, Any] = {
        s: report(spec, z[s], sets[s], temperature=temperature, threshold=threshold,
                  breakdown=s == "test") for s in ("validation", "test")}
    test = sets["test"]
    y_test = (test.y_clip == pos).astype(int)
    raw = common.reliability(clip_probabilities(z["test"], test.clip, len(test.clips), 1.0), y_test)
    metrics["test_uncalibrated_ece"] = raw["ece"]
    stem = card_stem(out)
    plot = common.plot_reliability(raw, metrics["test"]["reliability"],
                                   stem.with_name(f"{stem.name}.reliability.png"),
                                   title=f"{spec.id}: test split (T = {temperature:.2f})")
    if robustness:
        metrics["robustness"] = {}
        for name, (transform, _) in DEGRADATIONS.items():
            fs = feature_set(clips, spec, "test", cache_dir=cache_dir, variant=name,
                             transform=transform)
            metrics["robustness"][name] = report(spec, window_logits(handle, fs.x), fs,
                                                 temperature=temperature, threshold=threshold)
    explanations = (band_summary(handle, test, z["test"], methods=explain,
                                 n_clips=explain_clips, seed=seed) if explain else {})
    trained_on = sorted({c.generator for c in clips if c.split == "train" and c.label == "fake"})
    card: dict[str, Any] = {
        "model": {"id": spec.id, "name": spec.name, "framework": spec.framework,
                  "architecture": spec.architecture, "arch_args": dict(spec.arch_args),
                  "labels": list(spec.labels), "positive_label": spec.labels[pos],
                  "output": spec.output, "target_layer": spec.target_layer,
                  "input": dataclasses.asdict(spec.input), "description": spec.description},
        "data": {**info, "splits": {
            s: {"real": int((fs.y_clip != pos).sum()), "fake": int((fs.y_clip == pos).sum()),
                "windows": int(len(fs.x)),
                "languages": sorted({c.language for c in fs.clips if c.language}),
                "generators": sorted({c.generator for c in fs.clips})}
            for s, fs in sets.items()}},
        "generators_trained_on": trained_on,
        "splits": {"rule": "by language (offline corpus) / as distributed (Fake-or-Real)",
                   **{s: sorted({c.language for c in fs.clips}) for s, fs in sets.items()}},
        "calibration": {"temperature": temperature, "threshold": threshold,
                        "fitted_on": "validation", "method": "temperature scaling of the "
                        "positive logit; threshold at the validation equal-error point",
                        "verdict_rule": "mean of window probabilities >= threshold"},
        "metrics": metrics,
        "robustness_conditions": {k: v[1] for k, v in DEGRADATIONS.items()} if robustness else {},
        "explanations": explanations, "explanations_methods": list(explain),
        "reliability_diagram": plot.name,
        "training": {"command": command, "seed": seed, "epochs": epochs,
                     "epochs_run": len(history["epochs"]), "best_epoch": history["best_epoch"],
                     "batch_size": batch_size, "lr": lr, "threads": threads,
                     "time_limit_s": time_limit,
                     "augmentation": f"{augment}: {AUGMENTATIONS[augment]}, both classes",
                     "cap_per_language": cap_language, "init": init_note,
                     "match_speech_duration_s": match_duration,
                     "train_seconds": train_seconds,
                     "seconds_per_epoch": train_seconds / max(1, len(history["epochs"])),
                     # this session's time outside training (a resumed run trained earlier too)
                     "other_seconds": time.time() - t_start - this_session,
                     "history": history["epochs"]},
        "weights": {"file": out.name, "bytes": out.stat().st_size, "sha256": sha256(out),
                    "dtype": "float16 state dict" if spec.framework == "torch" else "float32"},
    }
    common.write_card(out, card, markdown_card(card))
    return card


def _languages(text: str | None) -> list[str] | None:
    return None if text is None else [w.strip() for w in text.split(",") if w.strip()]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
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
    parser.add_argument("--augment", choices=tuple(AUGMENTATIONS), default="masks",
                        help="feature-domain augmentation of both classes")
    parser.add_argument("--cap-per-language", type=int, default=None, metavar="N",
                        help="train on at most N clips per language and label (seeded choice)")
    parser.add_argument("--match-speech-duration", type=float, default=None, metavar="BIN_S",
                        help="train on as many real as fake clips per language and BIN_S-second "
                             "bin of speech length (offline corpus; a seeded choice)")
    parser.add_argument("--train-languages", default=None, metavar="L1,L2",
                        help="train on these languages of the training and validation splits "
                             "(folds, learning curves; test languages are refused)")
    parser.add_argument("--validation-languages", default=None, metavar="L1,L2",
                        help="validate (best epoch, temperature, threshold) on these languages "
                             "of the training and validation splits")
    parser.add_argument("--init", choices=("random", "imagenet"), default="random",
                        help="imagenet: start from the ImageNet weights shipped in a registry "
                             "package (efficientnet_lite0 only; see training.common.IMAGENET_INIT)")
    parser.add_argument("--no-robustness", action="store_true")
    parser.add_argument("--explain", default="gradcam,integrated_gradients",
                        help="methods for the band summary ('' for none)")
    parser.add_argument("--explain-clips", type=int, default=100)
    args = parser.parse_args(argv)

    spec = load_config(args.config).model(args.model)
    out = (args.out or default_out(spec)).resolve()
    if spec.framework == "keras" and not out.name.endswith(".weights.h5"):
        raise SystemExit("Keras weights must be a .weights.h5 file; fix --out.")
    # One checkpoint folder per set of training settings: a run with other settings never
    # resumes from a checkpoint made under different ones (its schedule would not fit).
    settings = json.dumps([str(args.data.resolve()), args.epochs, args.batch_size, args.lr,
                           args.augment, args.for_subset]
                          + ([args.cap_per_language] if args.cap_per_language else [])
                          + ([args.init] if args.init != "random" else [])
                          + ([args.match_speech_duration] if args.match_speech_duration else [])
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
    card = run(spec, args.data, out=out, epochs=args.epochs, seed=args.seed,
               time_limit=args.time_limit, batch_size=args.batch_size, lr=args.lr,
               threads=args.threads, cache_dir=args.cache_dir or ROOT / "data" / "feature_cache",
               checkpoint=checkpoint, subset=args.for_subset,
               robustness=not args.no_robustness, augment=args.augment,
               cap_language=args.cap_per_language, init=args.init,
               match_duration=args.match_speech_duration,
               train_languages=_languages(args.train_languages),
               validation_languages=_languages(args.validation_languages),
               explain=[m for m in args.explain.split(",") if m],
               explain_clips=args.explain_clips, command=shlex.join(words))
    t = card["metrics"]["test"]
    print(f"{spec.id}: test EER {_pct(t['eer'])}, AUC {t['roc_auc']:.4f}, accuracy "
          f"{_pct(t['accuracy'])}, false alarms {_pct(t['false_alarm_rate'])}, misses "
          f"{_pct(t['miss_rate'])} at threshold {card['calibration']['threshold']:.3f}")
    for name, r in card["metrics"].get("robustness", {}).items():
        print(f"  {name}: EER {_pct(r['eer'])}, false alarms {_pct(r['false_alarm_rate'])}, "
              f"misses {_pct(r['miss_rate'])}")
    print(f"weights: {out}\ncard: {common.card_path(out)}")
    return card


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
