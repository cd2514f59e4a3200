"""Geometry between the image-token grid and the image's pixels.

Gemma 3's image processor resizes every image to a square (896 x 896 for MedGemma) without keeping
its aspect ratio, the vision tower cuts that square into 64 x 64 patches of 14 px, and the
multimodal projector average-pools them 4 x 4 into the 16 x 16 grid of image tokens. Token
``(row, col)`` therefore covers the same *fraction* of the original image as of the square:
rows ``[row/16, (row+1)/16)`` of its height and columns ``[col/16, (col+1)/16)`` of its width,
whatever the image's aspect ratio. Mapping between grid and pixels is a stretch along each axis.

Patch ``p`` of the vision tower's output sits at row ``p // P``, column ``p % P`` of the
``P x P`` patch square (row-major, as ``Gemma3MultiModalProjector`` reshapes it), and token
``(row, col)`` is the mean of the ``k x k`` patches ``[row*k, (row+1)*k) x [col*k, (col+1)*k)``
with ``k = P / 16`` (``nn.AvgPool2d(k, stride=k)``). :func:`pool_patches_to_grid` applies that
same pooling to any per-patch value (Grad-CAM, activation norms).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["factor_to_grid", "grid_to_image", "image_to_grid", "pool_patches_to_grid"]


def factor_to_grid(n_tokens: int, aspect_ratio: float = 1.0) -> tuple[int, int]:
    """Rows and columns of a grid of ``n_tokens`` tokens for an image of ``aspect_ratio`` (W / H).

    A square count gives a square grid. Otherwise the factor pair ``rows * cols == n_tokens`` whose
    ``cols / rows`` is closest (in log ratio) to the aspect ratio is chosen.
    """
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    if aspect_ratio <= 0:
        raise ValueError(f"aspect_ratio must be positive, got {aspect_ratio}")
    root = math.isqrt(n_tokens)
    if root * root == n_tokens:
        return root, root
    pairs = [(r, n_tokens // r) for r in range(1, n_tokens + 1) if n_tokens % r == 0]
    return min(pairs, key=lambda rc: abs(math.log(rc[1] / rc[0]) - math.log(aspect_ratio)))


def image_to_grid(values: np.ndarray, grid_shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    """Mean of ``values`` over the pixels each token cell covers (area-weighted at cell borders).

    For a 0/1 mask this is the fraction of each cell inside the mask. Computed exactly in float64
    as ``R @ values @ C.T``, where ``R[r, i]`` is the share of cell row ``r`` that pixel row ``i``
    covers (the same for columns); it equals OpenCV's ``INTER_AREA`` shrink, which accumulates
    in single precision.

    Parameters
    ----------
    values : ndarray of shape (H, W)
        Mask or image; any numeric or boolean dtype.
    grid_shape : (rows, cols)

    Returns
    -------
    ndarray of shape grid_shape, float64
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {values.shape}")
    rows, cols = grid_shape
    height, width = values.shape
    if height < rows or width < cols:
        raise ValueError(f"image {values.shape} is smaller than the grid {grid_shape}")
    as_float = values.astype(np.float64)
    return _area_weights(height, rows) @ as_float @ _area_weights(width, cols).T


def _area_weights(n_pixels: int, n_cells: int) -> np.ndarray:
    """``(n_cells, n_pixels)`` matrix: overlap of pixel ``i`` with cell ``c`` over the cell size."""
    cell = n_pixels / n_cells
    starts = np.arange(n_cells)[:, None] * cell
    pixel = np.arange(n_pixels)[None, :]
    overlap = np.clip(np.minimum(pixel + 1, starts + cell) - np.maximum(pixel, starts), 0, None)
    return overlap / cell


def grid_to_image(
    grid_map: np.ndarray, image_shape: tuple[int, int], *, smooth: bool = False
) -> np.ndarray:
    """Stretch a token-grid map onto an image of ``image_shape`` (H, W).

    With ``smooth=False`` every pixel takes its cell's value (the exact footprint of each token,
    the one to use for metrics); with ``smooth=True`` bilinear interpolation between cell centres
    (for display).
    """
    grid_map = np.asarray(grid_map, dtype=np.float64)
    if grid_map.ndim != 2:
        raise ValueError(f"expected a 2-D grid, got shape {grid_map.shape}")
    height, width = image_shape
    interpolation = cv2.INTER_LINEAR if smooth else cv2.INTER_NEAREST
    return cv2.resize(grid_map, (width, height), interpolation=interpolation)


def pool_patches_to_grid(patch_values: np.ndarray, tokens_per_side: int = 16) -> np.ndarray:
    """Average per-patch values onto the image-token grid exactly as Gemma 3's projector does.

    Parameters
    ----------
    patch_values : ndarray of shape (..., P * P)
        One value per vision patch, patches in the vision tower's order (row-major).
    tokens_per_side : int
        Side of the token grid (``sqrt(mm_tokens_per_image)``, 16).

    Returns
    -------
    ndarray of shape (..., tokens_per_side, tokens_per_side), float64
        Mean over each ``k x k`` block of patches, ``k = P / tokens_per_side``.
    """
    values = np.asarray(patch_values, dtype=np.float64)
    n_patches = values.shape[-1]
    side = math.isqrt(n_patches)
    if side * side != n_patches:
        raise ValueError(f"{n_patches} patches do not form a square")
    if side % tokens_per_side:
        raise ValueError(f"{side} x {side} patches do not pool evenly to {tokens_per_side}")
    k = side // tokens_per_side
    blocks = values.reshape(*values.shape[:-1], tokens_per_side, k, tokens_per_side, k)
    return blocks.mean(axis=(-3, -1))
