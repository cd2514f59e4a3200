"""The grounding stage on a small run written by the test: planted maps, lung masks and boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from cxr_attention.grounding.datasets import CONTAMINATION, MS_CXR_COLUMNS
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
    pd.DataFrame(rows).to_csv(tmp_path / "preprocess.csv", index=False)
    pd.DataFrame(maps).to_csv(tmp_path / "maps.csv", index=False)
    np.savez(tmp_path / "maps.npz", **arrays)
    (tmp_path / "ms_cxr.csv").write_text(
        ",".join(MS_CXR_COLUMNS) + "\n" + "\n".join(boxes) + "\n", encoding="utf-8"
    )


def _run(tmp_path, **options):
    _write_run(tmp_path)
    return run_grounding(
        maps_csv=tmp_path / "maps.csv",
        maps_npz=[tmp_path / "maps.npz"],
        preprocess_csvs=[tmp_path / "preprocess.csv"],
        annotation_files={"ms_cxr": tmp_path / "ms_cxr.csv", "vindr_cxr": None},
        scores_csv=tmp_path / "scores.csv",
        summary_csv=tmp_path / "summary.csv",
        failures_csv=tmp_path / "failures.csv",
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
