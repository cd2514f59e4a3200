"""The reference's metrics of one map, with its own definitions (runner and batch runner)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["reference_map_metrics"]

#: Its validity check sent maps with entropy above this share of ``log(n_cells)`` to Grad-CAM.
_REFERENCE_MAX_ENTROPY_SHARE = 0.95
#: Added to every cell before scipy's entropy in the reference (``entropy(flat + 1e-10)``).
_REFERENCE_ENTROPY_EPS = 1e-10
#: The reference's guard against division by zero in its normalisations.
_REFERENCE_EPS = 1e-8


def _runner_token_mask(body_mask: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """The runner's mask on the grid: bilinear resize of the 0/1 mask, then ``> 0.5``."""
    import cv2

    rows, cols = grid_shape
    resized = cv2.resize(
        np.asarray(body_mask, dtype=np.float32), (cols, rows), interpolation=cv2.INTER_LINEAR
    )
    return (resized > 0.5).astype(np.float64)


def _batch_token_mask(body_mask: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """The batch runner's ``token_mask_from_body``: area resize, ``/ max > 0.15``, frame zeroed."""
    import cv2

    rows, cols = grid_shape
    resized = cv2.resize(
        np.asarray(body_mask, dtype=np.float32) * 255.0, (cols, rows), interpolation=cv2.INTER_AREA
    )
    token_mask = (resized / (resized.max() + _REFERENCE_EPS) > 0.15).astype(np.float64)
    token_mask[:2, :] = 0
    token_mask[-2:, :] = 0
    token_mask[:, :2] = 0
    token_mask[:, -2:] = 0
    return token_mask


def _scipy_style_entropy(values: np.ndarray) -> float:
    """``scipy.stats.entropy(values + 1e-10)`` in nats: the input is renormalised first."""
    shifted = np.asarray(values, dtype=np.float64).ravel() + _REFERENCE_ENTROPY_EPS
    p = shifted / shifted.sum()
    return float(-np.sum(p * np.log(p)))


def reference_map_metrics(grid: np.ndarray, body_mask: np.ndarray) -> dict[str, float]:
    """The reference's metrics of one map, with its own definitions.

    Parameters
    ----------
    grid : ndarray of shape (rows, cols)
        The reference map (:func:`reference_attention_grid`).
    body_mask : ndarray of shape (H, W)
        Non-zero inside the "body" (:func:`reference_body_mask` for the reference's numbers).

    Returns
    -------
    dict
        ``ref_entropy`` (nats, of the masked grid renormalised, +1e-10 per cell),
        ``ref_focus`` (largest masked cell, *not* renormalised), ``ref_inside_body`` (masked
        share: ``sum(grid * mask) / sum(grid)``), ``ref_border_fraction`` (outer ring of the
        masked grid over its sum, corner cells counted twice, so it can exceed 1),
        ``ref_inside_body_batch`` (the batch runner's ratio: grid times its token mask,
        renormalised, then summed: 1 - 1e-8 whatever the map), ``ref_valid`` (1.0 when the
        reference kept the attention map, 0.0 when its entropy check sent it to Grad-CAM),
        ``ref_first_cell_mass`` (mass of grid cell 0, the sink position 1) and
        ``ref_mask_fraction`` (share of pixels in the mask).
    """
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 2 or not np.all(np.isfinite(grid)):
        raise ValueError(f"expected a finite 2-D map, got shape {grid.shape}")
    mask = np.asarray(body_mask) > 0
    token_mask = _runner_token_mask(mask, grid.shape)
    masked = grid * token_mask
    masked_total = masked.sum()
    border = masked[0, :].sum() + masked[-1, :].sum() + masked[:, 0].sum() + masked[:, -1].sum()
    batch_masked = grid * _batch_token_mask(mask, grid.shape)
    batch_masked = batch_masked / (batch_masked.sum() + _REFERENCE_EPS)
    unmasked_entropy = _scipy_style_entropy(grid / (grid.sum() + _REFERENCE_EPS))
    return {
        "ref_valid": float(unmasked_entropy <= _REFERENCE_MAX_ENTROPY_SHARE * math.log(grid.size)),
        "ref_entropy": _scipy_style_entropy(masked / (masked_total + _REFERENCE_EPS)),
        "ref_focus": float(masked.max()),
        "ref_inside_body": float(masked_total / (grid.sum() + _REFERENCE_EPS)),
        "ref_inside_body_batch": float(batch_masked.sum()),
        "ref_border_fraction": float(border / (masked_total + _REFERENCE_EPS)),
        "ref_first_cell_mass": float(grid.ravel()[0] / grid.sum()),
        "ref_mask_fraction": float(mask.mean()),
    }
