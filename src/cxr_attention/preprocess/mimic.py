"""MIMIC-CXR input tables: their files, their columns, and where each image lies in the tree.

Reads the four tables that MIMIC-CXR-JPG v2.x ships beside its ``files/`` tree
(``mimic-cxr-2.0.0-{metadata,chexpert,negbio,split}.csv[.gz]``) and checks their real column names.
A missing table or column is a configuration error: it stops the run at once with a message
naming the file and the column. Which images a study takes, the manifest, is decided by
:mod:`.selection`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cxr_attention.io import ConfigError

__all__ = [
    "CHEXPERT_FINDINGS",
    "LABEL_COLUMNS",
    "LABEL_TABLES",
    "LAYOUT_SUFFIXES",
    "MANIFEST_COLUMNS",
    "METADATA_COLUMNS",
    "NO_FINDING",
    "SPLIT_COLUMNS",
    "TABLE_BASENAMES",
    "MimicTables",
    "find_table",
    "image_path",
    "read_mimic_tables",
]

CHEXPERT_FINDINGS = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
]
"""The 14 CheXpert label columns, in the order of the MIMIC-CXR-JPG tables."""

NO_FINDING = "No Finding"
"""The CheXpert label of a normal study: its question asks whether the image is normal."""

METADATA_COLUMNS = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
LABEL_COLUMNS = ["subject_id", "study_id", *CHEXPERT_FINDINGS]
SPLIT_COLUMNS = ["dicom_id", "study_id", "subject_id", "split"]

TABLE_BASENAMES = {
    "metadata": "mimic-cxr-2.0.0-metadata",
    "chexpert": "mimic-cxr-2.0.0-chexpert",
    "negbio": "mimic-cxr-2.0.0-negbio",
    "split": "mimic-cxr-2.0.0-split",
}
"""Table name -> file name without ``.csv`` / ``.csv.gz``."""

LABEL_TABLES = ("chexpert", "negbio")
LAYOUT_SUFFIXES = {"jpg": ".jpg", "dicom": ".dcm"}
SPLITS = ("train", "validate", "test")
DEFAULT_VIEWS = ("PA", "AP")

MANIFEST_COLUMNS = [
    "dicom_id",
    "subject_id",
    "study_id",
    "split",
    "view_position",
    "image_path",
    "shard",
    *CHEXPERT_FINDINGS,
]

_ID_COLUMNS = ("dicom_id", "subject_id", "study_id")
_LABEL_VALUES = (1.0, 0.0, -1.0)


@dataclass(frozen=True)
class MimicTables:
    """The three tables a selection needs, identifiers as strings.

    Attributes
    ----------
    metadata : pandas.DataFrame
        ``mimic-cxr-2.0.0-metadata``; ``ViewPosition`` blank as ``""``.
    labels : pandas.DataFrame
        ``mimic-cxr-2.0.0-chexpert`` or ``-negbio``; label columns float (1.0, 0.0, -1.0, NaN).
    split : pandas.DataFrame
        ``mimic-cxr-2.0.0-split``.
    labeller : str
        ``"chexpert"`` or ``"negbio"``: which table ``labels`` came from.
    paths : dict of str to pathlib.Path
        The file each table was read from (for messages).
    """

    metadata: pd.DataFrame
    labels: pd.DataFrame
    split: pd.DataFrame
    labeller: str = "chexpert"
    paths: Mapping[str, Path] | None = None


def find_table(root: str | os.PathLike, name: str) -> Path:
    """Path of a MIMIC-CXR table under ``root``: ``.csv.gz`` as downloaded, or ``.csv`` unpacked.

    Parameters
    ----------
    root : path-like
        Folder holding ``files/`` and the ``mimic-cxr-2.0.0-*`` tables.
    name : str
        ``"metadata"``, ``"chexpert"``, ``"negbio"`` or ``"split"``.

    Returns
    -------
    pathlib.Path
        The ``.csv.gz`` file when it exists, else the ``.csv`` file.

    Raises
    ------
    ConfigError
        When neither file exists.
    """
    base = TABLE_BASENAMES[name]
    root = Path(root)
    candidates = [root / f"{base}.csv.gz", root / f"{base}.csv"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"missing MIMIC-CXR table {base}: neither {candidates[0]} nor {candidates[1]} exists"
    )


def _read_table(path: Path, required: Sequence[str], dtypes: Mapping[str, Any]) -> pd.DataFrame:
    """Read a table after checking its header, so a wrong file fails fast with a clear message."""
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise ConfigError(f"{path}: cannot read the table ({error})") from error
    missing = [column for column in required if column not in header]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}")
    try:
        return pd.read_csv(path, dtype=dict(dtypes), keep_default_na=False, na_values=[""])
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise ConfigError(f"{path}: cannot read the table ({error})") from error


def _check_labels(labels: pd.DataFrame, path: Path) -> None:
    """Make the label columns float (in place) and reject anything but 1.0, 0.0, -1.0, blank."""
    for finding in CHEXPERT_FINDINGS:
        raw = labels[finding]
        values = pd.to_numeric(raw, errors="coerce").astype("float64")
        bad = raw.notna() & ~values.isin(_LABEL_VALUES)
        if bad.any():
            raise ConfigError(
                f"{path}: column {finding!r} holds {raw[bad].iloc[0]!r}; "
                "expected 1.0, 0.0, -1.0 or blank"
            )
        labels[finding] = values
    duplicated = labels.duplicated(["subject_id", "study_id"])
    if duplicated.any():
        row = labels.loc[duplicated].iloc[0]
        raise ConfigError(
            f"{path}: study {row['subject_id']}/{row['study_id']} has more than one label row"
        )


def read_mimic_tables(root: str | os.PathLike, *, labels: str = "chexpert") -> MimicTables:
    """Read the metadata, split and one label table of a MIMIC-CXR(-JPG) download.

    Parameters
    ----------
    root : path-like
        Folder holding the ``mimic-cxr-2.0.0-*.csv[.gz]`` tables.
    labels : {"chexpert", "negbio"}
        Which labeller's table to read.

    Returns
    -------
    MimicTables
        Identifiers as strings; ``ViewPosition`` blank as ``""``; label columns float.

    Raises
    ------
    ConfigError
        A table is missing, lacks a required column (named with its file), holds a label other
        than 1.0 / 0.0 / -1.0 / blank, or has two label rows for one study.
    """
    if labels not in LABEL_TABLES:
        raise ConfigError(f"data.labels must be one of {LABEL_TABLES}, not {labels!r}")
    if not Path(root).is_dir():
        raise ConfigError(f"MIMIC-CXR root {root} is not a folder")
    paths = {name: find_table(root, name) for name in ("metadata", "split", labels)}
    id_dtypes = dict.fromkeys(_ID_COLUMNS, str)

    # Only identifiers and ViewPosition are given a type: the other metadata columns keep
    # pandas' inference (Rows and Columns are integers, the descriptions text).
    metadata = _read_table(paths["metadata"], METADATA_COLUMNS, {**id_dtypes, "ViewPosition": str})
    metadata["ViewPosition"] = metadata["ViewPosition"].fillna("").str.strip()
    split = _read_table(paths["split"], SPLIT_COLUMNS, {**id_dtypes, "split": str})
    label_table = _read_table(paths[labels], LABEL_COLUMNS, {"subject_id": str, "study_id": str})
    _check_labels(label_table, paths[labels])
    return MimicTables(metadata, label_table, split, labels, paths)


def image_path(
    root: str | os.PathLike, layout: str, subject_id: str, study_id: str, dicom_id: str
) -> Path:
    """Path of one image in the MIMIC-CXR tree: ``root/files/pNN/pSUBJECT/sSTUDY/DICOM_ID.ext``.

    Parameters
    ----------
    root : path-like
        The download's top folder (holding ``files/``).
    layout : {"jpg", "dicom"}
        MIMIC-CXR-JPG (``.jpg``) or MIMIC-CXR (``.dcm``).
    subject_id, study_id, dicom_id : str
        MIMIC identifiers; ``pNN`` is the first two digits of the subject id.

    Returns
    -------
    pathlib.Path
    """
    suffix = _layout_suffix(layout)
    subject, study = str(subject_id), str(study_id)
    return (
        Path(root)
        / "files"
        / f"p{subject[:2]}"
        / f"p{subject}"
        / f"s{study}"
        / (f"{dicom_id}{suffix}")
    )


def _layout_suffix(layout: str) -> str:
    try:
        return LAYOUT_SUFFIXES[layout]
    except KeyError:
        raise ConfigError(
            f"data.layout must be one of {sorted(LAYOUT_SUFFIXES)}, not {layout!r}"
        ) from None


def _image_paths(root: str | os.PathLike, layout: str, frame: pd.DataFrame) -> pd.Series:
    """:func:`image_path` for every row, with vectorised string operations."""
    suffix = _layout_suffix(layout)
    prefix = Path(root).joinpath("files").as_posix() + "/p"
    subject, study = frame["subject_id"], frame["study_id"]
    return (
        prefix
        + subject.str[:2]
        + "/p"
        + subject
        + "/s"
        + study
        + "/"
        + frame["dicom_id"]
        + (suffix)
    )
