"""One image and finding: map overlays with strategies as rows and map methods as columns."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize

from cxr_attention.figures._style import (
    DPI,
    METHOD_LABELS,
    METHODS,
    STRATEGIES,
    figure_style,
    new_figure,
    save_figure,
)
from cxr_attention.figures.overlay import (
    add_contour_legend,
    colour_bar_extend,
    display_range,
    draw_overlay,
    image_height_inches,
    validate_image,
    validate_map,
)

__all__ = ["plot_method_panels"]

PANEL_INCHES = 2.3


def plot_method_panels(
    image_uint8: np.ndarray,
    maps: Mapping[tuple[str, str], np.ndarray],
    *,
    title: str,
    out_path: str | os.PathLike,
    strategies: Sequence[str] = STRATEGIES,
    methods: Sequence[str] = METHODS,
    answers: Mapping[str, str] | None = None,
    body_mask: np.ndarray | None = None,
    lung_labels: np.ndarray | None = None,
    clip: tuple[float, float] = (2, 98),
    alpha: float = 0.6,
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> Path:
    """Write a grid of overlays of one image: one row per strategy, one column per method.

    All panels share one colour scale, chosen from every map together, so the concentration of
    different methods can be compared by eye (each map is a share of mass over the same tokens).
    A (strategy, method) pair without a map is drawn as an empty panel that says so.

    Parameters
    ----------
    image_uint8 : ndarray of shape (H, W) or (H, W, 3), uint8
    maps : mapping of (strategy, method) to ndarray of shape (rows, cols)
        Token-grid maps of one image and finding.
    title : str
        The image and finding (and term) shown.
    out_path : path-like
        PNG to write.
    strategies, methods : sequence of str
        Row and column order; default every strategy and method of the study. Maps whose key is
        in neither are an error (they would silently go missing).
    answers : mapping of strategy to str, optional
        The model's answer per strategy, shown beside the row name.
    body_mask, lung_labels : ndarray of shape (H, W), optional
        As in :func:`~cxr_attention.figures.overlay.plot_overlay`.
    clip : (low, high)
        Percentiles bounding the shared colour scale.
    alpha : float
        Largest opacity of the maps.
    figsize : (width, height), optional
        Inches; default ``PANEL_INCHES`` wide per panel (high as the image's aspect ratio
        makes it) plus room for labels and the colour bar.
    dpi : int

    Returns
    -------
    Path
        ``out_path``.
    """
    image = validate_image(image_uint8)
    strategies, methods = list(strategies), list(methods)
    if not strategies or not methods:
        raise ValueError("need at least one strategy and one method")
    unknown = sorted(set(maps) - {(s, m) for s in strategies for m in methods})
    if unknown:
        raise ValueError(f"maps for (strategy, method) pairs not shown: {unknown}")
    grid_maps = {key: validate_map(value, name=f"map {key}") for key, value in maps.items()}
    if not grid_maps:
        raise ValueError("no maps to show")
    limits = display_range(list(grid_maps.values()), clip)
    norm = Normalize(limits.low, limits.high)
    answers = answers or {}
    if figsize is None:
        row_height = image_height_inches(image, PANEL_INCHES, limits=(1.0, 4.0))
        figsize = (PANEL_INCHES * len(methods) + 1.6, row_height * len(strategies) + 1.2)

    with figure_style():
        figure = new_figure(figsize, dpi=dpi, layout="constrained")
        axes = figure.subplots(len(strategies), len(methods), squeeze=False)
        mappable = None
        for row, strategy in enumerate(strategies):
            for col, method in enumerate(methods):
                ax = axes[row, col]
                grid_map = grid_maps.get((strategy, method))
                if grid_map is None:
                    _empty_panel(ax, image.shape)
                else:
                    mappable = draw_overlay(
                        ax,
                        image,
                        grid_map,
                        norm=norm,
                        alpha=alpha,
                        # Contours once per row keep small panels readable.
                        body_mask=body_mask if col == 0 else None,
                        lung_labels=lung_labels if col == 0 else None,
                        legend=False,
                    )
                if row == 0:
                    ax.set_title(METHOD_LABELS.get(method, method))
                if col == 0:
                    answer = answers.get(strategy)
                    label = strategy.replace("_", " ")
                    ax.set_ylabel(label if answer is None else f"{label}\nanswer: {answer}")
        colour_bar = figure.colorbar(
            mappable,
            ax=axes,
            shrink=0.8,
            pad=0.01,
            extend=colour_bar_extend(limits, *grid_maps.values()),
        )
        colour_bar.set_label(f"share of map mass per token, one scale\n({limits.describe()})")
        add_contour_legend(figure, body_mask, lung_labels)
        figure.suptitle(title)
        return save_figure(figure, out_path, dpi=dpi)


def _empty_panel(ax, image_shape: tuple[int, ...]) -> None:
    """A blank panel of the image's aspect ratio saying that no map exists."""
    height, width = image_shape[:2]
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("#f2f2f2")
    ax.text(width / 2, height / 2, "no map", ha="center", va="center", color="#666666")
