"""Statistics of the answers: accuracy, AUROC of P(yes) and consistency across phrasings.

Intervals are patient-level cluster-bootstrap intervals (:mod:`cxr_attention.metrics.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cxr_attention.metrics.bootstrap import bootstrap_mean, cluster_bootstrap, weighted_auroc
from cxr_attention.metrics.study import bootstrap_kwargs, study_params
from cxr_attention.metrics.tables import group_combinations

__all__ = ["NOT_VARIANTS", "accuracy_table", "auroc_table", "consistency_table", "is_unclear"]


def is_unclear(answers: pd.DataFrame) -> pd.Series:
    """True where the parsed answer is neither yes nor no."""
    return ~answers["answer"].astype(str).str.lower().isin(["yes", "no"])


def accuracy_table(
    answers: pd.DataFrame, *, by: Sequence[str] = ("strategy",), params: Mapping | None = None
) -> pd.DataFrame:
    """Accuracy with a patient-bootstrap CI per group of ``by`` (each also as ``"all"``).

    An ``unclear`` answer counts as incorrect in ``accuracy``; beside it are the unclear rate
    (with its own patient-bootstrap CI) and ``accuracy_answered``, the accuracy over the yes/no
    answers only, so that a model that hedges is not mistaken for one that errs.

    Returns columns ``*by, accuracy, ci_low, ci_high, n, n_correct, n_subjects, n_unclear,
    unclear_rate, unclear_ci_low, unclear_ci_high, accuracy_answered, n_answered``; answers with
    no expected answer are left out.
    """
    params = study_params(params)
    scored = answers[answers["correctness"].notna()]
    scored = scored.assign(_unclear=is_unclear(scored).astype(float))
    rows = []
    keys = list(by)
    for combo in group_combinations(scored, keys):
        values, subset = combo
        estimate = bootstrap_mean(
            subset["correctness"], subset["subject_id"], **bootstrap_kwargs(params)
        )
        unclear = bootstrap_mean(
            subset["_unclear"], subset["subject_id"], **bootstrap_kwargs(params)
        )
        answered = subset.loc[subset["_unclear"] == 0, "correctness"]
        rows.append(
            {
                **values,
                "accuracy": estimate.value,
                "ci_low": estimate.ci_low,
                "ci_high": estimate.ci_high,
                "n": estimate.n,
                "n_correct": int(subset["correctness"].sum()),
                "n_subjects": estimate.n_clusters,
                "n_unclear": int(subset["_unclear"].sum()),
                "unclear_rate": unclear.value,
                "unclear_ci_low": unclear.ci_low,
                "unclear_ci_high": unclear.ci_high,
                "accuracy_answered": float(answered.mean()) if len(answered) else np.nan,
                "n_answered": len(answered),
            }
        )
    columns = [*keys, "accuracy", "ci_low", "ci_high", "n", "n_correct", "n_subjects"]
    columns += ["n_unclear", "unclear_rate", "unclear_ci_low", "unclear_ci_high"]
    columns += ["accuracy_answered", "n_answered"]
    return pd.DataFrame(rows, columns=columns).sort_values(keys, kind="mergesort")


def auroc_table(answers: pd.DataFrame, *, params: Mapping | None = None) -> pd.DataFrame:
    """AUROC of ``p_yes`` against the expected answer per finding and strategy (and ``"all"``).

    Returns columns ``finding, strategy, auroc, ci_low, ci_high, n, n_positive, n_negative,
    n_subjects``; AUROC is NaN when one class is absent.
    """
    params = study_params(params)
    expected = answers["expected"].astype(str).str.lower()
    scored = answers[expected.isin(["yes", "no"]) & answers["p_yes"].notna()].copy()
    scored["positive"] = scored["expected"].str.lower() == "yes"
    rows = []
    for values, subset in group_combinations(scored, ["finding", "strategy"]):
        scores = subset["p_yes"].to_numpy(np.float64)
        labels = subset["positive"].to_numpy(bool)
        estimate = cluster_bootstrap(
            lambda w, s=scores, y=labels: weighted_auroc(s, y, w),
            subset["subject_id"].tolist(),
            **bootstrap_kwargs(params),
        )
        rows.append(
            {
                **values,
                "auroc": estimate.value,
                "ci_low": estimate.ci_low,
                "ci_high": estimate.ci_high,
                "n": estimate.n,
                "n_positive": int(labels.sum()),
                "n_negative": int((~labels).sum()),
                "n_subjects": estimate.n_clusters,
            }
        )
    columns = ["finding", "strategy", "auroc", "ci_low", "ci_high", "n"]
    columns += ["n_positive", "n_negative", "n_subjects"]
    return pd.DataFrame(rows, columns=columns).sort_values(
        ["finding", "strategy"], kind="mergesort"
    )


def _group_key(answers: pd.DataFrame) -> pd.Series:
    """Baseline question of each row: its ``baseline_question_id``, else its own question."""
    baseline = answers["baseline_question_id"].astype(str)
    return baseline.where(baseline != "", answers["question_id"])


#: Strategies that are not meaning-preserving variants of a baseline question, though their rows
#: may name one: a plain-language question asks the same thing in other words *and* register.
NOT_VARIANTS = ("plain",)


def consistency_table(
    answers: pd.DataFrame, *, not_variants: Sequence[str] = NOT_VARIANTS
) -> pd.DataFrame:
    """Answer consistency of question groups, two kinds.

    - ``variants``: one baseline question on one image with all its variants (the rows whose
      ``baseline_question_id`` is that question, and the question itself), strategies
      ``not_variants`` (``plain``) left out;
    - ``strategies``: every question of every strategy about one finding on one image.

    A group is ``consistent`` when all its answers are the same yes or no: an ``unclear`` answer
    makes it inconsistent (a model that never commits is not consistent). ``agreement`` is the
    share of answers equal to the most common one. Groups of a single question are left out.
    """
    frame = answers.copy()
    frame["group"] = _group_key(frame)
    rows = []
    kinds = {"variants": ["dicom_id", "group"], "strategies": ["dicom_id", "finding"]}
    variant_rows = ~frame["strategy"].isin(list(not_variants))
    for kind, keys in kinds.items():
        source = frame[variant_rows] if kind == "variants" else frame
        for key, subset in source.groupby(keys, sort=True):
            if len(subset) < 2:
                continue
            answer = subset["answer"].astype(str).str.lower()
            counts = answer.value_counts()
            rows.append(
                {
                    "kind": kind,
                    "dicom_id": key[0],
                    "subject_id": subset["subject_id"].iloc[0],
                    "finding": subset["finding"].iloc[0],
                    "group": key[1] if kind == "variants" else f"{key[1]}.*",
                    "n_questions": len(subset),
                    "n_yes": int((answer == "yes").sum()),
                    "n_no": int((answer == "no").sum()),
                    "n_unclear": int((~answer.isin(["yes", "no"])).sum()),
                    "agreement": float(counts.iloc[0] / len(subset)),
                    "consistent": bool(counts.size == 1 and answer.isin(["yes", "no"]).all()),
                }
            )
    columns = ["kind", "dicom_id", "subject_id", "finding", "group", "n_questions"]
    columns += ["n_yes", "n_no", "n_unclear", "agreement", "consistent"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["kind", "dicom_id", "group"], kind="mergesort").reset_index(drop=True)
