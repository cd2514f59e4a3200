"""The reference's two body masks: the batch app's inverted Otsu mask and the runner's mask.

The batch app (``tight_body_mask``, ``medgemma_launch_mimic_fixed.py``) inverted its Otsu mask,
so it kept the dark pixels. The runner that produced the paper's per-map numbers ("inside-body
~0.16") imported ``unified_attention_system.BodyMaskGenerator``, a module missing from the
reference repository; ``medgemma_attention_extraction.py`` (:598-631 at ``ad629aa``) holds a class
of that name and interface, not inverted, keeping the largest contour:
:func:`runner_body_mask`. Replaying both on a reference-shaped grid
(:mod:`cxr_attention.reference.mask_replay`) shows that the runner-style mask reproduces the
paper's 0.13-0.19 and the inverted one does not (docs/reference_study.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = [
    "REFERENCE_MODEL_VIEW_SIDE",
    "model_view_side",
    "reference_body_mask",
    "reference_model_view",
    "runner_body_mask",
]

#: Side of the square image MedGemma's processor feeds the vision tower; the reference built its
#: body mask on this "model view".
REFERENCE_MODEL_VIEW_SIDE = 896


def _grey_or_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` as an array, checked to be 8-bit grey (H, W) or RGB (H, W, 3)."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"expected an 8-bit grey or RGB image, got {array.dtype} {array.shape}")
    return array


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

    array = _grey_or_rgb(image)
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


def runner_body_mask(image: np.ndarray) -> np.ndarray:
    """The runner's body mask: ``BodyMaskGenerator.create_body_mask`` (not inverted).

    Recipe (``medgemma_attention_extraction.py`` :598-631 at ``ad629aa``): grey image (OpenCV's
    RGB-to-grey for a colour array), Otsu threshold (bright = 255, no blur), closing then opening
    with a 5 x 5 ellipse, the largest external contour filled, eroded once with the same ellipse.
    The filled contour holds the body *and* the lungs inside it; outside air is left out. The
    runner applied it to the image file as loaded (``Image.open(path).convert("RGB")``), at full
    resolution; without any contour the mask is the whole image.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, 3), uint8

    Returns
    -------
    ndarray of shape (H, W), bool
    """
    import cv2

    array = _grey_or_rgb(image)
    grey = cv2.cvtColor(array, cv2.COLOR_RGB2GRAY) if array.ndim == 3 else array
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.ones(grey.shape, dtype=bool)
    largest = max(contours, key=cv2.contourArea)
    mask = np.zeros_like(binary)
    cv2.drawContours(mask, [largest], -1, 255, -1)
    return cv2.erode(mask, kernel, iterations=1) > 0
