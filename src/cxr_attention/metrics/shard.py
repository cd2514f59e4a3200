"""The per-map metrics of one shard (the workflow's ``map_metrics`` rule).

Reads the shard's maps and each image's masks (through :mod:`cxr_attention.preprocessed`) and
writes one row of :mod:`~cxr_attention.metrics.per_map` metrics per map.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from cxr_attention.io import Failure, InputError, read_table, write_csv, write_failures
from cxr_attention.metrics.catalogue import METRIC_COLUMNS
from cxr_attention.metrics.per_map import (
    MaskGrids,
    _as_distribution,
    mask_grids,
    metrics_from_grids,
)
from cxr_attention.preprocessed import PreprocessedImage, PreprocessTable

__all__ = ["run_metrics_shard"]


def run_metrics_shard(
    *,
    maps_csv: str | os.PathLike,
    maps_npz: str | os.PathLike,
    preprocess_csv: str | os.PathLike,
    out_csv: str | os.PathLike,
    failures_csv: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    ring: int = 1,
    top_fraction: float = 0.05,
) -> None:
    """Compute the per-map metrics of one shard and write them atomically.

    Parameters
    ----------
    maps_csv, maps_npz
        The maps table and its arrays (keyed by ``map_id``).
    preprocess_csv
        The preprocess table: ``dicom_id, body_mask, lung_mask`` (paths relative to ``root``).
    out_csv
        One row per map of ``maps_csv``, in its order, columns
        :data:`~cxr_attention.metrics.catalogue.METRIC_COLUMNS`.
    failures_csv
        Where to write one failures row per map whose masks or array could not be used (optional).
    root
        Folder that relative mask paths start from (default: the current directory, the repo root
        under Snakemake).

    Notes
    -----
    A map whose image has no (readable) masks gets NaN for the mask metrics and the row is still
    written; a map whose array is missing or invalid gets an all-NaN row. Each is a failures row.
    An image whose lung mask is flagged as implausible gets NaN for the lung metrics, and no
    failures row (the flag is in the preprocess table).
    """
    maps = read_table(maps_csv, required=("map_id", "dicom_id"), text=True)
    images = PreprocessTable(preprocess_csv, root)
    failures: list[Failure] = []
    grids_cache: dict[tuple[str, tuple[int, int]], MaskGrids] = {}
    rows = []
    with np.load(maps_npz) as arrays:
        for record in maps.itertuples(index=False):
            map_id, dicom_id = record.map_id, record.dicom_id
            row = dict.fromkeys(METRIC_COLUMNS[1:], math.nan)
            row["map_id"] = map_id
            try:
                if map_id not in arrays.files:
                    raise InputError(maps_npz, f"no array for map {map_id}", error_type="no_map")
                attention_map = arrays[map_id]
                try:
                    values = _as_distribution(attention_map)
                except ValueError as error:
                    raise InputError(
                        maps_npz, f"map {map_id}: {error}", error_type="bad_map"
                    ) from error
                key = (dicom_id, values.shape)
                if key not in grids_cache:
                    grids_cache[key] = _image_grids(images[dicom_id], values.shape, failures)
                row.update(
                    metrics_from_grids(
                        values, grids_cache[key], ring=ring, top_fraction=top_fraction
                    )
                )
            except InputError as error:
                failures.append(Failure.from_exception("metrics", dicom_id, error.path, error))
            rows.append(row)
    write_csv(pd.DataFrame(rows, columns=METRIC_COLUMNS), out_csv)
    if failures_csv is not None:
        write_failures(failures, failures_csv)


def _image_grids(
    image: PreprocessedImage, grid_shape: tuple[int, int], failures: list[Failure]
) -> MaskGrids:
    """The mask grids of one image; a missing or bad mask becomes None and a failures row.

    A lung mask flagged as implausible (``mask_flags``) is left out too: its metrics stay blank.
    """
    body = lungs = None
    try:
        body = _mask_grids(image, grid_shape, "body_mask")
    except InputError as error:
        failures.append(Failure.from_exception("metrics", image.dicom_id, error.path, error))
    if not image.mask_flags:
        try:
            lungs = _mask_grids(image, grid_shape, "lung_mask")
        except InputError as error:
            failures.append(Failure.from_exception("metrics", image.dicom_id, error.path, error))
    return MaskGrids(
        body=body.body if body else None,
        right_lung=lungs.right_lung if lungs else None,
        left_lung=lungs.left_lung if lungs else None,
        upper_lung=lungs.upper_lung if lungs else None,
        lower_lung=lungs.lower_lung if lungs else None,
    )


def _mask_grids(image: PreprocessedImage, grid_shape: tuple[int, int], column: str) -> MaskGrids:
    """The fraction of each token cell inside one of the image's masks (``body_mask`` or
    ``lung_mask``); a mask that does not fit the grid is an ``InputError`` naming its file."""
    body = image.body_mask() if column == "body_mask" else None
    lungs = image.lung_labels() if column == "lung_mask" else None
    try:
        return mask_grids(body, lungs, grid_shape)
    except ValueError as error:
        raise InputError(image.path(column), str(error), error_type="bad_mask") from error
