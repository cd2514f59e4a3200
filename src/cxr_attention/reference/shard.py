"""The ``reference_compat`` rule's table: the reference's numbers beside the corrected ones.

Per sample, the reference's map is rebuilt from the capture (:mod:`~cxr_attention.reference.
attention`) and scored its way (:mod:`~cxr_attention.reference.metrics`, on its inverted Otsu mask,
:mod:`~cxr_attention.reference.masks`); the corrected columns are the metrics of the answer map
that the maps stage wrote (the one the study's statistics use, with every ``maps`` setting:
layers, heads, ``strip_border``), on the project's body mask.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.captures import load_capture
from cxr_attention.io import Failure, InputError, read_table, write_csv, write_failures
from cxr_attention.maps.grid import MapUnavailable
from cxr_attention.metrics.per_map import map_metrics
from cxr_attention.metrics.selection import headline_maps
from cxr_attention.metrics.tables import MAPS_REQUIRED
from cxr_attention.preprocessed import PreprocessTable
from cxr_attention.reference.attention import (
    REFERENCE_LAYERS,
    reference_attention_grid,
    reference_rows,
)
from cxr_attention.reference.masks import (
    model_view_side,
    reference_body_mask,
    reference_model_view,
    runner_body_mask,
)
from cxr_attention.reference.metrics import reference_map_metrics

__all__ = ["REFERENCE_COMPAT_COLUMNS", "corrected_answer_metrics", "run_reference_compat_shard"]

#: The :func:`cxr_attention.metrics.per_map.map_metrics` values of the corrected answer map that
#: sit beside the reference's own numbers.
_CORRECTED_METRICS = (
    "entropy",
    "entropy_normalised",
    "focus",
    "focus_max",
    "inside_body",
    "border_fraction",
)

#: Columns of ``results/<run>/reference_compat/shard-<k>.csv``.
REFERENCE_COMPAT_COLUMNS = [
    "sample_id",
    "dicom_id",
    "question_id",
    "ref_rows",
    "ref_valid",
    "ref_entropy",
    "ref_focus",
    "ref_inside_body",
    "ref_inside_body_runner",
    "ref_inside_body_batch",
    "ref_border_fraction",
    "ref_first_cell_mass",
    "ref_mask_fraction",
    "image_mass",
    "sink_mass",
    *_CORRECTED_METRICS,
    "first_cell_mass",
]


def corrected_answer_metrics(
    answer_map: tuple[np.ndarray, float],
    capture: Mapping[str, np.ndarray],
    body_mask: np.ndarray | None,
) -> dict[str, float]:
    """The corrected pipeline's numbers of one sample, for comparison with the reference's.

    Parameters
    ----------
    answer_map : (ndarray, float)
        The sample's answer map as the maps stage wrote it and its ``image_mass`` (NaN when the
        method has none).
    capture : mapping
        The sample's capture (for the attention on the sink, prompt position 1).
    body_mask : ndarray or None
        The project's body mask.

    Returns
    -------
    dict
        ``image_mass``, ``sink_mass`` (share of the captured rows' attention on prompt position
        1, averaged over layers, heads and rows), ``first_cell_mass`` and the per-map metrics
        ``entropy, entropy_normalised, focus, focus_max, inside_body, border_fraction``
        (:func:`cxr_attention.metrics.per_map.map_metrics`).
    """
    grid, image_mass = answer_map
    text = np.asarray(capture["text_attention"])
    sink_mass = float(text[..., 1].astype(np.float64).mean()) if text.shape[-1] > 1 else math.nan
    metrics = map_metrics(grid, body_mask=body_mask, lung_labels=None)
    values = np.asarray(grid, dtype=np.float64)
    return {
        "image_mass": image_mass,
        "sink_mass": sink_mass,
        "first_cell_mass": float(values.ravel()[0] / values.sum()),
        **{key: metrics[key] for key in _CORRECTED_METRICS},
    }


def _answer_map(
    sample_id: str, answer_maps: pd.DataFrame, stored: Mapping[str, np.ndarray], npz: object
) -> tuple[np.ndarray, float]:
    """The sample's answer map from the maps stage's arrays, and its ``image_mass``."""
    if sample_id not in answer_maps.index:
        raise MapUnavailable("the maps table has no answer map of this sample")
    row = answer_maps.loc[sample_id]
    if row["map_id"] not in stored.files:
        raise MapUnavailable(f"{npz} has no array {row['map_id']}")
    image_mass = pd.to_numeric(pd.Series([row.get("image_mass", "")]), errors="coerce").iloc[0]
    return np.asarray(stored[row["map_id"]]), float(image_mass)


def run_reference_compat_shard(
    *,
    answers_csv: str | os.PathLike,
    captures_dir: str | os.PathLike,
    preprocess_csv: str | os.PathLike,
    maps_csv: str | os.PathLike,
    maps_npz: str | os.PathLike,
    out_csv: str | os.PathLike,
    params: Mapping | None = None,
) -> None:
    """Write the reference's and the corrected pipeline's numbers for every sample of a shard.

    Parameters
    ----------
    answers_csv : path
        Answers table of the shard (``sample_id, dicom_id, question_id``).
    captures_dir : path
        Folder of ``<sample_id>.npz`` captures.
    preprocess_csv : path
        Preprocess table (``dicom_id, image, body_mask``; paths relative to ``params["root"]``).
    maps_csv, maps_npz : path
        The shard's maps table and arrays (the maps stage's outputs): the corrected columns are
        the metrics of each sample's answer map there (:func:`corrected_answer_metrics`).
    out_csv : path
        One row per answers row, columns :data:`REFERENCE_COMPAT_COLUMNS`. Failures (unreadable
        capture, image or mask; a map the reference could not form) are written beside it as
        ``<out>.failures.csv`` and leave NaN in the row.
    params : mapping, optional
        ``root`` (folder of relative paths; default the working directory), ``model_view_side``
        (the processor's image side; default read from ``model_id`` when it is a local model
        folder, else 896), ``model_id``, ``layers`` (reference layers, default 3).
    """
    params = dict(params or {})
    root = Path(params.get("root") or Path.cwd())
    side = int(params.get("model_view_side") or model_view_side(params.get("model_id")))
    n_layers = int(params.get("layers", REFERENCE_LAYERS))
    answers = read_table(answers_csv, required=("sample_id", "dicom_id"), text=True)
    read_table(preprocess_csv, required=("dicom_id", "image", "body_mask"))  # checks columns
    images = PreprocessTable(preprocess_csv, root)
    maps = read_table(maps_csv, required=MAPS_REQUIRED, text=True)
    answer_maps = headline_maps(maps, source="answer", one_per="sample").set_index("sample_id")
    failures: list[Failure] = []
    masks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    with np.load(maps_npz) as stored:
        for record in answers.itertuples(index=False):
            row: dict = dict.fromkeys(REFERENCE_COMPAT_COLUMNS, math.nan)
            row.update(
                sample_id=record.sample_id,
                dicom_id=record.dicom_id,
                question_id=getattr(record, "question_id", ""),
                ref_rows="",
            )
            capture_path = Path(captures_dir) / f"{record.sample_id}.npz"
            try:
                capture = load_capture(capture_path)
                if record.dicom_id not in masks:
                    masks[record.dicom_id] = _image_masks(record.dicom_id, images, side)
                reference_mask, runner_mask, project_mask = masks[record.dicom_id]
                # The two sides fail independently: a one-token answer has no reference map but a
                # corrected one, and the other way round for a map with no image mass.
                try:
                    row.update(
                        corrected_answer_metrics(
                            _answer_map(record.sample_id, answer_maps, stored, maps_npz),
                            capture,
                            project_mask,
                        )
                    )
                except MapUnavailable as error:
                    failures.append(
                        _map_failure(record.dicom_id, capture_path, "corrected", error.reason)
                    )
                n_generated = np.asarray(capture["attention"]).shape[2]
                row["ref_rows"] = "|".join(str(r) for r in reference_rows(n_generated))
                try:
                    grid = reference_attention_grid(capture, n_layers=n_layers)
                    row.update(reference_map_metrics(grid, reference_mask))
                    # The runner's own (non-inverted, largest-contour) mask: the paper's number.
                    on_runner = reference_map_metrics(grid, runner_mask)["ref_inside_body"]
                    row["ref_inside_body_runner"] = on_runner
                except MapUnavailable as error:
                    failures.append(
                        _map_failure(record.dicom_id, capture_path, "reference", error.reason)
                    )
            except InputError as error:
                failures.append(
                    Failure.from_exception("reference_compat", record.dicom_id, error.path, error)
                )
            rows.append(row)
    write_csv(pd.DataFrame(rows, columns=REFERENCE_COMPAT_COLUMNS), out_csv)
    write_failures(failures, _failures_path(out_csv))


def _map_failure(dicom_id: str, path: Path, side: str, reason: str) -> Failure:
    error = InputError(path, f"{side} map: {reason}", error_type=f"{side}_map_unavailable")
    return Failure.from_exception("reference_compat", dicom_id, error.path, error)


def _failures_path(out_csv: str | os.PathLike) -> Path:
    out = Path(out_csv)
    return out.with_name(out.name.removesuffix(".csv") + ".failures.csv")


def _image_masks(
    dicom_id: str, images: PreprocessTable, side: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The batch app's inverted mask (on the model view), the runner's mask (on the image) and
    the project's body mask of one image."""
    if dicom_id not in images:
        raise InputError(
            f"<image of {dicom_id}>", "not in the preprocess table", error_type="missing_image"
        )
    image = images[dicom_id]
    model_view = reference_model_view(image.image(), side=side)
    return (
        reference_body_mask(model_view),
        runner_body_mask(image.image()),
        image.body_mask() > 0,
    )
