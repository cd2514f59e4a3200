"""Dense supervision of the known-answer model's image tokens: which tokens show the lesion.

The yes/no answer is one bit per image: on its own it teaches the vision tower slowly (issue 16's
probes all collapsed to the majority answer). Each image token also gets a target, the class of
its 14 px cell (`TOKEN_CLASSES`: no lesion, or a lesion in the patient's right or left lung), and
a training-only linear probe on the projected image features (what the language model reads)
predicts it. The probe is discarded after training; the saved model is the plain Gemma 3 class.

Orientation: SigLIP flattens its patch grid row by row and the projector keeps that order (no
pooling at 224 px), so token ``i`` is cell ``(i // 16, i % 16)`` of the squashed image, the same
grid as `cxr_attention.geometry.image_to_grid` of a mask (tested against the planted box).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from cxr_attention.geometry import image_to_grid
from cxr_attention.known_answer.plant import PlantedLesion

__all__ = ["TOKEN_CLASSES", "lesion_cells", "projected_features", "token_targets"]

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


@contextmanager
def projected_features(model):
    """Keep the multimodal projector's output (``(images, 256, hidden)``) during a forward.

    Yields a list that holds the output once the forward has run.
    """
    kept: list[torch.Tensor] = []
    handle = model.model.multi_modal_projector.register_forward_hook(
        lambda _module, _inputs, output: kept.append(output)
    )
    try:
        yield kept
    finally:
        handle.remove()
