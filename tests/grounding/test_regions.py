"""Regions from boxes and masks, and the grounding metrics, against hand-computed values.

The image is 320 x 160 (W x H), non-square: a 16 x 16 cell is 20 px wide and 10 px tall, so a box
at pixel (x, y) lands in column x // 20, row y // 10.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from cxr_attention.geometry import grid_to_image
from cxr_attention.grounding.regions import (
    area_share,
    auprc,
    box_iou_q90,
    box_metrics,
    box_pixel_weights,
    boxes_pixel_mask,
    cnr,
    iou_at_otsu,
    iou_at_threshold,
    lift,
    mass_inside,
    medfocus_boxes,
    medfocus_scores,
    pointing_game,
    region_from_boxes,
    region_from_mask,
)

WIDTH, HEIGHT = 320, 160
# x=40..80, y=30..50: columns 2-3, rows 3-4, four whole cells.
BOX = (40, 30, 40, 20)
BOX_CELLS = [(3, 2), (3, 3), (4, 2), (4, 3)]


def _cells_map(cells, value=1.0, background=0.0):
    grid = np.full((16, 16), background)
    for row, col in cells:
        grid[row, col] = value
    return grid


def test_box_lands_on_known_cells_of_a_non_square_image():
    region = region_from_boxes(BOX, WIDTH, HEIGHT)
    assert region.coverage.shape == (16, 16)
    expected = _cells_map(BOX_CELLS)
    np.testing.assert_allclose(region.coverage, expected, atol=1e-12)
    assert sorted(zip(*np.nonzero(region.cells), strict=True)) == BOX_CELLS
    assert region.area == pytest.approx(4 / 256)


def test_box_edges_inside_cells_give_partial_coverage():
    # x=50..70 covers the right half of column 2 and the left half of column 3; y=30..35 the top
    # half of row 3; fractional x=10.5..20 covers 9.5 of column 0's 20 px.
    region = region_from_boxes([(50, 30, 20, 5), (10.5, 100, 9.5, 10)], WIDTH, HEIGHT)
    assert region.coverage[3, 2] == pytest.approx(0.25)
    assert region.coverage[3, 3] == pytest.approx(0.25)
    assert region.coverage[10, 0] == pytest.approx(9.5 / 20)
    assert region.coverage.sum() == pytest.approx(0.25 + 0.25 + 9.5 / 20)
    assert not region.cells.any()


def test_box_is_clipped_to_the_image_and_bad_boxes_raise():
    region = region_from_boxes((300, 150, 100, 100), WIDTH, HEIGHT)
    assert region.coverage[15, 15] == pytest.approx(1.0)
    assert region.coverage.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="width or height"):
        region_from_boxes((0, 0, 0, 10), WIDTH, HEIGHT)
    with pytest.raises(ValueError, match="non-finite"):
        region_from_boxes((0, math.nan, 5, 10), WIDTH, HEIGHT)


def test_mask_region_equals_the_box_region():
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[30:50, 40:80] = 1
    from_box = region_from_boxes(BOX, WIDTH, HEIGHT)
    np.testing.assert_allclose(region_from_mask(mask).coverage, from_box.coverage)


def test_pointing_game_hits_misses_and_ties():
    region = region_from_boxes(BOX, WIDTH, HEIGHT)
    assert pointing_game(_cells_map([(3, 2)]), region) == 1.0
    assert pointing_game(_cells_map([(0, 0)]), region) == 0.0
    # Two tied maxima, one inside and one outside: the point falls inside half the time.
    assert pointing_game(_cells_map([(3, 2), (0, 0)]), region) == 0.5
    half = region_from_boxes((50, 30, 20, 10), WIDTH, HEIGHT)  # half of cells (3, 2) and (3, 3)
    assert pointing_game(_cells_map([(3, 2)]), half) == pytest.approx(0.5)


def test_mass_area_and_lift_of_planted_maps():
    region = region_from_boxes(BOX, WIDTH, HEIGHT)
    uniform = np.ones((16, 16))
    assert mass_inside(uniform, region) == pytest.approx(4 / 256)
    assert area_share(region) == pytest.approx(4 / 256)
    assert lift(uniform, region) == pytest.approx(1.0)
    # Half the mass on the four box cells, the other half spread over the other 252.
    planted = np.full((16, 16), 0.5 / 252)
    for cell in BOX_CELLS:
        planted[cell] = 0.5 / 4
    assert mass_inside(planted, region) == pytest.approx(0.5)
    assert lift(planted, region) == pytest.approx(0.5 * 256 / 4)


def test_cnr_hand_computed():
    region = region_from_boxes(BOX, WIDTH, HEIGHT)
    # Inside: four cells at 2 (variance 0). Outside: 126 cells at 0 and 126 at 1 (mean 0.5,
    # variance 0.25). CNR = (2 - 0.5) / sqrt(0 + 0.25) = 3.
    grid = np.zeros((16, 16))
    outside = [cell for cell in np.ndindex(16, 16) if cell not in BOX_CELLS]
    for cell in outside[::2]:
        grid[cell] = 1.0
    for cell in BOX_CELLS:
        grid[cell] = 2.0
    assert cnr(grid, region) == pytest.approx(3.0)
    assert math.isnan(cnr(np.ones((16, 16)), region))


def test_cnr_with_partial_cells_equals_the_pixel_picture():
    # Oracle: the nearest-cell picture at pixel resolution (cells divide 320 x 160 exactly, so
    # each pixel carries its cell's value), every pixel weighted by its share inside the boxes.
    rng = np.random.default_rng(0)
    grid = rng.random((16, 16))
    boxes = [(41.3, 20.2, 100.5, 60.7), (200, 100, 50, 45.5)]
    region = region_from_boxes(boxes, WIDTH, HEIGHT)
    pixels = grid_to_image(grid, (HEIGHT, WIDTH))
    w_in = box_pixel_weights(boxes, WIDTH, HEIGHT)
    w_out = 1 - w_in
    mean_in = (pixels * w_in).sum() / w_in.sum()
    mean_out = (pixels * w_out).sum() / w_out.sum()
    var_in = (w_in * (pixels - mean_in) ** 2).sum() / w_in.sum()
    var_out = (w_out * (pixels - mean_out) ** 2).sum() / w_out.sum()
    expected = (mean_in - mean_out) / math.sqrt(var_in + var_out)
    assert cnr(grid, region) == pytest.approx(expected, rel=1e-10)
    assert mass_inside(grid, region) == pytest.approx((pixels * w_in).sum() / pixels.sum())


def test_iou_at_threshold_and_otsu():
    region = region_from_boxes(BOX, WIDTH, HEIGHT)
    exact = _cells_map(BOX_CELLS)
    assert iou_at_threshold(exact, region, 0.5) == pytest.approx(1.0)
    # Two extra cells outside: 4 / 6 at any threshold above 0 and at Otsu's.
    wider = _cells_map([*BOX_CELLS, (0, 0), (15, 15)])
    assert iou_at_threshold(wider, region, 0.5) == pytest.approx(4 / 6)
    assert iou_at_otsu(wider, region) == pytest.approx(4 / 6)
    # Threshold 0 selects every cell.
    assert iou_at_threshold(wider, region, 0.0) == pytest.approx(4 / 256)
    # Half-covered cells: select (3, 2) against the box half over (3, 2) and (3, 3):
    # footprint 200 px, region 200 px, overlap 100 px -> 100 / 300.
    half = region_from_boxes((50, 30, 20, 10), WIDTH, HEIGHT)
    assert iou_at_threshold(_cells_map([(3, 2)]), half, 0.5) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="threshold"):
        iou_at_threshold(exact, region, 1.5)


def test_box_iou_q90_hand_computed():
    region = region_from_boxes(BOX, WIDTH, HEIGHT)
    # Values 0..255, the box cells holding the top four. np.quantile(0..255, 0.9) = 229.5, so the
    # cut keeps the 26 cells 230..255: intersection 4, union 26.
    rng = np.random.default_rng(1)
    order = rng.permutation([c for c in np.ndindex(16, 16) if c not in BOX_CELLS])
    grid = np.zeros((16, 16))
    for value, cell in enumerate(order):
        grid[tuple(cell)] = value
    for value, cell in enumerate(BOX_CELLS, start=252):
        grid[cell] = value
    assert box_iou_q90(grid, region) == pytest.approx(4 / 26)


def _sklearn_auprc(grid, region):
    scores = np.r_[grid.ravel(), grid.ravel()]
    labels = np.r_[np.ones(grid.size), np.zeros(grid.size)]
    weights = np.r_[region.coverage.ravel(), 1 - region.coverage.ravel()]
    return average_precision_score(labels, scores, sample_weight=weights)


@pytest.mark.parametrize("levels", [None, 5])
def test_auprc_matches_sklearn_with_partial_cells_and_ties(levels):
    rng = np.random.default_rng(2)
    grid = rng.random((16, 16))
    if levels:
        grid = np.floor(grid * levels)  # many ties
    region = region_from_boxes([(41.3, 20.2, 100.5, 60.7), (200, 100, 50, 40)], 333, 187)
    assert auprc(grid, region) == pytest.approx(_sklearn_auprc(grid, region), rel=1e-12)


def test_auprc_of_a_perfect_and_a_uniform_map():
    region = region_from_boxes(BOX, WIDTH, HEIGHT)
    assert auprc(_cells_map(BOX_CELLS), region) == pytest.approx(1.0)
    assert auprc(np.ones((16, 16)), region) == pytest.approx(4 / 256)


def test_box_metrics_columns():
    region = region_from_boxes(BOX, WIDTH, HEIGHT)
    row = box_metrics(_cells_map(BOX_CELLS, background=0.01), region)
    assert list(row) == [
        "box_pointing_game",
        "box_mass",
        "box_area",
        "box_lift",
        "box_cnr",
        "box_iou_q90",
    ]
    assert row["box_pointing_game"] == 1.0
    assert row["box_mass"] == pytest.approx(4 / (4 + 252 * 0.01))


def test_maps_are_validated():
    region = region_from_boxes(BOX, WIDTH, HEIGHT)
    with pytest.raises(ValueError, match="shape"):
        mass_inside(np.ones((8, 8)), region)
    with pytest.raises(ValueError, match="negative"):
        mass_inside(-np.ones((16, 16)), region)
    with pytest.raises(ValueError, match="no mass"):
        mass_inside(np.zeros((16, 16)), region)


# --------------------------------------------------------------------------- MedFocus


def _medfocus_reference(heatmap, q=0.9, min_area=16, max_boxes=10):
    """gzxiong/medfocus medfocus/attribution/eval.py heatmap_to_bboxes_quantile, transcribed."""
    hm = np.asarray(heatmap, dtype=np.float32)
    hm = hm - hm.min()
    hm = hm / (hm.max() + 1e-8)
    vals = hm[hm > 0]
    thr = float(np.quantile(vals, q)) if len(vals) else 0.0
    mask = hm >= thr
    height, width = hm.shape
    nbrs = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    visited = np.zeros((height, width), dtype=bool)
    comps = []
    for y in range(height):
        for x in range(width):
            if not mask[y, x] or visited[y, x]:
                continue
            stack = [(y, x)]
            visited[y, x] = True
            xs, ys, ssum, cnt = [], [], 0.0, 0
            while stack:
                cy, cx = stack.pop()
                xs.append(cx)
                ys.append(cy)
                ssum += float(hm[cy, cx])
                cnt += 1
                for dy, dx in nbrs:
                    ny, nx = cy + dy, cx + dx
                    inside = 0 <= ny < height and 0 <= nx < width
                    if inside and mask[ny, nx] and not visited[ny, nx]:
                        visited[ny, nx] = True
                        stack.append((ny, nx))
            if cnt < min_area:
                continue
            comps.append(((min(xs), min(ys), max(xs), max(ys)), ssum / cnt))
    comps.sort(key=lambda d: d[1], reverse=True)
    return [box for box, _ in comps[:max_boxes]]


def test_medfocus_boxes_match_their_code_with_torch_upsampling():
    torch = pytest.importorskip("torch")
    grid = np.random.default_rng(3).random((16, 16)) * 0.1
    grid[3, 2], grid[3, 3], grid[4, 2] = 1.0, 0.9, 0.95  # one blob
    grid[12, 13], grid[12, 12] = 0.8, 0.85  # a second, weaker one
    height, width = 96, 150
    upsampled = torch.nn.functional.interpolate(
        torch.tensor(grid, dtype=torch.float32)[None, None],
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    expected = _medfocus_reference(upsampled)
    assert len(expected) >= 2
    assert medfocus_boxes(grid, (height, width)) == expected


def test_medfocus_scores_hand_computed():
    truth = boxes_pixel_mask([(5, 0, 15, 10)], (20, 20))
    scores = medfocus_scores([(0, 0, 10, 10)], truth)  # overlap 50 px, union 150 px
    assert scores["iou"] == pytest.approx(1 / 3)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(0.5)
    assert scores["f1"] == pytest.approx(0.5)
    assert medfocus_scores([], np.zeros((20, 20), bool)) == {
        "iou": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
    }
    assert medfocus_scores([], truth)["f1"] == 0.0
