"""Prompt sensitivity: two strategies' maps of one image, their difference and their JS."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize, TwoSlopeNorm

from cxr_attention.figures._style import DPI, figure_style, new_figure, save_figure
from cxr_attention.figures.overlay import (
    DIVERGING_CMAP,
    add_contour_legend,
    colour_bar_extend,
    display_range,
    draw_overlay,
    image_height_inches,
    validate_image,
    validate_map,
)
from cxr_attention.metrics.pairwise import js_band, js_divergence

__all__ = ["plot_prompt_sensitivity"]


def plot_prompt_sensitivity(
    image_uint8: np.ndarray,
    map_a: np.ndarray,
    map_b: np.ndarray,
    *,
    label_a: str,
    label_b: str,
    title: str,
    out_path: str | os.PathLike,
    js: float | None = None,
    body_mask: np.ndarray | None = None,
    lung_labels: np.ndarray | None = None,
    clip: tuple[float, float] = (2, 98),
    alpha: float = 0.6,
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> Path:
    """Write map A, map B (one colour scale) and the difference B - A over the image.

    The difference uses a diverging colour map centred at 0 (red: more mass under B, blue: more
    under A) with symmetric limits (the ``clip[1]`` percentile of the absolute change), so equal
    changes look equally strong either way. The title
    gives the Jensen-Shannon divergence (base 2, in [0, 1]) and its band: below 0.2 minor,
    0.2-0.5 moderate, above 0.5 large.

    Parameters
    ----------
    image_uint8 : ndarray of shape (H, W) or (H, W, 3), uint8
    map_a, map_b : ndarray of shape (rows, cols)
        The two strategies' maps for the same image and term (shares summing to 1).
    label_a, label_b : str
        What each map is (strategy, question, answer).
    title : str
        Image, finding and term.
    out_path : path-like
        PNG to write.
    js : float, optional
        The JS divergence as the study computed it (``js_divergence.csv``); computed from the
        maps with :func:`cxr_attention.metrics.pairwise.js_divergence` when omitted.
    body_mask, lung_labels : ndarray of shape (H, W), optional
        As in :func:`~cxr_attention.figures.overlay.plot_overlay`.
    clip : (low, high)
        Percentiles bounding the shared colour scale of the two maps.
    alpha : float
        Largest opacity of the maps.
    figsize : (width, height), optional
        Inches; default 12 wide, the height following the image's aspect ratio.
    dpi : int

    Returns
    -------
    Path
        ``out_path``.
    """
    image = validate_image(image_uint8)
    a = validate_map(map_a, "map_a")
    b = validate_map(map_b, "map_b")
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} and {b.shape}")
    if figsize is None:
        figsize = (12.0, image_height_inches(image, 3.4, extra=1.6, limits=(3.0, 6.0)))
    if js is None:
        js = js_divergence(a, b, base=2)
    difference = b - a
    limits = display_range([a, b], clip)
    shared = Normalize(limits.low, limits.high)
    change = display_range(np.abs(difference), (0, clip[1]))
    centred = TwoSlopeNorm(vcenter=0.0, vmin=-change.high, vmax=change.high)

    with figure_style():
        figure = new_figure(figsize, dpi=dpi, layout="constrained")
        ax_a, ax_b, ax_diff = figure.subplots(1, 3)
        common = {"alpha": alpha, "body_mask": body_mask, "lung_labels": lung_labels}
        draw_overlay(ax_a, image, a, norm=shared, legend=False, **common)
        mappable = draw_overlay(ax_b, image, b, norm=shared, legend=False, **common)
        diff_mappable = draw_overlay(
            ax_diff, image, difference, norm=centred, cmap=DIVERGING_CMAP, legend=False, **common
        )
        ax_a.set_title(f"A: {label_a}")
        ax_b.set_title(f"B: {label_b}")
        ax_diff.set_title("difference (B - A)")
        bar = figure.colorbar(
            mappable, ax=[ax_a, ax_b], shrink=0.8, extend=colour_bar_extend(limits, a, b)
        )
        bar.set_label(f"share of map mass per token\n({limits.describe()})")
        diff_bar = figure.colorbar(
            diff_mappable,
            ax=ax_diff,
            shrink=0.8,
            extend="both" if change.clipped else "neither",
        )
        clipped = (
            f"clipped at the {clip[1]:g}th percentile of |B - A|"
            if change.clipped
            else "full range"
        )
        diff_bar.set_label(
            f"change in share per token (B - A)\nred: more under B, blue: more under A\n({clipped})"
        )
        add_contour_legend(figure, body_mask, lung_labels)
        figure.suptitle(
            f"{title}\nJensen-Shannon divergence A vs B (base 2) = {js:.3f} ({js_band(js)} change)"
        )
        return save_figure(figure, out_path, dpi=dpi)
