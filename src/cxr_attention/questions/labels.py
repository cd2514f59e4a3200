"""Label policies and samples: one row per (image, question) with its expected answer.

``expand_samples`` crosses a manifest with a question table; a bank question's expected answer
comes from the image's CheXpert label through the uncertain and blank label policies
(``expected_answer``), a VQA question keeps its own. Documented in ``docs/questions.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from cxr_attention.io import ConfigError
from cxr_attention.preprocess.mimic import CHEXPERT_FINDINGS, NO_FINDING

__all__ = [
    "BLANK_POLICIES",
    "SAMPLE_COLUMNS",
    "SAMPLE_QUESTION_COLUMNS",
    "UNCERTAIN_POLICIES",
    "expand_samples",
    "expected_answer",
]

#: Uncertain (-1) label policies: CheXpert's U-Ignore, U-Ones and U-Zeros.
UNCERTAIN_POLICIES: tuple[str, ...] = ("exclude", "positive", "negative")
#: Blank label policies: a finding the report does not mention is excluded or taken as absent.
BLANK_POLICIES: tuple[str, ...] = ("exclude", "negative")

#: Columns that name a sample (image, question) and describe its question: the leading columns
#: of ``expand_samples``' output and of the inference stage's answers table.
SAMPLE_QUESTION_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "dicom_id",
    "subject_id",
    "study_id",
    "question_id",
    "finding",
    "strategy",
    "baseline_question_id",
    "variant_index",
    "variant_kind",
    "question",
    "target_terms",
)

#: Columns of ``expand_samples``' output.
SAMPLE_COLUMNS: tuple[str, ...] = (*SAMPLE_QUESTION_COLUMNS, "answer_terms", "label", "expected")


def expected_answer(
    label: float | None, *, uncertain: str, blank: str, finding: str | None = None
) -> str | None:
    """The answer a CheXpert label asks for.

    "No Finding" is 1 or blank in CheXpert, never 0: its blank means the report names a finding,
    so it is a negative whatever ``blank`` says (when ``finding`` names it).

    Parameters
    ----------
    label : float or None
        1.0 (positive), 0.0 (negative), -1.0 (uncertain), NaN or None (not mentioned).
    uncertain : {"exclude", "positive", "negative"}
        Policy for -1: CheXpert's U-Ignore (``None``), U-Ones (``"yes"``) or U-Zeros (``"no"``).
    blank : {"exclude", "negative"}
        Policy for a blank label: ``None`` or ``"no"``.
    finding : str, optional
        The label's CheXpert column (only "No Finding" changes the answer).

    Returns
    -------
    str or None
        ``"yes"``, ``"no"``, or ``None`` when the sample has no expected answer.

    Raises
    ------
    ValueError
        Unknown policy (the message lists the choices) or a label outside {1, 0, -1, blank}.
    """
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain label policy {uncertain!r}; choose from {UNCERTAIN_POLICIES}")
    if blank not in BLANK_POLICIES:
        raise ValueError(f"blank label policy {blank!r}; choose from {BLANK_POLICIES}")
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return "no" if blank == "negative" or finding == NO_FINDING else None
    value = float(label)
    if value == 1.0:
        return "yes"
    if value == 0.0:
        return "no"
    if value == -1.0:
        return {"exclude": None, "positive": "yes", "negative": "no"}[uncertain]
    raise ValueError(f"CheXpert label {label!r} is not 1, 0, -1 or blank")


def expand_samples(
    manifest: pd.DataFrame,
    questions: pd.DataFrame,
    *,
    uncertain: str,
    blank: str,
    label_source_columns: Sequence[str] = CHEXPERT_FINDINGS,
) -> pd.DataFrame:
    """One row per (image, question) with its label and expected answer.

    Parameters
    ----------
    manifest : pandas.DataFrame
        One row per image: ``dicom_id`` (required), ``subject_id``, ``study_id`` and the CheXpert
        label columns (floats: 1, 0, -1, NaN).
    questions : pandas.DataFrame
        A question table (``QUESTION_COLUMNS``; ``study_id`` and ``image_path`` optional).
    uncertain, blank : str
        Label policies, see ``expected_answer``.
    label_source_columns : sequence of str
        Manifest columns that hold labels; a bank question's ``finding`` must be one of them.

    Returns
    -------
    pandas.DataFrame
        ``SAMPLE_COLUMNS``. A question with a ``dicom_id`` pairs only with that image; one with
        only a ``study_id`` with the images of that study; a blank one with every image. Bank
        questions (blank ``expected_answer``) take ``label`` from the manifest's column of their
        finding and ``expected`` by the policies; VQA questions keep their ``expected_answer``
        (``label`` 1.0 / 0.0 from it). ``expected`` is ``""`` when the policies exclude the
        sample. Order: manifest order, then question-table order.

    Raises
    ------
    ConfigError
        A missing ``dicom_id`` column, or a finding whose label column is absent from the manifest.
    ValueError
        Unknown label policy.
    """
    expected_answer(1.0, uncertain=uncertain, blank=blank)  # validates the policies up front
    if "dicom_id" not in manifest.columns:
        raise ConfigError("manifest: missing column 'dicom_id'")
    questions = questions.reset_index(drop=True).copy()
    for column in ("study_id", "image_path", "answer_terms"):
        if column not in questions.columns:
            questions[column] = ""
    # A table read back from questions.csv without dtype=str has NaN where this module wrote ""
    # and floats where an id column had blanks; make every text column text again.
    for column in questions.columns:
        if column != "variant_index":
            questions[column] = [_text(value) for value in questions[column]]

    samples = []
    for image in manifest.to_dict("records"):
        dicom_id = str(image["dicom_id"])
        study_id = "" if _is_blank(image.get("study_id")) else str(image["study_id"])
        for question in questions.to_dict("records"):
            if question["dicom_id"] and question["dicom_id"] != dicom_id:
                continue
            by_study = not question["dicom_id"] and question["study_id"]
            if by_study and question["study_id"] != study_id:
                continue
            if question["expected_answer"]:
                expected = question["expected_answer"]
                label: float = 1.0 if expected == "yes" else 0.0
            elif question["dicom_id"] or question["study_id"]:
                # A VQA row without a yes/no answer: nothing to score against.
                expected, label = "", math.nan
            else:
                finding = question["finding"]
                if finding not in label_source_columns or finding not in manifest.columns:
                    raise ConfigError(
                        f"manifest: missing label column {finding!r} for question "
                        f"{question['question_id']}"
                    )
                raw = image[finding]
                label = math.nan if _is_blank(raw) else float(raw)
                expected = (
                    expected_answer(label, uncertain=uncertain, blank=blank, finding=finding) or ""
                )
            samples.append(
                {
                    "sample_id": f"{dicom_id}__{question['question_id']}",
                    "dicom_id": dicom_id,
                    "subject_id": ""
                    if _is_blank(image.get("subject_id"))
                    else str(image["subject_id"]),
                    "study_id": study_id,
                    "question_id": question["question_id"],
                    "finding": question["finding"],
                    "strategy": question["strategy"],
                    "baseline_question_id": question["baseline_question_id"],
                    "variant_index": int(question["variant_index"]),
                    "variant_kind": question["variant_kind"],
                    "question": question["question"],
                    "target_terms": question["target_terms"],
                    "answer_terms": question["answer_terms"],
                    "label": label,
                    "expected": expected,
                }
            )
    frame = pd.DataFrame(samples, columns=list(SAMPLE_COLUMNS))
    frame["label"] = frame["label"].astype(float)
    frame["variant_index"] = frame["variant_index"].astype(int)
    return frame


def _text(value: Any) -> str:
    if _is_blank(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()
