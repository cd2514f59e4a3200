"""Study-level statistics against scipy / scikit-learn and a hand-written cluster bootstrap."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

from cxr_attention.metrics.answer_stats import accuracy_table, auroc_table, consistency_table
from cxr_attention.metrics.bootstrap import (
    bootstrap_mean,
    bootstrap_sd,
    cluster_bootstrap,
    weighted_auroc,
)
from cxr_attention.metrics.catalogue import MAP_METRICS, TESTED_METRICS
from cxr_attention.metrics.map_stats import (
    correct_vs_incorrect_table,
    js_pairs_table,
    paired_tests_table,
)
from cxr_attention.metrics.pairwise import (
    js_band,
    js_base2_to_natural,
    js_distance,
    js_divergence,
    js_divergence_natural,
    js_natural_to_base2,
)
from cxr_attention.metrics.summary import run_study_statistics
from cxr_attention.metrics.tables import answer_correctness, read_answers, read_maps

PARAMS = {"seed": 7, "bootstrap_samples": 300, "confidence": 0.95}


def _scored(answers: pd.DataFrame) -> pd.DataFrame:
    answers = answers.copy()
    answers["correctness"] = answer_correctness(answers)
    return answers


# --------------------------------------------------------------------------- Jensen-Shannon


@pytest.mark.parametrize("seed", range(4))
def test_js_divergence_is_scipys_distance_squared(seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(256, 0.3)).reshape(16, 16)
    q = rng.dirichlet(np.full(256, 0.3)).reshape(16, 16)
    q.ravel()[:40] = 0  # zeros where p is not: the 0 log 0 convention
    q /= q.sum()
    base2 = js_divergence(p, q, base=2)
    assert base2 == pytest.approx(jensenshannon(p.ravel(), q.ravel(), base=2) ** 2, rel=1e-9)
    natural = js_divergence_natural(p, q)
    assert natural == pytest.approx(jensenshannon(p.ravel(), q.ravel()) ** 2, rel=1e-9)
    assert natural == pytest.approx(base2 * math.log(2), rel=1e-12)
    assert js_base2_to_natural(base2) == pytest.approx(natural, rel=1e-12)
    assert js_natural_to_base2(natural) == pytest.approx(base2, rel=1e-12)
    assert js_distance(p, q) == pytest.approx(jensenshannon(p.ravel(), q.ravel()), rel=1e-9)


def test_js_known_answers_and_bands():
    p, q = np.zeros(256), np.zeros(256)
    p[0], q[1] = 1, 1
    assert js_divergence(p, q) == pytest.approx(1)  # disjoint supports: the maximum, 1 bit
    assert js_divergence_natural(p, q) == pytest.approx(math.log(2))
    assert js_divergence(p, p) == 0
    half = np.zeros(256)
    half[:2] = 0.5
    assert js_divergence(p, half) == pytest.approx(0.75 * math.log2(4 / 3))
    assert [js_band(v) for v in (0.0, 0.19, 0.2, 0.5, 0.51, math.nan)] == [
        "minor",
        "minor",
        "moderate",
        "moderate",
        "large",
        "undefined",
    ]
    with pytest.raises(ValueError):
        js_divergence(p, np.zeros(255))
    with pytest.raises(ValueError):
        js_divergence(p, -q)


# --------------------------------------------------------------------------- bootstrap


def _naive_cluster_bootstrap_mean(values, clusters, n_boot, seed, confidence=0.95):
    """Oracle written from the definition: draw patients, take all their rows, average."""
    unique = sorted(set(clusters))
    rows_of = {c: [v for v, k in zip(values, clusters, strict=True) if k == c] for c in unique}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(unique), size=(n_boot, len(unique)))
    means = [np.mean([v for i in draw for v in rows_of[unique[i]]]) for draw in draws]
    tail = 100 * (1 - confidence) / 2
    return np.percentile(means, [tail, 100 - tail])


def test_bootstrap_mean_resamples_patients():
    rng = np.random.default_rng(1)
    clusters = [f"s{i}" for i in rng.integers(0, 9, size=40)]
    values = rng.random(40)
    estimate = bootstrap_mean(values, clusters, n_boot=500, seed=3)
    low, high = _naive_cluster_bootstrap_mean(list(values), clusters, 500, 3)
    assert estimate.value == pytest.approx(values.mean())
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((low, high), rel=1e-12)
    assert estimate.n == 40 and estimate.n_clusters == 9
    # The generic weighted path draws the same resamples.
    generic = cluster_bootstrap(
        lambda w: np.sum(w * values) / np.sum(w), clusters, n_boot=500, seed=3
    )
    assert (generic.ci_low, generic.ci_high) == pytest.approx((low, high), rel=1e-12)


def test_duplicating_a_patients_rows_does_not_narrow_the_interval():
    """Rows of one patient move together: repeating each patient's one value leaves the CI alone."""
    values = np.array([0.1, 0.5, 0.9, 0.3, 0.7])
    clusters = ["a", "b", "c", "d", "e"]
    single = bootstrap_mean(values, clusters, n_boot=400, seed=0)
    repeated = bootstrap_mean(np.repeat(values, 4), np.repeat(clusters, 4), n_boot=400, seed=0)
    assert (repeated.ci_low, repeated.ci_high) == pytest.approx((single.ci_low, single.ci_high))
    row_level = bootstrap_mean(np.repeat(values, 4), [str(i) for i in range(20)], seed=0)
    assert row_level.ci_high - row_level.ci_low < single.ci_high - single.ci_low


def test_bootstrap_sd_matches_weighted_generic():
    rng = np.random.default_rng(2)
    values = rng.normal(size=30)
    clusters = [f"s{i % 7}" for i in range(30)]

    def weighted_sd(w):
        mean = np.sum(w * values) / np.sum(w)
        return math.sqrt(np.sum(w * (values - mean) ** 2) / (np.sum(w) - 1))

    fast = bootstrap_sd(values, clusters, n_boot=300, seed=5)
    slow = cluster_bootstrap(weighted_sd, clusters, n_boot=300, seed=5)
    assert fast.value == pytest.approx(np.std(values, ddof=1))
    assert (fast.ci_low, fast.ci_high) == pytest.approx((slow.ci_low, slow.ci_high), rel=1e-9)


def test_bootstrap_with_one_patient_has_no_interval():
    estimate = bootstrap_mean([0.2, 0.4], ["s1", "s1"])
    assert estimate.value == pytest.approx(0.3)
    assert math.isnan(estimate.ci_low) and math.isnan(estimate.ci_high)


# --------------------------------------------------------------------------- AUROC


@pytest.mark.parametrize("seed", range(3))
def test_weighted_auroc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(60), 1)  # rounded: many ties
    labels = rng.random(60) < 0.4
    weights = rng.integers(0, 4, size=60).astype(float)
    assert weighted_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert weighted_auroc(scores, labels, weights) == pytest.approx(
        roc_auc_score(labels, scores, sample_weight=weights)
    )
    assert math.isnan(weighted_auroc(scores, np.zeros(60, bool)))


def test_auroc_table_matches_sklearn(synthetic_study):
    answers = _scored(synthetic_study["answers"])
    table = auroc_table(answers, params=PARAMS)
    for row in table.itertuples(index=False):
        subset = answers
        if row.finding != "all":
            subset = subset[subset["finding"] == row.finding]
        if row.strategy != "all":
            subset = subset[subset["strategy"] == row.strategy]
        labels = subset["expected"] == "yes"
        if labels.nunique() < 2:
            assert math.isnan(row.auroc)
            continue
        assert row.auroc == pytest.approx(roc_auc_score(labels, subset["p_yes"]))
        assert row.ci_low <= row.auroc <= row.ci_high
        assert row.n == len(subset)
    one_class = answers[answers["expected"] == "yes"]
    assert auroc_table(one_class, params=PARAMS)["auroc"].isna().all()


# --------------------------------------------------------------------------- accuracy, consistency


def test_answer_correctness():
    table = pd.DataFrame(
        {
            "answer": ["yes", "no", "unclear", "yes", "no"],
            "expected": ["yes", "yes", "no", "", ""],
            "correct": ["", "", "", "True", ""],
        }
    )
    result = answer_correctness(table).tolist()
    assert result[:4] == [1.0, 0.0, 0.0, 1.0]
    assert math.isnan(result[4])


def test_accuracy_table(synthetic_study):
    answers = _scored(synthetic_study["answers"])
    table = accuracy_table(answers, by=["finding", "strategy"], params=PARAMS)
    for row in table.itertuples(index=False):
        subset = answers
        if row.finding != "all":
            subset = subset[subset["finding"] == row.finding]
        if row.strategy != "all":
            subset = subset[subset["strategy"] == row.strategy]
        correct = (subset["answer"] == subset["expected"]).to_numpy()
        assert row.accuracy == pytest.approx(correct.mean())
        assert row.n == len(subset) and row.n_correct == correct.sum()
        assert row.n_subjects == subset["subject_id"].nunique()
        assert row.ci_low <= row.accuracy <= row.ci_high
    assert len(table) == 3 * 4  # (2 findings + all) x (3 strategies + all)


def test_consistency_table_planted():
    rows = []
    planted = {"d1": ["yes", "yes", "yes", "yes"], "d2": ["yes", "no", "yes", "unclear"]}
    for dicom_id, answers in planted.items():
        for k, answer in enumerate(answers):
            strategy = "baseline" if k == 0 else "hard_positive"
            rows.append(
                {
                    "sample_id": f"{dicom_id}__f.{strategy}.{k}",
                    "dicom_id": dicom_id,
                    "subject_id": "s" + dicom_id,
                    "question_id": f"f.{strategy}.{k}",
                    "finding": "f",
                    "strategy": strategy,
                    "baseline_question_id": "" if k == 0 else "f.baseline.0",
                    "answer": answer,
                }
            )
    table = consistency_table(pd.DataFrame(rows))
    variants = table[table["kind"] == "variants"].set_index("dicom_id")
    assert variants.loc["d1", "consistent"] and variants.loc["d1", "agreement"] == 1
    assert not variants.loc["d2", "consistent"]
    assert variants.loc["d2", "agreement"] == 0.5
    assert variants.loc["d2", ["n_yes", "n_no", "n_unclear"]].tolist() == [2, 1, 1]
    assert set(table["kind"]) == {"variants", "strategies"}


# --------------------------------------------------------------------------- maps


def test_js_pairs_table_against_scipy(synthetic_study):
    answers = _scored(synthetic_study["answers"])
    arrays = synthetic_study["arrays"]
    table = js_pairs_table(answers, synthetic_study["maps"], arrays)
    # Per image and finding: the baseline against the plain and the three variants.
    assert len(table) == 12 * 2 * 4
    assert set(table["strategy_b"]) == {"plain", "hard_positive"}
    for row in table.itertuples(index=False):
        p, q = arrays[row.map_id_a].ravel(), arrays[row.map_id_b].ravel()
        expected = jensenshannon(p.astype(float), q.astype(float), base=2) ** 2
        assert row.js_divergence == pytest.approx(expected, rel=1e-6)
        assert 0 <= row.js_divergence <= 1
        assert row.band == js_band(row.js_divergence)
        assert row.question_id_a.endswith("baseline.0")


def test_correct_vs_incorrect_tests_patient_means_with_holm(synthetic_study):
    answers = _scored(synthetic_study["answers"])
    maps = synthetic_study["maps"].merge(synthetic_study["metrics"], on="map_id")
    table = correct_vs_incorrect_table(maps, answers)
    present = [m for m in TESTED_METRICS if m in maps.columns]
    assert set(table["metric"]) == set(present)
    assert set(table["method"]) == {"attention"}
    joined = maps.merge(answers[["sample_id", "correctness", "strategy", "subject_id"]])
    # The oracle: one value per patient and side (the mean of its maps), then scipy.
    by_patient = joined.groupby(["subject_id", "correctness"])[present].mean().reset_index()
    for metric in ("entropy", "inside_body"):
        row = table[
            (table["metric"] == metric) & (table["source"] == "all") & (table["strategy"] == "all")
        ].iloc[0]
        correct = by_patient.loc[by_patient["correctness"] == 1, metric]
        wrong = by_patient.loc[by_patient["correctness"] == 0, metric]
        result = stats.mannwhitneyu(correct, wrong, alternative="two-sided")
        assert row["u_statistic"] == pytest.approx(result.statistic)
        assert row["p_value"] == pytest.approx(result.pvalue)
        assert row["n_correct"] == len(correct) and row["n_incorrect"] == len(wrong)
        assert row["n_correct"] <= joined["subject_id"].nunique()  # patients, not maps
        assert row["median_correct"] == pytest.approx(np.median(correct))
    # Holm over the family of one method, rows, source and strategy: statsmodels' values.
    family = table[(table["source"] == "all") & (table["strategy"] == "all")]
    expected = multipletests(family["p_value"].to_numpy(), method="holm")[1]
    assert family["p_adjusted"].to_numpy() == pytest.approx(expected)
    assert family["family"].nunique() == 1


def test_paired_tests_are_per_patient_with_holm(synthetic_study):
    answers = _scored(synthetic_study["answers"])
    maps = synthetic_study["maps"].merge(synthetic_study["metrics"], on="map_id")
    table = paired_tests_table(maps, answers, source="answer")
    joined = maps.merge(answers[["sample_id", "strategy", "subject_id"]], on="sample_id")
    per_patient = joined.pivot_table(index="subject_id", columns="strategy", values="focus")
    row = table[
        (table["quantity"] == "focus")
        & (table["strategy_a"] == "baseline")
        & (table["strategy_b"] == "hard_positive")
    ].iloc[0]
    expected = stats.wilcoxon(per_patient["baseline"], per_patient["hard_positive"])
    assert row["n_pairs"] == 6  # 12 images of 6 patients
    assert row["statistic"] == pytest.approx(expected.statistic)
    assert row["p_value"] == pytest.approx(expected.pvalue)
    family = table[table["family"] == row["family"]]
    finite = family[family["p_value"].notna()]
    adjusted = multipletests(finite["p_value"].to_numpy(), method="holm")[1]
    assert finite["p_adjusted"].to_numpy() == pytest.approx(adjusted)


def test_paired_test_with_identical_values_is_nan():
    answers = pd.DataFrame(
        {
            "sample_id": ["a", "b", "c", "d"],
            "dicom_id": ["d1", "d1", "d2", "d2"],
            "subject_id": ["s1", "s1", "s2", "s2"],
            "finding": "f",
            "strategy": ["baseline", "plain"] * 2,
            "correctness": [1.0, 1.0, 0.0, 0.0],
        }
    )
    maps = pd.DataFrame(
        {
            "map_id": list("ABCD"),
            "sample_id": list("abcd"),
            "dicom_id": ["d1", "d1", "d2", "d2"],
            "term": "answer",
            "source": "answer",
            "method": "attention",
            **{m: 0.5 for m in MAP_METRICS},
        }
    )
    table = paired_tests_table(maps, answers, source="answer")
    assert table["p_value"].isna().all()


# --------------------------------------------------------------------------- end to end


def test_run_study_statistics_writes_every_table_deterministically(
    tmp_path, synthetic_study, study_writer
):
    paths = study_writer(synthetic_study, tmp_path)
    for out in ("run1", "run2"):
        run_study_statistics(**paths, out_dir=tmp_path / out, params=PARAMS)
    names = [
        "summary.json",
        "accuracy_by_strategy.csv",
        "accuracy_by_finding.csv",
        "auroc.csv",
        "consistency.csv",
        "js_divergence.csv",
        "correct_vs_incorrect.csv",
        "paired_tests.csv",
        "map_quality_by_method.csv",
        "js_by_method.csv",
        "js_null.csv",
        "entropy_null.csv",
        "fallbacks.csv",
        "label_policy.csv",
    ]
    for name in names:
        first = (tmp_path / "run1" / name).read_bytes()
        assert first == (tmp_path / "run2" / name).read_bytes(), name
    summary = json.loads((tmp_path / "run1" / "summary.json").read_text())
    answers = read_answers(paths["answers_csv"])
    assert summary["n_images"] == 12 and summary["n_subjects"] == 6
    assert summary["n_samples"] == len(answers)
    overall = (answers["answer"] == answers["expected"]).mean()
    assert summary["accuracy"]["overall"] == pytest.approx(overall)
    for strategy in ("baseline", "plain", "hard_positive"):
        assert summary["accuracy"][f"{strategy}_ci_low"] <= summary["accuracy"][strategy]
    maps = read_maps(paths["maps_csv"], paths["metrics_csv"])
    quality = summary["map_quality"]
    assert quality["inside_body_mean"] == pytest.approx(maps["inside_body"].mean())
    assert quality["inside_body_share_meeting_target"] == pytest.approx(
        (maps["inside_body"] >= 0.7).mean()
    )
    # The synthetic metrics have no area shares: the verdicts against chance cannot be met.
    assert summary["targets_met"]["inside_body_lift_gt_1"] is False
    assert set(summary["by_method"]) == {"answer/attention/-"}
    assert summary["fallbacks"]["all/attention"]["share"] == 1
    assert len(summary["label_policy"]) == 6
    js = pd.read_csv(tmp_path / "run1" / "js_divergence.csv")
    assert summary["js_divergence"]["mean"] == pytest.approx(js["js_divergence"].mean())
    assert "NaN" not in (tmp_path / "run1" / "summary.json").read_text()


def test_gathered_run_layout_gives_the_same_tables(tmp_path, synthetic_study, study_writer):
    """The workflow passes the gathered maps table (maps + metrics + sample columns) only."""
    paths = study_writer(synthetic_study, tmp_path)
    run_study_statistics(**paths, out_dir=tmp_path / "explicit", params=PARAMS)
    run_dir = tmp_path / "results" / "demo"
    (run_dir / "metrics").mkdir(parents=True)
    (run_dir / "maps").mkdir()
    answers = synthetic_study["answers"]
    gathered = synthetic_study["maps"].merge(synthetic_study["metrics"], on="map_id")
    gathered = gathered.merge(
        answers[["sample_id", "subject_id", "finding", "strategy", "answer", "correct"]],
        on="sample_id",
    )
    gathered.to_csv(run_dir / "metrics" / "maps.csv", index=False)
    answers.to_csv(run_dir / "metrics" / "answers.csv", index=False)
    for k, shard in enumerate(paths["maps_npz"]):
        (run_dir / "maps" / f"shard-{k}.npz").write_bytes(shard.read_bytes())
    run_study_statistics(
        answers_csv=run_dir / "metrics" / "answers.csv",
        maps_csv=run_dir / "metrics" / "maps.csv",
        out_dir=run_dir / "metrics",
        params=PARAMS,
    )
    for name in ("js_divergence.csv", "correct_vs_incorrect.csv", "paired_tests.csv", "auroc.csv"):
        expected = (tmp_path / "explicit" / name).read_bytes()
        assert (run_dir / "metrics" / name).read_bytes() == expected, name
