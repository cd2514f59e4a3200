"""Which mask gave the reference runner its inside-body of 0.13-0.19: both masks replayed.

The runner's saved grids put 69-73% (mean 71.3%) of their mass in grid cell 0, the attention
sink at prompt position 1 (docs/reference_study.md, section 1). :func:`reference_shaped_grid`
builds such a grid (the rest spread evenly), and :func:`replay_inside_body` scores it the
runner's way (``AttentionMetrics.compute_metrics``: the mask shrunk to the grid, bilinear, > 0.5;
masked mass over total mass) with both candidate masks:

- ``inverted``: the batch app's inverted Otsu mask on the 896 x 896 model view
  (:func:`~cxr_attention.reference.masks.reference_body_mask`): it keeps the outside air, so the
  top-left corner, cell 0, is inside and the score is high;
- ``runner``: the non-inverted largest-contour mask on the image itself
  (:func:`~cxr_attention.reference.masks.runner_body_mask`): cell 0 is outside air, out of the
  mask, and the score is the share of the remaining 29% that lands on the body.

The paper's 0.13-0.19 sits in the runner-style range, not in the inverted one.
"""

from __future__ import annotations

import numpy as np

from cxr_attention.reference.masks import (
    REFERENCE_MODEL_VIEW_SIDE,
    reference_body_mask,
    reference_model_view,
    runner_body_mask,
)
from cxr_attention.reference.metrics import reference_map_metrics

__all__ = ["REFERENCE_FIRST_CELL_MASS", "reference_shaped_grid", "replay_inside_body"]

#: Mean share of grid cell 0 in the runner's 20 saved grids (69-73%).
REFERENCE_FIRST_CELL_MASS = 0.713


def reference_shaped_grid(
    first_cell_mass: float = REFERENCE_FIRST_CELL_MASS, grid_shape: tuple[int, int] = (16, 16)
) -> np.ndarray:
    """A grid with ``first_cell_mass`` in cell 0 and the rest spread evenly (sums to 1)."""
    if not 0 <= first_cell_mass <= 1:
        raise ValueError(f"first_cell_mass must lie in [0, 1], got {first_cell_mass}")
    cells = grid_shape[0] * grid_shape[1]
    grid = np.full(cells, (1.0 - first_cell_mass) / (cells - 1))
    grid[0] = first_cell_mass
    return grid.reshape(grid_shape)


def replay_inside_body(
    image: np.ndarray,
    grid: np.ndarray | None = None,
    *,
    side: int = REFERENCE_MODEL_VIEW_SIDE,
) -> dict[str, float]:
    """The runner's inside-body of ``grid`` on ``image`` with each candidate mask.

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, 3), uint8
        The radiograph as the runner loaded it.
    grid : ndarray, optional
        The map (default :func:`reference_shaped_grid`).
    side : int
        The model view's side for the inverted mask.

    Returns
    -------
    dict
        ``inside_body_inverted``, ``inside_body_runner`` and each mask's share of the image
        (``mask_fraction_inverted``, ``mask_fraction_runner``).
    """
    grid = reference_shaped_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    inverted = reference_body_mask(reference_model_view(image, side=side))
    runner = runner_body_mask(image)
    on_inverted = reference_map_metrics(grid, inverted)
    on_runner = reference_map_metrics(grid, runner)
    return {
        "inside_body_inverted": on_inverted["ref_inside_body"],
        "inside_body_runner": on_runner["ref_inside_body"],
        "mask_fraction_inverted": float(inverted.mean()),
        "mask_fraction_runner": float(runner.mean()),
    }
