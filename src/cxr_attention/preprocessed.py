"""One accessor for a preprocessed image: the image, its masks and the model's pixels.

The preprocess stage writes per image a grey PNG, a body mask (0/255) and lung labels (0 / 1
patient right / 2 patient left), listed in ``preprocess/shard-<k>.csv`` (docs/architecture.md).
Every reader of those files goes through :class:`PreprocessedImage`, so a missing or unreadable
file is always the same error: :class:`cxr_attention.io.InputError` naming the file and the
reason, with error type ``missing_<what>`` or ``bad_<what>`` (``what``: image, mask).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_attention.io import InputError, read_table

__all__ = [
    "LEFT_LUNG_LABEL",
    "RIGHT_LUNG_LABEL",
    "PreprocessTable",
    "PreprocessedImage",
    "read_grey",
]

# The lung mask file's labels (0 is background).
RIGHT_LUNG_LABEL = 1  # patient's right lung (the image's left on a frontal view)
LEFT_LUNG_LABEL = 2  # patient's left lung


def read_grey(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """A PNG/JPEG as a 2-D uint8 array (a colour file's grey levels, 16 bits scaled to 8).

    Raises
    ------
    InputError
        ``missing_<what>`` when the file does not exist, ``bad_<what>`` when it cannot be decoded.
    """
    import cv2  # heavy import, only needed here

    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} file not found", error_type=f"missing_{what}")
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InputError(path, f"{what} cannot be decoded", error_type=f"bad_{what}")
    if array.ndim == 3:  # a colour PNG: every channel of a mask holds the same labels
        array = cv2.cvtColor(
            array, cv2.COLOR_BGRA2GRAY if array.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        )
    if array.dtype == np.uint16:
        array = (array.astype(np.float64) / 257.0).round().astype(np.uint8)
    return array


class PreprocessedImage:
    """The files of one preprocessed image, each read once, on first use.

    Parameters
    ----------
    dicom_id : str
    paths : mapping
        ``image``, ``body_mask``, ``lung_mask``: paths (relative to ``root``); a blank or absent
        one is a missing file. ``mask_flags`` (optional): the lung mask's quality flags.
    root : path-like
        Folder that relative paths start from (the repository root under Snakemake).
    """

    def __init__(
        self, dicom_id: str, paths: Mapping[str, Any], root: str | os.PathLike = "."
    ) -> None:
        self.dicom_id = str(dicom_id)
        flags = paths.get("mask_flags")
        #: Why the lung mask is implausible (``;``-joined; blank when it passed every check).
        self.mask_flags = flags if isinstance(flags, str) else ""
        self._paths = {k: str(v) for k, v in paths.items() if isinstance(v, str | os.PathLike)}
        self._root = Path(root)
        self._cache: dict[str, np.ndarray] = {}

    def path(self, column: str) -> Path:
        """The resolved path of ``column`` (``image``, ``body_mask``, ``lung_mask``)."""
        text = self._paths.get(column, "")
        if not text:
            raise InputError(
                f"<{column} of {self.dicom_id}>",
                f"no {column} for this image",
                error_type="missing_image" if column == "image" else "missing_mask",
            )
        path = Path(text)
        return path if path.is_absolute() else self._root / path

    def _read(self, column: str, what: str) -> np.ndarray:
        if column not in self._cache:
            self._cache[column] = read_grey(self.path(column), what)
        return self._cache[column]

    def image(self) -> np.ndarray:
        """The preprocessed radiograph, 2-D uint8."""
        return self._read("image", "image")

    def body_mask(self) -> np.ndarray:
        """The body mask as stored: 2-D uint8, non-zero inside the body."""
        return self._read("body_mask", "mask")

    def lung_labels(self) -> np.ndarray:
        """The lung labels: 2-D, 0 background, 1 patient right, 2 patient left.

        Raises ``InputError`` (``bad_mask``) for any other value.
        """
        labels = self._read("lung_mask", "mask")
        if not np.all(np.isin(labels, (0, RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL))):
            raise InputError(
                self.path("lung_mask"),
                "lung labels must be 0 (background), 1 (patient right) or 2 (patient left)",
                error_type="bad_mask",
            )
        return labels

    def model_pixels(self, processor: Any) -> Any:
        """The pixels the model sees: the image, as RGB, through ``processor.image_processor``."""
        from PIL import Image

        rgb = Image.fromarray(self.image()).convert("RGB")
        return processor.image_processor(rgb, return_tensors="pt")["pixel_values"]


class PreprocessTable:
    """The preprocessed images of a ``preprocess/shard-<k>.csv`` table, by ``dicom_id``."""

    def __init__(self, csv: str | os.PathLike, root: str | os.PathLike | None = None) -> None:
        table = read_table(csv, text=True)
        self._rows = (
            table.drop_duplicates("dicom_id").set_index("dicom_id")
            if "dicom_id" in table.columns
            else pd.DataFrame()
        )
        self._root = Path.cwd() if root is None else Path(root)
        self._images: dict[str, PreprocessedImage] = {}

    def __contains__(self, dicom_id: str) -> bool:
        return dicom_id in self._rows.index

    def __getitem__(self, dicom_id: str) -> PreprocessedImage:
        """The image ``dicom_id``; one that the table lacks has every file missing."""
        if dicom_id not in self._images:
            row = self._rows.loc[dicom_id].to_dict() if dicom_id in self else {}
            self._images[dicom_id] = PreprocessedImage(dicom_id, row, self._root)
        return self._images[dicom_id]
