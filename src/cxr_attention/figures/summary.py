"""Study-level plots from the run's tidy tables: metric distributions, accuracy, JS, method usage.

Each function reads one table with the column names of docs/architecture.md and
:mod:`cxr_attention.metrics.summary` and writes one PNG. An empty table gives a figure that says
so instead of an error, so a small run (the demo) still gets every figure of the report.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from cxr_attention.figures._groups import group_order, say_empty, with_question_parts
from cxr_attention.figures._style import (
    DPI,
    METHOD_COLOURS,
    METHOD_LABELS,
    METHODS,
    figure_style,
    new_figure,
    save_figure,
)
from cxr_attention.figures.accuracy import plot_accuracy
from cxr_attention.io import read_table
from cxr_attention.metrics.catalogue import (
    BORDER_FRACTION,
    CATALOGUE,
    ENTROPY,
    INSIDE_BODY,
    LEFT_RIGHT,
)
from cxr_attention.metrics.pairwise import JS_BANDS
from cxr_attention.metrics.selection import (
    HEADLINE_METHOD,
    HEADLINE_ROWS,
    PREFERRED_SOURCE,
    headline_maps,
)

__all__ = [
    "DISTRIBUTION_METRICS",
    "METRIC_LABELS",
    "REFERENCE_LINES",
    "SUMMARY_FIGURES",
    "plot_js_histogram",
    "plot_method_usage",
    "plot_metric_distributions",
    "write_summary_figures",
]

DISTRIBUTION_METRICS = (
    "inside_body",
    "border_fraction",
    "entropy",
    "focus",
    "left_right",
    "apical_basal",
)
"""Per-map metrics shown by :func:`plot_metric_distributions` by default."""

METRIC_LABELS = {m.column: m.label for m in CATALOGUE}
"""Panel titles of the per-map metrics (the catalogue's labels)."""

REFERENCE_LINES = {
    # metric: ((value, label), ...) drawn as dashed lines with their meaning.
    "inside_body": ((INSIDE_BODY.target, f"target >= {INSIDE_BODY.target:g}"),),
    "border_fraction": ((BORDER_FRACTION.target, f"target <= {BORDER_FRACTION.target:g}"),),
    "entropy": (
        (ENTROPY.band[0], f"focused < {ENTROPY.band[0]:g}"),
        (ENTROPY.band[1], f"diffuse > {ENTROPY.band[1]:g}"),
    ),
    "left_right": tuple(
        (v, f"balanced {LEFT_RIGHT.band[0]:g}-{LEFT_RIGHT.band[1]:g}") for v in LEFT_RIGHT.band
    ),
}
"""Dashed lines of the quality targets and bands (:mod:`cxr_attention.metrics.catalogue`)."""

SUMMARY_FIGURES = (
    "metrics_by_strategy",
    "metrics_by_finding",
    "accuracy_by_strategy",
    "accuracy_by_finding",
    "js_histogram",
    "method_usage",
)
"""File stems written by :func:`write_summary_figures` (``report/summary_figures.rst`` keys its
caption on these prefixes)."""


def plot_metric_distributions(
    table: pd.DataFrame,
    *,
    by: str,
    out_path: str | os.PathLike,
    metrics: Sequence[str] = DISTRIBUTION_METRICS,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> Path:
    """Box plots with every map as a point, one panel per metric, one box per group of ``by``.

    Dashed lines mark the quality targets and bands of the catalogue (:data:`REFERENCE_LINES`).

    Parameters
    ----------
    table : DataFrame
        Per-map metrics joined with the maps table (``metrics/maps.csv``): the ``metrics``
        columns and ``by`` (or ``question_id``, from which ``strategy`` and ``finding`` are read).
    by : str
        Grouping column, e.g. ``"strategy"``, ``"finding"`` or ``"method"``.
    out_path : path-like
        PNG to write.
    metrics : sequence of str
        Metric columns, one panel each.
    title : str, optional
    figsize : (width, height), optional
        Inches; default grows with the number of groups.
    dpi : int

    Returns
    -------
    Path
    """
    table = with_question_parts(table)
    missing = [c for c in (by, *metrics) if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}")
    groups = group_order(table[by], by)
    n_cols = min(3, len(metrics))
    n_rows = -(-len(metrics) // n_cols)
    rotate = len(groups) > 4 or any(len(g) > 10 for g in groups)
    if figsize is None:
        panel_width = max(3.2, 0.45 * len(groups) + 1.2)
        figsize = (panel_width * n_cols, (3.4 if rotate else 2.8) * n_rows + 0.6)

    with figure_style():
        figure = new_figure(figsize, dpi=dpi, layout="constrained")
        axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
        for ax, metric in zip(axes, metrics, strict=False):
            values = [
                pd.to_numeric(table.loc[table[by].astype(str) == g, metric], errors="coerce")
                .dropna()
                .to_numpy()
                for g in groups
            ]
            _box_and_points(ax, values)
            for value, label in REFERENCE_LINES.get(metric, ()):
                ax.axhline(value, color="#CC3311", linestyle="--", linewidth=0.9, label=label)
            handles, labels = ax.get_legend_handles_labels()
            if handles:  # one entry per distinct meaning
                unique = dict(zip(labels, handles, strict=True))
                ax.legend(unique.values(), unique.keys(), loc="best", framealpha=0.85)
            ax.set_xticks(
                range(1, len(groups) + 1),
                [f"{g}\n(n={len(v)})" for g, v in zip(groups, values, strict=True)],
                rotation=45 if rotate else 0,
                ha="right" if rotate else "center",
            )
            ax.set_title(METRIC_LABELS.get(metric, metric))
            ax.set_ylabel(metric)
            if not groups:
                say_empty(ax)
        for ax in axes[len(metrics) :]:
            ax.set_axis_off()
        figure.suptitle(title or f"Map metrics per {by.replace('_', ' ')} (one point per map)")
        return save_figure(figure, out_path, dpi=dpi)


def plot_js_histogram(
    table: pd.DataFrame,
    *,
    out_path: str | os.PathLike,
    value_column: str = "js_divergence",
    group_column: str | None = "strategy_b",
    bins: int = 20,
    title: str | None = None,
    figsize: tuple[float, float] = (6.4, 3.8),
    dpi: int = DPI,
) -> Path:
    """Histogram of base-2 Jensen-Shannon divergences with the interpretation bands.

    Bars are stacked by ``group_column`` (the strategy compared with the baseline); dashed lines
    at 0.2 and 0.5 separate minor, moderate and large changes.

    Parameters
    ----------
    table : DataFrame
        ``js_divergence.csv`` (:func:`cxr_attention.metrics.map_stats.js_pairs_table`).
    out_path : path-like
        PNG to write.
    value_column : str
        Divergences in [0, 1].
    group_column : str or None
        Stack by this column; ``None`` or absent: one colour.
    bins : int
        Equal bins over [0, 1]; 20 puts the band limits on bin edges.
    title : str, optional
    figsize : (width, height)
    dpi : int

    Returns
    -------
    Path
    """
    if value_column not in table.columns:
        raise ValueError(f"JS table lacks column {value_column!r}")
    values = pd.to_numeric(table[value_column], errors="coerce")
    keep = values.notna()
    if group_column and group_column in table.columns:
        labels = table.loc[keep, group_column].astype(str)
        groups = group_order(labels, group_column)
        stacks = [values[keep][labels == g].to_numpy() for g in groups]
        names = [g.replace("_", " ") for g in groups]
    else:
        stacks, names = [values[keep].to_numpy()], ["all pairs"]
    edges = np.linspace(0.0, 1.0, bins + 1)
    palette = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442"]

    with figure_style():
        figure = new_figure(figsize, dpi=dpi, layout="constrained")
        ax = figure.add_subplot()
        if sum(len(s) for s in stacks):
            colours = [palette[i % len(palette)] for i in range(len(stacks))]
            ax.hist(stacks, bins=edges, stacked=True, color=colours, label=names)
            ax.legend(title="compared with baseline", frameon=False, loc="upper right")
        else:
            say_empty(ax)
        lower = 0.0
        for upper, band in (*JS_BANDS, (1.0, "large")):
            if upper < 1.0:
                ax.axvline(upper, color="#CC3311", linestyle="--", linewidth=0.9)
            ax.text(
                (lower + upper) / 2,
                1.01,
                band,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                color="#CC3311",
            )
            lower = upper
        ax.set_xlim(0, 1)
        ax.set_xlabel("Jensen-Shannon divergence between the two maps (base 2, 0 = identical)")
        ax.set_ylabel("image-term pairs")
        n_pairs = int(sum(len(s) for s in stacks))
        ax.set_title(title or f"Attention answer-map change vs baseline ({n_pairs} pairs)", pad=16)
        return save_figure(figure, out_path, dpi=dpi)


def plot_method_usage(
    maps: pd.DataFrame,
    *,
    out_path: str | os.PathLike,
    by: str = "strategy",
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = DPI,
) -> Path:
    """How many maps each method produced, per group: stacked horizontal bars with counts.

    Parameters
    ----------
    maps : DataFrame
        The maps table (``metrics/maps.csv`` or the maps shards): ``method`` and ``by`` (or
        ``question_id``, from which ``strategy`` is read).
    out_path : path-like
        PNG to write.
    by : str
        Grouping column.
    title : str, optional
    figsize : (width, height), optional
    dpi : int

    Returns
    -------
    Path
    """
    maps = with_question_parts(maps)
    missing = [c for c in (by, "method") if c not in maps.columns]
    if missing:
        raise ValueError(f"maps table lacks columns {missing}")
    counts = pd.crosstab(maps[by].astype(str), maps["method"].astype(str))
    groups = group_order(counts.index, by)
    methods = [m for m in METHODS if m in counts.columns]
    methods += sorted(set(counts.columns) - set(methods))
    counts = counts.reindex(index=groups, columns=methods, fill_value=0)
    if figsize is None:
        figsize = (7.0, 1.5 + 0.4 * max(len(groups), 2))

    with figure_style():
        figure = new_figure(figsize, dpi=dpi, layout="constrained")
        ax = figure.add_subplot()
        left = np.zeros(len(groups))
        for method in methods:
            widths = counts[method].to_numpy(dtype=float)
            bars = ax.barh(
                range(len(groups)),
                widths,
                left=left,
                color=METHOD_COLOURS.get(method, "#444444"),
                label=METHOD_LABELS.get(method, method),
            )
            ax.bar_label(
                bars,
                labels=[str(int(w)) if w else "" for w in widths],
                label_type="center",
                fontsize="small",
                color="white" if method != "uniform" else "black",
            )
            left += widths
        for position, total in enumerate(left):
            ax.text(total, position, f"  {int(total)}", va="center", fontsize="small")
        ax.set_yticks(range(len(groups)), [g.replace("_", " ") for g in groups])
        ax.set_ylim(max(len(groups), 1) - 0.5, -0.5)
        ax.set_xlim(0, max(float(left.max()) if len(left) else 0.0, 1.0) * 1.12)
        ax.set_xlabel("maps (the cascade's method that produced each)")
        ax.set_ylabel(by.replace("_", " "))
        if methods:
            figure.legend(loc="outside lower center", ncol=len(methods), frameon=False)
        else:
            say_empty(ax)
        ax.set_title(title or f"Map methods used per {by.replace('_', ' ')}")
        return save_figure(figure, out_path, dpi=dpi)


def write_summary_figures(
    *,
    maps_csv: str | os.PathLike,
    accuracy_by_strategy_csv: str | os.PathLike,
    accuracy_by_finding_csv: str | os.PathLike,
    js_divergence_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    confidence: float = 0.95,
) -> list[Path]:
    """Write every summary plot of a run into ``out_dir`` as ``<stem>.png`` (see
    :data:`SUMMARY_FIGURES`).

    Parameters
    ----------
    maps_csv : path-like
        The gathered maps table with metric and sample columns (``metrics/maps.csv``).
    accuracy_by_strategy_csv, accuracy_by_finding_csv, js_divergence_csv : path-like
        Tables of :func:`cxr_attention.metrics.summary.run_study_statistics`.
    out_dir : path-like
        Folder for the PNGs (created).
    confidence : float
        Level of the accuracy intervals, for the axis label.

    Returns
    -------
    list of Path
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    maps = with_question_parts(read_table(maps_csv))
    if maps.empty:
        maps = pd.DataFrame(columns=["strategy", "finding", "method", *DISTRIBUTION_METRICS])
    # The distributions are of the headline maps (one method, one row choice): never pooled.
    headline = (
        headline_maps(maps) if {"map_id", "sample_id", "term", "source"} <= set(maps) else maps
    )
    ci_label = f"{100 * confidence:g}% CI, bootstrap over patients"
    written = [
        plot_metric_distributions(headline, by=by, out_path=out_dir / f"metrics_by_{by}.png")
        for by in ("strategy", "finding")
    ]
    for name, path in (
        ("accuracy_by_strategy", accuracy_by_strategy_csv),
        ("accuracy_by_finding", accuracy_by_finding_csv),
    ):
        accuracy = read_table(path)
        if accuracy.empty:
            accuracy = pd.DataFrame(columns=["strategy", "accuracy", "ci_low", "ci_high", "n"])
        written.append(plot_accuracy(accuracy, out_path=out_dir / f"{name}.png", ci_label=ci_label))
    js = read_table(js_divergence_csv)
    if js.empty:
        js = pd.DataFrame(columns=["js_divergence", "strategy_b"])
    if {"method", "source"} <= set(js.columns):
        rows = js["rows"].fillna("").astype(str) if "rows" in js else pd.Series("", js.index)
        js = js[
            (js["method"] == HEADLINE_METHOD)
            & (js["source"] == PREFERRED_SOURCE)
            & rows.isin(["", HEADLINE_ROWS])
        ]
    written.append(plot_js_histogram(js, out_path=out_dir / "js_histogram.png"))
    written.append(plot_method_usage(maps, out_path=out_dir / "method_usage.png"))
    return written


def _box_and_points(ax: Axes, values: list[np.ndarray]) -> None:
    """A box per group (no outlier markers: every point is drawn) and the jittered points."""
    if not values:
        return
    drawn = [v if len(v) else np.array([np.nan]) for v in values]
    ax.boxplot(
        drawn,
        positions=range(1, len(values) + 1),
        widths=0.55,
        showfliers=False,
        medianprops={"color": "black"},
        boxprops={"color": "#555555"},
        whiskerprops={"color": "#555555"},
        capprops={"color": "#555555"},
    )
    rng = np.random.default_rng(0)  # fixed jitter: identical figures on rerun
    for position, group_values in enumerate(values, start=1):
        jitter = rng.uniform(-0.16, 0.16, size=len(group_values))
        ax.scatter(
            position + jitter,
            group_values,
            s=8,
            alpha=0.5,
            color="#0072B2",
            linewidths=0,
            zorder=3,
        )
