"""``explain --boxes``: the box columns of one image's maps, from an MS-CXR-format file or
annotations already read (the app's)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cxr_attention.grounding.datasets import MS_CXR_COLUMNS, Annotation
from cxr_attention.grounding.single import (
    BOX_COLUMNS,
    image_box_metrics,
    read_image_boxes,
    union_region,
)

REPO = Path(__file__).resolve().parents[2]
# 447 x 512 (W x H): non-square.
DEMO_IMAGE = sorted((REPO / "data/demo/mimic-cxr-jpg/files").rglob("*.jpg"))[1]


def _boxes_csv(path: Path, rows) -> Path:
    lines = [",".join(MS_CXR_COLUMNS)]
    for dicom_id, x, y, w, h, width, height in rows:
        lines.append(f"{dicom_id},Cardiomegaly,Enlarged heart,files/p1/p1/s1/{dicom_id}.jpg,")
        lines[-1] += f"{x},{y},{w},{h},{width},{height}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_rows_of_this_image_form_one_region(tmp_path):
    # Two boxes of this image on a 320 x 160 frame (20 x 10 px cells): cells (3, 2) and (10, 10);
    # a box of another image is ignored.
    csv = _boxes_csv(
        tmp_path / "boxes.csv",
        [
            ("img", 40, 30, 20, 10, 320, 160),
            ("img", 200, 100, 20, 10, 320, 160),
            ("other", 0, 0, 320, 160, 320, 160),
        ],
    )
    inside = np.full((16, 16), 1.0)
    inside[3, 2], inside[10, 10] = 100.0, 50.0
    outside = np.full((16, 16), 1.0)
    outside[0, 0] = 100.0
    maps = [(SimpleNamespace(map_id="a"), inside), (SimpleNamespace(map_id="b"), outside)]
    table = image_box_metrics(maps, read_image_boxes(csv, "img"))
    assert list(table.columns) == ["map_id", *BOX_COLUMNS]
    a, b = table.to_dict("records")
    assert a["box_area"] == pytest.approx(2 / 256)
    assert a["box_mass"] == pytest.approx(150 / (150 + 254))
    assert a["box_pointing_game"] == 1.0 and b["box_pointing_game"] == 0.0
    assert a["box_lift"] == pytest.approx(a["box_mass"] * 128)
    # q90 cut of "a" keeps every cell (ties at 1 below the quantile): IoU = 2 / 256.
    assert a["box_iou_q90"] == pytest.approx(2 / 256)
    # Inside 100 and 50 (mean 75, variance 625), outside all 1: (75 - 1) / 25.
    assert a["box_cnr"] == pytest.approx(74 / 25)
    assert b["box_cnr"] < 0


def test_no_rows_for_the_image_leaves_the_columns_blank(tmp_path):
    csv = _boxes_csv(tmp_path / "boxes.csv", [("other", 0, 0, 10, 10, 320, 160)])
    assert read_image_boxes(csv, "img") == []
    table = image_box_metrics([(SimpleNamespace(map_id="a"), np.ones((16, 16)))], [])
    assert table["map_id"].tolist() == ["a"]
    assert all(math.isnan(table[column].iloc[0]) for column in BOX_COLUMNS)


def _annotation(annotation_id, width, height, boxes=(), rle=None):
    return Annotation(
        dataset="test",
        annotation_id=annotation_id,
        image_id="img",
        patient_id="1",
        finding="Edema",
        label="Edema",
        image_width=width,
        image_height=height,
        boxes=boxes,
        rle=rle,
    )


def test_annotations_on_other_frames_are_scaled_into_the_first():
    # Cell (2, 3) on a 320 x 160 frame (20 x 10 px cells) and cell (5, 8) given on a frame twice
    # as large: the union is those two cells.
    region = union_region(
        [
            _annotation("a", 320, 160, boxes=((60.0, 20.0, 20.0, 10.0),)),
            _annotation("b", 640, 320, boxes=((320.0, 100.0, 40.0, 20.0),)),
        ]
    )
    expected = np.zeros((16, 16))
    expected[2, 3] = expected[5, 8] = 1.0
    np.testing.assert_allclose(region.coverage, expected, atol=1e-12)


def test_a_segmentation_joins_boxes_by_its_pixel_mask():
    from pycocotools import mask as coco_mask

    # A 32 x 32 mask (2 x 2 px cells) of the top-left quarter, and a box given on a 64 x 64
    # frame that lands on the bottom-right cell once halved into the mask's frame.
    pixels = np.zeros((32, 32), dtype=np.uint8, order="F")
    pixels[:16, :16] = 1
    rle = coco_mask.encode(pixels)
    region = union_region(
        [
            _annotation("mask", 32, 32, rle=rle),
            _annotation("box", 64, 64, boxes=((60.0, 60.0, 4.0, 4.0),)),
        ]
    )
    expected = np.zeros((16, 16))
    expected[:8, :8] = 1.0
    expected[15, 15] = 1.0
    np.testing.assert_allclose(region.coverage, expected, atol=1e-12)


def test_a_box_without_a_frame_is_refused():
    with pytest.raises(ValueError, match=r"vindr\.0: the image size is unknown"):
        union_region([_annotation("vindr.0", 0, 0, boxes=((1.0, 1.0, 2.0, 2.0),))])


def test_explain_boxes_adds_the_columns_for_every_map(tiny_model_dir, tmp_path):
    # The top half of the 447 x 512 film: rows 0-7 of the grid, area share 1/2.
    csv = _boxes_csv(tmp_path / "boxes.csv", [(DEMO_IMAGE.stem, 0, 0, 447, 256, 447, 512)])
    # A phrase that is none of the question's finding terms (``enlarged heart`` is one).
    csv.write_text(csv.read_text().replace("Enlarged heart", "mildly enlarged heart shadow"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cxr_attention.cli", "explain", str(DEMO_IMAGE)]
    command += ["--question", "Is the heart enlarged?", "--model", str(tiny_model_dir)]
    command += ["--out", str(out), "--layers", "2", "--max-new-tokens", "4", "--boxes", str(csv)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    metrics = pd.read_csv(out / "metrics.csv")
    maps = pd.read_csv(out / "maps.csv", keep_default_na=False)
    assert metrics["map_id"].tolist() == maps["map_id"].tolist()
    # The rows' phrase is a term too: not in the question, so its counterfactual maps.
    phrase_maps = maps[maps["term"] == "mildly enlarged heart shadow"]
    assert not phrase_maps.empty
    assert set(phrase_maps["source"]) == {"absent"}
    assert set(BOX_COLUMNS) <= set(metrics.columns)
    assert metrics["box_area"].to_numpy() == pytest.approx(0.5)
    with np.load(out / "maps.npz") as arrays:
        for row in metrics.itertuples():
            grid = arrays[row.map_id].astype(np.float64)
            assert row.box_mass == pytest.approx(grid[:8].sum() / grid.sum(), rel=1e-6)
