"""Atomic file writers and the failures table shared by every stage.

Every output goes to a temporary file in its destination folder and is then moved into place with
``os.replace``, so that a killed job never leaves a half-written file that a rerun would trust.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "FAILURE_COLUMNS",
    "ConfigError",
    "Failure",
    "InputError",
    "atomic_path",
    "read_failures",
    "read_table",
    "write_csv",
    "write_failures",
    "write_html",
    "write_json",
    "write_npz",
    "write_png",
]

FAILURE_COLUMNS = ["stage", "dicom_id", "path", "error_type", "message"]

# Read once: os.umask can only be read by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

# MIMIC identifiers are digit strings; read as numbers they would lose leading zeros and dtype.
ID_DTYPES = {"dicom_id": str, "subject_id": str, "study_id": str}


class InputError(Exception):
    """One input file cannot be used; the shard records it and goes on."""

    def __init__(self, path: str | os.PathLike, reason: str, *, error_type: str = "bad_input"):
        self.path = str(path)
        self.reason = reason
        self.error_type = error_type
        super().__init__(f"{self.path}: {reason}")


class ConfigError(Exception):
    """The run cannot start: a missing file, column or setting. Stops the run at once."""


@dataclass(frozen=True)
class Failure:
    """One row of a failures table."""

    stage: str
    dicom_id: str
    path: str
    error_type: str
    message: str

    @classmethod
    def from_exception(cls, stage: str, dicom_id: str, path: str, error: BaseException) -> Failure:
        error_type = getattr(error, "error_type", type(error).__name__)
        message = getattr(error, "reason", None) or str(error) or type(error).__name__
        return cls(stage, str(dicom_id), str(path), error_type, message)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def read_table(
    path: str | os.PathLike, *, required: Sequence[str] = (), text: bool = False
) -> pd.DataFrame:
    """Read one of the workflow's CSV tables; a file without a header (a run without rows) is empty.

    Parameters
    ----------
    path : path-like
        The table (``.csv`` or ``.csv.gz``).
    required : sequence of str, optional
        Columns the table must have. A file without any header gets them as empty columns (an
        empty shard is no rows, not an error).
    text : bool, optional
        Every cell as a string and blanks as ``""`` (no NaN). By default only the MIMIC
        identifiers (``dicom_id, subject_id, study_id``) are strings and pandas infers the rest.

    Raises
    ------
    ConfigError
        The file does not exist, or a ``required`` column is missing; the message names the file
        (and the columns).
    """
    if not Path(path).is_file():
        raise ConfigError(f"{path}: file not found")
    options: dict[str, Any] = (
        {"dtype": str, "keep_default_na": False} if text else {"dtype": ID_DTYPES}
    )
    try:
        table = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:  # 0 bytes, or the lone newline an empty frame writes
        return pd.DataFrame(columns=list(required), dtype=str if text else object)
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table atomically, without the index, with a fixed float format (determinism)."""
    with atomic_path(path, ".csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g", lineterminator="\n")


def write_json(data: Any, path: str | os.PathLike) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_html(page: str, path: str | os.PathLike) -> None:
    """Write an HTML page (a report page or section) atomically, UTF-8."""
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(page, encoding="utf-8")


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays to a compressed ``.npz`` atomically (the format ``np.savez_compressed`` writes).

    zlib level 1 rather than numpy's fixed 6: attention probabilities in float16 shrink by about
    45% at any level, and level 1 takes about half the time, which matters when a GPU finishes a
    capture about as fast as one core compresses it. Members carry zip's fixed default timestamp,
    so equal arrays give equal bytes.
    """
    with (
        atomic_path(path, ".npz") as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
    ):
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def write_png(image: np.ndarray, path: str | os.PathLike, *, compression: int = 1) -> None:
    """Write an 8-bit (or 16-bit) grayscale or colour image as PNG atomically.

    ``compression`` is zlib's level (0-9): level 1 writes several times faster than OpenCV's
    default 3 for files a few percent larger, and preprocessing writes three PNGs per image.
    """
    import cv2  # OpenCV is heavy to import; only image stages need it.

    with atomic_path(path, ".png") as tmp:
        if not cv2.imwrite(str(tmp), image, [cv2.IMWRITE_PNG_COMPRESSION, compression]):
            raise OSError(f"OpenCV could not write {path}")


def write_failures(failures: list[Failure], path: str | os.PathLike) -> None:
    frame = pd.DataFrame([asdict(f) for f in failures], columns=FAILURE_COLUMNS)
    write_csv(frame, path)


def read_failures(paths: list[str | os.PathLike], stage_prefix: str = "") -> pd.DataFrame:
    """Concatenate failure tables (missing or empty ones count as no failures).

    ``stage_prefix`` is put before every row's stage: failures of images that are not the
    study's (the head-calibration images) must not count as the study's own.
    """
    frames = [
        pd.read_csv(p, dtype=str, keep_default_na=False)
        for p in paths
        if Path(p).exists() and Path(p).stat().st_size > 0
    ]
    if not frames:
        return pd.DataFrame(columns=FAILURE_COLUMNS)
    table = pd.concat(frames, ignore_index=True)[FAILURE_COLUMNS]
    return table.assign(stage=stage_prefix + table["stage"])


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
