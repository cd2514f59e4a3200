"""How much the accuracy depends on the label policy: every uncertain x blank policy side by side.

CheXpert labels are 1 (positive), 0 (negative), -1 (uncertain) or blank (not mentioned); the run
scored its answers under one pair of policies (``questions.uncertain``, ``questions.blank``).
:func:`label_policy_table` re-scores the same answers under all six pairs (uncertain: ignore =
``exclude``, zero = ``negative``, one = ``positive``; blank: ``exclude`` or ``negative``), with
and without the ``unclear`` answers. "No Finding" is 1 or blank in CheXpert, never 0: a blank
"No Finding" means the report names some finding, so it is a negative under every policy (without
that rule the finding would have no negatives at all). Questions with their own expected answer
(a VQA table: no ``label``) keep it under every policy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from cxr_attention.metrics.answer_stats import is_unclear
from cxr_attention.metrics.bootstrap import bootstrap_mean
from cxr_attention.metrics.study import bootstrap_kwargs, study_params
from cxr_attention.questions.bank import NO_FINDING as NO_FINDING_COLUMN
from cxr_attention.questions.labels import BLANK_POLICIES, UNCERTAIN_POLICIES, expected_answer

__all__ = ["NO_FINDING", "label_policy_expected", "label_policy_table"]

#: Question ids of a VQA table's rows (``vqa.<row>``, docs/architecture.md): their expected
#: answer is the table's, not a label's.
VQA_PREFIX = "vqa."

#: The CheXpert finding whose blank label is a negative under every policy.
NO_FINDING = "no_finding"

_UNCERTAIN_WORDS = {"exclude": "ignore", "negative": "zero", "positive": "one"}


def _slug(text: object) -> str:
    return "_".join("".join(c if c.isalnum() else " " for c in str(text).lower()).split())


def _label(value: object) -> float | None:
    text = str(value).strip()
    if text == "" or text.lower() == "nan":
        return None
    return float(text)


def label_policy_expected(answers: pd.DataFrame, *, uncertain: str, blank: str) -> pd.Series:
    """The expected answer (``yes`` / ``no`` / ``""``) of each row under one pair of policies."""
    if "label" not in answers.columns:
        return answers.get("expected", pd.Series("", index=answers.index)).fillna("").astype(str)
    own = answers.get("expected", pd.Series("", index=answers.index)).fillna("").astype(str)
    vqa = answers["question_id"].astype(str).str.startswith(VQA_PREFIX)
    result = []
    rows = zip(answers["label"], answers["finding"], own, vqa, strict=True)
    for label, finding, given, from_table in rows:
        if from_table:  # a VQA table's own expected answer, whatever the policies
            result.append(given.lower() if given.lower() in ("yes", "no") else "")
            continue
        value = _label("" if pd.isna(label) else label)
        column = NO_FINDING_COLUMN if _slug(finding) == NO_FINDING else str(finding)
        result.append(
            expected_answer(value, uncertain=uncertain, blank=blank, finding=column) or ""
        )
    return pd.Series(result, index=answers.index, dtype=object)


def label_policy_table(
    answers: pd.DataFrame, *, params: Mapping | None = None, run_policy: tuple[str, str] = ("", "")
) -> pd.DataFrame:
    """Accuracy under each uncertain x blank label policy, with and without unclear answers.

    Returns ``uncertain, uncertain_as, blank, run_policy, n, n_positive, n_negative, accuracy,
    ci_low, ci_high, n_unclear, accuracy_answered, n_answered`` (patient-bootstrap CI; ``unclear``
    counts as incorrect in ``accuracy`` and is left out of ``accuracy_answered``).
    """
    params = study_params(params)
    boot = bootstrap_kwargs(params)
    unclear = is_unclear(answers)
    given = answers["answer"].astype(str).str.lower()
    rows = []
    for uncertain in UNCERTAIN_POLICIES:
        for blank in BLANK_POLICIES:
            expected = label_policy_expected(answers, uncertain=uncertain, blank=blank)
            scored = expected.isin(["yes", "no"])
            correct = (given == expected).astype(np.float64)[scored]
            estimate = bootstrap_mean(correct, answers.loc[scored, "subject_id"], **boot)
            answered = correct[~unclear[scored]]
            rows.append(
                {
                    "uncertain": uncertain,
                    "uncertain_as": _UNCERTAIN_WORDS[uncertain],
                    "blank": blank,
                    "run_policy": (uncertain, blank) == tuple(run_policy),
                    "n": int(scored.sum()),
                    "n_positive": int((expected == "yes").sum()),
                    "n_negative": int((expected == "no").sum()),
                    "accuracy": estimate.value,
                    "ci_low": estimate.ci_low,
                    "ci_high": estimate.ci_high,
                    "n_unclear": int(unclear[scored].sum()),
                    "accuracy_answered": float(answered.mean()) if len(answered) else np.nan,
                    "n_answered": len(answered),
                }
            )
    columns = ["uncertain", "uncertain_as", "blank", "run_policy", "n", "n_positive"]
    columns += ["n_negative", "accuracy", "ci_low", "ci_high", "n_unclear"]
    columns += ["accuracy_answered", "n_answered"]
    return pd.DataFrame(rows, columns=columns)
