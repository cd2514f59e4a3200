"""The image tokens' targets point at the planted lesion, in the model's own token order."""

from __future__ import annotations

import numpy as np
import torch

from cxr_attention.known_answer.dense import TOKEN_CLASSES, lesion_cells, token_targets
from cxr_attention.known_answer.model import IMAGE_SIZE, build_untrained_model
from cxr_attention.known_answer.plant import plant_lesion


def _film() -> tuple[np.ndarray, np.ndarray]:
    """A flat grey 224 px film with two rectangular "lungs" (1 on the image's left)."""
    image = np.full((IMAGE_SIZE, IMAGE_SIZE), 60, np.uint8)
    lungs = np.zeros_like(image)
    lungs[30:200, 20:100] = 1  # the patient's right lung, on the image's left
    lungs[30:200, 124:204] = 2
    return image, lungs


def test_targets_are_the_tokens_whose_embeddings_the_lesion_changes():
    # Oracle: the vision tower's own patch embeddings. A token's embedding changes exactly when
    # pixels of its patch change, so the changed tokens say where the model sees the lesion in
    # its own token order; the targets must lie among them and cover the lesion's core.
    model, processor, _ = build_untrained_model(0)
    image, lungs = _film()
    embeddings = model.model.vision_tower.embeddings
    for side, seed in (("left", 0), ("right", 3)):
        planted, lesion = plant_lesion(image, side=side, seed=seed, radius=0.05, lungs=lungs)
        pixels = processor.image_processor(
            images=[np.stack([picture] * 3, -1) for picture in (image, planted)],
            return_tensors="pt",
        )["pixel_values"]
        with torch.no_grad():
            tokens = embeddings(pixels)
        changed = (tokens[0] - tokens[1]).abs().amax(-1) > 1e-6
        targets = token_targets(lesion, image.shape)
        assert set(np.flatnonzero(targets)) <= set(np.flatnonzero(changed.numpy()))
        assert (targets > 0).sum() >= 4
        assert set(targets[targets > 0]) == {TOKEN_CLASSES.index(side)}
        # The lesion's centre cell is a target, and it is on the image half opposite the side.
        row, col = int(lesion.centre_y // 14), int(lesion.centre_x // 14)
        assert targets[row * 16 + col] > 0
        assert (col < 8) == (side == "right")


def test_lesion_cells_of_a_hand_placed_disc():
    from cxr_attention.known_answer.plant import PlantedLesion

    # A disc of radius 5 px centred in cell (3, 10) (pixels 42-55, 140-153) stays inside it.
    lesion = PlantedLesion(0, 0, 1, 1, 147.0, 48.0, 5.0, "left", "upper", 0.3)
    cells = lesion_cells(lesion, (IMAGE_SIZE, IMAGE_SIZE))
    assert np.argwhere(cells).tolist() == [[3, 10]]
    assert token_targets(None, (IMAGE_SIZE, IMAGE_SIZE)).sum() == 0
