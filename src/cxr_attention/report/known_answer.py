"""The known-answer section: the first thing on the run summary page when lesions were planted.

`write_known_answer` reads the run's gathered answers and maps, the maps themselves and the
known-answer dataset's tables, scores them (`cxr_attention.known_answer.scores`) and writes:

- ``answers.csv`` and ``maps.csv``: the per-answer and per-map known-answer scores;
- ``summary.csv``: the known-answer table (`SUMMARY_COLUMNS`), held-out films and all films;
- ``section.html``: that table as an HTML fragment (`render_known_answer_section`), which the run
  summary page puts first;
- in the figures folder, ``pointing_game.png`` (every method's rate) and ``hits__<method>.png``
  (that method's answer maps of ``Is there a nodule?`` over the held-out planted films).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.io import read_table, write_csv, write_html
from cxr_attention.known_answer.scores import (
    ACCURACY_TARGETS,
    answer_scores,
    map_scores,
    summarise,
)
from cxr_attention.report._html import html_table

__all__ = ["render_known_answer_section", "write_known_answer"]

_STATISTIC_NAMES = {
    "pointing_game": "pointing game",
    "mass_inside": "mass in box",
    "area_share": "box area share",
    "lift": "lift (mass / area)",
    "correct_side_mass": "mass on the lesion's side (side questions)",
}


def render_known_answer_section(summary: pd.DataFrame) -> str:
    """The known-answer table as an HTML fragment (held-out films; every film below)."""
    parts = ["<h2>Known answer: planted nodules</h2>\n"]
    parts.append(
        "<p>Lesions planted in the demo films (docs/known_answer.md); questions "
        "<em>Is there a nodule?</em> and <em>... in the left / right lung?</em> (the patient's "
        "side). Held-out films were not used to train the model. Means with 95% bootstrap "
        "intervals over patients. Map scores are over the answer's maps of planted films: "
        "pointing game = share of the map's maximum inside the lesion's box; lift = mass in the "
        "box over the box's area share (1: no better than a uniform map); the lesion's side = "
        "its lung's share of the map's in-lung mass.</p>\n"
    )
    for films in ("held out", "all"):
        chosen = summary[summary["films"] == films]
        parts.append(f"<h3>{'Held-out films' if films == 'held out' else 'All films'}</h3>\n")
        accuracy = chosen[chosen["table"] == "accuracy"]
        rows, classes = [], []
        for row in accuracy.itertuples(index=False):
            kind = "any" if row.row.startswith("any") else "side"
            target = ACCURACY_TARGETS[kind]
            met = row.value >= target if np.isfinite(row.value) else None
            rows.append([row.row, row.value, _interval(row), row.n, row.n_patients, f">= {target}"])
            classes.append([None, None, None, None, None, {True: "met", False: "unmet"}.get(met)])
        parts.append(
            html_table(
                ["answers", "accuracy", "95% CI", "answers", "patients", "target"],
                rows,
                numeric=[False, True, True, True, True, False],
                cell_classes=classes,
            )
        )
        maps = chosen[chosen["table"] == "maps"]
        statistics = [s for s in _STATISTIC_NAMES if s in set(maps["statistic"])]
        rows = []
        for method, of_method in maps.groupby("row", sort=False):
            by_statistic = of_method.set_index("statistic")
            cells = [method, int(by_statistic.loc["pointing_game", "n"])]
            for statistic in statistics:
                estimate = by_statistic.loc[statistic]
                cells.append(f"{_number(estimate['value'])} {_interval(estimate)}".strip())
            rows.append(cells)
        header = ["map method", "maps"] + [_STATISTIC_NAMES[s] for s in statistics]
        parts.append(html_table(header, rows, numeric=[False] + [True] * (len(header) - 1)))
    return "".join(parts)


def write_known_answer(
    *,
    answers_csv: str | os.PathLike,
    maps_csv: str | os.PathLike,
    arrays_npz: Sequence[str | os.PathLike],
    preprocess_csvs: Sequence[str | os.PathLike],
    boxes_csv: str | os.PathLike,
    plantings_csv: str | os.PathLike,
    held_out: Sequence[str],
    out_dir: str | os.PathLike,
    figures_dir: str | os.PathLike,
    statistics: Mapping,
    seed: int,
) -> pd.DataFrame:
    """Score a run's known-answer questions and write the tables, section and figures.

    Parameters
    ----------
    answers_csv, maps_csv : path-like
        The gathered ``metrics/answers.csv`` and ``metrics/maps.csv``.
    arrays_npz : sequence of path-like
        The maps stage's ``maps/shard-<k>.npz``.
    preprocess_csvs : sequence of path-like
        ``preprocess/shard-<k>.csv`` (the films drawn under the maps).
    boxes_csv, plantings_csv : path-like
        The known-answer dataset's ``boxes.csv`` and ``plantings.csv``.
    held_out : sequence of str
        ``dicom_id`` of the source films not used in training.
    out_dir, figures_dir : path-like
        Where the tables and ``section.html``, and the figures, go.
    statistics : mapping
        ``bootstrap_samples`` and ``confidence`` (the ``metrics`` config section).
    seed : int

    Returns
    -------
    pandas.DataFrame
        The summary table.
    """
    from cxr_attention.maps.registry import METHODS
    from cxr_attention.metrics.selection import HEADLINE_ROWS, statistics_maps
    from cxr_attention.metrics.tables import read_answers, read_maps

    answers = read_answers(answers_csv)
    maps = read_maps(maps_csv)
    boxes, plantings = read_table(boxes_csv, text=True), read_table(plantings_csv, text=True)
    arrays = {}
    for path in arrays_npz:
        with np.load(path) as stored:
            arrays.update({key: stored[key] for key in stored.files})
    map_rows = map_scores(answers, maps, arrays, boxes, plantings, held_out)
    answer_rows = answer_scores(answers, plantings, held_out)
    # The table and the hit figures are of the answer's maps: a method that made term maps only
    # (gated_answer) has none to show.
    methods = [
        m for m in METHODS if m in set(map_rows.loc[map_rows["source"] == "answer", "method"])
    ]
    summary = summarise(
        answer_rows,
        map_rows,
        methods=methods,
        n_boot=int(statistics["bootstrap_samples"]),
        confidence=float(statistics["confidence"]),
        seed=seed,
    )
    out_dir = Path(out_dir)
    write_csv(answer_rows, out_dir / "answers.csv")
    write_csv(map_rows, out_dir / "maps.csv")
    write_csv(summary, out_dir / "summary.csv")
    write_html(render_known_answer_section(summary), out_dir / "section.html")
    # One map per film and method in the hit figures: the answer map over all layers, from the
    # decision rows (an attention answer's per-layer and all-rows maps would repeat the film).
    headline = statistics_maps(maps)
    headline = headline[headline["rows"].isin(["", HEADLINE_ROWS])]
    figured = map_rows[map_rows["map_id"].isin(set(headline["map_id"]))]
    _figures(figured, summary, methods, arrays, boxes, preprocess_csvs, Path(figures_dir))
    return summary


def _figures(map_rows, summary, methods, arrays, boxes, preprocess_csvs, figures_dir) -> None:
    from cxr_attention.figures.known_answer import (
        LesionPanel,
        plot_method_hits,
        plot_pointing_game_by_method,
    )
    from cxr_attention.known_answer.benchmark import QUESTIONS
    from cxr_attention.preprocessed import PreprocessTable

    figures_dir.mkdir(parents=True, exist_ok=True)
    plot_pointing_game_by_method(summary, figures_dir / "pointing_game.png")
    tables = [PreprocessTable(path) for path in preprocess_csvs]
    box_by_image = boxes.drop_duplicates("dicom_id").set_index("dicom_id")
    shown = map_rows[
        map_rows["held_out"].astype(bool)
        & (map_rows["source"] == "answer")
        & (map_rows["question"] == QUESTIONS["any"])
    ]
    for method in methods:
        panels = []
        for row in shown[shown["method"] == method].itertuples(index=False):
            table = next((t for t in tables if row.dicom_id in t), None)
            if table is None:
                continue
            image = table[row.dicom_id].image()
            box = box_by_image.loc[row.dicom_id]
            scale_x = image.shape[1] / float(box["image_width"])
            scale_y = image.shape[0] / float(box["image_height"])
            panels.append(
                LesionPanel(
                    image=image,
                    grid_map=arrays[row.map_id],
                    box=(
                        float(box["x"]) * scale_x,
                        float(box["y"]) * scale_y,
                        float(box["w"]) * scale_x,
                        float(box["h"]) * scale_y,
                    ),
                    pointing_game=float(row.pointing_game),
                    lift=float(row.lift),
                    label=f"{row.side} lung, patient {row.subject_id}",
                )
            )
        plot_method_hits(panels, method, figures_dir / f"hits__{method}.png")


def _number(value) -> str:
    return f"{float(value):.3g}" if np.isfinite(float(value)) else ""


def _interval(row) -> str:
    """``[low, high]`` of a summary row (a tuple row or a Series); blank when undefined."""
    low, high = float(row.ci_low), float(row.ci_high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return ""
    return f"[{low:.3g}, {high:.3g}]"
