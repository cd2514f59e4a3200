"""Curves and imputation against hand-computed and analytic oracles (torch-free)."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_attention.faithfulness.curves import (
    curve_area,
    rank_cells,
    removed_masks,
    road_combined,
    step_counts,
)
from cxr_attention.faithfulness.imputation import (
    cell_pixel_mask,
    noisy_linear_imputation,
    perturb_pixels,
    replacement_image,
)


def test_step_counts_round_and_deduplicate():
    assert step_counts([0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1], 256).tolist() == [
        0, 3, 5, 13, 26, 51, 128, 256,
    ]  # fmt: skip
    assert step_counts([0, 0.001, 1], 256).tolist() == [0, 256]
    with pytest.raises(ValueError):
        step_counts([0.5], 256)


def test_removed_masks_follow_the_order():
    order = np.array([3, 0, 2, 1])
    counts = np.array([0, 1, 3, 4])
    deletion = removed_masks(order, counts, "deletion", (2, 2)).reshape(4, -1)
    insertion = removed_masks(order, counts, "insertion", (2, 2)).reshape(4, -1)
    lerf = removed_masks(order, counts, "lerf", (2, 2)).reshape(4, -1)
    assert deletion.tolist() == [
        [False, False, False, False],
        [False, False, False, True],
        [True, False, True, True],
        [True, True, True, True],
    ]
    assert (insertion == ~deletion).all()  # revealing the top k = removing the rest
    assert lerf[1].tolist() == [False, True, False, False]
    with pytest.raises(ValueError):
        removed_masks(np.array([0, 0, 1, 2]), counts, "deletion", (2, 2))


def test_rank_cells_highest_first_and_ties_random():
    grid = np.array([[0.1, 0.9], [0.5, 0.5]])
    order = rank_cells(grid, np.random.default_rng(0))
    assert order[0] == 1 and set(order[1:3]) == {2, 3} and order[3] == 0


def test_curve_area_is_the_trapezoid_and_road_combined():
    counts = np.array([0, 64, 128, 256])
    scores = np.array([2.0, 1.0, 0.5, 0.0])
    assert curve_area(counts, scores, 256) == pytest.approx(np.trapezoid(scores, counts / 256))
    assert road_combined(0.8, 0.2) == pytest.approx(0.3)


def test_cell_pixel_mask_is_the_cells_footprint_in_the_square():
    cells = np.zeros((16, 16), bool)
    cells[2, 5] = True
    mask = cell_pixel_mask(cells, (448, 448))
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (56, 83, 140, 167)


def test_road_imputation_reproduces_a_linear_ramp():
    # Under symmetric neighbour weights a linear image is its own weighted neighbour mean: the
    # imputed hole must equal the ramp (noise off).
    y, x = np.mgrid[0:64, 0:64]
    ramp = (0.3 * x - 0.2 * y + 1.0)[None].astype(np.float64)
    missing = np.zeros((64, 64), bool)
    missing[20:40, 10:30] = True
    filled = noisy_linear_imputation(ramp, missing, noise=0.0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(filled[0], ramp[0], atol=1e-3)
    coarse = noisy_linear_imputation(
        ramp, missing, noise=0.0, rng=np.random.default_rng(0), solve_side=32
    )
    assert np.abs(coarse[0] - ramp[0])[missing].max() < 0.6  # one coarse pixel of slope ~0.5
    np.testing.assert_array_equal(coarse[0][~missing], ramp[0][~missing].astype(np.float32))


def test_road_noise_has_the_requested_sd_and_only_touches_missing_pixels():
    image = np.zeros((1, 64, 64))
    missing = np.zeros((64, 64), bool)
    missing[:, :32] = True
    filled = noisy_linear_imputation(image, missing, noise=0.5, rng=np.random.default_rng(1))
    assert filled[0][missing].std() == pytest.approx(0.5, rel=0.05)
    assert (filled[0][~missing] == 0).all()


def test_blur_and_mean_replacements():
    rng = np.random.default_rng(0)
    pixels = rng.random((3, 64, 64)).astype(np.float32)
    cells = np.zeros((16, 16), bool)
    cells[:8] = True
    mean = perturb_pixels(pixels, cells, "mean")
    np.testing.assert_allclose(
        mean[:, :32],
        np.broadcast_to(pixels.mean(axis=(1, 2))[:, None, None], (3, 32, 64)),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(mean[:, 32:], pixels[:, 32:])
    blurred = replacement_image(pixels, "blur", blur_sigma_cells=1.0)
    assert blurred.std() < pixels.std() / 2  # sigma of 4 pixels averages the noise away
