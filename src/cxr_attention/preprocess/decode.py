"""Decode DICOM, JPEG and PNG radiographs into 8-bit grayscale images.

The output convention is the radiological one: bone and soft tissue bright, air and lungs dark.
DICOM goes through pydicom (with the pylibjpeg handlers for JPEG Baseline and JPEG 2000), then the
modality LUT (rescale slope/intercept or a LUT sequence), then the VOI LUT or window, then
MONOCHROME1 inversion. JPEG and PNG are read with OpenCV exactly as stored (8 or 16 bit, grayscale
or grayscale written as RGB/RGBA), then turned upright as their EXIF orientation says (viewers
show a radiograph so; MIMIC-CXR-JPG files carry none). An image whose pixels are all equal is no
radiograph and is refused.

Model normalisation (mean/std, resizing to the model's input) is the image processor's job and is
deliberately absent here.

Every unusable file raises :class:`cxr_attention.io.InputError` with one of the
``error_type`` values in :data:`ERROR_TYPES`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr_attention.io import InputError

__all__ = [
    "DICOM_SUFFIXES",
    "ERROR_TYPES",
    "IMAGE_SUFFIXES",
    "LATERAL_VIEWS",
    "Radiograph",
    "decode_image",
    "is_lateral_view",
    "load_radiograph",
    "resize_long_side",
]

ERROR_TYPES = (
    "missing",
    "corrupt",
    "truncated",
    "empty",
    "not_an_image",
    "unsupported_syntax",
    "wrong_view",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")

# DICOM ViewPosition (0018,5101) values and MIMIC "ViewPosition" strings that mean a lateral film.
LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "LLD", "RLD", "XTABLE LATERAL"})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) in little endian
_TAIL = 1024  # an intact PNG ends with IEND, a JPEG with EOI, within this many bytes
_EXIF_ORIENTATION = 0x0112


@dataclass
class Radiograph:
    """A decoded radiograph before quantisation to 8 bit.

    Attributes
    ----------
    stored : numpy.ndarray
        The 2-D pixel array as stored in the file (for DICOM exactly ``ds.pixel_array``; for
        JPEG/PNG the grayscale plane OpenCV returns, uint8 or uint16).
    pixels : numpy.ndarray
        2-D float64 array after the modality LUT and the VOI LUT/window (DICOM), or ``stored`` as
        float (JPEG/PNG). Larger means brighter on the film *before* MONOCHROME1 inversion.
    low, high : float
        The value range of ``pixels`` that maps to 0 and 255 (the window's output range, or the
        stored bit range, or the data range, see ``meta["windowing"]``).
    invert : bool
        True for MONOCHROME1 (larger value = darker), so that the 8-bit image is inverted.
    meta : dict
        What was read and done: ``source_path``, ``format``, ``transfer_syntax``,
        ``photometric``, ``bits_stored``, ``windowing``, ``view_position``, ``channels``.
    """

    stored: np.ndarray
    pixels: np.ndarray
    low: float
    high: float
    invert: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def to_uint8(self) -> np.ndarray:
        """Map ``pixels`` linearly from ``[low, high]`` to 0..255 (bone bright, lungs dark)."""
        if np.issubdtype(self.stored.dtype, np.uint8) and (self.low, self.high) == (0.0, 255.0):
            image = self.stored.copy()  # identity: keep 8-bit files bit-exact
        else:
            span = max(self.high - self.low, np.finfo(np.float64).eps)
            scaled = (self.pixels - self.low) * (255.0 / span)
            image = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        if self.invert:
            image = 255 - image
        return image


def is_lateral_view(view: str | None) -> bool:
    """True when a ViewPosition-like string names a lateral film (``LL``, ``RL``, ``LATERAL``)."""
    return view is not None and str(view).strip().upper() in LATERAL_VIEWS


def load_radiograph(path: str | os.PathLike) -> Radiograph:
    """Read one DICOM, JPEG or PNG file.

    The format is chosen by the file's signature (PNG, JPEG, the DICOM ``DICM`` marker), not by
    its name; a file with neither is tried as a DICOM data set without a file meta header
    (``force=True``).

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    Radiograph

    Raises
    ------
    cxr_attention.io.InputError
        ``missing``, ``empty``, ``truncated``, ``corrupt``, ``not_an_image`` or
        ``unsupported_syntax``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise InputError(path, "no such file", error_type="missing") from error
    except OSError as error:
        raise InputError(path, f"cannot read the file: {error}", error_type="corrupt") from error
    if not data:
        raise InputError(path, "the file is empty (0 bytes)", error_type="empty")
    if data.startswith(_PNG_SIGNATURE) or data.startswith(_JPEG_SOI):
        return _load_raster(path, data)
    return _load_dicom(path, data)


def decode_image(
    path: str | os.PathLike, *, max_side: int | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode a radiograph into an 8-bit grayscale image with its long side capped.

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM, JPEG or PNG file.
    max_side : int or None
        Largest allowed width or height; larger images are shrunk with area interpolation
        (aspect ratio kept). ``None`` keeps the source size.

    Returns
    -------
    image : numpy.ndarray
        uint8, 2-D, bone bright and lungs dark.
    meta : dict
        ``source_path, format, transfer_syntax, photometric, bits_stored, windowing,
        view_position, channels, source_width, source_height, width, height, scale`` where
        ``scale = width / source_width``.
    """
    radiograph = load_radiograph(path)
    image = radiograph.to_uint8()
    if image.min() == image.max():
        raise InputError(
            path,
            f"every pixel is {int(image[0, 0])} after decoding: a blank image, not a radiograph",
            error_type="not_an_image",
        )
    source_height, source_width = image.shape
    image = resize_long_side(image, max_side)
    height, width = image.shape
    meta = dict(radiograph.meta)
    meta.update(
        source_width=int(source_width),
        source_height=int(source_height),
        width=int(width),
        height=int(height),
        scale=float(width / source_width),
    )
    return image, meta


def resize_long_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink ``image`` so its long side is at most ``max_side`` (INTER_AREA); never enlarge."""
    import cv2

    if max_side is None or max(image.shape[:2]) <= max_side:
        return image
    if max_side < 1:
        raise ValueError(f"max_side must be a positive integer, got {max_side}")
    height, width = image.shape[:2]
    factor = max_side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# --- JPEG and PNG -------------------------------------------------------------------------------


def _load_raster(path: Path, data: bytes) -> Radiograph:
    import cv2

    is_png = data.startswith(_PNG_SIGNATURE)
    kind = "png" if is_png else "jpeg"
    if is_png and b"IEND" not in data[-_TAIL:]:
        raise InputError(path, "PNG ends before its IEND chunk", error_type="truncated")
    # libjpeg fills a cut-off JPEG with grey and only warns, so check the end-of-image marker.
    if not is_png and _JPEG_EOI not in data[-_TAIL:]:
        raise InputError(path, "JPEG ends before its end-of-image marker", error_type="truncated")
    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise InputError(path, f"OpenCV cannot decode it: {error}", error_type="corrupt") from error
    if decoded is None or decoded.size == 0:
        raise InputError(path, f"OpenCV cannot decode this {kind} file", error_type="corrupt")
    if decoded.dtype not in (np.uint8, np.uint16):
        raise InputError(
            path, f"unsupported {kind} pixel type {decoded.dtype}", error_type="corrupt"
        )
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    stored, colour = _to_grayscale(decoded)
    orientation = _exif_orientation(data)
    stored = np.ascontiguousarray(_upright(stored, orientation))
    bits = 8 * stored.dtype.itemsize
    if bits == 8:
        low, high, windowing = 0.0, 255.0, {"method": "none", "low": 0.0, "high": 255.0}
    else:
        # 16-bit files often use only 10-14 bits: stretch the data range, not the type range.
        low, high = float(stored.min()), float(stored.max())
        windowing = {"method": "data_range", "low": low, "high": high}
    meta = {
        "source_path": str(path),
        "format": kind,
        "transfer_syntax": None,
        "photometric": "MONOCHROME2",
        "bits_stored": bits,
        "windowing": windowing,
        "view_position": None,
        "channels": channels,
        "colour": colour,
        "exif_orientation": orientation,
    }
    return Radiograph(stored, stored.astype(np.float64), low, high, invert=False, meta=meta)


def _exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8) of a JPEG or PNG; 1 (upright) when absent or unreadable."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the headers, not the pixels
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # Pillow raises many types on odd headers; OpenCV already read the pixels
        return 1  # a damaged EXIF block does not make the pixels unusable
    return int(orientation) if orientation in range(1, 9) else 1


def _upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation: the image as a viewer shows it (row 0 at the top)."""
    transforms = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: np.rot90(a, 2),
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.T,  # mirrored along the main diagonal
        6: lambda a: np.rot90(a, -1),  # stored turned 90 degrees anticlockwise
        7: lambda a: np.rot90(a, 2).T,  # mirrored along the other diagonal
        8: lambda a: np.rot90(a, 1),  # stored turned 90 degrees clockwise
    }
    return transforms[orientation](image)


def _to_grayscale(decoded: np.ndarray) -> tuple[np.ndarray, str]:
    """Return one plane of a grayscale image stored as 1, 3 or 4 channels, and how it was found."""
    import cv2

    if decoded.ndim == 2:
        return decoded, "gray"
    colour_planes = decoded[..., :3]  # drop alpha: radiographs saved as RGBA are opaque
    if decoded.shape[2] == 1:
        return decoded[..., 0], "gray"
    first = colour_planes[..., 0]
    if np.array_equal(first, colour_planes[..., 1]) and np.array_equal(
        first, colour_planes[..., 2]
    ):
        return np.ascontiguousarray(first), "gray_as_rgb"
    # Tinted or lossy-compressed RGB: luminance is the faithful single plane.
    return cv2.cvtColor(np.ascontiguousarray(colour_planes), cv2.COLOR_BGR2GRAY), "rgb_to_gray"


# --- DICOM --------------------------------------------------------------------------------------


def _load_dicom(path: Path, data: bytes) -> Radiograph:
    import pydicom
    from pydicom.errors import InvalidDicomError

    has_marker = len(data) >= 132 and data[128:132] == b"DICM"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a cut-off file warns, then is classified below
            ds = pydicom.dcmread(path, force=not has_marker)
    except InvalidDicomError as error:
        raise InputError(
            path, f"not a DICOM, JPEG or PNG file: {error}", error_type="not_an_image"
        ) from error
    except Exception as error:  # malformed files raise many types from deep inside pydicom
        raise InputError(
            path, f"pydicom cannot parse the data set: {error}", error_type="corrupt"
        ) from error
    if "PixelData" not in ds:
        if _PIXEL_DATA_TAG in data:
            # pydicom stops quietly at a cut-off element: the tag is there, the element is not.
            raise InputError(path, "file ends inside the pixel data", error_type="truncated")
        if has_marker:
            raise InputError(path, "DICOM data set without pixel data", error_type="not_an_image")
        if path.suffix.lower() in DICOM_SUFFIXES:
            raise InputError(
                path, "named as DICOM but holds no readable data set", error_type="corrupt"
            )
        raise InputError(path, "not a DICOM, JPEG or PNG file", error_type="not_an_image")
    return _dicom_pixels(path, ds, has_file_meta=has_marker)


def _dicom_pixels(path: Path, ds: Any, *, has_file_meta: bool) -> Radiograph:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    file_meta = getattr(ds, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax is None:
        # Without a file meta header pydicom guessed the encoding while reading the data set;
        # the pixel decoders need it written down as a transfer syntax.
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        if file_meta is None:
            ds.file_meta = _empty_file_meta()
        implicit = getattr(ds, "original_encoding", (True, True))[0]
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta.TransferSyntaxUID = syntax
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(
            path,
            f"photometric interpretation {photometric} is not grayscale",
            error_type="not_an_image",
        )
    stored = _pixel_array(path, ds, syntax)
    if stored.ndim != 2:
        raise InputError(
            path, f"expected one 2-D frame, got shape {stored.shape}", error_type="not_an_image"
        )

    try:
        pixels = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        window = _voi_description(ds)
        if window is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom warns about LUT descriptors it fixes
                pixels = np.asarray(apply_voi_lut(pixels, ds, index=0), dtype=np.float64)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
        # A malformed rescale, LUT or window (e.g. a window width below 1) cannot be applied.
        raise InputError(
            path, f"invalid modality or VOI transform: {error}", error_type="corrupt"
        ) from error
    if window is not None:
        low, high = window.pop("output_low"), window.pop("output_high")
        window["output_range"] = [low, high]  # the LUT output that maps to 0..255
    else:
        low, high = float(pixels.min()), float(pixels.max())
        window = {"method": "data_range", "low": low, "high": high}
    view = ds.get("ViewPosition")
    meta = {
        "source_path": str(path),
        "format": "dicom",
        "transfer_syntax": str(syntax),
        "transfer_syntax_name": getattr(syntax, "name", str(syntax)),
        "file_meta_header": bool(has_file_meta),
        "photometric": photometric,
        "bits_stored": int(ds.get("BitsStored", 8 * stored.dtype.itemsize)),
        "windowing": window,
        "view_position": str(view).strip() if view else None,
        "channels": 1,
        "modality": str(ds.get("Modality", "")) or None,
    }
    return Radiograph(stored, pixels, low, high, invert=photometric == "MONOCHROME1", meta=meta)


def _empty_file_meta() -> Any:
    from pydicom.dataset import FileMetaDataset

    return FileMetaDataset()


def _pixel_array(path: Path, ds: Any, syntax: Any) -> np.ndarray:
    """``ds.pixel_array`` with its failures sorted into truncated / corrupt / unsupported."""
    from pydicom.pixels.utils import get_expected_length
    from pydicom.uid import UID

    syntax = UID(str(syntax))
    if not syntax.is_transfer_syntax:
        raise InputError(
            path, f"{syntax} is not a known transfer syntax", error_type="unsupported_syntax"
        )
    if not syntax.is_compressed:
        try:
            expected = get_expected_length(ds, unit="bytes")
        except (AttributeError, KeyError, TypeError, ValueError) as error:
            raise InputError(
                path, f"incomplete image description: {error}", error_type="corrupt"
            ) from error
        if len(ds.PixelData) < expected:
            raise InputError(
                path,
                f"pixel data has {len(ds.PixelData)} bytes, the header needs {expected}",
                error_type="truncated",
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(ds.pixel_array)
    except NotImplementedError as error:
        raise InputError(
            path,
            f"no decoder for transfer syntax {syntax}: {error}",
            error_type="unsupported_syntax",
        ) from error
    except Exception as error:  # the decoder plugins raise many types on damaged data
        message = str(error)
        error_type = "truncated" if _looks_truncated(message) else "corrupt"
        raise InputError(
            path, f"pixel data cannot be decoded: {message}", error_type=error_type
        ) from error


def _looks_truncated(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in ("truncat", "end of", "eof", "too short", "not enough"))


def _voi_description(ds: Any) -> dict[str, Any] | None:
    """Describe the VOI transform pydicom will apply, with its output range; None if absent."""
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        descriptor = [int(v) for v in item.LUTDescriptor]
        bits = descriptor[2]
        return {
            "method": "voi_lut_sequence",
            "lut_entries": descriptor[0] or 65536,
            "first_mapped": descriptor[1],
            "output_low": 0.0,
            "output_high": float(2**bits - 1),
        }
    # An element present with no value (zero length) means "unknown" (PS3.5 7.4): no window.
    if ds.get("WindowCenter") in (None, "") or ds.get("WindowWidth") in (None, ""):
        return None
    center = ds["WindowCenter"].value
    width = ds["WindowWidth"].value
    center = float(center[0] if ds["WindowCenter"].VM > 1 else center)
    width = float(width[0] if ds["WindowWidth"].VM > 1 else width)
    # The output range of pydicom's apply_windowing (PS3.3 C.11.2.1.2): the stored range, mapped
    # through the rescale when there is one.
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        y_low, y_high = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        y_low, y_high = 0.0, float(2**bits - 1)
    else:
        y_low, y_high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_low = y_low * float(slope) + float(intercept)
        y_high = y_high * float(slope) + float(intercept)
    return {
        "method": "window",
        "function": str(ds.get("VOILUTFunction", "LINEAR")).upper(),
        "center": center,
        "width": width,
        "output_low": min(y_low, y_high),
        "output_high": max(y_low, y_high),
    }
