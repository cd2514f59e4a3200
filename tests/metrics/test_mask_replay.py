"""Which mask reproduces the reference runner's inside-body: both replayed on a planted film."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxr_attention.reference.mask_replay import (
    REFERENCE_FIRST_CELL_MASS,
    reference_shaped_grid,
    replay_inside_body,
)
from cxr_attention.reference.masks import runner_body_mask


def _film(side: int = 512) -> np.ndarray:
    """Dark air around a bright body ellipse with two dark lung ellipses inside it."""
    film = np.full((side, side), 20, np.uint8)
    centre = (side // 2, side // 2 + side // 16)
    cv2.ellipse(film, centre, (side * 3 // 8, side * 7 // 16), 0, 0, 360, 200, -1)
    for dx in (-1, 1):
        lung_centre = (side // 2 + dx * side // 6, side // 2)
        cv2.ellipse(film, lung_centre, (side // 10, side // 5), 0, 0, 360, 60, -1)
    return film


def test_runner_mask_is_the_body_with_its_lungs_not_the_air():
    film = _film()
    mask = runner_body_mask(film)
    assert not mask[0, 0] and not mask[5, 5]  # outside air
    assert mask[256, 256]  # mediastinum
    assert mask[256, 256 - 512 // 6]  # inside a lung: the contour is filled
    assert mask.mean() == pytest.approx(
        (film > 100).mean() + 2 * np.pi * 51 * 102 / 512**2, abs=0.03
    )


def test_runner_style_mask_reproduces_the_papers_low_inside_body():
    grid = reference_shaped_grid()
    assert grid.sum() == pytest.approx(1.0) and grid[0, 0] == REFERENCE_FIRST_CELL_MASS
    replay = replay_inside_body(_film(), grid)
    # Cell 0 (outside air) is out of the runner's mask: at most the remaining 28.7% is inside.
    assert replay["inside_body_runner"] < 1 - REFERENCE_FIRST_CELL_MASS
    assert replay["inside_body_runner"] > 0.1
    # The inverted mask keeps the air, cell 0 with it: the score exceeds the sink's mass.
    assert replay["inside_body_inverted"] > REFERENCE_FIRST_CELL_MASS
    # The oracle of the runner's number: its token mask, built here from the mask alone.
    token = cv2.resize(runner_body_mask(_film()).astype(np.float32), (16, 16)) > 0.5
    assert replay["inside_body_runner"] == pytest.approx(float((grid * token).sum()), rel=1e-6)
