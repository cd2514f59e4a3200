"""Consistency, unclear answers, label policies, P(yes) agreement and fallback rates, by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cxr_attention.metrics.answer_stats import accuracy_table, consistency_table
from cxr_attention.metrics.label_policy import label_policy_table
from cxr_attention.metrics.method_stats import fallback_table
from cxr_attention.metrics.summary import answer_agreement_summary
from cxr_attention.metrics.tables import answer_correctness

PARAMS = {"seed": 0, "bootstrap_samples": 200, "confidence": 0.95}


def _row(dicom_id, question_id, strategy, answer, baseline="", **extra) -> dict:
    return {
        "sample_id": f"{dicom_id}__{question_id}",
        "dicom_id": dicom_id,
        "subject_id": f"s{dicom_id}",
        "question_id": question_id,
        "finding": "edema",
        "strategy": strategy,
        "baseline_question_id": baseline,
        "answer": answer,
        **extra,
    }


def test_variants_leave_plain_out_and_unclear_is_not_consistent():
    base = "edema.baseline.0"
    rows = [
        # d1: baseline and both variants say yes; the plain question (naming the baseline as
        # its baseline question) says no. The variants group is consistent.
        _row("d1", base, "baseline", "yes"),
        _row("d1", "edema.hard.1", "hard_positive", "yes", base),
        _row("d1", "edema.hard.2", "hard_positive", "yes", base),
        _row("d1", "edema.plain.0", "plain", "no", base),
        # d2: every answer unclear: the same answer, but no answer at all.
        _row("d2", base, "baseline", "unclear"),
        _row("d2", "edema.hard.1", "hard_positive", "unclear", base),
    ]
    table = consistency_table(pd.DataFrame(rows))
    variants = table[table["kind"] == "variants"].set_index("dicom_id")
    assert variants.loc["d1", "n_questions"] == 3
    assert bool(variants.loc["d1", "consistent"])
    assert not bool(variants.loc["d2", "consistent"])
    strategies = table[table["kind"] == "strategies"].set_index("dicom_id")
    assert strategies.loc["d1", "n_questions"] == 4 and not strategies.loc["d1", "consistent"]


def test_unclear_rate_and_accuracy_without_unclear_beside_accuracy():
    answers = pd.DataFrame(
        [
            _row("d1", "q1", "baseline", "yes", expected="yes"),
            _row("d2", "q1", "baseline", "no", expected="yes"),
            _row("d3", "q1", "baseline", "unclear", expected="yes"),
            _row("d4", "q1", "baseline", "unclear", expected="no"),
        ]
    )
    answers["correctness"] = answer_correctness(answers)
    row = accuracy_table(answers, params=PARAMS).set_index("strategy").loc["all"]
    assert row["accuracy"] == pytest.approx(1 / 4)  # unclear counts as incorrect
    assert row["unclear_rate"] == pytest.approx(2 / 4) and row["n_unclear"] == 2
    assert row["accuracy_answered"] == pytest.approx(1 / 2) and row["n_answered"] == 2


def test_label_policy_table_rescores_every_policy():
    # Labels: positive, negative, uncertain, blank, and "No Finding" blank (a negative).
    answers = pd.DataFrame(
        [
            _row("d1", "edema.baseline.0", "baseline", "yes", label="1.0"),
            _row("d2", "edema.baseline.0", "baseline", "yes", label="0.0"),
            _row("d3", "edema.baseline.0", "baseline", "yes", label="-1.0"),
            _row("d4", "edema.baseline.0", "baseline", "no", label=""),
            {
                **_row("d5", "no_finding.baseline.0", "baseline", "unclear", label=""),
                "finding": "No Finding",
            },
        ]
    )
    table = label_policy_table(answers, params=PARAMS, run_policy=("exclude", "exclude"))
    table = table.set_index(["uncertain", "blank"])
    assert len(table) == 6 and table["run_policy"].sum() == 1
    ignore = table.loc[("exclude", "exclude")]
    # Scored: d1 (yes, right), d2 (yes, wrong), d5 (No Finding blank -> no; unclear, wrong).
    assert ignore["n"] == 3 and ignore["n_negative"] == 2
    assert ignore["accuracy"] == pytest.approx(1 / 3)
    assert ignore["accuracy_answered"] == pytest.approx(1 / 2) and ignore["n_unclear"] == 1
    ones = table.loc[("positive", "negative")]
    # + d3 (uncertain -> yes, right) + d4 (blank -> no, right).
    assert ones["n"] == 5 and ones["accuracy"] == pytest.approx(3 / 5)
    zeros = table.loc[("negative", "exclude")]
    assert zeros["n"] == 4 and zeros["accuracy"] == pytest.approx(1 / 4)
    assert table.loc[("exclude", "exclude"), "uncertain_as"] == "ignore"


def test_p_yes_agreement_and_low_mass_count():
    answers = pd.DataFrame(
        {
            "answer": ["yes", "yes", "no", "no", "unclear"],
            "p_yes": [0.9, 0.3, 0.2, 0.5, 0.9],
            "yes_no_mass": [0.99, 0.98, 0.1, 0.97, 0.05],
            "low_yes_no_mass": [False, False, True, False, True],
        }
    )
    summary = answer_agreement_summary(answers)
    # Agree: yes/0.9, no/0.2; disagree: yes/0.3, no/0.5 (0.5 reads as yes). Unclear left out.
    assert summary["n_compared"] == 4
    assert summary["p_yes_agrees_share"] == pytest.approx(0.5)
    assert summary["n_low_yes_no_mass"] == 2
    assert summary["yes_no_mass_mean"] == pytest.approx(np.mean([0.99, 0.98, 0.1, 0.97, 0.05]))


def test_fallback_rates_per_method():
    maps = pd.DataFrame(
        {
            "map_id": [f"m{i}" for i in range(5)],
            "sample_id": ["a", "b", "c", "d", "e"],
            "term": "answer",
            "source": ["answer", "answer", "answer", "prompt", "prompt"],
            "method": ["attention", "attention", "gradcam", "gradcam", "uniform"],
            "fallback_reason": ["", "", "attention: low mass", "", "gradcam: failed"],
        }
    )
    table = fallback_table(maps).set_index(["source", "method"])
    assert table.loc[("all", "gradcam"), "n_maps"] == 2
    assert table.loc[("all", "gradcam"), "fallback_rate"] == pytest.approx(0.5)
    assert table.loc[("answer", "attention"), "share"] == pytest.approx(2 / 3)
    assert table.loc[("prompt", "uniform"), "fallback_rate"] == 1
    assert math.isclose(table.xs("all")["share"].sum(), 1.0)
