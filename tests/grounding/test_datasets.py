"""Each reader on a small file written in exactly the released columns and encoding.

Values are checked by hand: a box at a known place maps to the known grid cells of a non-square
image (cells 20 px wide and 10 px tall on a 320 x 160 image).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from cxr_attention.grounding.datasets import (
    MS_CXR_COLUMNS,
    read_chexlocalize,
    read_ms_cxr,
    read_nih_boxes,
    read_vindr,
)
from cxr_attention.io import InputError

DICOM = "675d792f-a3521e48-5eec8573-1e81d644-e60c34f8"
PATH = f"files/p10/p10233088/s54276838/{DICOM}.jpg"


def _cells(region):
    return sorted((int(r), int(c)) for r, c in zip(*np.nonzero(region.cells), strict=True))


def test_ms_cxr_groups_boxes_of_one_phrase(tmp_path):
    csv = tmp_path / "MS_CXR_Local_Alignment_v1.1.0.csv"
    header = ",".join([*MS_CXR_COLUMNS, "split"])
    csv.write_text(
        f"{header}\n"
        f"{DICOM},Pneumonia,Bibasilar opacities,{PATH},40,30,40,20,320,160,train\n"
        f"{DICOM},Pneumonia,Bibasilar opacities,{PATH},200,100,20,10,320,160,train\n"
        f'{DICOM},Pleural Effusion,"Small left effusion, unchanged",{PATH},'
        "0,0,20,10,320,160,test\n",
        encoding="utf-8",
    )
    pneumonia, effusion = read_ms_cxr(csv)
    assert pneumonia.image_id == DICOM
    assert pneumonia.patient_id == "10233088"
    assert pneumonia.finding == "Pneumonia"
    assert pneumonia.phrase == "Bibasilar opacities"
    assert pneumonia.boxes == ((40, 30, 40, 20), (200, 100, 20, 10))
    # x 40-80 -> columns 2-3, y 30-50 -> rows 3-4; x 200-220 -> column 10, y 100-110 -> row 10.
    assert _cells(pneumonia.region()) == [(3, 2), (3, 3), (4, 2), (4, 3), (10, 10)]
    assert effusion.phrase == "Small left effusion, unchanged"
    assert _cells(effusion.region()) == [(0, 0)]


def test_planted_boxes_without_path_read_with_a_blank_patient(tmp_path):
    # `cxr-attention plant` writes MS-CXR's columns less `path`; the stage fills the patient from
    # the run's tables.
    csv = tmp_path / "boxes.csv"
    header = ",".join(column for column in MS_CXR_COLUMNS if column != "path")
    csv.write_text(
        f"{header}\n{DICOM},Lung Lesion,nodule in the left lower zone,40,30,40,20,320,160\n",
        encoding="utf-8",
    )
    (lesion,) = read_ms_cxr(csv)
    assert lesion.patient_id == ""
    assert lesion.finding == "Lung Lesion"
    assert _cells(lesion.region()) == [(3, 2), (3, 3), (4, 2), (4, 3)]


def test_ms_cxr_missing_column_names_file(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("dicom_id,x,y\nd,1,2\n", encoding="utf-8")
    with pytest.raises(InputError, match="missing columns"):
        read_ms_cxr(csv)


def test_chexlocalize_rle_masks(tmp_path):
    mask = np.zeros((160, 320), dtype=np.uint8)
    mask[30:50, 40:80] = 1
    empty = np.zeros((160, 320), dtype=np.uint8)

    def encode(array):
        rle = coco_mask.encode(np.asfortranarray(array))
        rle["counts"] = rle["counts"].decode()  # as CheXlocalize's utils.encode_segmentation
        return rle

    cxr_id = "patient64622_study1_view1_frontal"
    path = tmp_path / "gt_segmentations_val.json"
    path.write_text(
        json.dumps({cxr_id: {"Airspace Opacity": encode(mask), "Cardiomegaly": encode(empty)}}),
        encoding="utf-8",
    )
    (annotation,) = read_chexlocalize(path)
    assert annotation.finding == "Lung Opacity"
    assert annotation.label == "Airspace Opacity"
    assert annotation.patient_id == "patient64622"
    assert (annotation.image_width, annotation.image_height) == (320, 160)
    np.testing.assert_array_equal(annotation.mask(), mask.astype(bool))
    assert _cells(annotation.region()) == [(3, 2), (3, 3), (4, 2), (4, 3)]


def test_vindr_union_of_readers_and_unmapped_labels(tmp_path):
    csv = tmp_path / "annotations_train.csv"
    csv.write_text(
        "image_id,rad_id,class_name,x_min,y_min,x_max,y_max\n"
        "abc,R8,Pleural effusion,40.0,30.0,60.0,50.0\n"
        "abc,R9,Pleural effusion,60.0,30.0,80.0,50.0\n"
        "abc,R10,Aortic enlargement,100.0,10.0,120.0,20.0\n"
        "abc,R10,No finding,,,,\n",
        encoding="utf-8",
    )
    (annotation,) = read_vindr(csv, image_sizes={"abc": (320, 160)})
    assert annotation.finding == "Pleural Effusion"
    assert annotation.n_readers == 2
    assert annotation.boxes == ((40, 30, 20, 20), (60, 30, 20, 20))
    assert _cells(annotation.region()) == [(3, 2), (3, 3), (4, 2), (4, 3)]
    (unsized,) = read_vindr(csv)
    with pytest.raises(ValueError, match="size is unknown"):
        unsized.region()
    assert unsized.with_size(320, 160).region().area == pytest.approx(4 / 256)


def test_nih_odd_header(tmp_path):
    csv = tmp_path / "BBox_List_2017.csv"
    csv.write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,"
        "79.1864406779661,,,\n"
        "00014716_007.png,Infiltrate,128,64,64,128,,,\n",
        encoding="utf-8",
    )
    first, second = read_nih_boxes(csv)
    assert first.image_id == "00013118_008"
    assert first.patient_id == "00013118"
    assert first.boxes[0] == pytest.approx(
        (225.084745762712, 547.019216763771, 86.78, 79.19), abs=0.01
    )
    assert second.finding == "Lung Opacity"
    # 1024 x 1024, 64 px cells: x 128-192 -> column 2, y 64-192 -> rows 1-2.
    assert _cells(second.region()) == [(1, 2), (2, 2)]


def test_mask_at_scales_boxes_and_masks_onto_a_smaller_non_square_image(tmp_path):
    """A 320 x 160 frame shown at 80 x 40 (a quarter): the MS-CXR box x 40-80, y 30-50 becomes
    x 10-20, y 7.5-12.5, so columns 10-19 and rows 7-12 (rows 7 and 12 half inside, kept); a
    CheXlocalize mask at y 32-48 becomes rows 8-11 exactly."""
    csv = tmp_path / "boxes.csv"
    header = ",".join(column for column in MS_CXR_COLUMNS if column != "path")
    csv.write_text(f"{header}\n{DICOM},Pneumonia,opacity,40,30,40,20,320,160\n", encoding="utf-8")
    (boxed,) = read_ms_cxr(csv)
    expected = np.zeros((40, 80), dtype=bool)
    expected[7:13, 10:20] = True  # y 7.5-12.5: rows 7 and 12 half inside, kept (>= 0.5)
    np.testing.assert_array_equal(boxed.mask_at((40, 80)), expected)

    frame = np.zeros((160, 320), dtype=np.uint8)
    frame[32:48, 40:80] = 1  # y 32-48 -> 8-12 at a quarter, exactly
    rle = coco_mask.encode(np.asfortranarray(frame))
    rle["counts"] = rle["counts"].decode()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"p1_study1_view1_frontal": {"Edema": rle}}), encoding="utf-8")
    (masked,) = read_chexlocalize(path)
    expected = np.zeros((40, 80), dtype=bool)
    expected[8:12, 10:20] = True
    np.testing.assert_array_equal(masked.mask_at((40, 80)), expected)
