"""Fit a detector's familiarity check (verdicts withheld outside its training data) and
measure how often it withholds, on the benchmark's splits and on inputs made to differ.

    python -m training.familiarity --model xray-cnn [--data data/xray_benchmark]

Writes ``<weights stem>.familiarity.npz`` beside the weights and the ``familiarity`` block of
its model card (JSON and Markdown). The Gaussian is fitted on the training split, the limit set
on the validation split (:mod:`xai_platform.familiarity`); test and the changed inputs only
measure. Changed inputs are made from test images (orientation, inversion, exposure, contrast,
resolution, noise, zoom) plus other pictures a user might upload by mistake: the tibia
radiograph of pydicom-data and scikit-image's grayscale photographs, each through the app's
own image path.

Audio detectors: ``--data`` is the offline corpus the detector was trained on; the rates are
per clip (a clip is withheld when most of its windows are, as in the app), and ``--also DIR``
(repeatable) measures the clips of another corpus grouped by generator (fakes) and source
(real speech), e.g. voices and synthesisers the detector never heard.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xai_platform import familiarity
from xai_platform.config import ModelSpec, load_config
from xai_platform.models.cards import FamiliarityInfo, card_stem, read_card

from .cards import write_card
from .weights import load_saved
from .xray.data import read_data

Shift = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _blur(x: np.ndarray, _rng: np.random.Generator, factor: int = 8) -> np.ndarray:
    n, h, w = x.shape
    small = x[:, :h - h % factor, :w - w % factor].reshape(
        n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
    return np.repeat(np.repeat(small, factor, axis=1), factor, axis=2)[:, :h, :w] \
        if h % factor == 0 and w % factor == 0 else x


def _zoom(x: np.ndarray, _rng: np.random.Generator) -> np.ndarray:
    n, h, w = x.shape
    crop = x[:, h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2]
    return np.repeat(np.repeat(crop, 2, axis=1), 2, axis=2)[:, :h, :w]


#: inputs made to differ from test images: name -> transform of planes (N, H, W) in [0, 1]
SHIFTS: dict[str, Shift] = {
    "flipped left-right": lambda x, _: x[:, :, ::-1],
    "upside down": lambda x, _: x[:, ::-1, :],
    "rotated 90 degrees": lambda x, _: np.rot90(x, axes=(1, 2)),
    "inverted (negative)": lambda x, _: 1.0 - x,
    "under-exposed (gamma 2.5)": lambda x, _: x ** 2.5,
    "over-exposed (gamma 0.4)": lambda x, _: x ** 0.4,
    "low contrast (x0.4)": lambda x, _: 0.5 + (x - 0.5) * 0.4,
    "blurred (1/8 resolution)": _blur,
    "noisy (sigma 0.1)": lambda x, rng: np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1),
    "zoomed 2x": _zoom,
}
PHOTOS = ("camera", "coins", "moon", "text", "brick", "grass", "gravel", "page",
          "astronaut", "chelsea", "coffee", "rocket", "horse", "clock", "immunohistochemistry")


def other_pictures(spec: ModelSpec) -> dict[str, np.ndarray]:
    """Pictures that are not chest radiographs, as model planes (N, H, W), by group; a group
    whose files are not installed is left out."""
    from xai_platform.preprocessing.image import load_image, real_radiograph_path, to_model_plane

    out: dict[str, np.ndarray] = {}
    rg1 = real_radiograph_path()
    if rg1 is not None and rg1.with_name("RG3_UNCR.dcm").exists():
        tibia = load_image(rg1.with_name("RG3_UNCR.dcm")).pixels
        out["tibia radiograph (RG3)"] = to_model_plane(tibia, spec.input_shape)[None]
    try:
        from skimage import color, data
    except ImportError:
        return out
    planes = []
    for name in PHOTOS:
        img = np.asarray(getattr(data, name)(), dtype=np.float64)
        if img.ndim == 3:
            img = color.rgb2gray(img[..., :3] / (255.0 if img.max() > 1 else 1.0))
        elif img.max() > 1:
            img = img / img.max()
        planes.append(to_model_plane(img.astype(np.float32), spec.input_shape))
    out[f"photographs (scikit-image, {len(planes)})"] = np.stack(planes)
    return out


@dataclass
class Inputs:
    """Feature planes (N, H, W) and, for windowed inputs, the input each window belongs to
    (``owner`` (N,)); None: one window per input."""

    x: np.ndarray
    owner: np.ndarray | None = None

    def sample(self, n: int | None, rng: np.random.Generator) -> Inputs:
        """At most ``n`` inputs (all their windows), a seeded choice."""
        owners = np.arange(len(self.x)) if self.owner is None else self.owner
        ids = np.unique(owners)
        if n is None or len(ids) <= n:
            return self
        keep = np.isin(owners, rng.choice(ids, n, replace=False))
        return Inputs(self.x[keep], None if self.owner is None else self.owner[keep])


def withheld_rate(fam: familiarity.Familiarity, features: np.ndarray,
                  owner: np.ndarray | None = None, planes: np.ndarray | None = None) -> float:
    """Share of inputs withheld: an input is withheld when most of its windows lie beyond the
    limit (:class:`xai_platform.familiarity.Check`)."""
    far = fam.ratios(features, planes) > 1.0
    if owner is None:
        return float(far.mean())
    ids, inverse = np.unique(owner, return_inverse=True)
    share = np.bincount(inverse, weights=far) / np.bincount(inverse)
    return float((share > 0.5).mean())


def xray_inputs(spec: ModelSpec, data: Path, also: list[Path], *, max_shifted: int,
                rng: np.random.Generator) -> tuple[dict[str, Inputs], dict[str, Inputs]]:
    """(splits, probes) of the lesion benchmark: train / validation / test / real, and test
    images changed by :data:`SHIFTS`, :func:`other_pictures`, and the test split of each
    ``also`` benchmark (e.g. benchmark v2: other anatomy and acquisition)."""
    dataset = read_data(data, spec, limit=None)
    splits = {name: Inputs(split.x) for name, split in dataset.splits.items()}
    test_x = dataset.splits["test"].x
    sample = test_x[np.sort(rng.permutation(len(test_x))[:max_shifted])].astype(np.float32)
    probes = {f"test images {name}": Inputs(np.ascontiguousarray(shift(sample, rng)))
              for name, shift in SHIFTS.items()}
    probes.update({name: Inputs(planes) for name, planes in other_pictures(spec).items()})
    for root in also:
        other = read_data(root, spec, limit=max_shifted * 2)
        for name, split in other.splits.items():
            if name in ("test", "real"):
                probes[f"{root.name} {name} split ({len(split.x)} images)"] = Inputs(split.x)
    return splits, probes


def joined_inputs(spec: ModelSpec, clips: list, split: str, n: int, *, seed: int
                  ) -> dict[str, Inputs]:
    """Windows of recordings joined from one split's clips, as users upload them, each
    through the app's own path (speech check, windows; only the scored windows), by kind:
    ``partly synthetic`` (the segment study's :func:`training.audio.segments.build`: real
    speech around a synthetic stretch of the same language), ``real only`` and ``synthetic
    only`` (as long, the same language), ``n`` of each. A clip alone fills part of one padded
    window; a recording fills its windows with speech and pauses, which the clips alone never
    show the check."""
    import tempfile
    from collections import defaultdict

    import soundfile as sf

    from xai_platform import pipeline
    from xai_platform.errors import InputError

    from .audio.segments import Recording, _join, build

    rate = spec.input.sample_rate
    recordings = [("real only" if rec.fake is None else "partly synthetic", rec)
                  for rec in build(clips, split, n, rate, seed=seed)]
    rng = np.random.default_rng(seed + 1000)
    fakes: dict[str, list] = defaultdict(list)
    for c in clips:
        if c.split == split and c.label == "fake":
            fakes[c.language].append(c)
    for kind, rec in list(recordings):  # one synthetic-only per real-only, as long
        if kind == "real only":
            pool = [fakes[rec.language][j] for j in rng.permutation(len(fakes[rec.language]))]
            wave, _ = _join(pool, rate, rng, rec.seconds)
            recordings.append(("synthetic only",
                               Recording(rec.language, wave, rate, (0.0, rec.seconds))))
    kinds: dict[str, list] = {"partly synthetic": [], "real only": [], "synthetic only": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (kind, rec) in enumerate(recordings):
            path = Path(tmp) / f"r{i}.wav"
            sf.write(path, rec.wave, rec.rate, subtype="PCM_16")
            try:
                prepared = pipeline.prepare(path, spec)
            except InputError:  # too little speech: the app refuses it, nothing to check
                continue
            planes = prepared.planes[prepared.scored_mask]
            kinds[kind].append((planes, np.full(len(planes), i)))
    return {kind: Inputs(np.concatenate([x for x, _ in parts]).astype(np.float32),
                         np.concatenate([o for _, o in parts]))
            for kind, parts in kinds.items() if parts}


def _joined(a: Inputs, b: Inputs) -> Inputs:
    """Both sets of windows; owners kept apart (``b``'s shifted past ``a``'s)."""
    owner_a = np.arange(len(a.x)) if a.owner is None else a.owner
    owner_b = np.arange(len(b.x)) if b.owner is None else b.owner
    return Inputs(np.concatenate([a.x, b.x]).astype(np.float32),
                  np.concatenate([owner_a, owner_b + owner_a.max() + 1]))


def audio_inputs(spec: ModelSpec, data: Path, also: list[Path], *, max_probe: int,
                 rng: np.random.Generator, joined: int = 0, seed: int = 0
                 ) -> tuple[dict[str, Inputs], dict[str, Inputs]]:
    """(splits, probes) of an offline audio corpus, windows by the app's own path; probes:
    the clips of each ``also`` corpus grouped by generator (fakes) and source (real).

    ``joined`` > 0: the train and validation splits also hold the windows of ``joined``
    partly synthetic, real-only and synthetic-only recordings built from their own clips
    (:func:`joined_inputs`), so that the fit and the limit know continuous recordings; the
    test split's recordings are probes."""
    from .audio.data import load_clips, load_corpus
    from .audio.features import feature_set

    cache = data / "features"
    clips, _ = load_clips(data)
    splits = {}
    for name in ("train", "validation", "test"):
        fs = feature_set(clips, spec, name, cache_dir=cache)
        splits[name] = Inputs(fs.x, fs.clip)
    probes: dict[str, Inputs] = {}
    if joined > 0:
        for i, name in enumerate(("train", "validation", "test")):
            for kind, inputs in joined_inputs(spec, clips, name, joined,
                                              seed=seed + i).items():
                if name == "test":
                    probes[f"test recordings, {kind} ({joined})"] = inputs
                else:
                    splits[name] = _joined(splits[name], inputs)
    for root in also:
        extra = load_corpus(root)
        groups: dict[str, list] = {}
        for c in extra:
            kind = f"fake: {c.generator}" if c.label == "fake" else \
                f"real: {getattr(c, 'source', '') or c.language or 'speech'}"
            groups.setdefault(kind, []).append(c)
        for kind, members in sorted(groups.items()):
            pick = [members[i] for i in sorted(rng.permutation(len(members))[:max_probe])]
            tagged = [dataclasses.replace(c, split="probe") for c in pick]
            fs = feature_set(tagged, spec, "probe", cache_dir=None)
            probes[f"{root.name} {kind} ({len(fs.clips)} clips)"] = Inputs(fs.x, fs.clip)
    return splits, probes


def run(spec: ModelSpec, data: Path, *, quantile: float, max_train: int | None,
        max_shifted: int, seed: int, command: str, also: list[Path] | None = None,
        joined: int = 0) -> FamiliarityInfo:
    """Fit, save, measure, and write the card's ``familiarity`` block."""
    weights = spec.weights
    card = read_card(weights)
    if weights is None or card is None:
        raise SystemExit(f"'{spec.id}' has no trained weights with a model card; train it first.")
    handle = load_saved(spec, weights)
    layer = spec.target_layer
    rng = np.random.default_rng(seed)
    if spec.modality == "audio":
        splits, probes = audio_inputs(spec, data, list(also or ()), max_probe=max_shifted,
                                      rng=rng, joined=joined, seed=seed)
    else:
        splits, probes = xray_inputs(spec, data, list(also or ()), max_shifted=max_shifted,
                                     rng=rng)

    def features(x: np.ndarray) -> np.ndarray:
        return handle.embeddings(np.asarray(x, np.float32), layer=layer, batch_size=32)

    t0 = time.time()
    train = splits["train"].sample(max_train, rng)
    fitted = familiarity.fit(features(train.x), features(splits["validation"].x),
                             quantile=quantile, layer=layer, train_planes=train.x,
                             validation_planes=splits["validation"].x)
    stem = card_stem(weights)
    npz = stem.with_name(f"{stem.name}.familiarity.npz")
    digest = fitted.save(npz)

    rates: dict[str, float] = {}
    for name, inputs in [*((f"{k} split", v) for k, v in splits.items() if k != "train"),
                         *probes.items()]:
        rates[name] = withheld_rate(fitted, features(inputs.x), inputs.owner, inputs.x)
        print(f"  {spec.id}: {name:<48} withheld {rates[name]:6.1%}", file=sys.stderr)

    info = FamiliarityInfo(
        file=npz.name, sha256=digest, layer=layer, components=fitted.components,
        dims=fitted.dims, views=tuple(fitted.views), quantile=quantile, command=command,
        withheld={k: round(v, 4) for k, v in rates.items()})
    write_card(weights, dataclasses.replace(card, familiarity=info))
    print(f"{spec.id}: familiarity fitted in {time.time() - t0:.0f} s -> {npz}", file=sys.stderr)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.familiarity",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, action="append",
                        help="a trained model id from the config (repeatable)")
    parser.add_argument("--config", action="append", type=Path,
                        help="extra config file or folder (repeatable)")
    parser.add_argument("--data", type=Path, default=Path("data/xray_benchmark"))
    parser.add_argument("--quantile", type=float, default=0.99,
                        help="the limit: this quantile of the validation distances")
    parser.add_argument("--max-train", type=int, default=3000,
                        help="training images the Gaussian is fitted on (seeded sample)")
    parser.add_argument("--max-shifted", type=int, default=300,
                        help="test images each change is applied to (audio: clips per "
                             "group of --also)")
    parser.add_argument("--also", action="append", type=Path, default=[],
                        help="another data set to measure: audio, a corpus whose generators "
                             "and sources are reported one by one; X-ray, a benchmark whose "
                             "test split is reported (repeatable)")
    parser.add_argument("--joined", type=int, default=0,
                        help="audio: also fit and set the limit on N partly synthetic, N "
                             "real-only and N synthetic-only recordings joined from each "
                             "split's clips (windows of continuous speech; the test split's "
                             "are measured)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    argv = list(argv if argv is not None else sys.argv[1:])
    config = load_config(args.config or ())
    for model_id in args.model:
        command = ("python -m training.familiarity " + " ".join(
            shlex.quote(a) for a in ["--model", model_id, *_without_models(argv)]))
        run(config.model(model_id), args.data, quantile=args.quantile, max_train=args.max_train,
            max_shifted=args.max_shifted, seed=args.seed, command=command, also=args.also,
            joined=args.joined)
    return 0


def _without_models(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--model":
            skip = True
        elif not a.startswith("--model="):
            out.append(a)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
