"""The CheXpert question bank (``config/questions.yaml``) and the question table it gives.

For each CheXpert finding the bank holds a technical ``baseline`` question, a ``plain``
patient-friendly one and meaning-preserving ``hard_positive`` rewrites; every question applies to
every image and its expected answer comes from the image's label (``labels``). The same table
(``questions.csv``, see ``docs/architecture.md``) can come from a VQA table instead (``vqa``).
The design is documented in ``docs/questions.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from cxr_attention.io import ConfigError
from cxr_attention.preprocess.mimic import CHEXPERT_FINDINGS, NO_FINDING

__all__ = [
    "BASELINE_KIND",
    "CHEXPERT_FINDINGS",
    "HARD_POSITIVE_KINDS",
    "NO_FINDING",
    "PLAIN_KIND",
    "QUESTION_COLUMNS",
    "STRATEGIES",
    "FindingQuestions",
    "QuestionBank",
    "build_question_table",
    "load_question_bank",
    "question_frame",
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

#: ``variant_kind`` of the baseline and plain questions.
BASELINE_KIND = "original"
PLAIN_KIND = "plain_language"

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


_SLUG = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")


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
    findings: Sequence[str] | None,
    strategies: Sequence[str],
) -> pd.DataFrame:
    """Lay out the bank's questions as a question table (``questions.csv``).

    Parameters
    ----------
    bank : QuestionBank
    findings : sequence of str or None
        CheXpert names to keep, in bank order; ``None`` keeps every finding of the bank
        (``questions.findings``).
    strategies : sequence of str
        Subset of ``STRATEGIES`` (``questions.strategies``).

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
    return question_frame(rows)


def question_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(QUESTION_COLUMNS))
    for column in QUESTION_COLUMNS:
        if column == "variant_index":
            frame[column] = frame[column].astype(int)
        else:
            frame[column] = frame[column].fillna("").astype(str)
    return frame
