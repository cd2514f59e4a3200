"""The app's "Study browser" tab: a finished run's results, read from ``results/<run>`` alone.

No model and no GPU: the tab reads the run's gathered tables with the library's readers
(``metrics/answers.csv`` via :func:`~cxr_attention.metrics.tables.read_answers`,
``metrics/maps.csv`` via :func:`~cxr_attention.metrics.tables.read_maps`) and the map arrays in
``maps/shard-*.npz`` (:class:`~cxr_attention.metrics.tables.MapStore`). Rows are the maps of the
answer (source ``answer``), one per sample and method, filtered by finding, strategy, whether the
answer was correct, and method.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import quote

import gradio as gr
import numpy as np
import pandas as pd
from matplotlib import colormaps
from PIL import Image

from cxr_attention.figures.overlay import SEQUENTIAL_CMAP
from cxr_attention.geometry import grid_to_image
from cxr_attention.io import read_table
from cxr_attention.metrics.catalogue import MAP_METRICS
from cxr_attention.metrics.tables import (
    MapStore,
    default_maps_npz,
    join_answers,
    read_answers,
    read_maps,
)

__all__ = [
    "ALL",
    "MAP_PIXELS_PER_CELL",
    "REPORT_PAGES",
    "SAMPLES_API_NAME",
    "SAMPLE_API_NAME",
    "SUMMARY_API_NAME",
    "build_study_browser",
    "filter_answer_maps",
    "load_answer_maps",
]

SAMPLES_API_NAME = "/study_samples"
SAMPLE_API_NAME = "/study_sample"
SUMMARY_API_NAME = "/study_summary_table"

#: The filter value that keeps every row.
ALL = "all"
#: Each token-grid cell becomes a square of this many pixels in the shown map.
MAP_PIXELS_PER_CELL = 16

SAMPLE_COLUMNS = [
    "map_id",
    "sample_id",
    "finding",
    "strategy",
    "method",
    "answer",
    "expected",
    "correct",
    "p_yes",
]
#: The run's report pages the tab links to, relative to the run folder.
REPORT_PAGES = ("report.html", "report/summary.html")
_ANSWER_COLUMNS = ["sample_id", "finding", "strategy", "answer", "expected", "p_yes", "correctness"]
# The gathered tables that are not summaries (the per-row tables and the shards).
_NOT_SUMMARIES = {"answers.csv", "maps.csv"}


def load_answer_maps(results_dir: str | os.PathLike) -> pd.DataFrame:
    """The run's maps of the answer with their metrics and their answer's columns.

    ``correct`` is ``yes`` / ``no`` from the library's :func:`answer_correctness`, empty when the
    answer has no expected value.
    """
    metrics_dir = Path(results_dir) / "metrics"
    for name in ("answers.csv", "maps.csv"):
        if not (metrics_dir / name).is_file():
            raise FileNotFoundError(
                f"{metrics_dir / name}: missing; is {results_dir} a run folder?"
            )
    answers = read_answers(metrics_dir / "answers.csv")
    maps = read_maps(metrics_dir / "maps.csv")
    rows = join_answers(maps[maps["source"] == "answer"], answers, keep=_ANSWER_COLUMNS)
    rows["correct"] = rows["correctness"].map({1.0: "yes", 0.0: "no"}).fillna("")
    return rows.sort_values("map_id", ignore_index=True)


def filter_answer_maps(
    rows: pd.DataFrame, *, finding: str, strategy: str, correct: str, method: str
) -> pd.DataFrame:
    """The rows matching every filter (:data:`ALL` keeps every value), as the samples table."""
    keep = pd.Series(True, index=rows.index)
    for column, value in (
        ("finding", finding),
        ("strategy", strategy),
        ("correct", correct),
        ("method", method),
    ):
        if value != ALL:
            keep &= rows[column] == value
    return rows.loc[keep, SAMPLE_COLUMNS].reset_index(drop=True)


def _choices(rows: pd.DataFrame, column: str) -> list[str]:
    return [ALL, *sorted(v for v in rows[column].unique() if v != "")]


def _write_map_png(grid: np.ndarray, out_dir: Path, map_id: str) -> Path:
    """The token-grid map as a heat map, one square per cell, lowest to highest over the range."""
    rows, cols = grid.shape
    pixels = grid_to_image(grid, (rows * MAP_PIXELS_PER_CELL, cols * MAP_PIXELS_PER_CELL))
    low, high = float(grid.min()), float(grid.max())
    scaled = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    rgb = (colormaps[SEQUENTIAL_CMAP](scaled)[..., :3] * 255).round().astype(np.uint8)
    out = out_dir / f"{hashlib.sha1(map_id.encode()).hexdigest()}.png"
    if not out.exists():
        partial = out.with_suffix(".part.png")
        Image.fromarray(rgb).save(partial)
        partial.replace(out)
    return out


def _report_links(results_dir: Path) -> str:
    """Links to the run's report pages, served by the app itself (a browser will not open a
    ``file://`` link from an ``http://`` page); only these pages are served, not the whole run."""
    lines = ["**Report**"]
    for name in REPORT_PAGES:
        path = (results_dir / name).resolve()
        if path.is_file():
            gr.set_static_paths([path])
            lines.append(f"- [{name}](/gradio_api/file={quote(str(path))}) (`{path}`)")
        else:
            lines.append(f"- `{name}`: not written")
    return "\n".join(lines)


def build_study_browser(results_dir: str | os.PathLike | None) -> None:
    """Add the study browser's contents to the open Blocks context (inside its tab)."""
    if results_dir is None:
        gr.Markdown(
            "No run folder was given. Start the app with the results of a finished run, "
            "`cxr-attention app --results results/<run>` (the folder holding `metrics/` and "
            "`maps/`), to browse its samples, maps and metrics.",
            elem_id="study-no-run",
        )
        return
    results_dir = Path(results_dir)
    try:
        rows = load_answer_maps(results_dir)
    except (FileNotFoundError, ValueError) as error:
        gr.Markdown(f"Cannot open the run `{results_dir}`: {error}", elem_id="study-no-run")
        return
    metric_columns = ["map_id", "method", *MAP_METRICS]
    image_dir = Path(tempfile.mkdtemp(prefix="cxr-study-"))
    summaries = sorted(
        p.name
        for p in (results_dir / "metrics").glob("*.csv")
        if p.name not in _NOT_SUMMARIES and not p.name.startswith("shard-")
    )

    def samples(finding, strategy, correct, method):
        return filter_answer_maps(
            rows, finding=finding, strategy=strategy, correct=correct, method=method
        )

    def sample(map_id):
        match = rows[rows["map_id"] == map_id]
        if match.empty:
            return f"No map of the answer with id `{map_id}` in this run.", None, None
        row = match.iloc[0]
        with MapStore(default_maps_npz(results_dir / "metrics" / "maps.csv")) as store:
            if map_id not in store:
                return (
                    f"`{map_id}` has no array in `maps/shard-*.npz`.",
                    None,
                    match[metric_columns],
                )
            image = _write_map_png(store[map_id], image_dir, map_id)
        status = (
            f"**{row['finding']}**, {row['strategy']}: answer `{row['answer']}` "
            f"(expected `{row['expected'] or '-'}`), P(yes) {row['p_yes']:.3f}, "
            f"method `{row['method']}`"
        )
        return status, str(image), match[metric_columns]

    def pick(table: pd.DataFrame, event: gr.SelectData):
        return str(table.iloc[event.index[0]]["map_id"])

    def summary(name):
        if name not in summaries:
            return None
        return read_table(results_dir / "metrics" / name)

    gr.Markdown(f"Run: `{results_dir.resolve()}`\n\n{_report_links(results_dir)}")
    with gr.Row():
        finding = gr.Dropdown(
            _choices(rows, "finding"), value=ALL, label="Finding", elem_id="study-finding"
        )
        strategy = gr.Dropdown(
            _choices(rows, "strategy"), value=ALL, label="Strategy", elem_id="study-strategy"
        )
        correct = gr.Dropdown(
            [ALL, "yes", "no"], value=ALL, label="Correct", elem_id="study-correct"
        )
        method = gr.Dropdown(
            _choices(rows, "method"), value=ALL, label="Method", elem_id="study-method"
        )
    show = gr.Button("Filter", variant="primary", elem_id="study-filter")
    table = gr.Dataframe(
        value=rows[SAMPLE_COLUMNS],
        label="Maps of the answer (select a row)",
        interactive=False,
        elem_id="study-samples",
    )
    with gr.Row():
        with gr.Column():
            map_id = gr.Textbox(label="Map id", elem_id="study-map-id")
            open_sample = gr.Button("Show sample", elem_id="study-show")
            status = gr.Markdown(elem_id="study-status")
        shown = gr.Image(
            label="Map of the answer (token grid)", type="filepath", elem_id="study-map"
        )
    metrics = gr.Dataframe(label="Metrics of the map", interactive=False, elem_id="study-metrics")
    with gr.Accordion("Summary tables", open=False):
        summary_name = gr.Dropdown(
            summaries, label="Table (metrics/)", elem_id="study-summary-name"
        )
        summary_table = gr.Dataframe(interactive=False, elem_id="study-summary")

    filters = [finding, strategy, correct, method]
    show.click(samples, inputs=filters, outputs=table, api_name=SAMPLES_API_NAME.lstrip("/"))
    open_sample.click(
        sample,
        inputs=map_id,
        outputs=[status, shown, metrics],
        api_name=SAMPLE_API_NAME.lstrip("/"),
    )
    table.select(pick, inputs=table, outputs=map_id, api_visibility="private").then(
        sample, inputs=map_id, outputs=[status, shown, metrics], api_visibility="private"
    )
    summary_name.change(
        summary, inputs=summary_name, outputs=summary_table, api_name=SUMMARY_API_NAME.lstrip("/")
    )
