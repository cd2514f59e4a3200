"""The reference's body mask: the image as the model saw it, blurred, Otsu-thresholded, inverted."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = [
    "REFERENCE_MODEL_VIEW_SIDE",
    "model_view_side",
    "reference_body_mask",
    "reference_model_view",
]

#: Side of the square image MedGemma's processor feeds the vision tower; the reference built its
#: body mask on this "model view".
REFERENCE_MODEL_VIEW_SIDE = 896


def model_view_side(model_id: str | os.PathLike | None) -> int:
    """The square image side of a model's processor: from a local model folder, else 896.

    Reads ``processor_config.json`` (``image_processor.size.height``, transformers 5) or
    ``preprocessor_config.json`` (``size.height``, as on the hub) when ``model_id`` is a folder.
    """
    import json

    folder = Path(model_id) if model_id else None
    if folder is None or not folder.is_dir():
        return REFERENCE_MODEL_VIEW_SIDE
    for name, keys in (
        ("processor_config.json", ("image_processor", "size", "height")),
        ("preprocessor_config.json", ("size", "height")),
    ):
        path = folder / name
        if not path.is_file():
            continue
        value = json.loads(path.read_text())
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int) and value > 0:
            return value
    return REFERENCE_MODEL_VIEW_SIDE


def reference_model_view(image: np.ndarray, *, side: int = REFERENCE_MODEL_VIEW_SIDE) -> np.ndarray:
    """The grey image the reference built its mask on: the processor's view, decoded back.

    The reference (``model_view_image``) took ``pixel_values`` from the processor (a bilinear
    resize to ``side x side`` that ignores the aspect ratio, rescaled and normalised), undid the
    normalisation, converted to bytes by truncation and then to grey with the weights
    0.2989 / 0.5870 / 0.1140, truncating again (a grey pixel of value ``v > 0`` comes back as
    ``v - 1`` when the weights sum below 1).

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, 3), uint8
    side : int
        The processor's square input size (896 for MedGemma 4B).

    Returns
    -------
    ndarray of shape (side, side), uint8
    """
    from PIL import Image

    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"expected an 8-bit grey or RGB image, got {array.dtype} {array.shape}")
    rgb = Image.fromarray(array).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    # Normalising with mean = std = 0.5 and undoing it is the identity up to float32 rounding,
    # which the truncating byte conversion can turn into one grey level: keep the round trip.
    scaled = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
    normalised = (scaled - np.float32(0.5)) / np.float32(0.5)
    restored = np.clip(normalised * np.float32(0.5) + np.float32(0.5), 0.0, 1.0)
    as_bytes = (restored * np.float32(255.0)).astype(np.uint8).astype(np.float64)
    grey = 0.2989 * as_bytes[..., 0] + 0.5870 * as_bytes[..., 1] + 0.1140 * as_bytes[..., 2]
    return grey.astype(np.uint8)


def reference_body_mask(image: np.ndarray) -> np.ndarray:
    """The reference's "tight body mask", inverted Otsu threshold included (its defect).

    Recipe of ``tight_body_mask``: Gaussian blur (sigma 2, kernel size from sigma), Otsu
    threshold (bright = 255), inversion, opening with a 7 x 7 square, closing with a 15 x 15
    square, erosion with a 9 x 9 square (OpenCV, default anchors and borders). Because of the
    inversion the mask holds the *dark* pixels: outside air and lung fields.

    Parameters
    ----------
    image : ndarray of shape (H, W), uint8
        The image to threshold. The reference applied it to :func:`reference_model_view`.

    Returns
    -------
    ndarray of shape (H, W), bool
    """
    import cv2

    grey = np.asarray(image)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got {grey.dtype} {grey.shape}")
    blurred = cv2.GaussianBlur(grey, (0, 0), 2)
    _, bright = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = 255 - bright
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((7, 7), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8))
    mask = cv2.erode(mask, np.ones((9, 9), np.uint8))
    return mask > 0
