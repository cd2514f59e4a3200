"""The grounding stage on a small run written by the test: planted maps, lung masks and boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from cxr_attention.grounding.datasets import (
    ANNOTATION_TABLE_COLUMNS,
    CONTAMINATION,
    MS_CXR_COLUMNS,
    VINDR_COLUMNS,
    Annotation,
    read_annotation_table,
    read_ms_cxr,
    write_annotation_table,
)
from cxr_attention.grounding.stage import BASELINES, run_grounding

WIDTH, HEIGHT = 320, 160  # 20 x 10 px cells
BOX_CELLS = [(3, 2), (3, 3), (4, 2), (4, 3)]  # the box x 40-80, y 30-50


def _write_run(tmp_path):
    lungs = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    lungs[40:120, 40:140] = 1
    lungs[40:120, 180:280] = 2
    rows, maps, arrays, boxes = [], [], {}, []
    for index in range(4):
        image_id = f"img{index}"
        lung_path = tmp_path / f"{image_id}_lungs.png"
        cv2.imwrite(str(lung_path), lungs)
        rows.append(
            {
                "dicom_id": image_id,
                "image": "",
                "body_mask": "",
                "lung_mask": str(lung_path),
                "source_width": WIDTH,
                "source_height": HEIGHT,
                "mask_flags": "",
            }
        )
        on_box = np.full((16, 16), 0.01)
        for cell in BOX_CELLS:
            on_box[cell] = 1.0
        off_box = np.full((16, 16), 0.01)
        off_box[12, 12] = 1.0
        for method, grid in (("attention", on_box), ("gradcam", off_box)):
            map_id = f"{image_id}__q__answer__answer__{method}"
            maps.append(
                {
                    "map_id": map_id,
                    "sample_id": f"{image_id}__q",
                    "dicom_id": image_id,
                    "term": "",
                    "source": "answer",
                    "method": method,
                    "finding": "Cardiomegaly",
                    "subject_id": f"s{index}",
                }
            )
            arrays[map_id] = (grid / grid.sum()).astype(np.float32)
        # A map about another finding of the same image is not scored.
        other = f"{image_id}__q2__answer__answer__attention"
        maps.append({**maps[-1], "map_id": other, "finding": "Edema", "method": "attention"})
        arrays[other] = arrays[maps[-2]["map_id"]]
        path = f"files/p1/p{index}/s1/{image_id}.jpg"
        boxes.append(f"{image_id},Cardiomegaly,Enlarged heart,{path},40,30,40,20,{WIDTH},{HEIGHT}")
    # an image outside the run: its annotation is not the run's
    boxes.append(
        f"img9,Cardiomegaly,Enlarged heart,files/p1/p9/s1/img9.jpg,0,0,9,9,{WIDTH},{HEIGHT}"
    )
    pd.DataFrame(rows).to_csv(tmp_path / "preprocess.csv", index=False)
    pd.DataFrame(maps).to_csv(tmp_path / "maps.csv", index=False)
    np.savez(tmp_path / "maps.npz", **arrays)
    (tmp_path / "ms_cxr.csv").write_text(
        ",".join(MS_CXR_COLUMNS) + "\n" + "\n".join(boxes) + "\n", encoding="utf-8"
    )
    # VinDr gives no image size, and no map asks about an effusion: listed, not scored
    (tmp_path / "vindr.csv").write_text(
        ",".join(VINDR_COLUMNS) + "\nimg0,Pleural effusion,200,100,260,140\n", encoding="utf-8"
    )


def _run(tmp_path, **options):
    _write_run(tmp_path)
    return run_grounding(
        maps_csv=tmp_path / "maps.csv",
        maps_npz=[tmp_path / "maps.npz"],
        preprocess_csvs=[tmp_path / "preprocess.csv"],
        annotation_files={"ms_cxr": tmp_path / "ms_cxr.csv", "vindr_cxr": tmp_path / "vindr.csv"},
        scores_csv=tmp_path / "scores.csv",
        summary_csv=tmp_path / "summary.csv",
        failures_csv=tmp_path / "failures.csv",
        annotations_csv=tmp_path / "annotations.csv",
        thresholds=[0.5],
        random_maps=5,
        medfocus_max_side=None,
        seed=0,
        bootstrap_samples=100,
        confidence=0.95,
        **options,
    )


def test_scores_of_planted_maps_and_baselines(tmp_path):
    _run(tmp_path)
    scores = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False)
    # 4 annotations x (2 maps + 3 baselines); the Edema map is not scored.
    assert len(scores) == 4 * 5
    assert set(scores["method"]) == {"attention", "gradcam", *BASELINES}
    attention = scores[scores["method"] == "attention"]
    assert (attention["pointing_game"] == 1.0).all()
    expected_mass = 4 / (4 + 252 * 0.01)
    assert attention["mass"].to_numpy() == pytest.approx(expected_mass, rel=1e-5)
    assert attention["lift"].to_numpy() == pytest.approx(expected_mass * 64, rel=1e-5)
    assert attention["iou_at_0.5"].to_numpy() == pytest.approx(1.0)
    gradcam = scores[scores["method"] == "gradcam"]
    assert (gradcam["pointing_game"] == 0.0).all() and (gradcam["medfocus_iou"] == 0.0).all()
    # Uniform within the lungs: the box holds 40 x 10 of the 2 x 100 x 80 lung pixels.
    lungs = scores[scores["method"] == "baseline_lungs"]
    assert lungs["mass"].to_numpy() == pytest.approx(400 / 16000)
    # Every image has the same lungs, so the prior equals each image's lungs.
    prior = scores[scores["method"] == "baseline_lung_prior"]
    assert prior["mass"].to_numpy() == pytest.approx(400 / 16000)
    random = scores[scores["method"] == "baseline_random"]
    assert random["mass"].between(0.0, 0.06).all()
    assert (scores["contamination"] == CONTAMINATION["ms_cxr"]).all()


def test_a_configured_contamination_note_replaces_the_dataset_s_own(tmp_path):
    """Planted boxes in MS-CXR's format are not MIMIC-CXR's images: the config says so."""
    note = "planted, not MS-CXR"
    summary = _run(tmp_path, contamination={"ms_cxr": note})
    scores = pd.read_csv(tmp_path / "scores.csv", keep_default_na=False)
    assert (scores["contamination"] == note).all()
    assert (summary["contamination"] == note).all()


def test_summary_has_patient_intervals_for_every_method(tmp_path):
    summary = _run(tmp_path)
    mass = summary[summary["metric"] == "mass"].set_index("method")
    assert set(mass.index) == {"attention", "gradcam", *BASELINES}
    assert (mass["n_patients"] == 4).all()
    row = mass.loc["attention"]
    assert row["value"] == pytest.approx(4 / (4 + 252 * 0.01), rel=1e-5)
    # Every patient has the same value: the interval collapses onto it.
    assert row["ci_low"] == pytest.approx(row["value"]) and row["ci_high"] == pytest.approx(
        row["value"]
    )
    random = mass.loc["baseline_random"]
    assert random["ci_low"] <= random["value"] <= random["ci_high"]
    assert set(summary["map_kind"]) == {"answer", "baseline"}


def test_the_annotations_of_the_run_s_images_are_written(tmp_path):
    """annotations.csv: the run's images' annotations (not img9's), VinDr's frame filled from the
    image's source size, each box as the file gave it; read back, they lie where drawn."""
    _run(tmp_path)
    table = pd.read_csv(tmp_path / "annotations.csv", dtype=str, keep_default_na=False)
    assert tuple(table.columns) == ANNOTATION_TABLE_COLUMNS
    assert table["image_id"].tolist() == ["img0", "img1", "img2", "img3", "img0"]
    assert table["dataset"].tolist() == ["ms_cxr"] * 4 + ["vindr_cxr"]
    assert table["boxes"].tolist() == ["[[40.0, 30.0, 40.0, 20.0]]"] * 4 + [
        "[[200.0, 100.0, 60.0, 40.0]]"
    ]
    assert set(table["image_width"]) == {str(WIDTH)} and set(table["image_height"]) == {str(HEIGHT)}
    assert (table["rle"] == "").all()

    written = read_annotation_table(tmp_path / "annotations.csv")
    assert written[:4] == read_ms_cxr(tmp_path / "ms_cxr.csv")[:4]  # every field, as read
    effusion = written[4]
    assert (effusion.finding, effusion.label) == ("Pleural Effusion", "Pleural effusion")
    expected = np.zeros((HEIGHT // 2, WIDTH // 2), dtype=bool)
    expected[50:70, 100:130] = True  # the box at half size
    np.testing.assert_array_equal(effusion.mask_at((HEIGHT // 2, WIDTH // 2)), expected)


def test_a_mask_annotation_survives_the_table(tmp_path):
    """A CheXlocalize-style mask (COCO RLE) written and read back decodes to the same pixels."""
    from pycocotools import mask as coco_mask

    drawn = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    drawn[20:60, 100:200] = 1
    drawn[90:95, 10:15] = 1
    rle = coco_mask.encode(np.asfortranarray(drawn))
    annotation = Annotation(
        dataset="chexlocalize",
        annotation_id="chexlocalize.x.Edema",
        image_id="x",
        patient_id="patient1",
        finding="Edema",
        label="Edema",
        image_width=WIDTH,
        image_height=HEIGHT,
        rle=rle,
    )
    write_annotation_table([annotation], tmp_path / "annotations.csv")
    (read,) = read_annotation_table(tmp_path / "annotations.csv")
    assert read == annotation and read.boxes == ()
    np.testing.assert_array_equal(read.mask(), drawn.astype(bool))


def test_a_bad_annotation_table_names_the_file_and_row(tmp_path):
    from cxr_attention.io import InputError

    path = tmp_path / "annotations.csv"
    row = 'ms_cxr,a,img0,p,Edema,Edema,,320,160,1,"[[1, 2, 3]]",'
    path.write_text(",".join(ANNOTATION_TABLE_COLUMNS) + "\n" + row + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"annotations.csv: row 2: a box is not \[x, y, w, h\]"):
        read_annotation_table(path)
    path.write_text("dataset,image_id\nms_cxr,img0\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"annotations.csv: missing column"):
        read_annotation_table(path)
