"""Reading a run's tidy tables for the statistics: answers, maps with metrics, map arrays.

Also the grouping helpers the statistics share (every combination of group values plus
``"all"``; maps joined with their answers).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.io import read_table
from cxr_attention.metrics.catalogue import MAP_METRICS

__all__ = [
    "ANSWERS_REQUIRED",
    "MAPS_REQUIRED",
    "MapStore",
    "answer_correctness",
    "default_maps_npz",
    "group_combinations",
    "join_answers",
    "read_answers",
    "read_maps",
]

ANSWERS_REQUIRED = ("sample_id", "dicom_id", "subject_id", "question_id", "finding", "strategy")
MAPS_REQUIRED = ("map_id", "sample_id", "dicom_id", "term", "source", "method")


def read_answers(path: str | os.PathLike) -> pd.DataFrame:
    """Read an answers table: identifiers as strings, ``p_yes`` as float, ``correct`` as 1/0/NaN."""
    answers = read_table(path, required=ANSWERS_REQUIRED, text=True)
    for column in ("answer", "expected", "correct", "baseline_question_id", "variant_kind"):
        if column not in answers.columns:
            answers[column] = ""
    answers["p_yes"] = pd.to_numeric(answers.get("p_yes", ""), errors="coerce")
    answers["correctness"] = answer_correctness(answers)
    return answers


def read_maps(
    maps_csv: str | os.PathLike, metrics_csv: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Read the maps table and join the per-map metrics on ``map_id`` (metrics win on overlap)."""
    maps = read_table(maps_csv, required=MAPS_REQUIRED, text=True)
    if metrics_csv is not None:
        metrics = read_table(metrics_csv, required=["map_id"], text=True)
        overlap = [c for c in metrics.columns if c in maps.columns and c != "map_id"]
        maps = maps.drop(columns=overlap).merge(metrics, on="map_id", how="left")
    for column in MAP_METRICS:
        maps[column] = pd.to_numeric(maps[column], errors="coerce") if column in maps else np.nan
    return maps


def answer_correctness(answers: pd.DataFrame) -> pd.Series:
    """1.0 / 0.0 per answer, NaN when there is no expected answer.

    Where ``expected`` is yes or no, an answer is correct when it equals it (``unclear`` counts as
    incorrect); otherwise the table's own ``correct`` value (True/False) is used when present.
    """
    expected = answers.get("expected", pd.Series("", index=answers.index)).astype(str).str.lower()
    answer = answers.get("answer", pd.Series("", index=answers.index)).astype(str).str.lower()
    given = answers.get("correct", pd.Series("", index=answers.index)).astype(str).str.lower()
    result = pd.Series(np.nan, index=answers.index, dtype=np.float64)
    from_given = given.map({"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0})
    result = result.where(from_given.isna(), from_given)
    known = expected.isin(["yes", "no"])
    result[known] = (answer[known] == expected[known]).astype(np.float64)
    return result


def default_maps_npz(maps_csv: str | os.PathLike) -> list[Path]:
    """The map arrays of the run whose gathered maps table is ``maps_csv``.

    ``results/<run>/metrics/maps.csv`` -> sorted ``results/<run>/maps/shard-*.npz``; a maps table
    elsewhere (a shard's own ``maps/shard-<k>.csv``, explain's ``maps.csv``) -> the ``.npz``
    files beside it.
    """
    folder = Path(maps_csv).parent
    candidates = sorted((folder.parent / "maps").glob("shard-*.npz"))
    return candidates or sorted(folder.glob("*.npz"))


class MapStore:
    """Lazy access to map arrays spread over several ``maps/shard-<k>.npz`` files."""

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike]):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self._files = [np.load(Path(p)) for p in paths]
        self._where = {key: f for f in self._files for key in f.files}

    def __contains__(self, map_id: str) -> bool:
        return map_id in self._where

    def __getitem__(self, map_id: str) -> np.ndarray:
        return np.asarray(self._where[map_id][map_id], dtype=np.float64)

    def close(self) -> None:
        for handle in self._files:
            handle.close()

    def __enter__(self) -> MapStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _with_all(frame: pd.DataFrame, column: str) -> list[tuple[str, pd.DataFrame]]:
    """``("all", frame)`` then one ``(value, subset)`` per sorted value of ``column``."""
    parts = [("all", frame)]
    parts += [(str(k), g) for k, g in sorted(frame.groupby(column, sort=True), key=lambda x: x[0])]
    return parts


def group_combinations(
    frame: pd.DataFrame, keys: Sequence[str]
) -> list[tuple[dict[str, str], pd.DataFrame]]:
    """Every combination of each key's values plus ``"all"``, where data exist."""
    combos: list[tuple[dict[str, str], pd.DataFrame]] = [({}, frame)]
    for key in keys:
        expanded = []
        for values, subset in combos:
            for value, part in _with_all(subset, key):
                expanded.append(({**values, key: value}, part))
        combos = expanded
    return [(values, subset) for values, subset in combos if len(subset)]


def join_answers(maps: pd.DataFrame, answers: pd.DataFrame, keep: Sequence[str]) -> pd.DataFrame:
    """Maps joined with answer columns ``keep`` on ``sample_id`` (the answers' columns win)."""
    overlap = [c for c in keep if c in maps.columns and c != "sample_id"]
    return maps.drop(columns=overlap).merge(answers[list(keep)], on="sample_id", how="inner")
