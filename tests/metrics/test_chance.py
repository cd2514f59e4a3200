"""Chance baselines: a mass share beside what a uniform map scores on the same masks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cxr_attention.metrics.catalogue import CHANCE_COLUMNS, MASS_SHARE_METRICS, METRIC_COLUMNS
from cxr_attention.metrics.per_map import map_metrics
from cxr_attention.metrics.summary import study_summary
from cxr_attention.metrics.tables import answer_correctness

PARAMS = {"seed": 0, "bootstrap_samples": 200, "confidence": 0.95}


def _masks():
    # A 64 x 64 film: the body fills the left 48 columns (area share 0.75 on a 16 x 16 grid);
    # right lung (label 1) rows 8-39 of columns 8-23, left lung (label 2) rows 8-23 of 32-47.
    body = np.zeros((64, 64), np.uint8)
    body[:, :48] = 255
    lungs = np.zeros((64, 64), np.uint8)
    lungs[8:40, 8:24] = 1
    lungs[8:24, 32:48] = 2
    return body, lungs


def test_uniform_map_scores_its_area_share_and_lift_one():
    body, lungs = _masks()
    metrics = map_metrics(np.full((16, 16), 1 / 256), body_mask=body, lung_labels=lungs)
    assert [c for c in metrics if c.endswith(("_area", "_lift"))] == CHANCE_COLUMNS
    assert ["map_id", *metrics] == METRIC_COLUMNS
    # Hand-computed areas: body 48/64 of the columns; border ring 60 of 256 cells; left lung
    # 16 x 16 px of 32 x 16 + 16 x 16 px; the upper halves hold half of each lung.
    assert metrics["inside_body_area"] == pytest.approx(0.75)
    assert metrics["border_fraction_area"] == pytest.approx(60 / 256)
    assert metrics["left_right_area"] == pytest.approx(256 / (512 + 256))
    assert metrics["apical_basal_area"] == pytest.approx(0.5)
    for entry in MASS_SHARE_METRICS:
        assert metrics[entry.column] == pytest.approx(metrics[entry.area_column])
        assert metrics[entry.lift_column] == pytest.approx(1.0)


def test_a_map_inside_the_body_has_the_lift_of_its_area():
    body, _ = _masks()
    planted = np.zeros((16, 16))
    planted[4:12, 2:10] = 1  # inside the body, away from the border
    metrics = map_metrics(planted, body_mask=body, lung_labels=None)
    assert metrics["inside_body"] == pytest.approx(1.0)
    assert metrics["inside_body_lift"] == pytest.approx(1 / 0.75)
    assert metrics["border_fraction_lift"] == 0.0
    assert math.isnan(metrics["left_right_area"]) and math.isnan(metrics["left_right_lift"])


def test_uniform_maps_fail_the_quality_verdicts_though_inside_body_is_high():
    # Every map is uniform on films whose body covers 80%: inside_body 0.8 >= 0.7, but no better
    # than chance. The verdicts must say "not met".
    rng = np.random.default_rng(0)
    answers, maps = [], []
    for index in range(20):
        sample_id = f"d{index}__q"
        answers.append(
            {
                "sample_id": sample_id,
                "dicom_id": f"d{index}",
                "subject_id": f"s{index}",
                "question_id": "q",
                "finding": "edema",
                "strategy": "baseline",
                "answer": "yes",
                "expected": "yes",
                "p_yes": 0.7,
            }
        )
        area = 0.8 + rng.normal(0, 0.01)
        maps.append(
            {
                "map_id": f"{sample_id}__answer",
                "sample_id": sample_id,
                "dicom_id": f"d{index}",
                "term": "answer",
                "source": "answer",
                "method": "attention",
                "rows": "decision",
                "inside_body": area,
                "inside_body_area": area,
                "inside_body_lift": 1.0,
                "border_fraction": 60 / 256,
                "border_fraction_area": 60 / 256,
                "border_fraction_lift": 1.0,
                "entropy": math.log(256),
                "entropy_normalised": 1.0,
            }
        )
    answers = pd.DataFrame(answers)
    answers["baseline_question_id"] = ""
    answers["correctness"] = answer_correctness(answers)
    summary = study_summary(
        answers,
        pd.DataFrame(maps),
        accuracy_by_strategy=pd.DataFrame(
            columns=["strategy", "accuracy", "ci_low", "ci_high", "n"]
        ),
        js_pairs=pd.DataFrame(columns=["js_divergence", "subject_id", "band"]),
        consistency=pd.DataFrame(
            columns=["kind", "subject_id", "consistent", "agreement", "n_unclear"]
        ),
        params=PARAMS,
    )
    assert summary["map_quality"]["inside_body_mean"] > 0.7
    assert summary["map_quality"]["inside_body_area_mean"] == pytest.approx(
        summary["map_quality"]["inside_body_mean"]
    )
    assert summary["targets_met"] == {
        "inside_body_lift_gt_1": False,
        "border_fraction_lift_lt_1": False,
        "entropy_below_uniform": False,
    }
