"""Small operations on token-grid maps shared by every method: checks, normalisation, display.

Every map the study stores is a float32 ``(rows, cols)`` array (16 x 16 for MedGemma) of finite,
non-negative values summing to 1. Display clipping lives here too, apart from the stored map:
metrics always use the unclipped map.
"""

from __future__ import annotations

import numpy as np

from cxr_attention.geometry import factor_to_grid

__all__ = [
    "MapUnavailable",
    "clip_for_display",
    "normalise_map",
    "strip_outer_ring",
    "to_grid",
    "uniform_map",
]


class MapUnavailable(Exception):
    """A method cannot give a trustworthy map for this target; ``reason`` says why.

    The cascade catches it, records the reason and tries the next method.
    """

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def to_grid(token_values: np.ndarray, *, aspect_ratio: float = 1.0) -> np.ndarray:
    """Fold one value per image token (grid order) into its grid (:func:`factor_to_grid`).

    Parameters
    ----------
    token_values : ndarray of shape (n_tokens,)
    aspect_ratio : float
        Width / height of the image, used only when ``n_tokens`` is not a square.

    Returns
    -------
    ndarray of shape (rows, cols), float64
    """
    values = np.asarray(token_values, dtype=np.float64).reshape(-1)
    rows, cols = factor_to_grid(values.size, aspect_ratio)
    return values.reshape(rows, cols)


def normalise_map(values: np.ndarray) -> np.ndarray:
    """Check a non-negative map and scale it to sum 1 (float32).

    Raises
    ------
    MapUnavailable
        ``"non-finite values"`` when any value is NaN or infinite, ``"negative values"`` when
        any is below zero, ``"all-zero map"`` when the sum is not positive.
    """
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise MapUnavailable("non-finite values")
    if np.any(values < 0):
        raise MapUnavailable("negative values")
    total = values.sum()
    if not total > 0:
        raise MapUnavailable("all-zero map")
    return (values / total).astype(np.float32)


def uniform_map(grid_shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    """The map that says nothing: ``1 / (rows * cols)`` everywhere, float32."""
    rows, cols = grid_shape
    return np.full((rows, cols), 1.0 / (rows * cols), dtype=np.float32)


def strip_outer_ring(grid_map: np.ndarray, width: int = 1) -> np.ndarray:
    """Zero the outer ``width`` rings of cells and renormalise to sum 1.

    The image processor's resize and the vision tower's zero padding give border tokens
    artefactual attention on some models; stripping them keeps maps comparable.

    Raises
    ------
    MapUnavailable
        When no mass is left inside the ring.
    """
    grid_map = np.asarray(grid_map, dtype=np.float64)
    if width <= 0:
        return normalise_map(grid_map)
    rows, cols = grid_map.shape
    if 2 * width >= min(rows, cols):
        raise ValueError(f"a ring of width {width} leaves nothing of a {rows}x{cols} grid")
    inner = np.zeros_like(grid_map)
    inner[width:-width, width:-width] = grid_map[width:-width, width:-width]
    try:
        return normalise_map(inner)
    except MapUnavailable as error:
        raise MapUnavailable(f"no mass inside the outer ring ({error.reason})") from error


def clip_for_display(grid_map: np.ndarray, *, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Clip a map to its ``[low, high]`` percentiles and rescale to ``[0, 1]``, for display only.

    Never feed the result to a metric: it no longer sums to 1 and its tails are gone.

    Returns
    -------
    ndarray, float32
        Zeros when the clipped range is empty (a constant map).
    """
    grid_map = np.asarray(grid_map, dtype=np.float64)
    lower, upper = np.percentile(grid_map, [low, high])
    if not upper > lower:
        return np.zeros(grid_map.shape, dtype=np.float32)
    return ((np.clip(grid_map, lower, upper) - lower) / (upper - lower)).astype(np.float32)
