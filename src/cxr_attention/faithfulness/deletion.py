"""Deletion, insertion and least-relevant-first curves of one sample's maps, against random orders.

For each perturbation every order (one per map, ``n_random`` random ones shared by all the maps of
the sample) gives the removal masks of its three curves (`curves.removed_masks`); identical masks
(step 0 of deletion, the last step of insertion, ...) are scored once, all of them in batches
(`scoring.DecisionScorer`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxr_attention.faithfulness.curves import (
    CURVES,
    curve_area,
    random_orders,
    rank_cells,
    removed_masks,
    road_combined,
    step_counts,
)
from cxr_attention.faithfulness.imputation import (
    INPUT_PERTURBATIONS,
    perturb_pixels,
    replacement_image,
)

__all__ = [
    "AREA_COLUMNS",
    "PERTURBATIONS",
    "POINT_COLUMNS",
    "RANDOM_METHOD",
    "CurveSettings",
    "sample_curves",
]

#: Every perturbation: the input-level ones and ``token_mean`` (removed image tokens' embeddings
#: set to the mean image-token embedding).
PERTURBATIONS = (*INPUT_PERTURBATIONS, "token_mean")

#: The ``method`` of the random orders' rows in the points table.
RANDOM_METHOD = "random_order"

AREA_COLUMNS = [
    "map_id",
    "method",
    "perturbation",
    "curve",
    "auc",
    "random_auc_mean",
    "random_auc_sd",
    "n_steps",
    "auc_probability",
    "random_auc_probability_mean",
    "road_combined",
    "random_road_combined_mean",
    "original_margin",
]
POINT_COLUMNS = ["map_id", "method", "perturbation", "curve", "fraction", "margin", "p_original"]


@dataclass(frozen=True)
class CurveSettings:
    """The curves' settings (schema section ``faithfulness``).

    Attributes
    ----------
    perturbations : tuple of str
        Names from `PERTURBATIONS`.
    steps : tuple of float
        Fractions of the cells removed (revealed) at each step.
    n_random : int
        Random orders per sample (their areas' mean and sd are the baseline).
    blur_sigma_cells : float
        Sigma of the ``blur`` replacement, in cells.
    road_noise : float
        ROAD's noise sd, in the model's normalised pixel units.
    road_side : int
        Side the ROAD system is solved on (`imputation.noisy_linear_imputation`).
    seed : int
    """

    perturbations: tuple[str, ...]
    steps: tuple[float, ...]
    n_random: int
    blur_sigma_cells: float
    road_noise: float
    road_side: int
    seed: int

    def __post_init__(self):
        unknown = [p for p in self.perturbations if p not in PERTURBATIONS]
        if unknown:
            raise ValueError(
                f"unknown perturbation(s) {unknown}; known: {', '.join(PERTURBATIONS)}"
            )
        if self.n_random < 2:
            raise ValueError(f"n_random must be at least 2 (a mean and an sd), got {self.n_random}")


def sample_curves(
    scorer,
    maps: Sequence[tuple[str, str, np.ndarray]],
    settings: CurveSettings,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Curves and areas of one sample's maps.

    Parameters
    ----------
    scorer : DecisionScorer
        The sample's prompt and pixels.
    maps : sequence of (map_id, method, grid)
    settings : CurveSettings

    Returns
    -------
    areas : DataFrame with `AREA_COLUMNS`, one row per (map, perturbation, curve)
    points : DataFrame with `POINT_COLUMNS`, every step of every curve (random orders too)
    """
    grid_shape = np.asarray(maps[0][2]).shape
    n_cells = grid_shape[0] * grid_shape[1]
    counts = step_counts(settings.steps, n_cells)
    original = scorer.original()
    sign = 1.0 if original >= 0 else -1.0
    orders = [
        (map_id, method, rank_cells(grid, np.random.default_rng(settings.seed)))
        for map_id, method, grid in maps
    ]
    orders += [
        (f"{RANDOM_METHOD}:{i}", RANDOM_METHOD, order)
        for i, order in enumerate(random_orders(n_cells, settings.n_random, settings.seed))
    ]
    area_rows, point_rows = [], []
    for perturbation in settings.perturbations:
        masks = {
            (name, curve): removed_masks(order, counts, curve, grid_shape)
            for name, _, order in orders
            for curve in CURVES
        }
        margins = _score_masks(scorer, list(masks.values()), perturbation, settings)
        curves = {key: sign * margins_of for key, margins_of in zip(masks, margins, strict=True)}
        area_rows += _areas(orders, curves, counts, n_cells, perturbation, original)
        for (name, curve), values in curves.items():
            method = next(m for n, m, _ in orders if n == name)
            for k, value in zip(counts, values, strict=True):
                point_rows.append(
                    [name, method, perturbation, curve, k / n_cells, value, _sigmoid(value)]
                )
    return (
        pd.DataFrame(area_rows, columns=AREA_COLUMNS),
        pd.DataFrame(point_rows, columns=POINT_COLUMNS),
    )


def _sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value)) if value >= 0 else math.exp(value) / (1 + math.exp(value))


def _areas(orders, curves, counts, n_cells, perturbation, original) -> list[list]:
    def area(name, curve, probability=False):
        values = curves[(name, curve)]
        if probability:
            values = np.array([_sigmoid(v) for v in values])
        return curve_area(counts, values, n_cells)

    random_names = [name for name, method, _ in orders if method == RANDOM_METHOD]
    random_road = np.mean(
        [road_combined(area(n, "lerf"), area(n, "deletion")) for n in random_names]
    )
    rows = []
    for name, method, _ in orders:
        if method == RANDOM_METHOD:
            continue
        road = road_combined(area(name, "lerf"), area(name, "deletion"))
        for curve in CURVES:
            random_areas = np.array([area(n, curve) for n in random_names])
            rows.append(
                [
                    name,
                    method,
                    perturbation,
                    curve,
                    area(name, curve),
                    float(random_areas.mean()),
                    float(random_areas.std(ddof=1)),
                    len(counts),
                    area(name, curve, probability=True),
                    float(np.mean([area(n, curve, probability=True) for n in random_names])),
                    road,
                    float(random_road),
                    original,
                ]
            )
    return rows


def _score_masks(scorer, mask_sets: list[np.ndarray], perturbation: str, settings) -> list:
    """Margins of every mask of every set, each distinct mask scored once."""
    unique: dict[bytes, int] = {}
    flat = []
    for masks in mask_sets:
        for mask in masks:
            key = np.packbits(mask).tobytes()
            if key not in unique:
                unique[key] = len(flat)
                flat.append(mask)
    stacked = np.stack(flat)
    if perturbation == "token_mean":
        margins = scorer.token_margins(stacked.reshape(len(stacked), -1))
    else:
        margins = _input_margins(scorer, stacked, perturbation, settings)
    return [
        np.array([margins[unique[np.packbits(mask).tobytes()]] for mask in masks])
        for masks in mask_sets
    ]


def _input_margins(scorer, masks: np.ndarray, perturbation: str, settings) -> np.ndarray:
    """Margins of the pixel perturbations, built one batch at a time (arrays are large)."""
    if scorer.pixels is None:
        raise ValueError("input-level perturbations need the prompt's pixel values")
    pixels = scorer.pixels[0].detach().cpu().float().numpy()
    replacement = None
    if perturbation != "road":
        replacement = replacement_image(
            pixels, perturbation, blur_sigma_cells=settings.blur_sigma_cells
        )
    rng = np.random.default_rng(settings.seed)
    out = []
    for start in range(0, len(masks), scorer.batch_size):
        batch = np.stack(
            [
                perturb_pixels(
                    pixels,
                    mask,
                    perturbation,
                    replacement=replacement,
                    road_noise=settings.road_noise,
                    road_side=settings.road_side,
                    rng=rng,
                )
                for mask in masks[start : start + scorer.batch_size]
            ]
        )
        out.append(scorer.pixel_margins(batch))
    return np.concatenate(out)
