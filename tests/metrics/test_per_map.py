"""Per-map metrics against independent oracles and hand-built maps with known answers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.stats import entropy as scipy_entropy

from cxr_attention.geometry import image_to_grid
from cxr_attention.metrics.catalogue import LUNG_METRIC_COLUMNS, METRIC_COLUMNS
from cxr_attention.metrics.per_map import (
    apical_basal,
    border_fraction,
    entropy,
    entropy_band,
    entropy_normalised,
    focus,
    focus_max,
    inside_body_ratio,
    left_right,
    lung_halves,
    map_metrics,
)
from cxr_attention.metrics.shard import run_metrics_shard

GRID = (16, 16)
# image_to_grid computes cell fractions in float64: masses agree with the exact oracle to rounding.
ORACLE_TOLERANCE = 1e-9


def _random_map(seed: int, shape=GRID) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.gamma(0.3, size=shape)
    return (values / values.sum()).astype(np.float32)


def _mass_under_mask_by_upsampling(grid_map: np.ndarray, mask: np.ndarray) -> float:
    """Oracle: spread each cell's value evenly over its pixels and sum under the mask.

    Cell borders fall between pixels when the image size is not a multiple of the grid, so both
    are refined to a common sub-pixel lattice: the image by ``rows`` x ``cols`` (each pixel becomes
    a block of sub-pixels), the map by ``H`` x ``W`` (each cell becomes ``H * W`` sub-pixels, on
    which cell ``(r, c)`` covers exactly its fraction of the image).
    """
    rows, cols = grid_map.shape
    height, width = mask.shape
    fine_mask = np.repeat(np.repeat(mask.astype(np.float64), rows, 0), cols, 1)
    distribution = grid_map.astype(np.float64) / grid_map.astype(np.float64).sum()
    per_subpixel = distribution / (height * width)
    fine_map = np.repeat(np.repeat(per_subpixel, height, 0), width, 1)
    return float(np.sum(fine_map * fine_mask))


def _overlaps(n_pixels: int, n_cells: int) -> np.ndarray:
    """Sub-pixel counts shared by cell ``i`` and pixel ``y`` on the common lattice (integers)."""
    cell_start = np.arange(n_cells)[:, None] * n_pixels
    pixel_start = np.arange(n_pixels)[None, :] * n_cells
    return np.clip(
        np.minimum(cell_start + n_pixels, pixel_start + n_cells)
        - np.maximum(cell_start, pixel_start),
        0,
        None,
    ).astype(np.float64)


def _mass_under_mask_by_counting(grid_map: np.ndarray, mask: np.ndarray) -> float:
    """The same oracle for large images, counting each cell's sub-pixels under the mask.

    Materialising the refined lattice of a 512 px radiograph would take gigabytes; the count of
    masked sub-pixels of every cell is ``rows_overlap @ mask @ cols_overlap.T``.
    """
    rows, cols = grid_map.shape
    height, width = mask.shape
    counts = _overlaps(height, rows) @ mask.astype(np.float64) @ _overlaps(width, cols).T
    distribution = grid_map.astype(np.float64) / grid_map.astype(np.float64).sum()
    return float(np.sum(distribution * counts) / (height * width))


def test_the_two_oracles_agree():
    rng = np.random.default_rng(0)
    mask = rng.random((45, 23)) > 0.5
    grid_map = _random_map(0)
    assert _mass_under_mask_by_counting(grid_map, mask) == pytest.approx(
        _mass_under_mask_by_upsampling(grid_map, mask), rel=1e-12
    )


# --------------------------------------------------------------------------- mask-to-grid oracle


@pytest.mark.parametrize("shape", [(37, 53), (61, 29), (48, 32), (16, 16), (100, 77)])
def test_inside_body_equals_upsampled_map_summed_under_mask(shape):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) > 0.45
    grid_map = _random_map(shape[0])
    expected = _mass_under_mask_by_upsampling(grid_map, mask)
    assert inside_body_ratio(grid_map, image_to_grid(mask, GRID)) == pytest.approx(
        expected, abs=ORACLE_TOLERANCE
    )
    metrics = map_metrics(grid_map, body_mask=mask.astype(np.uint8) * 255, lung_labels=None)
    assert metrics["inside_body"] == pytest.approx(expected, abs=ORACLE_TOLERANCE)


def test_lung_shares_equal_upsampled_oracle_on_non_square_image():
    rng = np.random.default_rng(3)
    labels = np.zeros((83, 57), dtype=np.uint8)
    labels[10:70, 5:26] = 1  # patient right lung on the image's left
    labels[14:75, 31:52] = 2  # patient left lung on the image's right
    labels[rng.random(labels.shape) > 0.9] = 0  # ragged edges
    grid_map = _random_map(11)
    left = _mass_under_mask_by_upsampling(grid_map, labels == 2)
    right = _mass_under_mask_by_upsampling(grid_map, labels == 1)
    upper_pixels, lower_pixels = lung_halves(labels)
    upper = _mass_under_mask_by_upsampling(grid_map, upper_pixels)
    lower = _mass_under_mask_by_upsampling(grid_map, lower_pixels)
    metrics = map_metrics(grid_map, body_mask=None, lung_labels=labels)
    assert metrics["left_right"] == pytest.approx(left / (left + right), abs=ORACLE_TOLERANCE)
    assert metrics["apical_basal"] == pytest.approx(upper / (upper + lower), abs=ORACLE_TOLERANCE)
    assert math.isnan(metrics["inside_body"])


def test_real_lung_mask_oracle(real_cxr):
    """A hand-drawn Montgomery lung mask on its real, non-square radiograph size."""
    mask = cv2.imread(
        str(real_cxr / "lung_masks/masks/mcu_MCUCXR_0060_0_512sq_lungmask.png"),
        cv2.IMREAD_GRAYSCALE,
    )
    image = cv2.imread(str(real_cxr / "images/mcu_MCUCXR_0060_0.png"), cv2.IMREAD_GRAYSCALE)
    height, width = image.shape
    assert height != width
    mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST) > 127
    # The two lungs are the two largest components; the one on the image's left is the
    # patient's right lung (label 1).
    components, count = ndimage.label(mask)
    sizes = ndimage.sum(mask, components, range(1, count + 1))
    largest = np.argsort(sizes)[::-1][:2] + 1
    centres = [ndimage.center_of_mass(components == k)[1] for k in largest]
    right_id, left_id = (largest[0], largest[1]) if centres[0] < centres[1] else largest[::-1]
    labels = np.zeros(mask.shape, dtype=np.uint8)
    labels[components == right_id] = 1
    labels[components == left_id] = 2
    grid_map = _random_map(5)
    left = _mass_under_mask_by_counting(grid_map, labels == 2)
    right = _mass_under_mask_by_counting(grid_map, labels == 1)
    metrics = map_metrics(grid_map, body_mask=mask, lung_labels=labels)
    assert metrics["inside_body"] == pytest.approx(
        _mass_under_mask_by_counting(grid_map, mask), abs=ORACLE_TOLERANCE
    )
    assert metrics["left_right"] == pytest.approx(left / (left + right), abs=ORACLE_TOLERANCE)
    # All mass on the image's left half: the patient's right lung, so no left-lung share.
    image_left = np.zeros(GRID, np.float32)
    image_left[:, :7] = 1
    assert map_metrics(image_left, body_mask=mask, lung_labels=labels)["left_right"] < 0.01


# --------------------------------------------------------------------------- entropy and focus


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_entropy_matches_scipy(seed, dtype):
    grid_map = _random_map(seed).astype(dtype)
    assert entropy(grid_map) == pytest.approx(scipy_entropy(grid_map.ravel().astype(np.float64)))
    assert entropy_normalised(grid_map) == pytest.approx(
        scipy_entropy(grid_map.ravel().astype(np.float64), base=256)
    )


def test_one_hot_and_uniform_maps():
    one_hot = np.zeros(GRID)
    one_hot[7, 9] = 1
    assert entropy(one_hot) == 0
    assert entropy_normalised(one_hot) == 0
    assert focus(one_hot) == 1
    assert focus_max(one_hot) == 1
    uniform = np.full(GRID, 1 / 256)
    assert entropy(uniform) == pytest.approx(math.log(256))
    assert entropy_normalised(uniform) == pytest.approx(1)
    assert focus(uniform) == pytest.approx(13 / 256)  # ceil(0.05 * 256) = 13 tokens
    assert focus_max(uniform) == pytest.approx(1 / 256)
    assert entropy_band(entropy(one_hot)) == "focused"
    assert entropy_band(entropy(uniform)) == "diffuse"
    assert entropy_band(4.0) == "intermediate"


def test_focus_counts_the_top_five_percent_of_tokens():
    grid_map = np.full(GRID, 0.35 / 243)
    flat = grid_map.ravel()
    flat[[3, 40, 77, 100, 120, 140, 160, 180, 200, 210, 220, 230, 250]] = 0.05  # 13 cells
    assert grid_map.sum() == pytest.approx(1)
    assert focus(grid_map) == pytest.approx(0.65)
    assert focus(grid_map, top_fraction=1 / 256) == pytest.approx(0.05)
    assert focus(grid_map, top_fraction=1.0) == pytest.approx(1)


# --------------------------------------------------------------------------- border


def test_border_fraction_known_answers():
    ring = np.zeros(GRID)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = 1
    assert border_fraction(ring) == pytest.approx(1)
    interior = np.zeros(GRID)
    interior[1:-1, 1:-1] = 1
    assert border_fraction(interior) == pytest.approx(0)
    assert border_fraction(np.ones(GRID)) == pytest.approx(60 / 256)
    assert border_fraction(np.ones(GRID), ring=2) == pytest.approx(1 - 144 / 256)
    assert border_fraction(interior, ring=8) == pytest.approx(1)


# --------------------------------------------------------------------------- lungs


def _two_lungs() -> np.ndarray:
    """160 x 160 labels, 10 px per token; lungs aligned to cells with different extents.

    Patient right lung (label 1, image columns 20-69 = token columns 2-6): rows 20-99, split at
    row 60 (token rows 2-5 upper, 6-9 lower). Patient left lung (label 2, columns 90-139 = token
    columns 9-13): rows 40-119, split at row 80 (token rows 4-7 upper, 8-11 lower).
    """
    labels = np.zeros((160, 160), dtype=np.uint8)
    labels[20:100, 20:70] = 1
    labels[40:120, 90:140] = 2
    return labels


def test_left_right_known_answers():
    labels = _two_lungs()
    in_left = np.zeros(GRID)
    in_left[5, 10] = 1
    in_right = np.zeros(GRID)
    in_right[5, 3] = 1
    outside = np.zeros(GRID)
    outside[0, 0] = 1
    assert map_metrics(in_left, body_mask=None, lung_labels=labels)["left_right"] == 1
    assert map_metrics(in_right, body_mask=None, lung_labels=labels)["left_right"] == 0
    assert math.isnan(map_metrics(outside, body_mask=None, lung_labels=labels)["left_right"])
    # Uniform map: the left lung's share of the lung area.
    ragged = labels.copy()
    ragged[40:47, 90:103] = 0  # areas no longer multiples of a cell
    left_area, right_area = np.sum(ragged == 2), np.sum(ragged == 1)
    uniform = np.full(GRID, 1 / 256)
    assert map_metrics(uniform, body_mask=None, lung_labels=ragged)["left_right"] == pytest.approx(
        left_area / (left_area + right_area)
    )


def test_apical_basal_uses_each_lungs_own_extent():
    labels = _two_lungs()
    upper_both = np.zeros(GRID)
    upper_both[3, 2:7] = 1  # right lung, upper half
    upper_both[6, 9:14] = 1  # left lung, upper half (its extent starts lower)
    assert map_metrics(upper_both, body_mask=None, lung_labels=labels)["apical_basal"] == 1
    lower_both = np.zeros(GRID)
    lower_both[7, 2:7] = 1
    lower_both[10, 9:14] = 1
    assert map_metrics(lower_both, body_mask=None, lung_labels=labels)["apical_basal"] == 0
    # Token row 6 is the lower half of the right lung but the upper half of the left lung.
    row_six = np.zeros(GRID)
    row_six[6, 2:7] = 1
    row_six[6, 9:14] = 1
    assert map_metrics(row_six, body_mask=None, lung_labels=labels)["apical_basal"] == 0.5
    uniform = np.full(GRID, 1 / 256)
    assert map_metrics(uniform, body_mask=None, lung_labels=labels)["apical_basal"] == 0.5


def test_lung_halves_split_odd_extents_exactly_in_half():
    labels = np.zeros((23, 17), dtype=np.uint8)
    labels[2:9, 1:7] = 1  # 7 rows: the middle row is cut in half
    labels[4:17, 9:16] = 2  # 13 rows
    upper, lower = lung_halves(labels)
    for label in (1, 2):
        inside = labels == label
        assert upper[inside].sum() == pytest.approx(lower[inside].sum())
    assert np.all(upper + lower == (labels > 0))
    assert upper[5, 3] == 0.5 and lower[5, 3] == 0.5


def test_direct_functions_match_map_metrics():
    labels = _two_lungs()
    body = np.zeros((160, 160), np.uint8)
    body[10:150, 10:150] = 255
    grid_map = _random_map(8)
    metrics = map_metrics(grid_map, body_mask=body, lung_labels=labels)
    upper, lower = lung_halves(labels)
    assert metrics["inside_body"] == pytest.approx(
        inside_body_ratio(grid_map, image_to_grid(body > 0, GRID))
    )
    assert metrics["left_right"] == pytest.approx(
        left_right(grid_map, image_to_grid(labels == 1, GRID), image_to_grid(labels == 2, GRID))
    )
    assert metrics["apical_basal"] == pytest.approx(
        apical_basal(grid_map, image_to_grid(upper, GRID), image_to_grid(lower, GRID))
    )
    assert list(metrics) == METRIC_COLUMNS[1:]


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "bad_map",
    [np.zeros(GRID), -np.ones(GRID), np.full(GRID, np.nan), np.ones(256), np.ones((2, 2, 2))],
)
def test_invalid_maps_raise(bad_map):
    with pytest.raises(ValueError):
        entropy(bad_map)


def test_invalid_options_and_masks_raise():
    grid_map = _random_map(1)
    with pytest.raises(ValueError, match="top_fraction"):
        focus(grid_map, top_fraction=0)
    with pytest.raises(ValueError, match="ring"):
        border_fraction(grid_map, ring=0)
    with pytest.raises(ValueError, match="ring"):
        border_fraction(grid_map, ring=9)
    with pytest.raises(ValueError, match="shape"):
        inside_body_ratio(grid_map, np.ones((8, 8)))
    with pytest.raises(ValueError, match="fractions"):
        inside_body_ratio(grid_map, np.full(GRID, 2.0))
    with pytest.raises(ValueError, match="lung labels"):
        map_metrics(grid_map, body_mask=None, lung_labels=np.full((32, 32), 3, np.uint8))


# --------------------------------------------------------------------------- shard


def test_run_metrics_shard(tmp_path):
    labels = _two_lungs()
    body = np.zeros((160, 160), np.uint8)
    body[5:155, 5:155] = 255
    cv2.imwrite(str(tmp_path / "img1_body.png"), body)
    cv2.imwrite(str(tmp_path / "img1_lungs.png"), labels)
    preprocess = pd.DataFrame(
        {
            "dicom_id": ["img1", "img2"],
            "body_mask": ["img1_body.png", ""],
            "lung_mask": ["img1_lungs.png", ""],
        }
    )
    preprocess.to_csv(tmp_path / "pre.csv", index=False)
    maps = {"m_a": _random_map(1), "m_b": _random_map(2), "m_c": _random_map(3)}
    np.savez(tmp_path / "maps.npz", **maps)
    table = pd.DataFrame({"map_id": ["m_a", "m_b", "m_c", "m_missing"]})
    table["dicom_id"] = ["img1", "img1", "img2", "img1"]
    table.to_csv(tmp_path / "maps.csv", index=False)
    kwargs = dict(
        maps_csv=tmp_path / "maps.csv",
        maps_npz=tmp_path / "maps.npz",
        preprocess_csv=tmp_path / "pre.csv",
        root=tmp_path,
    )
    run_metrics_shard(
        **kwargs, out_csv=tmp_path / "out.csv", failures_csv=tmp_path / "out.failures.csv"
    )
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == METRIC_COLUMNS
    assert out["map_id"].tolist() == ["m_a", "m_b", "m_c", "m_missing"]
    expected = map_metrics(maps["m_a"], body_mask=body, lung_labels=labels)
    for key, value in expected.items():
        assert out.loc[0, key] == pytest.approx(value, rel=1e-8)
    # img2 has no masks: mask metrics NaN, the map's own metrics still computed.
    assert out.loc[2, ["inside_body", "left_right", "apical_basal"]].isna().all()
    assert out.loc[2, "entropy"] == pytest.approx(entropy(maps["m_c"]), rel=1e-8)
    assert out.loc[3, METRIC_COLUMNS[1:]].isna().all()
    failures = pd.read_csv(tmp_path / "out.failures.csv")
    assert set(failures["dicom_id"]) == {"img1", "img2"}
    assert "no_map" in set(failures["error_type"])
    # Byte-identical on rerun.
    run_metrics_shard(**kwargs, out_csv=tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == (tmp_path / "out.csv").read_bytes()


def test_run_metrics_shard_records_unusable_masks(tmp_path):
    body = np.full((64, 48), 255, np.uint8)
    cv2.imwrite(str(tmp_path / "body.png"), body)
    cv2.imwrite(str(tmp_path / "lungs.png"), np.full((64, 48), 7, np.uint8))  # not 0/1/2
    (tmp_path / "broken.png").write_bytes(b"not a png")
    pd.DataFrame(
        {
            "dicom_id": ["a", "b"],
            "body_mask": ["body.png", "broken.png"],
            "lung_mask": ["lungs.png"] * 2,
        }
    ).to_csv(tmp_path / "pre.csv", index=False)
    np.savez(tmp_path / "maps.npz", m1=_random_map(1), m2=_random_map(2))
    pd.DataFrame({"map_id": ["m1", "m2"], "dicom_id": ["a", "b"]}).to_csv(
        tmp_path / "maps.csv", index=False
    )
    run_metrics_shard(
        maps_csv=tmp_path / "maps.csv",
        maps_npz=tmp_path / "maps.npz",
        preprocess_csv=tmp_path / "pre.csv",
        out_csv=tmp_path / "out.csv",
        failures_csv=tmp_path / "failures.csv",
        root=tmp_path,
    )
    out = pd.read_csv(tmp_path / "out.csv").set_index("map_id")
    assert out.loc["m1", "inside_body"] == pytest.approx(1.0)  # the whole image is body
    assert out.loc[["m1", "m2"], ["left_right", "apical_basal"]].isna().all().all()
    assert math.isnan(out.loc["m2", "inside_body"])
    failures = pd.read_csv(tmp_path / "failures.csv")
    assert sorted(failures["error_type"]) == ["bad_mask", "bad_mask", "bad_mask"]


def test_a_flagged_lung_mask_is_kept_out_of_the_lung_metrics_only(tmp_path):
    """The same masks and map, flagged or not: the lung metrics go blank, nothing else moves."""
    labels = _two_lungs()
    body = np.zeros((160, 160), np.uint8)
    body[5:155, 5:155] = 255
    cv2.imwrite(str(tmp_path / "body.png"), body)
    cv2.imwrite(str(tmp_path / "lungs.png"), labels)
    pd.DataFrame(
        {
            "dicom_id": ["plausible", "flagged"],
            "body_mask": ["body.png"] * 2,
            "lung_mask": ["lungs.png"] * 2,
            "mask_ok": [True, False],
            "mask_flags": ["", "touches_lower_border"],
        }
    ).to_csv(tmp_path / "pre.csv", index=False)
    grid = _random_map(5)
    np.savez(tmp_path / "maps.npz", m1=grid, m2=grid)
    pd.DataFrame({"map_id": ["m1", "m2"], "dicom_id": ["plausible", "flagged"]}).to_csv(
        tmp_path / "maps.csv", index=False
    )
    run_metrics_shard(
        maps_csv=tmp_path / "maps.csv",
        maps_npz=tmp_path / "maps.npz",
        preprocess_csv=tmp_path / "pre.csv",
        out_csv=tmp_path / "out.csv",
        failures_csv=tmp_path / "failures.csv",
        root=tmp_path,
    )
    out = pd.read_csv(tmp_path / "out.csv").set_index("map_id")
    expected = map_metrics(grid, body_mask=body, lung_labels=labels)
    lung_columns = list(LUNG_METRIC_COLUMNS)
    for column, value in expected.items():
        assert out.loc["m1", column] == pytest.approx(value, rel=1e-8)
        if column in lung_columns:
            assert math.isnan(out.loc["m2", column])
        else:
            assert out.loc["m2", column] == pytest.approx(value, rel=1e-8)
    assert np.isfinite(out.loc["m1", lung_columns].to_numpy(float)).all()
    assert pd.read_csv(tmp_path / "failures.csv").empty  # a flag, not a failure
