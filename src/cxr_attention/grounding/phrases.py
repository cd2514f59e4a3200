"""MS-CXR's phrases as questions of their own (``grounding.ms_cxr_phrases``).

Each MS-CXR annotation carries a radiologist's phrase (``label_text``, "small left apical
pneumothorax"). Its image is asked ``grounding.phrase_question`` with the phrase filled in, one
question per (image, phrase), and the phrase is the question's one target term, so the maps stage
makes the phrase's term-conditioned map (:mod:`cxr_attention.maps.terms` finds it in the prompt).
The grounding stage scores that map against the phrase's own annotation only
(``map_kind = phrase``; the answer maps of the phrase question are ``phrase_answer``).
"""

from __future__ import annotations

import os

import pandas as pd

from cxr_attention.grounding.annotation_files import ms_cxr_finding, ms_cxr_groups
from cxr_attention.io import ConfigError
from cxr_attention.questions.bank import QuestionBank, question_frame

__all__ = [
    "PHRASE_KIND",
    "phrase_question_table",
    "phrase_term",
    "phrases_of_questions",
]

#: ``variant_kind`` of a phrase question in ``questions.csv`` (and so in answers and maps).
PHRASE_KIND = "ms_cxr_phrase"
_PLACEHOLDER = "{phrase}"


def phrase_term(phrase: str) -> str:
    """The phrase as a target term: one space between words, no ``|`` (the terms' separator)."""
    return " ".join(str(phrase).replace("|", " ").split())


def phrase_question_table(
    ms_cxr_csv: str | os.PathLike, template: str, bank: QuestionBank | None = None
) -> pd.DataFrame:
    """One question per (image, phrase) of an MS-CXR-format file, as a question table.

    Parameters
    ----------
    ms_cxr_csv : path
        MS-CXR's local-alignment CSV (or a planted file in its format).
    template : str
        ``grounding.phrase_question``: the question, with ``{phrase}`` where the phrase goes.
    bank : QuestionBank, optional
        Gives the answer parser the finding's own terms (``answer_terms``) when the finding is
        in the bank.

    Returns
    -------
    pandas.DataFrame
        ``QUESTION_COLUMNS``: ``question_id = ms_cxr_phrase.<k>`` (file order), the image's
        ``dicom_id`` (asked of that image only), the annotation's ``finding``, strategy
        ``baseline`` and its own baseline, ``variant_kind = ms_cxr_phrase``, ``target_terms`` the
        phrase, ``expected_answer = yes`` (the radiologist marked the finding on this image).
    """
    if template.count(_PLACEHOLDER) != 1:
        raise ConfigError(
            f"grounding.phrase_question: {template!r} must hold {_PLACEHOLDER} exactly once"
        )
    rows, seen = [], set()
    # The groups read_ms_cxr makes its annotations of (pandas alone: module docstring of
    # annotation_files), so the finding is the one the grounding stage matches.
    for (dicom_id, category, phrase), _ in ms_cxr_groups(ms_cxr_csv):
        term = phrase_term(phrase)
        if not term or (dicom_id, term.casefold()) in seen:
            continue
        seen.add((dicom_id, term.casefold()))
        finding = ms_cxr_finding(category)
        question_id = f"{PHRASE_KIND}.{len(rows)}"
        answer_terms = ""
        if bank is not None and finding in {f.name for f in bank.findings}:
            answer_terms = "|".join(bank.finding(finding).terms)
        rows.append(
            {
                "question_id": question_id,
                "dicom_id": dicom_id,
                "finding": finding,
                "strategy": "baseline",
                "baseline_question_id": question_id,
                "variant_index": 0,
                "variant_kind": PHRASE_KIND,
                "question": template.replace(_PLACEHOLDER, term),
                "target_terms": term,
                "expected_answer": "yes",
                "study_id": "",
                "image_path": "",
                "answer_terms": answer_terms,
            }
        )
    return question_frame(rows)


def phrases_of_questions(questions: pd.DataFrame) -> dict[str, str]:
    """``question_id`` -> phrase of every phrase question of a question table."""
    kinds = questions.get("variant_kind", pd.Series("", index=questions.index)).astype(str)
    phrased = questions[kinds == PHRASE_KIND]
    ids, terms = phrased["question_id"].astype(str), phrased["target_terms"].astype(str)
    return dict(zip(ids, terms, strict=True))
