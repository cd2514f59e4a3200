"""Shared figure settings: one style, fixed DPI, small byte-identical PNGs, method and strategy
names.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot
state, no screen) inside a style context that starts from matplotlib's defaults, so a user's
``matplotlibrc`` cannot change the output. PNGs are written as 8-bit palette images with no
metadata chunk: the Snakemake report embeds every figure, and a palette PNG of a figure is a
third of matplotlib's RGBA one (issue 21: the report must stay under 15 MB), while two runs still
write identical bytes.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from cxr_attention.figures._fit import fit_texts
from cxr_attention.io import atomic_path
from cxr_attention.maps import registry

__all__ = [
    "DPI",
    "METHODS",
    "METHOD_COLOURS",
    "METHOD_LABELS",
    "STRATEGIES",
    "figure_style",
    "new_figure",
    "save_figure",
]

DPI = 120
"""Dots per inch of every PNG; a figure of (w, h) inches is ``round(w * DPI) x round(h * DPI)``."""

PALETTE_COLOURS = 256
"""Colours of a saved figure's adaptive palette: the most an 8-bit PNG holds. A figure's flat
colours (lines, bars, text) come through, and a map's colour scale keeps 256 levels."""

STRATEGIES = ("baseline", "plain", "hard_positive")
"""Question strategies in display order (``questions.csv`` column ``strategy``)."""

# Map methods in display order (maps table column ``method``), their figure labels and colours
# (colour-blind safe Okabe-Ito, one fixed colour per method): from the map-method registry.
METHODS = registry.METHODS
METHOD_LABELS = registry.METHOD_LABELS
METHOD_COLOURS = registry.METHOD_COLOURS

_RC = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: same glyphs on every machine
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "figure.titlesize": 11,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
    "path.simplify": False,
}


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Matplotlib's default style plus the house settings, whatever the user's rc file says."""
    with matplotlib.style.context(["default", _RC]):
        yield


def new_figure(
    figsize: tuple[float, float], *, dpi: int = DPI, layout: str | None = None
) -> Figure:
    """A figure attached to its own Agg canvas (no pyplot, no global figure registry)."""
    figure = Figure(figsize=figsize, dpi=dpi, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, out_path: str | os.PathLike, *, dpi: int = DPI) -> Path:
    """Write ``figure`` as a PNG atomically, with no metadata that changes between runs.

    The canvas keeps the figure's size (no ``bbox_inches="tight"``), so the PNG is exactly
    ``figsize * dpi`` pixels; titles, labels and legends too wide for it are wrapped first
    (:func:`~cxr_attention.figures._fit.fit_texts`). The pixels are written with an adaptive
    palette of :data:`PALETTE_COLOURS` colours (:func:`palette_png`).
    """
    fit_texts(figure)
    out_path = Path(out_path)
    rendered = io.BytesIO()
    figure.savefig(rendered, format="png", dpi=dpi, metadata={"Software": None})
    rendered.seek(0)
    with Image.open(rendered) as image:
        compact = palette_png(image)
    with atomic_path(out_path, ".png") as tmp:
        compact.save(tmp, format="PNG")
    return out_path


def palette_png(image: Image.Image) -> Image.Image:
    """``image`` flattened onto white and reduced to an adaptive palette (8-bit ``P`` mode).

    The palette comes from a fast octree of the figure's own colours; the pixels are then mapped
    onto it with Floyd-Steinberg dithering, so that a colour scale and a radiograph's smooth grey
    show no bands (undithered, a 256-colour figure shows visible contour steps). Both steps are
    deterministic: the same pixels give the same bytes. Figures have an opaque white face;
    flattening only makes a transparent pixel show as the page's white, not black.
    """
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    palette = rgb.quantize(colors=PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE)
    return rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
