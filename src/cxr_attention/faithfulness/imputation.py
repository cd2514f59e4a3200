"""What a removed grid cell's pixels become: a blurred image, the image mean, or ROAD's noisy
linear imputation (Rong et al., ICML 2022).

The model sees the image squashed to a square (``geometry``), so a cell's footprint in the
model's pixels is the block ``grid_to_image`` stretches it onto. Everything here works on the
model's pixel array ``(channels, S, S)`` (already normalised by the processor), so what is removed
is exactly what the cell's image token summarises.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from cxr_attention.geometry import grid_to_image

__all__ = [
    "INPUT_PERTURBATIONS",
    "ROAD_NEIGHBOUR_WEIGHTS",
    "cell_pixel_mask",
    "noisy_linear_imputation",
    "perturb_pixels",
    "replacement_image",
]

#: Input-level perturbations: ``blur`` (Gaussian blur, sigma one cell), ``mean`` (the image's
#: per-channel mean) and ``road`` (noisy linear imputation).
INPUT_PERTURBATIONS = ("blur", "mean", "road")

#: ROAD's neighbour weights (its reference implementation): direct neighbours 1/6, diagonal 1/12.
ROAD_NEIGHBOUR_WEIGHTS = (
    ((1, 1), 1 / 12),
    ((0, 1), 1 / 6),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((0, -1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
)


def cell_pixel_mask(removed_cells: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the pixels the removed grid cells cover (squash geometry)."""
    cells = np.asarray(removed_cells, dtype=np.float64)
    return grid_to_image(cells, image_shape, smooth=False) > 0.5


def replacement_image(pixels: np.ndarray, perturbation: str, *, blur_sigma_cells: float = 1.0):
    """The image a removed pixel takes its value from, for ``blur`` and ``mean``.

    Parameters
    ----------
    pixels : ndarray (C, H, W), float
    perturbation : {"blur", "mean"}
    blur_sigma_cells : float
        Blur sigma in grid cells (one cell = H / 16 pixels).
    """
    pixels = np.asarray(pixels, dtype=np.float32)
    if perturbation == "mean":
        return np.broadcast_to(pixels.mean(axis=(1, 2), keepdims=True), pixels.shape).copy()
    if perturbation == "blur":
        sigma = blur_sigma_cells * pixels.shape[1] / 16
        return np.stack(
            [cv2.GaussianBlur(channel, (0, 0), sigmaX=sigma, sigmaY=sigma) for channel in pixels]
        )
    raise ValueError(f"no replacement image for perturbation {perturbation!r}")


def noisy_linear_imputation(
    pixels: np.ndarray,
    missing: np.ndarray,
    *,
    noise: float,
    rng: np.random.Generator,
    solve_side: int | None = None,
) -> np.ndarray:
    """ROAD's imputation: every missing pixel the weighted mean of its 8 neighbours, plus noise.

    The missing values solve one sparse linear system (known neighbours on the right-hand side,
    neighbours outside the image dropped and the weights renormalised), as in ROAD's reference
    code; Gaussian noise of sd ``noise`` is then added to the imputed pixels. With every pixel
    missing the system is singular (nothing anchors it): the image mean fills it.

    A direct solve over MedGemma's 896 x 896 pixels takes minutes per mask on a CPU, so with
    ``solve_side`` set below the image's side the system is solved on the image shrunk to that
    side (area-averaged) and the smooth solution is stretched back (bilinear) onto the missing
    pixels; the known pixels are never changed. A deviation from ROAD, which imputes at full
    resolution (its images are 32 to 224 pixels).

    Parameters
    ----------
    pixels : ndarray (C, H, W), float
    missing : ndarray (H, W), bool
    noise : float
        Absolute sd of the added noise (ROAD: 0.01), in the units of ``pixels``.
    rng : numpy Generator
    solve_side : int, optional
        Side of the square the system is solved on (None: full resolution).
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    missing = np.asarray(missing, dtype=bool)
    out = pixels.copy()
    if not missing.any():
        return out.astype(np.float32)
    height, width = missing.shape
    if missing.all():
        out[:] = pixels.mean(axis=(1, 2), keepdims=True)
    elif solve_side is None or max(height, width) <= solve_side:
        out[:, missing] = _solve_missing(pixels, missing).T
    else:
        size = (solve_side, solve_side)
        small = np.stack([cv2.resize(c, size, interpolation=cv2.INTER_AREA) for c in pixels])
        small_missing = (
            cv2.resize(missing.astype(np.float64), size, interpolation=cv2.INTER_AREA) > 0.5
        )
        filled = small.copy()
        if small_missing.all():
            filled[:] = small.mean(axis=(1, 2), keepdims=True)
        elif small_missing.any():
            filled[:, small_missing] = _solve_missing(small, small_missing).T
        large = np.stack(
            [cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in filled]
        )
        out[:, missing] = large[:, missing]
    out[:, missing] += noise * rng.standard_normal((pixels.shape[0], int(missing.sum())))
    return out.astype(np.float32)


def _solve_missing(pixels: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """``(n_missing, C)`` values with ``sum_w * x_i - sum_{j missing} w_ij x_j = sum_known w x``."""
    height, width = missing.shape
    rows_idx, cols_idx = np.nonzero(missing)
    n = rows_idx.size
    variable = -np.ones((height, width), dtype=np.int64)
    variable[rows_idx, cols_idx] = np.arange(n)
    flat = pixels.reshape(pixels.shape[0], -1)
    weight_sum = np.zeros(n)
    rhs = np.zeros((n, pixels.shape[0]))
    a_rows, a_cols, a_vals = [np.arange(n)], [np.arange(n)], []
    off_rows, off_cols, off_vals = [], [], []
    for (d_row, d_col), weight in ROAD_NEIGHBOUR_WEIGHTS:
        r, c = rows_idx + d_row, cols_idx + d_col
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        weight_sum[inside] += weight
        eq = np.nonzero(inside)[0]
        neighbour_var = variable[r[inside], c[inside]]
        known = neighbour_var < 0
        rhs[eq[known]] += weight * flat[:, r[inside][known] * width + c[inside][known]].T
        off_rows.append(eq[~known])
        off_cols.append(neighbour_var[~known])
        off_vals.append(np.full((~known).sum(), -weight))
    a_vals.append(weight_sum)
    matrix = coo_matrix(
        (
            np.concatenate(a_vals + off_vals),
            (np.concatenate(a_rows + off_rows), np.concatenate(a_cols + off_cols)),
        ),
        shape=(n, n),
    ).tocsc()
    solution = spsolve(matrix, rhs)
    return np.asarray(solution).reshape(n, -1)


def perturb_pixels(
    pixels: np.ndarray,
    removed_cells: np.ndarray,
    perturbation: str,
    *,
    replacement: np.ndarray | None = None,
    road_noise: float = 0.01,
    road_side: int | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``pixels`` with the removed cells' footprints replaced.

    Parameters
    ----------
    pixels : ndarray (C, H, W)
    removed_cells : ndarray (rows, cols), bool
    perturbation : one of INPUT_PERTURBATIONS
    replacement : ndarray (C, H, W), optional
        `replacement_image`'s output (computed once per image for ``blur`` and ``mean``).
    road_noise : float
    road_side : int, optional
        `noisy_linear_imputation`'s ``solve_side``.
    rng : numpy Generator, needed for ``road``
    """
    missing = cell_pixel_mask(removed_cells, pixels.shape[1:])
    if perturbation == "road":
        if rng is None:
            raise ValueError("road needs a random generator")
        return noisy_linear_imputation(
            pixels, missing, noise=road_noise, rng=rng, solve_side=road_side
        )
    if replacement is None:
        replacement = replacement_image(pixels, perturbation)
    return np.where(missing[None], replacement, pixels).astype(np.float32)
