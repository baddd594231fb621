"""Image preprocessing for the X-ray models: PNG / JPEG / DICOM -> one grayscale plane in [0, 1].

:func:`load_image` turns an upload into a :class:`LoadedImage` whose ``pixels`` are (H, W)
float32 in [0, 1] with 0 = black *as a radiologist would see it* (bone bright, lungs dark);
:func:`to_model_plane` crops and resizes that plane to a model's input size.

Rules worth knowing:

* Integer images are scaled by their true bit depth (a 16-bit PNG is divided by 65535, not by its
  maximum), so the same scan gives the same plane whatever its content.
* Colour is reduced to luminance with the ITU-R BT.601 weights that Pillow's ``convert("L")``
  uses; an alpha channel is dropped, not composited, because an X-ray has no meaningful
  transparency and compositing on black or white would invent pixel values.
* DICOM follows the display pipeline of PS3.3 C.11 with pydicom: modality LUT (rescale slope and
  intercept) -> VOI LUT or window -> MONOCHROME1 inverted. Without a VOI LUT or window the
  modality values are min-max scaled.
* The pixel count is checked against ``max_pixels`` from the header, before anything is
  decoded, so a small file that claims a huge image cannot exhaust memory.
* DICOM files carry patient tags. No message or log line written here quotes a DICOM element
  value or a pydicom error text (which may quote one): only the file's base name, sizes,
  transfer syntax, photometric interpretation and bit depths.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from ..config import AppSettings
from ..errors import InputError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

FloatImage = npt.NDArray[np.float32]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = AppSettings.max_image_pixels  # 60 M, `app.max_image_pixels` in a config
PIL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # Image.open(formats=...): never EPS, PDF, ...
DICOM_SUFFIXES = (".dcm", ".dicom")
RADIOGRAPH_FILES = ("RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm")

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's "L"
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP",
               b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
_SUPPORTED = "a PNG, JPEG or DICOM image"
_UPLOAD = "upload one of those (BMP and TIFF also work)"
# Which pip packages decode a compressed transfer syntax (pydicom's plugins), by UID prefix.
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.5": "pylibjpeg and pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.7": "pylibjpeg and pylibjpeg-libjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.8": "pylibjpeg and pylibjpeg-libjpeg, pyjpegls, or python-gdcm",
    "1.2.840.10008.1.2.4.9": "pylibjpeg and pylibjpeg-openjpeg, or python-gdcm",
    "1.2.840.10008.1.2.4.20": "pylibjpeg and pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg and pylibjpeg-rle",
}


@dataclass(frozen=True)
class LoadedImage:
    """A decoded upload.

    pixels: (H, W) float32 in [0, 1], 0 = black as displayed (bone bright in an X-ray).
    source_format: 'png', 'jpeg', 'bmp', 'tiff' or 'dicom'.
    original_shape: (H, W) of the decoded image (equal to ``pixels.shape``).
    bit_depth: bits per sample of the stored data (DICOM: BitsStored).
    notes: what was done to the data on the way, e.g. "MONOCHROME1 inverted".
    tags: DICOM attributes that say what the image shows (Modality, BodyPartExamined,
    ViewPosition, PatientSpeciesDescription, SeriesDescription), where present; no patient data.
    chroma: how coloured the stored image is, the mean of max - min over R, G, B in [0, 1]
    (0 for grayscale, about 0.1 and more for a colour photograph).
    """

    pixels: FloatImage
    source_format: str
    original_shape: tuple[int, int]
    bit_depth: int
    notes: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    chroma: float = 0.0


def load_image(source: str | Path | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               name: str | None = None) -> LoadedImage:
    """Decode a PNG, JPEG, BMP, TIFF or DICOM file into one grayscale plane.

    ``source`` is a path or the file's bytes; ``name`` labels the file in messages (only its base
    name is used). DICOM is recognised by the 'DICM' marker at byte 128 or a ``.dcm`` name.
    Multi-frame files give their first frame (noted). Raises :class:`InputError` for an empty,
    corrupt, unsupported or too large (> ``max_pixels`` per frame) file.

    pixels: (H, W) float32 in [0, 1]; see :class:`LoadedImage`.
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    data, label = _read_source(source, name)
    if not data:
        raise InputError(f"'{label}' is empty (0 bytes); upload the image file again.")
    if _looks_like_dicom(data, label):
        loaded = _load_dicom(data, label, max_pixels)
    else:
        loaded = _load_pil(data, label, max_pixels)
    logger.debug("loaded %s: %s %dx%d, %d-bit, %s", label, loaded.source_format,
                 loaded.original_shape[1], loaded.original_shape[0], loaded.bit_depth,
                 "; ".join(loaded.notes) or "no conversions")
    return loaded


_INTERPOLATION = {"area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST,
                  "bilinear": cv2.INTER_LINEAR}


def to_model_plane(pixels: npt.ArrayLike, size: tuple[int, int], *,
                   interpolation: str = "auto") -> FloatImage:
    """Center-crop ``pixels`` to the aspect ratio of ``size``, then resize to ``size``.

    pixels: (H, W) in [0, 1]. size: (h, w) of the model input. Returns (h, w) float32 in [0, 1].
    Cropping rather than stretching keeps a chest X-ray's proportions, as torchxrayvision's
    ``XRayCenterCrop`` + ``XRayResizer`` do for its square inputs. ``auto``: shrinking uses area
    interpolation (no aliasing), enlarging bilinear; ``nearest`` / ``bilinear`` / ``area``
    match the resize a model was trained with.
    """
    plane = np.asarray(pixels, dtype=np.float32)
    if plane.ndim != 2 or plane.size == 0:
        raise ValueError(f"expected a non-empty (H, W) plane, got shape {plane.shape}")
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be two positive integers (h, w), got {size}")
    rows, cols = plane.shape
    if cols * h > rows * w:  # wider than the target: crop columns
        keep = max(1, round(rows * w / h))
        left = (cols - keep) // 2
        plane = plane[:, left:left + keep]
    else:  # taller (or equal): crop rows
        keep = max(1, round(cols * h / w))
        top = (rows - keep) // 2
        plane = plane[top:top + keep, :]
    if interpolation == "auto":
        shrinking = plane.shape[0] > h or plane.shape[1] > w
        interpolation = "area" if shrinking else "bilinear"
    if interpolation not in _INTERPOLATION:
        raise ValueError(f"interpolation must be auto or one of {sorted(_INTERPOLATION)}, "
                         f"got {interpolation!r}")
    out = cv2.resize(np.ascontiguousarray(plane), (w, h),
                     interpolation=_INTERPOLATION[interpolation])
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def save_png16(pixels: npt.ArrayLike, path: str | Path) -> Path:
    """Write a (H, W) plane in [0, 1] as a 16-bit grayscale PNG (value * 65535, rounded)."""
    plane = np.asarray(pixels, dtype=np.float64)
    if plane.ndim != 2 or not np.isfinite(plane).all():
        raise ValueError(f"expected a finite (H, W) plane, got shape {plane.shape}")
    values = np.round(np.clip(plane, 0.0, 1.0) * 65535).astype(np.uint16)
    path = Path(path)
    Image.fromarray(values).save(path, format="PNG")  # uint16 -> mode I;16 -> 16-bit PNG
    return path


def real_radiograph_path() -> Path | None:
    """Path of pydicom-data's real chest radiograph (CR, MONOCHROME1, 1955 x 1841), or None.

    Prefers the uncompressed file (``RG1_UNCR.dcm``) over the JPEG 2000 ones. Looks only at
    local files (pydicom's test files and the ``pydicom-data`` package); never downloads.
    """
    try:
        from pydicom.data import get_testdata_file
    except ImportError:
        return None
    for filename in RADIOGRAPH_FILES:
        try:
            found = get_testdata_file(filename, download=False)
        except Exception:  # a broken data package is the same as none
            found = None
        if found:
            return Path(found)
    return None


# --------------------------------------------------------------------------------------------
# Input bytes


def _read_source(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), Path(name).name if name else "upload"
    if not isinstance(source, (str, Path)):
        raise TypeError(f"source must be a path or bytes, got {type(source).__name__}")
    path = Path(source)
    label = Path(name).name if name else path.name
    try:
        return path.read_bytes(), label
    except FileNotFoundError:
        raise InputError(f"'{label}' does not exist; check the path.") from None
    except IsADirectoryError:
        raise InputError(f"'{label}' is a folder; choose an image file inside it.") from None
    except OSError as exc:
        raise InputError(f"'{label}' cannot be read ({exc.strerror}); check that the file is "
                         "readable.") from None


def _looks_like_dicom(data: bytes, label: str) -> bool:
    if data[128:132] == b"DICM":
        return True
    if _signature(data) is not None:  # a PNG or JPEG saved with a .dcm name
        return False
    return label.lower().endswith(DICOM_SUFFIXES)


def _signature(data: bytes) -> str | None:
    return next((fmt for magic, fmt in _SIGNATURES.items() if data.startswith(magic)), None)


def _not_an_image(label: str, data: bytes) -> InputError:
    head = data[:1024]
    hint = ""
    if head.startswith(b"%PDF"):
        hint = " (it is a PDF document)"
    elif b"\x00" not in head:
        try:
            head.decode("utf-8")
            hint = " (it looks like a text file)"
        except UnicodeDecodeError:
            pass
    return InputError(f"'{label}' is not {_SUPPORTED}{hint}; {_UPLOAD}.")


def _check_pixels(label: str, height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise InputError(f"'{label}' declares an empty image ({width} x {height} pixels); "
                         "export it again.")
    if height * width > max_pixels:
        raise InputError(
            f"'{label}' is {width} x {height} = {height * width:,} pixels, more than the limit "
            f"of {max_pixels:,} pixels. Downscale the image, or raise `app.max_image_pixels` in "
            "the config if images this large are expected.")


# --------------------------------------------------------------------------------------------
# PNG, JPEG, BMP, TIFF (Pillow)


def _load_pil(data: bytes, label: str, max_pixels: int) -> LoadedImage:
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # Pillow warns above its MAX_IMAGE_PIXELS and raises above twice that, using a
            # process-wide setting we leave alone. The warning becomes an error when our limit
            # is lower anyway; when the config allows more, our own check below decides.
            if pil_limit is not None and max_pixels > pil_limit:
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            else:
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_large_for_pillow(label, max_pixels) from None
    except Exception:  # UnidentifiedImageError, or a header too short to parse
        fmt = _signature(data)
        if fmt is not None:
            raise InputError(f"'{label}' starts like a {fmt} file but its header is truncated or "
                             "corrupt; export or upload it again.") from None
        raise _not_an_image(label, data) from None

    with im:
        fmt = (im.format or "image").lower()
        width, height = im.size
        _check_pixels(label, height, width, max_pixels)
        try:
            pixels, bit_depth, notes = _pil_to_gray(im, data)
            chroma = _chroma(im)
        except (InputError, MemoryError):
            raise
        except Image.DecompressionBombError:  # a later TIFF page, met while counting frames
            raise _too_large_for_pillow(label, max_pixels) from None
        except Exception as exc:  # Pillow reports damage with OSError, SyntaxError, zlib.error...
            raise InputError(f"'{label}' is a damaged {fmt.upper()} file ({exc}); export or "
                             "upload it again.") from None
    return replace(_loaded(pixels, fmt, bit_depth, notes), chroma=chroma)


def _chroma(im: Image.Image) -> float:
    """Mean (max - min) over the colour channels of a 256-pixel thumbnail, in [0, 1]."""
    if im.mode not in ("RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return 0.0
    small = im.convert("RGB")
    small.thumbnail((256, 256))
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean())


def _too_large_for_pillow(label: str, max_pixels: int) -> InputError:
    pil_limit = Image.MAX_IMAGE_PIXELS
    ceiling = 2 * pil_limit if pil_limit is not None else max_pixels  # Pillow raises above 2x
    if max_pixels <= ceiling:
        return InputError(f"'{label}' is more than the limit of {max_pixels:,} pixels. Downscale "
                          "the image, or raise `app.max_image_pixels` in the config if images "
                          "this large are expected.")
    return InputError(f"'{label}' is more than {ceiling:,} pixels, the most Pillow decodes "
                      "(PIL.Image.MAX_IMAGE_PIXELS x 2). Downscale the image, or raise "
                      "PIL.Image.MAX_IMAGE_PIXELS as well as `app.max_image_pixels`.")


def _pil_to_gray(im: Image.Image, data: bytes) -> tuple[FloatImage, int, list[str]]:
    notes: list[str] = []
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        notes.append(f"first of {frames} frames used")
    if im.format == "PNG" and data[24] == 16 and data[25] in (2, 4, 6):
        # Pillow reads 16-bit colour PNGs as 8-bit RGB; OpenCV keeps all 16 bits.
        return _png16_colour(data, notes)
    if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation (phone photos of films)
        im = ImageOps.exif_transpose(im)
        notes.append("EXIF orientation applied")

    mode = im.mode
    if mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in im.info
        im, mode = im.convert("RGBA" if alpha else "RGB"), "RGBA" if alpha else "RGB"
        notes.append("palette converted")
    if mode == "1":
        return np.asarray(im, dtype=np.float32), 1, notes
    if mode == "L":
        return np.asarray(im, dtype=np.float32) / 255.0, 8, notes
    if mode in ("LA", "La"):
        notes.append("alpha channel dropped")
        return np.asarray(im)[..., 0].astype(np.float32) / 255.0, 8, notes
    if mode.startswith("I;16"):
        values = np.asarray(im).astype(np.float32)
        _note_unused_bits(values, 16, notes)
        return values / 65535.0, 16, notes
    if mode == "I":
        return _scale_int32(np.asarray(im, dtype=np.int64), notes)
    if mode == "F":
        values = np.asarray(im, dtype=np.float32)
        if np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0:
            return values.copy(), 32, notes
        notes.append("floating-point image min-max scaled")
        return _min_max(values), 32, notes
    if mode in ("RGBA", "RGBa"):
        notes.append("alpha channel dropped")
    if mode not in ("RGB", "RGBA", "RGBa", "RGBX"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV
        notes.append(f"{mode} converted to RGB")
    rgb = np.asarray(im)[..., :3]
    notes.append("RGB converted to grayscale")
    return _luminance(rgb) / 255.0, 8, notes


def _png16_colour(data: bytes, notes: list[str]) -> tuple[FloatImage, int, list[str]]:
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ValueError("OpenCV could not decode the 16-bit colour PNG")
    if decoded.ndim == 2:
        return decoded.astype(np.float32) / 65535.0, 16, notes
    if decoded.shape[2] in (2, 4):
        notes.append("alpha channel dropped")
    if decoded.shape[2] == 2:
        return decoded[..., 0].astype(np.float32) / 65535.0, 16, notes
    notes.append("RGB converted to grayscale")
    return _luminance(decoded[..., 2::-1]) / 65535.0, 16, notes  # BGR(A) -> RGB


def _scale_int32(values: npt.NDArray[np.int64],
                 notes: list[str]) -> tuple[FloatImage, int, list[str]]:
    """Pillow's 32-bit 'I' mode: data within 0..65535 is 16-bit, anything else min-max scaled.

    'I' holds 16-bit data from older writers and TIFF's signed or 32-bit samples; no header field
    says how many bits are meaningful, so the data range decides.
    """
    if values.size and values.min() >= 0 and values.max() <= 65535:
        notes.append("32-bit integer image read as 16-bit")
        _note_unused_bits(values, 16, notes)
        return values.astype(np.float32) / 65535.0, 16, notes
    notes.append("32-bit integer image min-max scaled")
    return _min_max(values), 32, notes


def _note_unused_bits(values: np.ndarray, bits: int, notes: list[str]) -> None:
    used = int(values.max()).bit_length() if values.size else 0
    if 0 < used <= bits - 4:
        notes.append(f"values use only {used} of {bits} bits, so the image looks dark")


# --------------------------------------------------------------------------------------------
# DICOM (pydicom)


def _load_dicom(data: bytes, label: str, max_pixels: int) -> LoadedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    # pydicom's exception texts can quote element values (patient data): never passed on, and
    # `from None` keeps them out of tracebacks too.
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError:
        raise InputError(f"'{label}' is not a valid DICOM file (no 'DICM' marker at byte 128); "
                         "export it as a DICOM Part 10 file, or upload a PNG or JPEG.") from None
    except MemoryError:
        raise
    except Exception:
        raise InputError(f"'{label}' is a damaged DICOM file: its header could not be read; "
                         "export it again.") from None
    try:
        header = _dicom_header(ds, label)
    except InputError:
        raise
    except Exception:
        raise InputError(f"'{label}' has an unreadable image description (Rows, Columns, "
                         "Bits Allocated ...); export it again.") from None
    _check_pixels(label, header.rows, header.columns, max_pixels)
    _check_decoder(header)

    ds.pixel_array_options(index=0 if header.frames > 1 else None)
    try:
        frame = ds.pixel_array
    except MemoryError:
        raise
    except Exception:
        raise InputError(
            f"'{label}': the pixel data could not be decoded ({header.syntax_name}, "
            f"{header.columns} x {header.rows}, {header.bits_allocated}-bit "
            f"{header.photometric}). The file is damaged or its header does not match its "
            "pixel data; export it again.") from None

    notes: list[str] = []
    if header.frames > 1:
        notes.append(f"first of {header.frames} frames used")
    try:
        pixels = _dicom_to_gray(frame, ds, header, notes)
    except (InputError, MemoryError):
        raise
    except Exception:
        raise InputError(f"'{label}': its LUT or window settings could not be applied "
                         f"({header.photometric}, {header.bits_stored}-bit); export it "
                         "again.") from None
    return replace(_loaded(pixels, "dicom", header.bits_stored, notes), tags=_content_tags(ds))


#: DICOM attributes that describe what an image shows (never who it shows)
CONTENT_TAGS = ("Modality", "BodyPartExamined", "ViewPosition", "PatientSpeciesDescription",
                "SeriesDescription")


def _content_tags(ds: Dataset) -> dict[str, str]:
    out = {}
    for keyword in CONTENT_TAGS:
        value = ds.get(keyword)
        if value not in (None, ""):
            out[keyword] = str(value).strip()
    return out


@dataclass(frozen=True)
class _DicomHeader:
    """The image description of a DICOM file: only fields that are safe to put in a message."""

    label: str
    rows: int
    columns: int
    frames: int
    bits_allocated: int
    bits_stored: int
    photometric: str
    syntax: str
    syntax_name: str  # "JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91)"


def _dicom_header(ds: Dataset, label: str) -> _DicomHeader:
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(f"'{label}' contains no pixel data: it is truncated, or it is not an "
                         "image (a report or series index?). Upload the image file itself, "
                         "e.g. the CR or DX file.")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        raise InputError(f"'{label}' has no transfer syntax in its file meta header; export it "
                         "again as a DICOM Part 10 file.")
    known = syntax.name != str(syntax)
    frames = ds.get("NumberOfFrames")
    return _DicomHeader(
        label=label, rows=int(ds.get("Rows") or 0), columns=int(ds.get("Columns") or 0),
        frames=int(frames) if frames else 1,
        bits_allocated=int(ds.get("BitsAllocated") or 0),
        bits_stored=int(ds.get("BitsStored") or ds.get("BitsAllocated") or 0),
        photometric=str(ds.get("PhotometricInterpretation") or "MONOCHROME2").strip().upper(),
        syntax=str(syntax),
        syntax_name=f"{syntax.name if known else 'unknown transfer syntax'} ({syntax})")


def _check_decoder(header: _DicomHeader) -> None:
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(header.syntax)
    except NotImplementedError:
        raise InputError(f"'{header.label}' uses transfer syntax {header.syntax_name}, which is not "
                         "a still-image encoding pydicom can decode; export the image as "
                         "uncompressed DICOM (Explicit VR Little Endian) or PNG.") from None
    if not decoder.is_available:
        package = next((p for prefix, p in _DECODER_PACKAGES.items()
                        if header.syntax.startswith(prefix)), "python-gdcm")
        raise InputError(f"'{header.label}' is compressed with {header.syntax_name} and no decoder "
                         f"for it is installed; install {package} (pip install), or export the "
                         "image uncompressed.")


def _dicom_to_gray(frame: np.ndarray, ds: Dataset, header: _DicomHeader,
                   notes: list[str]) -> FloatImage:
    """One decoded frame -> (H, W) float32 in [0, 1], following the PS3.3 C.11 display pipeline."""
    from pydicom.pixels import apply_color_lut

    photometric = header.photometric
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds)
        notes.append("palette colour converted to grayscale")
        return _luminance(rgb) / float(np.iinfo(rgb.dtype).max)
    if frame.ndim == 3:  # RGB, or YBR that pydicom already converted to RGB
        notes.append(f"{photometric} converted to grayscale")
        return _luminance(frame) / float(2 ** header.bits_stored - 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(f"'{header.label}' has photometric interpretation {photometric}, which "
                         "is not supported; export the image as MONOCHROME2 or RGB.")
    pixels = _dicom_voi(frame, ds, notes)
    if photometric == "MONOCHROME1":  # stored bright = dark; after the VOI stage, per C.11
        pixels = 1.0 - pixels
        notes.append("MONOCHROME1 inverted")
    return pixels


def _dicom_voi(frame: np.ndarray, ds: Dataset, notes: list[str]) -> FloatImage:
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

    values = apply_modality_lut(frame, ds)
    if ds.get("ModalityLUTSequence"):
        notes.append("modality LUT applied")
    elif "RescaleSlope" in ds and "RescaleIntercept" in ds and \
            (float(ds.RescaleSlope), float(ds.RescaleIntercept)) != (1.0, 0.0):
        notes.append(f"rescale slope {float(ds.RescaleSlope):g}, intercept "
                     f"{float(ds.RescaleIntercept):g} applied")

    lut = ds.get("VOILUTSequence")
    if lut and "LUTDescriptor" in lut[0] and "LUTData" in lut[0]:
        first, count = int(lut[0].LUTDescriptor[1]), int(lut[0].LUTDescriptor[0]) or 2 ** 16
        if values.dtype.kind == "f" and np.array_equal(values, np.round(values)):
            values = values.astype(np.int64)  # integral rescale: the LUT indexes integers
        # The LUT's own output range, so a 12-bit LUT under a 16-bit descriptor is not dark.
        table = apply_voi(np.arange(first, first + count, dtype=np.int64), ds)
        notes.append("VOI LUT applied")
        return _scale(apply_voi(values, ds), float(table.min()), float(table.max()))

    if all(k in ds and ds[k].VM for k in ("WindowCenter", "WindowWidth")):
        center, width = _first(ds, "WindowCenter"), _first(ds, "WindowWidth")
        views = ds["WindowCenter"].VM
        which = f" (first of {views})" if views > 1 else ""
        try:
            windowed = apply_windowing(values, ds)
            with np.errstate(over="ignore"):  # the sigmoid's tails
                ends = apply_windowing(np.array([-1e30, 1e30]), ds)
        except ValueError:  # a width of 0, or an unknown VOI LUT function
            notes.append(f"window {center:g}/{width:g} ignored (invalid)")
        else:
            notes.append(f"window {center:g}/{width:g} applied{which}")
            return _scale(windowed, float(ends[0]), float(ends[1]))

    notes.append("min-max scaled (no VOI LUT or window in the file)")
    return _min_max(values)


def _first(ds: Dataset, keyword: str) -> float:
    """First value of a DS element that may list several views (WindowCenter, WindowWidth)."""
    elem = ds[keyword]
    return float(elem.value[0] if elem.VM > 1 else elem.value)


# --------------------------------------------------------------------------------------------
# Arrays


def _loaded(pixels: np.ndarray, fmt: str, bit_depth: int, notes: list[str]) -> LoadedImage:
    plane = np.ascontiguousarray(np.clip(pixels, 0.0, 1.0), dtype=np.float32)
    return LoadedImage(plane, fmt, (int(plane.shape[0]), int(plane.shape[1])), int(bit_depth),
                       tuple(notes))


def _luminance(rgb: np.ndarray) -> FloatImage:
    """(H, W, 3) RGB -> (H, W) float32 luma, same scale as the input."""
    return rgb[..., :3].astype(np.float32) @ _LUMA


def _scale(values: np.ndarray, low: float, high: float) -> FloatImage:
    """Map ``low`` -> 0 and ``high`` -> 1 (either order), clipped to [0, 1]."""
    if high == low:
        return np.zeros(values.shape, dtype=np.float32)
    out = (np.asarray(values, dtype=np.float64) - low) / (high - low)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _min_max(values: np.ndarray) -> FloatImage:
    """Finite min -> 0, finite max -> 1; NaN and inf become 0. A constant image gives zeros."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.float32)
    clean = np.where(finite, values, values[finite].min())
    return _scale(clean, float(clean.min()), float(clean.max()))
