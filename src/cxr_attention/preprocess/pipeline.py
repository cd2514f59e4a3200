"""Per-image preprocessing: decode, mask, write; and the loops over a shard or a list of paths.

For each input this writes, all at the size of ``<stem>.png``:

- ``<stem>.png``: 8-bit grayscale radiograph (long side capped by ``max_side``),
- ``<stem>.json``: what was done (source size, photometric, windowing, scale, mask summary),
- ``<stem>_body.png``: body mask, 0/255,
- ``<stem>_lungs.png``: lung labels, 0 background, 1 patient's right, 2 patient's left.

Each lung mask is checked for plausibility (:mod:`.mask_quality`); the table's ``mask_ok`` and
``mask_flags`` say whether it passed and why not, so that the lung metrics can leave it out.

A file that cannot be used raises :class:`cxr_attention.io.InputError` in
:func:`preprocess_image`; both loops (:func:`preprocess_shard`, :func:`preprocess_paths`) turn it,
or any unforeseen error of one file (logged with its traceback), into a
:class:`cxr_attention.io.Failure` row and go on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_attention.io import (
    Failure,
    InputError,
    write_csv,
    write_failures,
    write_json,
    write_png,
)
from cxr_attention.preprocess.decode import DICOM_SUFFIXES, IMAGE_SUFFIXES
from cxr_attention.progress import Progress, loud_warning

logger = logging.getLogger(__name__)

__all__ = [
    "INPUT_SUFFIXES",
    "SHARD_COLUMNS",
    "find_inputs",
    "preprocess_image",
    "preprocess_paths",
    "preprocess_shard",
    "run_preprocess_shard",
    "unique_stems",
]

SHARD_COLUMNS = [
    "dicom_id",
    "image",
    "meta",
    "body_mask",
    "lung_mask",
    "width",
    "height",
    "source_width",
    "source_height",
    "scale",
    "mask_ok",
    "mask_flags",
]
INPUT_SUFFIXES = DICOM_SUFFIXES + IMAGE_SUFFIXES
STAGE = "preprocess"


def preprocess_image(
    source_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    stem: str,
    *,
    max_side: int | None = 1024,
    view: str | None = None,
) -> dict[str, Any]:
    """Decode one radiograph, compute its masks and write the four output files atomically.

    Parameters
    ----------
    source_path : str or os.PathLike
        DICOM, JPEG or PNG file.
    out_dir : str or os.PathLike
        Output folder (created if needed).
    stem : str
        Base name of the outputs.
    max_side : int or None
        Cap on the long side of the written image; ``None`` keeps the source size.
    view : str, optional
        View position known from elsewhere (e.g. the manifest); a lateral view is refused like a
        DICOM whose own ``ViewPosition`` says lateral.

    Returns
    -------
    dict
        ``stem, image, meta, body_mask, lung_mask, width, height, source_width, source_height,
        scale, mask_ok, mask_flags`` (paths as strings under ``out_dir``; ``mask_flags`` the
        ``;``-separated reasons the lung mask is implausible, empty when ``mask_ok``).

    Raises
    ------
    cxr_attention.io.InputError
        The file cannot be decoded (see :mod:`.decode`) or is a lateral view (``wrong_view``).
    """
    from cxr_attention.preprocess.decode import decode_image, is_lateral_view
    from cxr_attention.preprocess.mask_quality import check_lung_mask
    from cxr_attention.preprocess.masks import body_mask, lung_mask

    image, meta = decode_image(source_path, max_side=max_side)
    for label, value in (("DICOM ViewPosition", meta.get("view_position")), ("view", view)):
        if is_lateral_view(value):
            raise InputError(
                source_path,
                f"{label} is {value!r}: a lateral film, only frontal (PA/AP) views are used",
                error_type="wrong_view",
            )
    body = body_mask(image)
    lungs = lung_mask(image, body)
    quality = check_lung_mask(lungs, body)
    if not quality.ok:
        logger.warning("%s: implausible lung mask (%s)", stem, quality.flag_text)

    out_dir = Path(out_dir)
    paths = {
        "image": out_dir / f"{stem}.png",
        "meta": out_dir / f"{stem}.json",
        "body_mask": out_dir / f"{stem}_body.png",
        "lung_mask": out_dir / f"{stem}_lungs.png",
    }
    meta = {**meta, "max_side": max_side, "masks": _mask_summary(body, lungs, quality)}
    write_png(image, paths["image"])
    write_png(body.astype(np.uint8) * 255, paths["body_mask"])
    write_png(lungs.astype(np.uint8), paths["lung_mask"])
    write_json(meta, paths["meta"])
    row: dict[str, Any] = {"stem": stem, **{key: str(path) for key, path in paths.items()}}
    for key in ("width", "height", "source_width", "source_height", "scale"):
        row[key] = meta[key]
    row["mask_ok"] = quality.ok
    row["mask_flags"] = quality.flag_text
    return row


def _attempt(
    source_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    stem: str,
    failures: list[Failure],
    **options: Any,
) -> dict[str, Any] | None:
    """:func:`preprocess_image`, or None with a failures row (``dicom_id`` = ``stem``)."""
    try:
        return preprocess_image(source_path, out_dir, stem, **options)
    except InputError as error:
        failures.append(Failure.from_exception(STAGE, stem, str(source_path), error))
    except Exception as error:  # an unforeseen defect of one file must not end the loop
        logger.exception("unexpected error on %s", source_path)
        failures.append(Failure.from_exception(STAGE, stem, str(source_path), error))
    return None


def preprocess_shard(
    manifest: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    max_side: int | None = 1024,
) -> tuple[pd.DataFrame, list[Failure]]:
    """Preprocess every row of a manifest shard; bad files become failure rows.

    Parameters
    ----------
    manifest : pandas.DataFrame
        Needs ``dicom_id`` and ``image_path``; ``view_position`` is used when present.
    out_dir : str or os.PathLike
        Folder for the per-image files (``<dicom_id>.png`` and so on).
    max_side : int or None
        Cap on the long side of the written images.

    Returns
    -------
    table : pandas.DataFrame
        One row per finished image, columns :data:`SHARD_COLUMNS`.
    failures : list of cxr_attention.io.Failure
        One per image that could not be used (stage ``preprocess``).
    """
    missing = [c for c in ("dicom_id", "image_path") if c not in manifest.columns]
    if missing:
        raise KeyError(f"manifest lacks column(s) {', '.join(missing)}")
    rows: list[dict[str, Any]] = []
    failures: list[Failure] = []
    has_view = "view_position" in manifest.columns
    progress = Progress("preprocess", total=len(manifest))
    for record in manifest.itertuples(index=False):
        dicom_id = str(record.dicom_id)
        view = getattr(record, "view_position", None) if has_view else None
        view = None if view is None or pd.isna(view) else str(view)
        row = _attempt(record.image_path, out_dir, dicom_id, failures, max_side=max_side, view=view)
        if row is not None:
            row["dicom_id"] = dicom_id
            rows.append(row)
        progress.step()
    return pd.DataFrame(rows, columns=SHARD_COLUMNS), failures


def run_preprocess_shard(
    *,
    manifest_csv: str | os.PathLike,
    shard: int,
    out_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    failures_csv: str | os.PathLike,
    max_side: int | None = 1024,
) -> None:
    """The workflow's ``preprocess`` job: one shard of the manifest, its table and failures."""
    from cxr_attention.workflow import read_shard

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    manifest = read_shard(manifest_csv, shard)
    table, failures = preprocess_shard(manifest, out_dir, max_side=max_side)
    if len(manifest) and table.empty:
        loud_warning(
            "preprocess shard %s: none of its %d images could be used (%s); see %s",
            shard,
            len(manifest),
            ", ".join(sorted({failure.error_type for failure in failures})),
            failures_csv,
        )
    flagged = int((~table["mask_ok"].astype(bool)).sum())
    logger.info(
        "shard %s: %d images preprocessed, %d failed, %d with implausible lung masks",
        shard,
        len(table),
        len(failures),
        flagged,
    )
    write_csv(table, out_csv)
    write_failures(failures, failures_csv)


def preprocess_paths(
    paths: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    max_side: int | None = 1024,
) -> tuple[pd.DataFrame, list[Failure]]:
    """The ``cxr-attention preprocess PATH... --out DIR`` command.

    Parameters
    ----------
    paths : list of str or os.PathLike
        Files, or folders searched recursively for DICOM, JPEG and PNG files.
    out_dir : str or os.PathLike
        Output folder; gets the four files per input, ``preprocess.csv`` (one row per image
        written, :data:`SHARD_COLUMNS` with ``stem`` for ``dicom_id``) and ``failures.csv``
        (always written, header only when nothing failed).
    max_side : int or None
        Cap on the long side of the written images.

    Returns
    -------
    table : pandas.DataFrame
        The rows of ``preprocess.csv``.
    failures : list of cxr_attention.io.Failure
        One per input that could not be used.

    Raises
    ------
    ValueError
        No input file was found (a usage error: the command exits 2).
    """
    inputs = find_inputs(paths)
    if not inputs:
        raise ValueError(
            "no DICOM, JPEG or PNG inputs found in: " + ", ".join(str(p) for p in paths)
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures: list[Failure] = []
    rows = []
    progress = Progress("preprocess", total=len(inputs))
    for path, stem in zip(inputs, unique_stems(inputs), strict=True):
        row = _attempt(path, out_dir, stem, failures, max_side=max_side)
        if row is not None:
            rows.append(row)
        progress.step()
    columns = ["stem", *SHARD_COLUMNS[1:]]
    table = pd.DataFrame(rows, columns=columns)
    write_csv(table, out_dir / "preprocess.csv")
    write_failures(failures, out_dir / "failures.csv")
    return table, failures


def find_inputs(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a sorted, duplicate-free list of input files.

    A named file is taken whatever its suffix (so that a bad file is reported, not skipped);
    folders contribute, recursively, their files with a DICOM, JPEG or PNG suffix and the DICOM
    files named otherwise (see `_is_folder_input`).
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and _is_folder_input(p)))
        elif path.is_file():
            found.append(path)
        else:
            raise ValueError(f"input path does not exist: {path}")
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path.resolve(), None)
    return list(unique)


def _is_folder_input(path: Path) -> bool:
    """Whether a file found in a folder is an input.

    A DICOM, JPEG or PNG suffix, or the DICOM marker (``DICM`` at byte 128): PACS exports name
    files ``IM0001`` or by UID (``1.2.840....``). Hidden files and ``DICOMDIR`` (the index of a
    DICOM folder, with no image) are not.
    """
    if path.name.startswith(".") or path.name.upper() == "DICOMDIR":
        return False
    if path.suffix.lower() in INPUT_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False  # unreadable, and not named as an image: not ours to report


def unique_stems(paths: list[Path]) -> list[str]:
    """File names without suffix, made unique deterministically (``name``, ``name-2``, ...)."""
    stems: list[str] = []
    seen: dict[str, int] = {}
    taken = {p.stem for p in paths}
    for path in paths:
        stem = path.stem
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        candidate = stem if count == 1 else f"{stem}-{count}"
        while count > 1 and candidate in taken:
            count += 1
            seen[stem] = count
            candidate = f"{stem}-{count}"
        taken.add(candidate)
        stems.append(candidate)
    return stems


def _mask_summary(body: np.ndarray, lungs: np.ndarray, quality) -> dict[str, Any]:
    total = body.size
    right, left = np.count_nonzero(lungs == 1), np.count_nonzero(lungs == 2)
    return {
        "body_fraction": round(float(np.count_nonzero(body)) / total, 6),
        "lung_fraction": round(float(right + left) / total, 6),
        "right_lung_fraction": round(float(right) / total, 6),
        "left_lung_fraction": round(float(left) / total, 6),
        "labels": {"0": "background", "1": "patient right lung", "2": "patient left lung"},
        "quality": {
            "lung_share_of_body": quality.lung_share,
            "lower_border_cover": quality.lower_border_cover,
            "lung_ratio": quality.lung_ratio,
            "components": quality.components,
            "flags": list(quality.flags),
        },
    }
