"""The image-table layout (``data.layout: table``): images that are not laid out as MIMIC-CXR.

VinDr-CXR, CheXpert (CheXlocalize) or NIH images enter the workflow through one CSV, one row per
image:

- ``image_path``: the file (DICOM, JPEG or PNG), relative to ``data.root`` unless absolute;
- ``image_id``: the file's stem, as the annotations name it (becomes ``dicom_id``);
- ``patient_id``: the patient (becomes ``subject_id``, the bootstrap's cluster);
- optional ``study_id`` (default: the image id), ``split`` (``train``, ``validate`` or ``test``;
  default ``test``), ``view_position`` (default blank: keep such images with ``selection.views``
  containing ``""`` or null), and any of the 14 CheXpert label columns (1.0, 0.0, -1.0, blank).

:func:`read_image_table` turns it into the same :class:`~cxr_attention.preprocess.mimic.MimicTables`
the selection reads from MIMIC-CXR's own tables, plus each image's path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.io import ConfigError
from cxr_attention.preprocess.mimic import CHEXPERT_FINDINGS, SPLITS, MimicTables

__all__ = ["IMAGE_TABLE_COLUMNS", "TABLE_LAYOUT", "read_image_table", "table_image_paths"]

TABLE_LAYOUT = "table"
IMAGE_TABLE_COLUMNS = ("image_path", "image_id", "patient_id")
_LABEL_VALUES = (1.0, 0.0, -1.0)


def read_image_table(path: str | os.PathLike) -> MimicTables:
    """The image table ``path`` as MIMIC-like tables; ``metadata`` also holds ``image_path``.

    Raises
    ------
    ConfigError
        The file is missing, lacks a required column, repeats an image id, names an unknown
        split or holds a label other than 1.0 / 0.0 / -1.0 / blank (each named with the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data.table {path} is not a file")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: cannot read the image table ({error})") from error
    missing = [c for c in IMAGE_TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    if table["image_id"].duplicated().any():
        repeated = table.loc[table["image_id"].duplicated(), "image_id"].iloc[0]
        raise ConfigError(f"{path}: image_id {repeated!r} appears twice")
    ids = table["image_id"].str.strip()
    study = table.get("study_id", ids)
    split = table["split"] if "split" in table else pd.Series("test", index=table.index)
    if unknown := sorted(set(split) - set(SPLITS)):
        raise ConfigError(f"{path}: unknown split(s) {unknown}; expected {list(SPLITS)}")
    view = table["view_position"] if "view_position" in table else pd.Series("", index=table.index)
    metadata = pd.DataFrame(
        {
            "dicom_id": ids,
            "subject_id": table["patient_id"].str.strip(),
            "study_id": study.str.strip(),
            "ViewPosition": view.str.strip(),
            "image_path": table["image_path"],
        }
    )
    labels = metadata[["subject_id", "study_id"]].copy()
    for finding in CHEXPERT_FINDINGS:
        column = table[finding] if finding in table else pd.Series("", index=table.index)
        values = pd.to_numeric(column.replace("", np.nan), errors="coerce")
        bad = column.ne("") & ~values.isin(_LABEL_VALUES)
        if bad.any():
            raise ConfigError(
                f"{path}: {finding} of {ids[bad].iloc[0]} is {column[bad].iloc[0]!r}; "
                "labels are 1.0, 0.0, -1.0 or blank"
            )
        labels[finding] = values.astype("float64")
    # One label row per study, as MIMIC's tables have it (the first image's labels).
    labels = labels.drop_duplicates(["subject_id", "study_id"], ignore_index=True)
    split_table = pd.DataFrame({**metadata[["dicom_id", "study_id", "subject_id"]], "split": split})
    return MimicTables(metadata, labels, split_table, "table", {"metadata": path, "split": path})


def table_image_paths(
    root: str | os.PathLike, manifest: pd.DataFrame, tables: MimicTables
) -> pd.Series:
    """Each manifest image's path from the table: absolute as given, else under ``root``."""
    by_id = tables.metadata.set_index("dicom_id")["image_path"]
    given = manifest["dicom_id"].map(by_id)
    return given.map(lambda p: p if Path(p).is_absolute() else (Path(root) / p).as_posix())
