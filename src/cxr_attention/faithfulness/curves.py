"""Deletion, insertion and least-relevant-first curves over the image-token grid (torch-free).

A map ranks the grid's cells, most relevant first. At each step ``k`` (cells, from the configured
fractions):

- ``deletion`` (ROAD's MoRF): the ``k`` highest-ranked cells removed;
- ``insertion``: everything removed except the ``k`` highest-ranked cells;
- ``lerf`` (least relevant first): the ``k`` lowest-ranked cells removed.

The score is the decision margin signed by the original answer (positive while the model still
gives it); P(original answer) is its sigmoid. A curve's area is the trapezoid over the fraction
of cells (0 to 1). A faithful map gives a *low* deletion area (the answer goes fast), a *high*
insertion area, and a *high* ROAD combined score ``(AUC_lerf - AUC_deletion) / 2`` (as
pytorch-grad-cam's ``ROADCombined``; ROAD averages over thresholds, the same as the area here).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "CURVES",
    "curve_area",
    "random_orders",
    "rank_cells",
    "removed_masks",
    "road_combined",
    "step_counts",
]

CURVES = ("deletion", "insertion", "lerf")


def step_counts(fractions: Sequence[float], n_cells: int) -> np.ndarray:
    """The distinct cell counts of the step fractions (rounded, sorted, 0 and ``n_cells`` kept)."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.size < 2 or np.any((fractions < 0) | (fractions > 1)):
        raise ValueError(f"step fractions must be at least two values in [0, 1], got {fractions}")
    return np.unique(np.rint(fractions * n_cells).astype(int))


def rank_cells(grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat cell indices, highest value first; ties broken at random (a flat map is random)."""
    values = np.asarray(grid, dtype=np.float64).ravel()
    tie_break = rng.permutation(values.size)
    # lexsort: last key primary. Descending value, then the random tie-break.
    return np.lexsort((tie_break, -values))


def random_orders(n_cells: int, n_orders: int, seed: int) -> list[np.ndarray]:
    """``n_orders`` random cell orders, order ``i`` from ``default_rng(seed + i)``."""
    return [np.random.default_rng(seed + i).permutation(n_cells) for i in range(n_orders)]


def removed_masks(
    order: np.ndarray, counts: np.ndarray, curve: str, grid_shape: tuple[int, int]
) -> np.ndarray:
    """``(steps, rows, cols)`` boolean masks of the removed cells at each step of ``curve``."""
    n_cells = grid_shape[0] * grid_shape[1]
    order = np.asarray(order)
    if sorted(order.tolist()) != list(range(n_cells)):
        raise ValueError("order must be a permutation of the grid's cells")
    masks = np.zeros((len(counts), n_cells), dtype=bool)
    for step, k in enumerate(counts):
        if curve == "deletion":
            masks[step, order[:k]] = True
        elif curve == "insertion":
            masks[step, order[k:]] = True
        elif curve == "lerf":
            masks[step, order[::-1][:k]] = True
        else:
            raise ValueError(f"unknown curve {curve!r}; known: {', '.join(CURVES)}")
    return masks.reshape(len(counts), *grid_shape)


def curve_area(counts: np.ndarray, scores: np.ndarray, n_cells: int) -> float:
    """Trapezoid area of ``scores`` over the removed (revealed) fraction of cells, 0 to 1."""
    x = np.asarray(counts, dtype=np.float64) / n_cells
    y = np.asarray(scores, dtype=np.float64)
    if x.size < 2 or not np.all(np.isfinite(y)):
        return math.nan
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def road_combined(auc_lerf: float, auc_deletion: float) -> float:
    """ROAD's combined score ``(LeRF - MoRF) / 2``: high when the map ranks cells faithfully."""
    return (auc_lerf - auc_deletion) / 2
