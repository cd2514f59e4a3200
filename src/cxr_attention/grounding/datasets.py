"""Readers of the radiologists' annotations, each in its released format, as :class:`Annotation`.

One annotation is one finding marked on one image: MS-CXR's phrase with its boxes, one CheXlocalize
segmentation, the union of VinDr-CXR's boxes of one class, NIH's boxes of one label. Each carries
the project's finding name (the question bank's CheXpert names, ``config/questions.yaml``) mapped
from the dataset's label; labels with no counterpart are dropped and counted. Files and columns
are in ``docs/grounding.md``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cxr_attention.grounding.annotation_files import (
    MS_CXR_COLUMNS,
    MS_CXR_FINDINGS,
    MS_CXR_REQUIRED_COLUMNS,
    ms_cxr_finding,
    ms_cxr_groups,
)
from cxr_attention.grounding.annotation_files import numeric_columns as _numbers
from cxr_attention.grounding.annotation_files import read_annotation_csv as _read_csv
from cxr_attention.grounding.regions import (
    Region,
    box_pixel_weights,
    boxes_pixel_mask,
    region_from_boxes,
)
from cxr_attention.grounding.regions import region_from_mask as _region_from_mask
from cxr_attention.io import ConfigError, InputError, read_table, write_csv

__all__ = [
    "ANNOTATION_TABLE_COLUMNS",
    "CHEXLOCALIZE_FINDINGS",
    "CONTAMINATION",
    "MS_CXR_COLUMNS",
    "MS_CXR_FINDINGS",
    "MS_CXR_REQUIRED_COLUMNS",
    "NIH_FINDINGS",
    "NIH_IMAGE_SIDE",
    "VINDR_COLUMNS",
    "VINDR_FINDINGS",
    "Annotation",
    "read_annotation_table",
    "read_chexlocalize",
    "read_ms_cxr",
    "read_nih_boxes",
    "read_vindr",
    "write_annotation_table",
]

VINDR_COLUMNS = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")
# NIH's released images are all 1024 x 1024 PNGs, the frame of BBox_List_2017.csv.
NIH_IMAGE_SIDE = 1024

# CheXlocalize's ten pathologies; "Airspace Opacity" is CheXpert's "Lung Opacity" renamed.
CHEXLOCALIZE_FINDINGS = {
    "Airspace Opacity": "Lung Opacity",
    **{
        name: name
        for name in (
            "Atelectasis",
            "Cardiomegaly",
            "Consolidation",
            "Edema",
            "Enlarged Cardiomediastinum",
            "Lung Lesion",
            "Pleural Effusion",
            "Pneumothorax",
            "Support Devices",
        )
    },
}
# VinDr-CXR's local labels that have a CheXpert counterpart (CheXpert's labeler counts infiltrates
# as lung opacity, nodules, masses, cysts and cavities as lung lesions, pleural thickening as
# "pleural other"). Aortic enlargement, calcification, ILD, emphysema, mediastinal shift, enlarged
# PA, pulmonary fibrosis and "other lesion" have none and are dropped.
VINDR_FINDINGS = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Lung Opacity": "Lung Opacity",
    "Infiltration": "Lung Opacity",
    "Pleural effusion": "Pleural Effusion",
    "Pleural thickening": "Pleural Other",
    "Pneumothorax": "Pneumothorax",
    "Nodule/Mass": "Lung Lesion",
    "Lung cavity": "Lung Lesion",
    "Lung cyst": "Lung Lesion",
    "Clavicle fracture": "Fracture",
    "Rib fracture": "Fracture",
}
NIH_FINDINGS = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Pleural Effusion",
    "Infiltrate": "Lung Opacity",
    "Infiltration": "Lung Opacity",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}
# Were the dataset's images in MedGemma's training data? MS-CXR's images are MIMIC-CXR's, mostly
# from its train split, on which MedGemma was trained; CheXlocalize's (CheXpert valid/test) and
# VinDr-CXR's test images were not. For NIH ChestX-ray14 we do not know.
CONTAMINATION = {
    "ms_cxr": "likely: MIMIC-CXR images, mostly its train split, which MedGemma was trained on",
    "chexlocalize": "unlikely: CheXpert validation/test images, not in MedGemma's training data",
    "vindr_cxr": "unlikely for its test split, not in MedGemma's training data",
    "nih": "unknown: check MedGemma's model card for ChestX-ray14 in its training data",
}


@dataclass(frozen=True)
class Annotation:
    """One finding marked on one image.

    Attributes
    ----------
    dataset, annotation_id, image_id, patient_id : str
        ``image_id`` is the image file's stem (MS-CXR's ``dicom_id``, VinDr's ``image_id``, ...).
    finding : str
        The question bank's finding name; ``label`` the dataset's own.
    phrase : str
        MS-CXR's ``label_text``; blank elsewhere.
    image_width, image_height : int
        The frame the boxes or mask are drawn in (0 when the file does not say: VinDr).
    boxes : tuple of (x, y, w, h)
        In that frame's pixels; empty for a mask.
    rle : dict or None
        A COCO run-length encoding (pycocotools) of the mask, for segmentations.
    n_readers : int
        Radiologists whose marks were combined.
    """

    dataset: str
    annotation_id: str
    image_id: str
    patient_id: str
    finding: str
    label: str
    image_width: int
    image_height: int
    phrase: str = ""
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    rle: dict | None = field(default=None, compare=False)
    n_readers: int = 1

    def with_size(self, width: int, height: int) -> Annotation:
        """The same annotation in a frame of known size (VinDr's images give it)."""
        return Annotation(**{**self.__dict__, "image_width": width, "image_height": height})

    def sized_as(self, width: int, height: int) -> Annotation:
        """The annotation with the image's frame when its file gives none (VinDr's), else as is."""
        return self.with_size(width, height) if self.image_width <= 0 else self

    def mask(self) -> np.ndarray:
        """Boolean pixel mask of the annotation in its frame (MedFocus's truth)."""
        if self.rle is not None:
            from pycocotools import mask as coco_mask

            return coco_mask.decode(self.rle).astype(bool)
        xyxy = [(x, y, x + w, y + h) for x, y, w, h in self.boxes]
        return boxes_pixel_mask(xyxy, (self.image_height, self.image_width))

    def mask_at(self, shape: tuple[int, int]) -> np.ndarray:
        """The annotation on an image of ``shape`` (rows, cols) showing its whole frame.

        The preprocessed radiograph is such an image (an aspect-keeping resize of the source), so
        this is where the annotation lies on it: each pixel's share inside the region (boxes
        scaled along each axis, a mask area-averaged), kept when at least half inside.
        """
        height, width = (int(side) for side in shape)
        if self.rle is not None:
            cover = cv2.resize(
                self.mask().astype(np.float32), (width, height), interpolation=cv2.INTER_AREA
            )
        else:
            if self.image_width <= 0 or self.image_height <= 0:
                raise ValueError(f"{self.annotation_id}: the image size is unknown")
            scale = np.array([width / self.image_width, height / self.image_height] * 2)
            scaled = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4) * scale
            cover = box_pixel_weights(scaled, width, height)
        return cover >= 0.5

    def region(self, grid_shape: tuple[int, int] = (16, 16)) -> Region:
        """The annotation on the token grid (see :mod:`cxr_attention.grounding.regions`)."""
        if self.rle is not None:
            return _region_from_mask(self.mask(), grid_shape)
        if self.image_width <= 0 or self.image_height <= 0:
            raise ValueError(f"{self.annotation_id}: the image size is unknown")
        return region_from_boxes(self.boxes, self.image_width, self.image_height, grid_shape)


def read_ms_cxr(path: str | os.PathLike) -> list[Annotation]:
    """MS-CXR's local-alignment CSV: one annotation per (image, category, phrase), all its boxes.

    A category outside MS-CXR's eight (a planted file's) is kept as its own finding name.

    ``path`` (``files/p10/p10233088/s5.../<dicom_id>.jpg``) gives the patient (``p10233088`` ->
    ``10233088``). A file without it (the planted boxes of ``cxr-attention plant``, whose format
    names the nine other columns) leaves the patient blank: the stage takes it from the run's
    tables.
    """
    annotations = []
    for index, ((dicom_id, category, phrase), rows) in enumerate(ms_cxr_groups(path)):
        match = re.search(r"/p(\d+)/s\d+/", str(rows["path"].iloc[0]))
        annotations.append(
            Annotation(
                dataset="ms_cxr",
                annotation_id=f"ms_cxr.{index}",
                image_id=dicom_id,
                patient_id=match.group(1) if match else "",
                finding=ms_cxr_finding(category),
                label=category,
                phrase=phrase,
                image_width=int(rows["image_width"].iloc[0]),
                image_height=int(rows["image_height"].iloc[0]),
                boxes=tuple(map(tuple, rows[["x", "y", "w", "h"]].to_numpy(float).tolist())),
            )
        )
    return annotations


def read_chexlocalize(path: str | os.PathLike) -> list[Annotation]:
    """CheXlocalize's ground-truth segmentations JSON (``gt_segmentations_{val,test}.json``).

    ``{cxr_id: {pathology: {"size": [h, w], "counts": rle}}}``; every image lists all ten
    pathologies, an all-zero mask where the finding is absent: those give no annotation. The
    patient is the id's first part (``patient64622_study1_view1_frontal`` -> ``patient64622``).
    """
    from pycocotools import mask as coco_mask

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(path, f"cannot read the JSON: {error}") from error
    annotations = []
    for cxr_id in sorted(data):
        for pathology in sorted(data[cxr_id]):
            if pathology not in CHEXLOCALIZE_FINDINGS:
                continue
            item = data[cxr_id][pathology]
            try:
                rle = {"size": list(item["size"]), "counts": item["counts"].encode()}
                area = float(coco_mask.area(rle))
            except (KeyError, TypeError, AttributeError, ValueError) as error:
                raise InputError(path, f"{cxr_id} / {pathology}: bad RLE ({error})") from error
            if area == 0:
                continue
            height, width = rle["size"]
            annotations.append(
                Annotation(
                    dataset="chexlocalize",
                    annotation_id=f"chexlocalize.{cxr_id}.{pathology.replace(' ', '_')}",
                    image_id=cxr_id,
                    patient_id=cxr_id.split("_")[0],
                    finding=CHEXLOCALIZE_FINDINGS[pathology],
                    label=pathology,
                    image_width=int(width),
                    image_height=int(height),
                    rle=rle,
                )
            )
    return annotations


def read_vindr(
    path: str | os.PathLike, image_sizes: Mapping[str, tuple[int, int]] | None = None
) -> list[Annotation]:
    """VinDr-CXR's annotations CSV (``annotations_test.csv``, ``annotations_train.csv``).

    One annotation per (image, class): the union of every radiologist's boxes of that class (the
    test split has one consensus reading, the train split three readers, ``rad_id``). "No finding"
    rows (no box) are skipped. The CSV gives no image size: pass ``image_sizes`` (image id ->
    (width, height)) or fill it later with :meth:`Annotation.with_size`. VinDr has no patient id:
    the image is its own patient.
    """
    frame = _read_csv(path, VINDR_COLUMNS, dtype={"image_id": str})
    frame = frame[frame["class_name"].isin(VINDR_FINDINGS)]
    frame = frame.assign(**_numbers(frame, VINDR_COLUMNS[2:], path))
    sizes = image_sizes or {}
    annotations = []
    for (image_id, class_name), rows in frame.groupby(["image_id", "class_name"], sort=True):
        corners = rows[list(VINDR_COLUMNS[2:])].to_numpy(float)
        boxes = [(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in corners]
        width, height = sizes.get(image_id, (0, 0))
        readers = rows["rad_id"].nunique() if "rad_id" in rows else 1
        annotations.append(
            Annotation(
                dataset="vindr_cxr",
                annotation_id=f"vindr_cxr.{image_id}.{class_name.replace(' ', '_')}",
                image_id=image_id,
                patient_id=image_id,
                finding=VINDR_FINDINGS[class_name],
                label=class_name,
                image_width=int(width),
                image_height=int(height),
                boxes=tuple(boxes),
                n_readers=int(readers),
            )
        )
    return annotations


def read_nih_boxes(path: str | os.PathLike) -> list[Annotation]:
    """NIH ChestX-ray8's ``BBox_List_2017.csv``: one annotation per (image, label).

    Its header is ``Image Index,Finding Label,Bbox [x,y,w,h],,,``: the unquoted ``Bbox [x,y,w,h]``
    splits into four columns named ``Bbox [x``, ``y``, ``w``, ``h]``, followed by three empty ones,
    so the box is read by position (columns 3 to 6). Boxes are in the 1024 x 1024 frame of the
    released PNGs; the patient is the file name's first part (``00013118_008.png`` -> ``00013118``).
    """
    frame = _read_csv(path, ("Image Index", "Finding Label"), dtype={"Image Index": str})
    if frame.shape[1] < 6:
        raise InputError(path, f"expected x, y, w, h in columns 3-6, found {list(frame.columns)}")
    boxes = frame.iloc[:, 2:6].set_axis(["x", "y", "w", "h"], axis=1)
    frame = pd.concat(
        [frame[["Image Index", "Finding Label"]], _numbers(boxes, "xywh", path)], axis=1
    )
    frame = frame[frame["Finding Label"].isin(NIH_FINDINGS)]
    annotations = []
    for (image, label), rows in frame.groupby(["Image Index", "Finding Label"], sort=True):
        image_id = Path(image).stem
        annotations.append(
            Annotation(
                dataset="nih",
                annotation_id=f"nih.{image_id}.{label}",
                image_id=image_id,
                patient_id=image_id.split("_")[0],
                finding=NIH_FINDINGS[label],
                label=label,
                image_width=NIH_IMAGE_SIDE,
                image_height=NIH_IMAGE_SIDE,
                boxes=tuple(map(tuple, rows[["x", "y", "w", "h"]].to_numpy(float).tolist())),
            )
        )
    return annotations


#: The annotation table (the grounding stage's ``annotations.csv``): one row per
#: :class:`Annotation`, its fields by name; ``boxes`` is a JSON list of ``[x, y, w, h]`` (``[]``
#: for a mask) and ``rle`` the mask's COCO run-length encoding as JSON (``{"size": [h, w],
#: "counts": "..."}``; blank for boxes).
ANNOTATION_TABLE_COLUMNS = (
    "dataset",
    "annotation_id",
    "image_id",
    "patient_id",
    "finding",
    "label",
    "phrase",
    "image_width",
    "image_height",
    "n_readers",
    "boxes",
    "rle",
)


def write_annotation_table(annotations: list[Annotation], path: str | os.PathLike) -> None:
    """Write ``annotations`` as an annotation table (atomically); :func:`read_annotation_table`
    reads them back equal."""
    rows = []
    for annotation in annotations:
        rle = annotation.rle
        if rle is not None:
            counts = rle["counts"]
            counts = counts.decode("ascii") if isinstance(counts, bytes) else counts
            rle = json.dumps({"size": [int(side) for side in rle["size"]], "counts": counts})
        rows.append(
            {
                **{name: getattr(annotation, name) for name in ANNOTATION_TABLE_COLUMNS[:10]},
                "boxes": json.dumps([list(box) for box in annotation.boxes]),
                "rle": rle or "",
            }
        )
    write_csv(pd.DataFrame(rows, columns=list(ANNOTATION_TABLE_COLUMNS)), path)


def read_annotation_table(path: str | os.PathLike) -> list[Annotation]:
    """The annotations of an annotation table (:data:`ANNOTATION_TABLE_COLUMNS`).

    Raises
    ------
    cxr_attention.io.InputError
        A column is missing or a row's sizes, boxes or mask cannot be read (the message names the
        file and the row).
    """
    try:
        table = read_table(path, required=ANNOTATION_TABLE_COLUMNS, text=True)
    except ConfigError as error:
        raise InputError(path, str(error).removeprefix(f"{path}: ")) from error
    annotations = []
    for line, row in enumerate(table.to_dict("records"), start=2):
        try:
            boxes = tuple(tuple(float(v) for v in box) for box in json.loads(row["boxes"] or "[]"))
            if any(len(box) != 4 for box in boxes):
                raise ValueError("a box is not [x, y, w, h]")
            rle = json.loads(row["rle"]) if row["rle"] else None
            if rle is not None:
                rle = {
                    "size": [int(side) for side in rle["size"]],
                    "counts": rle["counts"].encode(),
                }
            annotation = Annotation(
                **{name: row[name] for name in ANNOTATION_TABLE_COLUMNS[:7]},
                image_width=int(row["image_width"]),
                image_height=int(row["image_height"]),
                n_readers=int(row["n_readers"]),
                boxes=boxes,
                rle=rle,
            )
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise InputError(path, f"row {line}: {error}") from error
        annotations.append(annotation)
    return annotations
