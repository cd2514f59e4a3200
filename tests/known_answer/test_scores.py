"""Known-answer scores against hand-computed values: a box of whole cells, maps put by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_attention.known_answer.model import QUESTIONS
from cxr_attention.known_answer.scores import (
    answer_scores,
    lesion_map_scores,
    map_scores,
    summarise,
)

# A 320 x 160 (W x H) image: a cell is 20 x 10 px; this box covers rows 2-4 and columns 10-11.
BOX = {"x": 200, "y": 20, "w": 40, "h": 30, "image_width": 320, "image_height": 160}


def test_a_map_inside_the_box_hits_and_a_uniform_map_has_lift_one():
    inside = np.zeros((16, 16))
    inside[3, 10] = 1.0
    scores = lesion_map_scores(inside, BOX)
    assert scores == pytest.approx(
        {"pointing_game": 1.0, "mass_inside": 1.0, "area_share": 6 / 256, "lift": 256 / 6}
    )
    outside = np.zeros((16, 16))
    outside[3, 5] = 1.0  # the mirror image of column 10 is column 5
    assert lesion_map_scores(outside, BOX)["pointing_game"] == 0.0
    uniform = lesion_map_scores(np.full((16, 16), 1 / 256), BOX)
    assert uniform["pointing_game"] == pytest.approx(6 / 256)
    assert uniform["lift"] == pytest.approx(1.0)


@pytest.fixture
def study():
    """Two patients (held out: p1), each a clean film and a left-planted copy, three questions."""
    plantings = pd.DataFrame(
        {
            "dicom_id": ["c1", "l1", "c2", "l2"],
            "source_dicom_id": ["c1", "c1", "c2", "c2"],
            "side": ["none", "left", "none", "left"],
        }
    )
    subject = {"c1": "p1", "l1": "p1", "c2": "p2", "l2": "p2"}
    answers = []
    for dicom_id in plantings["dicom_id"]:
        for asks, question in QUESTIONS.items():
            truth = "yes" if dicom_id.startswith("l") and asks in ("any", "left") else "no"
            # p1 answers everything right; p2 always says no.
            answer = truth if subject[dicom_id] == "p1" else "no"
            answers.append(
                {
                    "sample_id": f"{dicom_id}__{asks}",
                    "dicom_id": dicom_id,
                    "subject_id": subject[dicom_id],
                    "question": question,
                    "answer": answer,
                    "expected": truth,
                    "correctness": float(answer == truth),
                    "p_yes": 0.5,
                }
            )
    answers.append({**answers[0], "sample_id": "c1__other", "question": "Is there an effusion?"})
    answers = pd.DataFrame(answers)
    hit = np.zeros((16, 16))
    hit[3, 10] = 1.0
    miss = np.zeros((16, 16))
    miss[3, 5] = 1.0
    maps = pd.DataFrame(
        [
            {
                "map_id": f"{dicom_id}__{asks}__{method}",
                "sample_id": f"{dicom_id}__{asks}",
                "dicom_id": dicom_id,
                "term": "",
                "source": "answer",
                "method": method,
                "left_right": 0.8 if method == "attention" else 0.3,
            }
            for dicom_id in ("l1", "l2")
            for asks in QUESTIONS
            for method in ("attention", "uniform")
        ]
    )
    arrays = {map_id: hit if map_id.endswith("attention") else miss for map_id in maps["map_id"]}
    boxes = pd.DataFrame([{**BOX, "dicom_id": "l1"}, {**BOX, "dicom_id": "l2"}])
    return answers, maps, arrays, boxes, plantings


def test_scores_and_summary_by_hand(study):
    answers, maps, arrays, boxes, plantings = study
    rows = map_scores(answers, maps, arrays, boxes, plantings, held_out=["c1"])
    assert len(rows) == 12  # 2 planted films x 3 questions x 2 methods; clean films have no box
    attention = rows[rows["method"] == "attention"]
    assert (attention["pointing_game"] == 1.0).all()
    # The lesion is in the left lung: the left share of the in-lung mass.
    assert attention["correct_side_mass"].tolist() == pytest.approx([0.8] * 6)
    assert rows[rows["method"] == "uniform"]["correct_side_mass"].tolist() == pytest.approx(
        [0.3] * 6
    )
    assert rows["held_out"].tolist() == [True] * 6 + [False] * 6

    scored = answer_scores(answers, plantings, held_out=["c1"])
    assert len(scored) == 12  # the effusion question is not a known-answer question
    summary = summarise(
        scored, rows, methods=["attention", "uniform"], n_boot=50, confidence=0.95, seed=0
    ).set_index(["films", "table", "row", "statistic"])["value"]
    held_out = summary.loc["held out"]
    assert held_out.loc[("accuracy", "any question, planted films", "accuracy")] == 1.0
    everything = summary.loc["all"]
    # p2 says no to everything: right on clean films, wrong on the planted film's "any" and left.
    assert everything.loc[("accuracy", "any question, planted films", "accuracy")] == 0.5
    assert everything.loc[("accuracy", "side question, planted films", "accuracy")] == 0.75
    assert everything.loc[("accuracy", "side question, clean films", "accuracy")] == 1.0
    assert everything.loc[("maps", "uniform", "pointing_game")] == 0.0
    assert everything.loc[("maps", "attention", "lift")] == pytest.approx(256 / 6)
    assert everything.loc[("maps", "attention", "correct_side_mass")] == pytest.approx(0.8)


def test_the_rule_writes_the_table_its_section_and_a_figure_per_method(study, tmp_path):
    from cxr_attention.report.known_answer import write_known_answer

    answers, maps, arrays, boxes, plantings = study
    # a term's map, by a method that maps terms only: no row of the answer table, no hit figure
    term_map = {**maps.iloc[0].to_dict(), "term": "nodule", "source": "prompt"}
    term_map.update(map_id="l1__any__gated_answer", method="gated_answer")
    maps = pd.concat([maps, pd.DataFrame([term_map])], ignore_index=True)
    arrays = {**arrays, "l1__any__gated_answer": np.full((16, 16), 1 / 256)}
    answers.drop(columns="correctness").assign(
        finding="Lung Lesion", strategy="baseline", question_id="q"
    ).to_csv(tmp_path / "answers.csv", index=False)
    maps.to_csv(tmp_path / "maps.csv", index=False)
    np.savez(tmp_path / "maps.npz", **arrays)
    boxes.to_csv(tmp_path / "boxes.csv", index=False)
    plantings.to_csv(tmp_path / "plantings.csv", index=False)
    summary = write_known_answer(
        answers_csv=tmp_path / "answers.csv",
        maps_csv=tmp_path / "maps.csv",
        arrays_npz=[tmp_path / "maps.npz"],
        preprocess_csvs=[],
        boxes_csv=tmp_path / "boxes.csv",
        plantings_csv=tmp_path / "plantings.csv",
        held_out=["c1"],
        out_dir=tmp_path / "out",
        figures_dir=tmp_path / "figures",
        statistics={"bootstrap_samples": 20, "confidence": 0.95},
        seed=0,
    )
    section = (tmp_path / "out" / "section.html").read_text()
    assert "Known answer" in section and "uniform" in section and "attention" in section
    assert "gated_answer" not in section
    assert len(pd.read_csv(tmp_path / "out" / "maps.csv")) == 13
    assert set(summary["films"]) == {"held out", "all"}
    written = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert written == ["hits__attention.png", "hits__uniform.png", "pointing_game.png"]
