"""The Fréchet distance between Gaussians fitted to embeddings (Fréchet Audio Distance,
Kilgour et al., Interspeech 2019), estimated with its small-sample bias in view.

    FAD = |mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr((S_r^1/2 S_g S_r^1/2)^1/2)

The plug-in estimate from N clips is biased upwards by about b / N (the mean term alone by
tr(S_g) / N), with a b that differs between generators, so FADs from different N cannot be
compared, and at the few hundred clips a corpus holds per generator the bias is not small
next to the distances. Two estimates here:

* **equal n**: every generator's FAD from ``n`` of its clips (the same ``n`` for all), drawn
  several times against one fixed reference: the mean, the spread and ``n`` (comparable across
  generators, though each still carries its own bias);
* **FAD-infinity** (Chung and Forsyth, "Effectively unbiased FID and Inception Score and where
  to find them", CVPR 2020; for audio, Gui et al., ICASSP 2024): the FAD of subsets of several
  sizes ``m``, the line ``FAD = a + b / m`` fitted, its intercept ``a``. A random subset of an
  i.i.d. sample is an i.i.d. sample, so subsets drawn without replacement keep ``b / m`` exact
  to first order at every ``m`` up to ``N``; the draws share clips, so the fit's standard
  error understates the uncertainty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def gaussian(x: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Mean (D,) and unbiased covariance (D, D) of the rows of ``x`` (N, D), N >= 2."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least 2 embeddings as rows of an (N, D) array, got shape "
                         f"{x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False, ddof=1))


def psd_sqrt(s: npt.ArrayLike) -> FloatArray:
    """The symmetric square root of a positive semi-definite matrix (D, D); eigenvalues that
    round-off made slightly negative count as 0."""
    s = np.asarray(s, np.float64)
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: npt.ArrayLike, s1: npt.ArrayLike, mu2: npt.ArrayLike,
                     s2: npt.ArrayLike, *, root1: FloatArray | None = None) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mu1, s1) and N(mu2, s2).

    tr((s1 s2)^1/2) is taken as the sum of the square roots of the eigenvalues of the
    symmetric s1^1/2 s2 s1^1/2 (the same eigenvalues as s1 s2), which stays real and
    non-negative where ``scipy.linalg.sqrtm(s1 @ s2)`` returns complex round-off for singular
    covariances (fewer clips than dimensions). ``root1``: s1^1/2 when already known."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes do not match: means {mu1.shape}, {mu2.shape}; covariances "
                         f"{s1.shape}, {s2.shape}")
    root = psd_sqrt(s1) if root1 is None else root1
    m = root @ s2 @ root
    cross = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * cross), 0.0)


def fad(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """The plug-in FAD between the embeddings ``x`` (N, D) and ``y`` (M, D)."""
    return frechet_distance(*gaussian(x), *gaussian(y))


@dataclass(frozen=True)
class Reference:
    """The Gaussian of the reference embeddings (real speech), with its square root kept so
    that many distances to it cost one eigendecomposition each."""

    mean: FloatArray
    cov: FloatArray
    root: FloatArray
    n: int

    @classmethod
    def of(cls, x: npt.ArrayLike) -> Reference:
        mean, cov = gaussian(x)
        return cls(mean, cov, psd_sqrt(cov), len(np.asarray(x)))

    def distance(self, x: npt.ArrayLike) -> float:
        """FAD of the embeddings ``x`` (M, D) to this reference."""
        return frechet_distance(self.mean, self.cov, *gaussian(x), root1=self.root)


@dataclass(frozen=True)
class EqualN:
    """FAD from ``n`` clips, ``draws`` seeded draws: their mean and standard deviation."""

    mean: float
    sd: float
    n: int
    draws: int


@dataclass(frozen=True)
class Extrapolated:
    """FAD-infinity: the intercept of ``FAD = value + slope / m`` fitted over subset sizes
    ``sizes``, its standard error from the fit alone, and the fit's R^2."""

    value: float
    se: float
    slope: float
    r2: float
    sizes: tuple[int, ...]
    draws: int


def equal_n(reference: Reference, x: npt.ArrayLike, *, n: int, draws: int,
            rng: np.random.Generator) -> EqualN:
    """FAD of ``draws`` random subsets of ``n`` rows of ``x`` (without replacement) to
    ``reference`` (one draw when ``n`` is all of ``x``)."""
    x = np.asarray(x, np.float64)
    if not 2 <= n <= len(x):
        raise ValueError(f"n = {n} must be between 2 and the {len(x)} embeddings given")
    if n == len(x):  # every draw would be the same set
        return EqualN(reference.distance(x), 0.0, n, 1)
    values = [reference.distance(x[rng.choice(len(x), n, replace=False)]) for _ in range(draws)]
    return EqualN(float(np.mean(values)), float(np.std(values, ddof=1)) if draws > 1 else 0.0,
                  n, draws)


def sizes_for(total: int, *, steps: int = 6, low: float = 0.25, minimum: int = 10) -> list[int]:
    """Subset sizes for FAD-infinity: ``steps`` sizes evenly spaced from ``low * total`` (at
    least ``minimum``) to ``total``."""
    lo = min(max(int(np.ceil(low * total)), minimum), total)
    return sorted({int(round(s)) for s in np.linspace(lo, total, steps)})


def fad_infinity(reference: Reference, x: npt.ArrayLike, *, sizes: Sequence[int], draws: int,
                 rng: np.random.Generator) -> Extrapolated:
    """FAD-infinity of ``x`` (N, D) against ``reference``: ``draws`` subsets of each size in
    ``sizes`` (one at size N, where all subsets are the same), least squares on 1 / m."""
    x = np.asarray(x, np.float64)
    sizes = sorted(set(int(m) for m in sizes))
    if len(sizes) < 2 or sizes[0] < 2 or sizes[-1] > len(x):
        raise ValueError(f"need two or more subset sizes between 2 and {len(x)}, got {sizes}")
    inv, values = [], []
    for m in sizes:
        for _ in range(1 if m == len(x) else draws):
            inv.append(1.0 / m)
            values.append(reference.distance(x[rng.choice(len(x), m, replace=False)]))
    a = np.column_stack([np.ones(len(inv)), inv])
    y = np.asarray(values)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    dof = max(len(y) - 2, 1)
    cov = (resid @ resid / dof) * np.linalg.pinv(a.T @ a)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / total if total > 0 else 1.0
    return Extrapolated(float(coef[0]), float(np.sqrt(max(cov[0, 0], 0.0))), float(coef[1]),
                        r2, tuple(sizes), draws)


def real_floor(real: npt.ArrayLike, *, n: int, draws: int, steps: int,
               rng: np.random.Generator) -> tuple[EqualN, Extrapolated]:
    """What FAD reads for a "generator" that *is* real speech: equal n, ``n`` real clips
    against the other real clips (drawn ``draws`` times); FAD-infinity, subsets of one random
    half of the real clips against the other half. Near 0 for FAD-infinity if the extrapolation
    removes the bias; the equal-n floor is the bias at ``n`` alone."""
    real = np.asarray(real, np.float64)
    if len(real) < 2 * max(n, 2):
        raise ValueError(f"the floor needs at least {2 * max(n, 2)} real clips, got {len(real)}")
    values = []
    for _ in range(draws):
        order = rng.permutation(len(real))
        values.append(Reference.of(real[order[n:]]).distance(real[order[:n]]))
    eq = EqualN(float(np.mean(values)), float(np.std(values, ddof=1)) if draws > 1 else 0.0,
                n, draws)
    order = rng.permutation(len(real))
    half = len(real) // 2
    reference, held = Reference.of(real[order[:half]]), real[order[half:]]
    return eq, fad_infinity(reference, held, sizes=sizes_for(len(held), steps=steps),
                            draws=draws, rng=rng)
