"""Answer accuracy per group, with bootstrap intervals (a summary figure)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.figures._groups import group_order, say_empty
from cxr_attention.figures._style import DPI, figure_style, new_figure, save_figure

__all__ = ["plot_accuracy"]

_ACCURACY_STATS = {"accuracy", "ci_low", "ci_high", "n", "n_correct", "n_subjects"}


def plot_accuracy(
    table: pd.DataFrame,
    *,
    out_path: str | os.PathLike,
    by: str | None = None,
    hue: str | None = None,
    title: str | None = None,
    ci_label: str = "95% CI, bootstrap over patients",
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> Path:
    """Accuracy per group as points with confidence-interval error bars and the count of answers.

    Parameters
    ----------
    table : DataFrame
        ``accuracy_by_strategy.csv`` (group column ``strategy``) or ``accuracy_by_finding.csv``
        (``finding, strategy``) from :func:`cxr_attention.metrics.answer_stats.accuracy_table`: the
        group columns, ``accuracy, ci_low, ci_high, n``. Groups named ``"all"`` pool the others
        and are drawn first, in black.
    out_path : path-like
        PNG to write.
    by : str, optional
        Column of the rows of the plot; default the first column that is not a statistic.
    hue : str, optional
        Second group column, shown as coloured points side by side within a row; default the
        second non-statistic column if there is one.
    title : str, optional
    ci_label : str
        How the intervals were computed, for the axis label.
    figsize : (width, height), optional
        Inches; default grows with the number of rows.
    dpi : int

    Returns
    -------
    Path
    """
    group_columns = _group_columns(table)
    by = by or (group_columns[0] if group_columns else None)
    if hue is None:
        hue = next((c for c in group_columns if c != by), None)
    missing = [c for c in (by, "accuracy", "ci_low", "ci_high", "n") if c not in table.columns]
    if by is None or missing:
        raise ValueError(f"accuracy table lacks columns {missing or ['a group column']}")
    rows = table.copy()
    rows[by] = rows[by].astype(str)
    rows["_hue"] = rows[hue].astype(str) if hue else "all"
    groups = group_order(rows[by], by)
    hues = group_order(rows["_hue"], hue or "")
    palette = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"]
    colours = dict(zip([h for h in hues if h != "all"], palette * len(hues), strict=False))
    colours["all"] = "black"
    step = 0.8 / max(len(hues), 1)
    if figsize is None:
        figsize = (6.8, 1.4 + (0.3 + 0.12 * len(hues)) * max(len(groups), 2))

    with figure_style():
        figure = new_figure(figsize, dpi=dpi, layout="constrained")
        ax = figure.add_subplot()
        for hue_index, hue_value in enumerate(hues):
            offset = (hue_index - (len(hues) - 1) / 2) * step if len(hues) > 1 else 0.0
            subset = rows[rows["_hue"] == hue_value].set_index(by)
            label = None if hue is None else hue_value.replace("_", " ")
            for position, group in enumerate(groups):
                if group not in subset.index:
                    continue
                row = subset.loc[group]
                row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
                accuracy, low, high = (float(row[c]) for c in ("accuracy", "ci_low", "ci_high"))
                error = None
                if np.isfinite(low) and np.isfinite(high):
                    error = [[max(accuracy - low, 0.0)], [max(high - accuracy, 0.0)]]
                pooled = group == "all" or (hue is not None and hue_value == "all")
                colour = colours[hue_value] if hue else ("black" if pooled else palette[0])
                ax.errorbar(
                    accuracy,
                    position + offset,
                    xerr=error,
                    fmt="D" if pooled else "o",
                    color=colour,
                    capsize=2.5,
                    markersize=4.5,
                    label=label,
                )
                label = None  # one legend entry per hue
                ax.text(
                    1.02,
                    position + offset,
                    f"n = {int(row['n'])}",
                    va="center",
                    fontsize="x-small",
                    color=colour,
                )
        ax.set_yticks(range(len(groups)), [g.replace("_", " ") for g in groups])
        ax.set_ylim(max(len(groups), 1) - 0.5, -0.5)
        ax.set_xlim(0, 1.14)
        ax.set_xticks(np.linspace(0, 1, 6))
        ax.axvline(0.5, color="#BBBBBB", linewidth=0.8, linestyle=":")
        ax.set_xlabel(f"accuracy ({ci_label})")
        ax.set_ylabel(by.replace("_", " "))
        ax.grid(axis="x", color="#EEEEEE")
        if hue is not None and hues:
            figure.legend(title=hue.replace("_", " "), loc="outside right upper", frameon=False)
        if not groups:
            say_empty(ax)
        ax.set_title(title or f"Answer accuracy per {by.replace('_', ' ')}")
        return save_figure(figure, out_path, dpi=dpi)


def _group_columns(table: pd.DataFrame) -> list[str]:
    """The columns of an accuracy table that name groups rather than hold statistics."""
    return [c for c in table.columns if c not in _ACCURACY_STATS]
