"""One image's maps against its annotations (``cxr-attention explain --boxes``, the app's Checks).

The annotations of the image form one region (their union), and every map gets the ``box_*``
columns of :func:`cxr_attention.grounding.regions.box_metrics`. Their phrases (MS-CXR's
``label_text``) are also target terms of the image's maps (:func:`annotation_phrases`).
``explain --boxes`` reads them from an MS-CXR-format file (:func:`read_image_boxes`); the app's
Checks tab passes those of an uploaded file in any released format, or the run's own.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from cxr_attention.grounding.datasets import Annotation, read_ms_cxr
from cxr_attention.grounding.phrases import phrase_term
from cxr_attention.grounding.regions import (
    Region,
    box_metrics,
    region_from_boxes,
    region_from_mask,
)

__all__ = [
    "BOX_COLUMNS",
    "annotation_phrases",
    "image_box_metrics",
    "read_image_boxes",
    "union_region",
]

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


def read_image_boxes(boxes_csv: str | os.PathLike, image_stem: str) -> list[Annotation]:
    """The annotations of an MS-CXR-format file whose ``dicom_id`` is ``image_stem`` (a warning
    when there are none)."""
    annotations = [a for a in read_ms_cxr(boxes_csv) if a.image_id == image_stem]
    if not annotations:
        logger.warning("%s: no box for %s (dicom_id = the file stem)", boxes_csv, image_stem)
    return annotations


def annotation_phrases(annotations: Iterable[Annotation]) -> list[str]:
    """The annotations' phrases, as target terms (in order, once each)."""
    terms = [phrase_term(a.phrase) for a in annotations]
    return list(dict.fromkeys(term for term in terms if term))


def union_region(
    annotations: Sequence[Annotation], grid_shape: tuple[int, int] = (16, 16)
) -> Region:
    """The union of ``annotations`` (of one image) as one region on the grid.

    Boxes are pooled in the first annotation's frame (each scaled from its own frame; one file's
    rows share theirs). With a segmentation among them, the union is that of the annotations'
    pixel masks in the first segmentation's frame (`Annotation.mask_at`).

    Raises
    ------
    ValueError
        No annotation, or a box annotation whose frame is unknown (VinDr's, before
        `Annotation.sized_as`).
    """
    if not annotations:
        raise ValueError("no annotation to form a region")
    unknown = [a.annotation_id for a in annotations if a.rle is None and a.image_width <= 0]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: the image size is unknown")
    width, height = _frame(annotations)
    if any(a.rle is not None for a in annotations):
        union = np.zeros((height, width), dtype=bool)
        for annotation in annotations:
            union |= annotation.mask_at((height, width))
        return region_from_mask(union, grid_shape)
    boxes = [
        (x * scale_x, y * scale_y, w * scale_x, h * scale_y)
        for annotation in annotations
        for scale_x, scale_y in [(width / annotation.image_width, height / annotation.image_height)]
        for x, y, w, h in annotation.boxes
    ]
    return region_from_boxes(boxes, width, height, grid_shape)


def _frame(annotations: Sequence[Annotation]) -> tuple[int, int]:
    """(width, height) of the frame `union_region` pools the annotations in."""
    segmentations = [a for a in annotations if a.rle is not None]
    if segmentations:
        height, width = segmentations[0].mask().shape
        return width, height
    return annotations[0].image_width, annotations[0].image_height


def image_box_metrics(
    maps: Iterable[tuple[object, np.ndarray]],
    annotations: Sequence[Annotation],
    *,
    source_size: tuple[int, int] | None = None,
) -> pd.DataFrame:
    """``map_id`` and the ``box_*`` columns for each ``(record, grid)`` of ``maps``.

    Parameters
    ----------
    maps : iterable of (record with ``map_id``, grid)
    annotations : sequence of Annotation
        The image's annotations (e.g. :func:`read_image_boxes`), with known frames.
    source_size : (width, height), optional
        The image's own size, to warn when the annotations' frame has another aspect ratio.

    Returns
    -------
    DataFrame
        One row per map; the box columns are blank when there is no annotation.
    """
    maps = list(maps)
    if not annotations:
        return pd.DataFrame(
            [
                {"map_id": record.map_id, **dict.fromkeys(BOX_COLUMNS, math.nan)}
                for record, _ in maps
            ],
            columns=["map_id", *BOX_COLUMNS],
        )
    width, height = _frame(annotations)
    if source_size is not None:
        source_aspect = source_size[0] / source_size[1]
        if abs(math.log((width / height) / source_aspect)) > _ASPECT_TOLERANCE:
            logger.warning(
                "%s: annotations drawn on %d x %d, the image is %d x %d (another aspect ratio)",
                annotations[0].image_id,
                width,
                height,
                *source_size,
            )
    regions: dict[tuple[int, int], Region] = {}
    rows = []
    for record, grid in maps:
        if grid.shape not in regions:
            regions[grid.shape] = union_region(annotations, grid.shape)
        rows.append({"map_id": record.map_id, **box_metrics(grid, regions[grid.shape])})
    return pd.DataFrame(rows, columns=["map_id", *BOX_COLUMNS])
