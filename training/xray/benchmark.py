"""An offline lung-lesion benchmark with ground truth: nodules and masses inserted into chest
radiographs, each with its lesion mask and lung mask.

    python -m training.xray_benchmark --out data/xray_benchmark [--n 4000] [--size 256] [--seed 0]

Backgrounds (see docs/XRAY.md):

* **synthetic**: chest anatomy rendered from a real lung mask (TorchXRayVision's
  ``semantic_masks_v7labs_lungs.zip``, 435 usable masks of 517; 82 are empty): air, a body with
  lateral soft-tissue fall-off and shoulders, dark lung fields that deepen away from their
  borders, hila and branching vessels, posterior and anterior ribs, clavicles, spine, optional
  breast shadows, then detector blur, gamma, contrast and noise.
* **rg1**: pydicom-data's real PA chest radiograph (``RG1_*.dcm``) augmented by crops, flips,
  small rotations, gamma, contrast and noise; its lungs are a polygon traced by hand.
  That patient has several round opacities (metastasis-like masses) in both lungs, so its
  "normal" images are not normal: it forms the held-out ``real`` split, reported on its own,
  and is never trained on (``--real-split`` changes that).

Each rendered background gives a pair: a ``normal`` image and a ``lesion`` image with one
inserted opacity (nodule 4.5-9 % or mass 9-16 % of the image width; sharp, ill-defined,
spiculated or lobulated; peak contrast 0.12-0.32 against the local lung) whose whole extent
lies inside the lung mask. Both images of a pair get independent finishing (blur, gamma, noise), so
nothing but the lesion tells them apart.

Splits are by background: a lung mask (grouped by patient or paper, from its file name) or the
real radiograph belongs to one split only. Everything is drawn from ``--seed``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage as ndi

FloatImage = npt.NDArray[np.float32]
BoolImage = npt.NDArray[np.bool_]

SPLITS = ("train", "val", "test", "real")
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
LESION_TYPES = {"nodule": (0.045, 0.09), "mass": (0.09, 0.16)}  # diameter / image width
EDGES = ("sharp", "ill-defined", "spiculated", "lobulated")
CONTRAST = (0.12, 0.32)
METADATA_FIELDS = ("id", "path", "label", "split", "pair", "background_source", "background_id",
                   "lung_mask_id", "lung_mask_path", "lesion_mask_path", "lesion_type",
                   "lesion_edge", "lesion_diameter_px", "lesion_diameter_frac",
                   "lesion_contrast", "lesion_x", "lesion_y", "lesion_area_px")

# RG1's lungs, traced on the displayed radiograph, in percent of its width and height
# (patient's right lung on the image's left).
RG1_LUNGS = (
    ((30, 9), (37, 9), (40, 12), (41, 20), (41, 30), (40, 40), (39, 48), (37, 55), (37, 62),
     (36, 68), (33, 71), (26, 72), (18, 74), (11, 77), (9, 75), (9, 65), (10, 52), (11, 40),
     (13, 30), (16, 22), (21, 15), (25, 11)),
    ((60, 9), (67, 9), (73, 11), (78, 15), (83, 22), (86, 30), (88, 40), (89, 52), (90, 64),
     (90, 74), (89, 78), (84, 76), (74, 71), (66, 64), (60, 55), (57, 45), (56, 35), (56, 25),
     (57, 15)),
)


# --------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class LungMask:
    """A real lung mask from TorchXRayVision. mask: (H, W) bool, at most 512 px a side."""

    id: str
    group: str
    mask: BoolImage


def mask_archive() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise SystemExit("torchxrayvision is not installed: pip install torchxrayvision")
    return Path(spec.origin).parent / "data" / "semantic_masks_v7labs_lungs.zip"


def mask_group(name: str) -> str:
    """Masks of one patient or one paper share a group (follow-up days, figure panels)."""
    stem = Path(name).stem.lower().removesuffix(".annot.original")
    if re.fullmatch(r"\d{5}_\d+_\d+", stem):
        return stem.split("_")[0]
    stem = re.split(r"-main\.pdf|[-_.]gr\d|[-_.]fig\d|-fig-|[-_]day|-g\d{3}|_f\d", stem)[0]
    while (short := re.sub(r"[-_](pa|ap|[a-z]\d?)$", "", stem)) != stem:
        stem = short
    return stem


def load_lung_masks(archive: Path | None = None, *, limit: int | None = None) -> list[LungMask]:
    """The usable masks (both lungs present), sorted by id (the first ``limit`` of them)."""
    masks: list[LungMask] = []
    with zipfile.ZipFile(archive or mask_archive()) as zf:
        for name in sorted(n for n in zf.namelist() if not n.endswith("/")):
            im = Image.open(io.BytesIO(zf.read(name))).convert("L")
            im.thumbnail((512, 512), Image.Resampling.BILINEAR)
            mask = np.asarray(im) > 127
            n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
            areas = sorted(stats[1:, cv2.CC_STAT_AREA], reverse=True)
            if mask.mean() < 0.05 or len(areas) < 2 or areas[1] < 0.2 * mask.sum():
                continue  # empty, or only one lung drawn
            stem = Path(name).name
            masks.append(LungMask(id=stem, group=mask_group(stem), mask=mask))
            if limit is not None and len(masks) >= limit:
                break
    return masks


def load_rg1() -> tuple[FloatImage, BoolImage, str]:
    """pydicom-data's chest radiograph (displayed: bone bright), its traced lungs, its file."""
    from xai_platform.preprocessing.image import load_image, real_radiograph_path

    path = real_radiograph_path()
    if path is None:
        raise SystemExit("pydicom-data's RG1 radiograph is missing: pip install pydicom-data")
    pixels = load_image(path).pixels
    lo, hi = np.percentile(pixels, [1.0, 99.5])
    pixels = np.clip((pixels - lo) / (hi - lo), 0, 1).astype(np.float32)
    h, w = pixels.shape
    scale = 768 / w  # enough for a 256-px crop; keeps augmentation fast
    small = cv2.resize(pixels, (768, round(h * scale)), interpolation=cv2.INTER_AREA)
    lungs = np.zeros(small.shape, np.uint8)
    for polygon in RG1_LUNGS:
        pts = np.array([[x / 100 * small.shape[1], y / 100 * small.shape[0]] for x, y in polygon])
        cv2.fillPoly(lungs, [np.round(pts).astype(np.int32)], 1)
    return small, lungs.astype(bool), path.stem


# --------------------------------------------------------------------------------------------
# Rendering


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
    bx0, bx1, by0, by1 = x0 - left, x1 + right, y0 - top, y1 + bottom
    side = max(bx1 - bx0, by1 - by0)
    cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
    m = np.array([[size / side, 0, size / 2 - cx * size / side],
                  [0, size / side, size / 2 - cy * size / side]], np.float32)
    out = cv2.warpAffine(_smooth(mask, 0.5 * side / size), m, (size, size),
                         flags=cv2.INTER_LINEAR, borderValue=0)
    return out > 0.5


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


def render_chest(lung: BoolImage, rng: np.random.Generator) -> FloatImage:
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
    body = _sigmoid((width - np.abs(xx - xm)) / 0.01)
    thickness = np.sqrt(np.clip(1 - ((xx - xm) / width) ** 2, 0, 1))
    tissue = rng.uniform(0.5, 0.65) * (0.8 + 0.2 * thickness)
    # Mediastinum and heart, and the abdomen under each lung's base.
    tissue += rng.uniform(0.06, 0.1) * np.exp(-((np.abs(xx - xm) / (half * rng.uniform(0.22, 0.3)))
                                              ** 4))
    rows = np.arange(size)[:, None]
    base_row = np.where(lung.any(axis=0), (lung * rows).max(axis=0), y1 * size).astype(np.float32)
    base_row = _smooth(base_row[None], 3)[0] / size
    abdomen = _sigmoid((yy - base_row[None] - 0.01) / 0.012)
    hx, hy = xm + half * rng.uniform(0.05, 0.15), y0 + tall * rng.uniform(0.62, 0.7)
    heart = ((xx - hx) / (half * rng.uniform(0.42, 0.55))) ** 2 + ((yy - hy) / (tall * 0.18)) ** 2
    tissue += rng.uniform(0.05, 0.1) * _sigmoid((1 - heart) / 0.08) * (1 - abdomen)
    tissue += rng.uniform(0.1, 0.18) * abdomen
    trachea = np.exp(-((np.abs(xx - xm) / 0.018) ** 4)) * _sigmoid((y0 + 0.2 * tall - yy) / 0.03)
    tissue -= rng.uniform(0.04, 0.08) * trachea
    img = air + (tissue - air) * body
    if rng.random() < 0.4:  # breast shadows
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


# --------------------------------------------------------------------------------------------
# The benchmark


def assign_splits(masks: list[LungMask], rng: np.random.Generator) -> dict[str, list[LungMask]]:
    """Whole groups to train / val / test, about 70 / 15 / 15 of the masks."""
    groups: dict[str, list[LungMask]] = {}
    for m in masks:
        groups.setdefault(m.group, []).append(m)
    order = [groups[g] for g in rng.permutation(sorted(groups))]
    out: dict[str, list[LungMask]] = {s: [] for s in SPLIT_FRACTIONS}
    total = len(masks)
    for members in order:  # fill the split furthest below its share
        split = min(SPLIT_FRACTIONS, key=lambda s: len(out[s]) / total - SPLIT_FRACTIONS[s])
        out[split].extend(members)
    return out


def _save_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = img if img.dtype == np.uint8 else np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(data).save(path, optimize=False, compress_level=6)


def generate(out: Path, *, n: int = 4000, size: int = 256, seed: int = 0,
             contrast: tuple[float, float] = CONTRAST,
             real_split: str = "real", real_fraction: float = 0.1,
             masks: list[LungMask] | None = None, quiet: bool = False) -> Path:
    """Write the benchmark under ``out``; returns the path of ``metadata.csv``."""
    t0 = time.time()
    rng = np.random.default_rng(seed)
    masks = masks if masks is not None else load_lung_masks()
    split_masks = assign_splits(masks, rng)
    rg1, rg1_lungs, rg1_id = load_rg1()
    pairs = max(n // 2, 1)
    real_pairs = int(round(pairs * real_fraction))
    n_masks = sum(len(v) for v in split_masks.values())
    plan = {s: (int(round((pairs - real_pairs) * len(split_masks[s]) / n_masks))
                if s in split_masks else 0, real_pairs if s == real_split else 0) for s in SPLITS}
    rows: list[dict[str, object]] = []
    total_pairs, done = sum(a + b for a, b in plan.values()), 0
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        synthetic, real = plan[split]
        for j, source in enumerate(_sources(synthetic, real, split_masks.get(split, []), rng)):
            pair_rng = np.random.default_rng(rng.integers(2 ** 63))
            if source is None:
                base, lung = rg1_view(rg1, rg1_lungs, size, pair_rng)
                bg_source, bg_id, mask_id = "rg1", rg1_id, f"{rg1_id}-traced"
            else:
                lung = frame_mask(source.mask, size, pair_rng)
                base = render_chest(lung, pair_rng)
                bg_source, bg_id, mask_id = "synthetic", source.id, source.id
            pair = f"{split}-{j:05d}"
            lung_path = Path("lung_masks") / split / f"{pair}.png"
            _save_png(out / lung_path, lung.astype(np.uint8) * 255)
            lesioned, lesion_mask, lesion = insert_lesion(base, lung, pair_rng,
                                                          contrast_range=contrast)
            for label, img in (("normal", base), ("lesion", lesioned)):
                image_id = f"{pair}-{label}"
                path = Path("images") / split / f"{image_id}.png"
                _save_png(out / path, finish(img, pair_rng))
                row: dict[str, object] = {
                    "id": image_id, "path": path.as_posix(), "label": label, "split": split,
                    "pair": pair, "background_source": bg_source, "background_id": bg_id,
                    "lung_mask_id": mask_id, "lung_mask_path": lung_path.as_posix(),
                    "lesion_mask_path": "", **{f"lesion_{k}": "" for k in
                                               ("type", "edge", "diameter_px", "diameter_frac",
                                                "contrast", "x", "y", "area_px")}}
                if label == "lesion":
                    mask_path = Path("lesion_masks") / split / f"{image_id}.png"
                    _save_png(out / mask_path, lesion_mask.astype(np.uint8) * 255)
                    row["lesion_mask_path"] = mask_path.as_posix()
                    row.update({f"lesion_{k}": v for k, v in asdict(lesion).items()})
                rows.append(row)
            done += 1
            if not quiet and (done % 25 == 0 or done == total_pairs):
                sys.stderr.write(f"\r  {done}/{total_pairs} pairs ({split}) "
                                 f"[{time.time() - t0:.0f} s]   ")
                sys.stderr.flush()
    if not quiet:
        sys.stderr.write("\n")
    meta = out / "metadata.csv"
    with open(meta, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METADATA_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "command": "python -m training.xray_benchmark " + " ".join(
            [f"--out {out}", f"--n {n}", f"--size {size}", f"--seed {seed}",
             f"--real-split {real_split}", f"--real-fraction {real_fraction}"]
            + ([f"--contrast {contrast[0]:g} {contrast[1]:g}"] if tuple(contrast) != CONTRAST
               else [])),
        "seed": seed, "size": size, "n_images": len(rows),
        "images": {s: sum(1 for r in rows if r["split"] == s) for s in SPLITS},
        "lung_masks": {s: len(v) for s, v in split_masks.items()},
        "lung_mask_groups": {s: len({m.group for m in v}) for s, v in split_masks.items()},
        "real_background": {"file": rg1_id, "split": real_split},
        "lesion_types": {k: list(v) for k, v in LESION_TYPES.items()},
        "contrast": list(contrast), "edges": list(EDGES),
        "split_masks": {s: sorted(m.id for m in v) for s, v in split_masks.items()},
        "seconds": round(time.time() - t0, 1),
    }
    (out / "benchmark.json").write_text(json.dumps(summary, indent=1) + "\n")
    return meta


def _sources(synthetic: int, real: int, pool: list[LungMask], rng: np.random.Generator
             ) -> Iterator[LungMask | None]:
    """Backgrounds for one split: each mask in turn (reshuffled every round), then the real
    radiograph (None) ``real`` times."""
    for i in range(synthetic):
        if i % len(pool) == 0:
            order = rng.permutation(len(pool))
        yield pool[order[i % len(pool)]]
    for _ in range(real):
        yield None


def export_examples(root: Path, out: Path) -> list[Path]:
    """Copy a few test and real-split pairs (normal + lesion, with the lesion masks) and the
    real radiograph as a de-identified DICOM into ``out`` (the app's examples)."""
    with open(root / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    positives = {r["pair"]: r for r in rows if r["label"] == "lesion"}

    def pick(split: str, kind: str) -> dict[str, str]:
        found = [r for r in positives.values() if r["split"] == split and r["lesion_type"] == kind
                 and float(r["lesion_contrast"]) >= 0.2  # clearly visible, whole in the lung
                 and int(r["lesion_area_px"]) >= 0.7 * math.pi * float(r["lesion_diameter_px"]) ** 2 / 4]
        return sorted(found, key=lambda r: r["id"])[0]

    chosen = [pick("test", "nodule"), pick("test", "mass"), pick("real", "mass")]
    out.mkdir(parents=True, exist_ok=True)
    written, table = [], []
    for r in chosen:
        normal = next(x for x in rows if x["pair"] == r["pair"] and x["label"] == "normal")
        stem = f"{r['background_source']}-{r['lesion_type']}"
        for row, name in ((r, f"{stem}-lesion.png"), (normal, f"{stem}-normal.png")):
            (out / name).write_bytes((root / row["path"]).read_bytes())
            written.append(out / name)
        mask_name = f"{stem}-lesion.mask.png"
        (out / mask_name).write_bytes((root / r["lesion_mask_path"]).read_bytes())
        written.append(out / mask_name)
        for row, name in ((r, f"{stem}-lesion.png"), (normal, f"{stem}-normal.png")):
            table.append({"file": name, "label": row["label"], "source": row["id"],
                          "background": row["background_source"],
                          "lesion_mask": mask_name if row["label"] == "lesion" else "",
                          "lesion_type": row["lesion_type"], "lesion_edge": row["lesion_edge"],
                          "lesion_diameter_px": row["lesion_diameter_px"],
                          "lesion_contrast": row["lesion_contrast"]})
    with open(out / "examples.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    written += [out / "examples.csv", export_radiograph(out / "rg1-chest-pa.dcm")]
    return written


def export_radiograph(path: Path) -> Path:
    """pydicom-data's RG1 (JPEG 2000, 1955 x 1841, 15-bit MONOCHROME1, ~0.7 MB) with the
    identifying tags removed or replaced and new UIDs; the pixel data is copied unchanged."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(get_testdata_file("RG1_J2KI.dcm", download=False))
    for keyword in ("PatientBirthDate", "OtherPatientIDs", "InstitutionName",
                    "InstitutionalDepartmentName", "ReferringPhysicianName", "StationName",
                    "DeviceSerialNumber", "AccessionNumber", "SourceImageSequence",
                    "InstanceCreatorUID", "StudyID"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.remove_private_tags()
    ds.PatientName, ds.PatientID = "Anonymous^RG1", "RG1-EXAMPLE"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "xai_platform example: identifying tags removed, UIDs replaced"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["xai_platform", "rg1", "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["xai_platform", "rg1", "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["xai_platform", "rg1", "instance"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.xray_benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/xray_benchmark"))
    parser.add_argument("--n", type=int, default=4000, help="images in all (half with a lesion)")
    parser.add_argument("--size", type=int, default=256, help="side of the stored PNGs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-split", choices=SPLITS, default="real",
                        help="where the real radiograph's images go (default: their own split)")
    parser.add_argument("--real-fraction", type=float, default=0.1,
                        help="share of the images drawn on the real radiograph")
    parser.add_argument("--contrast", type=float, nargs=2, default=CONTRAST, metavar=("LO", "HI"),
                        help=f"range of the lesions' peak contrast (default {CONTRAST[0]:g} "
                             f"{CONTRAST[1]:g}); higher makes an easier set, e.g. for a warm-up")
    parser.add_argument("--export-examples", type=Path, default=None, metavar="DIR",
                        help="copy a few pairs of the benchmark at --out and the real "
                             "radiograph (DICOM) into DIR, then stop")
    args = parser.parse_args(argv)
    if args.export_examples is not None:
        for path in export_examples(args.out, args.export_examples):
            print(f"wrote {path}")
        return 0
    if args.n < 8 or args.size < 64:
        parser.error("use --n >= 8 and --size >= 64")
    meta = generate(args.out, n=args.n, size=args.size, seed=args.seed,
                    contrast=tuple(args.contrast),
                    real_split=args.real_split, real_fraction=args.real_fraction)
    print(f"wrote {meta}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
