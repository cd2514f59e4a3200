"""The X-ray with a token-grid map over it and the body and lung contours.

The map lives on the 16 x 16 token grid of the square image the processor made; token
``(row, col)`` covers the same fraction of the original image's height and width
(:mod:`cxr_attention.geometry`), so the map is stretched onto the image along each axis with
:func:`~cxr_attention.geometry.grid_to_image` and the image is shown with its own aspect ratio.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cxr_attention.figures._style import DPI, figure_style, new_figure, save_figure
from cxr_attention.geometry import grid_to_image

__all__ = [
    "CONTOUR_STYLES",
    "DisplayRange",
    "add_contour_legend",
    "colour_bar_extend",
    "contour_handles",
    "display_range",
    "draw_overlay",
    "image_height_inches",
    "plot_overlay",
    "validate_image",
    "validate_map",
]

SEQUENTIAL_CMAP = "inferno"
DIVERGING_CMAP = "RdBu_r"
MAX_DISPLAY_PIXELS = 1024
"""Images are shrunk (pixel-area average) to at most this many pixels along their longer side
before drawing: a figure a few hundred pixels wide cannot show more, and full-size radiographs
(3000 px) would make every figure slow."""

CONTOUR_STYLES = {
    # mask name: (legend label, colour, line style)
    "body": ("body", "#00E5FF", "-"),
    "right_lung": ("patient's right lung", "#7CFC00", "--"),
    "left_lung": ("patient's left lung", "#FF4FD8", "--"),
    # blue: absent from the inferno map and unlike the other contours
    "annotation": ("annotation", "#1E6BFF", "-"),
}


class DisplayRange(NamedTuple):
    """Colour limits for showing maps, and whether percentile clipping changed them."""

    low: float
    high: float
    clipped: bool
    percentiles: tuple[float, float]

    def describe(self) -> str:
        """Words for a colour-bar label: how the colour range was chosen."""
        if self.clipped:
            low, high = (f"{p:g}" for p in self.percentiles)
            return f"clipped to the {low}-{high}th percentile for display"
        return "full range"


def display_range(
    maps: np.ndarray | Iterable[np.ndarray], clip: tuple[float, float] = (2, 98)
) -> DisplayRange:
    """Colour limits for one map or several shown on one scale.

    The limits are the ``clip`` percentiles of all token values together, so one extreme token does
    not wash out the rest. When the percentiles coincide (a map whose mass sits in fewer tokens
    than the clipped share, or a constant map) the full range is used instead, so a single hot
    token still shows.

    Parameters
    ----------
    maps : ndarray or iterable of ndarray
        Token-grid maps (any shapes); their finite values are pooled.
    clip : (low, high)
        Percentiles in [0, 100], ``low < high``.

    Returns
    -------
    DisplayRange
    """
    low_pct, high_pct = (float(p) for p in clip)
    if not 0 <= low_pct < high_pct <= 100:
        raise ValueError(f"clip must be two percentiles 0 <= low < high <= 100, got {clip}")
    arrays = [maps] if isinstance(maps, np.ndarray) else list(maps)
    values = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite values to display")
    full_low, full_high = float(values.min()), float(values.max())
    low, high = (float(v) for v in np.percentile(values, [low_pct, high_pct]))
    if high <= low:
        low, high = full_low, full_high
    if high <= low:  # a constant map: any non-empty range shows it in one colour
        high = low + max(abs(low) * 1e-6, 1e-12)
    clipped = low > full_low or high < full_high
    return DisplayRange(low, high, clipped, (low_pct, high_pct))


def validate_image(image: np.ndarray) -> np.ndarray:
    """Check that ``image`` is an 8-bit grayscale (H, W) or colour (H, W, 3) array."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3):
        return image
    raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")


def validate_map(grid_map: np.ndarray, name: str = "map") -> np.ndarray:
    """Check that a token-grid map is a finite 2-D array; return it as float64."""
    grid_map = np.asarray(grid_map, dtype=np.float64)
    if grid_map.ndim != 2:
        raise ValueError(f"{name} must be a 2-D token grid, got shape {grid_map.shape}")
    if not np.all(np.isfinite(grid_map)):
        raise ValueError(f"{name} has non-finite values")
    return grid_map


def draw_overlay(
    ax: Axes,
    image: np.ndarray,
    grid_map: np.ndarray,
    *,
    norm: Normalize,
    cmap: str | Colormap = SEQUENTIAL_CMAP,
    alpha: float = 0.6,
    body_mask: np.ndarray | None = None,
    lung_labels: np.ndarray | None = None,
    annotation_mask: np.ndarray | None = None,
    legend: bool = True,
) -> ScalarMappable:
    """Draw ``image`` with ``grid_map`` stretched over it and the mask contours on ``ax``.

    The map's opacity grows with its displayed strength (its normalised value, or the distance
    from the centre for a :class:`~matplotlib.colors.TwoSlopeNorm`), from ``0.25 * alpha`` to
    ``alpha``, so weak regions leave the radiograph visible. Axis units are the image's pixels.

    Parameters
    ----------
    ax : Axes
    image : ndarray of shape (H, W) or (H, W, 3), uint8
    grid_map : ndarray of shape (rows, cols)
        Token-grid map; row 0 is the top of the image.
    norm : Normalize
        Colour scale (e.g. from :func:`display_range`).
    cmap : str or Colormap
    alpha : float
        Largest opacity of the map, in [0, 1].
    body_mask : ndarray of shape (H, W), optional
        Non-zero inside the body.
    lung_labels : ndarray of shape (H, W), optional
        0 background, 1 patient's right lung, 2 patient's left lung.
    annotation_mask : ndarray of shape (H, W), optional
        Non-zero where radiologists marked the finding (boxes or a segmentation on this image,
        e.g. :meth:`cxr_attention.grounding.datasets.Annotation.mask_at`); drawn as an outline.
    legend : bool
        Name the contours in a legend under the axes (see :func:`contour_handles` for a figure
        legend instead).

    Returns
    -------
    ScalarMappable
        The map's colour scale, for a colour bar.
    """
    image = validate_image(image)
    grid_map = validate_map(grid_map)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = image.shape[:2]
    masks = _contour_masks(body_mask, lung_labels, (height, width), annotation_mask)

    scale = min(1.0, MAX_DISPLAY_PIXELS / max(height, width))
    shown_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shown = image if scale == 1.0 else cv2.resize(image, shown_size, interpolation=cv2.INTER_AREA)
    heat = grid_to_image(grid_map, shown.shape[:2], smooth=True)

    colourmap = colormaps[cmap] if isinstance(cmap, str) else cmap
    scaled = np.clip(np.ma.filled(norm(heat), 0.0), 0.0, 1.0)
    strength = np.abs(scaled - 0.5) * 2 if isinstance(norm, TwoSlopeNorm) else scaled
    rgba = colourmap(scaled)
    rgba[..., 3] = alpha * (0.25 + 0.75 * strength)

    extent = (0, width, height, 0)  # pixel units of the original image, row 0 at the top
    ax.imshow(shown, cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="antialiased")
    ax.imshow(rgba, extent=extent, interpolation="antialiased")
    for name, mask in masks.items():
        _, colour, style = CONTOUR_STYLES[name]
        small = (
            mask if scale == 1.0 else cv2.resize(mask, shown_size, interpolation=cv2.INTER_NEAREST)
        )
        if small.any():
            xs = (np.arange(small.shape[1]) + 0.5) * width / small.shape[1]
            ys = (np.arange(small.shape[0]) + 0.5) * height / small.shape[0]
            line_width = 1.6 if name == "annotation" else 1.0  # the finding's outline stands out
            ax.contour(
                xs, ys, small, levels=[0.5], colors=colour, linewidths=line_width, linestyles=style
            )
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    handles = contour_handles(body_mask, lung_labels, annotation_mask)
    if legend and handles:
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=len(handles),
            frameon=False,
            handlelength=1.8,
            fontsize="small",
        )
    return ScalarMappable(norm=norm, cmap=colourmap)


def plot_overlay(
    image_uint8: np.ndarray,
    map16: np.ndarray,
    *,
    title: str,
    out_path: str | os.PathLike,
    body_mask: np.ndarray | None = None,
    lung_labels: np.ndarray | None = None,
    annotation_mask: np.ndarray | None = None,
    clip: tuple[float, float] = (2, 98),
    alpha: float = 0.6,
    value_label: str = "attention share per token",
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> Path:
    """Write the radiograph with a token-grid map over it, body and lung contours, a colour bar.

    Parameters
    ----------
    image_uint8 : ndarray of shape (H, W) or (H, W, 3), uint8
        The radiograph as preprocessed (any aspect ratio).
    map16 : ndarray of shape (rows, cols)
        The map on the image-token grid (16 x 16 for MedGemma), e.g. shares summing to 1.
    title : str
        What is shown: term, method, strategy and the model's answer (may span lines).
    out_path : path-like
        PNG to write (atomically).
    body_mask : ndarray of shape (H, W), optional
        Non-zero inside the body; drawn as a contour.
    lung_labels : ndarray of shape (H, W), optional
        0 background, 1 patient's right lung, 2 patient's left lung; each lung drawn as a contour.
    annotation_mask : ndarray of shape (H, W), optional
        Non-zero inside the radiologists' annotation (boxes or a mask); drawn as an outline.
    clip : (low, high)
        Percentiles of the token values that bound the colour scale (see :func:`display_range`).
    alpha : float
        Largest opacity of the map.
    value_label : str
        What a token's value means; the colour bar adds how the range was chosen.
    figsize : (width, height), optional
        Inches; the PNG is ``figsize * dpi`` pixels. Default: 6.4 wide, the height following
        the image's aspect ratio.
    dpi : int

    Returns
    -------
    Path
        ``out_path``.
    """
    grid_map = validate_map(map16)
    limits = display_range(grid_map, clip)
    if figsize is None:
        figsize = (6.4, image_height_inches(validate_image(image_uint8), 5.0, extra=1.4))
    with figure_style():
        figure = new_figure(figsize, dpi=dpi, layout="constrained")
        ax = figure.add_subplot()
        mappable = draw_overlay(
            ax,
            image_uint8,
            grid_map,
            norm=Normalize(limits.low, limits.high),
            alpha=alpha,
            body_mask=body_mask,
            lung_labels=lung_labels,
            annotation_mask=annotation_mask,
        )
        colour_bar = figure.colorbar(
            mappable, ax=ax, shrink=0.85, extend=colour_bar_extend(limits, grid_map), pad=0.02
        )
        colour_bar.set_label(f"{value_label}\n({limits.describe()})")
        ax.set_title(title)
        return save_figure(figure, out_path, dpi=dpi)


def image_height_inches(
    image: np.ndarray, width: float, *, extra: float = 0.0, limits: tuple[float, float] = (2, 9)
) -> float:
    """Height in inches for showing ``image`` ``width`` inches wide, plus ``extra`` for titles."""
    height, image_width = image.shape[:2]
    return float(np.clip(width * height / image_width + extra, *limits))


def colour_bar_extend(limits: DisplayRange, *maps: np.ndarray) -> str:
    """Colour-bar ``extend``: arrows on the ends where some values lie outside the colour range."""
    low = any(float(m.min()) < limits.low for m in maps)
    high = any(float(m.max()) > limits.high for m in maps)
    return {(False, False): "neither", (True, False): "min", (False, True): "max"}.get(
        (low, high), "both"
    )


def contour_handles(
    body_mask: np.ndarray | None,
    lung_labels: np.ndarray | None,
    annotation_mask: np.ndarray | None = None,
) -> list[Line2D]:
    """Legend entries for the contours :func:`draw_overlay` draws from these masks."""
    present = []
    if body_mask is not None and np.any(np.asarray(body_mask) > 0):
        present.append("body")
    if lung_labels is not None:
        labels = np.asarray(lung_labels)
        present += [
            name for name, value in (("right_lung", 1), ("left_lung", 2)) if np.any(labels == value)
        ]
    if annotation_mask is not None and np.any(np.asarray(annotation_mask) > 0):
        present.append("annotation")
    return [
        Line2D([], [], color=colour, linestyle=style, linewidth=1.0, label=label)
        for label, colour, style in (CONTOUR_STYLES[name] for name in present)
    ]


def add_contour_legend(
    figure: Figure, body_mask: np.ndarray | None, lung_labels: np.ndarray | None
) -> None:
    """Name the contours of a multi-panel figure once, in a legend under all its panels.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        A figure with ``layout="constrained"`` (the legend is placed outside the axes).
    body_mask, lung_labels : ndarray of shape (H, W), optional
        The masks the panels' contours were drawn from; no legend when neither outlines anything.
    """
    handles = contour_handles(body_mask, lung_labels)
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)


def _contour_masks(
    body_mask: np.ndarray | None,
    lung_labels: np.ndarray | None,
    shape: tuple[int, int],
    annotation_mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The masks to outline, as uint8 0/1 arrays of the image's shape."""
    masks: dict[str, np.ndarray] = {}
    for name, array in (
        ("body", body_mask),
        ("lungs", lung_labels),
        ("annotation", annotation_mask),
    ):
        if array is None:
            continue
        array = np.asarray(array)
        if array.shape != shape:
            raise ValueError(f"{name} mask has shape {array.shape}, the image {shape}")
        if name in ("body", "annotation"):
            masks[name] = (array > 0).astype(np.uint8)
        else:
            masks["right_lung"] = (array == 1).astype(np.uint8)
            masks["left_lung"] = (array == 2).astype(np.uint8)
    return masks
