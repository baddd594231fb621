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

The limit is a quantile (default 0.99) of the distances of the *validation* split (images the
fit never saw), so about 1% of in-distribution inputs are withheld by construction; the card
records the measured rates on the test split and on inputs made to differ.

Files: ``<weights stem>.familiarity.npz`` (arrays only, read with ``allow_pickle=False``), its
sha256 and the limit in the model card's ``familiarity`` block.
"""

from __future__ import annotations

import logging
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


@dataclass(frozen=True)
class Familiarity:
    """The training distribution of a model's features and the limit on their distance.

    mean: (C,); components: (k, C) orthonormal rows; variances: (k,) along them;
    residual_variance: mean squared residual per left-out dimension; limit: the distance
    (not squared) above which an input counts as unfamiliar.
    """

    mean: FloatArray
    components: FloatArray
    variances: FloatArray
    residual_variance: float
    limit: float
    layer: str | None = None

    @property
    def dims(self) -> int:
        return int(self.mean.shape[0])

    def distances(self, features: np.ndarray) -> FloatArray:
        """Distance of each row of ``features`` (N, C) to the training distribution, (N,)
        float32, scaled so that a typical training input is near 1."""
        e = np.asarray(features, np.float64) - self.mean
        z = e @ self.components.T
        r = e - z @ self.components
        left = max(self.dims - len(self.variances), 1)
        d2 = (z ** 2 / self.variances).sum(axis=1) + (r ** 2).sum(axis=1) / self.residual_variance
        return np.sqrt(d2 / (len(self.variances) + left)).astype(np.float32)

    def save(self, path: Path) -> str:
        """Write the arrays to ``path`` (.npz); returns the file's sha256."""
        path = Path(path)
        with open(path, "wb") as fh:
            np.savez(fh, mean=self.mean.astype(np.float32),
                     components=self.components.astype(np.float32),
                     variances=self.variances.astype(np.float32),
                     residual_variance=np.float64(self.residual_variance),
                     limit=np.float64(self.limit),
                     layer=np.str_(self.layer or ""))
        return sha256(path)

    @classmethod
    def load(cls, path: Path) -> Familiarity:
        """Read a file :meth:`save` wrote (arrays only: no code in it can run)."""
        with np.load(Path(path), allow_pickle=False) as z:
            f = cls(mean=z["mean"].astype(np.float64), components=z["components"].astype(np.float64),
                    variances=z["variances"].astype(np.float64),
                    residual_variance=float(z["residual_variance"]), limit=float(z["limit"]),
                    layer=str(z["layer"]) or None)
        k, c = f.components.shape
        if f.mean.shape != (c,) or f.variances.shape != (k,) or not np.all(f.variances > 0) \
                or not f.residual_variance > 0 or not f.limit > 0:
            raise ValueError(f"{path}: inconsistent familiarity arrays")
        return f


def fit(train: np.ndarray, validation: np.ndarray, *, quantile: float = 0.99,
        max_components: int = MAX_COMPONENTS, layer: str | None = None) -> Familiarity:
    """Fit the Gaussian on ``train`` features (N, C) and set the limit at ``quantile`` of the
    ``validation`` features' distances (M, C)."""
    x = np.asarray(train, np.float64)
    n, c = x.shape
    if n < 10:
        raise ValueError(f"need at least 10 training feature vectors, got {n}")
    mean = x.mean(axis=0)
    xc = x - mean
    # Principal axes from the SVD of the centred data; variances get a floor (a ridge, as in
    # shrinkage estimators) so that a channel the training data never moves (a dead unit) does
    # not make any input that stirs it "infinitely far".
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    var = s ** 2 / max(n - 1, 1)
    k = int(min(max_components, c, max(n // 4, 1)))
    floor = max(float(var.mean()) * 1e-3, 1e-12)
    variances = np.maximum(var[:k], floor)
    rest = var[k:]
    residual_variance = max(float(rest.mean()) if len(rest) else floor, floor)
    f = Familiarity(mean, vt[:k], variances, residual_variance, limit=1.0, layer=layer)
    d = f.distances(validation)
    limit = float(np.quantile(d, quantile))
    return Familiarity(mean, vt[:k], variances, residual_variance, limit=limit, layer=layer)


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


def check(familiarity: Familiarity, features: np.ndarray) -> Check:
    """Distances of feature rows (N, C) relative to the limit."""
    return Check(familiarity.distances(features) / np.float32(familiarity.limit))


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
