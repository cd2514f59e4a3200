"""One image's maps against boxes in MS-CXR's format (``cxr-attention explain --boxes``).

Every row of the boxes file whose ``dicom_id`` is the image's file stem counts: their boxes form
one region (their union), and every map gets the ``box_*`` columns of
:func:`cxr_attention.grounding.regions.box_metrics`. Their phrases (``label_text``) are also
target terms of the image's maps (:func:`image_phrases`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable

import numpy as np
import pandas as pd

from cxr_attention.grounding.datasets import read_ms_cxr
from cxr_attention.grounding.phrases import phrase_term
from cxr_attention.grounding.regions import box_metrics, region_from_boxes

__all__ = ["BOX_COLUMNS", "image_box_metrics", "image_phrases"]

BOX_COLUMNS = (
    "box_pointing_game",
    "box_mass",
    "box_area",
    "box_lift",
    "box_cnr",
    "box_iou_q90",
)
# Boxes drawn on a frame whose aspect ratio differs from the image's by more than this are
# probably for another image (or a cropped one).
_ASPECT_TOLERANCE = 0.01

logger = logging.getLogger(__name__)


def image_phrases(boxes_csv: str | os.PathLike, image_stem: str) -> list[str]:
    """The phrases of the file's rows for this image, as target terms (file order, once each)."""
    terms = [phrase_term(a.phrase) for a in read_ms_cxr(boxes_csv) if a.image_id == image_stem]
    return list(dict.fromkeys(term for term in terms if term))


def image_box_metrics(
    maps: Iterable[tuple[object, np.ndarray]],
    boxes_csv: str | os.PathLike,
    image_stem: str,
    *,
    source_size: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """``map_id`` and the ``box_*`` columns for each ``(record, grid)`` of ``maps``.

    Parameters
    ----------
    maps : iterable of (record with ``map_id``, grid)
    boxes_csv : path
        MS-CXR local-alignment CSV (``dicom_id, x, y, w, h, image_width, image_height``, ...).
    image_stem : str
        The image's file name without its suffix.
    source_size : (width, height), optional
        The image's own size, to warn when the boxes' frame has another aspect ratio.

    Returns
    -------
    DataFrame
        One row per map; the box columns are blank when no row of the file is for this image.
    """
    annotations = [a for a in read_ms_cxr(boxes_csv) if a.image_id == image_stem]
    maps = list(maps)
    if not annotations:
        logger.warning("%s: no box for %s (dicom_id = the file stem)", boxes_csv, image_stem)
        return pd.DataFrame(
            [
                {"map_id": record.map_id, **dict.fromkeys(BOX_COLUMNS, math.nan)}
                for record, _ in maps
            ],
            columns=["map_id", *BOX_COLUMNS],
        )
    width, height = annotations[0].image_width, annotations[0].image_height
    if source_size is not None:
        source_aspect = source_size[0] / source_size[1]
        if abs(math.log((width / height) / source_aspect)) > _ASPECT_TOLERANCE:
            logger.warning(
                "%s: boxes drawn on %d x %d, the image is %d x %d (another aspect ratio)",
                boxes_csv,
                width,
                height,
                *source_size,
            )
    boxes = [box for annotation in annotations for box in annotation.boxes]
    rows = []
    for record, grid in maps:
        region = region_from_boxes(boxes, width, height, grid.shape)
        rows.append({"map_id": record.map_id, **box_metrics(grid, region)})
    return pd.DataFrame(rows, columns=["map_id", *BOX_COLUMNS])
