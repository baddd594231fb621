"""Chest X-rays: normal or abnormal, which finding? One grayscale plane per image.

Input spec: :class:`ImageInput`. PNG, JPEG, BMP, TIFF and DICOM decode to a grayscale plane in
[0, 1] (:mod:`xai_platform.preprocessing.image`), center-cropped and resized to the model's size.
The masked value (a blurred copy), the features (SLIC superpixels) and the figure (grayscale)
are the image defaults of :class:`~xai_platform.modalities.base.Modality`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, InputError
from ..validation import check_choice, check_positive, parse_fields
from .base import Modality, PreparedInput, register_modality

if TYPE_CHECKING:
    from ..config import AppSettings, ModelSpec

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
NORMALIZATIONS = ("imagenet", "xrv", "unit", "minus1_1", "centered")
INTERPOLATIONS = ("auto", "area", "nearest", "bilinear")
CHANNEL_ORDERS = ("rgb", "bgr")


@dataclass(frozen=True)
class ImageInput:
    """Input of an image (X-ray) model: a (size, size) grayscale plane in [0, 1].

    ``channels`` is what the network's first layer takes; the grayscale plane is repeated to
    fill them, and ``normalize`` maps [0, 1] to the range the network was trained on. A model
    trained with other preprocessing declares it instead of ``normalize``: ``range`` [lo, hi]
    (the plane's [0, 1] scaled to it, e.g. [0, 255]), then per-channel ``mean`` and ``std``
    (network input = (value - mean) / std), listed in RGB order; ``channel_order: bgr`` for a
    network that takes BGR (the lists are reversed). ``interpolation`` resizes the image to
    ``size`` (``auto``: area when shrinking, bilinear when enlarging).
    """

    size: tuple[int, int] = (224, 224)
    channels: int = 1
    normalize: str = "unit"
    range: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str = "rgb"
    interpolation: str = "auto"

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the feature plane the model sees."""
        return self.size


_TYPES: dict[str, Any] = {"size": (int, list), "channels": int, "normalize": str,
                          "range": list, "mean": list, "std": list, "channel_order": str,
                          "interpolation": str}


def _numbers(values: list, *, source: str, key: str, lengths: tuple[int, ...]) -> tuple[float, ...]:
    if len(values) not in lengths or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        want = " or ".join(str(n) for n in sorted(set(lengths)))
        raise ConfigError(f"expected a list of {want} numbers, got {values!r}.", source=source,
                          key=key, fix="write e.g. [0.485, 0.456, 0.406] (one per channel).")
    return tuple(float(v) for v in values)


def parse_image_input(raw: Mapping[str, Any], *, source: str,
                      normalizations: tuple[str, ...] = NORMALIZATIONS) -> ImageInput:
    """An ``input:`` mapping of an image model (any image-like modality may use it)."""
    values = parse_fields(raw, _TYPES, source=source, prefix="input.")
    size = values.get("size", 224)
    if isinstance(size, int):
        size = (size, size)
    elif len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        raise ConfigError(f"expected an integer or [height, width], got {size!r}.", source=source,
                          key="input.size", fix="write e.g. 224 or [224, 224].")
    for s in size:
        check_positive(s, source=source, key="input.size", minimum=8, strict=False)
    values["size"] = tuple(size)
    channels = values.get("channels", 1)
    if channels not in (1, 3):
        raise ConfigError("channels must be 1 or 3.", source=source, key="input.channels",
                          fix="use 1 (grayscale stem) or 3 (the plane is repeated).")
    for key in ("mean", "std"):
        if key in values:
            values[key] = _numbers(values[key], source=source, key=f"input.{key}",
                                   lengths=(1, channels))
    if "std" in values and min(values["std"]) <= 0:
        raise ConfigError(f"must be positive, got {list(values['std'])}.", source=source,
                          key="input.std", fix="write the training data's standard deviations.")
    if "range" in values:
        values["range"] = _numbers(values["range"], source=source, key="input.range", lengths=(2,))
        if values["range"][0] >= values["range"][1]:
            raise ConfigError(f"[lo, hi] needs lo < hi, got {list(values['range'])}.",
                              source=source, key="input.range", fix="write e.g. [0, 255].")
    spec = ImageInput(**values)
    check_choice(spec.normalize, normalizations, source=source, key="input.normalize")
    check_choice(spec.channel_order, CHANNEL_ORDERS, source=source, key="input.channel_order")
    check_choice(spec.interpolation, INTERPOLATIONS, source=source, key="input.interpolation")
    explicit = [k for k in ("range", "mean", "std") if k in values]
    if explicit and spec.normalize != "unit":
        raise ConfigError(f"declares both normalize: {spec.normalize} and {explicit[0]}.",
                          source=source, key="input.normalize",
                          fix="declare either a normalize preset or range / mean / std.")
    return spec


@register_modality
class XRay(Modality):
    name = "xray"
    label = "Chest X-ray"
    extensions = EXTENSIONS
    input_kind = "image"
    examples = "xray"
    benchmark = ("xray_benchmark", "python -m training.xray_benchmark --out data/xray_benchmark")
    focus_region = "lungs"

    def parse_input(self, raw: Mapping[str, Any], *, source: str) -> ImageInput:
        return parse_image_input(raw, source=source)

    def prepare(self, source, spec: ModelSpec, *, settings: AppSettings,
                name: str) -> PreparedInput:
        if isinstance(source, tuple):
            raise InputError("An X-ray model needs an image file (PNG, JPEG or DICOM), not audio.")
        from ..preprocessing import image

        loaded = image.load_image(source, max_pixels=settings.max_image_pixels, name=name)
        notes, data = list(loaded.notes), {"original": loaded.pixels}
        if settings.check_inputs:  # refuse what is not a frontal chest radiograph
            from ..anatomy import check_chest_radiograph

            found = check_chest_radiograph(name, loaded.pixels, loaded.tags, chroma=loaded.chroma)
            notes += found.notes
            if found.lungs is not None:  # the lung fields on the model's plane
                data["lungs"] = image.to_model_plane(found.lungs.astype(np.float32),
                                                     spec.input.size) > 0.5
        plane = image.to_model_plane(loaded.pixels, spec.input.size,
                                     interpolation=spec.input.interpolation)
        return PreparedInput(name, self.name, plane[None].astype(np.float32), notes=tuple(notes),
                             data=data)

    def focus(self, prepared: PreparedInput, heatmap: np.ndarray, *, signed: bool,
              window: int = 0) -> tuple[dict[str, Any], np.ndarray] | None:
        """The map's share inside the lung fields the gate's segmenter found on this upload,
        and on the image border (labels, markers: shortcuts)."""
        lungs = prepared.data.get("lungs")
        if lungs is None:
            return None
        from ..evaluation.metrics import xray_focus

        found = xray_focus(heatmap, lungs, signed=signed)
        lung, border = float(found["lung_share"]), float(found["border_share"])
        return ({"lung_share": lung, "border_share": border, "flagged": found["flagged"],
                 "message": found["message"],
                 "summary": f"{lung:.0%} of the attribution lies inside the lung fields, "
                            f"{border:.0%} on the image border."}, lungs)

    def preview(self, path: str | Path, settings: AppSettings) -> np.ndarray | None:
        from ..preprocessing.image import load_image

        pixels = load_image(path, max_pixels=settings.max_image_pixels).pixels
        return (np.clip(pixels, 0, 1) * 255).astype(np.uint8)
