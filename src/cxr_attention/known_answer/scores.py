"""Known-answer scores: the answers and the maps of the planted films against what was planted.

Per map of a known-answer question (`QUESTIONS`) on a planted film, against the lesion's box
(``boxes.csv``, MS-CXR's format) as a region of the token grid
(`cxr_attention.grounding.regions.region_from_boxes`: the box pooled onto the grid under the
squash geometry, `cxr_attention.geometry.image_to_grid`):

- ``pointing_game``: share of the map's maximum inside the box (`regions.pointing_game`);
- ``mass_inside``, ``area_share`` and ``lift`` (mass over area share; 1 for a uniform map);
- ``correct_side_mass``: the share of the map's in-lung mass in the lung that holds the lesion,
  from the per-map lung-side metric the study already computes (``left_right``, the patient's
  left share of the in-lung mass, `cxr_attention.metrics.per_map`; NaN when the lung mask is
  flagged). So it counts lung pixels only, not grid halves.

Accuracy: the parsed answers' correctness (`cxr_attention.metrics.tables.read_answers`) of the
three questions on planted and clean films. Films held out from training are those of
`cxr_attention.known_answer.train.demo_films`; every estimate has a 95% cluster-bootstrap
interval over patients (`cxr_attention.metrics.bootstrap.bootstrap_mean`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from cxr_attention.grounding.regions import (
    area_share,
    lift,
    mass_inside,
    pointing_game,
    region_from_boxes,
)
from cxr_attention.known_answer.benchmark import QUESTIONS
from cxr_attention.metrics.bootstrap import bootstrap_mean

__all__ = [
    "ACCURACY_TARGETS",
    "MAP_SCORES",
    "SUMMARY_COLUMNS",
    "answer_scores",
    "lesion_map_scores",
    "map_scores",
    "summarise",
]

#: Per-map known-answer scores, in table order.
MAP_SCORES = ("pointing_game", "mass_inside", "area_share", "lift", "correct_side_mass")
#: Accuracy the known-answer model must reach on held-out films (issue 16), per question kind.
ACCURACY_TARGETS = {"any": 0.9, "side": 0.8}
SUMMARY_COLUMNS = [
    "table",
    "films",
    "row",
    "statistic",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "n_patients",
]
_ASKS = {question: asks for asks, question in QUESTIONS.items()}


def lesion_map_scores(
    grid_map: np.ndarray, box: Mapping, grid_shape: tuple[int, int] = (16, 16)
) -> dict[str, float]:
    """Pointing game, mass inside, area share and lift of one map against one MS-CXR box row."""
    region = region_from_boxes(
        [box["x"], box["y"], box["w"], box["h"]],
        int(box["image_width"]),
        int(box["image_height"]),
        grid_shape,
    )
    return {
        "pointing_game": pointing_game(grid_map, region),
        "mass_inside": mass_inside(grid_map, region),
        "area_share": area_share(region),
        "lift": lift(grid_map, region),
    }


def _known_answer_samples(answers: pd.DataFrame, plantings: pd.DataFrame, held_out: Iterable[str]):
    """The answers to the three questions, with each image's planting and held-out flag."""
    asked = answers[answers["question"].isin(_ASKS)].copy()
    asked["asks"] = asked["question"].map(_ASKS)
    planting = plantings[["dicom_id", "source_dicom_id", "side"]].astype(str)
    asked = asked.merge(planting, on="dicom_id", how="inner")
    asked["held_out"] = asked["source_dicom_id"].isin(set(held_out))
    return asked


def map_scores(
    answers: pd.DataFrame,
    maps: pd.DataFrame,
    arrays: Mapping[str, np.ndarray],
    boxes: pd.DataFrame,
    plantings: pd.DataFrame,
    held_out: Iterable[str],
) -> pd.DataFrame:
    """One row per map of a known-answer question on a planted film, with `MAP_SCORES`.

    Parameters
    ----------
    answers : pandas.DataFrame
        The gathered answers (`read_answers`).
    maps : pandas.DataFrame
        The gathered maps with their per-map metrics (`read_maps`; ``left_right`` is used).
    arrays : mapping of map_id to ndarray
        The maps themselves (the maps stage's ``.npz`` files).
    boxes, plantings : pandas.DataFrame
        The known-answer dataset's ``boxes.csv`` and ``plantings.csv``.
    held_out : iterable of str
        ``dicom_id`` of the source films not used in training.
    """
    samples = _known_answer_samples(answers, plantings, held_out)
    samples = samples[samples["side"] != "none"]
    keep = ["sample_id", "subject_id", "question", "asks", "source_dicom_id", "side", "held_out"]
    joined = maps.drop(columns=[c for c in keep if c in maps and c != "sample_id"]).merge(
        samples[keep], on="sample_id", how="inner"
    )
    box_by_image = boxes.drop_duplicates("dicom_id").set_index("dicom_id")
    rows = []
    for row in joined.itertuples(index=False):
        grid = arrays[row.map_id]
        scores = lesion_map_scores(grid, box_by_image.loc[row.dicom_id], grid.shape)
        left_share = float(row.left_right)
        scores["correct_side_mass"] = left_share if row.side == "left" else 1.0 - left_share
        rows.append({**row._asdict(), **scores})
    columns = [
        "map_id",
        "sample_id",
        "dicom_id",
        *keep[1:],
        "term",
        "source",
        "method",
        *MAP_SCORES,
    ]
    return pd.DataFrame(rows, columns=columns)


def answer_scores(
    answers: pd.DataFrame, plantings: pd.DataFrame, held_out: Iterable[str]
) -> pd.DataFrame:
    """The known-answer questions' answers: ``asks``, ``planted``, ``held_out``, ``correctness``."""
    samples = _known_answer_samples(answers, plantings, held_out)
    samples["planted"] = samples["side"] != "none"
    columns = ["sample_id", "dicom_id", "subject_id", "question", "asks", "side", "planted"]
    return samples[[*columns, "held_out", "answer", "expected", "correctness", "p_yes"]]


def summarise(
    answer_rows: pd.DataFrame,
    map_rows: pd.DataFrame,
    *,
    methods: Sequence[str],
    n_boot: int,
    confidence: float,
    seed: int,
) -> pd.DataFrame:
    """The known-answer table (`SUMMARY_COLUMNS`), for held-out films and for every film.

    ``accuracy`` rows: per question kind (``any`` or ``side``) on planted and on clean films.
    ``maps`` rows: per map method (in ``methods`` order), the answer maps' `MAP_SCORES` means;
    ``correct_side_mass`` over the side questions' maps only.
    """
    rows = []
    for films, held_out_only in (("held out", True), ("all", False)):
        answers = (
            answer_rows[answer_rows["held_out"].astype(bool)] if held_out_only else answer_rows
        )
        for kind in ("any", "side"):
            for planted in (True, False):
                chosen = answers[
                    (answers["asks"] == kind if kind == "any" else answers["asks"] != "any")
                    & (answers["planted"].astype(bool) == planted)
                ]
                label = f"{kind} question, {'planted' if planted else 'clean'} films"
                rows.append(
                    _estimate(
                        "accuracy",
                        films,
                        label,
                        "accuracy",
                        chosen,
                        "correctness",
                        n_boot,
                        confidence,
                        seed,
                    )
                )
        maps = map_rows[map_rows["held_out"].astype(bool)] if held_out_only else map_rows
        maps = maps[maps["source"] == "answer"]
        for method in methods:
            of_method = maps[maps["method"] == method]
            for score in MAP_SCORES:
                chosen = (
                    of_method[of_method["asks"] != "any"]
                    if score == "correct_side_mass"
                    else of_method
                )
                rows.append(
                    _estimate("maps", films, method, score, chosen, score, n_boot, confidence, seed)
                )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _estimate(table, films, row, statistic, frame, column, n_boot, confidence, seed) -> dict:
    estimate = bootstrap_mean(
        pd.to_numeric(frame[column], errors="coerce").to_numpy(),
        frame["subject_id"].astype(str).to_numpy(),
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
    )
    return {
        "table": table,
        "films": films,
        "row": row,
        "statistic": statistic,
        "value": estimate.value,
        "ci_low": estimate.ci_low,
        "ci_high": estimate.ci_high,
        "n": estimate.n,
        "n_patients": estimate.n_clusters,
    }
