"""A map's deletion (or insertion) curve against the random orders' curves.

The points are the faithfulness stage's (`cxr_attention.faithfulness.deletion.POINT_COLUMNS`:
one row per step of every curve, the random orders' rows with method ``random_order``), the
areas its areas table's (``auc``, ``random_auc_mean``, ``random_auc_sd``). The map's curve is
drawn over the random orders' mean and its +-1 sd band; the margin falls below 0 where the model
no longer gives its original answer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from cxr_attention.faithfulness.deletion import RANDOM_METHOD
from cxr_attention.figures._style import METHOD_COLOURS, figure_style, new_figure, save_figure

__all__ = ["draw_faithfulness_curve", "plot_faithfulness_curve"]

_RANDOM_COLOUR = "#777777"
_CURVE_WORDS = {
    "deletion": "share of cells removed, most relevant first",
    "insertion": "share of cells revealed, most relevant first",
    "lerf": "share of cells removed, least relevant first",
}


def _curve_points(points: pd.DataFrame, perturbation: str, curve: str) -> pd.DataFrame:
    return points[(points["perturbation"] == perturbation) & (points["curve"] == curve)]


def draw_faithfulness_curve(
    ax: Axes,
    points: pd.DataFrame,
    area: Mapping,
) -> None:
    """Draw one map's curve and the random orders' mean +-1 sd on ``ax``.

    Parameters
    ----------
    ax : Axes
    points : DataFrame with ``map_id, method, perturbation, curve, fraction, margin``
        The sample's points (every map's and the random orders').
    area : mapping with ``map_id, method, perturbation, curve, auc, random_auc_mean,
        random_auc_sd``
        The map's row of the areas table: which curve to draw and its areas for the legend.

    Raises
    ------
    ValueError
        When ``points`` has no step of that map's curve, or no random order's.
    """
    chosen = _curve_points(points, area["perturbation"], area["curve"])
    mine = chosen[chosen["map_id"] == area["map_id"]].sort_values("fraction")
    random = chosen[chosen["method"] == RANDOM_METHOD]
    what = f"{area['map_id']} ({area['perturbation']}, {area['curve']})"
    if mine.empty:
        raise ValueError(f"no points of {what}")
    if random.empty:
        raise ValueError(f"no random order's points for {what}")
    by_step = random.pivot_table(index="fraction", columns="map_id", values="margin")
    mean, sd = by_step.mean(axis=1), by_step.std(axis=1, ddof=1)
    fractions = by_step.index.to_numpy(np.float64)
    ax.fill_between(fractions, mean - sd, mean + sd, color=_RANDOM_COLOUR, alpha=0.25, linewidth=0)
    ax.plot(
        fractions,
        mean.to_numpy(),
        color=_RANDOM_COLOUR,
        linestyle="--",
        label=(
            f"random orders, mean +-1 sd (AUC {area['random_auc_mean']:.3f} "
            f"+- {area['random_auc_sd']:.3f})"
        ),
    )
    ax.plot(
        mine["fraction"].to_numpy(np.float64),
        mine["margin"].to_numpy(np.float64),
        color=METHOD_COLOURS.get(area["method"], "#0072B2"),
        marker="o",
        markersize=3,
        label=f"{area['method']} map (AUC {area['auc']:.3f})",
    )
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xlim(0, 1)
    ax.set_xlabel(_CURVE_WORDS.get(area["curve"], "share of cells"))
    ax.set_ylabel("margin of the original answer\n(logit yes - logit no, signed)")
    ax.legend(loc="best", frameon=False)


def plot_faithfulness_curve(
    points: pd.DataFrame,
    area: Mapping,
    *,
    title: str,
    out_path: str | os.PathLike,
    figsize: tuple[float, float] = (6.4, 4.0),
) -> Path:
    """Write one map's curve against the random orders (see :func:`draw_faithfulness_curve`)."""
    with figure_style():
        figure = new_figure(figsize, layout="constrained")
        ax = figure.add_subplot()
        draw_faithfulness_curve(ax, points, area)
        ax.set_title(title)
        return save_figure(figure, out_path)
