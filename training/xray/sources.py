"""Where the benchmark's backgrounds come from: TorchXRayVision's lung masks (grouped by
patient or paper, so that a group stays in one split) and pydicom-data's real radiograph with
its lungs traced by hand."""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .render import BoolImage, FloatImage

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


