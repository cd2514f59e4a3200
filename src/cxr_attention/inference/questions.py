"""Question tables: the CheXpert question bank, the user's VQA table, and (image, question) samples.

Two sources give the same table (``questions.csv``, see ``docs/architecture.md``):

- the question bank (``config/questions.yaml``): for each CheXpert finding a technical ``baseline``
  question, a ``plain`` patient-friendly one and meaning-preserving ``hard_positive`` rewrites;
  every question applies to every image and its expected answer comes from the image's label;
- a VQA table in the reference runner's format (UNHSAILLab/lvlm-interpret-medgemma): one row per
  (image, question) with its own answer.

``expand_samples`` crosses a manifest with a question table into one row per (image, question).
The design and the label policies are documented in ``docs/questions.md``.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cxr_attention.io import ConfigError, write_csv
from cxr_attention.preprocess.mimic import CHEXPERT_FINDINGS

__all__ = [
    "BLANK_POLICIES",
    "CHEXPERT_FINDINGS",
    "HARD_POSITIVE_KINDS",
    "NO_FINDING",
    "QUESTION_COLUMNS",
    "SAMPLE_COLUMNS",
    "SAMPLE_QUESTION_COLUMNS",
    "STRATEGIES",
    "UNCERTAIN_POLICIES",
    "VQA_COLUMNS",
    "FindingQuestions",
    "QuestionBank",
    "build_question_table",
    "expand_samples",
    "expected_answer",
    "infer_finding",
    "load_question_bank",
    "normalise_yes_no",
    "read_vqa_table",
    "study_question_table",
    "write_question_table",
]

#: Question strategies of the reference study, in table order.
STRATEGIES: tuple[str, ...] = ("baseline", "plain", "hard_positive")

#: How a hard positive rewrites its baseline without changing its meaning (docs/questions.md).
HARD_POSITIVE_KINDS: tuple[str, ...] = (
    "phrasing_variation",
    "synonym_replacement",
    "clause_reordering",
    "formality_change",
    "voice_change",
)

#: The CheXpert label of a normal study: its question asks whether the image is normal.
NO_FINDING = "No Finding"

#: ``variant_kind`` of the baseline and plain questions.
BASELINE_KIND = "original"
PLAIN_KIND = "plain_language"

#: Uncertain (-1) label policies: CheXpert's U-Ignore, U-Ones and U-Zeros.
UNCERTAIN_POLICIES: tuple[str, ...] = ("exclude", "positive", "negative")
#: Blank label policies: a finding the report does not mention is excluded or taken as absent.
BLANK_POLICIES: tuple[str, ...] = ("exclude", "negative")

#: Columns of ``questions.csv``: the architecture contract, then ``study_id`` and ``image_path``
#: (blank for the bank; set per row for a VQA table whose rows name a study or a file) and
#: ``answer_terms`` (the finding's own names, "|"-joined, for ``parse_answer``; ``target_terms``
#: adds the broader related terms the maps stage looks for).
QUESTION_COLUMNS: tuple[str, ...] = (
    "question_id",
    "dicom_id",
    "finding",
    "strategy",
    "baseline_question_id",
    "variant_index",
    "variant_kind",
    "question",
    "target_terms",
    "expected_answer",
    "study_id",
    "image_path",
    "answer_terms",
)

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

_SLUG = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class FindingQuestions:
    """The questions about one CheXpert finding.

    Attributes
    ----------
    name : str
        CheXpert label column, e.g. ``"Pleural Effusion"``.
    slug : str
        File-name-safe identifier used in ``question_id``, e.g. ``"pleural_effusion"``.
    terms : tuple of str
        The finding's names, exact synonyms included, e.g. ``("pleural effusion", "effusion")``:
        what the answer parser and the finding inference match.
    related_terms : tuple of str
        Broader words the maps stage also looks for (``("fluid", "pleural")``).
    baseline, plain : str
        The technical and the patient-friendly question.
    hard_positives : tuple of (kind, question)
        Meaning-preserving rewrites of ``baseline``, variants 1..n in this order.
    """

    name: str
    slug: str
    terms: tuple[str, ...]
    baseline: str
    plain: str
    hard_positives: tuple[tuple[str, str], ...]
    related_terms: tuple[str, ...] = ()

    @property
    def target_terms(self) -> tuple[str, ...]:
        """Every term the maps stage looks for: the names, then the related words."""
        return self.terms + tuple(t for t in self.related_terms if t not in self.terms)


@dataclass(frozen=True)
class QuestionBank:
    """A validated question bank (``config/questions.yaml``)."""

    path: str
    findings: tuple[FindingQuestions, ...]

    def finding(self, name: str) -> FindingQuestions:
        """Return the questions of the finding called ``name`` (KeyError when absent)."""
        for finding in self.findings:
            if finding.name == name:
                return finding
        raise KeyError(name)


def load_question_bank(path: str | os.PathLike) -> QuestionBank:
    """Read and validate a question bank.

    Parameters
    ----------
    path : path-like
        YAML file with a ``findings`` list (see ``config/questions.yaml``).

    Returns
    -------
    QuestionBank

    Raises
    ------
    ConfigError
        The file is missing or malformed; the message names the file and the offending key, e.g.
        ``config/questions.yaml: findings[9].hard_positive[2].kind: 'rewording' is not one of ...``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: question bank not found")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error

    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {reason}")

    if not isinstance(document, dict) or not isinstance(document.get("findings"), list):
        raise fail("findings", "expected a list of findings at the top level")
    if not document["findings"]:
        raise fail("findings", "the list is empty")

    findings = []
    for index, entry in enumerate(document["findings"]):
        key = f"findings[{index}]"
        if not isinstance(entry, dict):
            raise fail(key, "expected a mapping")
        name = _required_text(entry, "name", key, fail)
        if name not in CHEXPERT_FINDINGS:
            raise fail(
                f"{key}.name", f"{name!r} is not a CheXpert finding {list(CHEXPERT_FINDINGS)}"
            )
        slug = _required_text(entry, "slug", key, fail)
        if not _SLUG.match(slug):
            raise fail(f"{key}.slug", f"{slug!r} must be lower-case words joined by '_'")
        terms = _term_list(entry, "terms", key, fail, required=True)
        related_terms = _term_list(entry, "related_terms", key, fail, required=False)
        baseline = _question(entry, "baseline", key, fail)
        plain = _question(entry, "plain", key, fail)
        variants = entry.get("hard_positive", [])
        if not isinstance(variants, list):
            raise fail(f"{key}.hard_positive", "expected a list of {kind, question}")
        hard_positives = []
        for v_index, variant in enumerate(variants):
            v_key = f"{key}.hard_positive[{v_index}]"
            if not isinstance(variant, dict):
                raise fail(v_key, "expected a mapping with kind and question")
            kind = _required_text(variant, "kind", v_key, fail)
            if kind not in HARD_POSITIVE_KINDS:
                raise fail(f"{v_key}.kind", f"{kind!r} is not one of {list(HARD_POSITIVE_KINDS)}")
            question = _question(variant, "question", v_key, fail)
            if question.casefold() == baseline.casefold():
                raise fail(f"{v_key}.question", "identical to the baseline question")
            hard_positives.append((kind, question))
        findings.append(
            FindingQuestions(
                name=name,
                slug=slug,
                terms=terms,
                baseline=baseline,
                plain=plain,
                hard_positives=tuple(hard_positives),
                related_terms=related_terms,
            )
        )

    for attribute in ("name", "slug"):
        values = [getattr(f, attribute) for f in findings]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise fail(f"findings[].{attribute}", f"duplicated: {duplicates}")
    return QuestionBank(path=str(path), findings=tuple(findings))


def _term_list(entry: dict, field: str, key: str, fail, *, required: bool) -> tuple[str, ...]:
    terms = entry.get(field, None if required else [])
    valid = isinstance(terms, list) and all(isinstance(t, str) and t.strip() for t in terms)
    if not valid or (required and not terms):
        raise fail(f"{key}.{field}", "expected a non-empty list of strings")
    if any("|" in t for t in terms):
        raise fail(f"{key}.{field}", "a term may not contain '|' (the table's separator)")
    return tuple(t.strip() for t in terms)


def _required_text(entry: dict, field: str, key: str, fail) -> str:
    value = entry.get(field)
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{key}.{field}", "missing or not a non-empty string")
    return value.strip()


def _question(entry: dict, field: str, key: str, fail) -> str:
    text = _required_text(entry, field, key, fail)
    if not text.endswith("?"):
        raise fail(f"{key}.{field}", f"{text!r} is not a question (must end with '?')")
    return text


def build_question_table(
    bank: QuestionBank,
    *,
    findings: Sequence[str] | None = None,
    strategies: Sequence[str] = STRATEGIES,
) -> pd.DataFrame:
    """Lay out the bank's questions as a question table (``questions.csv``).

    Parameters
    ----------
    bank : QuestionBank
    findings : sequence of str, optional
        CheXpert names to keep, in bank order; ``None`` keeps every finding of the bank.
    strategies : sequence of str
        Subset of ``STRATEGIES``.

    Returns
    -------
    pandas.DataFrame
        ``QUESTION_COLUMNS``, one row per question, all strings except ``variant_index`` (int);
        ``dicom_id`` blank (every image), ``expected_answer`` blank (comes from each image's
        label). Order: bank order of findings, then baseline, plain, hard positives 1..n.

    Raises
    ------
    ConfigError
        An unknown strategy, or a finding absent from the bank.
    """
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ConfigError(f"unknown question strategies {unknown}; choose from {list(STRATEGIES)}")
    selected = list(bank.findings)
    if findings is not None:
        missing = [name for name in findings if name not in {f.name for f in bank.findings}]
        if missing:
            raise ConfigError(f"{bank.path}: findings {missing} are not in the question bank")
        selected = [f for f in bank.findings if f.name in set(findings)]

    rows = []
    for finding in selected:
        baseline_id = f"{finding.slug}.baseline.0"
        entries: list[tuple[str, int, str, str]] = []
        if "baseline" in strategies:
            entries.append(("baseline", 0, BASELINE_KIND, finding.baseline))
        if "plain" in strategies:
            entries.append(("plain", 0, PLAIN_KIND, finding.plain))
        if "hard_positive" in strategies:
            entries.extend(
                ("hard_positive", index, kind, question)
                for index, (kind, question) in enumerate(finding.hard_positives, start=1)
            )
        for strategy, index, kind, question in entries:
            rows.append(
                {
                    "question_id": f"{finding.slug}.{strategy}.{index}",
                    "dicom_id": "",
                    "finding": finding.name,
                    "strategy": strategy,
                    # The baseline keeps its id even when the baseline strategy is not selected, so
                    # that groups stay comparable across runs.
                    "baseline_question_id": baseline_id,
                    "variant_index": index,
                    "variant_kind": kind,
                    "question": question,
                    "target_terms": "|".join(finding.target_terms),
                    "expected_answer": "",
                    "study_id": "",
                    "image_path": "",
                    "answer_terms": "|".join(finding.terms),
                }
            )
    return _as_question_frame(rows)


def _as_question_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(QUESTION_COLUMNS))
    for column in QUESTION_COLUMNS:
        if column == "variant_index":
            frame[column] = frame[column].astype(int)
        else:
            frame[column] = frame[column].fillna("").astype(str)
    return frame


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
    return _as_question_frame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])


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


def expected_answer(label: float | None, *, uncertain: str, blank: str) -> str | None:
    """The answer a CheXpert label asks for.

    Parameters
    ----------
    label : float or None
        1.0 (positive), 0.0 (negative), -1.0 (uncertain), NaN or None (not mentioned).
    uncertain : {"exclude", "positive", "negative"}
        Policy for -1: CheXpert's U-Ignore (``None``), U-Ones (``"yes"``) or U-Zeros (``"no"``).
    blank : {"exclude", "negative"}
        Policy for a blank label: ``None`` or ``"no"``.

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
        return "no" if blank == "negative" else None
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
                expected = expected_answer(label, uncertain=uncertain, blank=blank) or ""
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


def study_question_table(settings: dict[str, Any]) -> pd.DataFrame:
    """The question table a study asks, from its ``questions`` config section.

    ``source: bank`` asks the bank's questions about the configured findings and strategies;
    ``source: vqa_table`` reads the user's VQA table (findings inferred from the bank).
    """
    bank = load_question_bank(settings["bank"])
    if settings["source"] == "vqa_table":
        if not settings.get("vqa_table"):
            raise ConfigError("questions.vqa_table: source is vqa_table but no table is given")
        return read_vqa_table(settings["vqa_table"], bank)
    return build_question_table(
        bank, findings=settings.get("findings"), strategies=settings["strategies"]
    )


def write_question_table(*, settings: dict[str, Any], out_csv: str | os.PathLike) -> None:
    """Write ``study_question_table(settings)`` atomically to ``out_csv``."""
    write_csv(study_question_table(settings), out_csv)
