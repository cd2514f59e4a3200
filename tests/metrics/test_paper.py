"""The paper's statistics on planted answers and maps whose values are known by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from cxr_attention.io import ConfigError
from cxr_attention.metrics.pairwise import cosine_similarity, pearson_correlation
from cxr_attention.metrics.paper import (
    COMPARISON_COLUMNS,
    agreement_sentence,
    group_table,
    load_reference,
    pairs_table,
    paper_comparison,
    run_paper_comparison,
    variant_accuracy_table,
)
from cxr_attention.metrics.tables import answer_correctness

REPO_ROOT = Path(__file__).resolve().parents[2]
N = 256


def _one_hot(cell: int) -> np.ndarray:
    values = np.zeros(N)
    values[cell] = 1
    return values.reshape(16, 16)


HALF = np.zeros(N)
HALF[:2] = 0.5
HALF = HALF.reshape(16, 16)

# Hand-computed map changes against the one-hot baseline map at cell 0 (n = 256 cells):
#   same map:          JS 0, Pearson 1, cosine 1
#   one-hot at cell 1: JS 1 bit (= ln 2 nats), Pearson -1/255, cosine 0
#   half on cells 0,1: JS 0.75 log2(4/3) bits, cosine 1/sqrt(2),
#                      Pearson (1/2 - 1/n) / sqrt((1 - 1/n)(1/2 - 1/n))
SAME = {"js_base2": 0.0, "pearson": 1.0, "cosine": 1.0}
DISJOINT = {"js_base2": 1.0, "pearson": -1 / 255, "cosine": 0.0}
HALF_CHANGE = {
    "js_base2": 0.75 * math.log2(4 / 3),
    "pearson": (0.5 - 1 / N) / math.sqrt((1 - 1 / N) * (0.5 - 1 / N)),
    "cosine": 1 / math.sqrt(2),
}

# Three groups (one baseline question on one image + 4 variants). Per question: answer and map.
#   g1 (expected yes): baseline yes (correct); variants yes yes no yes -> consistency 3/4,
#      one correct->incorrect flip (the "no", with the disjoint map).
#   g2 (expected no): baseline yes (incorrect); variants no no yes yes -> consistency 2/4,
#      two incorrect->correct flips (the two "no", with the half map).
#   g3 (expected no): baseline no (correct); variants all no -> perfect, maps unchanged.
# A plain question on d1 names the baseline as its baseline question: it is not a variant.
PLANTED = {
    "d1": ("yes", [("yes", "same"), ("yes", "same"), ("no", "disjoint"), ("yes", "same")]),
    "d2": ("no", [("no", "half"), ("no", "half"), ("yes", "same"), ("yes", "same")]),
    "d3": ("no", [("no", "same")] * 4),
}
BASELINE_ANSWERS = {"d1": "yes", "d2": "yes", "d3": "no"}
MAPS = {"same": _one_hot(0), "disjoint": _one_hot(1), "half": HALF}


def _planted():
    answers, maps, arrays = [], [], {}

    def add(dicom_id, question_id, strategy, baseline_id, kind, answer, expected, map_name):
        sample_id = f"{dicom_id}__{question_id}"
        answers.append(
            {
                "sample_id": sample_id,
                "dicom_id": dicom_id,
                "subject_id": f"s{dicom_id}",
                "question_id": question_id,
                "finding": "cardiomegaly",
                "strategy": strategy,
                "baseline_question_id": baseline_id,
                "variant_kind": kind,
                "answer": answer,
                "expected": expected,
                "correct": "",
                "p_yes": 0.5,
            }
        )
        map_id = f"{sample_id}__answer__answer__attention"
        arrays[map_id] = MAPS[map_name].astype(np.float32)
        maps.append(
            {
                "map_id": map_id,
                "sample_id": sample_id,
                "dicom_id": dicom_id,
                "question_id": question_id,
                "term": "answer",
                "source": "answer",
                "method": "attention",
                "inside_body": 0.9 if dicom_id != "d3" else 0.6,
            }
        )

    base = "cardiomegaly.baseline.0"
    kinds = ["phrasing_variation", "synonym_replacement", "synonym_replacement", "voice_change"]
    for dicom_id, (expected, variants) in PLANTED.items():
        add(
            dicom_id, base, "baseline", "", "original", BASELINE_ANSWERS[dicom_id], expected, "same"
        )
        for k, (answer, map_name) in enumerate(variants, start=1):
            question_id = f"cardiomegaly.hard_positive.{k}"
            add(
                dicom_id,
                question_id,
                "hard_positive",
                base,
                kinds[k - 1],
                answer,
                expected,
                map_name,
            )
    add("d1", "cardiomegaly.plain.0", "plain", base, "plain", "no", "yes", "disjoint")
    answers = pd.DataFrame(answers)
    answers["correctness"] = answer_correctness(answers)
    return answers, pd.DataFrame(maps), arrays


PARAMS = {"seed": 0, "bootstrap_samples": 200, "confidence": 0.95}


def test_pairs_and_groups_known_by_hand():
    answers, maps, arrays = _planted()
    pairs = pairs_table(answers, maps, arrays, params=PARAMS)
    assert len(pairs) == 12  # 3 groups x 4 variants; the plain question is not a variant
    assert "plain" not in set(pairs["strategy"])
    directions = pairs["direction"].value_counts().to_dict()
    assert directions == {
        "stays_correct": 3 + 4,
        "correct_to_incorrect": 1,
        "incorrect_to_correct": 2,
        "stays_incorrect": 2,
    }
    flips = pairs[pairs["direction"] == "correct_to_incorrect"].iloc[0]
    for key, value in DISJOINT.items():
        assert flips[key] == pytest.approx(value)
    for row in pairs[pairs["direction"] == "incorrect_to_correct"].itertuples():
        for key, value in HALF_CHANGE.items():
            assert getattr(row, key) == pytest.approx(value)
    for row in pairs.itertuples():
        p = arrays[row.map_id_baseline].ravel().astype(float)
        q = arrays[row.map_id_variant].ravel().astype(float)
        assert row.js_base2 == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)
        assert row.js_natural == pytest.approx(jensenshannon(p, q) ** 2, abs=1e-12)
        assert row.js_distance_natural == pytest.approx(jensenshannon(p, q), abs=1e-12)
        # The conversion between the reference's natural-log value and ours.
        assert row.js_natural == pytest.approx(row.js_base2 * math.log(2), abs=1e-12)
        assert row.pearson == pytest.approx(np.corrcoef(p, q)[0, 1], abs=1e-12)
        assert row.cosine == pytest.approx(p @ q / np.linalg.norm(p) / np.linalg.norm(q))

    groups = group_table(pairs).set_index("dicom_id")
    assert groups["consistency"].to_dict() == {"d1": 0.75, "d2": 0.5, "d3": 1.0}
    assert groups["perfect"].to_dict() == {"d1": False, "d2": False, "d3": True}
    assert groups.loc["d1", "n_flips_correct_to_incorrect"] == 1
    assert groups.loc["d2", "n_flips_incorrect_to_correct"] == 2


def test_pearson_and_cosine_known_answers():
    assert pearson_correlation(_one_hot(0), _one_hot(1)) == pytest.approx(-1 / 255)
    assert cosine_similarity(_one_hot(0), _one_hot(1)) == 0
    assert cosine_similarity(_one_hot(0), HALF) == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(pearson_correlation(np.ones(N), _one_hot(3)))  # constant map


def test_variant_accuracy():
    answers, maps, arrays = _planted()
    table = variant_accuracy_table(answers, pairs_table(answers, maps, arrays, params=PARAMS))
    table = table.set_index("variant_kind")
    assert table.loc["baseline", "accuracy"] == pytest.approx(2 / 3)
    # phrasing_variation (variant 1): d1 yes (correct), d2 no (correct), d3 no (correct)
    assert table.loc["phrasing_variation", "accuracy"] == 1
    # voice_change (variant 4): d1 yes (correct), d2 yes (incorrect), d3 no (correct)
    assert table.loc["voice_change", "accuracy"] == pytest.approx(2 / 3)
    assert table.loc["synonym_replacement", "n"] == 6


def test_paper_comparison_known_by_hand():
    answers, maps, arrays = _planted()
    reference = load_reference(REPO_ROOT / "config" / "paper_reference.yaml")
    table = paper_comparison(answers, maps, arrays, reference, params=PARAMS)
    assert list(table.columns) == COMPARISON_COLUMNS
    assert table["quantity"].tolist() == [r["quantity"] for r in reference]
    ours = table.set_index("quantity")["ours"]
    n = table.set_index("quantity")["n"]
    assert ours["accuracy_overall_baseline"] == pytest.approx(2 / 3)
    assert ours["accuracy_cardiomegaly"] == pytest.approx(2 / 3)
    assert math.isnan(ours["accuracy_edema"]) and n["accuracy_edema"] == 0
    assert ours["question_groups_count"] == 3
    assert ours["question_variations_count"] == 15  # 12 variants + 3 baselines, as the reference
    assert ours["consistency_mean"] == pytest.approx(0.75)
    assert ours["consistency_sd"] == pytest.approx(0.25)
    assert ours["groups_perfect_count"] == 1 and ours["groups_variable_count"] == 2
    assert ours["groups_perfect_share"] == pytest.approx(1 / 3)
    js_distance_disjoint = math.sqrt(math.log(2))
    js_distance_half = math.sqrt(0.75 * math.log(4 / 3))
    assert ours["js_correct_to_incorrect"] == pytest.approx(js_distance_disjoint)
    assert ours["js_incorrect_to_correct"] == pytest.approx(js_distance_half)
    # The paper's 0.118 / 0.932 / 0.956 are of answer flips only: ours are of the 3 flips (d1's
    # "no", d2's two "no"s), every pair's mean a separate row.
    flips_js = js_distance_disjoint + 2 * js_distance_half
    assert ours["js_mean"] == pytest.approx(flips_js / 3) and n["js_mean"] == 3
    assert ours["js_mean_all_pairs"] == pytest.approx(flips_js / 12)
    assert n["js_mean_all_pairs"] == 12
    expected_base2 = (DISJOINT["js_base2"] + 2 * HALF_CHANGE["js_base2"]) / 12
    assert ours["js_base2_mean"] == pytest.approx(expected_base2)
    # Pairs whose answer changed: d1's "no", d2's two "no"s (baseline yes) -> 3 pairs.
    assert n["js_base2_changed_answers_mean"] == 3
    flips_pearson = [DISJOINT["pearson"]] + [HALF_CHANGE["pearson"]] * 2
    assert ours["pearson_mean"] == pytest.approx(np.mean(flips_pearson))
    assert ours["pearson_sd"] == pytest.approx(np.std(flips_pearson, ddof=1))
    assert ours["pearson_mean_all_pairs"] == pytest.approx(np.mean([1.0] * 9 + flips_pearson))
    flips_cosine = [DISJOINT["cosine"]] + [HALF_CHANGE["cosine"]] * 2
    assert ours["cosine_mean"] == pytest.approx(np.mean(flips_cosine))
    assert ours["inside_body_share"] == pytest.approx((0.9 + 0.9 + 0.6) / 3)
    counts = table[table["quantity"].str.endswith("_count")]
    assert counts["ci_low"].isna().all()
    interval = table.set_index("quantity").loc["consistency_mean"]
    assert interval["ci_low"] <= 0.75 <= interval["ci_high"]


def test_agreement_sentences():
    inside = {"quantity": "consistency_mean", "paper_value": 0.903, "ours": 0.88}
    inside.update(ci_low=0.8, ci_high=0.95, n=63)
    assert "inside our interval" in agreement_sentence(inside)
    assert "90.3%" in agreement_sentence(inside)
    above = {**inside, "ours": 0.5, "ci_low": 0.4, "ci_high": 0.6}
    assert "above our interval" in agreement_sentence(pd.Series(above))
    count = {"quantity": "question_groups_count", "paper_value": 63, "ours": 63}
    count.update(ci_low=math.nan, ci_high=math.nan, n=63)
    assert "equals" in agreement_sentence(count)
    missing = {**inside, "ours": math.nan, "n": 0}
    assert "not computable" in agreement_sentence(missing)
    no_paper = {**inside, "paper_value": math.nan}
    assert "no value" in agreement_sentence(no_paper)


def test_reference_yaml_is_valid_and_holds_the_issue_values():
    reference = {
        r["quantity"]: r for r in load_reference(REPO_ROOT / "config/paper_reference.yaml")
    }
    values = {k: r["paper_value"] for k, r in reference.items()}
    assert values["accuracy_overall_baseline"] == 0.74
    assert values["question_groups_count"] == 63 and values["question_variations_count"] == 600
    assert values["consistency_mean"] == 0.903 and values["consistency_sd"] == 0.161
    assert values["groups_perfect_count"] == 43 and values["groups_variable_count"] == 20
    assert values["js_mean"] == 0.118 and values["js_sd"] == 0.023
    assert values["pearson_mean"] == 0.932 and values["cosine_mean"] == 0.956
    assert values["js_correct_to_incorrect"] == 0.115
    assert values["js_incorrect_to_correct"] == 0.121
    assert values["inside_body_share"] == 0.9999
    assert values["accuracy_cardiomegaly"] == 0.25 and values["accuracy_edema"] == 0.571
    assert all("note" in r for r in reference.values())
    # Like with like: every map-change row with a paper value is of answer flips.
    for row in reference.values():
        if row["statistic"].startswith("map_change") and row["paper_value"] is not None:
            assert row["direction"] in ("changed", "correct_to_incorrect", "incorrect_to_correct")


def test_load_reference_rejects_unknown_statistics(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("quantities:\n  - {quantity: x, statistic: nonsense, paper_value: 1}\n")
    with pytest.raises(ConfigError, match="nonsense"):
        load_reference(bad)
    bad.write_text("quantities:\n  - {quantity: x, statistic: map_change_mean, paper_value: 1}\n")
    with pytest.raises(ConfigError, match="measure"):
        load_reference(bad)


def test_run_paper_comparison_writes_deterministic_tables(tmp_path, synthetic_study, study_writer):
    paths = study_writer(synthetic_study, tmp_path)
    reference_yaml = REPO_ROOT / "config" / "paper_reference.yaml"
    for name in ("a", "b"):
        run_paper_comparison(
            **paths,
            reference_yaml=reference_yaml,
            out_csv=tmp_path / name / "paper_comparison.csv",
            params=PARAMS,
            tables_dir=tmp_path / name,
        )
    for file in ("paper_comparison.csv", "paper_pairs.csv", "paper_groups.csv"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    table = pd.read_csv(tmp_path / "a" / "paper_comparison.csv")
    assert list(table.columns) == COMPARISON_COLUMNS
    groups = pd.read_csv(tmp_path / "a" / "paper_groups.csv")
    assert len(groups) == 12 * 2  # every image x finding has a baseline with 3 variants
    assert (groups["n_variants"] == 3).all()
    ours = table.set_index("quantity")["ours"]
    assert ours["consistency_mean"] == pytest.approx(groups["consistency"].mean())
    assert ours["question_groups_count"] == 24
