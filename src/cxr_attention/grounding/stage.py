"""The workflow's grounding stage: every map of an annotated image against the annotation.

A map is scored against an annotation when its image is the annotation's (``dicom_id`` = the
annotation's ``image_id``, the image file's stem) and its question asks about the annotation's
finding. Every map method the maps stage wrote counts (the answer's map and each term's). The
maps of an MS-CXR phrase question (:mod:`cxr_attention.grounding.phrases`) are scored against
that phrase's annotation only: the phrase's term map as ``phrase``, the question's answer maps
as ``phrase_answer``. Three baselines are scored beside them on every annotation:

- ``baseline_lungs``: uniform within this image's lungs (its lung mask on the grid);
- ``baseline_lung_prior``: the mean lung-mask grid over every image of the run (where lungs
  usually are, blind to the image);
- ``baseline_random``: ``random_maps`` seeded uniform random maps, scores averaged per annotation.

Scores are summarised per dataset, method and map kind with patient-level bootstrap intervals
(:func:`cxr_attention.metrics.bootstrap.bootstrap_mean`), each dataset with its contamination
note (:data:`cxr_attention.grounding.datasets.CONTAMINATION`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from cxr_attention.geometry import image_to_grid
from cxr_attention.grounding.datasets import (
    CONTAMINATION,
    Annotation,
    read_chexlocalize,
    read_ms_cxr,
    read_nih_boxes,
    read_vindr,
    write_annotation_table,
)
from cxr_attention.grounding.phrases import phrase_term, phrases_of_questions
from cxr_attention.grounding.regions import (
    Region,
    auprc,
    box_iou_q90,
    cnr,
    iou_at_otsu,
    iou_at_threshold,
    lift,
    mass_inside,
    medfocus_boxes,
    medfocus_scores,
    pointing_game,
)
from cxr_attention.io import Failure, InputError, read_table, write_csv, write_failures
from cxr_attention.metrics.bootstrap import bootstrap_mean
from cxr_attention.metrics.tables import MapStore, read_maps
from cxr_attention.preprocessed import PreprocessTable

__all__ = [
    "BASELINES",
    "READERS",
    "SCORE_KEYS",
    "load_annotations",
    "run_grounding",
    "score_map",
    "summarise_scores",
]

logger = logging.getLogger(__name__)
STAGE = "grounding"

READERS = {
    "ms_cxr": read_ms_cxr,
    "chexlocalize": read_chexlocalize,
    "vindr_cxr": read_vindr,
    "nih": read_nih_boxes,
}
BASELINES = ("baseline_lungs", "baseline_lung_prior", "baseline_random")
# Keys of the scores table that identify a row (the rest are metrics).
SCORE_KEYS = (
    "dataset",
    "contamination",
    "annotation_id",
    "image_id",
    "patient_id",
    "finding",
    "phrase",
    "map_id",
    "method",
    "map_kind",
    "term",
)


def load_annotations(files: Mapping[str, str | None]) -> list[Annotation]:
    """Every annotation of the configured files (dataset name -> path; null = not used)."""
    annotations: list[Annotation] = []
    for dataset, path in files.items():
        if path:
            annotations.extend(READERS[dataset](path))
    return annotations


def _metric_names(thresholds: Sequence[float]) -> list[str]:
    names = ["pointing_game", "mass", "area", "lift", "cnr"]
    names += [f"iou_at_{threshold:g}" for threshold in thresholds]
    return [*names, "iou_otsu", "iou_q90", "auprc", "medfocus_iou", "medfocus_f1"]


def score_map(
    grid: np.ndarray,
    region: Region,
    truth_mask: np.ndarray,
    *,
    thresholds: Sequence[float],
) -> dict[str, float]:
    """Every grounding metric of one map against one annotation.

    ``truth_mask`` is the annotation's pixel mask on the canvas MedFocus's protocol runs on.
    """
    row = {
        "pointing_game": pointing_game(grid, region),
        "mass": mass_inside(grid, region),
        "area": region.area,
        "lift": lift(grid, region),
        "cnr": cnr(grid, region),
    }
    for threshold in thresholds:
        row[f"iou_at_{threshold:g}"] = iou_at_threshold(grid, region, threshold)
    row["iou_otsu"] = iou_at_otsu(grid, region)
    row["iou_q90"] = box_iou_q90(grid, region)
    row["auprc"] = auprc(grid, region)
    medfocus = medfocus_scores(medfocus_boxes(grid, truth_mask.shape), truth_mask)
    row["medfocus_iou"] = medfocus["iou"]
    row["medfocus_f1"] = medfocus["f1"]
    return row


def _canvas_mask(annotation: Annotation, max_side: int | None) -> np.ndarray:
    """The annotation's pixel mask, shrunk so that its long side is at most ``max_side``."""
    mask = annotation.mask()
    long_side = max(mask.shape)
    if max_side is None or long_side <= max_side:
        return mask
    scale = max_side / long_side
    size = (max(1, round(mask.shape[1] * scale)), max(1, round(mask.shape[0] * scale)))
    return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)


def _random_grids(seed: int, annotation_id: str, count: int, shape) -> list[np.ndarray]:
    # hashlib, not hash(): the same draws in every process (as the maps' random method).
    digest = hashlib.sha256(f"{seed}:{annotation_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return [rng.random(shape) for _ in range(count)]


def _source_sizes(preprocess_csvs: Sequence[str | os.PathLike]) -> dict[str, tuple[int, int]]:
    """Each preprocessed image's original (width, height): the frame of boxes that omit it."""
    sizes = {}
    for path in preprocess_csvs:
        table = read_table(path, text=True)
        for row in table.to_dict("records"):
            try:
                sizes[row["dicom_id"]] = (int(row["source_width"]), int(row["source_height"]))
            except (KeyError, TypeError, ValueError):
                continue
    return sizes


def _lung_grids(
    image_ids: Sequence[str], tables: Sequence[PreprocessTable], grid_shape, failures: list[Failure]
) -> dict[str, np.ndarray]:
    """Each image's lung mask on the grid (a failures row for an image without a usable one)."""
    grids = {}
    for image_id in image_ids:
        table = next((t for t in tables if image_id in t), None)
        if table is None:
            continue
        try:
            grids[image_id] = image_to_grid(table[image_id].lung_labels() > 0, grid_shape)
        except InputError as error:
            failures.append(Failure.from_exception(STAGE, image_id, error.path, error))
    return grids


def run_grounding(
    *,
    maps_csv: str | os.PathLike,
    maps_npz: Sequence[str | os.PathLike],
    preprocess_csvs: Sequence[str | os.PathLike],
    annotation_files: Mapping[str, str | None],
    scores_csv: str | os.PathLike,
    summary_csv: str | os.PathLike,
    failures_csv: str | os.PathLike,
    annotations_csv: str | os.PathLike,
    thresholds: Sequence[float],
    random_maps: int,
    medfocus_max_side: int | None,
    seed: int,
    bootstrap_samples: int,
    confidence: float,
    contamination: Mapping[str, str] | None = None,
    questions_csv: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Score every map of every annotated image against its annotations; write the tables.

    ``annotations_csv`` gets every annotation of an image of the run (whatever its finding), as
    read, with the frame of boxes that omit it filled from the preprocessed images' source sizes
    (:func:`cxr_attention.grounding.datasets.write_annotation_table`): the app's Checks tab
    outlines them on a manifest image of the run.

    ``contamination`` replaces the built-in note of a dataset (:data:`CONTAMINATION`) where its
    file holds other images than the released ones (the demo's planted boxes).
    ``questions_csv``, the run's question table, tells the phrase questions' maps (scored against
    their own phrase's annotation only) from the finding questions' maps; without it every map
    counts as a finding question's.

    Returns the summary (also written to ``summary_csv``).
    """
    notes = {**CONTAMINATION, **(contamination or {})}
    sizes = _source_sizes(preprocess_csvs)
    annotations = [
        a.sized_as(*sizes[a.image_id]) if a.image_id in sizes else a
        for a in load_annotations(annotation_files)
    ]
    maps = read_maps(maps_csv)
    phrase_of = {}
    if questions_csv is not None:
        phrase_of = phrases_of_questions(read_table(questions_csv, text=True))
    # The phrase a map's question asks about ("" for a finding question).
    maps["question_phrase"] = maps.get("question_id", pd.Series("", index=maps.index)).map(
        lambda question_id: phrase_of.get(question_id, "").casefold()
    )
    tables = [PreprocessTable(path) for path in preprocess_csvs]
    failures: list[Failure] = []
    grid_shape = (16, 16)
    lungs = _lung_grids(sorted(set(maps["dicom_id"])), tables, grid_shape, failures)
    prior = np.mean(list(lungs.values()), axis=0) if lungs else None

    run_images = set(maps["dicom_id"])
    write_annotation_table([a for a in annotations if a.image_id in run_images], annotations_csv)

    rows: list[dict] = []
    with MapStore(maps_npz) as store:
        for annotation in annotations:
            phrase = phrase_term(annotation.phrase).casefold()
            candidates = maps[
                (maps["dicom_id"] == annotation.image_id)
                & (maps["finding"] == annotation.finding)
                & ((maps["question_phrase"] == "") | (maps["question_phrase"] == phrase))
            ]
            if candidates.empty:
                continue
            try:
                region = annotation.region(grid_shape)
                truth = _canvas_mask(annotation, medfocus_max_side)
            except (ValueError, InputError) as error:
                failures.append(_failure(annotation, annotation.annotation_id, "bad_input", error))
                continue
            if not annotation.patient_id:  # the file named no patient: the run's tables do
                subjects = candidates.get("subject_id", pd.Series(dtype=object)).dropna()
                patient = str(subjects.iloc[0]) if len(subjects) else annotation.image_id
                annotation = dataclasses.replace(annotation, patient_id=patient)
            keys = _annotation_keys(annotation, notes)
            scored = []  # (identity, grids)
            for record in candidates.itertuples(index=False):
                if record.map_id not in store:
                    failures.append(_failure(annotation, record.map_id, "missing_map", "no array"))
                    continue
                kind = "answer" if record.source == "answer" else "term"
                if record.question_phrase:
                    kind = "phrase_answer" if kind == "answer" else "phrase"
                identity = {"map_id": record.map_id, "method": record.method}
                identity |= {"map_kind": kind, "term": record.term}
                scored.append((identity, [store[record.map_id]]))
            baselines = {
                "baseline_lungs": [lungs[annotation.image_id]]
                if annotation.image_id in lungs
                else [],
                "baseline_lung_prior": [prior] if prior is not None else [],
                "baseline_random": _random_grids(
                    seed, annotation.annotation_id, random_maps, grid_shape
                ),
            }
            for name, grids in baselines.items():
                if grids:
                    identity = {"map_id": "", "method": name, "map_kind": "baseline", "term": ""}
                    scored.append((identity, grids))
            for identity, grids in scored:
                try:
                    metrics = _mean_scores(grids, region, truth, thresholds)
                except ValueError as error:
                    failures.append(_failure(annotation, identity["map_id"], "bad_map", error))
                    continue
                rows.append({**keys, **identity, **metrics})
    scores = pd.DataFrame(rows, columns=[*SCORE_KEYS, *_metric_names(thresholds)])
    write_csv(scores, scores_csv)
    write_failures(failures, failures_csv)
    summary = summarise_scores(scores, n_boot=bootstrap_samples, confidence=confidence, seed=seed)
    write_csv(summary, summary_csv)
    logger.info(
        "grounding: %d scores, %d annotations", len(scores), scores["annotation_id"].nunique()
    )
    return summary


def _mean_scores(grids, region: Region, truth: np.ndarray, thresholds) -> dict[str, float]:
    """Metrics of one map, or their mean over a baseline's draws."""
    scored = [score_map(grid, region, truth, thresholds=thresholds) for grid in grids]
    return {name: float(np.mean([m[name] for m in scored])) for name in scored[0]}


def _annotation_keys(annotation: Annotation, notes: Mapping[str, str]) -> dict[str, str]:
    return {
        "dataset": annotation.dataset,
        "contamination": notes.get(annotation.dataset, ""),
        "annotation_id": annotation.annotation_id,
        "image_id": annotation.image_id,
        "patient_id": annotation.patient_id,
        "finding": annotation.finding,
        "phrase": annotation.phrase,
    }


def _failure(annotation: Annotation, what: str, error_type: str, error) -> Failure:
    return Failure(STAGE, annotation.image_id, what, error_type, str(error))


def summarise_scores(
    scores: pd.DataFrame, *, n_boot: int, confidence: float, seed: int
) -> pd.DataFrame:
    """Mean of every metric per dataset, method and map kind, with patient-bootstrap intervals.

    Long format: ``dataset, contamination, method, map_kind, metric, value, ci_low, ci_high, n
    (scores), n_patients``. A method's maps of several terms of one annotation all count.
    """
    metrics = [c for c in scores.columns if c not in SCORE_KEYS]
    rows = []
    groups = scores.groupby(["dataset", "contamination", "method", "map_kind"], sort=True)
    for (dataset, contamination, method, kind), group in groups:
        for metric in metrics:
            values = pd.to_numeric(group[metric], errors="coerce").to_numpy(np.float64)
            estimate = bootstrap_mean(
                values,
                group["patient_id"].tolist(),
                n_boot=n_boot,
                confidence=confidence,
                seed=seed,
            )
            rows.append(
                {
                    "dataset": dataset,
                    "contamination": contamination,
                    "method": method,
                    "map_kind": kind,
                    "metric": metric,
                    "value": estimate.value,
                    "ci_low": estimate.ci_low,
                    "ci_high": estimate.ci_high,
                    "n": estimate.n,
                    "n_patients": estimate.n_clusters,
                }
            )
    columns = ["dataset", "contamination", "method", "map_kind", "metric", "value"]
    return pd.DataFrame(rows, columns=[*columns, "ci_low", "ci_high", "n", "n_patients"])
