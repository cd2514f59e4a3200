"""Metrics of one token-grid map: where its mass lies and how spread out it is.

Every map is a non-negative ``(rows, cols)`` array (16 x 16 for MedGemma) that sums to 1: the share
of the answer's attention (or Grad-CAM, ...) that each image token receives. Masks live at pixel
resolution; they reach the grid through :func:`cxr_attention.geometry.image_to_grid`, which gives
each token cell the fraction of its pixels inside the mask. The mass of a map inside a mask is then
``sum(map * fraction)``, which is exactly what one gets by spreading each cell's value evenly over
its pixels and summing under the mask (the tests check this on non-square, non-divisible images).

All functions are pure (arrays in, numbers out), validate their inputs with ``ValueError`` and
accumulate in float64. :func:`run_metrics_shard` is the workflow's I/O wrapper.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.geometry import image_to_grid
from cxr_attention.io import Failure, InputError, read_table, write_csv, write_failures

__all__ = [
    "BORDER_TARGET",
    "ENTROPY_DIFFUSE",
    "ENTROPY_FOCUSED",
    "INSIDE_BODY_TARGET",
    "LEFT_RIGHT_BALANCED",
    "METRIC_COLUMNS",
    "MaskGrids",
    "apical_basal",
    "border_fraction",
    "entropy",
    "entropy_band",
    "entropy_normalised",
    "focus",
    "focus_max",
    "inside_body_ratio",
    "left_right",
    "lung_halves",
    "map_metrics",
    "mask_grids",
    "metrics_from_grids",
    "run_metrics_shard",
]

#: Columns of the per-map metrics table, in order (docs/architecture.md, "Per-map metrics").
METRIC_COLUMNS = [
    "map_id",
    "inside_body",
    "border_fraction",
    "entropy",
    "entropy_normalised",
    "focus",
    "focus_max",
    "left_right",
    "apical_basal",
]

#: Quality targets and bands (docs/metrics.md).
INSIDE_BODY_TARGET = 0.7  # inside_body >= 0.7
BORDER_TARGET = 0.05  # border_fraction <= 0.05
ENTROPY_FOCUSED = 3.0  # entropy < 3.0 nats: focused
ENTROPY_DIFFUSE = 4.5  # entropy > 4.5 nats: diffuse (log 256 = 5.545 is uniform)
LEFT_RIGHT_BALANCED = (0.3, 0.7)  # left_right within: balanced between the lungs

RIGHT_LUNG_LABEL = 1  # patient's right lung (the image's left on a frontal view)
LEFT_LUNG_LABEL = 2  # patient's left lung


# --------------------------------------------------------------------------- validation helpers


def _as_distribution(attention_map: np.ndarray) -> np.ndarray:
    """Validate a map and return it in float64, rescaled to sum exactly to 1.

    Stored maps are float32 and sum to 1 only up to rounding; rescaling removes that rounding
    from every share computed below.
    """
    values = np.asarray(attention_map)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {values.shape}")
    if values.size == 0:
        raise ValueError("the map is empty")
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("the map has non-finite values")
    if np.any(values < 0):
        raise ValueError("the map has negative values")
    total = values.sum()
    if total <= 0:
        raise ValueError("the map has no mass (sums to 0)")
    return values / total


def _as_fraction_grid(fractions: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    values = np.asarray(fractions, dtype=np.float64)
    if values.shape != shape:
        raise ValueError(f"{name} has shape {values.shape}, the map has shape {shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} has non-finite values")
    # Fractions may overshoot [0, 1] by a rounding error (image_to_grid's float64 products by
    # ~1e-16, a caller's OpenCV INTER_AREA shrink in single precision by ~1e-7); anything beyond
    # that is a wrong input.
    if np.any(values < -1e-6) or np.any(values > 1 + 1e-6):
        raise ValueError(f"{name} must hold cell fractions in [0, 1]")
    return np.clip(values, 0.0, 1.0)


def _masses_on(attention_map: np.ndarray, **fraction_grids: np.ndarray) -> list[float]:
    """Map mass on each region, ``sum(map * fraction_grid)``, in argument order.

    Each keyword names its grid in the error of :func:`_as_fraction_grid`; grids are checked in
    argument order.
    """
    values = _as_distribution(attention_map)
    return [
        float(np.sum(values * _as_fraction_grid(grid, values.shape, name)))
        for name, grid in fraction_grids.items()
    ]


def _share(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when there is nothing to share."""
    return float(numerator / denominator) if denominator > 0 else math.nan


# --------------------------------------------------------------------------- map-only metrics


def border_fraction(attention_map: np.ndarray, *, ring: int = 1) -> float:
    """Mass on the outer ring of tokens.

    Parameters
    ----------
    attention_map : ndarray of shape (rows, cols)
        Non-negative map (normalised to sum 1 here).
    ring : int, optional
        Width of the ring in tokens (default 1: the 60 edge cells of a 16 x 16 grid).

    Returns
    -------
    float
        In [0, 1]; target <= 0.05 (image borders carry labels and collimation, not anatomy).
    """
    values = _as_distribution(attention_map)
    if isinstance(ring, bool) or not isinstance(ring, (int, np.integer)) or ring < 1:
        raise ValueError(f"ring must be a positive integer, got {ring!r}")
    rows, cols = values.shape
    if 2 * ring > min(rows, cols):
        raise ValueError(f"ring {ring} is wider than half the grid {values.shape}")
    interior = values[ring : rows - ring, ring : cols - ring].sum()
    return float(max(0.0, 1.0 - interior))


def entropy(attention_map: np.ndarray) -> float:
    """Shannon entropy of the map in nats, ``-sum p log p`` over its cells (0 log 0 = 0).

    0 for a one-hot map, ``log(n_cells)`` (5.545 for 256 tokens) for a uniform one. Bands:
    < 3.0 focused, > 4.5 diffuse.
    """
    values = _as_distribution(attention_map)
    positive = values[values > 0]
    return float(-np.sum(positive * np.log(positive)))


def entropy_normalised(attention_map: np.ndarray) -> float:
    """:func:`entropy` divided by ``log(n_cells)``: 0 for one-hot, 1 for uniform."""
    values = _as_distribution(attention_map)
    if values.size == 1:
        return 0.0
    return entropy(values) / math.log(values.size)


def entropy_band(value: float) -> str:
    """``"focused"`` (< 3.0 nats), ``"diffuse"`` (> 4.5 nats), else ``"intermediate"``."""
    if not np.isfinite(value):
        return "undefined"
    if value < ENTROPY_FOCUSED:
        return "focused"
    if value > ENTROPY_DIFFUSE:
        return "diffuse"
    return "intermediate"


def focus(attention_map: np.ndarray, *, top_fraction: float = 0.05) -> float:
    """Mass of the top ``top_fraction`` of tokens (the ``ceil(top_fraction * n)`` largest cells).

    With the default 5% of 256 tokens this is the mass of the 13 largest cells: 13/256 = 0.051 for a
    uniform map, 1 for a map on at most 13 cells.
    """
    values = _as_distribution(attention_map)
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must lie in (0, 1], got {top_fraction}")
    # The small epsilon keeps 0.05 * 256 = 12.8 (exactly representable products too) from
    # rounding up one cell too many through floating-point noise.
    n_top = max(1, math.ceil(top_fraction * values.size - 1e-9))
    flat = np.sort(values.ravel())[::-1]
    return float(flat[:n_top].sum())


def focus_max(attention_map: np.ndarray) -> float:
    """Mass of the single largest cell."""
    return float(_as_distribution(attention_map).max())


# --------------------------------------------------------------------------- mask metrics


def inside_body_ratio(attention_map: np.ndarray, body_fraction_grid: np.ndarray) -> float:
    """Map mass inside the body: ``sum(map * body_fraction_grid)``.

    Parameters
    ----------
    attention_map : ndarray of shape (rows, cols)
    body_fraction_grid : ndarray of shape (rows, cols)
        Fraction of each token cell inside the body mask (``image_to_grid(body_mask > 0)``).

    Returns
    -------
    float
        In [0, 1]; target >= 0.7.
    """
    (inside,) = _masses_on(attention_map, body_fraction_grid=body_fraction_grid)
    return inside


def left_right(
    attention_map: np.ndarray, right_lung_grid: np.ndarray, left_lung_grid: np.ndarray
) -> float:
    """Share of the in-lung mass that lies in the *patient's* left lung (label 2).

    Parameters
    ----------
    attention_map : ndarray of shape (rows, cols)
    right_lung_grid, left_lung_grid : ndarray of shape (rows, cols)
        Fraction of each cell inside the patient's right (label 1) and left (label 2) lung.

    Returns
    -------
    float
        ``left / (left + right)`` in [0, 1]: 1 = all in the patient's left lung, 0 = all in the
        right; balanced within 0.3-0.7. NaN when the map has no mass on either lung.
    """
    right, left = _masses_on(
        attention_map, right_lung_grid=right_lung_grid, left_lung_grid=left_lung_grid
    )
    return _share(left, left + right)


def apical_basal(
    attention_map: np.ndarray, upper_lung_grid: np.ndarray, lower_lung_grid: np.ndarray
) -> float:
    """Share of the in-lung mass in the upper (apical) half of the lungs.

    Parameters
    ----------
    attention_map : ndarray of shape (rows, cols)
    upper_lung_grid, lower_lung_grid : ndarray of shape (rows, cols)
        Fraction of each cell inside the upper and lower halves of the lungs, each lung split at
        the middle of its *own* vertical extent (see :func:`lung_halves`).

    Returns
    -------
    float
        ``upper / (upper + lower)`` in [0, 1]; NaN when the map has no mass on the lungs.
    """
    upper, lower = _masses_on(
        attention_map, upper_lung_grid=upper_lung_grid, lower_lung_grid=lower_lung_grid
    )
    return _share(upper, upper + lower)


def lung_halves(lung_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower halves of each lung, at pixel level, as area weights.

    Each lung (label 1 and label 2 separately) is split at the middle of its own vertical extent:
    for a lung whose pixels span rows ``top .. bottom`` the split line lies at
    ``top + (bottom - top + 1) / 2``. A row the line cuts in half (odd extents) counts one half
    to each side, so the split is exact in area.

    Parameters
    ----------
    lung_labels : ndarray of shape (H, W)
        0 background, 1 patient right lung, 2 patient left lung.

    Returns
    -------
    upper, lower : ndarray of shape (H, W), float64
        Weights in {0, 0.5, 1}; ``upper + lower`` is 1 on lung pixels and 0 elsewhere.
    """
    labels = _check_lung_labels(lung_labels)
    upper = np.zeros(labels.shape, dtype=np.float64)
    lung = np.isin(labels, (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL)).astype(np.float64)
    for label in (RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL):
        inside = labels == label
        rows = np.flatnonzero(inside.any(axis=1))
        if rows.size == 0:
            continue
        top, bottom = rows[0], rows[-1]
        split = top + (bottom - top + 1) / 2.0
        # Pixel row r covers [r, r + 1): its share above the split line.
        row_weight = np.clip(split - np.arange(labels.shape[0]), 0.0, 1.0)
        upper += inside * row_weight[:, None]
    return upper, lung - upper


def _check_lung_labels(lung_labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(lung_labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2-D lung label image, got shape {labels.shape}")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        raise ValueError("lung labels have non-finite values")
    if not np.all(np.isin(labels, (0, RIGHT_LUNG_LABEL, LEFT_LUNG_LABEL))):
        raise ValueError(
            "lung labels must be 0 (background), 1 (patient right) or 2 (patient left)"
        )
    return labels


# --------------------------------------------------------------------------- all metrics


@dataclass(frozen=True)
class MaskGrids:
    """Fractions of each token cell inside the masks of one image (any may be None: no mask)."""

    body: np.ndarray | None
    right_lung: np.ndarray | None
    left_lung: np.ndarray | None
    upper_lung: np.ndarray | None
    lower_lung: np.ndarray | None


def mask_grids(
    body_mask: np.ndarray | None,
    lung_labels: np.ndarray | None,
    grid_shape: tuple[int, int] = (16, 16),
) -> MaskGrids:
    """Map an image's pixel masks onto the token grid, once per image.

    Parameters
    ----------
    body_mask : ndarray of shape (H, W) or None
        Non-zero inside the body (the preprocess stage writes 0/255).
    lung_labels : ndarray of shape (H2, W2) or None
        0 / 1 patient right / 2 patient left. Its size need not match the body mask's: each mask
        is stretched onto the grid on its own.
    grid_shape : (rows, cols)
    """
    body = None
    if body_mask is not None:
        body_mask = np.asarray(body_mask)
        if body_mask.ndim != 2:
            raise ValueError(f"expected a 2-D body mask, got shape {body_mask.shape}")
        body = image_to_grid(body_mask > 0, grid_shape)
    right = left = upper = lower = None
    if lung_labels is not None:
        labels = _check_lung_labels(lung_labels)
        right = image_to_grid(labels == RIGHT_LUNG_LABEL, grid_shape)
        left = image_to_grid(labels == LEFT_LUNG_LABEL, grid_shape)
        upper_pixels, lower_pixels = lung_halves(labels)
        upper = image_to_grid(upper_pixels, grid_shape)
        lower = image_to_grid(lower_pixels, grid_shape)
    return MaskGrids(body, right, left, upper, lower)


def metrics_from_grids(
    attention_map: np.ndarray,
    grids: MaskGrids,
    *,
    ring: int = 1,
    top_fraction: float = 0.05,
) -> dict[str, float]:
    """Every per-map metric from a map and its image's :class:`MaskGrids`.

    Metrics that need an absent mask are NaN; the others are computed.
    """
    values = _as_distribution(attention_map)
    lungs_known = grids.right_lung is not None and grids.left_lung is not None
    halves_known = grids.upper_lung is not None and grids.lower_lung is not None
    return {
        "inside_body": (
            inside_body_ratio(values, grids.body) if grids.body is not None else math.nan
        ),
        "border_fraction": border_fraction(values, ring=ring),
        "entropy": entropy(values),
        "entropy_normalised": entropy_normalised(values),
        "focus": focus(values, top_fraction=top_fraction),
        "focus_max": focus_max(values),
        "left_right": (
            left_right(values, grids.right_lung, grids.left_lung) if lungs_known else math.nan
        ),
        "apical_basal": (
            apical_basal(values, grids.upper_lung, grids.lower_lung) if halves_known else math.nan
        ),
    }


def map_metrics(
    attention_map: np.ndarray,
    *,
    body_mask: np.ndarray | None,
    lung_labels: np.ndarray | None,
    ring: int = 1,
    top_fraction: float = 0.05,
) -> dict[str, float]:
    """Every per-map metric of one map from its image's pixel masks (any image size).

    Parameters
    ----------
    attention_map : ndarray of shape (rows, cols)
        Non-negative map; normalised to sum 1.
    body_mask : ndarray of shape (H, W) or None
        Non-zero inside the body.
    lung_labels : ndarray of shape (H2, W2) or None
        0 background, 1 patient right lung, 2 patient left lung.
    ring, top_fraction
        See :func:`border_fraction` and :func:`focus`.

    Returns
    -------
    dict
        ``inside_body, border_fraction, entropy, entropy_normalised, focus, focus_max,
        left_right, apical_basal`` (NaN where a mask is None).
    """
    values = _as_distribution(attention_map)
    grids = mask_grids(body_mask, lung_labels, values.shape)
    return metrics_from_grids(values, grids, ring=ring, top_fraction=top_fraction)


# --------------------------------------------------------------------------- shard I/O


def _read_mask(path: Path) -> np.ndarray:
    import cv2  # heavy import, only needed here

    if not path.is_file():
        raise InputError(path, "mask file not found", error_type="missing_mask")
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise InputError(path, "mask cannot be decoded", error_type="bad_mask")
    if mask.ndim == 3:  # a colour PNG of a mask: every channel holds the same labels
        mask = mask[..., 0]
    return mask


def _resolve(path_text: str, root: Path) -> Path:
    path = Path(path_text)
    return path if path.is_absolute() else root / path


def run_metrics_shard(
    *,
    maps_csv: str | os.PathLike,
    maps_npz: str | os.PathLike,
    preprocess_csv: str | os.PathLike,
    out_csv: str | os.PathLike,
    failures_csv: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    ring: int = 1,
    top_fraction: float = 0.05,
) -> None:
    """Compute the per-map metrics of one shard and write them atomically.

    Parameters
    ----------
    maps_csv, maps_npz
        The maps table and its arrays (keyed by ``map_id``).
    preprocess_csv
        The preprocess table: ``dicom_id, body_mask, lung_mask`` (paths relative to ``root``).
    out_csv
        One row per map of ``maps_csv``, in its order, columns :data:`METRIC_COLUMNS`.
    failures_csv
        Where to write one failures row per map whose masks or array could not be used (optional).
    root
        Folder that relative mask paths start from (default: the current directory, the repo root
        under Snakemake).

    Notes
    -----
    A map whose image has no (readable) masks gets NaN for the mask metrics and the row is still
    written; a map whose array is missing or invalid gets an all-NaN row. Each is a failures row.
    """
    root_path = Path.cwd() if root is None else Path(root)
    maps = read_table(maps_csv, required=("map_id", "dicom_id"), text=True)
    preprocess = read_table(preprocess_csv, text=True)
    masks_by_image = (
        preprocess.drop_duplicates("dicom_id").set_index("dicom_id")
        if "dicom_id" in preprocess.columns
        else pd.DataFrame()
    )
    failures: list[Failure] = []
    grids_cache: dict[tuple[str, tuple[int, int]], MaskGrids] = {}
    rows = []
    with np.load(maps_npz) as arrays:
        for record in maps.itertuples(index=False):
            map_id, dicom_id = record.map_id, record.dicom_id
            row = dict.fromkeys(METRIC_COLUMNS[1:], math.nan)
            row["map_id"] = map_id
            try:
                if map_id not in arrays.files:
                    raise InputError(maps_npz, f"no array for map {map_id}", error_type="no_map")
                attention_map = arrays[map_id]
                try:
                    values = _as_distribution(attention_map)
                except ValueError as error:
                    raise InputError(
                        maps_npz, f"map {map_id}: {error}", error_type="bad_map"
                    ) from error
                key = (dicom_id, values.shape)
                if key not in grids_cache:
                    grids_cache[key] = _image_grids(
                        dicom_id, masks_by_image, root_path, values.shape, failures
                    )
                row.update(
                    metrics_from_grids(
                        values, grids_cache[key], ring=ring, top_fraction=top_fraction
                    )
                )
            except InputError as error:
                failures.append(Failure.from_exception("metrics", dicom_id, error.path, error))
            rows.append(row)
    write_csv(pd.DataFrame(rows, columns=METRIC_COLUMNS), out_csv)
    if failures_csv is not None:
        write_failures(failures, failures_csv)


def _image_grids(
    dicom_id: str,
    masks_by_image: pd.DataFrame,
    root: Path,
    grid_shape: tuple[int, int],
    failures: list[Failure],
) -> MaskGrids:
    """The mask grids of one image; a missing or bad mask becomes None and a failures row."""
    grids: dict[str, MaskGrids] = {}
    for column in ("body_mask", "lung_mask"):
        path_text = (
            masks_by_image.at[dicom_id, column]
            if dicom_id in masks_by_image.index and column in masks_by_image.columns
            else ""
        )
        try:
            if not path_text:
                raise InputError(
                    f"<{column} of {dicom_id}>",
                    f"no {column} for this image",
                    error_type="missing_mask",
                )
            path = _resolve(path_text, root)
            mask = _read_mask(path)
            try:
                if column == "body_mask":
                    grids[column] = mask_grids(mask, None, grid_shape)
                else:
                    grids[column] = mask_grids(None, mask, grid_shape)
            except ValueError as error:
                raise InputError(path, str(error), error_type="bad_mask") from error
        except InputError as error:
            failures.append(Failure.from_exception("metrics", dicom_id, error.path, error))
    body = grids.get("body_mask")
    lungs = grids.get("lung_mask")
    return MaskGrids(
        body=body.body if body else None,
        right_lung=lungs.right_lung if lungs else None,
        left_lung=lungs.left_lung if lungs else None,
        upper_lung=lungs.upper_lung if lungs else None,
        lower_lung=lungs.lower_lung if lungs else None,
    )
