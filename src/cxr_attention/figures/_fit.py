"""Keep a figure's titles, labels and legends inside the figure.

Constrained layout moves axes to make room for text but never shortens the text itself: a title
wider than the figure (a 44-character image id and a question) is cut off on both sides.
:func:`fit_texts` measures each title, label and legend with the figure's renderer and wraps
the text (or stacks the legend's columns) until it fits.
"""

from __future__ import annotations

import textwrap

from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text

__all__ = ["figure_texts", "fit_texts"]

_MARGIN_PIXELS = 4.0
_MAX_PASSES = 4


def figure_texts(figure: Figure) -> list[Text | Legend]:
    """The figure's titles, axis labels and legends (the texts that layout must keep inside)."""
    items: list[Text | Legend] = []
    for text in (figure._suptitle, figure._supxlabel, figure._supylabel):
        if text is not None:
            items.append(text)
    items += list(figure.legends)
    for ax in figure.axes:
        items += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        if ax.get_legend() is not None:
            items.append(ax.get_legend())
    return [item for item in items if item.get_visible() and _has_content(item)]


def _has_content(item: Text | Legend) -> bool:
    return bool(item.get_texts()) if isinstance(item, Legend) else bool(item.get_text())


def fit_texts(figure: Figure) -> None:
    """Wrap every title and label wider (or, rotated, taller) than the figure; stack legends.

    Draws the figure (layout included) up to a few times; a figure whose texts fit is left as it
    is, so its PNG does not change.
    """
    renderer = figure.canvas.get_renderer()
    for _ in range(_MAX_PASSES):
        figure.draw_without_rendering()
        changed = False
        for item in figure_texts(figure):
            extent = item.get_window_extent(renderer)
            vertical = not isinstance(item, Legend) and abs(item.get_rotation() % 180 - 90) < 1
            low, high = (extent.y0, extent.y1) if vertical else (extent.x0, extent.x1)
            end = figure.bbox.height if vertical else figure.bbox.width
            # A centred text grows both ways: the room is twice its centre's distance to the
            # nearer edge.
            centre = (low + high) / 2
            room = 2 * min(centre - _MARGIN_PIXELS, end - _MARGIN_PIXELS - centre)
            if high - low <= room or room <= 0:
                continue
            if isinstance(item, Legend):
                if item._ncols > 1:
                    item.set_ncols(max(1, item._ncols // 2))
                    changed = True
            else:
                item.set_text(_wrapped(item.get_text(), room / (high - low)))
                changed = True
        if not changed:
            return


def _wrapped(text: str, shrink: float) -> str:
    """``text`` with each line wrapped to ``shrink`` times its longest line's characters."""
    lines = text.split("\n")
    width = max(8, int(max(len(line) for line in lines) * shrink * 0.95))
    wrapped = [
        textwrap.fill(line, width=width, break_long_words=True, break_on_hyphens=True) or line
        for line in lines
    ]
    return "\n".join(wrapped)
