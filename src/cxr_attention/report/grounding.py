"""The grounding page of the report: per dataset, every map method beside the baselines.

One table per dataset, headed by its contamination note (were its images in MedGemma's training
data?), rows = map method and kind (the answer's map, the terms' maps, MS-CXR's phrase maps, the
baselines), columns =
the grounding metrics as ``mean [low, high]`` (patient-level bootstrap), and ``n``. MedFocus
reports union-box IoU and F1 in percent; here they are fractions.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import pandas as pd

from cxr_attention.io import read_table, write_html
from cxr_attention.maps.registry import METHOD_LABELS
from cxr_attention.report._html import format_number, html_page, html_table

__all__ = ["render_grounding_page", "write_grounding_page"]

_BASELINE_LABELS = {
    "baseline_lungs": "baseline: uniform within the lungs",
    "baseline_lung_prior": "baseline: lung prior (mean lung mask of the run)",
    "baseline_random": "baseline: random maps",
}
_KIND_ORDER = {"answer": 0, "term": 1, "phrase": 2, "phrase_answer": 3, "baseline": 4}
_KIND_LABELS = {"phrase_answer": "answer map of the phrase question"}
_EXPLANATION = (
    "pointing_game: share of the map's maximum inside the annotation; mass: share of the map "
    "inside; area: share of the image inside (what a uniform map scores); lift = mass / area; "
    "cnr: (mean inside - mean outside) / sqrt(var inside + var outside); iou_*: IoU of the map "
    "cut at a min-max threshold, Otsu's threshold or its 0.9 quantile; auprc: average precision "
    "of the map's values for pixels inside; medfocus_*: MedFocus's union-box IoU and F1 (their "
    "table gives percent). Phrase maps: the map of an MS-CXR phrase as a term of a question "
    "asking about it, scored against that phrase's boxes. docs/grounding.md defines each."
)


def _cell(row: pd.Series) -> str:
    if pd.isna(row["value"]):
        return ""
    interval = ""
    if not pd.isna(row["ci_low"]):
        interval = f" [{format_number(row['ci_low'], 3)}, {format_number(row['ci_high'], 3)}]"
    return f"{format_number(row['value'], 3)}{interval}"


def _label(method: str, kind: str) -> str:
    if kind == "baseline":
        return _BASELINE_LABELS.get(method, method)
    return f"{METHOD_LABELS.get(method, method)} ({_KIND_LABELS.get(kind, f'{kind} map')})"


def render_grounding_page(summary: pd.DataFrame) -> str:
    """The page's HTML from the stage's summary table (``grounding/summary.csv``)."""
    if summary.empty:
        body = "<p>No map of this run matched an annotation (image and finding).</p>\n"
        return html_page("Grounding", body, lead=_EXPLANATION)
    metrics = list(dict.fromkeys(summary["metric"]))
    parts = []
    for (dataset, contamination), frame in summary.groupby(["dataset", "contamination"], sort=True):
        parts.append(f"<h2>{html.escape(str(dataset))}</h2>\n")
        parts.append(f"<p>Contamination: {html.escape(str(contamination))}.</p>\n")
        rows = []
        order = sorted(
            frame.groupby(["map_kind", "method"]).groups,
            key=lambda key: (_KIND_ORDER.get(key[0], 9), key[1]),
        )
        for kind, method in order:
            cells = frame[(frame["map_kind"] == kind) & (frame["method"] == method)]
            by_metric = {row["metric"]: row for _, row in cells.iterrows()}
            first = next(iter(by_metric.values()))
            rows.append(
                [
                    _label(method, kind),
                    int(first["n"]),
                    int(first["n_patients"]),
                    *(_cell(by_metric[m]) if m in by_metric else "" for m in metrics),
                ]
            )
        header = ["map", "n", "patients", *metrics]
        parts.append(html_table(header, rows, numeric=[False, True, True, *[True] * len(metrics)]))
    return html_page("Grounding", "".join(parts), lead=_EXPLANATION)


def write_grounding_page(summary_csv: str | os.PathLike, out_html: str | os.PathLike) -> Path:
    """Write the page of ``summary_csv`` to ``out_html`` (atomically)."""
    summary = read_table(summary_csv, text=True)
    for column in ("value", "ci_low", "ci_high", "n", "n_patients"):
        if column in summary:
            summary[column] = pd.to_numeric(summary[column], errors="coerce")
    out_html = Path(out_html)
    write_html(render_grounding_page(summary), out_html)
    return out_html
