"""Build the embedded demo data in the MIMIC-CXR-JPG and MIMIC-CXR (DICOM) layouts.

Reads real, openly licensed chest radiographs from ``../shared/data/real_cxr`` (beside the
repository) and writes

- ``data/demo/mimic-cxr-jpg/``: ``files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg`` plus the four
  ``mimic-cxr-2.0.0-{metadata,chexpert,negbio,split}.csv.gz`` tables, as MIMIC-CXR-JPG v2.1.0;
- ``data/demo/mimic-cxr/``: the same tree with ``DICOM_ID.dcm`` byte copies of the openly licensed
  DICOMs, plus the same four tables;
- ``data/demo/README.md``: what each file is, where it came from, its licence and credit line, the
  label mapping and the conversion done.

Identifiers (subject, study, dicom ids), study dates and times and the split are made up. Labels
are the source datasets' own labels mapped onto the 14 CheXpert columns; nothing is invented and a
source without a label gives a blank. Rerunning gives identical bytes: JPEG parameters are fixed
and the gzip headers carry no file name and mtime 0.

Usage::

    .venv/bin/python data/demo/make_demo_data.py [--source ../shared/data/real_cxr]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import hashlib
import io
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cxr_attention.preprocess.mimic import (
    CHEXPERT_FINDINGS,
    LABEL_COLUMNS,
    METADATA_COLUMNS,
    SPLIT_COLUMNS,
    TABLE_BASENAMES,
    image_path,
)

__all__ = ["build_demo_data", "main"]

DEMO_DIR = Path(__file__).resolve().parent
REPO_ROOT = DEMO_DIR.parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "real_cxr"

JPEG_QUALITY = 95
MAX_LONG_SIDE = 2048

# Source label -> (CheXpert column, value), per source dataset. A source label that is absent
# from its dataset's map has no CheXpert column (e.g. NIH "Hernia", Montgomery tuberculosis) and
# leaves every column blank, as the CheXpert labeller leaves unmentioned findings blank.
NIH_MAP = {
    "Atelectasis": ("Atelectasis", 1.0),
    "Cardiomegaly": ("Cardiomegaly", 1.0),
    "Consolidation": ("Consolidation", 1.0),
    "Edema": ("Edema", 1.0),
    "Effusion": ("Pleural Effusion", 1.0),
    "Infiltration": ("Lung Opacity", 1.0),
    "Mass": ("Lung Lesion", 1.0),
    "Nodule": ("Lung Lesion", 1.0),
    "Pleural_Thickening": ("Pleural Other", 1.0),
    "Pneumonia": ("Pneumonia", 1.0),
    "Pneumothorax": ("Pneumothorax", 1.0),
    "No Finding": ("No Finding", 1.0),
}
NIH_UNMAPPED = ["Emphysema", "Fibrosis", "Hernia"]
LABEL_MAPS = {
    "nih": NIH_MAP,
    "montgomery": {"normal": ("No Finding", 1.0)},
    "kermany": {"normal": ("No Finding", 1.0), "pneumonia": ("Pneumonia", 1.0)},
    "mhh": {},
    "wikimedia": {"normal": ("No Finding", 1.0)},
    "siim": {"no pneumothorax": ("Pneumothorax", 0.0)},
}
UNMAPPED = {
    "nih": NIH_UNMAPPED,
    "montgomery": ["tuberculosis"],
    "kermany": [],
    "mhh": ["COVID-19 patient"],
    "wikimedia": [],
    "siim": [],
}

DATASET_NAMES = {
    "nih": "NIH ChestX-ray14",
    "montgomery": "Montgomery County TB set",
    "kermany": "Kermany et al. pediatric CXR",
    "mhh": "Hannover Medical School COVID-19 repository",
    "wikimedia": "Wikimedia Commons",
    "siim": "SIIM-ACR Pneumothorax (NIH ChestX-ray14 pixels)",
}

VIEW_CODE_MEANINGS = {"PA": "postero-anterior", "AP": "antero-posterior", "": ""}


@dataclass(frozen=True)
class DemoImage:
    """One demo image: its source file and the made-up MIMIC identifiers it gets."""

    source: str  # path relative to real_cxr/, as in SOURCES.csv's "file" column
    dataset: str  # key into LABEL_MAPS
    subject_index: int  # subjects are numbered; images of one patient share the index
    study_day: int  # days after the subject's first study (orders follow-up studies)
    view_position: str  # "PA", "AP" or "" (the source does not say)
    view_note: str  # why the view is what it is, when SOURCES.csv's view needs reading
    portable: bool  # the source marks a portable / ICU film
    split: str


# The 14 JPEG images. NIH patient 13's four films are one subject with four studies, ordered by
# their NIH follow-up numbers (003 < 004 < 021 < 035).
JPG_IMAGES = [
    DemoImage("images/nih_00000001_000.png", "nih", 0, 0, "PA", "", False, "train"),
    DemoImage("images/nih_00000013_003.png", "nih", 1, 0, "AP", "", False, "train"),
    DemoImage("images/nih_00000013_004.png", "nih", 1, 9, "AP", "", True, "train"),
    DemoImage("images/nih_00000013_021.png", "nih", 1, 181, "PA", "", False, "train"),
    DemoImage("images/nih_00000013_035.png", "nih", 1, 402, "PA", "", False, "train"),
    DemoImage("images/nih_00000032_015.png", "nih", 2, 0, "AP", "", False, "validate"),
    DemoImage("images/nih_00027426_000_512px.png", "nih", 3, 0, "PA", "", False, "test"),
    DemoImage("images/mcu_MCUCXR_0060_0.png", "montgomery", 4, 0, "PA", "", False, "train"),
    DemoImage("images/mcu_MCUCXR_0399_1.png", "montgomery", 5, 0, "PA", "", False, "test"),
    DemoImage(
        "images/mcu_MCUCXR_0251_1.png",
        "montgomery",
        6,
        0,
        "AP",
        'AP lordotic (apical, "LT APICAL" marker) in the source; MIMIC has no lordotic '
        "ViewPosition, so AP",
        False,
        "train",
    ),
    DemoImage("images/kermany_IM-0101-0001.jpeg", "kermany", 7, 0, "AP", "", False, "validate"),
    DemoImage("images/kermany_person1_bacteria_1.jpeg", "kermany", 8, 0, "AP", "", False, "train"),
    DemoImage("images/mhh_27f5a41d.png", "mhh", 9, 0, "PA", "", False, "test"),
    DemoImage("images/wikimedia_normal_PA_21F.png", "wikimedia", 10, 0, "PA", "", False, "train"),
]

# The openly licensed DICOMs, copied byte for byte (never the NEMA file: no stated licence).
DICOM_IMAGES = [
    DemoImage(
        "dicom/siim_nih_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",
        "siim",
        11,
        0,
        "PA",
        "",
        False,
        "train",
    ),
    DemoImage(
        "dicom/nih_gcp_dx_monochrome2_uncompressed.dcm",
        "nih",
        12,
        0,
        "",
        "frontal, but neither the source nor the DICOM header gives PA or AP: ViewPosition "
        "blank, as in MIMIC rows without one",
        False,
        "test",
    ),
]


def subject_id(subject_index: int) -> str:
    """Made-up 8-digit subject id; the leading two digits cycle through 10..19 like MIMIC's pNN."""
    return str((10 + subject_index % 10) * 1_000_000 + subject_index + 1)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def study_id(image: DemoImage) -> str:
    """Made-up 8-digit study id starting with 5, from a hash of the source file name."""
    return "5" + str(int(_digest("study:" + image.source)[:15], 16) % 10**7).zfill(7)


def dicom_id(image: DemoImage) -> str:
    """Made-up dicom id in MIMIC's format: 40 hex digits in five dash-separated groups of 8."""
    digest = _digest("dicom:" + image.source)[:40]
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def study_datetime(image: DemoImage) -> tuple[int, float]:
    """Made-up StudyDate (YYYYMMDD, shifted into 2110-2189 as MIMIC's are) and StudyTime."""
    seed = int(_digest(f"date:{image.subject_index}")[:12], 16)
    first = dt.date(2110, 1, 1) + dt.timedelta(days=seed % (80 * 365))
    day = first + dt.timedelta(days=image.study_day)
    time_seed = int(_digest("time:" + image.source)[:12], 16)
    hours, minutes, seconds = time_seed % 24, (time_seed // 24) % 60, (time_seed // 1440) % 60
    millis = (time_seed // 86400) % 1000
    return int(day.strftime("%Y%m%d")), float(f"{hours:02d}{minutes:02d}{seconds:02d}.{millis:03d}")


def source_labels(dataset: str, labels_text: str) -> list[str]:
    """Split SOURCES.csv's ``labels`` text into the source dataset's own label names."""
    text = labels_text.strip()
    if dataset == "nih":
        # "No Finding (StudyDescription)": the parenthesis says where the label was read.
        return [re.sub(r"\s*\(.*\)$", "", part) for part in text.split("|")]
    if dataset == "montgomery":
        return ["normal"] if text.startswith("normal") else ["tuberculosis"]
    if dataset == "kermany":
        return ["pneumonia"] if text.startswith("pneumonia") else [text]
    if dataset == "mhh":
        return ["COVID-19 patient"]
    if dataset == "wikimedia":
        return ["normal"] if text.startswith("normal") else [text]
    if dataset == "siim":
        return ["no pneumothorax"] if text.startswith("no pneumothorax") else [text]
    raise ValueError(f"unknown dataset {dataset!r}")


def chexpert_row(dataset: str, labels: list[str]) -> dict[str, float]:
    """Map a source's labels onto the 14 CheXpert columns (NaN = blank)."""
    row = dict.fromkeys(CHEXPERT_FINDINGS, np.nan)
    for label in labels:
        if label in LABEL_MAPS[dataset]:
            column, value = LABEL_MAPS[dataset][label]
            row[column] = value
        elif label not in UNMAPPED[dataset]:
            raise ValueError(f"{dataset} label {label!r} has no mapping decision")
    return row


def procedure(image: DemoImage) -> str:
    """Procedure description derived from the view (single frontal films only)."""
    if image.view_position == "AP" and image.portable:
        return "CHEST (PORTABLE AP)"
    return "CHEST (SINGLE VIEW)"


def encode_jpeg(path: Path) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """Decode to 8-bit grayscale, cap the long side, encode as baseline JPEG (quality 95)."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        raise OSError(f"OpenCV cannot read {path}")
    source_size = (gray.shape[0], gray.shape[1])
    scale = MAX_LONG_SIDE / max(gray.shape)
    if scale < 1.0:
        size = (round(gray.shape[1] * scale), round(gray.shape[0] * scale))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        JPEG_QUALITY,
        cv2.IMWRITE_JPEG_OPTIMIZE,
        0,
        cv2.IMWRITE_JPEG_PROGRESSIVE,
        0,
    ]
    ok, buffer = cv2.imencode(".jpg", gray, params)
    if not ok:
        raise OSError(f"OpenCV cannot encode {path}")
    return buffer.tobytes(), source_size, (gray.shape[0], gray.shape[1])


def dicom_size(path: Path) -> tuple[int, int]:
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True)
    return int(header.Rows), int(header.Columns)


def write_gzip_csv(frame: pd.DataFrame, path: Path) -> None:
    """CSV in gzip with no file name and mtime 0 in the header, so reruns give identical bytes."""
    text = frame.to_csv(index=False, lineterminator="\n", na_rep="")
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(text.encode("utf-8"))


def read_sources(source_dir: Path) -> dict[str, dict[str, str]]:
    with open(source_dir / "SOURCES.csv", newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def build_tree(
    images: list[DemoImage], source_dir: Path, out_dir: Path, layout: str
) -> list[dict[str, object]]:
    """Write one layout's image tree and four tables; return a record per image for the README."""
    sources = read_sources(source_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    metadata, labels, split, records = [], [], [], []
    for image in images:
        source = sources[image.source]
        subject, study, dicom = subject_id(image.subject_index), study_id(image), dicom_id(image)
        target = image_path(out_dir, layout, subject, study, dicom)
        target.parent.mkdir(parents=True, exist_ok=True)
        if layout == "jpg":
            data, source_size, (rows, columns) = encode_jpeg(source_dir / image.source)
            target.write_bytes(data)
            conversion = (
                f"{Path(image.source).suffix[1:].upper()} -> grayscale JPEG q{JPEG_QUALITY}"
            )
            if (rows, columns) != source_size:
                conversion += (
                    f", resized {source_size[1]}x{source_size[0]} -> {columns}x{rows} (INTER_AREA)"
                )
        else:
            shutil.copyfile(source_dir / image.source, target)
            rows, columns = dicom_size(target)
            conversion = "none (byte copy)"
        study_date, study_time = study_datetime(image)
        description = procedure(image)
        metadata.append(
            {
                "dicom_id": dicom,
                "subject_id": subject,
                "study_id": study,
                "PerformedProcedureStepDescription": description,
                "ViewPosition": image.view_position,
                "Rows": rows,
                "Columns": columns,
                "StudyDate": study_date,
                "StudyTime": study_time,
                "ProcedureCodeSequence_CodeMeaning": description,
                "ViewCodeSequence_CodeMeaning": VIEW_CODE_MEANINGS[image.view_position],
                # A PA film is taken standing; for AP films the sources do not say.
                "PatientOrientationCodeSequence_CodeMeaning": (
                    "Erect" if image.view_position == "PA" else ""
                ),
            }
        )
        source_label_list = source_labels(image.dataset, source["labels"])
        chexpert = chexpert_row(image.dataset, source_label_list)
        labels.append({"subject_id": subject, "study_id": study, **chexpert})
        split.append(
            {"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": image.split}
        )
        records.append(
            {
                "image": image,
                "source": source,
                "path": target.relative_to(out_dir).as_posix(),
                "source_labels": source_label_list,
                "chexpert": chexpert,
                "conversion": conversion,
                "size": (columns, rows),
            }
        )
    ids = [row["dicom_id"] for row in metadata]
    studies = [row["study_id"] for row in metadata]
    assert len(set(ids)) == len(ids) and len(set(studies)) == len(studies), "id collision"
    # MIMIC's tables are sorted by subject then study; keep the same order.
    metadata_frame = pd.DataFrame(metadata, columns=METADATA_COLUMNS)
    metadata_frame = metadata_frame.sort_values(["subject_id", "study_id", "dicom_id"])
    labels_frame = pd.DataFrame(labels, columns=LABEL_COLUMNS).sort_values(
        ["subject_id", "study_id"]
    )
    split_frame = pd.DataFrame(split, columns=SPLIT_COLUMNS)
    split_frame = split_frame.sort_values(["subject_id", "study_id", "dicom_id"])
    tables = {"metadata": metadata_frame, "split": split_frame}
    # One labelling source per image: CheXpert and NegBio tables carry the same mapped labels.
    tables.update(chexpert=labels_frame, negbio=labels_frame)
    for table, frame in tables.items():
        write_gzip_csv(frame, out_dir / f"{TABLE_BASENAMES[table]}.csv.gz")
    return records


def _label_text(chexpert: dict[str, float]) -> str:
    parts = [f"{k} {v:.1f}" for k, v in chexpert.items() if not np.isnan(v)]
    return "; ".join(parts) if parts else "(all blank)"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_readme(jpg_records: list[dict], dicom_records: list[dict]) -> str:
    """The README beside the data: made-up ids, per-file provenance, label mapping, licences."""
    out = io.StringIO()
    out.write(README_HEAD)
    for title, folder, records in (
        ("MIMIC-CXR-JPG layout (`mimic-cxr-jpg/`)", "mimic-cxr-jpg", jpg_records),
        ("MIMIC-CXR DICOM layout (`mimic-cxr/`)", "mimic-cxr", dicom_records),
    ):
        out.write(f"\n## Files: {title}\n\n")
        out.write(
            "| demo path | source file (`../shared/data/real_cxr/`) | source dataset | view "
            "| source labels | CheXpert / NegBio labels | split | conversion |\n"
        )
        out.write("|---|---|---|---|---|---|---|---|\n")
        for record in records:
            image, source = record["image"], record["source"]
            view = image.view_position or "(blank)"
            if image.view_note:
                view += f" ({image.view_note})"
            out.write(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        f"`{folder}/{record['path']}`",
                        f"`{image.source}`",
                        DATASET_NAMES[image.dataset],
                        view,
                        source["labels"],
                        _label_text(record["chexpert"]),
                        image.split,
                        record["conversion"],
                    )
                )
                + " |\n"
            )
        out.write("\n### Provenance and licence per file\n\n")
        out.write("| demo dicom_id | source repository @ commit : path | licence | notes |\n")
        out.write("|---|---|---|---|\n")
        for record in records:
            source = record["source"]
            dicom = record["path"].rsplit("/", 1)[1].split(".")[0]
            out.write(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (
                        f"`{dicom}`",
                        f"{source['repo']} @ {source['commit'][:12]} : {source['path']}",
                        source["license"],
                        source["notes"],
                    )
                )
                + " |\n"
            )
    out.write(README_MAPPING)
    for dataset, mapping in LABEL_MAPS.items():
        for label, (column, value) in mapping.items():
            out.write(f"| {DATASET_NAMES[dataset]} | {label} | {column} | {value:.1f} |\n")
        for label in UNMAPPED[dataset]:
            out.write(f"| {DATASET_NAMES[dataset]} | {label} | (no CheXpert column) | blank |\n")
    out.write(README_TAIL)
    return out.getvalue()


README_HEAD = """\
# Embedded demo data

Real, openly licensed chest radiographs laid out exactly as the MIMIC-CXR releases are, so that
the workflow runs end to end without credentialed access. **None of these images is from
MIMIC-CXR.** This file and both folders are written by `make_demo_data.py` (run it from the
repository root with `../shared/data/real_cxr` beside the repository; reruns give identical
bytes). Do not edit them by hand.

- `mimic-cxr-jpg/`: MIMIC-CXR-JPG v2.1.0 layout, `files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg` plus
  `mimic-cxr-2.0.0-metadata.csv.gz`, `-chexpert.csv.gz`, `-negbio.csv.gz`, `-split.csv.gz` with the
  real column names and order.
- `mimic-cxr/`: MIMIC-CXR v2.0.0 (DICOM) layout, `files/pNN/pSUBJECT/sSTUDY/DICOM_ID.dcm` plus the
  same four tables. (The real DICOM release ships `cxr-record-list.csv.gz` and friends instead; the
  four tables above are what this project reads, and in practice come from MIMIC-CXR-JPG.)

## What is made up

- **Identifiers.** `subject_id` (8 digits; the first two cycle 10..19 like MIMIC's `pNN` folders),
  `study_id` (8 digits starting with 5) and `dicom_id` (40 hex digits in five groups of 8, MIMIC's
  format) are made up, derived deterministically from the source file names. They do not refer to
  any MIMIC patient. NIH patient 13's four films are one subject with four studies, ordered as the
  NIH follow-up numbers are; every other source patient is its own subject.
- **Dates and times.** `StudyDate` (shifted into 2110-2189, as MIMIC's are) and `StudyTime` are
  made up.
- **Split.** `train` / `validate` / `test` were assigned by hand, per subject (as MIMIC's split is).
- **Procedure and orientation.** `PerformedProcedureStepDescription` and
  `ProcedureCodeSequence_CodeMeaning` are derived from the view: `CHEST (PORTABLE AP)` where the
  source marks a portable film, otherwise `CHEST (SINGLE VIEW)`. `ViewCodeSequence_CodeMeaning` is
  `postero-anterior` / `antero-posterior` from `ViewPosition`.
  `PatientOrientationCodeSequence_CodeMeaning` is `Erect` for PA films and blank otherwise.
- `Rows` and `Columns` are the stored image's real size.
- DICOM headers are untouched: they keep their original (non-MIMIC) patient and UID values.

## What is real

The pixels, and the labels: each source dataset's own labels, mapped onto the 14 CheXpert
columns with the table below. Nothing was read off the images and no label was invented. A
finding the source does not mention is blank, as the CheXpert labeller leaves unmentioned findings
blank; a source with no finding labels gives a row of blanks. Each image has a single source
label set, so `chexpert` and `negbio` carry the same values.

The JPEGs are format conversions: each source PNG/JPEG was decoded to 8-bit grayscale with OpenCV
(`IMREAD_GRAYSCALE`), images with a long side over 2048 px were downscaled with `INTER_AREA` to
2048 px, and the result was encoded as baseline JPEG, quality 95 (MIMIC-CXR-JPG's images are
JPEGs). The DICOMs are byte-for-byte copies.
"""

README_MAPPING = """
## Label mapping (source label -> CheXpert column)

| source dataset | source label | CheXpert / NegBio column | value |
|---|---|---|---|
"""

README_TAIL = """
## Licences and attribution per dataset

- **NIH ChestX-ray14** (`nih_*` images, both DICOMs' pixels). NIH Clinical Center release, no
  restrictions on use; attribution requested. Data: https://nihcc.app.box.com/v/ChestXray-NIHCC.
  Cite: Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale chest
  X-ray database and benchmarks on weakly-supervised classification and localization of common
  thorax diseases. IEEE CVPR 2017. We acknowledge the NIH Clinical Center for providing this data.
  The SIIM DICOM is the SIIM-ACR Pneumothorax Segmentation packaging of an NIH image, as
  redistributed in the torchxrayvision test suite (Apache-2.0 repository); the uncompressed DICOM
  is the Google Cloud Healthcare public DICOM conversion, as redistributed in
  nhsx/covid-chest-imaging-database.
- **Montgomery County chest X-ray set** (`mcu_*`). Released by the U.S. National Library of
  Medicine, public. Cite: Jaeger S, Candemir S, Antani S, Wang YX, Lu PX, Thoma G. Two public chest
  X-ray datasets for computer-aided screening of pulmonary diseases. Quant Imaging Med Surg
  2014;4(6):475-477. The source files had been downscaled to 512 px by the repository author.
- **Kermany et al. pediatric chest X-rays** (`kermany_*`). CC BY 4.0
  (https://creativecommons.org/licenses/by/4.0/). Kermany DS, Zhang K, Goldbaum M. Labeled Optical
  Coherence Tomography (OCT) and Chest X-Ray Images for Classification. Mendeley Data,
  doi:10.17632/rscbjbr9sj.2; Kermany DS et al., Cell 2018;172(5):1122-1131. Changes made: converted
  to grayscale JPEG and downscaled (see the table above).
- **Hannover Medical School COVID-19 image repository** (`mhh_*`). CC BY 3.0
  (https://creativecommons.org/licenses/by/3.0/). Winther HB, et al. COVID-19
  image repository. doi:10.6084/m9.figshare.12275009 (ml-workgroup/covid-19-image-repository).
  Changes made: converted from PNG to grayscale JPEG.
- **Wikimedia Commons** (`wikimedia_normal_PA_21F`). "Normal posteroanterior (PA) chest radiograph
  (X-ray).jpg" by Mikael Haggstrom, CC0 1.0 (public domain dedication); the source file is a
  re-encoded 447x512 copy from m-cahill/clarity.

Not included on purpose: the Radiopaedia lateral views (CC BY-NC-SA, non-commercial), the
CC BY-SA Wikimedia ARDS film (share-alike), lateral views, and the NEMA WG04 DICOM (no stated
licence). Tests may read those from `../shared/data/real_cxr/` directly.
"""


def build_demo_data(source_dir: Path = DEFAULT_SOURCE, demo_dir: Path = DEMO_DIR) -> None:
    """Write both demo layouts and the README from ``source_dir`` (``shared/data/real_cxr``)."""
    jpg_records = build_tree(JPG_IMAGES, source_dir, demo_dir / "mimic-cxr-jpg", "jpg")
    dicom_records = build_tree(DICOM_IMAGES, source_dir, demo_dir / "mimic-cxr", "dicom")
    (demo_dir / "README.md").write_text(render_readme(jpg_records, dicom_records), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="real_cxr folder")
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help="demo folder to write")
    args = parser.parse_args(argv)
    build_demo_data(args.source, args.out)


if __name__ == "__main__":
    main()
