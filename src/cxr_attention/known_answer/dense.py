"""Which of the known-answer model's image tokens show the lesion.

Each image token's class is that of its 14 px cell (`TOKEN_CLASSES`: no lesion, or a lesion in
the patient's right or left lung); the detector's threshold is calibrated on these cells.

Orientation: SigLIP flattens its patch grid row by row and the projector keeps that order (no
pooling at 224 px), so token ``i`` is cell ``(i // 16, i % 16)`` of the squashed image, the same
grid as `cxr_attention.geometry.image_to_grid` of a mask (tested against the planted box).
"""

from __future__ import annotations

import numpy as np

from cxr_attention.geometry import image_to_grid
from cxr_attention.known_answer.plant import PlantedLesion

__all__ = ["TOKEN_CLASSES", "lesion_cells", "token_targets"]

#: Image-token classes: index 0 no lesion; 1 and 2 the patient's right and left lung.
TOKEN_CLASSES = ("none", "right", "left")


def lesion_cells(
    lesion: PlantedLesion, shape: tuple[int, int], grid: tuple[int, int] = (16, 16)
) -> np.ndarray:
    """Cells of ``grid`` that the lesion's core (the disc of its half-height radius) overlaps.

    Parameters
    ----------
    lesion : PlantedLesion
        As `plant_lesion` returns it, in the pixels of an image of ``shape``.
    shape : (height, width)

    Returns
    -------
    ndarray of bool, shape ``grid``
    """
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    core = np.hypot(rows - lesion.centre_y, cols - lesion.centre_x) <= lesion.radius
    return image_to_grid(core, grid) > 0


def token_targets(lesion: PlantedLesion | None, shape: tuple[int, int]) -> np.ndarray:
    """Class of each of the 256 image tokens (row-major cells) for an image with ``lesion``."""
    targets = np.zeros(256, np.int64)
    if lesion is not None:
        targets[lesion_cells(lesion, shape).reshape(-1)] = TOKEN_CLASSES.index(lesion.side)
    return targets
