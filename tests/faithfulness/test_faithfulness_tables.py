"""The torch-free tables against hand-computed examples, scipy and scikit-image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from cxr_attention.faithfulness.randomisation import RANDOMISATION_COLUMNS, cascade_counts
from cxr_attention.faithfulness.reliance_tables import (
    against_original,
    consistency_reliance_table,
    reliance_summary,
    swap_partners,
)
from cxr_attention.faithfulness.similarity import (
    map_similarity,
    question_swap_pairs,
    question_swap_summary,
)
from cxr_attention.faithfulness.summary import (
    RANDOMISATION_SUMMARY_COLUMNS,
    paired_differences,
    randomisation_summary,
)

BOOT = {"n_boot": 200, "confidence": 0.95, "seed": 0}


def test_swap_partner_is_another_patient_same_view_opposite_label():
    manifest = pd.DataFrame(
        {
            "dicom_id": ["a", "b", "c", "d", "e"],
            "subject_id": ["1", "1", "2", "3", "4"],
            "view_position": ["PA", "PA", "PA", "AP", "PA"],
            "Cardiomegaly": [1.0, 0.0, 1.0, 0.0, -1.0],
        }
    )
    samples = pd.DataFrame(
        {
            "sample_id": ["a__q", "c__q", "e__q"],
            "dicom_id": ["a", "c", "e"],
            "subject_id": ["1", "2", "4"],
            "finding": ["Cardiomegaly"] * 3,
            "label": [1.0, 1.0, -1.0],
        }
    )
    partners = swap_partners(samples, manifest, seed=0)
    # a (patient 1, PA, positive): b is the same patient, d is AP: no partner.
    # c (patient 2, PA, positive): b (patient 1, PA, negative).
    # e: uncertain label, no partner.
    assert partners.tolist() == ["", "b", ""]


def _reliance_rows():
    rows = []
    # Patient 1: two paraphrases, consistent "yes"; blank flips both, text_only flips one.
    for question, blank, text in (("q0", "no", "no"), ("q1", "no", "yes")):
        rows += [
            ["i1__" + question, "i1", "1", question, "q0", "original", "yes", 0.9],
            ["i1__" + question, "i1", "1", question, "q0", "blank", blank, 0.3],
            ["i1__" + question, "i1", "1", question, "q0", "text_only", text, 0.6],
        ]
    # Patient 2: inconsistent paraphrases, nothing changes with the image.
    for question, answer, p in (("q0", "yes", 0.7), ("q1", "no", 0.4)):
        rows += [
            ["i2__" + question, "i2", "2", question, "q0", condition, answer, p]
            for condition in ("original", "blank", "text_only")
        ]
    columns = ["sample_id", "dicom_id", "subject_id", "question_id", "baseline_question_id"]
    return pd.DataFrame(rows, columns=[*columns, "condition", "answer", "p_yes"])


def test_reliance_summary_by_hand():
    summary = reliance_summary(_reliance_rows(), **BOOT).set_index("condition")
    assert summary.loc["blank", "share_unchanged"] == pytest.approx(2 / 4)
    assert summary.loc["text_only", "share_unchanged"] == pytest.approx(3 / 4)
    assert summary.loc["blank", "p_yes_shift"] == pytest.approx((-0.6 - 0.6 + 0 + 0) / 4)
    assert summary.loc["blank", "n_patients"] == 2
    assert summary.loc["blank", "share_ci_low"] <= 0.5 <= summary.loc["blank", "share_ci_high"]


def test_against_original_by_hand():
    """One sample as ``explain --reliance`` writes it: the swapped image was not built (blank
    answer), so it is left out; each other condition sits beside the original's 0.8 "yes"."""
    rows = pd.DataFrame(
        {
            "sample_id": "upload",
            "condition": ["original", "blank", "swapped", "occluded", "text_only"],
            "answer": ["yes", "no", "", "yes", "no"],
            "p_yes": [0.8, 0.3, np.nan, 0.9, 0.45],
        }
    )
    table = against_original(rows).set_index("condition")
    assert table.index.tolist() == ["blank", "occluded", "text_only"]
    assert table["unchanged"].tolist() == [False, True, False]
    np.testing.assert_allclose(table["p_yes_shift"], [-0.5, 0.1, -0.35])
    assert (table["original_answer"] == "yes").all()


def test_four_way_table_by_hand():
    table = consistency_reliance_table(_reliance_rows(), **BOOT)
    table = table.set_index(["paraphrase_consistent", "image_reliant"])
    assert table.loc[(True, True), "n_groups"] == 1  # image 1
    assert table.loc[(False, False), "n_groups"] == 1  # image 2
    assert table.loc[(True, False), "n_groups"] == 0 and table["share"].sum() == pytest.approx(1)


def test_map_similarity_matches_scipy_and_skimage():
    rng = np.random.default_rng(0)
    a, b = rng.random((16, 16)), rng.random((16, 16))
    rho, ssim = map_similarity(a, b)
    assert rho == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic)
    scaled = [(m - m.min()) / (m.max() - m.min()) for m in (a, b)]
    assert ssim == pytest.approx(structural_similarity(*scaled, data_range=1.0, win_size=7))
    assert map_similarity(a, 3 * a + 1) == pytest.approx((1.0, 1.0))
    assert np.isnan(map_similarity(np.ones((16, 16)), a)[0])


def test_question_swap_pairs_and_summary():
    rng = np.random.default_rng(1)
    base = rng.random((16, 16))
    arrays = {
        "e0": base,
        "e1": base + 0.01 * rng.random((16, 16)),  # a paraphrase: nearly the same map
        "c0": rng.random((16, 16)),  # another finding: unrelated map
    }
    maps = _baseline_paraphrase_and_swap()
    pairs = question_swap_pairs(maps, arrays)
    assert sorted(pairs["pair"]) == ["paraphrase", "swap"]  # e1-c0 is neither
    summary = question_swap_summary(pairs, **BOOT).set_index("pair")
    assert summary.loc["swap - paraphrase", "abs_spearman"] < -0.5


def test_question_swap_judges_a_reversed_map_as_alike():
    # the swapped finding's map is the baseline's negation: scipy's rho is -1, yet its ranking is
    # the baseline's reversed, as alike as the paraphrase (rho 1). By hand: |rho| swap - paraphrase
    # = 1 - 1 = 0, not the signed -1 - 1 = -2 that reads as "the map follows the question"
    base = np.random.default_rng(2).random((16, 16))
    arrays = {"e0": base, "e1": 2 * base + 1, "c0": -base}
    maps = _baseline_paraphrase_and_swap()
    pairs = question_swap_pairs(maps, arrays).set_index("pair")
    assert pairs.loc["swap", "spearman"] == pytest.approx(spearmanr(base.ravel(), -base.ravel())[0])
    assert pairs.loc["swap", "spearman"] == pytest.approx(-1.0)  # the per-pair table keeps the sign
    summary = question_swap_summary(pairs.reset_index(), **BOOT).set_index("pair")
    assert summary.loc["swap", "abs_spearman"] == pytest.approx(1.0)
    assert summary.loc["swap", "spearman"] == pytest.approx(-1.0)
    assert summary.loc["swap - paraphrase", "abs_spearman"] == pytest.approx(0.0, abs=1e-12)
    assert summary.loc["swap - paraphrase", "spearman"] == pytest.approx(-2.0)


def _randomisation_rows(original_and_randomised):
    """Rows as `cascading_randomisation` writes them (plus ``subject_id``), one per patient."""
    rows = []
    for subject, (original, randomised_map) in enumerate(original_and_randomised):
        rho, ssim = map_similarity(original, randomised_map)
        rows.append(
            {
                "subject_id": str(subject),
                "method": "attention",
                "part": "decoder",
                "layers_randomised": 2,
                "n_layers": 2,
                "spearman": rho,
                "ssim": ssim,
            }
        )
    return pd.DataFrame(rows, columns=["subject_id", *RANDOMISATION_COLUMNS])


def test_randomisation_summary_judges_the_absolute_spearman():
    # patient 0's randomised map is its map negated (scipy: rho -1), patient 1's a rescaled copy
    # (rho +1), patient 2's constant (no ranking: NaN, left out). By hand: the signed mean is 0,
    # which would read "no resemblance left", but both maps keep the original's whole ranking:
    # mean |rho| = (1 + 1) / 2 = 1, and every resample of two 1s is 1
    rng = np.random.default_rng(3)
    first, second, third = (rng.random((16, 16)) for _ in range(3))
    rows = _randomisation_rows(
        [(first, -first), (second, 3 * second + 1), (third, np.full((16, 16), 0.5))]
    )
    assert rows["spearman"].iloc[0] == pytest.approx(spearmanr(first.ravel(), -first.ravel())[0])
    assert rows["spearman"].iloc[0] == pytest.approx(-1.0)  # the per-row table keeps the sign
    summary = randomisation_summary(rows, **BOOT)
    assert list(summary.columns) == RANDOMISATION_SUMMARY_COLUMNS
    row = summary.iloc[0]
    assert row["abs_spearman"] == pytest.approx(1.0)
    assert row["abs_spearman_ci_low"] == pytest.approx(1.0)
    assert row["abs_spearman_ci_high"] == pytest.approx(1.0)
    assert row["spearman"] == pytest.approx(0.0, abs=1e-12)
    assert (row["n_maps"], row["n_patients"]) == (2, 2)


def test_paired_differences_with_road_combined():
    areas = pd.DataFrame(
        {
            "method": ["gradcam"] * 4,
            "perturbation": ["blur"] * 4,
            "curve": ["deletion", "insertion"] * 2,
            "auc": [0.2, 0.8, 0.4, 0.6],
            "random_auc_mean": [0.5, 0.5, 0.5, 0.5],
            "road_combined": [0.3, 0.3, 0.1, 0.1],
            "random_road_combined_mean": [0.0] * 4,
            "subject_id": ["1", "1", "2", "2"],
        }
    )
    table = paired_differences(areas, **BOOT).set_index("curve")
    assert table.loc["deletion", "difference"] == pytest.approx(-0.2)
    assert table.loc["insertion", "difference"] == pytest.approx(0.2)
    assert table.loc["road_combined", "difference"] == pytest.approx(0.2)
    assert table.loc["deletion", "n_patients"] == 2


def test_cascade_counts_reach_every_layer():
    # geomspace(1, 34, 4) = 1, 3.24, 10.49, 34
    assert cascade_counts(34, 4) == [1, 3, 10, 34]
    assert cascade_counts(2, 4) == [1, 2]


def test_subsample_is_seeded_and_capped():
    from cxr_attention.faithfulness.samples import subsample

    answers = pd.DataFrame({"sample_id": [f"s{i:02d}" for i in range(20)][::-1]})
    first = subsample(answers, 5, seed=0)
    assert len(first) == 5 and first["sample_id"].is_monotonic_increasing
    assert first.equals(subsample(answers.sample(frac=1, random_state=1), 5, seed=0))
    assert len(subsample(answers, None, seed=0)) == 20


def test_condition_images():
    from cxr_attention.faithfulness.reliance import MID_GREY, condition_images

    image = np.full((4, 6), 10, np.uint8)
    lungs = np.zeros((4, 6), np.uint8)
    lungs[1:3, 1:3] = 1
    lungs[1:3, 4] = 2
    images = condition_images(image, lungs, None)
    assert (images["blank"] == MID_GREY).all() and images["swapped"] is None
    assert (images["occluded"][lungs > 0] == MID_GREY).all()
    assert (images["occluded"][lungs == 0] == 10).all()
    with pytest.raises(ValueError, match="lung mask"):
        condition_images(image, lungs[:3], None)


def _baseline_paraphrase_and_swap() -> pd.DataFrame:
    """Maps table of one image: e0 the effusion baseline, e1 its paraphrase, c0 another finding."""
    return pd.DataFrame(
        {
            "map_id": ["e0", "e1", "c0"],
            "dicom_id": ["i"] * 3,
            "subject_id": ["1"] * 3,
            "method": ["attention"] * 3,
            "question_id": ["eff.b.0", "eff.p.0", "card.b.0"],
            "baseline_question_id": ["eff.b.0", "eff.b.0", "card.b.0"],
            "finding": ["Effusion", "Effusion", "Cardiomegaly"],
        }
    )
