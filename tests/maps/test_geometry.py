"""Grid <-> image geometry, including the processor's squash of a non-square image to a square."""

from __future__ import annotations

import numpy as np
import pytest
from maps_helpers import linearise_vision_tower, load_tiny

from cxr_attention.geometry import (
    factor_to_grid,
    grid_to_image,
    image_to_grid,
    pool_patches_to_grid,
)
from cxr_attention.maps.activation import activation_norm_map
from cxr_attention.maps.grid import to_grid


@pytest.mark.parametrize(
    ("n_tokens", "aspect", "expected"),
    [
        (256, 1.0, (16, 16)),
        (256, 2.0, (16, 16)),
        (200, 2.0, (10, 20)),
        (200, 0.5, (20, 10)),
        (7, 1.0, (1, 7)),
        (12, 0.75, (4, 3)),
    ],
)
def test_factor_to_grid(n_tokens, aspect, expected):
    rows, cols = factor_to_grid(n_tokens, aspect)
    assert (rows, cols) == expected
    assert rows * cols == n_tokens


def test_factor_to_grid_rejects_nonsense():
    with pytest.raises(ValueError):
        factor_to_grid(0)
    with pytest.raises(ValueError):
        factor_to_grid(16, 0)


def test_to_grid_folds_non_square_token_counts_row_major():
    grid = to_grid(np.arange(200), aspect_ratio=2.0)
    assert grid.shape == (10, 20) and grid[1, 0] == 20


def test_image_to_grid_is_the_cell_mean_when_cells_are_whole_pixels():
    rng = np.random.default_rng(0)
    image = rng.random((32, 48))
    expected = image.reshape(16, 2, 16, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(image_to_grid(image), expected, rtol=1e-12)


def test_image_to_grid_equals_opencv_area_resize_for_fractional_cells():
    import cv2

    image = np.random.default_rng(1).random((301, 197))
    oracle = cv2.resize(image, (16, 16), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(image_to_grid(image), oracle, rtol=1e-6)


def test_image_to_grid_of_a_mask_is_the_fraction_inside_each_cell():
    mask = np.zeros((33, 50), dtype=bool)  # cells of non-integer size
    mask[:, :25] = True
    grid = image_to_grid(mask)
    # Left half of the width: 8 whole columns of cells inside, 8 outside.
    np.testing.assert_allclose(grid[:, :8], 1.0)
    np.testing.assert_allclose(grid[:, 8:], 0.0, atol=1e-12)


def test_grid_to_image_gives_every_pixel_its_cells_value():
    grid = np.arange(256, dtype=float).reshape(16, 16)
    image = grid_to_image(grid, (64, 32))  # 4 px high, 2 px wide cells
    np.testing.assert_array_equal(image[::4, ::2], grid)
    np.testing.assert_array_equal(image, np.kron(grid, np.ones((4, 2))))
    # Round trip: the footprint of each cell averages back to the cell.
    np.testing.assert_allclose(image_to_grid(image), grid)


def test_pool_patches_to_grid_known_answer():
    patches = np.zeros(32 * 32)
    patches[5 * 32 + 7] = 4.0  # patch (5, 7) lies in token cell (2, 3), which pools 2 x 2
    grid = pool_patches_to_grid(patches, 16)
    assert grid[2, 3] == 1.0 and grid.sum() == 1.0
    with pytest.raises(ValueError, match="square"):
        pool_patches_to_grid(np.zeros(30), 16)


def test_planted_off_centre_signal_on_a_non_square_image_returns_to_its_place(tiny_model_dir):
    """A bright blob in a tall image goes through the processor's squash to 448 x 448, the
    (linearised) vision tower and the projector's pooling, and back through grid_to_image."""
    from PIL import Image

    model, processor = load_tiny(tiny_model_dir, eager=False)
    linearise_vision_tower(model)
    height, width = 720, 480  # portrait, aspect 2:3
    image = np.full((height, width), 128, dtype=np.uint8)  # grey: 0 after Gemma's normalisation
    top, bottom, left, right = 90, 180, 330, 420  # upper right: off-centre on both axes
    image[top:bottom, left:right] = 255
    pixels = processor.image_processor(Image.fromarray(image).convert("RGB"), return_tensors="pt")[
        "pixel_values"
    ]
    assert tuple(pixels.shape[-2:]) == (448, 448)  # squashed, not padded or cropped
    grid = activation_norm_map(model, pixels)
    back = grid_to_image(grid, (height, width))
    # Grey is 128/255, not exactly Gemma's mean 0.5: a faint uniform background remains. The
    # signal is where the map exceeds half its peak.
    peak = back > 0.5 * back.max()
    slack = np.zeros((height, width), dtype=bool)
    # one token cell of slack around the blob: 45 px high, 30 px wide in the original image
    slack[top - 45 : bottom + 45, left - 30 : right + 30] = True
    assert peak.any() and not (peak & ~slack).any()
    blob = np.zeros((height, width), dtype=bool)
    blob[top:bottom, left:right] = True
    assert (peak & blob).sum() >= 0.8 * blob.sum()
    rows, cols = np.nonzero(peak)
    centre = ((top + bottom) / 2, (left + right) / 2)
    assert (rows.mean(), cols.mean()) == pytest.approx(centre, abs=23)
    # Control: reading the same grid as if the processor had letterboxed the image (padded it
    # to a centred 720 x 720 square) puts the signal over 40 px off: the squash geometry matters.
    pad = (height - width) // 2
    cell_rows = np.arange(height) * 16 // height
    cell_cols = (np.arange(width) + pad) * 16 // height
    letterboxed = grid[cell_rows[:, None], cell_cols[None, :]]
    _, wrong_cols = np.nonzero(letterboxed > 0.5 * letterboxed.max())
    assert abs(wrong_cols.mean() - centre[1]) > 40
