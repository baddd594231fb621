"""Is this input like the model's training data? If not, its verdict is withheld.

A detector answers every input, also one unlike anything it was trained on (a real radiograph
from another hospital, a flipped or inverted image, a voice from an unheard synthesiser), and
its probabilities are then no guide. Each shipped detector therefore carries a description of
its training distribution in *its own feature space*: the global-average-pooled activations of
its explained layer (the penultimate features of a GAP network), summarised by a Gaussian
(Lee et al., "A simple unified framework for detecting out-of-distribution samples and
adversarial attacks", NeurIPS 2018: the Mahalanobis distance of penultimate features).

To keep the file small for wide layers, the Gaussian lives in its top ``k`` principal
components, plus one term for what those components do not explain (the residual), as in
probabilistic PCA:

    d^2(e) = sum_i z_i^2 / lambda_i + |r|^2 / sigma_r^2,   z = V (e - mu),  r = (e - mu) - V^T z

The pooled features are nearly blind to how an input is laid out (an X-ray upside down, or
inverted, or badly exposed, keeps much of its texture), so a second view describes the input
itself at a glance, in the same way: the means of a 4 x 4 grid of blocks and a 16-bin histogram
of its values (:func:`layout`). Measured on the lesion benchmark (xray-cnn, docs/XRAY.md): the
features view alone withheld 11% of upside-down test images and 57% of inverted ones, the layout
view alone 99.5% and 100%; the features view catches what the layout misses (noise, photos).
An input is unfamiliar when either view puts it beyond its limit.

The limits are set together on the *validation* split (inputs the fit never saw) so that
``quantile`` (default 0.99) of them are within both: about 1% of in-distribution inputs are
withheld by construction; the card records the measured rates on the test split and on inputs
made to differ.

Files: ``<weights stem>.familiarity.npz`` (arrays only, read with ``allow_pickle=False``; each
view's Gaussian and limit), named with its sha256 in the model card's ``familiarity`` block.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .files import sha256

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float32]

#: at most this many principal components are kept (the file stays under about 1 MB for a
#: 1024-channel layer; a layer of at most this many channels keeps its full covariance)
MAX_COMPONENTS = 256
#: a window whose distance exceeds the limit by this factor is "far outside" (wording only)
FAR = 2.0
#: the layout view: block means over a grid of this side, and a histogram of this many bins
LAYOUT_GRID = 4
LAYOUT_BINS = 16


@dataclass(frozen=True)
class Gaussian:
    """One view of the training distribution and the limit on its distance.

    mean: (C,); components: (k, C) orthonormal rows; variances: (k,) along them;
    residual_variance: mean squared residual per left-out dimension; limit: the distance
    (not squared) above which an input counts as unfamiliar in this view.
    """

    mean: FloatArray
    components: FloatArray
    variances: FloatArray
    residual_variance: float
    limit: float = 1.0

    @property
    def dims(self) -> int:
        return int(self.mean.shape[0])

    def distances(self, x: np.ndarray) -> FloatArray:
        """Distance of each row of ``x`` (N, C) to the training distribution, (N,) float32,
        scaled so that a typical training input is near 1."""
        e = np.asarray(x, np.float64) - self.mean
        z = e @ self.components.T
        r = e - z @ self.components
        left = max(self.dims - len(self.variances), 1)
        d2 = (z ** 2 / self.variances).sum(axis=1) + (r ** 2).sum(axis=1) / self.residual_variance
        return np.sqrt(d2 / (len(self.variances) + left)).astype(np.float32)


def fit_gaussian(x: np.ndarray, *, max_components: int = MAX_COMPONENTS) -> Gaussian:
    """The Gaussian of the rows of ``x`` (N, C) in its top principal components plus the
    residual, limit 1 (set by :func:`fit`)."""
    x = np.asarray(x, np.float64)
    n, c = x.shape
    if n < 10:
        raise ValueError(f"need at least 10 training feature vectors, got {n}")
    mean = x.mean(axis=0)
    # Principal axes from the SVD of the centred data; variances get a floor (a ridge, as in
    # shrinkage estimators) so that a channel the training data never moves (a dead unit) does
    # not make any input that stirs it "infinitely far".
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s ** 2 / max(n - 1, 1)
    k = int(min(max_components, c, max(n // 4, 1)))
    floor = max(float(var.mean()) * 1e-3, 1e-12)
    rest = var[k:]
    return Gaussian(mean, vt[:k], np.maximum(var[:k], floor),
                    max(float(rest.mean()) if len(rest) else floor, floor))


def layout(planes: np.ndarray, value_range: tuple[float, float], *, grid: int = LAYOUT_GRID,
           bins: int = LAYOUT_BINS) -> FloatArray:
    """What an input looks like at a glance: its mean over a ``grid`` x ``grid`` of blocks and
    the histogram of its values over ``value_range`` in ``bins`` bins, (N, grid^2 + bins).
    planes: (N, H, W) as the model sees them (an X-ray in [0, 1], a log-mel window in dB)."""
    x = np.asarray(planes, np.float32)
    n, h, w = x.shape
    rows, cols = np.array_split(np.arange(h), grid), np.array_split(np.arange(w), grid)
    blocks = np.stack([x[:, r][:, :, c].mean(axis=(1, 2)) for r in rows for c in cols], axis=1)
    lo, hi = value_range
    edges = np.linspace(lo, hi, bins + 1)
    hist = np.stack([np.histogram(np.clip(xi, lo, hi), bins=edges)[0] / xi.size for xi in x])
    return np.concatenate([blocks, hist], axis=1).astype(np.float32)


@dataclass(frozen=True)
class Familiarity:
    """The training distribution of a model in two views, each with its limit: ``features``
    (the pooled activations of ``layer``) and, where fitted, ``layout`` (:func:`layout` of the
    input: orientation, exposure, inversion, framing). An input is unfamiliar when either view
    puts it beyond its limit; the limits are set together so that ``quantile`` of the
    validation inputs are within both."""

    views: Mapping[str, Gaussian]
    layer: str | None = None
    value_range: tuple[float, float] = (0.0, 1.0)

    @property
    def features(self) -> Gaussian:
        return self.views["features"]

    @property
    def dims(self) -> int:
        return self.features.dims

    @property
    def components(self) -> int:
        return len(self.features.variances)

    def ratios(self, features: np.ndarray, planes: np.ndarray | None = None) -> FloatArray:
        """(N,) the largest distance / limit over the views (above 1: unfamiliar). ``planes``
        (N, H, W) are needed for the layout view."""
        out = self.features.distances(features) / np.float32(self.features.limit)
        if "layout" in self.views and planes is not None:
            g = self.views["layout"]
            out = np.maximum(out, g.distances(layout(planes, self.value_range)) / np.float32(g.limit))
        return out.astype(np.float32)

    def save(self, path: Path) -> str:
        """Write the arrays to ``path`` (.npz); returns the file's sha256."""
        path = Path(path)
        arrays: dict[str, Any] = {"layer": np.str_(self.layer or ""),
                                  "value_range": np.asarray(self.value_range, np.float64)}
        for name, g in self.views.items():
            arrays |= {f"{name}.mean": g.mean.astype(np.float32),
                       f"{name}.components": g.components.astype(np.float32),
                       f"{name}.variances": g.variances.astype(np.float32),
                       f"{name}.residual_variance": np.float64(g.residual_variance),
                       f"{name}.limit": np.float64(g.limit)}
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return sha256(path)

    @classmethod
    def load(cls, path: Path) -> Familiarity:
        """Read a file :meth:`save` wrote (arrays only: no code in it can run)."""
        try:
            return cls._load(path)
        except KeyError as exc:
            raise ValueError(f"{path}: missing {exc}") from None

    @classmethod
    def _load(cls, path: Path) -> Familiarity:
        views = {}
        with np.load(Path(path), allow_pickle=False) as z:
            for name in sorted({k.split(".")[0] for k in z.files if "." in k}):
                g = Gaussian(*(z[f"{name}.{part}"].astype(np.float64) for part in
                               ("mean", "components", "variances")),
                             residual_variance=float(z[f"{name}.residual_variance"]),
                             limit=float(z[f"{name}.limit"]))
                k, c = g.components.shape
                if g.mean.shape != (c,) or g.variances.shape != (k,) or \
                        not np.all(g.variances > 0) or not g.residual_variance > 0 or \
                        not g.limit > 0:
                    raise ValueError(f"{path}: inconsistent familiarity arrays ({name})")
                views[name] = g
            layer, value_range = str(z["layer"]) or None, tuple(float(v) for v in z["value_range"])
        if "features" not in views:
            raise ValueError(f"{path}: no features view")
        return cls(views, layer, value_range)  # type: ignore[arg-type]


def fit(train: np.ndarray, validation: np.ndarray, *, quantile: float = 0.99,
        max_components: int = MAX_COMPONENTS, layer: str | None = None,
        train_planes: np.ndarray | None = None,
        validation_planes: np.ndarray | None = None) -> Familiarity:
    """Fit the features view on ``train`` (N, C) and, given the planes (N, H, W), the layout
    view; set the limits so that ``quantile`` of the ``validation`` inputs are within both."""
    views = {"features": fit_gaussian(train, max_components=max_components)}
    value_range = (0.0, 1.0)
    val_views = {"features": np.asarray(validation)}
    if train_planes is not None and validation_planes is not None:
        tp = np.asarray(train_planes, np.float32)
        value_range = (float(np.percentile(tp, 0.1)), float(np.percentile(tp, 99.9)))
        views["layout"] = fit_gaussian(layout(tp, value_range), max_components=max_components)
        val_views["layout"] = layout(validation_planes, value_range)
    d = {name: views[name].distances(val_views[name]) for name in views}
    own = {name: float(np.quantile(d[name], quantile)) for name in views}
    both = np.max([d[name] / own[name] for name in views], axis=0)
    scale = float(np.quantile(both, quantile))
    views = {name: dataclasses.replace(g, limit=own[name] * scale) for name, g in views.items()}
    return Familiarity(views, layer, value_range)


@dataclass(frozen=True)
class Check:
    """The familiarity of one input: per window, distance / limit (1.0 = at the limit)."""

    ratios: FloatArray  # (n,)

    @property
    def unfamiliar(self) -> npt.NDArray[np.bool_]:
        return self.ratios > 1.0

    @property
    def withheld(self) -> bool:
        """Withheld when most windows (the only one, for an image) are unfamiliar."""
        return bool(self.unfamiliar.mean() > 0.5)

    @property
    def reason(self) -> str:
        if not self.withheld:
            return ""
        r = float(np.median(self.ratios))
        how = "far outside" if r >= FAR else "outside"
        where = (f"{int(self.unfamiliar.sum())} of {len(self.ratios)} windows are "
                 if len(self.ratios) > 1 else "this input is ")
        return (f"{where}{how} what the model was trained on (distance {r:.1f}x the limit set "
                "on validation data), so its probabilities are no guide here")

    def to_dict(self) -> dict[str, Any]:
        return {"distance_ratio": round(float(np.median(self.ratios)), 3),
                "unfamiliar_windows": int(self.unfamiliar.sum()),
                "windows": int(len(self.ratios))}


def check(familiarity: Familiarity, features: np.ndarray,
          planes: np.ndarray | None = None) -> Check:
    """The familiarity of one input's windows: feature rows (N, C) and their planes (N, H, W)."""
    return Check(familiarity.ratios(features, planes))


def read(weights: Path | None, block: Any) -> Familiarity | None:
    """The familiarity file a card's ``familiarity`` block names, beside ``weights``; None when
    there is none, and None with a warning when the file is missing, altered or unreadable
    (the model then answers without the check, and the app says so in its notes)."""
    if weights is None or block is None or not getattr(block, "file", None):
        return None
    path = Path(weights).parent / block.file
    try:
        if block.sha256 and sha256(path) != block.sha256:
            log.warning("%s does not match the sha256 in its model card; the familiarity check "
                        "is off for this model.", path)
            return None
        return Familiarity.load(path)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("cannot read %s (%s); the familiarity check is off for this model.", path, exc)
        return None
