"""Decoding against pydicom's and OpenCV's own arrays, on the real radiographs in shared data."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from cxr_attention.io import InputError
from cxr_attention.preprocess.decode import decode_image, load_radiograph

DICOM_KINDS = {
    "uncompressed_monochrome2": "nih_gcp_dx_monochrome2_uncompressed.dcm",
    "jpeg_baseline": "siim_nih_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
    "jpeg2000_monochrome1_15bit": "nema_wg04_RG1_J2KI_cr_chest_monochrome1.dcm",
}


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


@pytest.mark.parametrize("kind", sorted(DICOM_KINDS))
def test_dicom_stored_pixels_equal_pydicom(real_cxr: Path, kind: str) -> None:
    path = real_cxr / "dicom" / DICOM_KINDS[kind]
    ds = _read(path)
    radiograph = load_radiograph(path)
    np.testing.assert_array_equal(radiograph.stored, ds.pixel_array)
    assert radiograph.meta["transfer_syntax"] == ds.file_meta.TransferSyntaxUID
    assert radiograph.meta["photometric"] == ds.PhotometricInterpretation


@pytest.mark.parametrize("kind", sorted(DICOM_KINDS))
def test_dicom_lut_path_equals_pydicom(real_cxr: Path, kind: str) -> None:
    path = real_cxr / "dicom" / DICOM_KINDS[kind]
    ds = _read(path)
    expected = apply_modality_lut(ds.pixel_array, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        expected = apply_voi_lut(expected, ds, index=0)
    radiograph = load_radiograph(path)
    np.testing.assert_allclose(radiograph.pixels, expected)
    image = radiograph.to_uint8()
    assert image.dtype == np.uint8 and image.shape == ds.pixel_array.shape
    # The 8-bit image is a monotone map of the LUT output: brighter film, brighter pixel
    # (reversed for MONOCHROME1).
    sign = -1 if ds.PhotometricInterpretation == "MONOCHROME1" else 1
    order = np.argsort(expected.ravel(), kind="stable")
    assert np.all(sign * np.diff(image.ravel()[order].astype(int)) >= 0)


def test_window_of_the_monochrome1_file_is_applied(real_cxr: Path) -> None:
    path = real_cxr / "dicom" / DICOM_KINDS["jpeg2000_monochrome1_15bit"]
    ds = _read(path)
    _, meta = decode_image(path)
    window = meta["windowing"]
    assert window["method"] == "window"
    assert window["center"] == float(ds.WindowCenter)
    assert window["width"] == float(ds.WindowWidth)
    assert meta["bits_stored"] == 15


def test_monochrome1_ends_with_bright_bone_and_dark_lungs(real_cxr: Path) -> None:
    # On this PA film (1955 x 1841) the lung fields lie left and right of the spine in the upper
    # half; the spine and mediastinum are the central columns. Anatomy, not our masks, decides.
    image, _ = decode_image(real_cxr / "dicom" / DICOM_KINDS["jpeg2000_monochrome1_15bit"])
    height, width = image.shape
    rows = slice(int(height * 0.3), int(height * 0.55))
    right_lung = image[rows, int(width * 0.2) : int(width * 0.35)].mean()
    left_lung = image[rows, int(width * 0.65) : int(width * 0.8)].mean()
    spine = image[rows, int(width * 0.46) : int(width * 0.54)].mean()
    assert right_lung < spine - 30 and left_lung < spine - 30


def test_dicom_without_file_meta_reads_with_force(real_cxr: Path, tmp_path: Path) -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    source = real_cxr / "dicom" / DICOM_KINDS["uncompressed_monochrome2"]
    ds = _read(source)
    del ds.file_meta
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(buffer.getvalue())
    assert bare.read_bytes()[128:132] != b"DICM"
    radiograph = load_radiograph(bare)
    assert radiograph.meta["file_meta_header"] is False
    np.testing.assert_array_equal(radiograph.stored, _read(source).pixel_array)


def _with_window(source: Path, tmp_path: Path, center: str | None, width: str | None) -> Path:
    ds = _read(source)
    ds.WindowCenter, ds.WindowWidth = center, width
    path = tmp_path / f"window_{center}_{width}.dcm"
    ds.save_as(path)
    return path


def test_window_elements_without_value_mean_no_window(real_cxr: Path, tmp_path: Path) -> None:
    # Zero-length WindowCenter/WindowWidth are "unknown" in DICOM: decode as if absent.
    source = real_cxr / "dicom" / DICOM_KINDS["uncompressed_monochrome2"]
    assert "WindowCenter" not in _read(source)
    image, meta = decode_image(_with_window(source, tmp_path, None, None))
    expected, expected_meta = decode_image(source)
    np.testing.assert_array_equal(image, expected)
    assert meta["windowing"] == expected_meta["windowing"]
    assert meta["windowing"]["method"] == "data_range"


def test_window_width_below_one_is_a_corrupt_file(real_cxr: Path, tmp_path: Path) -> None:
    source = real_cxr / "dicom" / DICOM_KINDS["uncompressed_monochrome2"]
    path = _with_window(source, tmp_path, "128", "0")
    with pytest.raises(ValueError):  # pydicom's own verdict on this window
        apply_voi_lut(apply_modality_lut(_read(path).pixel_array, _read(path)), _read(path))
    with pytest.raises(InputError) as caught:
        decode_image(path)
    assert caught.value.error_type == "corrupt" and caught.value.path == str(path)


def test_eight_bit_png_is_kept_exactly(real_cxr: Path) -> None:
    path = real_cxr / "images" / "nih_00000013_021.png"  # maximum value 192: no stretching
    image, meta = decode_image(path)
    np.testing.assert_array_equal(image, cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    assert meta["windowing"]["method"] == "none"


def test_sixteen_bit_png_stretches_its_data_range(real_cxr: Path, tmp_path: Path) -> None:
    gray = cv2.imread(str(real_cxr / "images" / "nih_00000001_000.png"), cv2.IMREAD_UNCHANGED)
    assert gray.min() == 0 and gray.max() == 255
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), gray.astype(np.uint16) * 16 + 100)  # 12-bit data with an offset
    image, meta = decode_image(deep)
    np.testing.assert_array_equal(image, gray)
    assert meta["bits_stored"] == 16
    assert meta["windowing"] == {"method": "data_range", "low": 100.0, "high": 100.0 + 255 * 16}


@pytest.mark.parametrize("channels", [3, 4])
def test_grayscale_stored_as_rgb_or_rgba(real_cxr: Path, tmp_path: Path, channels: int) -> None:
    gray = cv2.imread(str(real_cxr / "images" / "mhh_2168a917.png"), cv2.IMREAD_UNCHANGED)
    planes = [gray] * 3 + ([np.full_like(gray, 255)] if channels == 4 else [])
    path = tmp_path / "colour.png"
    cv2.imwrite(str(path), cv2.merge(planes))
    image, meta = decode_image(path)
    np.testing.assert_array_equal(image, gray)
    assert meta["channels"] == channels and meta["colour"] == "gray_as_rgb"


def test_real_rgba_and_rgb_files(real_cxr: Path) -> None:
    for name in ("radiopaedia_pneumocystis-pneumonia-2-L.png", "wikimedia_normal_PA_21F.png"):
        raw = cv2.imread(str(real_cxr / "images" / name), cv2.IMREAD_UNCHANGED)
        image, meta = decode_image(real_cxr / "images" / name)
        assert raw.ndim == 3 and image.shape == raw.shape[:2] and meta["channels"] == raw.shape[2]
        np.testing.assert_array_equal(image, raw[..., 0])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_the_image_upright_as_pillow_does(
    real_cxr: Path, tmp_path: Path, orientation: int
) -> None:
    from PIL import Image, ImageOps

    stored = Image.open(real_cxr / "images" / "nih_00000013_021.png").convert("L")
    stored = stored.crop((0, 0, 1024, 700))  # not square: a transposition shows in the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"oriented-{orientation}.png"  # PNG: lossless, so the pixels compare exactly
    stored.save(path, exif=exif)
    image, meta = decode_image(path)
    with Image.open(path) as reread:
        upright = np.asarray(ImageOps.exif_transpose(reread))
    np.testing.assert_array_equal(image, upright)
    assert meta["exif_orientation"] == orientation
    assert (meta["source_width"], meta["source_height"]) == (upright.shape[1], upright.shape[0])


@pytest.mark.parametrize("orientation", [0, 9, 300])
def test_an_invalid_exif_orientation_leaves_the_image_as_stored(
    real_cxr: Path, tmp_path: Path, orientation: int
) -> None:
    from PIL import Image

    path = tmp_path / "odd.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.open(real_cxr / "images" / "nih_00000013_021.png").convert("L").save(path, exif=exif)
    image, meta = decode_image(path)
    np.testing.assert_array_equal(image, cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
    assert meta["exif_orientation"] == 1


def test_exif_rotated_jpeg_equals_opencvs_oriented_read(real_cxr: Path, tmp_path: Path) -> None:
    from PIL import Image

    turned = Image.open(real_cxr / "images" / "nih_00000001_000.png").convert("L").rotate(90)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned anticlockwise: show it turned clockwise
    path = tmp_path / "turned.jpg"
    turned.save(path, exif=exif, quality=95)
    image, meta = decode_image(path)
    np.testing.assert_array_equal(image, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    assert meta["exif_orientation"] == 6


def test_very_large_image_is_capped(real_cxr: Path, tmp_path: Path) -> None:
    gray = cv2.imread(str(real_cxr / "images" / "mhh_2168a917.png"), cv2.IMREAD_UNCHANGED)
    big = cv2.resize(gray, (5200, round(5200 * gray.shape[0] / gray.shape[1])))
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), big)
    image, meta = decode_image(path, max_side=1024)
    assert max(image.shape) == 1024
    assert (meta["source_width"], meta["source_height"]) == (big.shape[1], big.shape[0])
    assert meta["scale"] == pytest.approx(1024 / 5200)
    expected = cv2.resize(
        cv2.imread(str(path), cv2.IMREAD_GRAYSCALE),
        (image.shape[1], image.shape[0]),
        interpolation=cv2.INTER_AREA,
    )
    np.testing.assert_array_equal(image, expected)


def test_real_large_jpeg(real_cxr: Path) -> None:
    image, meta = decode_image(real_cxr / "images" / "kermany_IM-0101-0001.jpeg", max_side=512)
    assert meta["source_width"] == 5840 and max(image.shape) == 512


def _corrupt_png(real_cxr: Path, tmp_path: Path) -> Path:
    data = bytearray((real_cxr / "images" / "nih_00000001_000.png").read_bytes())
    for index in range(200, len(data) - 200, 997):
        data[index] ^= 0xFF
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    return path


def _cut(source: Path, tmp_path: Path, name: str, fraction: float = 0.5) -> Path:
    data = source.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _unsupported_syntax(real_cxr: Path, tmp_path: Path, uid: str, name: str) -> Path:
    ds = _read(real_cxr / "dicom" / DICOM_KINDS["jpeg_baseline"])
    ds.file_meta.TransferSyntaxUID = uid
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=False)
    return path


def _flat_dicom(real_cxr: Path, tmp_path: Path) -> Path:
    """The real uncompressed DICOM with every stored pixel set to one value."""
    ds = _read(real_cxr / "dicom" / DICOM_KINDS["uncompressed_monochrome2"])
    ds.PixelData = np.full_like(ds.pixel_array, 100).tobytes()
    path = tmp_path / "flat.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def make_bad_files(real_cxr: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """One file of each bad kind, with the error type it must give."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((300, 240), 37, np.uint8))
    text = tmp_path / "notes.png"
    text.write_text("this is a text file, not a radiograph\n" * 20)
    return {
        "empty": (empty, "empty"),
        "text_named_png": (text, "not_an_image"),
        "blank_png": (blank, "not_an_image"),
        "blank_dicom": (_flat_dicom(real_cxr, tmp_path), "not_an_image"),
        "corrupt_png": (_corrupt_png(real_cxr, tmp_path), "corrupt"),
        "truncated_png": (
            _cut(real_cxr / "images" / "mhh_2168a917.png", tmp_path, "cut.png"),
            "truncated",
        ),
        "truncated_jpeg": (
            _cut(real_cxr / "images" / "kermany_person1_virus_6.jpeg", tmp_path, "cut.jpg"),
            "truncated",
        ),
        "truncated_dicom": (
            _cut(real_cxr / "dicom" / DICOM_KINDS["uncompressed_monochrome2"], tmp_path, "a.dcm"),
            "truncated",
        ),
        "truncated_jpeg2000_dicom": (
            _cut(real_cxr / "dicom" / DICOM_KINDS["jpeg2000_monochrome1_15bit"], tmp_path, "b.dcm"),
            "truncated",
        ),
        # MPEG2 video: a real transfer syntax with no decoder here.
        "unsupported_syntax": (
            _unsupported_syntax(real_cxr, tmp_path, "1.2.840.10008.1.2.4.100", "mpeg2.dcm"),
            "unsupported_syntax",
        ),
        # A UID that is no transfer syntax at all.
        "unknown_syntax": (
            _unsupported_syntax(real_cxr, tmp_path, "1.2.3.4.5", "private.dcm"),
            "unsupported_syntax",
        ),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "empty",
        "text_named_png",
        "blank_png",
        "blank_dicom",
        "corrupt_png",
        "truncated_png",
        "truncated_jpeg",
        "truncated_dicom",
        "truncated_jpeg2000_dicom",
        "unsupported_syntax",
        "unknown_syntax",
    ],
)
def test_bad_files_raise_input_error_with_their_type(
    real_cxr: Path, tmp_path: Path, kind: str
) -> None:
    path, error_type = make_bad_files(real_cxr, tmp_path)[kind]
    with pytest.raises(InputError) as caught:
        decode_image(path)
    assert caught.value.error_type == error_type
    assert caught.value.path == str(path) and caught.value.reason
