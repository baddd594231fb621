"""Features by the app's own inference path (decode, resample, windows, log-mel), cached per
split, and the training-set choices made on them (per-language cap, speech-length matching,
regrouped languages)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xai_platform.config import ModelSpec
from xai_platform.modalities.audio import AudioInput
from xai_platform.errors import InputError
from xai_platform.preprocessing import audio

from .data import Clip

FEATURE_VERSION = 1  # bump when the feature path changes, to invalidate caches

Transform = Callable[[np.ndarray, int], tuple[np.ndarray, int]]


def clip_features(source: Path, spec: AudioInput, *, transform: Transform | None = None,
                  max_seconds: float = 600.0) -> np.ndarray:
    """(n_windows, n_mels, n_frames) float32 dB planes of one file, as the app computes them
    (a waveform model: the windows' samples, (n_windows, 1, n_samples)).

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
    return audio.model_inputs(windows, spec)


@dataclass
class FeatureSet:
    """Windows of one split: x (N, H, W) float32 dB (a waveform model: (N, 1, n_samples)
    samples), y (N,) class index, clip (N,) index of
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
                variant: str = "clean", transform: Transform | None = None,
                clip_transform: Callable[[Clip], Transform | None] | None = None
                ) -> FeatureSet:
    """Features of every clip of ``split``, from the cache when its key matches.
    ``transform`` alters every clip alike; ``clip_transform(clip)`` gives one clip its own
    (None: the clip as it is). ``variant`` names either in the cache key."""
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
            f = clip_features(c.path, spec.input,
                              transform=clip_transform(c) if clip_transform else transform)
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
    sys.stderr.write("\n" + (f"  skipped {skipped} silent or unreadable clips\n" if skipped else ""))
    x = np.concatenate(planes).astype(np.float32)
    y, clip = np.asarray(ys, np.int64), np.asarray(owners, np.int64)
    if x_path is not None and meta_path is not None:
        x_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(x_path, x)
        np.savez(meta_path, y=y, clip=clip, kept=np.asarray(kept, np.int64))
    keep = [mine[i] for i in kept]
    return FeatureSet(x, y, clip, keep, np.array([index[c.label] for c in keep], np.int64))


def pair_index(fs: FeatureSet, positive: int) -> np.ndarray:
    """(P, 2) window rows of ``fs``, (fake window, real window), for every fake clip whose
    ``pair_of`` names a real clip of ``fs`` (a vocoded copy and its original,
    :mod:`training.audio.corpus_paired`): the k-th window of the copy with the k-th of the
    original, as many as the shorter has. Empty (0, 2) when ``fs`` has no pairs."""
    by_key = {c.key: i for i, c in enumerate(fs.clips) if c.key and c.label == "real"}
    windows = {int(i): np.flatnonzero(fs.clip == i) for i in np.unique(fs.clip)}
    rows = []
    for i, c in enumerate(fs.clips):
        j = by_key.get(c.pair_of) if c.pair_of else None
        if j is None or fs.y_clip[i] != positive or i not in windows or j not in windows:
            continue
        n = min(len(windows[i]), len(windows[j]))
        rows.extend(zip(windows[i][:n], windows[j][:n]))
    return np.asarray(rows, np.int64).reshape(-1, 2)


def twin_sampling(fs: FeatureSet, positive: int, share: float) -> np.ndarray:
    """(N,) sampling weights for ``fs``'s windows that give the twins (fake clips with a
    ``pair_of``) ``share`` of the fake class's draws and the other fakes the rest; the real
    windows keep weight 1 and the fake class its number of draws. So a corpus where every
    recording has a twin can keep the text-to-speech share of its base corpus."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"twin share {share} must be between 0 and 1")
    twin_clip = np.array([bool(c.pair_of) for c in fs.clips])
    fake = fs.y == positive
    twin = fake & twin_clip[fs.clip]
    other = fake & ~twin
    if not twin.any() or not other.any():
        raise ValueError("a twin share needs both twins (fakes with pair_of) and other fakes")
    weights = np.ones(len(fs.y))
    weights[twin] = share * fake.sum() / twin.sum()
    weights[other] = (1.0 - share) * fake.sum() / other.sum()
    return weights


def source_balancing(fs: FeatureSet, alpha: float) -> np.ndarray:
    """(N,) sampling weights for ``fs``'s windows: each window ``n ** -alpha``, ``n`` the number
    of windows of its (label, source) group, rescaled so that each class keeps its number of
    draws. ``alpha`` 0 leaves the draws as they are, 1 gives every source of a class the same
    share, 0.5 (square-root balancing) lifts the small sources without drawing a handful of
    clips over and over."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"source balancing exponent {alpha} must be between 0 and 1")
    groups = np.array([f"{fs.clips[i].label}\x00{fs.clips[i].source}" for i in fs.clip])
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return per_class_totals(counts[inverse].astype(np.float64) ** -alpha, fs.y,
                            np.ones(len(fs.y)))


def per_class_totals(weights: np.ndarray, y: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``weights`` rescaled within each class of ``y`` to the class's total in ``like``."""
    weights = np.asarray(weights, np.float64).copy()
    for label in np.unique(y):
        mine = y == label
        weights[mine] *= like[mine].sum() / weights[mine].sum()
    return weights


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


def speaker_group(clip: Clip) -> str:
    """Who a real clip's voice belongs to: its speaker, or its source and language where the
    corpus does not know the speaker (Tux Paint's volunteers)."""
    if clip.speaker:
        return clip.speaker
    return f"{clip.source}:{clip.language}"


def limit_real_speakers(fs: FeatureSet, n: int | None, *, seed: int) -> FeatureSet:
    """The real clips of ``n`` speakers only (a seeded choice of :func:`speaker_group`; every
    fake kept), for a learning curve against the number of real speakers. ``None``: ``fs``
    unchanged."""
    if n is None:
        return fs
    groups = sorted({speaker_group(c) for c in fs.clips if c.label == "real"})
    if n < 1 or n > len(groups):
        raise SystemExit(f"--real-speakers must lie in 1..{len(groups)} (the training split's "
                         f"real speakers), got {n}.")
    chosen = set(np.random.default_rng(seed).choice(groups, n, replace=False).tolist())
    keep = [i for i, c in enumerate(fs.clips)
            if c.label != "real" or speaker_group(c) in chosen]
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
