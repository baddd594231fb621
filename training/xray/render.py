"""Chest backgrounds and lesions for the benchmark: chest anatomy rendered from a real lung
mask, views of the real radiograph, an inserted nodule or mass with its mask, the finishing
(blur, gamma, contrast, noise). Images: (size, size) float32 in [0, 1]."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

FloatImage = npt.NDArray[np.float32]
BoolImage = npt.NDArray[np.bool_]

LESION_TYPES = {"nodule": (0.045, 0.09), "mass": (0.09, 0.16)}  # diameter / image width
EDGES = ("sharp", "ill-defined", "spiculated", "lobulated")
CONTRAST = (0.12, 0.32)


def _smooth(x: np.ndarray, sigma: float) -> FloatImage:
    return cv2.GaussianBlur(x.astype(np.float32), (0, 0), max(sigma, 0.3))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def frame_mask(mask: BoolImage, size: int, rng: np.random.Generator) -> BoolImage:
    """Crop a lung mask to the thorax with random margins, square, resized to (size, size)."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    w, h = x1 - x0, y1 - y0
    left, right = w * rng.uniform(0.08, 0.2), w * rng.uniform(0.08, 0.2)
    top, bottom = h * rng.uniform(0.06, 0.16), h * rng.uniform(0.12, 0.3)
    return square_crop(mask, (x0 - left, x1 + right, y0 - top, y1 + bottom), size)[0]


def square_crop(mask: BoolImage, box: tuple[float, float, float, float], size: int
                ) -> tuple[BoolImage, float]:
    """The square around ``box`` (x0, x1, y0, y1) of ``mask``, resized to (size, size) with a
    little smoothing; also the square's side in the mask's pixels."""
    bx0, bx1, by0, by1 = box
    side = max(bx1 - bx0, by1 - by0)
    cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
    m = np.array([[size / side, 0, size / 2 - cx * size / side],
                  [0, size / side, size / 2 - cy * size / side]], np.float32)
    out = cv2.warpAffine(_smooth(mask, 0.5 * side / size), m, (size, size),
                         flags=cv2.INTER_LINEAR, borderValue=0)
    return out > 0.5, float(side)


def _midline(lung: BoolImage) -> float:
    """Column between the two lungs (fraction of the width)."""
    cols = lung.sum(axis=0).astype(np.float32)
    xs = np.nonzero(cols)[0]
    lo, hi = xs.min() + (xs.max() - xs.min()) * 0.3, xs.min() + (xs.max() - xs.min()) * 0.7
    idx = np.arange(int(lo), int(hi) + 1)
    gap = idx[cols[idx] <= cols[idx].min() + 1]
    return float(gap.mean()) / lung.shape[1]


def _vessels(canvas: np.ndarray, start: tuple[float, float], direction: float,
             rng: np.random.Generator, size: int, depth: int = 0) -> None:
    """Draw one branching vessel tree as a random walk from the hilum."""
    x, y = start
    angle = direction
    width = rng.uniform(1.6, 2.8) * size / 256 / (1 + depth)
    length = rng.uniform(0.12, 0.32) * size / (1 + 0.5 * depth)
    step = 0.012 * size
    for i in range(int(length / step)):
        angle += rng.normal(0, 0.22)
        nx, ny = x + step * math.cos(angle), y + step * math.sin(angle)
        value = 1.0 - i * step / length * 0.7
        cv2.line(canvas, (round(x * 4), round(y * 4)), (round(nx * 4), round(ny * 4)),
                 float(value), max(1, round(width * 4)), lineType=cv2.LINE_AA, shift=2)
        x, y = nx, ny
        width = max(0.5 * size / 256, width * 0.96)
        if depth < 2 and rng.random() < 0.08:
            _vessels(canvas, (x, y), angle + rng.choice([-1, 1]) * rng.uniform(0.3, 0.8),
                     rng, size, depth + 1)


@dataclass(frozen=True)
class Habitus:
    """Body build for :func:`render_chest` (benchmark v2; the defaults leave v1's drawing, and
    its random draws, unchanged): ``width`` scales the soft-tissue slab, ``tissue`` adds
    soft-tissue density, ``heart`` scales the cardiac silhouette, ``rib_slope`` scales how much
    the ribs arch and slant (children's ribs run more horizontally), ``thymus`` is the density
    of a widened upper mediastinum (infants), ``breasts`` allows breast shadows."""

    width: float = 1.0
    tissue: float = 0.0
    heart: float = 1.0
    rib_slope: float = 1.0
    thymus: float = 0.0
    breasts: bool = True


ADULT = Habitus()


def render_chest(lung: BoolImage, rng: np.random.Generator, *,
                 habitus: Habitus = ADULT) -> FloatImage:
    """A radiograph-like image (size, size) in [0, 1] (bone bright) around a lung mask."""
    size = lung.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ys, xs = np.nonzero(lung)
    y0, y1 = ys.min() / size, ys.max() / size
    xm = _midline(lung)
    half = max(xm - xs.min() / size, xs.max() / size - xm)
    side = np.where(xx >= xm, 1.0, -1.0)
    tall = y1 - y0

    # Body: a soft-tissue slab widening into the shoulders, brighter where it is thicker.
    air = rng.uniform(0.0, 0.08)
    width = half * rng.uniform(1.1, 1.32) * (1 + 0.35 * _sigmoid((y0 + 0.04 - yy) / 0.04))
    width = width * habitus.width
    body = _sigmoid((width - np.abs(xx - xm)) / 0.01)
    thickness = np.sqrt(np.clip(1 - ((xx - xm) / width) ** 2, 0, 1))
    tissue = rng.uniform(0.5, 0.65) * (0.8 + 0.2 * thickness) + habitus.tissue * thickness
    # Mediastinum and heart, and the abdomen under each lung's base.
    tissue += rng.uniform(0.06, 0.1) * np.exp(-((np.abs(xx - xm) / (half * rng.uniform(0.22, 0.3)))
                                              ** 4))
    rows = np.arange(size)[:, None]
    base_row = np.where(lung.any(axis=0), (lung * rows).max(axis=0), y1 * size).astype(np.float32)
    base_row = _smooth(base_row[None], 3)[0] / size
    abdomen = _sigmoid((yy - base_row[None] - 0.01) / 0.012)
    hx, hy = xm + half * rng.uniform(0.05, 0.15), y0 + tall * rng.uniform(0.62, 0.7)
    heart_w = half * rng.uniform(0.42, 0.55) * habitus.heart
    heart = ((xx - hx) / heart_w) ** 2 + ((yy - hy) / (tall * 0.18 * habitus.heart)) ** 2
    tissue += rng.uniform(0.05, 0.1) * _sigmoid((1 - heart) / 0.08) * (1 - abdomen)
    tissue += rng.uniform(0.1, 0.18) * abdomen
    if habitus.thymus:  # a child's thymus widens the upper mediastinum like a sail
        sail = ((xx - xm - 0.25 * half) / (0.45 * half)) ** 2 + ((yy - y0 - 0.3 * tall)
                                                                 / (0.16 * tall)) ** 2
        tissue += habitus.thymus * _sigmoid((1 - sail) / 0.1) * (1 - abdomen)
    trachea = np.exp(-((np.abs(xx - xm) / 0.018) ** 4)) * _sigmoid((y0 + 0.2 * tall - yy) / 0.03)
    tissue -= rng.uniform(0.04, 0.08) * trachea
    img = air + (tissue - air) * body
    if rng.random() < 0.4 and habitus.breasts:  # breast shadows
        for s in (-1, 1):
            cx, cy = xm + s * half * rng.uniform(0.45, 0.7), y1 - rng.uniform(0.05, 0.15)
            r = ((xx - cx) / rng.uniform(0.18, 0.25)) ** 2 + ((yy - cy) / rng.uniform(0.1, 0.15)) ** 2
            img += rng.uniform(0.03, 0.07) * _sigmoid((1 - r) / 0.15) * body

    # Lungs: darker away from their borders and towards the bases, unevenly.
    lung_f = _smooth(lung, 0.006 * size)
    depth = np.clip(ndi.distance_transform_edt(lung) / (0.08 * size), 0, 1) ** 0.6
    base = 0.8 + 0.2 * np.clip((yy - y0) / (0.35 * tall), 0, 1)
    patchy = 1 + 0.08 * _noise_field((size, size), 0.06 * size, rng)
    img -= rng.uniform(0.32, 0.48) * lung_f * (0.55 + 0.45 * _smooth(depth, 2)) * base * patchy

    # Hila and branching vessels.
    vessels = np.zeros((size, size), np.float32)
    yh = int((y0 + rng.uniform(0.38, 0.5) * tall) * size)
    for s in (-1, 1):
        row = np.nonzero(lung[yh] & ((xx[yh] - xm) * s > 0))[0]
        if len(row) == 0:
            continue
        hxs = (row.min() if s > 0 else row.max()) + s * 0.02 * size
        img += rng.uniform(0.06, 0.12) * np.exp(-(((xx * size - hxs) ** 2 / 1.5 + (yy * size - yh) ** 2)
                                                   / (2 * (0.04 * size) ** 2))) * lung_f
        for _ in range(rng.integers(14, 24)):
            direction = (0 if s > 0 else math.pi) + s * rng.uniform(-1.4, 1.4)
            _vessels(vessels, (hxs, yh + rng.normal(0, 0.03 * size)), direction, rng, size)
    img += rng.uniform(0.05, 0.09) * _smooth(vessels, 0.7) * lung_f
    img += rng.uniform(0.008, 0.02) * _noise_field((size, size), rng.uniform(1.5, 4), rng) * lung_f

    # Ribs (posterior: arching up and out, then down the lateral wall; anterior: fainter,
    # sloping down towards the midline), clavicles, spine.
    u = (xx - xm) * side / half  # 0 at the midline, 1 at the lateral lung border
    uc = np.clip(u, 0, 1.2)
    bones = np.zeros((size, size), np.float32)
    spacing = tall * rng.uniform(0.095, 0.115)
    rise, drop = rng.uniform(0.03, 0.06), rng.uniform(0.08, 0.14)
    slant = rng.uniform(0.12, 0.18)
    rise, drop, slant = (v * habitus.rib_slope for v in (rise, drop, slant))
    rib_w = rng.uniform(0.008, 0.011) * (1 + 0.5 * np.clip(u, 0, 1))
    span = _sigmoid((u - 0.12) / 0.03) * _sigmoid((1.12 - u) / 0.03)
    front = _sigmoid((u - 0.35) / 0.06) * _sigmoid((1.1 - u) / 0.03)
    for i in range(11):
        c = y0 - 0.03 + i * spacing * (1 + 0.02 * i)
        yc = c - rise * np.sin(np.pi * np.clip(uc, 0, 1) * 0.7) + drop * uc ** 3
        band = np.exp(-(((yy - yc) / rib_w) ** 6))
        cortex = np.exp(-(((np.abs(yy - yc) - rib_w * 0.85) / 0.003) ** 2))
        bones += (0.7 * band + 0.3 * cortex) * span * rng.uniform(0.8, 1.2)
        ya = c + 0.04 + slant * (1 - np.clip(u, 0, 1))
        bones += 0.4 * np.exp(-(((yy - ya) / (rib_w * 0.9)) ** 4)) * front
    yc = y0 + rng.uniform(-0.01, 0.03) - 0.07 * uc + 0.03 * uc ** 2
    bones += 1.3 * np.exp(-(((yy - yc) / 0.013) ** 4)) * _sigmoid((u - 0.08) / 0.03) \
        * _sigmoid((1.3 - u) / 0.05)
    img += rng.uniform(0.06, 0.1) * bones * body
    period = rng.uniform(0.04, 0.055)
    spine = np.exp(-((np.abs(xx - xm) / rng.uniform(0.03, 0.045)) ** 6))
    img += rng.uniform(0.04, 0.08) * spine * (0.8 + 0.2 * np.cos(2 * np.pi * yy / period)) * body
    return np.clip(img, 0, 1).astype(np.float32)


def _noise_field(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> FloatImage:
    """Smooth Gaussian noise with unit standard deviation."""
    n = _smooth(rng.standard_normal(shape), sigma)
    return (n / (n.std() + 1e-6)).astype(np.float32)


def rg1_view(rg1: FloatImage, lungs: BoolImage, size: int, rng: np.random.Generator
             ) -> tuple[FloatImage, BoolImage]:
    """One augmented view of the real radiograph: square crop, flip, rotation."""
    h, w = rg1.shape
    side = rng.uniform(0.8, 0.98) * min(h, w)
    cx = w / 2 + rng.uniform(-0.04, 0.04) * w
    cy = 0.46 * h + rng.uniform(-0.04, 0.04) * h
    angle = rng.uniform(-6, 6)
    m = cv2.getRotationMatrix2D((cx, cy), angle, size / side)
    m[:, 2] += (size / 2 - cx, size / 2 - cy)
    src = _smooth(rg1, 0.5 * side / size)  # anti-aliasing before the linear warp
    img = cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    lung = cv2.warpAffine(lungs.astype(np.float32), m, (size, size), flags=cv2.INTER_LINEAR) > 0.5
    if rng.random() < 0.5:
        img, lung = img[:, ::-1].copy(), lung[:, ::-1].copy()
    return img, lung


@dataclass(frozen=True)
class Lesion:
    type: str
    edge: str
    diameter_px: float
    diameter_frac: float
    contrast: float
    x: float
    y: float
    area_px: int


def insert_lesion(img: FloatImage, lung: BoolImage, rng: np.random.Generator, *,
                  contrast_range: tuple[float, float] = CONTRAST
                  ) -> tuple[FloatImage, BoolImage, Lesion]:
    """Add one nodule or mass inside the lungs; returns (image, lesion mask, description).

    The opacity attenuates like a projected sphere (thickness sqrt(1 - r^2)), with a wobbly or
    lobulated outline, optional spicules, and an edge blur set by its kind. Its peak adds
    ``contrast`` to the local lung intensity: I' = 1 - (1 - I) exp(-k p).
    """
    size = img.shape[0]
    kind = "nodule" if rng.random() < 0.6 else "mass"
    edge = str(rng.choice(EDGES, p=[0.35, 0.25, 0.2, 0.2]))
    dist = ndi.distance_transform_edt(lung)
    d_frac = rng.uniform(*LESION_TYPES[kind])
    aspect, tilt = rng.uniform(0.8, 1.2), rng.uniform(0, math.pi)
    harmonics = [(k, rng.uniform(0, 0.05), rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5)]
    if edge == "lobulated":
        harmonics += [(k, rng.uniform(0.1, 0.18), rng.uniform(0, 2 * math.pi)) for k in (3, 4)]
    wobble = 1 + sum(a for _, a, _ in harmonics)
    spike = rng.uniform(0.3, 0.8) if edge == "spiculated" else 0.0
    while True:  # shrink until the whole lesion fits inside the lung somewhere
        r = d_frac * size / 2
        reach = r * max(aspect, 1 / aspect) * wobble * (1 + spike) + 1.5
        ys, xs = np.nonzero(dist >= reach)
        if len(ys) or d_frac <= LESION_TYPES["nodule"][0]:
            break
        d_frac *= 0.85
        kind = "nodule" if d_frac < LESION_TYPES["mass"][0] else kind
    if not len(ys):
        ys, xs = np.nonzero(dist >= dist.max())
    i = rng.integers(len(ys))
    cy, cx = ys[i] + rng.uniform(-0.5, 0.5), xs[i] + rng.uniform(-0.5, 0.5)

    half = int(math.ceil(reach + 0.5 * r + 4))
    y_lo, y_hi = max(0, int(cy) - half), min(size, int(cy) + half + 1)
    x_lo, x_hi = max(0, int(cx) - half), min(size, int(cx) + half + 1)
    py, px = np.mgrid[y_lo:y_hi, x_lo:x_hi].astype(np.float32)
    dx, dy = px - cx, py - cy
    rx = dx * math.cos(tilt) + dy * math.sin(tilt)
    ry = (-dx * math.sin(tilt) + dy * math.cos(tilt)) * aspect
    theta = np.arctan2(ry, rx)
    radius = r * (1 + sum(a * np.cos(k * theta + p) for k, a, p in harmonics))
    q = np.hypot(rx, ry) / radius
    thick = np.sqrt(np.clip(1 - q ** 2, 0, 1)).astype(np.float32)
    if spike:
        spikes = np.zeros_like(thick)
        for a in rng.uniform(0, 2 * math.pi, rng.integers(10, 24)):
            r0 = r * 0.8
            r1 = r * (1 + spike * rng.uniform(0.5, 1.0))
            p0 = (cx - x_lo + r0 * math.cos(a), cy - y_lo + r0 * math.sin(a))
            p1 = (cx - x_lo + r1 * math.cos(a), cy - y_lo + r1 * math.sin(a))
            cv2.line(spikes, tuple(round(v * 4) for v in p0), tuple(round(v * 4) for v in p1),
                     float(rng.uniform(0.35, 0.6)), 1, lineType=cv2.LINE_AA, shift=2)
        thick = np.maximum(thick, spikes)
    blur = {"sharp": 0.04, "ill-defined": 0.35, "spiculated": 0.08, "lobulated": 0.06}[edge]
    profile = _smooth(thick, blur * r + 0.5)
    if kind == "mass":  # a little internal texture
        profile *= 1 + 0.08 * _noise_field(profile.shape, 2.0, rng)
    profile = np.clip(profile / max(profile.max(), 1e-6), 0, 1)

    patch = img[y_lo:y_hi, x_lo:x_hi]
    local = float(np.median(patch[lung[y_lo:y_hi, x_lo:x_hi]])) if lung[y_lo:y_hi, x_lo:x_hi].any() \
        else float(patch.mean())
    contrast = float(min(rng.uniform(*contrast_range), 0.8 * (1 - local)))
    k = -math.log(1 - contrast / max(1 - local, 1e-3))
    out = img.copy()
    out[y_lo:y_hi, x_lo:x_hi] = 1 - (1 - patch) * np.exp(-k * profile)
    mask = np.zeros(lung.shape, bool)
    mask[y_lo:y_hi, x_lo:x_hi] = profile >= 0.25
    mask &= lung
    lesion = Lesion(type=kind, edge=edge, diameter_px=round(2 * r, 2),
                    diameter_frac=round(2 * r / size, 4), contrast=round(contrast, 4),
                    x=round(cx / size, 4), y=round(cy / size, 4), area_px=int(mask.sum()))
    return np.clip(out, 0, 1).astype(np.float32), mask, lesion


def finish(img: FloatImage, rng: np.random.Generator) -> FloatImage:
    """Detector and display: blur, gamma, contrast and brightness, noise."""
    out = _smooth(img, rng.uniform(0.4, 1.0))
    out = np.clip(out, 0, 1) ** rng.uniform(0.8, 1.25)
    out = (out - 0.5) * rng.uniform(0.85, 1.15) + 0.5 + rng.uniform(-0.05, 0.05)
    out = out + rng.normal(0, rng.uniform(0.004, 0.02), out.shape)
    return np.clip(out, 0, 1).astype(np.float32)

