"""A VQA table in the reference runner's format, read as a question table.

The reference (UNHSAILLab/lvlm-interpret-medgemma) asks one question per row about the row's image
and gives its own answer; ``read_vqa_table`` lays such a table out as the bank's question table
(``QUESTION_COLUMNS``), linking each rewrite to its baseline and inferring the finding from the
bank. Documented in ``docs/questions.md``.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from cxr_attention.io import ConfigError
from cxr_attention.questions.bank import (
    BASELINE_KIND,
    NO_FINDING,
    PLAIN_KIND,
    STRATEGIES,
    QuestionBank,
    question_frame,
)

__all__ = ["VQA_COLUMNS", "infer_finding", "normalise_yes_no", "read_vqa_table"]

#: Columns of the reference runner's VQA table; ``question`` is required, and at least one of
#: ``dicom_id`` / ``study_id``; the others are optional.
VQA_COLUMNS: tuple[str, ...] = (
    "dicom_id",
    "study_id",
    "image_path",
    "question",
    "answer",
    "baseline_question",
    "question_variant",
    "variant_index",
    "strategy",
)


_WORD = re.compile(r"[a-z0-9]+")


def normalise_yes_no(value: Any) -> str:
    """Map a reference answer to ``"yes"``, ``"no"`` or ``""`` (not a yes/no answer).

    Accepts yes/no in any case with surrounding space and punctuation, true/false and 1/0.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip().strip(".!\"'").strip().casefold()
    if text in {"yes", "y", "true", "1", "1.0"}:
        return "yes"
    if text in {"no", "n", "false", "0", "0.0"}:
        return "no"
    return ""


def infer_finding(question: str, bank: QuestionBank) -> str:
    """Name the CheXpert finding a free question is about, or ``""`` when unsure.

    The finding whose longest term (whole words, case-insensitive, plural ``s`` allowed) occurs
    in the question wins; No Finding only when no pathology matches; a tie between findings, or
    no match, gives ``""``.
    """
    words = " ".join(_WORD.findall(question.casefold()))
    best: dict[str, int] = {}
    for finding in bank.findings:
        for term in finding.terms:
            term_words = " ".join(_WORD.findall(term.casefold()))
            if re.search(rf"(?<![a-z0-9]){re.escape(term_words)}(?:e?s)?(?![a-z0-9])", words):
                best[finding.name] = max(best.get(finding.name, 0), len(term_words))
    if len(best) > 1:
        # "normal" also appears in questions about a pathology ("Is the heart size normal?"):
        # a question that names a pathology is about that pathology.
        best.pop(NO_FINDING, None)
    if not best:
        return ""
    top = max(best.values())
    winners = [name for name, length in best.items() if length == top]
    return winners[0] if len(winners) == 1 else ""


def read_vqa_table(path: str | os.PathLike, bank: QuestionBank | None = None) -> pd.DataFrame:
    """Read a VQA table in the reference runner's format as a question table.

    The reference (UNHSAILLab/lvlm-interpret-medgemma, ``medgemma4b_runner.py``) reads one row per
    (image, question): ``dicom_id``, ``study_id``, ``image_path``, ``question``, ``answer``
    (ground truth, yes/no; ``ground_truth`` is read when ``answer`` is absent, as in the
    reference's phrasing results table), ``baseline_question`` (the question the row rewrites,
    equal to ``question`` on the baseline row), ``question_variant`` (``"original"`` or
    ``"hard_positive_strategy-<k>"``), ``variant_index`` (0 for the baseline, 1..n) and
    ``strategy`` (``"baseline"``, or how the variant was rewritten: ``"Synonym replacement"``,
    ``"Clause reordering"``, ...). Groups of variants are contiguous and may repeat per image.

    Parameters
    ----------
    path : path-like
        CSV file.
    bank : QuestionBank, optional
        When given, each group's finding and target terms are inferred from its baseline question
        (``infer_finding``); otherwise they are blank.

    Returns
    -------
    pandas.DataFrame
        ``QUESTION_COLUMNS``. Row ``i`` of the file (0-based) becomes ``question_id = vqa.<i>``.
        ``strategy`` is the table's when it is one of ``STRATEGIES``; else ``baseline`` when the
        question equals its baseline question (or the row has no baseline question), else
        ``hard_positive``; a reference strategy that is not ours becomes ``variant_kind``.
        ``baseline_question_id`` is the id of the nearest row above (else below) for the same
        image whose question is the baseline question. When no such row exists, an implicit
        baseline row ``vqa.<i>.baseline`` is added before the first variant ``i`` of the group,
        so that consistency is always measured against an asked baseline; its expected answer is
        the group's when all variants agree (hard positives keep the meaning), else blank.

    Raises
    ------
    ConfigError
        Missing file, missing ``question`` column, or neither ``dicom_id`` nor ``study_id``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: VQA table not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "question" not in table.columns:
        raise ConfigError(f"{path}: missing column 'question'")
    if "dicom_id" not in table.columns and "study_id" not in table.columns:
        raise ConfigError(f"{path}: missing column 'dicom_id' (or 'study_id')")
    if "answer" not in table.columns and "ground_truth" in table.columns:
        # The reference's phrasing results (question_phrasing_results/phrasing_analysis.csv, the
        # paper's 63 groups / 600 variations) name the reference answer ground_truth.
        table["answer"] = table["ground_truth"]
    for column in VQA_COLUMNS:
        if column not in table.columns:
            table[column] = ""
    table = table.apply(lambda column: column.str.strip())
    if (table["question"] == "").any():
        first = int((table["question"] == "").to_numpy().argmax())
        raise ConfigError(f"{path}: column 'question' is empty in data row {first}")
    if ((table["dicom_id"] == "") & (table["study_id"] == "")).any():
        first = int(((table["dicom_id"] == "") & (table["study_id"] == "")).to_numpy().argmax())
        raise ConfigError(
            f"{path}: columns 'dicom_id' and 'study_id' both empty in data row {first}"
        )

    rows: list[dict[str, Any]] = []
    for i, record in enumerate(table.to_dict("records")):
        baseline_question = record["baseline_question"] or record["question"]
        is_baseline = _same_question(record["question"], baseline_question)
        reference_strategy = record["strategy"]
        if reference_strategy.casefold() in STRATEGIES:
            strategy = reference_strategy.casefold()
        else:
            strategy = "baseline" if is_baseline else "hard_positive"
        if strategy == "baseline":
            kind = BASELINE_KIND
        elif strategy == "plain":
            kind = PLAIN_KIND
        else:
            kind = _reference_kind(reference_strategy, record["question_variant"])
        index_text = record["variant_index"]
        try:
            variant_index = int(float(index_text)) if index_text else (0 if is_baseline else -1)
        except ValueError as error:
            raise ConfigError(
                f"{path}: column 'variant_index' has {index_text!r} in data row {i}"
            ) from error
        rows.append(
            {
                "question_id": f"vqa.{i}",
                "dicom_id": record["dicom_id"],
                "study_id": record["study_id"],
                "image_path": record["image_path"],
                "finding": "",
                "strategy": strategy,
                "baseline_question_id": "",
                "variant_index": variant_index,
                "variant_kind": kind,
                "question": record["question"],
                "target_terms": "",
                "answer_terms": "",
                "expected_answer": normalise_yes_no(record["answer"]),
                "_baseline_question": baseline_question,
                "_is_baseline": strategy == "baseline",
            }
        )

    rows = _link_baselines(rows)
    if bank is not None:
        for row in rows:
            finding = infer_finding(row["_baseline_question"], bank) or infer_finding(
                row["question"], bank
            )
            if finding:
                row["finding"] = finding
                row["target_terms"] = "|".join(bank.finding(finding).target_terms)
                row["answer_terms"] = "|".join(bank.finding(finding).terms)
    variants_seen: dict[str, int] = {}
    for row in rows:
        if row["_is_baseline"]:
            continue
        group = row["baseline_question_id"]
        variants_seen[group] = variants_seen.get(group, 0) + 1
        if row["variant_index"] < 0:  # a variant without an index: its place in the group
            row["variant_index"] = variants_seen[group]
    return question_frame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])


def _question_key(question: str) -> str:
    """Case- and spacing-insensitive form of a question, for matching baselines."""
    return " ".join(question.casefold().split())


def _same_question(a: str, b: str) -> bool:
    return _question_key(a) == _question_key(b)


def _reference_kind(strategy: str, question_variant: str) -> str:
    """The reference's free-text rewrite description, or its variant label when absent."""
    if strategy:
        return " ".join(strategy.split())
    return question_variant or "hard_positive"


def _link_baselines(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill ``baseline_question_id``; add implicit baseline rows where a group lacks one."""
    image_key = [(r["dicom_id"], r["study_id"]) for r in rows]
    # Baseline rows by (image, question), in file order: linking is a dictionary look-up and a
    # bisection, not a scan, so large VQA tables stay linear-logarithmic.
    baselines: dict[tuple[tuple[str, str], str], list[int]] = {}
    for i, row in enumerate(rows):
        if row["_is_baseline"]:
            row["baseline_question_id"] = row["question_id"]
            baselines.setdefault((image_key[i], _question_key(row["question"])), []).append(i)
    for i, row in enumerate(rows):
        if row["_is_baseline"]:
            continue
        candidates = baselines.get((image_key[i], _question_key(row["_baseline_question"])))
        if candidates:
            above = bisect.bisect_left(candidates, i)
            chosen = candidates[above - 1] if above else candidates[0]
            row["baseline_question_id"] = rows[chosen]["question_id"]

    linked: list[dict[str, Any]] = []
    implicit: dict[tuple[tuple[str, str], str], dict[str, Any]] = {}
    for i, row in enumerate(rows):
        if not row["baseline_question_id"]:
            group_key = (image_key[i], _question_key(row["_baseline_question"]))
            baseline = implicit.get(group_key)
            if baseline is None:
                baseline = {
                    **row,
                    "question_id": f"{row['question_id']}.baseline",
                    "strategy": "baseline",
                    "variant_index": 0,
                    "variant_kind": BASELINE_KIND,
                    "question": row["_baseline_question"],
                    "_is_baseline": True,
                    "_answers": set(),
                }
                baseline["baseline_question_id"] = baseline["question_id"]
                implicit[group_key] = baseline
                linked.append(baseline)
            baseline["_answers"].add(row["expected_answer"])
            row["baseline_question_id"] = baseline["question_id"]
        linked.append(row)
    for baseline in implicit.values():
        answers = baseline.pop("_answers")
        baseline["expected_answer"] = answers.pop() if len(answers) == 1 else ""
    return linked
