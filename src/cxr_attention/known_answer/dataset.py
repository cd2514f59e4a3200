"""The known-answer dataset: a MIMIC-CXR-JPG download's frontal films, clean and planted.

Every frontal film of the source becomes three images of the same subject, each in a study of its
own (labels are per study): the film itself (clean, a negative), the film with a lesion planted
in the patient's left lung, and with one in the right (`plant_lesion`). They are written in the
MIMIC-CXR-JPG layout with the four tables the workflow reads, so that the workflow reads planted
data exactly as it reads real data:

- ``mimic-cxr-jpg/files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg`` and the ``mimic-cxr-2.0.0-metadata``,
  ``-split``, ``-chexpert`` and ``-negbio`` tables (``.csv.gz``). Labels are the source study's,
  except ``Lung Lesion``: 1 on a planted image, 0 on a clean one (the planted lesion is the truth
  this dataset knows; a source label of the film's own lesion would contradict it), and ``No
  Finding``, 0 on a planted image.
- ``boxes.csv``: one MS-CXR row per planted lesion (`BOX_COLUMNS`).
- ``nodule_questions.csv``: the known-answer model's three questions (`QUESTIONS`) about every
  image, in the reference runner's VQA format (``dicom_id, study_id, question, answer``); the
  side questions' truth is the planted lesion's side.
- ``plantings.csv``: per image, its source film (``source_dicom_id``), ``side`` (``left``,
  ``right`` or ``none`` for the clean copy) and zone, to tell held-out films from training films.
- ``failures.csv``: a film whose lung has no room for a lesion loses that planted copy only.

Clean copies are re-encoded like the planted ones (JPEG, quality `JPEG_QUALITY`), so that clean
and planted copies of a film differ by the lesion alone.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_attention.io import Failure, InputError, atomic_path, write_csv, write_failures
from cxr_attention.known_answer.benchmark import LESION_CONTRAST, LESION_STRIPES, QUESTIONS
from cxr_attention.known_answer.plant import (
    BOX_COLUMNS,
    LESION_CATEGORY,
    NoRoomForLesion,
    box_row,
    plant_lesion,
)
from cxr_attention.preprocess.mimic import NO_FINDING

__all__ = [
    "DATASET_FOLDER",
    "JPEG_QUALITY",
    "PLANTING_COLUMNS",
    "KnownAnswerSettings",
    "planted_variants",
    "write_known_answer_dataset",
]

#: Folder of the MIMIC-CXR-JPG tree inside the dataset's output folder.
DATASET_FOLDER = "mimic-cxr-jpg"
JPEG_QUALITY = 95
SIDES = ("left", "right")
PLANTING_COLUMNS = ["dicom_id", "subject_id", "study_id", "source_dicom_id", "side", "zone"]
_TABLES = ("metadata", "split", "chexpert", "negbio")


@dataclass(frozen=True)
class KnownAnswerSettings:
    """The known-answer benchmark (``known_answer``, config.schema.json)."""

    activate: bool
    source: str
    seed: int


def planted_variants(dicom_id: str, study_id: str) -> dict[str, tuple[str, str]]:
    """(dicom_id, study_id) of a film's clean and planted copies, keyed ``none``/``left``/``right``.

    The clean copy keeps the film's identifiers; a planted copy's are derived from them by a hash
    in MIMIC's formats (40 hex digits in five groups of 8; an 8-digit study id starting with 5).
    """
    variants = {"none": (dicom_id, study_id)}
    for side in SIDES:
        digest = hashlib.sha1(f"{dicom_id}:{side}".encode()).hexdigest()
        planted_id = "-".join(digest[i : i + 8] for i in range(0, 40, 8))
        planted_study = f"5{int(digest, 16) % 10**7:07d}"
        variants[side] = (planted_id, planted_study)
    return variants


def write_known_answer_dataset(
    source: str | os.PathLike, out_dir: str | os.PathLike, *, seed: int
) -> list[Failure]:
    """Write the known-answer dataset of ``source``'s frontal films to ``out_dir``.

    Parameters
    ----------
    source : path
        A MIMIC-CXR-JPG download (``files/`` and the four tables), e.g. ``data/demo/mimic-cxr-jpg``.
    out_dir : path
        Gets ``mimic-cxr-jpg/``, ``boxes.csv``, ``nodule_questions.csv``, ``plantings.csv`` and
        ``failures.csv`` (module docstring).
    seed : int
        Film ``i`` (in metadata order) gets seed ``seed + 2 i`` for its left lesion and
        ``seed + 2 i + 1`` for its right one.

    Returns
    -------
    list of cxr_attention.io.Failure
        The planted copies left out (unreadable film, or a lung without room).
    """
    from cxr_attention.preprocess.decode import decode_image, is_lateral_view
    from cxr_attention.preprocess.mimic import find_table, image_path

    source, out_dir = Path(source), Path(out_dir)
    root = out_dir / DATASET_FOLDER
    tables = {
        name: pd.read_csv(find_table(source, name), dtype={"subject_id": str, "study_id": str})
        for name in _TABLES
    }
    tables["metadata"]["dicom_id"] = tables["metadata"]["dicom_id"].astype(str)
    tables["split"]["dicom_id"] = tables["split"]["dicom_id"].astype(str)
    frontal = tables["metadata"][
        ~tables["metadata"]["ViewPosition"].fillna("").map(is_lateral_view)
    ].reset_index(drop=True)
    rows: dict[str, list] = {name: [] for name in (*_TABLES, "boxes", "plantings", "questions")}
    failures: list[Failure] = []
    for index, film in frontal.iterrows():
        path = image_path(source, "jpg", film.subject_id, film.study_id, film.dicom_id)
        try:
            image, _ = decode_image(path)
        except InputError as error:
            failures.append(Failure.from_exception("plant", film.dicom_id, str(path), error))
            continue
        for side, (dicom_id, study_id) in planted_variants(film.dicom_id, film.study_id).items():
            if side == "none":
                pixels, lesion = image, None
            else:
                try:
                    pixels, lesion = plant_lesion(
                        image,
                        side=side,
                        seed=seed + 2 * index + SIDES.index(side),
                        contrast=LESION_CONTRAST,
                        stripes=LESION_STRIPES,
                    )
                except NoRoomForLesion as error:
                    reason = InputError(path, f"{side} lesion: {error}", error_type="no_room")
                    failures.append(Failure.from_exception("plant", dicom_id, str(path), reason))
                    continue
            out = image_path(root, "jpg", film.subject_id, study_id, dicom_id)
            _write_jpeg(pixels, out)
            _add_tables(rows, tables, film, dicom_id, study_id, has_lesion=lesion is not None)
            rows["plantings"].append(
                [dicom_id, film.subject_id, study_id, film.dicom_id, side, lesion and lesion.zone]
            )
            if lesion is not None:
                rows["boxes"].append(box_row(dicom_id, lesion, image.shape))
            for asks, question in QUESTIONS.items():
                present = lesion is not None and asks in ("any", side)
                rows["questions"].append([dicom_id, study_id, question, "yes" if present else "no"])
    for name in _TABLES:
        frame = pd.DataFrame(rows[name], columns=tables[name].columns)
        _write_gzip_csv(frame, root / f"mimic-cxr-2.0.0-{name}.csv.gz")
    write_csv(pd.DataFrame(rows["boxes"], columns=BOX_COLUMNS), out_dir / "boxes.csv")
    write_csv(pd.DataFrame(rows["plantings"], columns=PLANTING_COLUMNS), out_dir / "plantings.csv")
    write_csv(
        pd.DataFrame(rows["questions"], columns=["dicom_id", "study_id", "question", "answer"]),
        out_dir / "nodule_questions.csv",
    )
    write_failures(failures, out_dir / "failures.csv")
    return failures


def _add_tables(rows, tables, film, dicom_id: str, study_id: str, *, has_lesion: bool) -> None:
    """Append the image's metadata and split rows and its study's label rows."""
    metadata = tables["metadata"]
    rows["metadata"].append(
        metadata[metadata["dicom_id"] == film.dicom_id].iloc[0].to_dict()
        | {"dicom_id": dicom_id, "study_id": study_id}
    )
    split = tables["split"]
    rows["split"].append(
        split[split["dicom_id"] == film.dicom_id].iloc[0].to_dict()
        | {"dicom_id": dicom_id, "study_id": study_id}
    )
    for name in ("chexpert", "negbio"):
        labels = tables[name]
        match = labels[(labels["study_id"] == film.study_id)]
        row = match.iloc[0].to_dict() if len(match) else {"subject_id": film.subject_id}
        row |= {"study_id": study_id, LESION_CATEGORY: 1.0 if has_lesion else 0.0}
        if has_lesion and row.get(NO_FINDING) == 1.0:
            row[NO_FINDING] = 0.0  # a film with a lesion is not normal
        rows[name].append(row)


def _write_jpeg(image: np.ndarray, path: Path) -> None:
    import cv2

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"could not write {path}")


def _write_gzip_csv(frame: pd.DataFrame, path: Path) -> None:
    """A ``.csv.gz`` as MIMIC ships them; no timestamp in the header, so reruns give equal bytes."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, compression={"method": "gzip", "mtime": 0})
