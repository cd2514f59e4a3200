"""The exclusions table: every image of the MIMIC-CXR tables that the study will not score, and why.

Written beside the manifest (``results/<run>/exclusions.csv``), one row per image:

- ``split``: its split is not in ``selection.splits`` (or it has no row in the split table);
- ``view``: its ``ViewPosition`` is not in ``selection.views`` (lateral films, blanks);
- ``sampling``: it passed the filters but was not drawn (``selection.sample_size``,
  ``selection.balance``) or is not named by the VQA table (``selection.from_vqa_table``);
- ``no_labels``: it is in the manifest and is asked about, but none of its answers can be scored:
  every asked finding's label is blank or uncertain and the policies (``questions.blank``,
  ``questions.uncertain``) exclude it. Its maps are still computed.

A file that is missing or cannot be decoded is not here but in the failures tables (error type
``missing``, ``corrupt``, ...), since only the preprocessing step opens the files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cxr_attention.io import write_csv

__all__ = [
    "EXCLUSION_COLUMNS",
    "EXCLUSION_REASONS",
    "exclusion_rows",
    "unscorable_images",
    "write_exclusions",
]

EXCLUSION_COLUMNS = ["dicom_id", "subject_id", "study_id", "reason", "detail"]
EXCLUSION_REASONS = ("split", "view", "sampling", "no_labels")


def exclusion_rows(images: pd.DataFrame, reason: str, detail: str | pd.Series) -> pd.DataFrame:
    """Exclusion rows for ``images`` (needs ``dicom_id``, ``subject_id``, ``study_id``)."""
    if reason not in EXCLUSION_REASONS:
        raise ValueError(f"unknown exclusion reason {reason!r}; expected {EXCLUSION_REASONS}")
    rows = images[["dicom_id", "subject_id", "study_id"]].reset_index(drop=True).copy()
    rows["reason"] = reason
    rows["detail"] = detail.reset_index(drop=True) if isinstance(detail, pd.Series) else detail
    return rows[EXCLUSION_COLUMNS]


def unscorable_images(manifest: pd.DataFrame, questions: Mapping[str, Any]) -> pd.DataFrame:
    """Exclusion rows (``no_labels``) for manifest images of which no answer can be scored.

    Parameters
    ----------
    manifest : pandas.DataFrame
        The manifest (CheXpert label columns as floats, NaN blank).
    questions : mapping
        The config's ``questions`` section: ``source``, ``findings`` (None: all 14),
        ``uncertain`` and ``blank``, every key given (defaults live only in config.schema.json).
        Only the question bank takes expected answers from the labels; with a VQA table nothing
        is returned.

    Returns
    -------
    pandas.DataFrame
        :data:`EXCLUSION_COLUMNS`, one row per image without a scorable finding.
    """
    from cxr_attention.preprocess.mimic import CHEXPERT_FINDINGS
    from cxr_attention.questions.labels import expected_answer

    if questions["source"] != "bank" or manifest.empty:
        return pd.DataFrame(columns=EXCLUSION_COLUMNS)
    findings: Sequence[str] = questions["findings"] or CHEXPERT_FINDINGS
    uncertain = questions["uncertain"]
    blank = questions["blank"]
    scorable = pd.Series(False, index=manifest.index)
    for finding in findings:
        if finding in manifest.columns:
            scorable |= manifest[finding].map(
                lambda label, finding=finding: (
                    expected_answer(
                        None if pd.isna(label) else float(label),
                        uncertain=uncertain,
                        blank=blank,
                        finding=finding,
                    )
                    is not None
                )
            )
    detail = (
        f"in the manifest, but no answer can be scored: no label 1 or 0 for "
        f"{', '.join(findings)} (questions.blank: {blank}, questions.uncertain: {uncertain})"
    )
    return exclusion_rows(manifest[~scorable], "no_labels", detail)


def write_exclusions(exclusions: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the exclusions table atomically, sorted by ``dicom_id`` (header only when empty)."""
    table = exclusions.reindex(columns=EXCLUSION_COLUMNS)
    write_csv(table.sort_values("dicom_id", kind="stable", ignore_index=True), path)
