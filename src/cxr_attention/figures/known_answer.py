"""Known-answer figures: where each map method looks on planted films, hit or miss.

One figure per map method: a panel per planted film, the answer's map over the film with the
planted lesion's box, titled *hit* (the map's maximum inside the box: pointing game >= 0.5) or
*miss*, with the lift (mass inside the box over the box's area share). And one overview: each
method's pointing-game rate with its bootstrap interval, so a method that cannot find the evidence
stands out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.figures._style import figure_style, new_figure, save_figure
from cxr_attention.geometry import grid_to_image

__all__ = [
    "HIT_THRESHOLD",
    "MAX_HIT_PANELS",
    "LesionPanel",
    "plot_method_hits",
    "plot_pointing_game_by_method",
]

#: A map hits when at least this share of its maximum lies inside the box.
HIT_THRESHOLD = 0.5
#: Panels drawn per hit figure at most (the first films; the title counts them all): the report
#: embeds the figure, so its size must not grow with the planted films (issue 21).
MAX_HIT_PANELS = 12
_HIT, _MISS = "#1a7f37", "#cf222e"


@dataclass(frozen=True)
class LesionPanel:
    """One planted film's answer map: film (2-D uint8), map (grid), box in the film's pixels."""

    image: np.ndarray
    grid_map: np.ndarray
    box: tuple[float, float, float, float]
    pointing_game: float
    lift: float
    label: str


def plot_method_hits(
    panels: Sequence[LesionPanel], method: str, out_path: str | os.PathLike
) -> Path:
    """The method's maps over the planted films, each panel titled hit or miss; the first
    :data:`MAX_HIT_PANELS` are drawn, the title counts the hits of all of them."""
    drawn = panels[:MAX_HIT_PANELS]
    columns = max(min(len(drawn), 4), 1)
    rows = max(int(np.ceil(len(drawn) / columns)), 1)
    with figure_style():
        figure = new_figure((3.0 * columns, 3.3 * rows + 0.5), layout="constrained")
        axes = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
        hits = sum(panel.pointing_game >= HIT_THRESHOLD for panel in panels)
        title = f"{method}: {hits} of {len(panels)} maps point at the planted lesion"
        if len(drawn) < len(panels):
            title += f" (the first {len(drawn)} shown)"
        figure.suptitle(title)
        for ax, panel in zip(axes, drawn, strict=False):
            height, width = panel.image.shape
            ax.imshow(panel.image, cmap="gray", vmin=0, vmax=255)
            heat = grid_to_image(panel.grid_map, (height, width))
            ax.imshow(heat, cmap="inferno", alpha=0.45, vmin=0, vmax=max(float(heat.max()), 1e-12))
            hit = panel.pointing_game >= HIT_THRESHOLD
            x, y, w, h = panel.box
            ax.add_patch(_rectangle((x, y), w, h, edgecolor=_HIT if hit else _MISS, linewidth=2))
            ax.set_title(
                f"{'hit' if hit else 'miss'}, lift {panel.lift:.1f}\n{panel.label}",
                color=_HIT if hit else _MISS,
                fontsize=8,
            )
            ax.set_axis_off()
        for ax in axes[len(drawn) :]:
            ax.set_axis_off()
        if not panels:
            axes[0].text(0.5, 0.5, "no planted film was mapped", ha="center", va="center")
        return save_figure(figure, out_path)


def plot_pointing_game_by_method(summary: pd.DataFrame, out_path: str | os.PathLike) -> Path:
    """Pointing-game rate per method (held-out planted films) with 95% intervals."""
    rows = summary[
        (summary["table"] == "maps")
        & (summary["films"] == "held out")
        & (summary["statistic"] == "pointing_game")
    ]
    with figure_style():
        figure = new_figure((6.0, 0.45 * max(len(rows), 2) + 1.2), layout="constrained")
        ax = figure.subplots()
        positions = np.arange(len(rows))
        values = rows["value"].to_numpy(dtype=float)
        colours = [_HIT if v >= HIT_THRESHOLD else _MISS for v in np.nan_to_num(values)]
        ax.barh(positions, np.nan_to_num(values), color=colours)
        low = values - rows["ci_low"].to_numpy(dtype=float)
        high = rows["ci_high"].to_numpy(dtype=float) - values
        ax.errorbar(values, positions, xerr=[low, high], fmt="none", ecolor="black", capsize=3)
        ax.set_yticks(positions, rows["row"].tolist())
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("pointing game (share of the map's maximum inside the box)")
        ax.set_title("Known-answer maps on held-out planted films")
        return save_figure(figure, out_path)


def _rectangle(corner, width, height, **style):
    from matplotlib.patches import Rectangle

    return Rectangle(corner, width, height, fill=False, **style)
