"""Image loading (PNG / JPEG / DICOM -> (H, W) float32 in [0, 1]) and the model plane."""

from __future__ import annotations

import io
import logging
import struct
import traceback
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_dicom import write_test_dicom
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, MPEG2MPML, RLELossless

from xai_platform.errors import InputError
from xai_platform.preprocessing import image
from xai_platform.preprocessing.image import LoadedImage, load_image, save_png16, to_model_plane

LUMA = np.array([0.299, 0.587, 0.114])


def check_plane(loaded: LoadedImage, shape: tuple[int, int], fmt: str) -> np.ndarray:
    pixels = loaded.pixels
    assert pixels.shape == shape and loaded.original_shape == shape
    assert pixels.dtype == np.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    assert loaded.source_format == fmt
    return pixels


def png_bytes(im: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but whose pixel data is 16 zero bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


@pytest.fixture
def gradient() -> np.ndarray:
    """(24, 32) uint8 ramp with both extremes."""
    return np.linspace(0, 255, 24 * 32).round().astype(np.uint8).reshape(24, 32)


# --------------------------------------------------------------------------------------------
# PNG, JPEG and friends


def test_png_8bit_gray(tmp_path: Path, gradient: np.ndarray) -> None:
    path = tmp_path / "gray.png"
    Image.fromarray(gradient).save(path)
    loaded = load_image(path)
    pixels = check_plane(loaded, (24, 32), "png")
    np.testing.assert_allclose(pixels, gradient / 255.0, atol=1e-6)
    assert loaded.bit_depth == 8 and loaded.notes == ()


def test_png_16bit_scaled_by_bit_depth_not_by_max(tmp_path: Path) -> None:
    values = np.array([[0, 4096], [65535, 1000]], dtype=np.uint16)
    path = tmp_path / "sixteen.png"
    Image.fromarray(values).save(path)
    loaded = load_image(path)
    pixels = check_plane(loaded, (2, 2), "png")
    assert loaded.bit_depth == 16
    assert pixels[0, 1] == pytest.approx(4096 / 65535) and pixels[1, 0] == 1.0


def test_png_16bit_uses_only_12_bits_is_noted(tmp_path: Path) -> None:
    path = save_png16(np.full((4, 4), 4095 / 65535), tmp_path / "twelve.png")
    loaded = load_image(path)
    assert loaded.pixels.max() == pytest.approx(4095 / 65535)
    assert any("12 of 16 bits" in note for note in loaded.notes)


def test_save_png16_round_trip(tmp_path: Path) -> None:
    plane = np.random.default_rng(0).random((9, 7)).astype(np.float32)
    loaded = load_image(save_png16(plane, tmp_path / "round.png"))
    np.testing.assert_allclose(loaded.pixels, plane, atol=0.5 / 65535 + 1e-7)


def test_rgb_png_becomes_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((5, 6, 3), dtype=np.uint8)
    rgb[..., 0], rgb[2:, :, 1] = 200, 100
    loaded = load_image(png_bytes(Image.fromarray(rgb)), name="colour.png")
    pixels = check_plane(loaded, (5, 6), "png")
    np.testing.assert_allclose(pixels, (rgb @ LUMA) / 255.0, atol=1e-5)
    assert loaded.notes == ("RGB converted to grayscale",)


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 120
    rgba[..., 3] = np.arange(16).reshape(4, 4) * 16  # transparency must not change the values
    loaded = load_image(png_bytes(Image.fromarray(rgba)), name="alpha.png")
    np.testing.assert_allclose(check_plane(loaded, (4, 4), "png"), 120 / 255.0, atol=1e-5)
    assert "alpha channel dropped" in loaded.notes


def test_gray_alpha_png_drops_alpha() -> None:
    gray = Image.fromarray(np.full((3, 3), 51, dtype=np.uint8))
    la = Image.merge("LA", (gray, Image.new("L", (3, 3), 7)))
    loaded = load_image(png_bytes(la), name="la.png")
    np.testing.assert_allclose(check_plane(loaded, (3, 3), "png"), 0.2, atol=1e-6)
    assert loaded.notes == ("alpha channel dropped",)


def test_palette_png() -> None:
    im = Image.new("P", (4, 2))
    im.putpalette([0, 0, 0, 255, 255, 255, 255, 0, 0] + [0] * (256 * 3 - 9))
    im.putdata([0, 1, 2, 1, 0, 1, 2, 1])
    loaded = load_image(png_bytes(im), name="palette.png")
    pixels = check_plane(loaded, (2, 4), "png")
    np.testing.assert_allclose(pixels[0], [0.0, 1.0, 0.299, 1.0], atol=1e-5)
    assert "palette converted" in loaded.notes


def test_png_16bit_rgb_keeps_16_bits() -> None:
    bgr = np.zeros((3, 5, 3), dtype=np.uint16)
    bgr[..., 2] = 65535  # red
    bgr[0, 0] = 300  # a value 8-bit reading would lose
    loaded = load_image(cv2.imencode(".png", bgr)[1].tobytes(), name="rgb16.png")
    pixels = check_plane(loaded, (3, 5), "png")
    assert loaded.bit_depth == 16
    assert pixels[1, 1] == pytest.approx(0.299, abs=1e-5)
    assert pixels[0, 0] == pytest.approx(300 / 65535, abs=1e-7)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg(mode: str) -> None:
    im = Image.new(mode, (16, 8), 128 if mode == "L" else (128, 128, 128))
    loaded = load_image(png_bytes(im, "JPEG", quality=95), name="photo.jpg")
    np.testing.assert_allclose(check_plane(loaded, (8, 16), "jpeg"), 128 / 255, atol=2 / 255)


def test_jpeg_exif_orientation_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    data = png_bytes(Image.new("L", (20, 10), 200), "JPEG", exif=exif)
    loaded = load_image(data, name="phone.jpg")
    assert loaded.pixels.shape == (20, 10) and "EXIF orientation applied" in loaded.notes


def test_bmp_and_int32_tiff(tmp_path: Path) -> None:
    bmp = load_image(png_bytes(Image.new("RGB", (3, 2), (0, 0, 255)), "BMP"), name="a.bmp")
    np.testing.assert_allclose(check_plane(bmp, (2, 3), "bmp"), 0.114, atol=1e-5)

    values = np.array([[0, 1000], [40000, 65535]], dtype=np.int32)
    tiff = load_image(png_bytes(Image.fromarray(values), "TIFF"), name="a.tif")
    np.testing.assert_allclose(check_plane(tiff, (2, 2), "tiff"), values / 65535, atol=1e-7)

    signed = load_image(png_bytes(Image.fromarray(values - 20000), "TIFF"), name="s.tif")
    np.testing.assert_allclose(signed.pixels, values / 65535, atol=1e-6)
    assert "32-bit integer image min-max scaled" in signed.notes


# --------------------------------------------------------------------------------------------
# DICOM


def ramp(bits: int) -> np.ndarray:
    """(64, 80) uint16 ramp over the whole range of ``bits`` (JPEG 2000 needs >= 32 px)."""
    return np.linspace(0, 2 ** bits - 1, 64 * 80).round().astype(np.uint16).reshape(64, 80)


@pytest.mark.parametrize("bits", [12, 16])
def test_dicom_monochrome2_min_max(tmp_path: Path, bits: int) -> None:
    values = ramp(bits)
    loaded = load_image(write_test_dicom(tmp_path / "m2.dcm", values, bits_stored=bits))
    pixels = check_plane(loaded, (64, 80), "dicom")
    np.testing.assert_allclose(pixels, values / (2 ** bits - 1), atol=1e-6)
    assert loaded.bit_depth == bits
    assert loaded.notes == ("min-max scaled (no VOI LUT or window in the file)",)


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    values = ramp(12)
    loaded = load_image(write_test_dicom(tmp_path / "m1.dcm", values, photometric="MONOCHROME1"))
    pixels = check_plane(loaded, (64, 80), "dicom")
    assert pixels[values == 4095].max() == 0.0 and pixels[values == 0].min() == 1.0
    assert "MONOCHROME1 inverted" in loaded.notes


def test_dicom_rescale_applied_before_window(tmp_path: Path) -> None:
    # Stored 0..4095, slope 2, intercept -1000 -> modality -1000..7190; window 1000 +- 500.
    values = np.array([[0, 750, 1000], [1250, 1500, 4095]], dtype=np.uint16)
    path = write_test_dicom(tmp_path / "rescale.dcm", values, rescale_slope=2.0,
                            rescale_intercept=-1000.0, window=(1000, 1000))
    loaded = load_image(path)
    pixels = check_plane(loaded, (2, 3), "dicom")
    assert "rescale slope 2, intercept -1000 applied" in loaded.notes
    assert "window 1000/1000 applied" in loaded.notes
    # modality 500 -> 0 (window bottom), 1000 -> 0.5 (center), 1500 -> 1 (top)
    np.testing.assert_allclose(pixels[0], [0.0, 0.0, 0.5], atol=2e-3)
    np.testing.assert_allclose(pixels[1], [1.0, 1.0, 1.0], atol=2e-3)


def test_dicom_window_clips_and_is_noted(tmp_path: Path) -> None:
    values = ramp(12)
    loaded = load_image(write_test_dicom(tmp_path / "win.dcm", values, window=(40, 400)))
    assert "window 40/400 applied" in loaded.notes
    # DICOM's LINEAR window (PS3.3 C.11.2.1.2.1): center 40 -> 0.5, clipped above 40 + 200
    expected = np.clip((values - 39.5) / 399 + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(loaded.pixels, expected, atol=1e-6)
    assert loaded.pixels[values >= 240].min() == 1.0


def test_dicom_first_of_several_windows(tmp_path: Path) -> None:
    path = write_test_dicom(tmp_path / "views.dcm", ramp(12), WindowCenter=[2048, 1000],
                            WindowWidth=[4096, 500])
    assert "window 2048/4096 applied (first of 2)" in load_image(path).notes


def test_dicom_voi_lut_scaled_by_its_own_range(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]  # says 16 bits, holds 12-bit values (seen in the wild)
    table = np.minimum(4095, 2 * np.arange(4096))  # contrast x2, saturating at 2048
    item.LUTData = table.astype("<u2").tobytes()  # OW
    values = ramp(12)
    loaded = load_image(write_test_dicom(tmp_path / "lut.dcm", values, window=(40, 400),
                                         VOILUTSequence=[item]))
    assert "VOI LUT applied" in loaded.notes and not any("window" in n for n in loaded.notes)
    np.testing.assert_allclose(loaded.pixels, np.minimum(4095, 2 * values) / 4095, atol=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_dicom_compressed_decodes_like_uncompressed(tmp_path: Path, syntax: str) -> None:
    values = ramp(12)
    plain = load_image(write_test_dicom(tmp_path / "plain.dcm", values))
    packed = load_image(write_test_dicom(tmp_path / "packed.dcm", values, transfer_syntax=syntax))
    np.testing.assert_array_equal(packed.pixels, plain.pixels)


def test_dicom_multiframe_uses_first_frame(tmp_path: Path) -> None:
    frames = np.stack([ramp(12), ramp(12)[::-1], ramp(12)])
    loaded = load_image(write_test_dicom(tmp_path / "frames.dcm", frames))
    np.testing.assert_allclose(loaded.pixels, ramp(12) / 4095, atol=1e-6)
    assert "first of 3 frames used" in loaded.notes


def test_dicom_colour_and_bytes_input() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("SC_rgb_rle_2frame.dcm", download=False)  # ships with pydicom
    if path is None:
        pytest.skip("pydicom's test files are not installed")
    loaded = load_image(Path(path).read_bytes(), name="nested/dir/colour.dcm")
    check_plane(loaded, (100, 100), "dicom")
    assert "RGB converted to grayscale" in loaded.notes


def test_real_radiograph() -> None:
    path = image.real_radiograph_path()
    if path is None:
        pytest.skip("pydicom-data is not installed")
    assert path.name == "RG1_UNCR.dcm"
    loaded = load_image(path)
    pixels = check_plane(loaded, (1955, 1841), "dicom")
    assert loaded.notes == ("window 15000/30000 applied", "MONOCHROME1 inverted")
    h, w = pixels.shape
    lungs = np.concatenate([pixels[int(.2 * h):int(.45 * h), int(.2 * w):int(.35 * w)].ravel(),
                            pixels[int(.2 * h):int(.45 * h), int(.62 * w):int(.78 * w)].ravel()])
    mediastinum = pixels[int(.3 * h):int(.7 * h), int(.46 * w):int(.54 * w)]
    assert lungs.mean() < mediastinum.mean() - 0.1  # air dark, soft tissue and spine bright

    j2k = path.with_name("RG1_J2KR.dcm")  # the same image, JPEG 2000 lossless
    if j2k.exists():
        np.testing.assert_array_equal(load_image(j2k).pixels, pixels)


def test_dicom_without_image(tmp_path: Path) -> None:
    path = write_test_dicom(tmp_path / "sr.dcm", ramp(12))
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(InputError, match=r"'sr.dcm' .*no pixel data"):
        load_image(path)


def test_dicom_unsupported_transfer_syntax(tmp_path: Path) -> None:
    path = write_test_dicom(tmp_path / "video.dcm", ramp(12), transfer_syntax=RLELossless)
    import pydicom

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.save_as(path)
    with pytest.raises(InputError, match=r"MPEG2 .*1\.2\.840\.10008\.1\.2\.4\.100.*uncompressed"):
        load_image(path)


def test_dicom_missing_decoder_names_package(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom.pixels

    class Unavailable:
        is_available = False

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Unavailable())
    path = write_test_dicom(tmp_path / "j2k.dcm", ramp(12), transfer_syntax=JPEG2000Lossless)
    with pytest.raises(InputError, match=r"JPEG 2000 .*1\.2\.840\.10008\.1\.2\.4\.90.*"
                                         r"pylibjpeg-openjpeg"):
        load_image(path)


def test_dicom_without_preamble_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raw.dcm"
    path.write_bytes(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + b"\0" * 64)
    with pytest.raises(InputError, match=r"'raw.dcm' is not a valid DICOM file.*DICM"):
        load_image(path)


# --------------------------------------------------------------------------------------------
# Patient data never reaches a message, a log line or a warning


def secret_dicoms(tmp_path: Path) -> list[tuple[str, bytes]]:
    values = ramp(12)
    kept = dict(patient_name="Secret^Patient")
    wrong_rows = write_test_dicom(tmp_path / "a.dcm", values, Rows=4000, **kept)
    bad_rle = write_test_dicom(tmp_path / "b.dcm", values, transfer_syntax=RLELossless,
                               PixelData=encapsulate([b"\x07" * 64]), **kept)
    bad_j2k = write_test_dicom(tmp_path / "c.dcm", values, transfer_syntax=JPEG2000Lossless,
                               PixelData=encapsulate([b"\x07" * 64]), **kept)
    whole = write_test_dicom(tmp_path / "d.dcm", values, **kept).read_bytes()
    cut = whole.find(b"Secret") + 20
    return [("wrong-rows.dcm", wrong_rows.read_bytes()), ("bad-rle.dcm", bad_rle.read_bytes()),
            ("bad-j2k.dcm", bad_j2k.read_bytes()), ("truncated.dcm", whole[:cut]),
            ("pixels-cut.dcm", whole[:-100]), ("huge.dcm", whole)]


def test_patient_name_never_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for label, data in secret_dicoms(tmp_path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(InputError) as info:
                load_image(data, name=label, max_pixels=200 if label == "huge.dcm" else 10 ** 7)
        text = "".join(traceback.format_exception(info.value))
        assert label in str(info.value)
        for secret in ("Secret", "PID-0042", "19700101"):
            assert secret not in text, label
            assert secret not in caplog.text, label
            assert not any(secret in str(w.message) for w in caught), label


# --------------------------------------------------------------------------------------------
# Decompression bombs, damaged and unsupported files


def test_png_over_limit_refused_before_decoding() -> None:
    data = png_header_only(5000, 5000)  # 25 M pixels declared, almost no data
    with pytest.raises(InputError, match=r"'big.png' is 5000 x 5000 = 25,000,000 pixels.*limit "
                                         r"of 1,000,000 pixels.*app.max_image_pixels"):
        load_image(data, name="big.png", max_pixels=1_000_000)


@pytest.mark.parametrize("side", [9500, 20_000], ids=["pillow-warning", "pillow-error"])
def test_png_over_pillow_limit(side: int) -> None:
    # Pillow warns above 89 M pixels and raises above twice that, inside Image.open
    with pytest.raises(InputError, match=r"'bomb.png' is more than the limit of 60,000,000 "
                                         r"pixels.*app.max_image_pixels"):
        load_image(png_header_only(side, side), name="bomb.png")


def test_dicom_over_limit_refused_before_decoding(tmp_path: Path) -> None:
    path = write_test_dicom(tmp_path / "big.dcm", ramp(12), Rows=4000, Columns=3000)
    with pytest.raises(InputError, match=r"'big.dcm' is 3000 x 4000 = 12,000,000 pixels.*"
                                         r"1,000,000.*app.max_image_pixels"):
        load_image(path, max_pixels=1_000_000)


def test_png_with_too_little_data_is_damaged() -> None:
    with pytest.raises(InputError, match=r"'short.png' is a damaged PNG file"):
        load_image(png_header_only(64, 64), name="short.png")


@pytest.mark.parametrize(("data", "message"), [
    (b"", r"'x.png' is empty \(0 bytes\)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", r"'x.png' starts like a PNG file but its header is truncated"),
    (bytes(range(256)) * 4, r"'x.png' is not a PNG, JPEG or DICOM image; upload one of those"),
    (b"patient list\nDoe, Jane\n", r"'x.png' is not a PNG, JPEG or DICOM image \(it looks like "
                                   r"a text file\)"),
    (b"%PDF-1.7\n\x00\x01", r"not a PNG, JPEG or DICOM image \(it is a PDF document\)"),
], ids=["empty", "truncated-png", "random-bytes", "text", "pdf"])
def test_bad_files(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(data)
    with pytest.raises(InputError, match=message):
        load_image(path)


def test_truncated_real_png(gradient: np.ndarray) -> None:
    data = png_bytes(Image.fromarray(gradient))
    with pytest.raises(InputError, match=r"'cut.png' is a damaged PNG file"):
        load_image(data[: len(data) // 2], name="cut.png")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"'nope.png' does not exist; check the path"):
        load_image(tmp_path / "nope.png")


# --------------------------------------------------------------------------------------------
# The model plane


def test_to_model_plane_center_crops_wide_image() -> None:
    wide = np.zeros((100, 300), dtype=np.float32)
    wide[:, 100:200] = 0.5  # the central square
    wide[:, 200:] = 1.0
    plane = to_model_plane(wide, (32, 32))
    assert plane.shape == (32, 32) and plane.dtype == np.float32
    np.testing.assert_allclose(plane, 0.5, atol=1e-6)


def test_to_model_plane_tall_image_and_enlarging() -> None:
    tall = np.zeros((40, 10), dtype=np.float32)
    tall[15:25] = 1.0  # the central 10 x 10 square
    plane = to_model_plane(tall, (64, 32))  # target is 2:1 tall -> crop rows 10..30
    assert plane.shape == (64, 32)
    assert 0.0 <= plane.min() and plane.max() <= 1.0
    np.testing.assert_allclose(plane[:, 0], plane[:, -1])
    assert plane[32].min() == pytest.approx(1.0) and plane[0].max() == pytest.approx(0.0)


def test_to_model_plane_rejects_non_planes() -> None:
    with pytest.raises(ValueError, match="plane"):
        to_model_plane(np.zeros((4, 4, 3)), (8, 8))
