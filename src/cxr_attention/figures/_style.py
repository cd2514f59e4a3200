"""Shared figure settings: one style, fixed DPI, byte-identical PNGs, method and strategy names.

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot
state, no screen) inside a style context that starts from matplotlib's defaults, so a user's
``matplotlibrc`` cannot change the output. PNGs are written without the ``Software`` text chunk,
the only metadata matplotlib's Agg PNG writer adds, so two runs write identical bytes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
    (:func:`~cxr_attention.figures._fit.fit_texts`).
    """
    fit_texts(figure)
    out_path = Path(out_path)
    with atomic_path(out_path, ".png") as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    return out_path
