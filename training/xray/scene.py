"""Benchmark v2: who is imaged and how. A patient (age group, build, rotation, lines and
devices) is drawn once per pair; an acquisition (dose, detector saturation, blur, gamma,
contrast, brightness, noise, anti-scatter grid lines, collimation, burned-in markers) once per
image. Images: (size, size) float32 in [0, 1], bone bright.

Every setting is returned as a plain dict, so the benchmark can record it per image."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from .render import BoolImage, FloatImage, Habitus, _midline, _smooth, square_crop

# The ranges drawn from (benchmark.json records them).
AGE_GROUPS = {"adult": 0.75, "child": 0.25}
DEVICE_PROBABILITIES = {"ecg_leads": 0.35, "central_line": 0.2, "endotracheal_tube": 0.15,
                        "nasogastric_tube": 0.15, "sternal_wires": 0.08, "pacemaker": 0.06}
RANGES: dict[str, Any] = {
    "tilt_deg": (-10.0, 10.0),
    "axial_rotation": (-1.0, 1.0),  # -1 / 1: the patient turned about 15 degrees either way
    "adult_width": (0.9, 1.35), "adult_tissue": (0.0, 0.12),
    "child_width": (0.9, 1.1), "child_heart": (1.1, 1.3), "child_rib_slope": (0.25, 0.6),
    "child_thymus": (0.0, 0.08),
    "dose": (0.35, 3.0),  # relative to a nominal exposure, log-uniform
    "saturation": (0.65, 1.0),  # detector clipping level (transmitted fraction); 1 = none
    "blur_px": (0.3, 1.4), "gamma": (0.65, 1.5), "contrast": (0.7, 1.3),
    "brightness": (-0.1, 0.1), "noise": (0.0, 0.02),
    "grid_lines": 0.15, "collimation": {"none": 0.45, "dark": 0.35, "bright": 0.2},
    "collimation_margin": (0.0, 0.16), "side_marker": 0.7, "text": 0.5,
}
TEXTS = ("PORTABLE", "AP", "PA", "SUPINE", "ERECT", "SEMI-ERECT", "ICU", "MOBILE", "AP SITTING",
         "INSP", "12:45", "2026-03-14", "BED 4", "WARD 7")
PHOTONS = 2000.0  # photons per pixel at dose 1 where nothing attenuates (quantum noise)
MU = 3.0  # attenuation per unit of image intensity: transmitted = exp(-MU * I)


# --------------------------------------------------------------------------------------------
# The patient (per pair)


@dataclass(frozen=True)
class Patient:
    age_group: str
    habitus: Habitus
    tilt_deg: float
    axial_rotation: float
    devices: tuple[str, ...] = field(default=())

    def settings(self) -> dict[str, Any]:
        return {"age_group": self.age_group, **{f"habitus_{k}": v for k, v in
                                                 asdict(self.habitus).items()},
                "tilt_deg": self.tilt_deg, "axial_rotation": self.axial_rotation,
                "devices": list(self.devices)}


def draw_patient(rng: np.random.Generator) -> Patient:
    """Age group, build, rotation and the lines and devices present."""
    r = RANGES
    age = str(rng.choice(list(AGE_GROUPS), p=list(AGE_GROUPS.values())))
    if age == "child":
        habitus = Habitus(width=_u(rng, r["child_width"]), tissue=0.0,
                          heart=_u(rng, r["child_heart"]), rib_slope=_u(rng, r["child_rib_slope"]),
                          thymus=_u(rng, r["child_thymus"]) if rng.random() < 0.5 else 0.0,
                          breasts=False)
    else:
        habitus = Habitus(width=_u(rng, r["adult_width"]), tissue=_u(rng, r["adult_tissue"]),
                          heart=_u(rng, (0.9, 1.15)), rib_slope=_u(rng, (0.85, 1.15)))
    devices = tuple(name for name, p in DEVICE_PROBABILITIES.items() if rng.random() < p)
    return Patient(age, habitus, tilt_deg=_u(rng, r["tilt_deg"]),
                   axial_rotation=_u(rng, r["axial_rotation"]), devices=devices)


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return round(float(rng.uniform(*lo_hi)), 4)


def frame_lungs(mask: BoolImage, size: int, rng: np.random.Generator, age_group: str
                ) -> tuple[BoolImage, dict[str, float]]:
    """Crop a lung mask with random margins, square, resized to (size, size). A child's thorax
    fills less of the field (more neck and abdomen, arms' width), as in paediatric films."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    w, h = x1 - x0, y1 - y0
    if age_group == "child":
        lr, top, bottom = (0.15, 0.4), (0.15, 0.4), (0.3, 0.6)
    else:
        lr, top, bottom = (0.06, 0.25), (0.05, 0.2), (0.1, 0.35)
    left, right = w * rng.uniform(*lr), w * rng.uniform(*lr)
    t, b = h * rng.uniform(*top), h * rng.uniform(*bottom)
    out, side = square_crop(mask, (x0 - left, x1 + right, y0 - t, y1 + b), size)
    return out, {"lung_width_frac": round(float(w * size / side / size), 4)}


def pose(img: FloatImage, lung: BoolImage, patient: Patient) -> tuple[FloatImage, BoolImage]:
    """Axial rotation (one side of the chest stretched, the other compressed, about the
    midline) and in-plane tilt, applied to the image and its lungs alike."""
    size = img.shape[0]
    xm = _midline(lung) * size
    # Output pixel -> undo the tilt about the midline -> undo the axial stretch: a smooth,
    # monotonic remap of the columns that moves the midline by up to 6 % of the width and
    # widens one hemithorax at the other's expense.
    rot = cv2.invertAffineTransform(cv2.getRotationMatrix2D((xm, size / 2),
                                                            patient.tilt_deg, 1.0))
    gy, gx = np.mgrid[0:size, 0:size].astype(np.float32)
    rx = rot[0, 0] * gx + rot[0, 1] * gy + rot[0, 2]
    ry = rot[1, 0] * gx + rot[1, 1] * gy + rot[1, 2]
    shift = 0.06 * size * patient.axial_rotation
    sx = (rx - shift * np.sin(np.pi * np.clip(rx / size, 0, 1))).astype(np.float32)
    sy = ry.astype(np.float32)
    out = cv2.remap(img, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lungs = cv2.remap(lung.astype(np.float32), sx, sy, cv2.INTER_LINEAR, borderValue=0) > 0.5
    return out.astype(np.float32), lungs


# --------------------------------------------------------------------------------------------
# Lines and devices (per pair: part of the patient, so both images of a pair have them)


def _curve(points: list[tuple[float, float]], n: int = 40) -> np.ndarray:
    """A Catmull-Rom-like smooth curve through ``points``, (n, 2) float."""
    p = np.asarray(points, np.float64)
    t = np.linspace(0, 1, len(p))
    u = np.linspace(0, 1, n)
    x = np.interp(u, t, p[:, 0])
    y = np.interp(u, t, p[:, 1])
    k = max(1, n // (2 * len(p)))
    kernel = np.ones(k) / k
    if k > 1:
        x = np.convolve(np.pad(x, k, mode="edge"), kernel, mode="same")[k:-k]
        y = np.convolve(np.pad(y, k, mode="edge"), kernel, mode="same")[k:-k]
    return np.stack([x, y], axis=1)


def _polyline(canvas: np.ndarray, pts: np.ndarray, value: float, width: float) -> None:
    q = np.round(pts * 4).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [q], False, float(value), max(1, round(width)),
                  lineType=cv2.LINE_AA, shift=2)


def draw_devices(lung: BoolImage, devices: tuple[str, ...], rng: np.random.Generator
                 ) -> FloatImage:
    """An attenuation map (size, size) float32 >= 0 of the lines and devices: ECG electrodes
    (a ring and a snap) with their leads running off the image, a central venous line from
    under the clavicle to the superior vena cava, an endotracheal tube (two walls and a
    radio-opaque stripe) ending above the carina, a nasogastric tube down into the stomach,
    sternotomy wire loops, a pacemaker with its lead into the heart."""
    size = lung.shape[0]
    s = size / 256
    out = np.zeros((size, size), np.float32)
    ys, xs = np.nonzero(lung)
    y0, y1 = ys.min(), ys.max()
    xm = _midline(lung) * size
    x_lo, x_hi = xs.min(), xs.max()
    tall = y1 - y0
    carina = y0 + 0.35 * tall
    for name in devices:
        if name == "ecg_leads":
            for _ in range(rng.integers(3, 6)):
                cx = rng.uniform(x_lo - 0.05 * size, x_hi + 0.05 * size)
                cy = rng.uniform(y0 - 0.05 * size, y1 + 0.05 * size)
                r = rng.uniform(4.0, 6.5) * s
                cv2.circle(out, (round(cx * 4), round(cy * 4)), round(r * 4), 0.3,
                           max(1, round(1.2 * s)), lineType=cv2.LINE_AA, shift=2)
                cv2.circle(out, (round(cx * 4), round(cy * 4)), round(r * 0.35 * 4), 1.2, -1,
                           lineType=cv2.LINE_AA, shift=2)
                edge = rng.choice(["top", "left", "right", "bottom"])
                ex = {"left": -5.0, "right": size + 5.0}.get(edge, rng.uniform(0, size))
                ey = {"top": -5.0, "bottom": size + 5.0}.get(edge, rng.uniform(0, size))
                mid = ((cx + ex) / 2 + rng.normal(0, 0.1 * size),
                       (cy + ey) / 2 + rng.normal(0, 0.1 * size))
                _polyline(out, _curve([(cx, cy), mid, (ex, ey)]), rng.uniform(0.12, 0.25),
                          rng.uniform(0.7, 1.2) * s)
        elif name == "central_line":
            side = -1  # the patient's right (the image's left), the usual approach
            start = (xm + side * rng.uniform(0.5, 0.9) * (xm - x_lo),
                     y0 - rng.uniform(0, 0.05) * size)
            bend = (xm + side * 0.25 * (xm - x_lo), y0 + 0.05 * tall)
            tip = (xm + side * rng.uniform(0.04, 0.1) * size,
                   carina + rng.uniform(-0.02, 0.08) * size)
            entry = (start[0] + side * 0.1 * size, -5.0)
            _polyline(out, _curve([entry, start, bend, tip]), rng.uniform(0.3, 0.5), 1.3 * s)
        elif name == "endotracheal_tube":
            tip = carina - rng.uniform(0.03, 0.08) * size
            x = xm + rng.normal(0, 0.01 * size)
            pts = _curve([(x + rng.normal(0, 2 * s), -5.0), (x, tip * 0.5), (x, tip)], 20)
            for dx in (-3.0 * s, 3.0 * s):
                _polyline(out, pts + [dx, 0], 0.15, 0.9 * s)
            _polyline(out, pts + [1.5 * s, 0], 0.5, 1.0 * s)
        elif name == "nasogastric_tube":
            x = xm + rng.normal(0, 0.01 * size)
            stomach = (xm + rng.uniform(0.15, 0.3) * size,
                       min(size - 3.0, y1 + rng.uniform(0.0, 0.08) * size))
            pts = _curve([(x, -5.0), (x + 0.01 * size, carina), (x + 0.03 * size, y1 - 0.05 * size),
                          stomach, (stomach[0] - 0.06 * size, stomach[1] + 0.03 * size)])
            _polyline(out, pts, rng.uniform(0.3, 0.5), 1.4 * s)
        elif name == "sternal_wires":
            for k in range(rng.integers(4, 7)):
                cy = y0 + (0.15 + 0.12 * k) * tall
                axes = (round(3.5 * s * 4), round(2.2 * s * 4))
                cv2.ellipse(out, (round((xm + rng.normal(0, 1.5 * s)) * 4), round(cy * 4)), axes,
                            float(rng.uniform(-20, 20)), 0, 360, 1.3,
                            max(1, round(1.3 * s)), lineType=cv2.LINE_AA, shift=2)
        elif name == "pacemaker":
            gx = xm + rng.uniform(0.6, 0.9) * (x_hi - xm)
            gy = y0 + rng.uniform(-0.02, 0.1) * tall
            w, h = rng.uniform(16, 22) * s, rng.uniform(12, 16) * s
            box = cv2.boxPoints(((gx, gy), (w, h), float(rng.uniform(-25, 25))))
            cv2.fillConvexPoly(out, np.round(box * 4).astype(np.int32), 1.5, cv2.LINE_AA, 2)
            heart = (xm + 0.1 * size, y0 + 0.7 * tall)
            _polyline(out, _curve([(gx, gy), (xm + 0.05 * size, y0 + 0.1 * tall),
                                   (xm, y0 + 0.45 * tall), heart]), 0.7, 1.5 * s)
    return out


def apply_devices(img: FloatImage, devices: FloatImage) -> FloatImage:
    """Devices attenuate like the lesions do: I' = 1 - (1 - I) exp(-3 d)."""
    if not devices.any():
        return img
    return np.clip(1 - (1 - img) * np.exp(-3.0 * devices), 0, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The acquisition (per image)


def draw_acquisition(rng: np.random.Generator, lung: BoolImage) -> dict[str, Any]:
    """The settings of one exposure and its display (see :data:`RANGES`)."""
    r = RANGES
    size = lung.shape[0]
    kind = str(rng.choice(list(r["collimation"]), p=list(r["collimation"].values())))
    margins = [0.0, 0.0, 0.0, 0.0]
    if kind != "none":  # left, top, right, bottom: never into the lungs (the lesion is there)
        ys, xs = np.nonzero(lung)
        room = [xs.min() / size, ys.min() / size, 1 - (xs.max() + 1) / size,
                1 - (ys.max() + 1) / size]
        margins = [round(float(rng.uniform(0, max(0.0, min(r["collimation_margin"][1],
                                                           free - 3 / size)))), 4)
                   for free in room]
    markers = []
    if rng.random() < r["side_marker"]:
        markers.append(str(rng.choice(["L", "R"])))
    if rng.random() < r["text"]:
        markers.append(str(rng.choice(TEXTS)))
    return {
        "dose": round(float(math.exp(rng.uniform(*np.log(r["dose"])))), 4),
        "saturation": _u(rng, r["saturation"]) if rng.random() < 0.25 else 1.0,
        "blur_px": _u(rng, r["blur_px"]), "gamma": _u(rng, r["gamma"]),
        "contrast": _u(rng, r["contrast"]), "brightness": _u(rng, r["brightness"]),
        "noise": _u(rng, r["noise"]), "grid_lines": bool(rng.random() < r["grid_lines"]),
        "collimation": kind, "collimation_margins": margins,
        "collimation_angle": _u(rng, (-2.0, 2.0)) if kind != "none" else 0.0,
        "markers": markers,
    }


def acquire(img: FloatImage, lung: BoolImage, settings: dict[str, Any],
            rng: np.random.Generator, *, devices: FloatImage | None = None
            ) -> tuple[FloatImage, list[str]]:
    """Expose and display ``img``: quantum noise at the dose (Poisson counts of the transmitted
    fraction exp(-MU I)), detector saturation, blur, grid lines, then the display's gamma,
    contrast and brightness, electronic noise, collimation and burned-in markers. Returns the
    image and the markers drawn (one is left out where no corner has room). ``devices``: the
    attenuation map of :func:`draw_devices`, applied first and left out of the window."""
    size = img.shape[0]
    img = img if devices is None else apply_devices(img, devices)
    transmitted = np.exp(-MU * np.clip(img, 0, 1))
    photons = PHOTONS * settings["dose"] * (size / 256) ** -2  # the same per unit of area
    counts = rng.poisson(transmitted * photons).astype(np.float32)
    measured = np.clip(counts / photons, 1e-4, settings["saturation"])
    if settings["grid_lines"]:
        period = rng.uniform(2.0, 4.0) * size / 256
        measured = measured * (1 - rng.uniform(0.02, 0.05)
                               * (0.5 + 0.5 * np.cos(2 * np.pi * np.arange(size) / period)))[None]
    # Display: log (attenuation), windowed to the image's own percentiles as a processing
    # station does, so a low dose shows as noise and a saturated detector as burned-out lungs.
    att = -np.log(measured) / MU
    anatomy = att if devices is None else att[devices < 0.02]
    lo, hi = np.percentile(anatomy, [0.5, 99.8])
    out = np.clip((att - lo) / max(hi - lo, 1e-3), 0, 1)
    out = _smooth(out, settings["blur_px"])
    out = np.clip(out, 0, 1) ** settings["gamma"]
    out = (out - 0.5) * settings["contrast"] + 0.5 + settings["brightness"]
    out = out + rng.normal(0, settings["noise"], out.shape)
    out = np.clip(out, 0, 1).astype(np.float32)
    if settings["collimation"] != "none":
        out = _collimate(out, settings, rng)
    taken = cv2.dilate(lung.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    drawn = [text for text in settings["markers"]
             if _burn_in(out, taken, text, big=len(text) == 1, rng=rng)]
    return out, drawn


def _collimate(img: FloatImage, settings: dict[str, Any], rng: np.random.Generator) -> FloatImage:
    size = img.shape[0]
    l, t, r, b = (m * size for m in settings["collimation_margins"])
    field_mask = np.zeros((size, size), np.float32)
    rect = ((l + (size - r)) / 2, (t + (size - b)) / 2), (size - l - r, size - t - b), \
        settings["collimation_angle"]
    cv2.fillConvexPoly(field_mask, np.round(cv2.boxPoints(rect) * 4).astype(np.int32), 1.0,
                       cv2.LINE_AA, 2)
    field_mask = _smooth(field_mask, 0.8)
    if settings["collimation"] == "dark":  # an electronic shutter: black
        outside = rng.uniform(0.0, 0.04)
    else:  # unexposed detector: bright, with a little scatter
        outside = rng.uniform(0.85, 0.97)
    return (img * field_mask + outside * (1 - field_mask)).astype(np.float32)


def _burn_in(img: FloatImage, taken: BoolImage, text: str, *, big: bool,
             rng: np.random.Generator) -> bool:
    """Draw a side marker (one letter, large, sometimes boxed) or a line of text near a corner
    where it covers nothing ``taken`` (the lungs, other markers; updated); skipped where no
    corner has room."""
    size = img.shape[0]
    scale = (rng.uniform(0.7, 1.1) if big else rng.uniform(0.3, 0.45)) * size / 256
    thick = max(1, round((3 if big else 1) * size / 256))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    m = max(2, round(0.02 * size))
    corners = [(m, m + th), (size - m - tw, m + th), (m, size - m - base),
               (size - m - tw, size - m - base)]
    for k in rng.permutation(4):
        x, y = corners[k]
        x, y = int(x), int(y)
        if x < 0 or y - th < 0 or x + tw > size or y + base > size:
            continue
        box = (slice(max(0, y - th - 3), y + base + 3), slice(max(0, x - 3), x + tw + 3))
        if taken[box].any():
            continue
        taken[box] = True
        value = 1.0 if rng.random() < 0.8 else 0.0
        if big and rng.random() < 0.4:  # a boxed marker, like a lead letter in its holder
            cv2.rectangle(img, (x - 3, y - th - 3), (x + tw + 3, y + base + 1), 1.0 - value, -1)
        ink = np.zeros(img.shape, np.uint8)  # OpenCV draws text on 8-bit images only
        cv2.putText(ink, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
        alpha = ink.astype(np.float32) / 255
        img[:] = img * (1 - alpha) + value * alpha
        return True
    return False
