"""Build small, valid DICOM files for tests (Digital X-Ray, one or more 16-bit frames)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid


def write_test_dicom(path: str | Path, pixels_uint16: npt.ArrayLike, *,
                     photometric: str = "MONOCHROME2", bits_stored: int = 12,
                     rescale_slope: float = 1.0, rescale_intercept: float = 0.0,
                     window: tuple[float, float] | None = None,
                     transfer_syntax: str = ExplicitVRLittleEndian,
                     patient_name: str = "Doe^Jane", **attributes: Any) -> Path:
    """Write ``pixels_uint16`` ((H, W) or (frames, H, W)) as a DX DICOM file and return its path.

    ``window`` is (center, width). A compressed ``transfer_syntax`` is encoded with pydicom's
    encoders (RLE Lossless natively, JPEG 2000 through pylibjpeg-openjpeg). ``attributes`` are
    set last, after encoding, so a test can make the header lie (``Rows=4000``).
    """
    frames = np.asarray(pixels_uint16).astype(np.uint16)
    if frames.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (frames, H, W), got {frames.shape}")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.PatientName = patient_name
    ds.PatientID = "PID-0042"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"

    ds.Rows, ds.Columns = frames.shape[-2:]
    if frames.ndim == 3:
        ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if (rescale_slope, rescale_intercept) != (1.0, 0.0):
        ds.RescaleSlope = f"{rescale_slope:g}"
        ds.RescaleIntercept = f"{rescale_intercept:g}"
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter = f"{window[0]:g}"
        ds.WindowWidth = f"{window[1]:g}"
    ds.PixelData = frames.astype("<u2").tobytes()
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)
