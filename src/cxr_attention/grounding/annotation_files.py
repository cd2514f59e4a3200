"""Reading the annotation files' CSVs, and MS-CXR's format, with pandas alone.

Kept apart from the readers of :mod:`cxr_attention.grounding.datasets` (which build regions on
the grid) so that the ``questions`` rule, which reads MS-CXR's phrases
(:mod:`cxr_attention.grounding.phrases`), does not depend on the grounding metrics: an edit to
them reruns the grounding stage, not the model.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from cxr_attention.io import InputError

__all__ = [
    "MS_CXR_COLUMNS",
    "MS_CXR_FINDINGS",
    "MS_CXR_REQUIRED_COLUMNS",
    "ms_cxr_finding",
    "ms_cxr_groups",
    "numeric_columns",
    "read_annotation_csv",
]

MS_CXR_COLUMNS = (
    "dicom_id",
    "category_name",
    "label_text",
    "path",
    "x",
    "y",
    "w",
    "h",
    "image_width",
    "image_height",
)
# What an MS-CXR-format file must hold: `path` only gives the patient (`plant` writes no path).
MS_CXR_REQUIRED_COLUMNS = tuple(column for column in MS_CXR_COLUMNS if column != "path")

# Dataset label -> the question bank's finding. MS-CXR's eight categories are CheXpert names.
MS_CXR_FINDINGS = {
    name: name
    for name in (
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Lung Opacity",
        "Pleural Effusion",
        "Pneumonia",
        "Pneumothorax",
    )
}


def ms_cxr_finding(category: str) -> str:
    """The bank's finding of an MS-CXR category; one outside the eight (a planted file's) is kept
    as its own finding name."""
    return MS_CXR_FINDINGS.get(category, category)


def read_annotation_csv(
    path: str | os.PathLike, columns: tuple[str, ...], **kwargs
) -> pd.DataFrame:
    """An annotation CSV; InputError naming the file when unreadable or missing ``columns``."""
    try:
        frame = pd.read_csv(path, **kwargs)
    except (OSError, ValueError) as error:
        raise InputError(path, f"cannot read the CSV: {error}") from error
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise InputError(path, f"missing columns {missing}; found {list(frame.columns)}")
    return frame


def numeric_columns(frame: pd.DataFrame, columns, path) -> pd.DataFrame:
    """``columns`` as numbers; InputError naming the file's first row with a non-number."""
    values = frame[list(columns)].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(path, f"row {row + 2}: non-numeric {list(columns)}")
    return values


def ms_cxr_groups(path: str | os.PathLike) -> list[tuple[tuple[str, str, str], pd.DataFrame]]:
    """MS-CXR's rows grouped by ``(dicom_id, category_name, label_text)``, in file order.

    Each group's rows are its boxes (numeric ``x, y, w, h, image_width, image_height``) with
    ``path`` (blank when the file has none).
    """
    frame = read_annotation_csv(path, MS_CXR_REQUIRED_COLUMNS, dtype={"dicom_id": str, "path": str})
    if "path" not in frame.columns:
        frame["path"] = ""
    numbers = numeric_columns(frame, ("x", "y", "w", "h", "image_width", "image_height"), path)
    frame = frame.assign(**numbers)
    groups = frame.groupby(["dicom_id", "category_name", "label_text"], sort=False)
    return [((str(d), str(c), str(t)), rows) for (d, c, t), rows in groups]
