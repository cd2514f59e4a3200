"""Metrics of one token-grid map: where its mass lies and how spread out it is.

Every map is a non-negative ``(rows, cols)`` array (16 x 16 for MedGemma) that sums to 1: the share
of the answer's attention (or Grad-CAM, ...) that each image token receives. Masks live at pixel
resolution; they reach the grid through :func:`cxr_attention.geometry.image_to_grid`, which gives
each token cell the fraction of its pixels inside the mask. The mass of a map inside a mask is then
``sum(map * fraction)``, which is exactly what one gets by spreading each cell's value evenly over
its pixels and summing under the mask (the tests check this on non-square, non-divisible images).

All functions are pure (arrays in, numbers out), validate their inputs with ``ValueError`` and
accumulate in float64. The metrics' columns, labels and targets are in
:mod:`cxr_attention.metrics.catalogue`; :mod:`cxr_attention.metrics.shard` is the workflow's I/O
wrapper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cxr_attention.geometry import image_to_grid
from cxr_attention.metrics.catalogue import ENTROPY, MASS_SHARE_METRICS
from cxr_attention.preprocessed import LEFT_LUNG_LABEL, RIGHT_LUNG_LABEL

__all__ = [
    "LEFT_LUNG_LABEL",
    "RIGHT_LUNG_LABEL",
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
]


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
        In [0, 1]; lower is better (image borders carry labels and collimation, not anatomy;
        target in :data:`cxr_attention.metrics.catalogue.BORDER_FRACTION`).
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
    Bands: :data:`cxr_attention.metrics.catalogue.ENTROPY`.
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
    """``"focused"``, ``"intermediate"`` or ``"diffuse"`` (the catalogue's entropy bands)."""
    return ENTROPY.band_of(value)


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
        In [0, 1]; target in :data:`cxr_attention.metrics.catalogue.INSIDE_BODY`.
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
        right; balanced band in :data:`cxr_attention.metrics.catalogue.LEFT_RIGHT`. NaN when
        the map has no mass on either lung.
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
    """Every per-map metric from a map and its image's :class:`MaskGrids`, with chance baselines.

    Metrics that need an absent mask are NaN; the others are computed. Each mass-share metric
    (:data:`cxr_attention.metrics.catalogue.MASS_SHARE_METRICS`) also gets its area share
    (``<metric>_area``: the same metric of a uniform map on the same grids) and its lift
    (``<metric>_lift`` = share / area share; NaN when the area share is 0 or NaN).
    """
    values = _as_distribution(attention_map)
    shares = _mass_metrics(values, grids, ring=ring, top_fraction=top_fraction)
    chance = _mass_metrics(np.ones_like(values), grids, ring=ring, top_fraction=top_fraction)
    for entry in MASS_SHARE_METRICS:
        area = chance[entry.column]
        shares[entry.area_column] = area
        shares[entry.lift_column] = _share(shares[entry.column], area)
    return shares


def _mass_metrics(
    attention_map: np.ndarray, grids: MaskGrids, *, ring: int, top_fraction: float
) -> dict[str, float]:
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
        left_right, apical_basal`` (NaN where a mask is None), then per mass-share metric
        ``<metric>_area, <metric>_lift`` (:func:`metrics_from_grids`).
    """
    values = _as_distribution(attention_map)
    grids = mask_grids(body_mask, lung_labels, values.shape)
    return metrics_from_grids(values, grids, ring=ring, top_fraction=top_fraction)
